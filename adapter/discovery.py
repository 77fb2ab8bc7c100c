"""Where the predictor is: a fixed PREDICTOR_URL, or read from the InferenceService's status.

With INFERENCESERVICE_NAME set (and PREDICTOR_URL unset) the adapter asks the Kubernetes API for
`serving.kserve.io/v1beta1` InferenceService `<POD_NAMESPACE>/<INFERENCESERVICE_NAME>` and takes:

* the address, first of: `status.components.predictor.address.url` (cluster-local, Knative mode),
  `status.address.url` (cluster-local; in Standard mode `http://<isvc>-predictor.<ns>.svc.cluster.local`),
  `status.components.predictor.url`, `status.url` (these two may be external, ingress-domain names);
* readiness, from the condition `Ready`.

The answer is cached for `refresh_s` (30 s) while the InferenceService is Ready, `retry_s` (5 s)
otherwise, and looked up again sooner (at most every `retry_s`) after a failed connection. The
Kubernetes client is synchronous, so each lookup runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from adapter.settings import Settings

log = logging.getLogger("adapter.discovery")

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# A Kubernetes object name (RFC 1123 subdomain) / namespace (RFC 1123 label).
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class DiscoveryError(ValueError):
    """Discovery cannot be set up (no namespace, no Kubernetes configuration); raised at start-up."""


@dataclass(frozen=True)
class PredictorLocation:
    url: str | None  # base URL without a trailing slash; None: nowhere to send requests
    ready: bool | None = None  # None: nothing known beyond the URL (the predictor's own health decides)
    problem: str | None = None  # why there is no URL or it is not ready, in words for /health


class PredictorLocator(Protocol):
    async def locate(self) -> PredictorLocation: ...

    def invalidate(self) -> None:
        """A connection to the located URL failed: look again soon."""

    async def aclose(self) -> None: ...


class StaticLocator:
    """PREDICTOR_URL: always the same address."""

    def __init__(self, url: str):
        self._location = PredictorLocation(url.rstrip("/"))

    async def locate(self) -> PredictorLocation:
        return self._location

    def invalidate(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"StaticLocator({self._location.url!r})"


def location_from_status(isvc: dict, ref: str) -> PredictorLocation:
    """Address and readiness from an InferenceService object (a dict as the API returns it)."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    candidates = [
        (predictor.get("address") or {}).get("url"),
        (status.get("address") or {}).get("url"),
        predictor.get("url"),
        status.get("url"),
    ]
    url = next(
        (u.rstrip("/") for u in candidates if isinstance(u, str) and u.startswith(("http://", "https://"))), None
    )
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
    ready = ready_condition is not None and str(ready_condition.get("status")) == "True"
    if url is None:
        why = _not_ready_reason(ready_condition, conditions)
        return PredictorLocation(
            None, False, f"InferenceService {ref} has no address in its status yet" + (f" ({why})" if why else "")
        )
    if not ready:
        why = _not_ready_reason(ready_condition, conditions)
        return PredictorLocation(url, False, f"InferenceService {ref} is not Ready" + (f": {why}" if why else ""))
    return PredictorLocation(url, True)


