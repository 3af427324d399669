"""Isolation of the predictor: the default-deny NetworkPolicy of the chart and the manifests,
the restricted Pod Security Standard on every pod they make, and the Terraform around them
(Google APIs by address, namespace labels, HTTPS on the gateway, internal load balancer).

Everything is read from real renders (Helm's engine, `kubectl kustomize`) and from the
Terraform files; nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import re
from typing import Any

import helm_python as helm
import pytest

from tests.chart_helpers import (
    CHART_DIR,
    OVERLAYS,
    RENDER_NAMES,
    canary_predictors,
    core_validation_errors,
    kustomize,
    objects,
    one,
    render,
    render_named,
    values_of,
)
from tests.test_terraform import blocks, kserve_mode, resources, variable_defaults

KNATIVE_NAMESPACES = {"knative-serving", "istio-system"}
# Knative's queue-proxy: 8012 HTTP/1, 8013 h2c, 8112 TLS (system-internal-tls), 9090 the
# autoscaler's metrics (knative/serving pkg/networking/constants.go).
QUEUE_PROXY_PORTS = {8012, 8013, 8112, 9090}
METRICS = ({"gmp-system"}, {8080, 9091, 9088})
GOOGLE_APIS = "199.36.153.8/30"
METADATA = {("169.254.169.254/32", 80), ("169.254.169.252/32", 988)}


# --- renders ------------------------------------------------------------------------------


def standard(values: dict[str, Any] | None) -> dict[str, Any]:
    """The same values in Standard mode, without what only Knative mode can do."""
    values = copy.deepcopy(values or {})
    values["deploymentMode"] = "Standard"
    if values.get("canary", {}).get("enabled"):
        values["canary"] = {**values["canary"], "enabled": False}
    scaling = values.get("autoscaling", {})
    if scaling.get("minReplicas") == 0:
        values["autoscaling"] = {**scaling, "minReplicas": 1}
    return values


RENDERS: dict[str, list[dict[str, Any]]] = {}
for _name in RENDER_NAMES:
    RENDERS[f"chart:{_name}"] = objects(render_named(_name))
    RENDERS[f"chart:{_name}:Standard"] = objects(render(standard(values_of(_name))))
for _overlay in OVERLAYS:
    RENDERS[f"manifests/{_overlay}"] = list(kustomize(_overlay))


def policy_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The predictor's NetworkPolicy (the chart also ships one for its helm test pod)."""
    found = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "serving.kserve.io/inferenceservice" in d["spec"]["podSelector"].get("matchLabels", {})
    ]
    assert len(found) == 1, f"expected one predictor NetworkPolicy, found {len(found)}"
    return found[0]


def mode_of(isvc: dict[str, Any]) -> str:
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    return "Knative" if mode in ("Knative", "Serverless") else "Standard"


def kserve_pod_labels(isvc: dict[str, Any]) -> dict[str, str]:
    """Labels KServe gives every predictor pod, in both modes: the InferenceService's own,
    its name and the component (kserve/kserve v0.20.0, pkg/controller/v1beta1/
    inferenceservice/components/predictor.go, buildObjectMeta)."""
    return {
        **isvc["metadata"].get("labels", {}),
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
    }


def kserve_canary_pod_labels(isvc: dict[str, Any], name: str) -> dict[str, str]:
    """Labels of a Standard-mode canary's pods: the predictor's, with the app label of the
    canary's own Deployment, and no label naming the canary (kserve/kserve v0.20.0,
    buildPredictorResources for the canary's InferenceService copy)."""
    return {
        **kserve_pod_labels(isvc),
        "app": f"isvc.{isvc['metadata']['name']}-{name}-predictor",
    }


