"""KServe's shutdown convention in the rendered chart: a preStop sleep, then SIGTERM and a drain bounded by
DRAIN_TIMEOUT_S, inside a grace period at least as long as both (issue 13, part 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts import render_manifests
from tests.support import chart_render as cr

# The container of each workload and where its pod spec sits in the rendered objects.
WORKLOADS = ("predictor", "adapter")


def shutdown_numbers(objects: list[dict]) -> dict[str, tuple[int, int, int]]:
    """component -> (preStop sleep, DRAIN_TIMEOUT_S, terminationGracePeriodSeconds), read from the render."""
    pods = cr.pod_templates(objects)
    numbers = {}
    for component in WORKLOADS:
        pod = pods[component]
        container = pod["containers"][0]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and len(command) == 2, command
        drain = cr.env_values(container)["DRAIN_TIMEOUT_S"]
        numbers[component] = (int(command[1]), int(drain), pod["terminationGracePeriodSeconds"])
    return numbers


def values_of(files: tuple[str, ...]) -> dict:
    """values.yaml overlaid with the set's files (maps merged, as helm does)."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    merged = yaml.safe_load((cr.CHART / "values.yaml").read_text())
    for name in files:
        merged = merge(merged, yaml.safe_load(Path(cr._values_path(name)).read_text()) or {})
    return merged


@pytest.mark.parametrize("name", cr.VALUES_SETS)
def test_grace_period_covers_prestop_and_drain(name):
    files = cr.VALUES_SETS[name]
    values = values_of(files)
    for component, (sleep, drain, grace) in shutdown_numbers(cr.render(files)).items():
        assert grace >= sleep + drain, f"{name} {component}: grace {grace} < preStop {sleep} + drain {drain}"
        # The numbers come from the values, not from constants in the templates.
        assert sleep == values[component]["preStopSleepSeconds"]
        assert drain == values[component]["drainTimeoutSeconds"]
        explicit = values[component]["terminationGracePeriodSeconds"]
        assert grace == (explicit or sleep + drain + 10)
        assert sleep >= 5, "endpoint removal needs a few seconds to reach every proxy"


def test_predictor_uses_kserves_15_second_prestop_by_default():
    numbers = shutdown_numbers(cr.render())
    assert numbers["predictor"][0] == 15


@pytest.mark.parametrize("variant", render_manifests.VARIANTS)
def test_plain_manifests_follow_the_convention(variant):
    objects = cr.parse(render_manifests.output_path(variant).read_text())
    for component, (sleep, drain, grace) in shutdown_numbers(objects).items():
        assert grace >= sleep + drain, (variant, component)


@pytest.mark.parametrize("component", WORKLOADS)
def test_a_grace_period_shorter_than_prestop_plus_drain_is_refused(component):
    values = {
        f"{component}.preStopSleepSeconds": 15,
        f"{component}.drainTimeoutSeconds": 100,
        f"{component}.terminationGracePeriodSeconds": 114,
    }
    with pytest.raises(cr.HelmError) as failure:
        cr.render_text((), values)
    assert f"{component}.terminationGracePeriodSeconds (114)" in str(failure.value)
    assert "(115)" in str(failure.value)
    # Exactly preStop + drain is enough.
    values[f"{component}.terminationGracePeriodSeconds"] = 115
    assert shutdown_numbers(cr.render((), values))[component] == (15, 100, 115)
