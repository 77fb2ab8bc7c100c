"""The chart's pods, run: the predictor (InferenceService container) and the adapter (Deployment
container) as `helm template` renders them with default values, started as local processes on
random-weight checkpoints.

Each process gets exactly the rendered command and args (`python` becomes this interpreter) and the
rendered env (valueFrom: the rendered Secret's value, or a test value; fieldRef: what the downward API
would give). What must differ on this machine, and only that, is rewritten:

* `--model_dir` (and MODEL_DIR, if rendered) -> the random-weight checkpoints;
* paths on volumes (VOICES_DIR, HF_HOME, ...) -> a local folder per volume, one per claim, so the
  voices claim is shared by both pods as in the cluster;
* container ports -> the same number where it is free here, otherwise a free port; `--*_port` args,
  PORT/*_PORT env and the probes follow the same mapping (the pods have their own network namespaces
  in the cluster, so 8081 is both the predictor's gRPC port and the adapter's HTTP port);
* cluster DNS: a generated `sitecustomize.py` routes the Service names (`<svc>`, `<svc>.<ns>`,
  `<svc>.<ns>.svc[.cluster.local]`) and Service ports to the local ports of the pods they select,
  for the rendered Services and for the `<isvc>-predictor` Service KServe creates (port 80 -> the first
  container port). The adapter keeps the rendered PREDICTOR_URL.
* plus HF_HUB_OFFLINE=1 and HOME in the pod's /tmp volume.

Then every startup/liveness/readiness probe of both containers must pass, the adapter must be
healthy through the chart's PREDICTOR_URL with the models the chart loads, synthesis must return a
WAV, and the `helm test` pod's own command must succeed against the adapter's Service name.
This catches a chart that renders cleanly but would not run.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import soundfile as sf

from scripts.processes import ManagedProcess, free_port
from tests.support import chart_render as cr

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("standard", "turbo", "multilingual")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
PREDICTOR_START_TIMEOUT_S = 900.0  # random weights load in 20-60 s; a busy 2-core machine needs slack
ADAPTER_START_TIMEOUT_S = 120.0
ROUTE_LOG_PREFIX = "chart-test-dns:"


# --------------------------------------------------------------------------- the rendered pods


@dataclass
class Pod:
    component: str
    spec: dict  # the pod spec (for the InferenceService: spec.predictor)
    labels: dict
    annotations: dict
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath -> local folder
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    process: ManagedProcess | None = None

    @property
    def container(self) -> dict:
        return self.spec["containers"][0]

    def container_port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        named = {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if "name" in p}
        assert port in named, f"{self.component}: port {port!r} is not a named container port ({named})"
        return named[port]

    def local_port(self, port: int | str) -> int:
        number = self.container_port(port)
        assert number in self.ports, f"{self.component}: port {number} is not declared in the container's ports"
        return self.ports[number]

    def local_path(self, path: str) -> Path | None:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return self.mounts[mount] / path[len(mount) :].lstrip("/")
        return None


def rendered_pods(objects: list[dict]) -> dict[str, Pod]:
    pods = {}
    for obj in objects:
        if obj["kind"] == "InferenceService":
            spec = obj["spec"]["predictor"]
            meta = {"labels": spec.get("labels", {}), "annotations": spec.get("annotations", {})}
        elif obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            meta = obj["spec"]["template"]["metadata"]
        else:
            continue
        component = meta["labels"]["app.kubernetes.io/component"]
        pods[component] = Pod(component, spec, dict(meta.get("labels") or {}), dict(meta.get("annotations") or {}))
    assert set(pods) == {"predictor", "adapter"}, set(pods)
    return pods


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def assign_ports(pods: dict[str, Pod]) -> None:
    """Keep each container port where it is free on this machine, else remap it (consistently per pod)."""
    taken: set[int] = set()
    for pod in pods.values():
        for entry in pod.container.get("ports", []):
            number = entry["containerPort"]
            local = number if number not in taken and port_is_free(number) else None
            while local is None or local in taken:
                local = free_port()
            taken.add(local)
            pod.ports[number] = local


def assign_volumes(pods: dict[str, Pod], base: Path) -> None:
    """One local folder per volume: a claim's folder is shared by every pod that mounts it."""
    for pod in pods.values():
        volumes = {}
        for volume in pod.spec.get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            volumes[volume["name"]] = base / (f"pvc-{claim}" if claim else f"{pod.component}-{volume['name']}")
        for mount in pod.container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{pod.component}: mount of undeclared volume {mount['name']}"
            folder = volumes[mount["name"]] / mount.get("subPath", "")
            folder.mkdir(parents=True, exist_ok=True)
            pod.mounts[mount["mountPath"]] = folder


