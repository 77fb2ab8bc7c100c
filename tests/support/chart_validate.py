"""Offline validation of rendered objects: Kubernetes' own schemas and KServe's CRD schemas.

Core kinds go through `kubernetes-validate` (strict: unknown fields are errors, as with
`kubectl apply --validate=strict`). InferenceService / ServingRuntime / ClusterServingRuntime go
through the openAPIV3Schema of KServe's CRDs in ../shared/kserve-crds/ (read-only reference data, not
copied into the project), made strict the same way: an object schema that lists properties rejects
others unless it carries x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KSERVE_CRDS = ROOT.parent / "shared" / "kserve-crds"
KUBERNETES_VERSION = "1.30"

# Kinds with a CRD here, and CRD kinds the chart may render that have no schema here (checked by hand in tests).
KSERVE_KINDS = {
    "InferenceService": "inferenceservices",
    "ServingRuntime": "servingruntimes",
    "ClusterServingRuntime": "clusterservingruntimes",
}
OTHER_CRD_KINDS = {"ServiceMonitor", "PodMonitor", "ScaledObject"}


def validate_core(obj: dict) -> str:
    """Raise kubernetes_validate's ValidationError unless `obj` is a valid core object; returns the version."""
    return kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def kserve_validator(kind: str, version: str = "v1beta1") -> jsonschema.protocols.Validator:
    path = KSERVE_CRDS / f"serving.kserve.io_{KSERVE_KINDS[kind]}.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB: libyaml if present
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema = _strict(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            return cls(schema)
    raise KeyError(f"{kind} has no version {version} in {path}")


def kserve_errors(obj: dict) -> list[str]:
    """Every CRD schema violation of a KServe object, as 'path: message' strings."""
    group, _, version = obj["apiVersion"].partition("/")
    assert group == "serving.kserve.io", obj["apiVersion"]
    validator = kserve_validator(obj["kind"], version)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
