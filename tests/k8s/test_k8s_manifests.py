"""The rendered overlays are valid objects and keep aig's deployment policies."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from manifests import OVERLAYS, REPO, Obj, Rendered, validate

from devstack.kafka import AIG_TOPICS

SERVICES = ("edge", "router", "billing", "jobs", "webhooks")
# Kafka consumers: consumer group and topic, as each service subscribes.
CONSUMERS = {
    "billing": ("billing", "aig.usage.v1"),
    "jobs": ("jobs", "aig.tasks.v1"),
    "webhooks": ("webhooks", "aig.task-events.v1"),
}
# The port each service's /healthz and /readyz are served on, and the variable that sets it.
OPS_PORTS = {
    "edge": ("AIG_EDGE_PORT", 8080),
    "router": ("AIG_ROUTER_METRICS_PORT", 9464),
    "billing": ("AIG_BILLING_PORT", 9465),
    "jobs": ("AIG_JOBS_PORT", 9466),
    "webhooks": ("AIG_WEBHOOKS_PORT", 9467),
}
overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def _containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


def _port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


@overlays
def test_every_object_is_valid_against_the_pinned_schemas(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    objects = rendered[overlay].objects
    kinds = {obj["kind"] for obj in objects}
    assert {"Kafka", "KafkaTopic", "ScaledObject", "ClickHouseInstallation", "Job"} <= kinds
    for obj in objects:
        validate(obj)


def test_the_schemas_reject_misspelt_and_missing_fields(rendered: dict[str, Rendered]) -> None:
    dev = rendered["dev"]

    def broken(kind: str, name: str, change: Any) -> Obj:
        obj = copy.deepcopy(dev.get(kind, name))
        change(obj)
        return obj

    bad = [
        broken("KafkaTopic", "aig.usage.v1", lambda o: o["spec"].update(partition=6)),
        broken(
            "ScaledObject", "billing", lambda o: o["spec"]["triggers"][0]["metadata"].pop("topic")
        ),
        broken(
            "ScaledObject",
            "billing",
            lambda o: o["spec"]["triggers"][0]["metadata"].update(lagThreshold=100),
        ),
        broken(
            "ClickHouseInstallation",
            "ledger",
            lambda o: o["spec"]["configuration"]["clusters"][0]["layout"].update(shards=1),
        ),
        broken(
            "ClickHouseInstallation",
            "ledger",
            lambda o: o["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0].update(
                imagePullPolicy=3
            ),
        ),
        broken("Kafka", "aig", lambda o: o["spec"]["kafka"]["listeners"][0].pop("tls")),
        broken("KafkaNodePool", "dual-role", lambda o: o["spec"].update(roles=["leader"])),
        broken(
            "Deployment", "edge", lambda o: o["spec"]["template"]["spec"].update(securityContxt={})
        ),
    ]
    for obj in bad:
        with pytest.raises(jsonschema.ValidationError):
            validate(obj)


@overlays
def test_every_container_is_probed_sized_and_unprivileged(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    for obj, pod in rendered[overlay].workloads():
        name = obj["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        mounted = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in _containers(pod):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            # Writable places are emptyDirs (the spool, /tmp), never the image.
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounted, name
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            if obj["kind"] == "Job":
                continue
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "httpGet" in container[probe], f"{name} {probe}"


@overlays
def test_probes_hit_each_services_real_ops_endpoints(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    for service in SERVICES:
        container = rendered[overlay].get("Deployment", service)["spec"]["template"]["spec"][
            "containers"
        ][0]
        variable, default_port = OPS_PORTS[service]
        env = _env(container)
        listening = int(env[variable]["value"]) if variable in env else default_port
        paths = {}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            assert _port(container, http["port"]) == listening, f"{service} {probe}"
            paths[probe] = http["path"]
        assert paths == {
            "startupProbe": "/healthz",
            "readinessProbe": "/readyz",
            "livenessProbe": "/healthz",
        }, service
        assert container["command"] == ["python", "-m", service]


@overlays
def test_only_the_edge_is_exposed_and_it_streams_unbuffered(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    for service in r.of_kind("Service"):
        assert service["spec"]["type"] in ("ClusterIP", "ExternalName"), service["metadata"]
    (ingress,) = r.of_kind("Ingress")
    backends = {
        (path["backend"]["service"]["name"], path["path"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {name for name, _ in backends} == {"edge"}
    # The ops endpoints stay inside the cluster.
    assert not {p for _, p in backends if p in ("/", "/metrics", "/healthz", "/readyz")}
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _allowed(
    policies: list[Obj], pod: dict[str, str], port: int, source: dict[str, str], source_ns: str
) -> bool:
    """Whether a pod labelled `source` in namespace `source_ns` may open `port` on `pod`
    (in the policies' namespace), by NetworkPolicy's rules: isolated once any policy selects
    the pod; then allowed if any rule of those policies admits the peer and the port."""
    own_ns = policies[0]["metadata"]["namespace"]
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            for peer in rule.get("from", []):
                ns_selector = peer.get("namespaceSelector")
                pod_selector = peer.get("podSelector")
                ns_labels = {"kubernetes.io/metadata.name": source_ns}
                ns_ok = _selects(ns_selector, ns_labels) if ns_selector else source_ns == own_ns
                pod_ok = _selects(pod_selector, source) if pod_selector else True
                if ns_ok and pod_ok:
                    return True
    return False


@overlays
def test_network_policies_admit_only_the_intended_callers(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    policies = r.of_kind("NetworkPolicy")
    ns = r.namespace
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"]["metadata"]["labels"]
        for obj in r.of_kind("Deployment")
    }
    # Every way in that a test below might look for.
    callers: dict[str, tuple[dict[str, str], str]] = {
        **{name: (labels, ns) for name, labels in pods.items()},
        "ingress-controller": ({"app.kubernetes.io/name": "ingress-nginx"}, "ingress-nginx"),
        "prometheus": ({"app.kubernetes.io/name": "prometheus"}, "monitoring"),
        "stranger": ({"app": "other"}, "default"),
        "stranger-in-namespace": ({"app": "other"}, ns),
    }

    def who_may(target: str, port: int) -> set[str]:
        return {
            caller
            for caller, (labels, caller_ns) in callers.items()
            if caller != target and _allowed(policies, pods[target], port, labels, caller_ns)
        }

    assert who_may("edge", 8080) == {"ingress-controller", "prometheus"}
    assert who_may("router", 50051) == {"edge"}
    assert who_may("router", 50052) == {"edge"}  # the call socket
    assert who_may("router", 9464) == {"prometheus"}
    assert who_may("billing", 9465) == {"edge", "prometheus"}
    assert who_may("jobs", 9466) == {"prometheus"}
    assert who_may("webhooks", 9467) == {"prometheus"}
    # Every aig pod is isolated by default, including any port not listed above.
    for target in pods:
        assert who_may(target, 12345) == set(), target


@overlays
def test_every_service_has_a_disruption_budget_spread_and_an_autoscaler(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    budgets = {pdb["metadata"]["name"]: pdb for pdb in r.of_kind("PodDisruptionBudget")}
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of_kind("HorizontalPodAutoscaler")}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in r.of_kind("ScaledObject")}
    for service in SERVICES:
        deployment = r.get("Deployment", service)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(budgets[service]["spec"]["selector"], labels)
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        # The autoscaler owns the replica count; a fixed one would fight it on every apply.
        assert "replicas" not in deployment["spec"], service
        assert (service in hpas) != (service in scaled), service
    for service in ("edge", "router"):
        (metric,) = hpas[service]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    for service, (group, topic) in CONSUMERS.items():
        (trigger,) = scaled[service]["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        joined = (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"])
        assert joined == (group, topic)
        bootstrap = r.get("ConfigMap", "aig-config")["data"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert trigger["metadata"]["bootstrapServers"] == bootstrap
        # Consumers beyond the partition count would sit idle.
        assert scaled[service]["spec"]["maxReplicaCount"] <= AIG_TOPICS[topic]


def _module_constants(path: Path, shared: dict[str, object] | None = None) -> dict[str, object]:
    """Top-level `NAME = "literal"` assignments, and `NAME = SHARED` where SHARED is one of
    `shared` (aig_common.contracts' constants), read without importing the service."""
    shared = shared or {}
    constants: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.Assign):
            continue
        value: object
        if isinstance(node.value, ast.Constant):
            value = node.value.value
        elif isinstance(node.value, ast.Name) and node.value.id in shared:
            value = shared[node.value.id]
        else:
            continue
        for target in node.targets:
            if isinstance(target, ast.Name):
                constants[target.id] = value
    return constants


def test_consumer_groups_are_the_ones_the_services_join() -> None:
    contracts = _module_constants(REPO / "services" / "aig_common" / "contracts.py")
    billing = _module_constants(REPO / "services" / "billing" / "__main__.py", contracts)
    assert CONSUMERS["billing"] == (billing["CONSUMER_GROUP"], contracts["USAGE_TOPIC"])
    webhooks = _module_constants(REPO / "services" / "webhooks" / "__main__.py")
    assert CONSUMERS["webhooks"] == (webhooks["CONSUMER_GROUP"], contracts["TASK_EVENTS_TOPIC"])


@overlays
def test_kafka_topics_and_bootstrap_match_the_devstack(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    topics = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in r.of_kind("KafkaTopic")}
    assert topics == dict(AIG_TOPICS)
    (kafka,) = r.of_kind("Kafka")
    plain = next(x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"])
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{plain['port']}"
    assert r.get("ConfigMap", "aig-config")["data"]["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    nodes = sum(p["spec"]["replicas"] for p in r.of_kind("KafkaNodePool"))
    for topic in r.of_kind("KafkaTopic"):
        assert topic["spec"]["replicas"] <= nodes
        assert int(topic["spec"]["config"]["min.insync.replicas"]) < topic["spec"]["replicas"] or (
            topic["spec"]["replicas"] == 1
        )


@overlays
def test_migrations_run_before_the_rollout(rendered: dict[str, Rendered], overlay: str) -> None:
    job = rendered[overlay].get("Job", "controldb-migrate")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "controldb", "migrate"]
    secret = _env(container)["AIG_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert secret.startswith("aig-secrets")


# The downward-API fields a container may read (what Kubernetes offers for `env`).
POD_FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.podIP",
}


@overlays
def test_every_referenced_config_and_secret_key_exists(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    config = r.get("ConfigMap", "aig-config")
    secrets = {s["metadata"]["name"]: s for s in r.of_kind("Secret")}
    if overlay == "prod":
        # Nothing secret is in the repository: prod's Secrets are created out of band.
        assert secrets == {}
    for obj, pod in r.workloads():
        for container in _containers(pod):
            for item in container.get("env", []):
                source = item.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["name"] == config["metadata"]["name"], item
                    assert ref.get("optional") or ref["key"] in config["data"], item
                elif "secretKeyRef" in source and overlay == "dev":
                    ref = source["secretKeyRef"]
                    assert ref.get("optional") or ref["key"] in secrets[ref["name"]]["data"], item
                elif "fieldRef" in source:
                    # The pod's own fields (its name, for jobs' task leases).
                    assert source["fieldRef"]["fieldPath"] in POD_FIELDS, item
                else:
                    assert "value" in item or "secretKeyRef" in source, (obj, item)
