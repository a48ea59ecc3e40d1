"""The Dockerfile, deploy/compose.yaml, the Prometheus config, the Grafana dashboard and the
Kubernetes manifests describe the same services: names, commands, ports, users, variables,
topics and metrics. Nothing is built or started (our machines have no Docker engine)."""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from backends import CLICKHOUSE_IMAGE, POSTGRES_IMAGE, kafka_image
from manifests import REPO, Obj, Rendered

from devstack.kafka import AIG_TOPICS

SERVICES = ("edge", "router", "billing", "jobs", "webhooks")
# Variables one side sets on purpose and the other does not.
K8S_ONLY = {"FORWARDED_ALLOW_IPS"}  # the edge trusts the ingress controller's client address
COMPOSE_ONLY: set[str] = set()
# Metrics prometheus_client exports for every process on its own.
STANDARD_METRICS = re.compile(r"^(process_|python_|up$)")


@dataclass
class Stage:
    name: str
    parent: str
    entrypoint: list[str] | None = None
    exposed: set[int] = field(default_factory=set)
    user: str | None = None
    runs: list[str] = field(default_factory=list)


def dockerfile_stages(path: Path = REPO / "Dockerfile") -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert match, f"every stage is named: {line}"
            parent, name = match.groups()
            current = stages[name] = Stage(name, parent)
            if parent in stages:  # inherits what the parent stage set
                base = stages[parent]
                current.entrypoint, current.user = base.entrypoint, base.user
                current.exposed = set(base.exposed)
        elif current is None:
            continue
        elif instruction == "ENTRYPOINT":
            current.entrypoint = json.loads(rest)
        elif instruction == "EXPOSE":
            current.exposed |= {int(port) for port in rest.split()}
        elif instruction == "USER":
            current.user = rest
        elif instruction == "RUN":
            current.runs.append(rest)
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text()))


def _pod_containers(r: Rendered) -> list[tuple[Obj, Obj]]:
    return [(pod, c) for _, pod in r.workloads() for c in pod["containers"]]


def test_the_image_is_built_from_the_lock_file_and_runs_as_nobody(
    stages: dict[str, Stage],
) -> None:
    runs = " ".join(stages["build"].runs)
    assert "uv sync --frozen --no-dev --no-install-project" in runs
    assert "uv sync --frozen --no-dev --no-editable" in runs
    assert stages["runtime"].user == "10001:10001"
    for name in (*SERVICES, "migrate", "sandbox"):
        assert stages[name].parent == "runtime", name
        assert stages[name].entrypoint, name


def test_the_manifests_run_the_dockerfiles_entrypoints_as_its_user(
    rendered: dict[str, Rendered], stages: dict[str, Stage]
) -> None:
    seen = set()
    for pod, container in _pod_containers(rendered["dev"]):
        # aig-edge:dev -> the Dockerfile target `edge`.
        image = container["image"].rsplit(":", 1)[0]
        target = image.removeprefix("aig-")
        stage = stages[target]
        seen.add(target)
        assert container["command"] == stage.entrypoint, target
        assert {p["containerPort"] for p in container.get("ports", [])} <= stage.exposed
        assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == (
            stage.user
        )
    assert seen == {*SERVICES, "migrate", "sandbox"}


def test_compose_runs_the_same_targets_with_the_same_variables(
    rendered: dict[str, Rendered], stages: dict[str, Stage], compose: dict[str, Any]
) -> None:
    services = compose["services"]
    built = {name for name, spec in services.items() if "build" in spec}
    assert built == {*SERVICES, "migrate", "sandbox"}
    containers = {
        c["image"].rsplit(":", 1)[0].removeprefix("aig-"): c
        for _, c in _pod_containers(rendered["dev"])
    }
    for name in built:
        spec = services[name]
        assert spec["build"]["target"] == name and spec["image"] == f"aig-{name}"
        assert spec["build"]["dockerfile"] == "Dockerfile" and spec["build"]["context"] == ".."
        # The image's entrypoint runs: no override that could drift from the Dockerfile.
        assert "command" not in spec and "entrypoint" not in spec, name
        assert spec.get("read_only") is True, name
        k8s = containers[name]
        k8s_env = {item["name"]: item for item in k8s.get("env", [])}
        compose_env = spec.get("environment", {})
        assert set(compose_env) - COMPOSE_ONLY == set(k8s_env) - K8S_ONLY, name
        # Listening addresses and ports are literal on both sides and must agree.
        for variable, item in k8s_env.items():
            if re.fullmatch(r"AIG_\w+_(HOST|PORT)", variable):
                assert str(compose_env[variable]) == item["value"], (name, variable)