def _not_ready_reason(ready: dict | None, conditions: list[dict]) -> str:
    if ready is None:
        return "no Ready condition yet"
    parts = []
    for condition in [ready] + [c for c in conditions if c is not ready and str(c.get("status")) != "True"]:
        detail = ": ".join(str(x) for x in (condition.get("reason"), condition.get("message")) if x)
        parts.append(f"{condition.get('type')}={condition.get('status')}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts[:3])


def cluster_configuration() -> Configuration:
    """The API server and credentials: in-cluster (the pod's ServiceAccount) when running in a pod,
    else the kubeconfig (KUBECONFIG or ~/.kube/config), for running the adapter outside the cluster."""
    from kubernetes import config
    from kubernetes.client import Configuration

    configuration = Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise DiscoveryError(
            f"INFERENCESERVICE_NAME is set, but there is no Kubernetes API configuration "
            f"(in-cluster ServiceAccount or kubeconfig): {exc}"
        ) from None
    return configuration


def resolve_namespace(explicit: str | None, namespace_file: str | os.PathLike = NAMESPACE_FILE) -> str:
    if explicit:
        return explicit
    try:
        namespace = Path(namespace_file).read_text().strip()
    except OSError:
        namespace = ""
    if not namespace:
        raise DiscoveryError(
            f"INFERENCESERVICE_NAME is set, but POD_NAMESPACE is not and {namespace_file} cannot be read"
        )
    return namespace


class InferenceServiceLocator:
    """The predictor's address and readiness from an InferenceService's status, via the Kubernetes API."""

    def __init__(
        self,
        name: str,
        namespace: str,
        configuration: Configuration | None = None,
        *,
        refresh_s: float = 30.0,
        retry_s: float = 5.0,
        request_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        from kubernetes.client import ApiClient, CustomObjectsApi

        self.name, self.namespace = name, namespace
        self.ref = f"{namespace}/{name}"
        self._api_client = ApiClient(configuration if configuration is not None else cluster_configuration())
        self._api = CustomObjectsApi(self._api_client)
        self._refresh_s, self._retry_s, self._timeout_s = refresh_s, retry_s, request_timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._location: PredictorLocation | None = None
        self._fetched_at = float("-inf")
        self._expires = float("-inf")

    def __repr__(self) -> str:
        return f"InferenceServiceLocator({self.ref!r})"

    def _fresh(self) -> bool:
        return self._location is not None and self._clock() < self._expires

    async def locate(self) -> PredictorLocation:
        if not self._fresh():
            async with self._lock:  # one lookup at a time; the others wait for its answer
                if not self._fresh():
                    location = await asyncio.to_thread(self._read)
                    self._remember(location)
        assert self._location is not None  # _fresh() checked it, or _remember() just set it
        return self._location

    def invalidate(self) -> None:
        self._expires = min(self._expires, self._fetched_at + self._retry_s)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._api_client.close)

    def _remember(self, location: PredictorLocation) -> None:
        previous = self._location
        if previous is None or (previous.url, previous.ready, previous.problem) != (
            location.url,
            location.ready,
            location.problem,
        ):
            if location.ready:
                log.info("predictor: %s (InferenceService %s is Ready)", location.url, self.ref)
            else:
                log.warning("predictor: %s", location.problem)
        self._location = location
        self._fetched_at = self._clock()
        self._expires = self._fetched_at + (self._refresh_s if location.ready else self._retry_s)

    def _read(self) -> PredictorLocation:
        """One GET of the InferenceService (in a worker thread)."""
        from kubernetes.client.exceptions import ApiException

        try:
            isvc = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=self._timeout_s
            )
        except ApiException as exc:
            if exc.status == 404:
                return PredictorLocation(None, False, f"InferenceService {self.ref} not found")
            if exc.status in (401, 403):
                return PredictorLocation(
                    None,
                    False,
                    f"not allowed to read InferenceService {self.ref} "
                    f"(HTTP {exc.status}): check the adapter's ServiceAccount and Role",
                )
            return self._api_failed(f"HTTP {exc.status} {exc.reason or ''}".strip())
        except Exception as exc:  # connection refused, timeouts, TLS, a bad answer: all mean "no answer"
            return self._api_failed(f"{exc.__class__.__name__}: {exc}")
        if not isinstance(isvc, dict):
            return self._api_failed("the answer is not an object")
        return location_from_status(isvc, self.ref)

    def _api_failed(self, what: str) -> PredictorLocation:
        # The API server being briefly unreachable says nothing about the predictor: keep what we knew.
        if self._location is not None and self._location.url is not None:
            log.warning("cannot read InferenceService %s (%s); keeping %s", self.ref, what, self._location.url)
            return self._location
        return PredictorLocation(
            None, False, f"cannot read InferenceService {self.ref} from the Kubernetes API ({what})"
        )


def validate_names(name: str | None, namespace: str | None) -> list[str]:
    """Problems with INFERENCESERVICE_NAME / POD_NAMESPACE, for the settings check."""
    problems = []
    if name is not None and not _OBJECT_NAME.match(name):
        problems.append("INFERENCESERVICE_NAME must be a Kubernetes object name (lower-case letters, digits, '-', '.')")
    if namespace is not None and not _NAMESPACE.match(namespace):
        problems.append("POD_NAMESPACE must be a Kubernetes namespace name (lower-case letters, digits, '-')")
    return problems


def make_locator(settings: Settings, configuration: Configuration | None = None, **options: Any) -> PredictorLocator:
    """PREDICTOR_URL, or discovery when INFERENCESERVICE_NAME is set. `configuration` replaces the
    in-cluster Kubernetes configuration (tests); `options` go to InferenceServiceLocator."""
    if settings.inferenceservice_name:
        namespace = resolve_namespace(settings.pod_namespace)
        return InferenceServiceLocator(settings.inferenceservice_name, namespace, configuration, **options)
    return StaticLocator(settings.predictor_url)
