"""The adapter finding the predictor through the InferenceService's status (adapter/discovery.py).

The Kubernetes API is a test double: a real local HTTP server answering
GET /apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices/<name> with InferenceService
objects shaped as KServe writes them in Standard mode (checked against KServe's CRD schema). The real
`kubernetes` client makes the calls, configured with a `Configuration(host=...)` in-process, or with a
kubeconfig when the adapter runs as a process. The predictor is the fake predictor process.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests
import soundfile as sf
from kubernetes.client import Configuration

from adapter.app import create_app
from adapter.discovery import (
    DiscoveryError,
    InferenceServiceLocator,
    StaticLocator,
    location_from_status,
    make_locator,
    resolve_namespace,
)
from adapter.settings import Settings, SettingsError
from scripts.processes import free_port
from tests.support.chart_validate import KSERVE_CRDS, kserve_errors
from tests.support.servers import start_adapter

NAMESPACE, NAME = "chatterbox", "chatterbox-tts"
TOKEN = "test-token"
ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices/([^/?]+)$")


# ------------------------------------------------------------------------ the Kubernetes API double


def inference_service(
    address: str | None, ready: bool = True, reason: str | None = None, message: str | None = None
) -> dict:
    """An InferenceService as KServe reports it in Standard mode: the cluster-local address in
    status.address.url, ingress-domain URLs (which do not resolve here) in status.url and the component."""
    now = "2025-01-01T00:00:00Z"
    flag = "True" if ready else "False"
    ready_condition = {"type": "Ready", "status": flag, "lastTransitionTime": now}
    if reason:
        ready_condition.update(reason=reason, message=message or "")
    status: dict = {
        "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": now},
            {
                "type": "PredictorReady",
                "status": flag,
                "lastTransitionTime": now,
                **({"reason": reason} if reason else {}),
            },
            ready_condition,
        ],
        "deploymentMode": "Standard",
        "modelStatus": {"transitionStatus": "UpToDate" if ready else "InProgress"},
        "observedGeneration": 1,
    }
    if address is not None:
        status["address"] = {"url": address}
        status["url"] = f"http://{NAME}-{NAMESPACE}.example.invalid"
        status["components"] = {
            "predictor": {"url": f"http://{NAME}-predictor-{NAMESPACE}.example.invalid", "latestCreatedRevision": "1"}
        }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "generation": 1,
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "predictor:test",
                        "ports": [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}],
                    }
                ]
            }
        },
        "status": status,
    }


class FakeKubeAPI:
    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []
        self.fail_with: int | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                match = ISVC_PATH.match(self.path.split("?")[0])
                if api.fail_with is not None:
                    self._status(api.fail_with, "Forbidden" if api.fail_with == 403 else "InternalError", "refused")
                elif match is None or match.groups() not in api.objects:
                    name = match.group(2) if match else self.path
                    self._status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
                else:
                    self._send(200, api.objects[match.groups()])

            def _status(self, code: int, reason: str, message: str):
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },
                )

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, obj: dict) -> None:
        if KSERVE_CRDS.exists():
            assert kserve_errors(obj) == [], "the test double must answer what KServe's CRD allows"
        self.objects[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def isvc_requests(self) -> list[dict]:
        return [r for r in self.requests if ISVC_PATH.match(r["path"].split("?")[0])]

    def configuration(self) -> Configuration:
        configuration = Configuration(host=self.url)
        configuration.api_key = {"authorization": f"Bearer {TOKEN}"}
        return configuration

    def kubeconfig(self, path) -> str:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "adapter", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "adapter"}}],
                }
            )
        )
        return str(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube_api():
    api = FakeKubeAPI()
    yield api
    api.close()


# ------------------------------------------------------------------------- the adapter, in-process


def discovery_settings(voices_dir, **overrides) -> Settings:
    return Settings(
        inferenceservice_name=NAME,
        pod_namespace=NAMESPACE,
        voices_dir=str(voices_dir),
        log_level="warning",
        **overrides,
    )


def with_adapter(settings: Settings, api: FakeKubeAPI, scenario, **locator_options):
    """Run `await scenario(client)` against create_app(settings) wired to the fake API."""

    async def main():
        app = create_app(settings, make_locator(settings, api.configuration(), **locator_options))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://adapter", timeout=30
        ) as client:
            try:
                return await scenario(client)
            finally:
                await app.state.ctx.predictor.aclose()

    return asyncio.run(main())


def wav(response) -> tuple:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    return sf.read(io.BytesIO(response.content))


# ----------------------------------------------------------------------------------- tests


def test_status_fields_in_order_of_preference():
    knative = {
        "status": {
            "components": {
                "predictor": {"address": {"url": "http://p.ns.svc.cluster.local/"}, "url": "http://p-ns.example.com"}
            },
            "address": {"url": "http://isvc.ns.svc.cluster.local"},
            "url": "http://isvc.example.com",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    assert location_from_status(knative, "ns/isvc").url == "http://p.ns.svc.cluster.local"
    standard = inference_service("http://chatterbox-tts-predictor.chatterbox.svc.cluster.local")
    located = location_from_status(standard, "ns/isvc")
    assert (located.url, located.ready, located.problem) == (
        "http://chatterbox-tts-predictor.chatterbox.svc.cluster.local",
        True,
        None,
    )
    only_url = {"status": {"url": "https://isvc.example.com", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert location_from_status(only_url, "ns/isvc").url == "https://isvc.example.com"

    fresh = location_from_status({"metadata": {}}, "ns/isvc")
    assert fresh.url is None and fresh.ready is False
    assert "has no address" in fresh.problem and "no Ready condition" in fresh.problem
    loading = location_from_status(
        inference_service(
            "http://a",
            ready=False,
            reason="MinimumReplicasUnavailable",
            message="Deployment does not have minimum availability.",
        ),
        "ns/isvc",
    )
    assert loading.url == "http://a" and loading.ready is False
    assert "ns/isvc is not Ready" in loading.problem and "MinimumReplicasUnavailable" in loading.problem
    assert "PredictorReady=False" in loading.problem


def test_discovered_url_is_used(kube_api, fake_predictor, adapter_voices_dir):
    kube_api.put(inference_service(fake_predictor.url))

    async def scenario(client):
        health = await client.get("/health")
        speech = await client.post("/api/tts", json={"text": "Hi from discovery.", "voice": {"max_new_tokens": 3}})
        return health, speech

    health, speech = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario)
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy" and health.json()["loaded_models"] == ["standard", "turbo"]
    audio, rate = wav(speech)
    assert rate > 0 and len(audio) > 0
    assert fake_predictor.last_request()["text_input"] == "Hi from discovery."
    # The real client asked for exactly this object, with the configured credentials, once (cached).
    calls = kube_api.isvc_requests()
    assert [c["path"] for c in calls] == [
        f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{NAME}"
    ]
    assert calls[0]["authorization"] == f"Bearer {TOKEN}"


def test_not_ready_is_503_on_health_until_ready(kube_api, fake_predictor, adapter_voices_dir):
    kube_api.put(
        inference_service(
            fake_predictor.url,
            ready=False,
            reason="MinimumReplicasUnavailable",
            message="Deployment does not have minimum availability.",
        )
    )

    async def scenario(client):
        before = await client.get("/health")
        kube_api.put(inference_service(fake_predictor.url))
        await asyncio.sleep(0.3)  # retry_s: a not-Ready answer is looked up again soon
        after = await client.get("/health")
        return before, after

    before, after = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario, retry_s=0.2)
    assert before.status_code == 503
    body = before.json()
    assert body["status"] == "predictor_unavailable" and body["error"]["code"] == 503
    assert f"InferenceService {NAMESPACE}/{NAME} is not Ready" in body["error"]["message"]
    assert "MinimumReplicasUnavailable" in body["error"]["message"]
    assert after.status_code == 200 and after.json()["status"] == "healthy"


def test_not_found_is_503_with_a_message(kube_api, fake_predictor, adapter_voices_dir):
    async def scenario(client):
        return await client.get("/health"), await client.post("/api/tts", json={"text": "hello"})

    health, speech = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario)
    assert health.status_code == 503
    assert health.json()["status"] == "predictor_unavailable"
    assert health.json()["error"]["message"] == f"InferenceService {NAMESPACE}/{NAME} not found"
    assert speech.status_code == 503
    assert speech.json()["error"]["message"] == f"InferenceService {NAMESPACE}/{NAME} not found"


def test_forbidden_names_the_role(kube_api, adapter_voices_dir):
    kube_api.fail_with = 403

    async def scenario(client):
        return await client.get("/health")

    health = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario)
    assert health.status_code == 503
    assert "HTTP 403" in health.json()["error"]["message"] and "Role" in health.json()["error"]["message"]


def test_api_server_trouble_keeps_the_last_known_address(kube_api, fake_predictor, adapter_voices_dir):
    kube_api.put(inference_service(fake_predictor.url))

    async def scenario(client):
        first = await client.get("/health")
        kube_api.fail_with = 500
        await asyncio.sleep(0.3)  # refresh_s passes: the next request looks again and gets a 500
        second = await client.get("/health")
        return first, second

    first, second = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario, refresh_s=0.2)
    assert first.status_code == 200 and second.status_code == 200
    assert len(kube_api.isvc_requests()) == 2


def test_moved_predictor_is_found_again_after_a_failed_connection(kube_api, fake_predictor, adapter_voices_dir):
    kube_api.put(inference_service(f"http://127.0.0.1:{free_port()}"))  # nobody listens there

    async def scenario(client):
        failed = await client.post("/api/tts", json={"text": "hello", "voice": {"max_new_tokens": 3}})
        kube_api.put(inference_service(fake_predictor.url))
        await asyncio.sleep(0.3)  # retry_s after the failure, though refresh_s (an hour) has not passed
        recovered = await client.post("/api/tts", json={"text": "hello", "voice": {"max_new_tokens": 3}})
        return failed, recovered

    failed, recovered = with_adapter(
        discovery_settings(adapter_voices_dir), kube_api, scenario, refresh_s=3600, retry_s=0.2
    )
    assert failed.status_code == 503 and "unreachable" in failed.json()["error"]["message"]
    wav(recovered)
    assert len(kube_api.isvc_requests()) == 2


def test_concurrent_requests_share_one_lookup(kube_api, fake_predictor, adapter_voices_dir):
    kube_api.put(inference_service(fake_predictor.url))

    async def scenario(client):
        return await asyncio.gather(*(client.get("/health") for _ in range(8)))

    answers = with_adapter(discovery_settings(adapter_voices_dir), kube_api, scenario)
    assert [a.status_code for a in answers] == [200] * 8
    assert len(kube_api.isvc_requests()) == 1


def test_predictor_url_set_means_no_discovery(kube_api, fake_predictor, adapter_voices_dir, adapter_log_dir, tmp_path):
    env = {"PREDICTOR_URL": fake_predictor.url, "INFERENCESERVICE_NAME": NAME, "POD_NAMESPACE": NAMESPACE}
    settings = Settings.from_env(env)
    assert settings.inferenceservice_name is None and not settings.discovers_predictor
    assert isinstance(make_locator(settings), StaticLocator)
    kube_api.put(inference_service(f"http://127.0.0.1:{free_port()}"))  # would be wrong if it were used
    server = start_adapter(
        fake_predictor.url,
        adapter_voices_dir,
        adapter_log_dir,
        INFERENCESERVICE_NAME=NAME,
        POD_NAMESPACE=NAMESPACE,
        KUBERNETES_SERVICE_HOST="",
        KUBECONFIG=kube_api.kubeconfig(tmp_path / "kubeconfig"),
    )
    try:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        wav(requests.post(f"{server.url}/api/tts", json={"text": "hi", "voice": {"max_new_tokens": 3}}, timeout=30))
    finally:
        server.stop()
    assert kube_api.requests == []


def test_adapter_process_discovers_the_predictor(
    kube_api, fake_predictor, adapter_voices_dir, adapter_log_dir, tmp_path
):
    """`python -m adapter` with the chart's discovery env (no PREDICTOR_URL), here via a kubeconfig."""
    kube_api.put(inference_service(fake_predictor.url))
    server = start_adapter(
        "",
        adapter_voices_dir,
        adapter_log_dir,
        INFERENCESERVICE_NAME=NAME,
        POD_NAMESPACE=NAMESPACE,
        KUBERNETES_SERVICE_HOST="",
        KUBECONFIG=kube_api.kubeconfig(tmp_path / "kubeconfig"),
    )
    try:
        health = requests.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200, health.text
        wav(requests.post(f"{server.url}/api/tts", json={"text": "hi", "voice": {"max_new_tokens": 3}}, timeout=30))
    finally:
        server.stop()
    assert kube_api.isvc_requests() and all(r["authorization"] == f"Bearer {TOKEN}" for r in kube_api.requests)