def test_prometheus_scrapes_every_service_where_kubernetes_does(
    rendered: dict[str, Rendered],
) -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for service in SERVICES:
        deployment = rendered["prod"].get("Deployment", service)
        port = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
        assert targets[service] == f"{service}:{port}"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert int(port) in {p["containerPort"] for p in container["ports"]}


def test_compose_creates_the_devstacks_topics(compose: dict[str, Any]) -> None:
    script = compose["services"]["kafka-topics"]["command"][0]
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop is not None
    names = loop.group(1).split()
    partitions = int(shlex.split(script.split("--partitions", 1)[1])[0])
    assert {name: partitions for name in names} == dict(AIG_TOPICS)


def images_in(node: Any) -> set[str]:
    """Every `image:` value anywhere in a parsed manifest or compose file."""
    if isinstance(node, dict):
        found = {node["image"]} if isinstance(node.get("image"), str) else set()
        return found.union(*(images_in(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(images_in(item) for item in node))
    return set()


def test_compose_and_kubernetes_run_the_server_releases_the_tests_run(
    compose: dict[str, Any], rendered: dict[str, Rendered]
) -> None:
    """One Kafka and one ClickHouse release everywhere: the local broker's jars, the
    containers mode's images, compose and the operators' resources; PostgreSQL by major."""
    kafka_release = kafka_image().split(":")[1]
    composed = images_in(compose)
    assert kafka_image() in composed
    assert {i for i in composed if i.startswith("clickhouse/")} == {CLICKHOUSE_IMAGE}
    postgres_major = POSTGRES_IMAGE.split(":")[1].split("-")[0]
    assert {i.split(":")[1].split("-")[0] for i in composed if i.startswith("postgres:")} == {
        postgres_major
    }
    for overlay in rendered.values():
        assert overlay.get("Kafka", "aig")["spec"]["kafka"]["version"] == kafka_release
        deployed = images_in(overlay.objects)
        assert {i for i in deployed if i.startswith("clickhouse/")} == {CLICKHOUSE_IMAGE}


def exported_metrics() -> set[str]:
    """Names of the Prometheus metrics the services define (Counter("name", ...) etc.)."""
    names: set[str] = set()
    for file in (REPO / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("Counter", "Gauge", "Histogram", "Summary")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                name = str(node.args[0].value)
                names.add(name)
                if node.func.id == "Histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                if node.func.id == "Counter" and not name.endswith("_total"):
                    names.add(f"{name}_total")
    return names


def dashboard_metrics() -> set[str]:
    """Every metric name the Grafana dashboard's queries read."""
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "aig.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {
        name
        for expr in exprs
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?=\s*[{\[)]|\s*$|\s*==)", expr)
        if name.startswith(("aig_", "process_", "python_")) or name == "up"
    }


def documented_metrics() -> set[str]:
    """The metric names docs/metrics.md's tables list (first column, in backticks)."""
    text = (REPO / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(aig_[a-z0-9_]+)` \|", text, flags=re.MULTILINE))


def base_name(sample: str, exported: set[str]) -> str:
    """A histogram's or counter's series name back to the name it was defined with."""
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        stem = sample.removesuffix(suffix)
        if stem != sample and (stem in exported or f"{stem}_total" in exported):
            return stem if suffix != "_total" else sample
    return sample


def test_the_dashboard_only_uses_metrics_the_services_export() -> None:
    used = dashboard_metrics()
    ours = {n for n in used if n.startswith("aig_")}
    assert "aig_edge_http_responses_total" in ours and len(ours) >= 5
    exported = exported_metrics()
    assert ours <= exported
    assert all(n in exported or STANDARD_METRICS.match(n) for n in used)


def test_every_metric_is_documented_and_charted() -> None:
    """docs/metrics.md lists exactly the aig_ metrics the services define, and the
    dashboard charts each of them (issue 13: names and labels documented, all used)."""
    exported = exported_metrics()
    defined = {base_name(n, exported) for n in exported if n.startswith("aig_")}
    documented = documented_metrics()
    assert documented == defined, (documented - defined, defined - documented)
    charted = {base_name(n, exported) for n in dashboard_metrics() if n.startswith("aig_")}
    assert charted <= documented
    assert documented - charted == set()
