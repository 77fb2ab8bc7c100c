"""The Grafana dashboard and the PrometheusRule (issue 12, part 3): off by default, well-formed, and every
metric their PromQL names is one the running predictor and adapter export (read from their /metrics), or
one of the few kube-state-metrics series listed below."""

from __future__ import annotations

import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import chart_render as cr
from tests.support.promql_names import DASHBOARD, dashboard, dashboard_queries, metric_names
from tests.support.servers import start_adapter

# Series from kube-state-metrics, not from this project's processes: the only external names allowed.
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}
PANELS = {
    "Requests by outcome",
    "In flight",
    "Time to first audio p50 / p95",
    "Real-time factor",
    "Audio seconds per second",
    "Voice-cache hit rate",
    "429 rate",
    "Replicas",
}
ON = {"metrics.grafanaDashboard.enabled": True, "metrics.prometheusRule.enabled": True}


def rule_expressions(objects: list[dict]) -> dict[str, str]:
    rule = cr.one(objects, "PrometheusRule")
    return {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def test_off_by_default():
    kinds = {o["kind"] for o in cr.render()}
    assert not kinds & {"ConfigMap", "PrometheusRule"}


def test_dashboard_configmap_for_the_grafana_sidecar():
    objects = cr.render((), ON)
    config_map = cr.one(objects, "ConfigMap", f"{cr.RELEASE}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == cr.NAMESPACE
    (payload,) = config_map["data"].values()
    assert json.loads(payload) == dashboard()  # the chart's file, verbatim
    other = cr.render((), {**ON, "metrics.grafanaDashboard.namespace": "grafana"})
    assert cr.one(other, "ConfigMap")["metadata"]["namespace"] == "grafana"


def test_dashboard_has_the_panels_and_every_query_parses():
    board = dashboard()
    assert {p["title"] for p in board["panels"]} == PANELS
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for where, expr in dashboard_queries(board):
        assert metric_names(expr), f"{where}: no metric in {expr!r}"
    ttfa = next(p for p in board["panels"] if p["title"].startswith("Time to first audio"))
    assert {"0.5", "0.95"} <= {t["expr"].split(",")[0].removeprefix("histogram_quantile(") for t in ttfa["targets"]}


def test_prometheus_rule_alerts_and_thresholds_from_values():
    objects = cr.render((), {**ON, "metrics.prometheusRule.timeToFirstAudioP95Seconds": 1.5})
    expressions = rule_expressions(objects)
    assert set(expressions) == {"ChatterboxPredictorNotReady", "ChatterboxTooManyRequests", "ChatterboxSlowFirstAudio"}
    for expr in expressions.values():
        assert metric_names(expr)
    assert expressions["ChatterboxSlowFirstAudio"].rstrip().endswith("> 1.5")
    assert "histogram_quantile(0.95" in expressions["ChatterboxSlowFirstAudio"]
    assert 'status="429"' in expressions["ChatterboxTooManyRequests"]
    assert f'deployment="{cr.RELEASE}-predictor"' in expressions["ChatterboxPredictorNotReady"]
    rule = cr.one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    durations = {r["alert"]: r["for"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert durations == {
        "ChatterboxPredictorNotReady": "5m",
        "ChatterboxTooManyRequests": "10m",
        "ChatterboxSlowFirstAudio": "10m",
    }


def referenced_metrics() -> dict[str, set[str]]:
    """metric name -> where it is used, over the dashboard and the rendered rules."""
    used: dict[str, set[str]] = {}
    for where, expr in dashboard_queries(dashboard()):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"{DASHBOARD.name} {where}")
    for alert, expr in rule_expressions(cr.render((), ON)).items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"PrometheusRule {alert}")
    return used


def exported_names(url: str) -> set[str]:
    """Sample names in a /metrics answer, as Prometheus stores them (_total, _bucket, _sum, _count...)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture(scope="module")
def adapter(predictor, voices_dir, tmp_path_factory):
    # A generous relay timeout: the first request prepares the voice, slow on a busy CI machine.
    server = start_adapter(
        predictor.http_url, voices_dir, tmp_path_factory.mktemp("adapter-logs"), PREDICTOR_TIMEOUT_S="900"
    )
    yield server
    server.stop()


@pytest.mark.slow
def test_every_metric_in_the_dashboard_and_rules_is_exported(predictor, adapter):
    # One streamed request with a reference voice, so that the histograms, the voice cache counter and the
    # outcome counters have samples on both sides.
    body = {
        "text": "Metrics, please.",
        "model": "turbo",
        "voice": {"audio_prompt_path": "alice.wav", "seed": 3, "max_new_tokens": 12},
        "audio": {"format": "pcm", "stream": True},
    }
    response = requests.post(f"{adapter.url}/api/tts", json=body, timeout=900)
    assert response.status_code == 200, response.text
    exported = exported_names(predictor.http_url) | exported_names(adapter.url)
    used = referenced_metrics()
    assert set(used) >= KUBE_STATE_METRICS, "the external list names series the chart no longer uses"
    unknown = {name: sorted(where) for name, where in used.items() if name not in exported | KUBE_STATE_METRICS}
    assert not unknown, f"PromQL names metrics nobody exports: {unknown}"