def ingress_by_peer(policy: dict[str, Any]) -> dict[str, set[int]]:
    """Ingress as {peer: ports}; a peer is 'ns:<name>', 'pods:<k=v,...>' (this namespace) or
    'ns:<name>/pods:<k=v,...>' (pods of another namespace)."""
    allowed: dict[str, set[int]] = {}
    for rule in policy["spec"].get("ingress") or []:
        assert rule.get("from"), "a rule without `from` admits every source"
        assert rule.get("ports"), "a rule without `ports` admits every port"
        ports = set()
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            ports.add(port["port"])
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "ingress is by namespace or pod, never by address"
            if "namespaceSelector" in peer and "podSelector" in peer:
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                labels = peer["podSelector"]["matchLabels"]
                pods = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                keys = [f"ns:{namespace}/pods:{pods}"]
            elif "namespaceSelector" in peer:
                (expression,) = peer["namespaceSelector"]["matchExpressions"]
                assert expression["key"] == "kubernetes.io/metadata.name"
                assert expression["operator"] == "In"
                keys = [f"ns:{value}" for value in expression["values"]]
            else:
                labels = peer["podSelector"]["matchLabels"]
                keys = ["pods:" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]
            for key in keys:
                allowed.setdefault(key, set()).update(ports)
    return allowed


def egress_targets(policy: dict[str, Any]) -> set[tuple[str, int, str]]:
    """Egress as {(destination, port, protocol)}."""
    allowed = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "a rule without `to` admits every destination"
        assert rule.get("ports"), "a rule without `ports` admits every port"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert "except" not in peer["ipBlock"]
                destination = peer["ipBlock"]["cidr"]
            else:
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                pods = peer.get("podSelector", {}).get("matchLabels", {})
                destination = f"{namespace}/" + (
                    ",".join(f"{k}={v}" for k, v in sorted(pods.items())) or "*"
                )
            for port in rule["ports"]:
                allowed.add((destination, port["port"], port["protocol"]))
    return allowed


DEFAULT_EGRESS = {
    ("kube-system/k8s-app=kube-dns", 53, "UDP"),
    ("kube-system/k8s-app=kube-dns", 53, "TCP"),
    (GOOGLE_APIS, 443, "TCP"),
    *((cidr, port, "TCP") for cidr, port in METADATA),
}


# --- the NetworkPolicy ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_one_default_deny_policy_selects_exactly_the_predictor_pods(name):
    docs = RENDERS[name]
    policy = policy_of(docs)
    isvc = one(docs, "InferenceService")
    assert core_validation_errors(policy) is None
    assert policy["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]

    selector = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= kserve_pod_labels(isvc).items()
    # The helm test pod is not a predictor pod: its own policy governs it.
    for pod in (d for d in docs if d["kind"] == "Pod"):
        assert not selector["matchLabels"].items() <= pod["metadata"]["labels"].items()


CANARY_RENDERS = sorted(
    name for name, docs in RENDERS.items() if one(docs, "InferenceService")["spec"].get("canary")
)


def test_the_renders_include_standard_mode_canaries():
    assert {
        "chart:standard-canary",
        "chart:standard-abn",
        "manifests/overlays/standard-canary",
    } <= set(CANARY_RENDERS)


@pytest.mark.parametrize("name", CANARY_RENDERS)
def test_the_policy_covers_the_canary_pods_like_the_stable_ones(name):
    """KServe gives a canary's pods the predictor's labels (and an app label of their own):
    the policy selects them, and admits the gateway on the same container ports."""
    docs = RENDERS[name]
    isvc = one(docs, "InferenceService")
    selector = policy_of(docs)["spec"]["podSelector"]["matchLabels"]
    (stable,) = isvc["spec"]["predictor"]["containers"]
    admitted = ingress_by_peer(policy_of(docs))["ns:istio-system"]
    for canary, predictor in canary_predictors(isvc).items():
        assert selector.items() <= kserve_canary_pod_labels(isvc, canary).items()
        (container,) = predictor["containers"]
        assert container["ports"] == stable["ports"]
        assert {port["containerPort"] for port in container["ports"]} <= admitted


@pytest.mark.parametrize("name", CANARY_RENDERS)
def test_every_canary_pod_passes_the_restricted_profile(name):
    isvc = one(RENDERS[name], "InferenceService")
    for predictor in canary_predictors(isvc).values():
        canary = {**isvc, "spec": {"predictor": predictor}}
        assert restricted_violations(pod_of(canary)) == []


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_ingress_only_from_the_serving_layer_and_metrics_scrapers(name):
    docs = RENDERS[name]
    isvc = one(docs, "InferenceService")
    allowed = ingress_by_peer(policy_of(docs))
    metrics_namespaces, metrics_ports = METRICS
    expected = {f"ns:{ns}": set(metrics_ports) for ns in metrics_namespaces}

    if mode_of(isvc) == "Knative":
        for ns in KNATIVE_NAMESPACES:
            expected[f"ns:{ns}"] = set(QUEUE_PROXY_PORTS)
    else:
        (container,) = isvc["spec"]["predictor"]["containers"]
        ports = {port["containerPort"] for port in container["ports"]}
        if "logger" in isvc["spec"]["predictor"]:
            ports.add(9081)  # KServe's agent is the Service's target then
        expected["ns:istio-system"] = ports
        # The API server's service proxy, through GKE's konnectivity agents.
        expected["ns:kube-system/pods:k8s-app=konnectivity-agent"] = ports
        # The chart's helm test pod (the kustomize overlays have none).
        for test_pod in (d for d in docs if d["kind"] == "Pod"):
            keys = (
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            )
            labels = {k: test_pod["metadata"]["labels"][k] for k in keys}
            expected["pods:" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))] = ports
    assert allowed == expected


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_egress_only_to_dns_google_apis_and_the_metadata_server(name):
    expected = set(DEFAULT_EGRESS)
    if name.startswith("chart:scale-to-zero"):
        # Its values add the logger's sink: Knative's cluster-local gateway.
        expected.add(("istio-system/*", 8081, "TCP"))
    assert egress_targets(policy_of(RENDERS[name])) == expected


