"""`make images` (scripts/images.sh build) started in the background as soon as pytest has collected the
image tests, so that the build (about 4 minutes on a fresh machine, one core: pip installs and buildah's
layer commits) overlaps tests that leave a core free. conftest.py starts it and runs the memory soaks
(tests/e2e/test_soak.py: RSS, not time, on one torch thread) first, while it builds; test_images.py waits
for it."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.processes import ROOT
from tests.support import oci

BUILD_LOG = ROOT / "build" / "images" / "build.log"
IMAGE_TESTS = "tests/e2e/test_images.py"
# Tests that run while the images build: they measure memory, not time, and leave a core free.
OVERLAPPING_TESTS = ("tests/e2e/test_soak.py",)


@dataclass
class Build:
    process: subprocess.Popen
    started: float
    log: Path

    def wait(self) -> tuple[int, float]:
        """The build's exit status and how long it ran."""
        returncode = self.process.wait()
        return returncode, time.monotonic() - self.started


_build: Build | None = None


def wanted() -> bool:
    """Whether the image tests will build: as root (buildah, runc), unless the images are prebuilt."""
    return os.geteuid() == 0 and os.environ.get("CHATTERBOX_IMAGES_PREBUILT") != "1"


def start() -> Build:
    """Start the build once; later calls return the same one."""
    global _build
    if _build is None:
        BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(BUILD_LOG, "w") as log:
            env = {**os.environ, "IMAGE_BUILDER": "buildah"}  # the image tests run buildah's images
            process = subprocess.Popen(
                ["bash", str(oci.IMAGES_SCRIPT), "build"], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        _build = Build(process, time.monotonic(), BUILD_LOG)
    return _build


def stop() -> None:
    """End a build that no test waited for (an interrupted run)."""
    if _build is not None and _build.process.poll() is None:
        _build.process.terminate()
        _build.process.wait(timeout=30)


def _path(item) -> str:
    """A collected test's file, relative to the repository (as IMAGE_TESTS and OVERLAPPING_TESTS name them)."""
    return Path(str(item.fspath)).relative_to(ROOT).as_posix()


def collected(items: list) -> bool:
    """Whether the image tests are among the collected ones."""
    return any(_path(item) == IMAGE_TESTS for item in items)


def order(items: list) -> list:
    """The overlapping tests first, then the image tests, then the rest in their order."""

    def rank(item) -> int:
        path = _path(item)
        if path in OVERLAPPING_TESTS:
            return 0
        return 1 if path == IMAGE_TESTS else 2

    return sorted(items, key=rank)  # stable: each group keeps its order
