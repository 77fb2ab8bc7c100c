"""Starting and stopping the real server processes that tests talk to."""

from __future__ import annotations

import subprocess
import tempfile
import time

import requests

from scripts.processes import free_port, stop_process  # noqa: F401 (free_port is re-exported)


class ManagedProcess:
    def __init__(self, args, env, cwd, name: str):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()

    def wait_http(self, url: str, timeout: float, expect_status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-4000:]}")
            try:
                if requests.get(url, timeout=2).status_code == expect_status:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer {url} in {timeout} s:\n{self.output()[-4000:]}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        stop_process(self.popen)