def secret_value(objects: list[dict], name: str, key: str) -> str | None:
    import base64

    for secret in cr.find(objects, "Secret", name):
        if key in (secret.get("stringData") or {}):
            return str(secret["stringData"][key])
        if key in (secret.get("data") or {}):
            return base64.b64decode(secret["data"][key]).decode()
    return None


def value_from(pod: Pod, source: dict, objects: list[dict]) -> str | None:
    """What the kubelet would put in the variable; None leaves it unset (an optional, absent reference)."""
    if "fieldRef" in source:
        path = source["fieldRef"]["fieldPath"]
        known = {
            "metadata.namespace": cr.NAMESPACE,
            "metadata.name": f"{pod.component}-0",
            "status.podIP": "127.0.0.1",
            "spec.nodeName": "node-0",
            "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
        }
        assert path in known, f"{pod.component}: no test value for fieldRef {path}"
        return known[path]
    for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        if ref_key in source:
            ref = source[ref_key]
            value = secret_value(objects, ref["name"], ref["key"]) if kind == "Secret" else None
            if value is None and kind == "ConfigMap":
                for cm in cr.find(objects, "ConfigMap", ref["name"]):
                    value = (cm.get("data") or {}).get(ref["key"])
            if value is None:  # made outside the chart (existingSecret): a test value, or nothing if optional
                return None if ref.get("optional") else f"test-{ref['name']}-{ref['key']}"
            return value
    raise AssertionError(f"{pod.component}: no test value for valueFrom {source}")


def localize_env(pod: Pod, objects: list[dict], weights_dir: Path, home: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
    }
    read_only_root = (pod.container.get("securityContext") or {}).get("readOnlyRootFilesystem", False)
    for entry in pod.container.get("env", []):
        name = entry["name"]
        if "valueFrom" in entry:
            value = value_from(pod, entry["valueFrom"], objects)
            if value is None:
                continue
        else:
            value = str(entry.get("value", ""))
        if name == "MODEL_DIR":
            value = str(weights_dir)
        elif value.startswith("/"):
            local = pod.local_path(value)
            # With a read-only root filesystem, a folder off the volumes cannot be written (caches, uploads).
            assert local is not None or not read_only_root, (
                f"{pod.component}: {name}={value} is not on a volume, and the root filesystem is read-only"
            )
            value = str(local) if local is not None else value
        elif (name == "PORT" or name.endswith("_PORT")) and value.isdigit():
            value = str(pod.local_port(int(value)))
        env[name] = value
    pod.env = env


def localize_command(pod: Pod, weights_dir: Path) -> None:
    command = list(pod.container.get("command", [])) + list(pod.container.get("args", []))
    assert command, f"{pod.component}: no command (the image's CMD would run; the chart should say)"
    if command[0] == "python":
        command[0] = sys.executable
    out: list[str] = []
    pending: str | None = None
    for arg in command:
        if pending is not None:
            out.append(_local_arg(pod, pending, arg, weights_dir))
            pending = None
        elif arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={_local_arg(pod, flag, value, weights_dir)}")
        elif arg in ("--model_dir", "--model-dir") or (arg.startswith("--") and arg.endswith("port")):
            out.append(arg)
            pending = arg
        else:
            out.append(arg)
    assert pending is None, f"{pod.component}: {pending} has no value"
    pod.command = out


def _local_arg(pod: Pod, flag: str, value: str, weights_dir: Path) -> str:
    if flag in ("--model_dir", "--model-dir"):
        return str(weights_dir)
    if flag.endswith("port"):
        assert value.isdigit(), f"{pod.component}: {flag} {value!r} is not a port number"
        return str(pod.local_port(int(value)))  # asserts the port is a declared container port
    local = pod.local_path(value) if value.startswith("/") else None
    return str(local) if local is not None else value