def test_the_standard_mode_helm_test_pod_may_reach_what_the_predictor_admits():
    for values in ({}, {"logger": {"enabled": True, "url": "http://sink.example"}}):
        docs = objects(render(standard(values)))
        test_pod = one(docs, "Pod")
        admitted = {
            port
            for rule in policy_of(docs)["spec"]["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
            and peer["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
            for port in (p["port"] for p in rule["ports"])
        }
        test_policy = one(docs, "NetworkPolicy", "test")
        assert test_policy["spec"]["podSelector"]["matchLabels"].items() <= (
            test_pod["metadata"]["labels"].items()
        )
        reachable = {p["port"] for rule in test_policy["spec"]["egress"] for p in rule["ports"]}
        assert admitted and admitted <= reachable


def test_disabled_policy_is_not_rendered():
    docs = objects(render({"networkPolicy": {"enabled": False}}))
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["labels"]["app.kubernetes.io/component"] for p in policies] == ["test"]


def test_values_change_the_peers_and_add_egress_rules():
    s3 = {
        "to": [{"ipBlock": {"cidr": "52.216.0.0/15"}}],
        "ports": [{"port": 443, "protocol": "TCP"}],
    }
    values = {
        "deploymentMode": "Standard",
        "networkPolicy": {
            "gatewayNamespaces": ["kserve"],
            "apiServerProxyFrom": [],
            "metricsNamespaces": [],
            "googleApisCidrs": ["199.36.153.4/30"],
            "metadataServer": False,
            "extraEgress": [s3],
        },
    }
    policy = policy_of(objects(render(values)))
    assert core_validation_errors(policy) is None
    assert {peer for peer in ingress_by_peer(policy) if peer.startswith("ns:")} == {"ns:kserve"}
    assert egress_targets(policy) == {
        ("kube-system/k8s-app=kube-dns", 53, "UDP"),
        ("kube-system/k8s-app=kube-dns", 53, "TCP"),
        ("199.36.153.4/30", 443, "TCP"),
        ("52.216.0.0/15", 443, "TCP"),
    }
    assert s3 in policy["spec"]["egress"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
        (
            {"networkPolicy": {"googleApisCidrs": ["googleapis.com"]}},
            "/networkPolicy/googleApisCidrs/0",
        ),
        ({"networkPolicy": {"metricsPorts": [0]}}, "/networkPolicy/metricsPorts/0"),
        (
            {"networkPolicy": {"gatewayNamespaces": ["Istio_System"]}},
            "/networkPolicy/gatewayNamespaces/0",
        ),
        (
            {"networkPolicy": {"extraEgress": [{"to": [], "port": 443}]}},
            "'/networkPolicy/extraEgress/0': additional properties 'port' not allowed",
        ),
        (
            {"networkPolicy": {"allowAll": True}},
            "'/networkPolicy': additional properties 'allowAll' not allowed",
        ),
    ],
)
def test_bad_network_policy_values_are_rejected(values, message):
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_the_manifests_ship_the_charts_default_policy():
    chart = policy_of(objects(render({"fullnameOverride": "torch-predictor"})))
    manifests = policy_of(list(kustomize("base")))
    assert manifests["metadata"]["namespace"] == "models"
    assert manifests["spec"] == chart["spec"]


