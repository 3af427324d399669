"""The chart's observability objects, rendered by the real Helm engine: off by default; when on,
each object checked against a strict schema of the fields it may carry (the Prometheus
Operator's PodMonitor and PrometheusRule, GKE's PodMonitoring: written from their API
references, unknown fields refused), the dashboard's shape, the scrape annotations of each
mode and the InferenceService's spec.tracing. Their queries run against a real Prometheus in
tests/test_observability.py."""

from __future__ import annotations

import json

import helm_python as helm
import jsonschema
import pytest

from tests.chart_helpers import core_validation_errors, objects, render
from tests.isvc_schema import validate_isvc

ALL_ON = {
    "monitoring": {
        "scrapeAnnotations": True,
        "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitoring": {"enabled": True},
        "dashboard": {"enabled": True},
        "alerts": {"enabled": True},
    }
}

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS},
    "additionalProperties": False,
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _LABELS},
    "required": ["matchLabels"],
    "additionalProperties": False,
}
_RELABEL = {
    "type": "object",
    "properties": {
        "sourceLabels": {"type": "array", "items": _STR},
        "regex": _STR,
        "targetLabel": _STR,
        "replacement": _STR,
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
    },
    "additionalProperties": False,
}


def _object(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SCHEMAS = {
    "PodMonitor": _object(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": _STR}},
                    "additionalProperties": False,
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": _STR,
                            "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "path": _STR,
                            "interval": _DURATION,
                            "relabelings": {"type": "array", "items": _RELABEL},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    ),
    "PodMonitoring": _object(
        "monitoring.googleapis.com/v1",
        "PodMonitoring",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "port": {"type": ["integer", "string"]},
                            "path": _STR,
                            "interval": _DURATION,
                        },
                        "additionalProperties": False,
                    },
                },
                "targetLabels": {
                    "type": "object",
                    "properties": {
                        "fromPod": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["from"],
                                "properties": {"from": _STR, "to": _STR},
                                "additionalProperties": False,
                            },
                        }
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    ),
    "PrometheusRule": _object(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": _STR,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {
                                            "type": "string",
                                            "pattern": "^[A-Za-z][A-Za-z0-9]*$",
                                        },
                                        "expr": _STR,
                                        "for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                            "additionalProperties": _STR,
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "runbook"],
                                            "additionalProperties": _STR,
                                        },
                                    },
                                    "additionalProperties": False,
                                },
                            },
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
}


def by_kind(values: dict) -> dict[str, dict]:
    return {d["kind"]: d for d in objects(render(values))}


def test_everything_is_off_by_default():
    docs = by_kind({})
    assert not {"PodMonitor", "PodMonitoring", "PrometheusRule", "ConfigMap"} & set(docs)
    isvc = docs["InferenceService"]
    assert "tracing" not in isvc["spec"]
    assert "annotations" not in isvc["spec"]["predictor"]
    assert not any("prometheus" in key for key in isvc["metadata"]["annotations"])


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_every_object_is_valid_for_its_api(mode):
    docs = by_kind({**ALL_ON, "deploymentMode": mode})
    for kind, schema in SCHEMAS.items():
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(docs[kind])]
        assert errors == [], f"{kind}: {errors}"
    assert core_validation_errors(docs["ConfigMap"]) is None
    assert validate_isvc(docs["InferenceService"]) == []
    # Every predictor pod of the InferenceService, stable and canaries alike.
    selector = {"serving.kserve.io/inferenceservice": docs["InferenceService"]["metadata"]["name"]}
    assert docs["PodMonitor"]["spec"]["selector"]["matchLabels"] == selector
    assert docs["PodMonitoring"]["spec"]["selector"]["matchLabels"] == selector
    assert docs["PodMonitor"]["metadata"]["labels"]["release"] == "prometheus"


def test_the_schemas_refuse_what_the_apis_would():
    """The strict schemas are real checks: a misspelt field or a bad duration fails."""
    monitor = by_kind(ALL_ON)["PodMonitor"]
    validator = jsonschema.Draft7Validator(SCHEMAS["PodMonitor"])
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert list(validator.iter_errors(monitor))
    rule = by_kind(ALL_ON)["PrometheusRule"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    assert list(jsonschema.Draft7Validator(SCHEMAS["PrometheusRule"]).iter_errors(rule))


def test_scrape_annotations_follow_the_mode():
    knative = by_kind({**ALL_ON, "deploymentMode": "Knative"})["InferenceService"]
    annotations = knative["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    standard = by_kind({**ALL_ON, "deploymentMode": "Standard"})["InferenceService"]
    assert standard["spec"]["predictor"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_the_scrape_labels_each_revision():
    knative = by_kind({**ALL_ON, "deploymentMode": "Knative"})
    targets = knative["PodMonitoring"]["spec"]["targetLabels"]["fromPod"]
    assert {"from": "serving.knative.dev/revision", "to": "revision"} in targets
    standard = by_kind({**ALL_ON, "deploymentMode": "Standard"})
    assert {"from": "app", "to": "revision"} in standard["PodMonitoring"]["spec"]["targetLabels"][
        "fromPod"
    ]
    relabel = standard["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {r["targetLabel"] for r in relabel} == {"inferenceservice", "revision"}


def test_the_dashboard_has_every_panel_per_revision():
    config = by_kind(ALL_ON)["ConfigMap"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    [document] = config["data"].values()
    dashboard = json.loads(document)
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == [
        "Requests per second",
        "Errors per second, by status",
        "Server error ratio (5xx)",
        "Latency p50 / p95 / p99",
        "Queue wait and forward time, p95",
        "Batch size (rows per forward)",
        "Requests in flight",
        "Model healthy (1) or broken (0)",
    ]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert "by (revision" in target["expr"]
            assert 'inferenceservice="demo-torch-predictor"' in target["expr"]
            assert "{{revision}}" in target["legendFormat"]
    assert dashboard["templating"]["list"][0]["query"] == "prometheus"


def test_tracing_renders_spec_tracing_and_needs_an_endpoint():
    values = {
        "tracing": {
            "enabled": True,
            "exporterEndpoint": "http://otel-collector.observability:4318",
            "sampler": "parentbased_traceidratio",
            "samplerArg": "0.1",
        }
    }
    isvc = by_kind(values)["InferenceService"]
    assert isvc["spec"]["tracing"] == {
        "exporter": "otlp",
        "exporterEndpoint": "http://otel-collector.observability:4318",
        "sampler": "parentbased_traceidratio",
        "samplerArg": "0.1",
    }
    # KServe 0.21's schema (the SDK's models) has spec.tracing; the v0.20 CRD in ../shared
    # predates it, so only the SDK's is checked here.
    assert validate_isvc(isvc) == []
    with pytest.raises(helm.HelmError, match="tracing.exporterEndpoint is needed"):
        render({"tracing": {"enabled": True}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"monitoring": {"alerts": {"errorRatio": 2}}}, "errorRatio"),
        ({"monitoring": {"interval": "15"}}, "interval"),
        ({"monitoring": {"dashbord": {"enabled": True}}}, "dashbord"),
        ({"tracing": {"exporter": "zipkin"}}, "exporter"),
        ({"tracing": {"exporterEndpoint": "otel:4318"}}, "exporterEndpoint"),
    ],
)
def test_bad_values_are_refused(values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(values)