# ------------------------------------------------------------------------- cluster DNS, locally


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_routes(objects: list[dict], pods: dict[str, Pod]) -> dict[tuple[str, int], tuple[str, int]]:
    """(service host, service port) -> (pod component, containerPort), for every name a pod can use."""
    services: list[tuple[str, dict[int, tuple[str, int]]]] = []
    for svc in cr.find(objects, "Service"):
        selected = [p for p in pods.values() if selects(svc["spec"].get("selector") or {}, p.labels)]
        assert selected, f"Service {svc['metadata']['name']} selects no pod of the chart"
        ports = {}
        for entry in svc["spec"]["ports"]:
            target = entry.get("targetPort", entry["port"])
            ports[entry["port"]] = (selected[0].component, selected[0].container_port(target))
        services.append((svc["metadata"]["name"], ports))
    # KServe (Standard mode) creates the ClusterIP Service "<isvc>-predictor": port 80 -> the first
    # container port, the other container ports as themselves (its createDefaultSvc).
    isvc = cr.one(objects, "InferenceService")["metadata"]["name"]
    container_ports = [p["containerPort"] for p in pods["predictor"].container["ports"]]
    kserve_ports = {80: ("predictor", container_ports[0]), **{p: ("predictor", p) for p in container_ports[1:]}}
    services.append((f"{isvc}-predictor", kserve_ports))

    routes = {}
    for name, ports in services:
        for host in (
            name,
            f"{name}.{cr.NAMESPACE}",
            f"{name}.{cr.NAMESPACE}.svc",
            f"{name}.{cr.NAMESPACE}.svc.cluster.local",
        ):
            for port, target in ports.items():
                routes[(host, port)] = target
    return routes


SITECUSTOMIZE = '''"""Written by tests/test_chart_processes.py: cluster DNS for a pod run as a local process.

Service names resolve to 127.0.0.1 and Service ports become the local ports of the pods behind them,
for the stdlib (socket.getaddrinfo, which returns the port it is asked for in the sockaddr) and for
anyio's connect_tcp, which httpx/httpcore use (anyio keeps the port it was given and only takes the
address from getaddrinfo, and under uvloop resolution never reaches socket.getaddrinfo at all).
"""
import socket
import sys

ROUTES = {routes!r}
_seen = set()


def _route(host, port):
    if isinstance(host, bytes):
        host = host.decode()
    try:
        key = (str(host).rstrip(".").lower(), int(port))
    except (TypeError, ValueError):
        return None
    local = ROUTES.get(key)
    if local is not None and key not in _seen:
        _seen.add(key)
        print("{prefix} %s:%s -> 127.0.0.1:%s" % (key[0], key[1], local), file=sys.stderr, flush=True)
    return local


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, port, *args, **kwargs):
    local = _route(host, port)
    if local is not None:
        return _getaddrinfo("127.0.0.1", local, *args, **kwargs)
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = getaddrinfo

try:
    import anyio
except ImportError:
    anyio = None
if anyio is not None:
    _connect_tcp = anyio.connect_tcp

    async def connect_tcp(remote_host, remote_port, *args, **kwargs):
        local = _route(remote_host, remote_port)
        if local is not None:
            remote_host, remote_port = "127.0.0.1", local
        return await _connect_tcp(remote_host, remote_port, *args, **kwargs)

    anyio.connect_tcp = connect_tcp
'''


def write_sitecustomize(folder: Path, routes: dict, pods: dict[str, Pod]) -> Path:
    local = {host_port: pods[component].local_port(port) for host_port, (component, port) in routes.items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(routes=local, prefix=ROUTE_LOG_PREFIX))
    return folder


