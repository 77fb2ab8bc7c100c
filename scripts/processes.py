"""The one launcher for the server processes: `make run`, `make bench` and the tests all start the
predictor and the adapter through `ManagedProcess`, with the commands defined here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(popen: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (servers drain on it), then SIGKILL if it has not exited within `timeout`."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def predictor_command(http_port: int, grpc_port: int, model_dir: str | Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "predictor", "--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    if model_dir is not None:
        command += ["--model_dir", str(model_dir)]
    return command


def adapter_command() -> list[str]:
    return [sys.executable, "-m", "adapter"]


class ManagedProcess:
    """A child process whose output goes to a log file (or, with `log_dir=None` and `inherit_output`, to
    this terminal), with readiness waits and a terminate-then-kill stop."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        name: str,
        cwd: Path = ROOT,
        log_dir: Path | None = None,
        inherit_output: bool = False,
    ):
        self.name = name
        self.env = env
        self.port: int | None = None
        if inherit_output:
            self.log_path: Path | None = None
            self.popen = subprocess.Popen(args, env=env, cwd=cwd)
            return
        folder = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
        self.log_path = folder / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        # The child keeps its own copy of the descriptor; ours closes once it is started.
        with open(self.log_path, "wb") as handle:
            self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/tts"

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    # The adapter's tests read the log as `log()`.
    log = output

    def _check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-4000:]}")

    def wait_http(self, url: str, timeout: float, expect_status: int = 200) -> float:
        """Block until `url` answers `expect_status`; returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == expect_status:
                        return time.monotonic() - started
            except urllib.error.HTTPError as exc:
                if exc.code == expect_status:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer {url} in {timeout} s:\n{self.output()[-4000:]}")

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} did not open port {port} in {timeout} s:\n{self.output()[-4000:]}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.popen, timeout)