# --- Google APIs by address (terraform/01-cluster/private_google_access.tf) -----------------


def test_google_apis_egress_is_the_private_googleapis_range_terraform_resolves_to():
    records = resources("google_dns_record_set", "01-cluster")
    a = records["private_googleapis"]
    assert (a["name"], a["type"]) == ("private.googleapis.com.", "A")
    addresses = [ipaddress.ip_network(f"{ip}/32") for ip in a["rrdatas"]]
    (vip,) = ipaddress.collapse_addresses(addresses)
    assert len(addresses) == vip.num_addresses  # the whole range, nothing else
    assert str(vip) == GOOGLE_APIS

    # Every Google API name goes there, only inside the cluster's VPC.
    wildcard = records["googleapis_wildcard"]
    assert (wildcard["name"], wildcard["type"]) == ("*.googleapis.com.", "CNAME")
    assert wildcard["rrdatas"] == ["${google_dns_record_set.private_googleapis.name}"]
    zone = resources("google_dns_managed_zone", "01-cluster")["googleapis"]
    assert zone["dns_name"] == "googleapis.com." and zone["visibility"] == "private"
    assert zone["private_visibility_config"][0]["networks"] == [
        {"network_url": "${google_compute_network.vpc.id}"}
    ]
    assert zone["depends_on"] == ["${google_project_service.apis}"]
    for record in records.values():
        assert record["managed_zone"] == "${google_dns_managed_zone.googleapis.name}"

    chart_default = helm.Chart.load(CHART_DIR)
    assert chart_default.values["networkPolicy"]["googleApisCidrs"] == [GOOGLE_APIS]
    for name in ("chart:default", "manifests/base"):
        https = {d for d, port, _ in egress_targets(policy_of(RENDERS[name])) if port == 443}
        assert https == {str(vip)}


# --- the restricted Pod Security Standard ---------------------------------------------------

# Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/
# (Baseline and Restricted, as of Kubernetes v1.33).
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {
    None,
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
}
PROFILES = {"RuntimeDefault", "Localhost"}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile a pod spec breaks (empty: it is admitted)."""
    problems = []
    pod = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field}: host namespaces are not allowed")
    for volume in spec.get("volumes") or []:
        for kind in set(volume) - {"name"} - RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kind} is not allowed")
    for sysctl in pod.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not allowed")
    problems += _common_violations("pod", pod)
    if (pod.get("seccompProfile") or {}).get("type") not in (None, *PROFILES):
        problems.append("pod: seccompProfile must be RuntimeDefault or Localhost")

    containers = [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        who = f"container {container['name']}"
        context = container.get("securityContext") or {}
        problems += _common_violations(who, context)
        if context.get("privileged"):
            problems.append(f"{who}: privileged is not allowed")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{who}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{who}: capabilities must drop ALL")
        added = set(capabilities.get("add") or [])
        if added - {"NET_BIND_SERVICE"}:
            problems.append(f"{who}: may add NET_BIND_SERVICE only, adds {sorted(added)}")
        non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{who}: runAsNonRoot must be true (pod or container)")
        seccomp = (context.get("seccompProfile") or {}).get("type") or (
            pod.get("seccompProfile") or {}
        ).get("type")
        if seccomp not in PROFILES:
            problems.append(f"{who}: seccompProfile must be RuntimeDefault or Localhost")
        if context.get("procMount") not in (None, "Default"):
            problems.append(f"{who}: procMount must be Default")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{who}: hostPort is not allowed")
    return problems


def _common_violations(who: str, context: dict[str, Any]) -> list[str]:
    """Rules that hold for the pod's and each container's securityContext alike."""
    problems = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{who}: hostProcess is not allowed")
    if context.get("runAsUser") == 0:
        problems.append(f"{who}: runAsUser must not be 0")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"{who}: custom SELinux options are not allowed")
    if (context.get("appArmorProfile") or {}).get("type") not in (None, *PROFILES):
        problems.append(f"{who}: appArmorProfile must be RuntimeDefault or Localhost")
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{who}: seccompProfile Unconfined is not allowed")
    return problems


# What KServe and Knative add to the predictor's pod, and the securityContext each one gets:
# - queue-proxy (Knative mode): fixed in knative/serving knative-v1.21.3,
#   pkg/reconciler/revision/resources/queue.go (queueSecurityContext);
# - storage-initializer (STORAGE_URI set): kserve/kserve v0.20.0 builds it without one
#   (pkg/utils/storage.go, CreateInitContainerWithConfig) and merges in the default
#   ClusterStorageContainer's (pkg/webhook/admission/pod/storage_initializer_injector.go),
#   which the kserve-resources chart fills from kserve.storage.containerSecurityContext;
# - agent (request logger): a copy of the first container's (agent_injector.go).
QUEUE_PROXY_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
KSERVE_CHART_STORAGE_SECURITY_CONTEXT = {  # kserve-resources v0.20.0 values.yaml
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


@functools.cache
def kserve_values(mode: str = "Knative") -> dict[str, str]:
    """The values terraform/03-kserve gives the kserve-resources chart (local.kserve_values,
    evaluated by `terraform console`)."""
    return kserve_mode(mode)["values"]


def storage_initializer_security_context(mode: str = "Knative") -> dict[str, Any]:
    """The chart's default as overridden by terraform/03-kserve's values for helm_release.kserve."""
    context = copy.deepcopy(KSERVE_CHART_STORAGE_SECURITY_CONTEXT)
    prefix = "kserve.storage.containerSecurityContext."
    for name, value in kserve_values(mode).items():
        if name.startswith(prefix):
            *path, leaf = name.removeprefix(prefix).split(".")
            target = context
            for key in path:
                target = target.setdefault(key, {})
            target[leaf] = value
    return context


def pod_of(isvc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec KServe and Knative make of an InferenceService's predictor."""
    spec = copy.deepcopy(isvc["spec"]["predictor"])
    (container,) = spec["containers"]
    if any(env["name"] == "STORAGE_URI" for env in container.get("env", [])):
        spec.setdefault("initContainers", []).append(
            {
                "name": "storage-initializer",
                "securityContext": storage_initializer_security_context(),
            }
        )
        spec.setdefault("volumes", []).append({"name": "kserve-provision-location", "emptyDir": {}})
    if "logger" in spec:
        spec["containers"].append(
            {"name": "agent", "securityContext": copy.deepcopy(container.get("securityContext"))}
        )
    if mode_of(isvc) == "Knative":
        spec["containers"].append(
            {"name": "queue-proxy", "securityContext": copy.deepcopy(QUEUE_PROXY_SECURITY_CONTEXT)}
        )
    return spec


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_every_pod_passes_the_restricted_profile(name):
    docs = RENDERS[name]
    pod = pod_of(one(docs, "InferenceService"))
    assert restricted_violations(pod) == []
    for test_pod in (d for d in docs if d["kind"] == "Pod"):
        assert restricted_violations(test_pod["spec"]) == []


def test_the_renders_cover_every_injected_container():
    names = set()
    for docs in RENDERS.values():
        pod = pod_of(one(docs, "InferenceService"))
        names |= {c["name"] for c in pod.get("initContainers", []) + pod["containers"]}
    assert names == {"storage-initializer", "agent", "queue-proxy", "kserve-container"}