def network_policy_admits(objects: list[dict], client: Pod, server: Pod, port: int) -> bool:
    policies = [
        p
        for p in cr.find(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels") or {}, server.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            peers_ok = not rule.get("from") or any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and selects(peer["podSelector"].get("matchLabels") or {}, client.labels)
                for peer in rule["from"]
            )
            ports_ok = not rule.get("ports") or any(server.container_port(p.get("port")) == port for p in rule["ports"])
            if peers_ok and ports_ok:
                return True
    return False


# ------------------------------------------------------------------------------- probes


def probe_answer(pod: Pod, probe: dict) -> tuple[bool, str]:
    """(passes, what it saw) for one probe, as the kubelet would judge it (HTTP: status 200-399)."""
    if "httpGet" in probe:
        get = probe["httpGet"]
        scheme = get.get("scheme", "HTTP").lower()
        url = f"{scheme}://127.0.0.1:{pod.local_port(get['port'])}{get.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        try:
            response = requests.get(
                url, headers=headers, timeout=probe.get("timeoutSeconds", 1) + 5, allow_redirects=False
            )
        except requests.RequestException as exc:
            return False, f"GET {url}: {exc.__class__.__name__}"
        return 200 <= response.status_code < 400, f"GET {url}: {response.status_code} {response.text[:200]}"
    if "tcpSocket" in probe:
        port = pod.local_port(probe["tcpSocket"]["port"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=probe.get("timeoutSeconds", 1) + 5):
                return True, f"tcp {port}: open"
        except OSError as exc:
            return False, f"tcp {port}: {exc}"
    raise AssertionError(f"{pod.component}: probe kind not handled here: {probe}")


def probe_budget_s(probe: dict) -> float:
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def wait_probe(pod: Pod, kind: str, timeout: float) -> float:
    """Poll one probe until it passes; returns the seconds it took."""
    probe = pod.container[kind]
    started = time.monotonic()
    seen = ""
    while time.monotonic() - started < timeout:
        assert pod.process.alive(), f"{pod.component} exited:\n{pod.process.output()[-4000:]}"
        ok, seen = probe_answer(pod, probe)
        if ok:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(
        f"{pod.component} {kind} did not pass in {timeout} s (last: {seen}):\n{pod.process.output()[-4000:]}"
    )


# --------------------------------------------------------------------------------- fixture


@dataclass
class Cluster:
    objects: list[dict]
    pods: dict[str, Pod]
    routes: dict
    dns_dir: Path
    predictor_started: float
    adapter_liveness_while_loading: tuple[bool, str] | None = None
    adapter_ready_while_loading: tuple[bool, str] | None = None


@pytest.fixture(scope="module")
def cluster(weights_dir, tmp_path_factory):
    objects = cr.render()
    pods = rendered_pods(objects)
    base = tmp_path_factory.mktemp("chart-pods")
    assign_ports(pods)
    assign_volumes(pods, base / "volumes")
    for pod in pods.values():
        home = pod.mounts.get("/tmp") or base / f"{pod.component}-home"
        home.mkdir(parents=True, exist_ok=True)
        localize_env(pod, objects, weights_dir, home)
        localize_command(pod, weights_dir)
    routes = service_routes(objects, pods)
    dns_dir = write_sitecustomize(base / "cluster-dns", routes, pods)
    for pod in pods.values():
        pod.env["PYTHONPATH"] = str(dns_dir)

    # Both start at once, as after `helm install`: the adapter comes up long before the models load.
    started = time.monotonic()
    pods["predictor"].process = ManagedProcess(
        pods["predictor"].command, env=pods["predictor"].env, cwd=ROOT, name="chart-predictor"
    )
    pods["adapter"].process = ManagedProcess(
        pods["adapter"].command, env=pods["adapter"].env, cwd=ROOT, name="chart-adapter"
    )
    state = Cluster(objects, pods, routes, dns_dir, started)
    try:
        adapter, predictor = pods["adapter"], pods["predictor"]
        wait_probe(adapter, "livenessProbe", ADAPTER_START_TIMEOUT_S)
        # While the predictor loads: the adapter stays alive and says it is not ready. (Checked in this
        # order: if the predictor is still not ready afterwards, it was not ready when the adapter answered.)
        adapter_ready = probe_answer(adapter, adapter.container["readinessProbe"])
        if not probe_answer(predictor, predictor.container["readinessProbe"])[0]:
            state.adapter_ready_while_loading = adapter_ready
            state.adapter_liveness_while_loading = probe_answer(adapter, adapter.container["livenessProbe"])
        for kind in PROBES:
            if kind in predictor.container:
                wait_probe(predictor, kind, PREDICTOR_START_TIMEOUT_S)
        for kind in PROBES:
            if kind in adapter.container:
                wait_probe(adapter, kind, ADAPTER_START_TIMEOUT_S)
        yield state
    finally:
        for pod in pods.values():
            if pod.process is not None:
                pod.process.stop()


def adapter_url(cluster: Cluster, path: str) -> str:
    adapter = cluster.pods["adapter"]
    return f"http://127.0.0.1:{adapter.local_port('http')}{path}"


def adapter_headers(cluster: Cluster) -> dict:
    token = cluster.pods["adapter"].env.get("API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


# ----------------------------------------------------------------------------------- tests


def test_rendered_commands_run_as_rendered(cluster):
    predictor, adapter = cluster.pods["predictor"], cluster.pods["adapter"]
    # Only the interpreter, the weights folder, volume paths and ports were rewritten.
    rendered = list(predictor.container["command"]) + list(predictor.container.get("args", []))
    assert len(predictor.command) == len(rendered)
    for local, original in zip(predictor.command[1:], rendered[1:]):
        assert local == original or original in {"/mnt/models", *map(str, predictor.ports)}, (local, original)
    assert adapter.command[1:] == list(adapter.container["command"])[1:] + list(adapter.container.get("args", []))
    # Both pods use the one voices claim: the same local folder.
    assert predictor.env["VOICES_DIR"] == adapter.env["VOICES_DIR"]


@pytest.mark.parametrize("component", ["predictor", "adapter"])
def test_every_probe_passes_once_ready(cluster, component):
    pod = cluster.pods[component]
    kinds = [kind for kind in PROBES if kind in pod.container]
    assert "readinessProbe" in kinds and "livenessProbe" in kinds
    for kind in kinds:
        ok, seen = probe_answer(pod, pod.container[kind])
        assert ok, f"{component} {kind}: {seen}"
        probe = pod.container[kind]
        if "httpGet" in probe:  # the brief's stricter reading: a 2xx, not a redirect
            assert seen.split(": ")[1].startswith("2"), f"{component} {kind}: {seen}"


def test_the_startup_budget_covers_a_local_start(cluster):
    probe = cluster.pods["predictor"].container.get("startupProbe")
    assert probe is not None, "without a startup probe, liveness would kill a predictor that is still loading"
    assert time.monotonic() - cluster.predictor_started < probe_budget_s(probe)


def test_adapter_stays_alive_but_unready_while_the_predictor_loads(cluster):
    if cluster.adapter_ready_while_loading is None:
        pytest.skip("the predictor was ready before the adapter answered")
    ready, seen = cluster.adapter_ready_while_loading
    assert not ready and ": 503 " in seen, seen
    ok, seen = cluster.adapter_liveness_while_loading
    assert ok, f"the adapter's liveness probe failed while the predictor loaded: {seen}"


def test_every_declared_port_is_served(cluster):
    for pod in cluster.pods.values():
        for _number, local in pod.ports.items():
            with socket.create_connection(("127.0.0.1", local), timeout=10):
                pass
    # The predictor's second port is gRPC (Open Inference Protocol).
    import tritonclient.grpc as grpcclient

    predictor = cluster.pods["predictor"]
    grpc_port = next(p for p in predictor.container["ports"] if p.get("name") == "h2c")["containerPort"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{predictor.ports[grpc_port]}")
    assert client.is_server_live() and client.is_server_ready()


def test_prometheus_annotations_point_at_metrics(cluster):
    for pod in cluster.pods.values():
        if pod.annotations.get("prometheus.io/scrape") != "true":
            continue
        port = pod.local_port(int(pod.annotations["prometheus.io/port"]))
        response = requests.get(
            f"http://127.0.0.1:{port}{pod.annotations.get('prometheus.io/path', '/metrics')}",
            headers=adapter_headers(cluster) if pod.component == "adapter" else {},
            timeout=30,
        )
        assert response.status_code == 200, (pod.component, response.status_code)
        assert "# TYPE" in response.text


def test_adapter_reaches_the_predictor_through_the_charts_url(cluster):
    adapter, predictor = cluster.pods["adapter"], cluster.pods["predictor"]
    url = adapter.env["PREDICTOR_URL"]
    rendered = cr.env_values(adapter.container)["PREDICTOR_URL"]
    assert url == rendered, "the adapter must run with the rendered PREDICTOR_URL"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    assert (host, port) in cluster.routes, f"{host}:{port} is not a Service port of this release"
    component, target = cluster.routes[(host, port)]
    assert component == "predictor"
    assert network_policy_admits(cluster.objects, adapter, predictor, target), (
        f"the NetworkPolicy drops adapter -> predictor:{target}"
    )

    health = requests.get(adapter_url(cluster, "/health"), timeout=30)
    assert health.status_code == 200, health.text
    expected = [v for v in VARIANTS if predictor.env.get(f"LOAD_{v.upper()}", "false").lower() == "true"]
    assert health.json()["status"] == "healthy"
    assert health.json()["loaded_models"] == expected == ["standard"]

    response = requests.post(
        adapter_url(cluster, "/api/tts"),
        headers=adapter_headers(cluster),
        json={"text": "Hi.", "voice": {"max_new_tokens": 3}},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/wav")
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate > 0 and len(audio) > 0

    # The adapter really dialled the chart's name and port (the route was taken, not bypassed).
    assert f"{ROUTE_LOG_PREFIX} {host}:{port} -> 127.0.0.1:{predictor.local_port(target)}" in adapter.process.output()


def test_helm_test_pod_passes(cluster):
    """The `helm test` pod's own command, against the adapter's Service name."""
    test_pod = cr.pod_specs(cluster.objects)["test"]
    command = list(test_pod.get("command", [])) + list(test_pod.get("args", []))
    if command[0] == "python":
        command[0] = sys.executable
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(cluster.dns_dir)}
    done = subprocess.run(command, env=env, cwd=cluster.dns_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("200 ") and ROUTE_LOG_PREFIX in done.stderr
