"""Run the built images as a pod runs them, without a Docker engine: buildah provides the image's root file
system (an overlay over its layers) and config, runc runs the container, iproute2 gives each "pod" its
own network namespace. Root only (CI here is root).

Why not `podman run`: here it fails before the container starts (crun and runc both refuse the
RLIMIT_NOFILE/RLIMIT_NPROC values podman asks for: the sandbox withholds CAP_SYS_RESOURCE). runc given a
spec without rlimits runs, with everything a pod's securityContext asks for: a read-only root file system,
the user and groups, no capabilities, no new privileges.

`Pods` is the network: one namespace per pod, a veth pair from the host to each (the test's clients),
and one between the adapter's and the predictor's (the adapter reaches the predictor at its pod address,
as through the chart's Service). Each pod keeps the chart's container ports (8080, 8081), which would
collide on the host's network.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scripts.processes import ROOT

IMAGES_SCRIPT = ROOT / "scripts" / "images.sh"


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


def image_tags() -> dict[str, str]:
    """name -> tag, as `make images` tags them (scripts/images.sh tags)."""
    out = run("bash", str(IMAGES_SCRIPT), "tags").stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def image_exists(tag: str) -> bool:
    return run("buildah", "inspect", "--type", "image", tag, check=False).returncode == 0


def image_config(tag: str) -> dict[str, Any]:
    """The OCI image config's "config" (Env, Cmd, WorkingDir, User, ExposedPorts)."""
    return json.loads(run("buildah", "inspect", "--type", "image", tag).stdout)["OCIv1"]["config"]


class Pods:
    """Network namespaces for the predictor's and the adapter's pods; addresses in one /24 of 10.213/16."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{random.randint(0, 99):02d}"
        net = f"10.213.{random.randint(0, 255)}"
        self.ns = {"predictor": f"cbx-p{tag}", "adapter": f"cbx-a{tag}"}
        self.host_if = {"predictor": f"cbxp{tag}", "adapter": f"cbxa{tag}"}
        # The host's side of each pod, the pod's address seen from the host, and the pod-to-pod link.
        self.host_ip = {"predictor": f"{net}.1", "adapter": f"{net}.5"}
        self.ip = {"predictor": f"{net}.2", "adapter": f"{net}.6"}
        self.link_ip = {"adapter": f"{net}.9", "predictor": f"{net}.10"}
        self._made: list[str] = []
        try:
            self._setup()
        except Exception:
            self.close()
            raise

    def _setup(self) -> None:
        for pod, ns in self.ns.items():
            run("ip", "netns", "add", ns)
            self._made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            host_if = self.host_if[pod]
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "addr", "add", f"{self.host_ip[pod]}/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            run("ip", "-n", ns, "addr", "add", f"{self.ip[pod]}/30", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        a, p = self.ns["adapter"], self.ns["predictor"]
        run("ip", "-n", a, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", p)
        for pod, ns in (("adapter", a), ("predictor", p)):
            run("ip", "-n", ns, "addr", "add", f"{self.link_ip[pod]}/30", "dev", "eth1")
            run("ip", "-n", ns, "link", "set", "eth1", "up")

    def netns_path(self, pod: str) -> str:
        return f"/var/run/netns/{self.ns[pod]}"

    def close(self) -> None:
        # Deleting a namespace deletes its veth ends, and with them the host's ends.
        for ns in self._made:
            run("ip", "netns", "delete", ns, check=False)
        self._made = []


class Container:
    """One container of `image`, run by runc as `container` (a container spec the chart renders) says.

    mounts: container path -> (host path, read-only); /tmp is a tmpfs (the chart's emptyDir). args
    overrides the chart's command. The process's output goes to a log file (`log()`).
    """

    def __init__(
        self,
        image: str,
        container: Mapping[str, Any],
        pod_security: Mapping[str, Any],
        netns: str | None,
        mounts: Mapping[str, tuple[Path, bool]],
        env: Mapping[str, str] = {},
        args: list[str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.name = f"cbx-{container['name']}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.image = image
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=log_dir))
        self.log_path = self.workdir / "output.log"
        self.ctr = run("buildah", "from", "--pull=never", "--name", self.name, image).stdout.strip()
        try:
            rootfs = run("buildah", "mount", self.ctr).stdout.strip()
            spec = self._spec(rootfs, image_config(image), container, pod_security, netns, mounts, env, args)
            (self.workdir / "config.json").write_text(json.dumps(spec, indent=1))
            with open(self.log_path, "wb") as log:
                self.popen = subprocess.Popen(
                    ["runc", "run", "--bundle", str(self.workdir), self.name],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        except Exception:
            self._remove()
            raise

    @staticmethod
    def _spec(rootfs, config, container, pod_security, netns, mounts, env, args) -> dict:
        """runc's default spec (namespaces, /proc, /dev, masked paths), with the pod's settings."""
        with tempfile.TemporaryDirectory() as tmp:
            run("runc", "spec", "--bundle", tmp)
            spec = json.loads((Path(tmp) / "config.json").read_text())
        sc = {**pod_security, **(container.get("securityContext") or {})}
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), "the chart drops every capability"
        image_env = dict(e.split("=", 1) for e in config.get("Env", []))
        chart_env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        process = spec["process"]
        process.update(
            terminal=False,
            args=args or list(container.get("command", [])) + list(container.get("args", [])),
            cwd=config.get("WorkingDir") or "/",
            env=[f"{k}={v}" for k, v in {**image_env, **chart_env, **env}.items()],
            user={
                "uid": sc["runAsUser"],
                "gid": sc["runAsGroup"],
                "additionalGids": [pod_security["fsGroup"]] if "fsGroup" in pod_security else [],
            },
            capabilities={k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            noNewPrivileges=sc.get("allowPrivilegeEscalation") is False,
        )
        process.pop("rlimits", None)  # what podman trips over here (module docstring)
        spec["root"] = {"path": rootfs, "readonly": bool(sc.get("readOnlyRootFilesystem"))}
        spec["hostname"] = container["name"]
        namespaces = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
        spec["linux"]["namespaces"] = namespaces
        spec["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        )
        for target, (source, read_only) in mounts.items():
            options = ["rbind", "ro" if read_only else "rw"]
            spec["mounts"].append({"destination": target, "type": "bind", "source": str(source), "options": options})
        return spec

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def wait_http(self, url: str, timeout: float, expect_status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-5000:]}")
            try:
                with urllib.request.urlopen(url, timeout=3) as response:
                    if response.status == expect_status:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == expect_status:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} did not answer {url} in {timeout} s:\n{self.log()[-5000:]}")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (the services drain on it), SIGKILL after `timeout`, then the container is removed."""
        if self.alive():
            run("runc", "kill", self.name, "TERM", check=False)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                run("runc", "kill", self.name, "KILL", check=False)
                self.popen.wait(timeout=30)
        self._remove()

    def _remove(self) -> None:
        run("runc", "delete", "--force", self.name, check=False)
        run("buildah", "umount", self.ctr, check=False)
        run("buildah", "rm", self.ctr, check=False)


def owned_dir(path: Path, uid: int = 1000, gid: int = 1000) -> Path:
    """A host folder the container's user may write (what fsGroup does for a pod's volumes)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, uid, gid)
    return path