def test_the_storage_initializer_complies_on_its_own():
    """Without the predictor's pod-level seccomp profile, KServe's chart default alone would
    be refused; Terraform's setting makes the init container comply by itself."""
    bare = {"containers": [{"name": "storage-initializer"}]}
    alone = copy.deepcopy(bare)
    alone["containers"][0]["securityContext"] = storage_initializer_security_context()
    assert restricted_violations(alone) == []
    chart_default = copy.deepcopy(bare)
    chart_default["containers"][0]["securityContext"] = KSERVE_CHART_STORAGE_SECURITY_CONTEXT
    assert restricted_violations(chart_default) == [
        "container storage-initializer: seccompProfile must be RuntimeDefault or Localhost"
    ]


def _set(path: str, value: Any):
    def change(pod: dict[str, Any]) -> None:
        *keys, leaf = path.split(".")
        target: Any = pod
        for key in keys:
            target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
        target[leaf] = value

    return change


def _drop(path: str):
    def change(pod: dict[str, Any]) -> None:
        *keys, leaf = path.split(".")
        target: Any = pod
        for key in keys:
            target = target[int(key)] if key.isdigit() else target[key]
        del target[leaf]

    return change


BREAKS = {
    "host network": (_set("hostNetwork", True), "hostNetwork"),
    "host PID": (_set("hostPID", True), "hostPID"),
    "host IPC": (_set("hostIPC", True), "hostIPC"),
    "hostPath volume": (_set("volumes.0.hostPath", {"path": "/"}), "hostPath is not allowed"),
    "privileged": (_set("containers.0.securityContext.privileged", True), "privileged"),
    "escalation": (
        _set("containers.0.securityContext.allowPrivilegeEscalation", True),
        "allowPrivilegeEscalation",
    ),
    "escalation unset": (
        _drop("containers.0.securityContext.allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    "SYS_ADMIN": (_set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]), "adds"),
    "no drop ALL": (_set("containers.0.securityContext.capabilities.drop", []), "drop ALL"),
    "root allowed": (_set("containers.0.securityContext.runAsNonRoot", False), "runAsNonRoot"),
    "root user": (_set("securityContext.runAsUser", 0), "runAsUser"),
    "unconfined": (
        _set("containers.0.securityContext.seccompProfile", {"type": "Unconfined"}),
        "Unconfined",
    ),
    "host port": (_set("containers.0.ports.0.hostPort", 8080), "hostPort"),
    "unsafe sysctl": (
        _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
        "sysctl",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_the_checker_catches_each_rule(case):
    change, message = BREAKS[case]
    pod = pod_of(one(RENDERS["chart:default"], "InferenceService"))
    assert restricted_violations(pod) == []
    change(pod)
    assert any(message in problem for problem in restricted_violations(pod)), case


def test_seccomp_and_non_root_may_come_from_the_pod_or_every_container():
    pod = pod_of(one(RENDERS["chart:default"], "InferenceService"))
    del pod["securityContext"]["seccompProfile"]
    assert restricted_violations(pod) == []  # every container sets its own
    del pod["containers"][0]["securityContext"]["seccompProfile"]
    assert restricted_violations(pod) == [
        "container kserve-container: seccompProfile must be RuntimeDefault or Localhost"
    ]
    pod = pod_of(one(RENDERS["chart:default"], "InferenceService"))
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]
    assert restricted_violations(pod) == []  # the pod's runAsNonRoot covers it


def namespace_labels_in_terraform() -> dict[str, str]:
    return resources("kubernetes_namespace_v1", "03-kserve")["models"]["metadata"][0]["labels"]


def test_the_models_namespace_enforces_the_restricted_profile():
    labels = namespace_labels_in_terraform()
    prefix = "pod-security.kubernetes.io/"
    for mode in ("enforce", "warn", "audit"):
        assert labels[prefix + mode] == "restricted", mode
    # Enforced as of a pinned Kubernetes minor; warned and audited against the newest.
    assert re.fullmatch(r"v1\.\d+", labels[prefix + "enforce-version"])
    assert labels[prefix + "warn-version"] == labels[prefix + "audit-version"] == "latest"

    (namespace,) = [d for d in kustomize("base") if d["kind"] == "Namespace"]
    assert {k: v for k, v in namespace["metadata"]["labels"].items() if k.startswith(prefix)} == (
        labels
    )
    assert variable_defaults("03-kserve")["predictor_namespace"] == namespace["metadata"]["name"]


# --- HTTPS on the gateway, and an internal load balancer (stages 02 and 03) ------------------


def test_knative_serves_https_with_certificates_from_cert_manager_and_redirects_http():
    config = resources("kubernetes_manifest", "03-kserve")["knative_serving"]["manifest"]["spec"]
    network = config["config"]["network"]
    assert network["external-domain-tls"] == "Enabled"
    assert network["http-protocol"] == "Redirected"
    assert config["config"]["certmanager"]["issuerRef"] == (
        "kind: ClusterIssuer\nname: ${local.cluster_issuer}\n"
    )
    # The issuer exists before Knative's controller starts and reads it.
    knative = resources("kubernetes_manifest", "03-kserve")["knative_serving"]
    assert knative["depends_on"] == ["${kubernetes_manifest.gateway_ca_issuer}"]


def test_without_an_issuer_a_private_ca_chain_is_created():
    local_values = {k: v for b in blocks("locals", "03-kserve") for k, v in b.items()}
    assert local_values["self_signed_ca"] == '${var.cluster_issuer == ""}'
    assert variable_defaults("03-kserve")["cluster_issuer"] == ""
    manifests = resources("kubernetes_manifest", "03-kserve")
    chain = [manifests[n] for n in ("selfsigned_issuer", "gateway_ca", "gateway_ca_issuer")]
    for body in chain:
        assert body["count"] == "${local.self_signed_ca ? 1 : 0}"
    selfsigned, ca, issuer = (body["manifest"] for body in chain)

    assert selfsigned["kind"] == "ClusterIssuer" and selfsigned["spec"] == {"selfSigned": {}}
    assert ca["kind"] == "Certificate" and ca["spec"]["isCA"] is True
    # A ClusterIssuer's CA secret must live in cert-manager's namespace (stage 02 installs it).
    assert (
        ca["metadata"]["namespace"]
        == resources("helm_release", "02-kserve-deps")["cert_manager"]["namespace"]
    )
    assert ca["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    assert ca["spec"]["issuerRef"]["name"] == (
        "${kubernetes_manifest.selfsigned_issuer[0].manifest.metadata.name}"
    )
    assert issuer["kind"] == "ClusterIssuer"
    assert issuer["metadata"]["name"] == "${local.cluster_issuer}"
    assert issuer["spec"] == {
        "ca": {"secretName": "${kubernetes_manifest.gateway_ca[0].manifest.spec.secretName}"}
    }
    # The issuer Knative is given is this CA's unless the caller names another.
    assert local_values["cluster_issuer"] == (
        '${local.self_signed_ca ? "torch-predictor-ca" : var.cluster_issuer}'
    )
    # The chart's NOTES tell clients where to read the CA they must trust.
    secret = f"{ca['metadata']['namespace']} get secret {ca['spec']['secretName']} "
    assert f"kubectl -n {secret}" in render_named("default")["torch-predictor/templates/NOTES.txt"]


def test_kserve_reports_the_https_route_and_hardens_the_storage_initializer():
    settings = kserve_values("Knative")
    assert settings["kserve.controller.gateway.urlScheme"] == "https"
    assert settings["kserve.controller.gateway.disableIstioVirtualHost"] == "true"
    assert (
        settings["kserve.storage.containerSecurityContext.seccompProfile.type"] == "RuntimeDefault"
    )


def test_the_gateway_can_get_an_internal_load_balancer():
    variable = next(
        body["internal_load_balancer"]
        for body in blocks("variable", "02-kserve-deps")
        if "internal_load_balancer" in body
    )
    assert variable["type"] == "bool"
    assert variable["default"] is False
    gateway = resources("helm_release", "02-kserve-deps")["istio_ingressgateway"]
    (dynamic,) = gateway["dynamic"]
    block = dynamic["set"]
    assert block["for_each"] == '${var.internal_load_balancer ? ["Internal"] : []}'
    (content,) = block["content"]
    # Helm --set path of the gateway chart's service.annotations, dots of the key escaped.
    assert content["name"] == r"service.annotations.networking\.gke\.io/load-balancer-type"
    assert content["value"] == "${set.value}"
