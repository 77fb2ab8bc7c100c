"""Process helpers shared by `make bench` and the tests that start real server processes."""

from __future__ import annotations

import socket
import subprocess


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
