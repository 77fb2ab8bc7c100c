"""Metric names that the chart's PromQL (Grafana dashboard, PrometheusRule) refers to, read with a real
PromQL parser (promql-parser, the Rust parser's Python binding)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

import promql_parser

from tests.support import chart_render as cr

DASHBOARD = cr.CHART / "dashboards" / "chatterbox.json"
# Grafana's own variables, replaced by what Grafana would put there before the query reaches Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.S)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def substitute(expr: str, variables: Iterable[str]) -> str:
    """Grafana interpolation: durations for the built-ins, a plain value for the dashboard's own variables."""
    known = set(variables)

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        assert name in known, f"{expr!r} uses ${name}, which the dashboard does not define"
        return "value"

    return _VARIABLE.sub(value, expr)


def dashboard_queries(board: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (label_values(expr, label) -> expr)."""
    variables = [v["name"] for v in board["templating"]["list"]]
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", substitute(target["expr"], variables)
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {variable['name']}: expected label_values(<selector>, <label>), got {query!r}"
        yield f"variable {variable['name']}", substitute(match.group(1), variables)


def metric_names(expr: str) -> set[str]:
    """Names of every vector selector in a PromQL expression (a syntax error raises)."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
