"""The Helm chart (charts/chatterbox-tts) and the plain manifests rendered from it.

No cluster: `helm lint`/`helm template` with the helm binary from $HELM, Kubernetes' schemas through
kubernetes-validate, KServe's CRD schemas from ../shared/kserve-crds, and the KServe webhook's
autoscaling rules restated here.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from scripts import render_manifests
from tests.support import chart_render as cr
from tests.support import chart_validate as cv

ISVC = cr.RELEASE  # the release name contains the chart name, so the InferenceService is named after it
PREDICTOR_SERVICE = f"{ISVC}-predictor"
ADAPTER = f"{cr.RELEASE}-adapter"

VARIANTS = {"default": (), "cpu": ("values-cpu.yaml",), "gpu": ("values-gpu.yaml",)}

# Values that switch on every optional object, for schema validation of all of them.
EVERYTHING_ON = {
    "apiToken.value": "s3cret",
    "huggingface.token": "hf_test",
    "adapter.ingress.enabled": True,
    "adapter.ingress.className": "nginx",
    "adapter.ingress.tls": [{"secretName": "chatterbox-tls", "hosts": ["chatterbox.example.com"]}],
    "adapter.autoscaling.enabled": True,
    "adapter.discoverPredictor": True,
    "adapter.defaultVoice": "narrator.wav",
    "adapter.extraEnv": [{"name": "EXTRA", "value": "1"}],
    "predictor.extraEnv": [{"name": "EXTRA", "value": "1"}],
    "metrics.serviceMonitor.enabled": True,
    "metrics.podMonitor.enabled": True,
    "networkPolicy.prometheusPodSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    "networkPolicy.extraIngress": [{"from": [{"podSelector": {"matchLabels": {"role": "debug"}}}]}],
    "predictor.pdb.minAvailable": 1,
    "adapter.pdb.minAvailable": "50%",
}
KEDA = {"predictor.autoscaling.class": "keda", "predictor.autoscaling.maxReplicas": 4}
KEDA_SCALED_OBJECT = {
    "predictor.autoscaling.class": "external",
    "predictor.autoscaling.maxReplicas": 4,
    "predictor.keda.scaledObject.enabled": True,
}
STORAGE_URI = {
    "models.source": "storageUri",
    "models.storageUri": "pvc://chatterbox-models/chatterbox",
    "huggingface.existingSecret": "hf-token",
}
STORAGE_URIS = {
    "models.source": "storageUri",
    "models.storageUris": [
        {"uri": "hf://ResembleAI/chatterbox", "mountPath": "/mnt/models/standard"},
        {"uri": "hf://ResembleAI/chatterbox-turbo", "mountPath": "/mnt/models/turbo"},
    ],
    "predictor.loadTurbo": True,
}
SCENARIOS = {
    **{name: (files, {}) for name, files in VARIANTS.items()},
    "everything-on": ((), EVERYTHING_ON),
    "gpu-everything-on": (("values-gpu.yaml",), EVERYTHING_ON),
    "keda": (("values-gpu.yaml",), KEDA),
    "keda-scaledobject": (("values-gpu.yaml",), KEDA_SCALED_OBJECT),
    "storage-uri": ((), STORAGE_URI),
    "storage-uris": ((), STORAGE_URIS),
    "no-persistence": (
        (),
        {
            "voices.persistent": False,
            "models.cache.persistent": False,
            "networkPolicy.enabled": False,
            "adapter.pdb.enabled": False,
            "predictor.pdb.enabled": False,
            "metrics.prometheusAnnotations": False,
            "tests.enabled": False,
        },
    ),
    "legacy-raw": ((), {"predictor.deploymentMode": "RawDeployment"}),
}


@cache
def _render_cached(files: tuple, frozen: str) -> str:
    return cr.render_text(files, json.loads(frozen))


def render(files=(), values=None) -> list[dict]:
    return cr.parse(_render_cached(tuple(files), json.dumps(values or {}, sort_keys=True)))


def scenario(name: str) -> list[dict]:
    files, values = SCENARIOS[name]
    return render(files, values)


def helm_fails(files=(), values=None) -> str:
    """Render and expect failure; returns helm's error text."""
    with pytest.raises(cr.HelmError) as info:
        cr.render_text(files, values or {})
    return str(info.value)


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------- helm


