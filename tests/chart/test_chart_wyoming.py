"""The adapter's Wyoming port (Home Assistant) in the chart: off by default; when enabled a container port,
WYOMING_PORT, a Service and a NetworkPolicy rule (issue 12, part 2)."""

from __future__ import annotations

import pytest

from tests.support import chart_render as cr

ADAPTER = f"{cr.RELEASE}-adapter"
WYOMING_SERVICE = f"{ADAPTER}-wyoming"
ENABLED = {"adapter.wyoming.enabled": True}


def adapter_policy(objects: list[dict]) -> dict:
    return cr.one(objects, "NetworkPolicy", ADAPTER)


def test_off_by_default():
    objects = cr.render()
    container = cr.pod_specs(objects)["adapter"]
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert cr.env_values(container)["WYOMING_PORT"] == "0"  # the adapter then opens no Wyoming socket
    assert not cr.find(objects, "Service", WYOMING_SERVICE)
    (rule,) = adapter_policy(objects)["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8081]


def test_enabled_exposes_port_10200():
    objects = cr.render((), ENABLED)
    container = cr.pod_specs(objects)["adapter"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8081, "wyoming": 10200}
    assert cr.env_values(container)["WYOMING_PORT"] == "10200"
    service = cr.one(objects, "Service", WYOMING_SERVICE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "wyoming", "port": 10200, "targetPort": "wyoming", "protocol": "TCP"}]
    pod_labels = cr.one(objects, "Deployment", ADAPTER)["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (rule,) = adapter_policy(objects)["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8081, 10200]
    assert "from" not in rule  # any source unless networkPolicy.adapterIngressFrom narrows it
    for obj in objects:
        if obj["kind"] in ("Service", "Deployment", "NetworkPolicy"):
            from tests.support import chart_validate as cv

            cv.validate_core(obj)


def test_port_and_service_type_come_from_values():
    objects = cr.render(
        (),
        {
            **ENABLED,
            "adapter.wyoming.port": 10300,
            "adapter.wyoming.service.type": "LoadBalancer",
            "adapter.wyoming.service.port": 10201,
            "adapter.wyoming.service.nodePort": 30200,
            "networkPolicy.adapterIngressFrom": [{"namespaceSelector": {"matchLabels": {"name": "home-assistant"}}}],
        },
    )
    container = cr.pod_specs(objects)["adapter"]
    assert cr.env_values(container)["WYOMING_PORT"] == "10300"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["wyoming"] == 10300
    service = cr.one(objects, "Service", WYOMING_SERVICE)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0] | {"targetPort": "wyoming"} == {
        "name": "wyoming",
        "port": 10201,
        "targetPort": "wyoming",
        "protocol": "TCP",
        "nodePort": 30200,
    }
    (rule,) = adapter_policy(objects)["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8081, 10300]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "home-assistant"}}}]


@pytest.mark.parametrize(
    "values,needle",
    [
        ({**ENABLED, "adapter.wyoming.port": 8081}, "must differ from adapter.port"),
        ({"adapter.wyoming.port": 0}, "port"),
        ({"adapter.wyoming.service.type": "ExternalName"}, "type"),
    ],
)
def test_bad_wyoming_values_are_refused(values, needle):
    with pytest.raises(cr.HelmError) as failure:
        cr.render_text((), values)
    assert needle in str(failure.value)