def test_namespace_from_the_service_account(tmp_path):
    assert resolve_namespace("given", tmp_path / "missing") == "given"
    (tmp_path / "namespace").write_text("from-file\n")
    assert resolve_namespace(None, tmp_path / "namespace") == "from-file"
    with pytest.raises(DiscoveryError, match="POD_NAMESPACE"):
        resolve_namespace(None, tmp_path / "missing")


def test_discovery_settings_are_checked():
    assert Settings.from_env({"INFERENCESERVICE_NAME": NAME}).discovers_predictor
    with pytest.raises(SettingsError, match="INFERENCESERVICE_NAME"):
        Settings.from_env({"INFERENCESERVICE_NAME": "Not_A_Name"})
    with pytest.raises(SettingsError, match="POD_NAMESPACE"):
        Settings.from_env({"INFERENCESERVICE_NAME": NAME, "POD_NAMESPACE": "bad/ns"})


def test_no_kubernetes_configuration_stops_at_start_up(tmp_path, adapter_voices_dir):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VOICES_DIR": str(adapter_voices_dir),
        "INFERENCESERVICE_NAME": NAME,
        "POD_NAMESPACE": NAMESPACE,
        "KUBECONFIG": str(tmp_path / "none"),
    }
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "adapter"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "INFERENCESERVICE_NAME" in result.stderr and "kubeconfig" in result.stderr
    assert time.monotonic() - started < 60


def test_locator_in_production_uses_in_cluster_configuration(monkeypatch):
    """No configuration given: the in-cluster loader is asked (and its refusal is a clear DiscoveryError)."""
    calls = []
    from kubernetes import config

    def fake_incluster(client_configuration=None, **_):
        calls.append(client_configuration)
        client_configuration.host = "https://10.0.0.1:443"

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setattr(config, "load_incluster_config", fake_incluster)
    locator = InferenceServiceLocator(NAME, NAMESPACE)
    assert len(calls) == 1 and locator._api_client.configuration.host == "https://10.0.0.1:443"
    monkeypatch.setattr(
        config,
        "load_incluster_config",
        lambda **_: (_ for _ in ()).throw(config.ConfigException("Service token file does not exist.")),
    )
    with pytest.raises(DiscoveryError, match="token file"):
        InferenceServiceLocator(NAME, NAMESPACE)