def test_helm_is_helm_3():
    out = cr.helm("version", "--short").stdout
    assert out.startswith("v3."), out


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict(variant):
    args = ["lint", "--strict", str(cr.CHART)]
    for name in VARIANTS[variant]:
        args += ["-f", str(cr.CHART / name)]
    proc = cr.helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_template_renders_the_expected_objects(variant):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(VARIANTS[variant])}
    expected = {
        ("InferenceService", ISVC),
        ("Deployment", ADAPTER),
        ("Service", ADAPTER),
        ("ServiceAccount", ADAPTER),
        ("ServiceAccount", PREDICTOR_SERVICE),
        ("PersistentVolumeClaim", f"{cr.RELEASE}-voices"),
        ("PersistentVolumeClaim", f"{cr.RELEASE}-model-cache"),
        ("NetworkPolicy", PREDICTOR_SERVICE),
        ("PodDisruptionBudget", ADAPTER),
        ("PodDisruptionBudget", PREDICTOR_SERVICE),
        ("Pod", f"{cr.RELEASE}-test-health"),
    }
    assert expected <= kinds, expected - kinds
    # Off by default: secrets with values, ingress, HPA, RBAC, monitors, KEDA.
    assert not {k for k, _ in kinds} & {
        "Secret",
        "Ingress",
        "HorizontalPodAutoscaler",
        "Role",
        "RoleBinding",
        "ServiceMonitor",
        "PodMonitor",
        "ScaledObject",
    }


# ----------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name", SCENARIOS)
def test_core_objects_validate_against_kubernetes_schemas(name):
    checked = 0
    for obj in scenario(name):
        if obj["kind"] in cv.KSERVE_KINDS or obj["kind"] in cv.OTHER_CRD_KINDS:
            continue
        try:
            cv.validate_core(obj)
        except Exception as exc:  # kubernetes_validate's errors carry the path and message
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']}: {getattr(exc, 'message', exc)} "
                f"at {'.'.join(map(str, getattr(exc, 'path', [])))}"
            )
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name", SCENARIOS)
def test_inferenceservice_validates_against_kserve_crd(name):
    isvcs = cr.find(scenario(name), "InferenceService")
    assert len(isvcs) == 1
    assert cv.kserve_errors(isvcs[0]) == []


def test_crd_validation_catches_mistakes():
    isvc = cr.one(scenario("default"), "InferenceService")
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["containers"][0]["portz"] = []
    bad["spec"]["predictor"]["scaleMetric"] = "gpu"
    errors = cv.kserve_errors(bad)
    assert any("portz" in e for e in errors) and any("scaleMetric" in e for e in errors), errors


def test_other_custom_resources_are_well_formed():
    objs = scenario("everything-on") + scenario("keda-scaledobject")
    monitors = cr.find(objs, "ServiceMonitor") + cr.find(objs, "PodMonitor")
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    for mon in monitors:
        endpoints = mon["spec"].get("endpoints") or mon["spec"]["podMetricsEndpoints"]
        assert {e["port"] for e in endpoints} == {"http", "http1"}
        assert all(e["path"] == "/metrics" for e in endpoints)
        # The adapter's /metrics sits behind the API token when one is set.
        auth = next(e for e in endpoints if e["port"] == "http")["authorization"]
        assert auth["credentials"] == {"name": f"{cr.RELEASE}-api-token", "key": "API_TOKEN"}
    scaled = cr.one(objs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": PREDICTOR_SERVICE,
    }
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert set(trigger["metadata"]) == {"serverAddress", "query", "threshold"}
    assert all(isinstance(v, str) for v in trigger["metadata"].values())


# ------------------------------------------------------------------------------------------- kserve


def kserve_webhook_errors(isvc: dict) -> list[str]:
    """KServe's admission rules for autoscaling (validateAutoScalingCompExtension), restated."""
    ann = isvc["metadata"].get("annotations", {})
    pred = isvc["spec"]["predictor"]
    mode = ann.get("serving.kserve.io/deploymentMode")
    cls = ann.get("serving.kserve.io/autoscalerClass", "hpa")
    errors = []
    if cls not in ("hpa", "keda", "external", "none"):
        errors.append(f"autoscaler class {cls}")
    if mode in ("Standard", "RawDeployment") and cls == "hpa":
        metric = pred.get("scaleMetric", "cpu")
        if metric not in ("cpu", "memory"):
            errors.append(f"hpa metric {metric}")
        target = pred.get("scaleTarget")
        if target is not None and metric == "cpu" and not 1 <= target <= 100:
            errors.append("cpu target")
    if cls == "keda":
        if "scaleMetric" in pred:
            errors.append("ScaleMetric is not supported for KEDA")
        for m in pred.get("autoScaling", {}).get("metrics", []):
            if m["type"] == "External" and (
                not m["external"]["metric"].get("query") or "value" not in m["external"]["target"]
            ):
                errors.append("external metric needs query and target value")
    if pred.get("minReplicas", 1) > pred.get("maxReplicas", 1):
        errors.append("min > max")
    return errors


