"""checkov (a maintained IaC scanner) on the rendered chart, every values set (issue 13, part 8).

Zero failed checks are allowed except the reasoned entries of checkov_suppressions.yaml. The
InferenceService is a custom resource that checkov does not read, so the test also scans the Deployment
KServe makes of its predictor spec (the pod that really runs).
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.support import chart_render as cr

CHECKOV = os.environ.get("CHECKOV") or str(cr.ROOT / ".tools" / "checkov" / "bin" / "checkov")
SUPPRESSIONS = Path(__file__).with_name("checkov_suppressions.yaml")
# Fields of an InferenceService's predictor that are a pod spec's; the rest (replicas, scaling, strategy,
# labels) are KServe's and go elsewhere in the Deployment it creates.
POD_SPEC_FIELDS = {
    "containers",
    "volumes",
    "serviceAccountName",
    "automountServiceAccountToken",
    "securityContext",
    "terminationGracePeriodSeconds",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "runtimeClassName",
    "imagePullSecrets",
}
DIGEST = "sha256:" + "0" * 64


def predictor_deployment(isvc: dict) -> dict:
    """The Deployment "<isvc>-predictor" that KServe's Standard mode creates from the predictor spec."""
    predictor = isvc["spec"]["predictor"]
    labels = predictor["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{isvc['metadata']['name']}-predictor",
            "namespace": isvc["metadata"]["namespace"],
            "labels": {**isvc["metadata"]["labels"], **labels},
        },
        "spec": {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": labels},
            "strategy": predictor.get("deploymentStrategy", {}),
            "template": {
                "metadata": {"labels": labels, "annotations": predictor.get("annotations", {})},
                "spec": {k: v for k, v in predictor.items() if k in POD_SPEC_FIELDS},
            },
        },
    }


def suppressions() -> list[dict]:
    return yaml.safe_load(SUPPRESSIONS.read_text())


@cache
def failures(files: tuple[str, ...], frozen_values: str = "{}") -> tuple[tuple[str, str], ...]:
    """(check id, resource id) of every failed checkov check on one render."""
    assert Path(CHECKOV).exists(), f"checkov not found at {CHECKOV}: run `make test-tools`"
    objects = cr.render(files, json.loads(frozen_values))
    objects.append(predictor_deployment(cr.one(objects, "InferenceService")))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "chart.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        proc = subprocess.run(
            [CHECKOV, "--directory", folder, "--framework", "kubernetes", "--output", "json"]
            + ["--compact", "--skip-download"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["check_type"] == "kubernetes", report
    # Both workloads were really scanned (a parse problem would leave them out silently).
    scanned = {r["resource"] for r in report["results"]["passed_checks"] + report["results"]["failed_checks"]}
    for name in ("adapter", "predictor"):
        assert f"Deployment.{cr.NAMESPACE}.{cr.RELEASE}-{name}" in scanned, sorted(scanned)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return tuple(sorted({(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]}))


def suppression_for(check: str, resource: str) -> dict | None:
    for entry in suppressions():
        if entry["check"] == check and any(fnmatch.fnmatchcase(resource, p) for p in entry["resources"]):
            return entry
    return None


def test_every_suppression_carries_a_reason():
    entries = suppressions()
    assert entries
    for entry in entries:
        assert set(entry) == {"check", "resources", "reason"}, entry
        assert entry["check"].startswith(("CKV_K8S_", "CKV2_K8S_")) and entry["resources"], entry
        assert len(entry["reason"].split()) >= 8, f"{entry['check']}: say why, in a sentence"


@pytest.mark.parametrize("name", cr.VALUES_SETS)
def test_checkov_finds_nothing_unsuppressed(name):
    found = failures(cr.VALUES_SETS[name])
    unsuppressed = [f"{check} on {resource}" for check, resource in found if not suppression_for(check, resource)]
    assert not unsuppressed, f"checkov failures without a reasoned suppression: {unsuppressed}"


def test_every_suppression_is_still_needed():
    found = {f for files in cr.VALUES_SETS.values() for f in failures(files)}
    for entry in suppressions():
        assert any(suppression_for(*f) == entry for f in found), f"{entry['check']} no longer fails: remove it"


def test_the_scan_can_fail_and_digests_clear_their_finding():
    # Negative control: loosening the adapter's security context is caught.
    loose = {
        "adapter.containerSecurityContext.allowPrivilegeEscalation": True,
        "adapter.containerSecurityContext.readOnlyRootFilesystem": False,
    }
    found = {
        check for check, resource in failures((), json.dumps(loose, sort_keys=True)) if resource.endswith("-adapter")
    }
    assert {"CKV_K8S_20", "CKV_K8S_22"} <= found, found
    # With digests the image-digest finding is gone: the suppression only covers the tag default.
    pinned = {"predictor.image.digest": DIGEST, "adapter.image.digest": DIGEST, "tests.enabled": False}
    assert "CKV_K8S_43" not in {check for check, _ in failures((), json.dumps(pinned, sort_keys=True))}