@pytest.mark.parametrize("name", SCENARIOS)
def test_inferenceservice_follows_kserve_conventions(name):
    objs = scenario(name)
    isvc = cr.one(objs, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    ann = isvc["metadata"]["annotations"]
    # Standard is KServe's current name for RawDeployment (>= 0.16); both give a Deployment + Service.
    assert ann["serving.kserve.io/deploymentMode"] in ("Standard", "RawDeployment")
    assert kserve_webhook_errors(isvc) == []
    pred = isvc["spec"]["predictor"]
    assert len(pred["containers"]) == 1
    container = pred["containers"][0]
    assert container["name"] == "kserve-container"
    # First port: REST (KServe's Service maps port 80 to it); then gRPC, named h2c.
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080), ("h2c", 8081)]
    assert cr.container_command(container) == [
        "python",
        "-m",
        "predictor",
        "--model_dir",
        "/mnt/models",
        "--http_port",
        "8080",
        "--grpc_port",
        "8081",
    ]
    assert pred["automountServiceAccountToken"] is False


def test_default_deployment_mode_is_standard():
    isvc = cr.one(scenario("default"), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"
    # KServe creates no external route: clients go through the adapter.
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"


def test_predictor_probes_and_shutdown():
    for name in VARIANTS:
        pred = cr.one(scenario(name), "InferenceService")["spec"]["predictor"]
        c = pred["containers"][0]
        assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http1"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http1"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http1"}
        startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        assert startup >= 30 * 60, "a first start downloads and loads the models: allow 30 minutes"
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        assert 5 <= sleep < pred["terminationGracePeriodSeconds"] - 60


def test_predictor_settings_come_from_values():
    cpu = cr.env_values(cr.pod_specs(scenario("cpu"))["predictor"])
    gpu = cr.env_values(cr.pod_specs(scenario("gpu"))["predictor"])
    assert cpu["DEVICE"] == "cpu" and gpu["DEVICE"] == "cuda"
    pred = cr.env_values(
        cr.pod_specs(
            render(
                (), {"predictor.loadTurbo": True, "predictor.loadStandard": False, "predictor.maxConcurrentRequests": 7}
            )
        )["predictor"]
    )
    assert (pred["LOAD_STANDARD"], pred["LOAD_TURBO"], pred["LOAD_MULTILINGUAL"]) == ("false", "true", "false")
    assert pred["MAX_CONCURRENT_REQUESTS"] == "7"
    assert all(isinstance(v, (str, dict)) for v in {**cpu, **gpu, **pred}.values())


def test_gpu_values_request_a_gpu():
    objs = scenario("gpu")
    pred = cr.one(objs, "InferenceService")["spec"]["predictor"]
    container = pred["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":0.1.0-cuda")
    assert pred["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pred["tolerations"])
    cpu = cr.one(scenario("cpu"), "InferenceService")["spec"]["predictor"]
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    assert cpu["containers"][0]["image"].endswith(":0.1.0")


def test_keda_class_uses_kserve_autoscaling_metrics():
    isvc = cr.one(scenario("keda"), "InferenceService")
    pred = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert "scaleMetric" not in pred and "scaleTarget" not in pred
    (metric,) = pred["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    query = metric["external"]["metric"]["query"]
    assert query == f'sum(chatterbox_requests_in_flight{{namespace="{cr.NAMESPACE}",pod=~"{PREDICTOR_SERVICE}-.*"}})'
    assert metric["external"]["metric"]["backend"] == "prometheus"
    assert metric["external"]["target"] == {"type": "Value", "value": "3"}
    assert not cr.find(scenario("keda"), "ScaledObject")


def test_chart_scaled_object_needs_external_class():
    objs = scenario("keda-scaledobject")
    isvc = cr.one(objs, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    assert "scaleMetric" not in isvc["spec"]["predictor"]
    scaled = cr.one(objs, "ScaledObject")
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 4)
    assert "chatterbox_requests_in_flight" in scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert "external" in helm_fails((), {"predictor.keda.scaledObject.enabled": True})


# ---------------------------------------------------------------------------------------- weights


def test_hub_download_uses_a_persistent_cache():
    objs = scenario("default")
    pred = cr.one(objs, "InferenceService")["spec"]["predictor"]
    env = cr.env_values(pred["containers"][0])
    assert env["HF_HOME"] == "/cache/huggingface" and "STORAGE_URI" not in env
    assert "/cache" in cr.volume_mounts(pred["containers"][0])
    cache = next(v for v in pred["volumes"] if v["name"] == "model-cache")
    claim = cr.one(objs, "PersistentVolumeClaim", f"{cr.RELEASE}-model-cache")
    assert cache["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageUris" not in pred
    # Nothing mounted at /mnt/models: that is the storage initializer's place.
    assert "/mnt/models" not in cr.volume_mounts(pred["containers"][0])


def test_storage_uri_goes_through_kserve_storage_initializer():
    objs = scenario("storage-uri")
    pred = cr.one(objs, "InferenceService")["spec"]["predictor"]
    env = cr.env_values(pred["containers"][0])
    assert env["STORAGE_URI"] == "pvc://chatterbox-models/chatterbox"
    assert not cr.find(objs, "PersistentVolumeClaim", f"{cr.RELEASE}-model-cache")
    cache = next(v for v in pred["volumes"] if v["name"] == "model-cache")
    assert "emptyDir" in cache
    # The storage initializer takes the HF token from the ServiceAccount's secrets.
    sa = cr.one(objs, "ServiceAccount", pred["serviceAccountName"])
    assert sa["secrets"] == [{"name": "hf-token"}]
    assert env["HF_TOKEN"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN", "optional": True}


def test_storage_uris_list():
    pred = cr.one(scenario("storage-uris"), "InferenceService")["spec"]["predictor"]
    assert pred["storageUris"] == STORAGE_URIS["models.storageUris"]
    assert "STORAGE_URI" not in cr.env_values(pred["containers"][0])


# ------------------------------------------------------------------------------------------ adapter


def test_adapter_reaches_the_predictor_service():
    adapter = cr.pod_specs(scenario("default"))["adapter"]
    env = cr.env_values(adapter)
    # KServe (Standard mode) names the predictor Service "<isvc>-predictor"; port 80 -> container 8080.
    assert env["PREDICTOR_URL"] == f"http://{PREDICTOR_SERVICE}.{cr.NAMESPACE}.svc:80"
    assert env["PORT"] == "8081" and env["HOST"] == "0.0.0.0"
    assert cr.container_command(adapter) == ["python", "-m", "adapter"]
    assert adapter["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]
    assert adapter["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "tcpSocket" in adapter["livenessProbe"], "/health reflects the predictor; liveness must not"
    override = cr.env_values(cr.pod_specs(render((), {"adapter.predictorServicePort": 8080}))["adapter"])
    assert override["PREDICTOR_URL"].endswith(".svc:8080")
    assert "INFERENCESERVICE_NAME" not in env


def test_adapter_discovery_mode():
    objs = render((), {"adapter.discoverPredictor": True})
    deploy = cr.one(objs, "Deployment", ADAPTER)
    pod = deploy["spec"]["template"]["spec"]
    env = cr.env_values(pod["containers"][0])
    assert "PREDICTOR_URL" not in env
    assert env["INFERENCESERVICE_NAME"] == ISVC
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert pod["automountServiceAccountToken"] is True
    role = cr.one(objs, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [ISVC],
            "verbs": ["get"],
        }
    ]
    binding = cr.one(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": cr.NAMESPACE}
    ]
    assert "predictorUrl" in helm_fails((), {"adapter.discoverPredictor": True, "adapter.predictorUrl": "http://x:80"})


def test_adapter_optional_objects():
    objs = scenario("everything-on")
    deploy = cr.one(objs, "Deployment", ADAPTER)
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    hpa = cr.one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == ADAPTER
    ingress = cr.one(objs, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": ADAPTER, "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "chatterbox-tls"
    pdbs = {p["metadata"]["name"]: p["spec"] for p in cr.find(objs, "PodDisruptionBudget")}
    assert pdbs[ADAPTER]["minAvailable"] == "50%" and pdbs[PREDICTOR_SERVICE]["minAvailable"] == 1


def test_secrets():
    objs = scenario("everything-on")
    secrets = {s["metadata"]["name"]: s for s in cr.find(objs, "Secret")}
    assert set(secrets) == {f"{cr.RELEASE}-api-token", f"{cr.RELEASE}-hf-token"}
    assert set(secrets[f"{cr.RELEASE}-api-token"]["data"]) == {"API_TOKEN"}
    assert set(secrets[f"{cr.RELEASE}-hf-token"]["data"]) == {"HF_TOKEN"}
    pods = cr.pod_specs(objs)
    assert cr.env_values(pods["adapter"])["API_TOKEN"]["secretKeyRef"] == {
        "name": f"{cr.RELEASE}-api-token",
        "key": "API_TOKEN",
    }
    assert cr.env_values(pods["predictor"])["HF_TOKEN"]["secretKeyRef"]["name"] == f"{cr.RELEASE}-hf-token"
    existing = cr.pod_specs(render((), {"apiToken.existingSecret": "my-api", "apiToken.existingSecretKey": "token"}))
    assert cr.env_values(existing["adapter"])["API_TOKEN"]["secretKeyRef"] == {"name": "my-api", "key": "token"}
    assert not cr.find(render((), {"apiToken.existingSecret": "my-api"}), "Secret")
    # No token: no env at all (the adapter then leaves the API open, and NOTES.txt says so).
    assert "API_TOKEN" not in cr.env_values(cr.pod_specs(scenario("default"))["adapter"])


# ------------------------------------------------------------------------------ labels and security


@pytest.mark.parametrize("name", SCENARIOS)
def test_labels_and_namespace(name):
    for obj in scenario(name):
        meta = obj["metadata"]
        labels = meta.get("labels", {})
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']}/{meta['name']} lacks {key}"
        assert meta["namespace"] == cr.NAMESPACE
        assert len(meta["name"]) <= 63


@pytest.mark.parametrize("name", SCENARIOS)
def test_pods_are_locked_down(name):
    for component, pod in cr.pod_templates(scenario(name)).items():
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, component
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "resources" in c and c["resources"]["limits"]["memory"]
        mounts = {c["name"]: cr.volume_mounts(c) for c in pod["containers"]}
        writable = {path for m in mounts.values() for path, vm in m.items() if not vm.get("readOnly")}
        allowed = {"predictor": {"/tmp", "/cache"}, "adapter": {"/tmp", "/app/voices"}, "test": set()}[component]
        assert writable == allowed, (component, writable)
        if component == "predictor":
            assert mounts["kserve-container"]["/app/voices"]["readOnly"] is True


def test_voices_are_shared_between_adapter_and_predictor():
    objs = scenario("default")
    pods = cr.pod_templates(objs)
    claims = {
        c: next(v for v in p["volumes"] if v["name"] == "voices")["persistentVolumeClaim"]["claimName"]
        for c, p in pods.items()
        if c in ("adapter", "predictor")
    }
    assert claims["adapter"] == claims["predictor"] == f"{cr.RELEASE}-voices"
    pvc = cr.one(objs, "PersistentVolumeClaim", claims["adapter"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for c in ("adapter", "predictor"):
        env = cr.env_values(cr.pod_specs(objs)[c])
        assert env["VOICES_DIR"] == "/app/voices"
    existing = cr.pod_templates(render((), {"voices.existingClaim": "team-voices"}))
    assert (
        next(v for v in existing["adapter"]["volumes"] if v["name"] == "voices")["persistentVolumeClaim"]["claimName"]
        == "team-voices"
    )


def test_selectors_match_pods():
    objs = scenario("everything-on")
    pods = cr.pod_templates(objs)
    isvc = cr.one(objs, "InferenceService")
    pod_labels = {
        "predictor": isvc["spec"]["predictor"]["labels"],
        "adapter": cr.one(objs, "Deployment", ADAPTER)["spec"]["template"]["metadata"]["labels"],
    }
    assert set(pods) >= {"predictor", "adapter"}
    service = cr.one(objs, "Service", ADAPTER)
    assert labels_match(service["spec"]["selector"], pod_labels["adapter"])
    assert not labels_match(service["spec"]["selector"], pod_labels["predictor"])
    deploy = cr.one(objs, "Deployment", ADAPTER)
    assert labels_match(deploy["spec"]["selector"]["matchLabels"], pod_labels["adapter"])
    for pdb in cr.find(objs, "PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels[component])
    for mon in cr.find(objs, "PodMonitor") + cr.find(objs, "ServiceMonitor"):
        assert all(labels_match(mon["spec"]["selector"]["matchLabels"], labels) for labels in pod_labels.values())


def test_network_policy_admits_only_adapter_and_prometheus():
    objs = scenario("default")
    policy = cr.one(objs, "NetworkPolicy")
    isvc = cr.one(objs, "InferenceService")
    predictor_labels = isvc["spec"]["predictor"]["labels"]
    adapter_labels = cr.one(objs, "Deployment", ADAPTER)["spec"]["template"]["metadata"]["labels"]
    assert labels_match(policy["spec"]["podSelector"]["matchLabels"], predictor_labels)
    assert not labels_match(policy["spec"]["podSelector"]["matchLabels"], adapter_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    from_adapter, from_prometheus = policy["spec"]["ingress"]
    assert labels_match(from_adapter["from"][0]["podSelector"]["matchLabels"], adapter_labels)
    ports = {p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]}
    assert {p["port"] for p in from_adapter["ports"]} == ports
    assert from_prometheus["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert [p["port"] for p in from_prometheus["ports"]] == [8080]
    # Prometheus annotations point at the same port.
    assert isvc["spec"]["predictor"]["annotations"]["prometheus.io/port"] == "8080"


def test_helm_test_hook_calls_adapter_health():
    pod = cr.one(scenario("default"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{ADAPTER}:8081/health" in script
    assert pod["spec"]["containers"][0]["image"] == cr.pod_specs(scenario("default"))["adapter"]["image"]


# --------------------------------------------------------------------------------------- values

BAD_VALUES = [
    ({"predictor.device": "tpu"}, "predictor.device"),
    ({"predictor.maxConcurrentRequests": 0}, "maxConcurrentRequests"),
    ({"predictor.deploymentMode": "Serverless"}, "deploymentMode"),
    ({"predictor.autoscaling.class": "kpa"}, "class"),
    ({"predictor.autoscaling.scaleMetric": "gpu"}, "scaleMetric"),
    ({"predictor.autoscaling.minReplicas": -1}, "minReplicas"),
    ({"predictor.image.pullPolicy": "Sometimes"}, "pullPolicy"),
    ({"predictor.loadTurbo": "yes"}, "loadTurbo"),
    ({"predictor.resources": {"limits": {"memory": "lots"}}}, "memory"),
    ({"models.source": "s3"}, "source"),
    ({"models.storageUri": "ftp://models"}, "storageUri"),
    ({"models.storageUris": [{"uri": "hf://ResembleAI/chatterbox", "mountPath": "/models"}]}, "mountPath"),
    ({"voices.accessModes": ["ReadWriteSometimes"]}, "accessModes"),
    ({"adapter.port": 70000}, "port"),
    ({"adapter.predictorUrl": "predictor:8080"}, "predictorUrl"),
    ({"adapter.logLevel": "verbose"}, "logLevel"),
    ({"adapter.service.type": "ExternalName"}, "type"),
    ({"adapter.maxUploadBytes": 10}, "maxUploadBytes"),
    ({"metrics.serviceMonitor.interval": "often"}, "interval"),
    ({"predictor.typo": 1}, "typo"),
    ({"unknownTopLevel": True}, "unknownTopLevel"),
]


@pytest.mark.parametrize("values,needle", BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_schema_rejects_bad_values(values, needle):
    error = helm_fails((), values)
    assert "schema" in error and needle in error, error


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"predictor.loadStandard": False}, "at least one of"),
        ({"predictor.autoscaling.minReplicas": 3, "predictor.autoscaling.maxReplicas": 2}, "minReplicas"),
        ({"predictor.autoscaling.scaleTarget": 150}, "scaleTarget"),
        ({"models.source": "storageUri", "models.storageUri": ""}, "storageUri"),
        ({"apiToken.value": "a", "apiToken.existingSecret": "b"}, "apiToken"),
    ],
)
def test_templates_reject_inconsistent_values(values, needle):
    assert needle in helm_fails((), values)


def _commented_paths(text: str) -> tuple[set[str], set[str]]:
    """Dotted paths of the mapping keys in values.yaml, and those with a '#' comment line right above."""
    keys, commented, stack = set(), set(), []  # stack: (indent, key)
    previous = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped:
            previous = ""
            continue
        if stripped.startswith("#"):
            previous = stripped
            continue
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):( |$)", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k in stack] + [match.group(2)])
            keys.add(path)
            if previous.startswith("#"):
                commented.add(path)
            stack.append((indent, match.group(2)))
        previous = stripped
    return keys, commented


def _schema_paths(schema: dict, defs: dict, prefix: str = "") -> set[str]:
    """Paths of chart-defined keys: properties of schema objects that list their properties."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= _schema_paths(sub, defs, path + ".")
    return paths


def test_every_values_key_is_documented_and_in_the_schema():
    schema = json.loads((cr.CHART / "values.schema.json").read_text())
    keys, commented = _commented_paths((cr.CHART / "values.yaml").read_text())
    chart_keys = _schema_paths(schema, schema["definitions"]) - {"global"}
    values = yaml.safe_load((cr.CHART / "values.yaml").read_text())

    def present(path):
        node = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    defined = {p for p in chart_keys if present(p)}
    assert len(defined) > 100, "no keys found"
    # Inside Kubernetes-native structures (resources, a Deployment strategy, label selectors) the parent's
    # comment documents the standard fields.
    native = re.compile(r"\.(resources|deploymentStrategy|prometheusNamespaceSelector|prometheusPodSelector)\.")
    undocumented = sorted(p for p in defined if p in keys and p not in commented and not native.search(p))
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"
    # Every schema key exists in values.yaml (documented defaults), except free-form maps' contents.
    missing = sorted(
        p
        for p in chart_keys
        if not present(p)
        and p.count(".") < 3
        and not re.search(
            r"\.(requests|limits|claims|matchLabels|matchExpressions|rollingUpdate"
            r"|maxSurge|maxUnavailable|type)$",
            p,
        )
    )
    assert not missing, f"schema keys missing from values.yaml: {missing}"


def test_values_files_only_use_known_keys():
    schema = json.loads((cr.CHART / "values.schema.json").read_text())
    chart_keys = _schema_paths(schema, schema["definitions"])
    free_form = re.compile(r"\.(resources|nodeSelector|tolerations|podLabels|podAnnotations|affinity)(\.|$)")
    for name in ("values-cpu.yaml", "values-gpu.yaml"):
        data = yaml.safe_load((cr.CHART / name).read_text())

        def walk(node, path, name=name):
            for key, value in node.items():
                dotted = f"{path}{key}"
                if free_form.search("." + dotted):
                    continue
                assert dotted in chart_keys, f"{name}: {dotted} is not a chart value"
                if isinstance(value, dict):
                    walk(value, dotted + ".")

        walk(data, "")


# -------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("variant", render_manifests.VARIANTS)
def test_manifests_match_the_chart(variant):
    path = render_manifests.output_path(variant)
    assert path.exists(), f"{path} missing: run `make manifests`"
    text = path.read_text()
    fresh = render_manifests.render_variant(cr.HELM, variant)
    assert text.splitlines()[:3] == fresh.splitlines()[:3], "header differs: run `make manifests`"
    assert cr.parse(text) == cr.parse(fresh), f"{path.name} ({variant}) is stale: run `make manifests`"


@pytest.mark.parametrize("variant", render_manifests.VARIANTS)
def test_manifests_are_valid_and_hook_free(variant):
    objs = cr.parse(render_manifests.output_path(variant).read_text())
    assert not any("helm.sh/hook" in o["metadata"].get("annotations", {}) for o in objs)
    isvc = cr.one(objs, "InferenceService")
    assert cv.kserve_errors(isvc) == []
    for obj in objs:
        if obj["kind"] not in cv.KSERVE_KINDS:
            cv.validate_core(obj)
    adapter = cr.pod_specs(objs)["adapter"]
    ref = cr.env_values(adapter)["API_TOKEN"]["secretKeyRef"]
    assert ref["name"] == render_manifests.API_TOKEN_SECRET and not ref.get("optional")
    readme = (Path(render_manifests.OUT_DIR) / "README.md").read_text()
    assert render_manifests.API_TOKEN_SECRET in readme and render_manifests.HF_TOKEN_SECRET in readme
