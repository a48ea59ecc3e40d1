"""Every environment variable a service reads is wired into its container (or is listed here
as deliberately not set in a cluster, with the reason)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from manifests import OVERLAYS, REPO, Rendered

SERVICES_DIR = REPO / "services"
DEPLOYABLES = ("edge", "router", "billing", "jobs", "webhooks")
# Packages whose modules other services import (the edge serves results through jobs.links).
SHARED = ("aig_common", "controldb", "catalog", "jobs")
ENV_NAME = re.compile(r"^(AIG_[A-Z0-9_]+|KAFKA_[A-Z_]+|OTEL_[A-Z_]+|[A-Z]+_API_KEY)$")
NOT_IN_A_CLUSTER = {
    "AIG_BILLING_CRASH_AFTER_WRITE": "a test hook that makes billing exit mid-batch",
    "AIG_BILLING_CRASH_AFTER_LEDGER_BATCH": "a test hook that makes billing exit mid-batch",
    "AIG_LEDGER_DIR": "chDB's directory; in a cluster the ledger is ClickHouse",
    "AIG_KAFKA_PORT": "the port of the devstack's local broker",
}
# Read by a service only as a fallback that a cluster never reaches.
FALLBACKS_IN = {
    "jobs": {
        # public_url_from_env: the edge's own listener when AIG_PUBLIC_URL is empty, which
        # only holds on one machine; the cluster sets AIG_PUBLIC_URL.
        "AIG_EDGE_HOST": "AIG_PUBLIC_URL is set in a cluster",
        "AIG_EDGE_PORT": "AIG_PUBLIC_URL is set in a cluster",
    },
}


def _python_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def _names_read(files: list[Path]) -> set[str]:
    """String constants that look like environment variable names."""
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and ENV_NAME.match(value):
                names.add(value)
    return names


def _is_module_file(module: str) -> bool:
    return SERVICES_DIR.joinpath(*module.split(".")).with_suffix(".py").is_file()


def _shared_modules_imported(files: list[Path]) -> set[Path]:
    """The shared-library modules (files or packages) that these files import."""
    found: set[Path] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [f"{node.module}.{a.name}" for a in node.names]
                # `from package import module` reads that module, not the whole package.
                if not all(_is_module_file(module) for module in modules):
                    modules.insert(0, node.module)
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                if module.split(".")[0] not in SHARED:
                    continue
                path = SERVICES_DIR.joinpath(*module.split("."))
                if path.with_suffix(".py").is_file():
                    found.add(path.with_suffix(".py"))
                elif path.is_dir() and "." not in module:
                    found.add(path)
    return found


def catalog_provider_variables() -> set[str]:
    """The variables the packaged catalog's provider rows name: each row's key (`key_env`)
    and its base-URL override (`AIG_<NAME>_BASE_URL`), which the router resolves."""
    catalog = yaml.safe_load((SERVICES_DIR / "catalog" / "catalog.yaml").read_text())
    names: set[str] = set()
    for row in catalog["providers"]:
        if row.get("key_env"):
            names.add(row["key_env"])
        names.add("AIG_" + re.sub(r"[^A-Za-z0-9]", "_", row["name"]).upper() + "_BASE_URL")
    return names


def variables_read_by(service: str) -> set[str]:
    """What the service's own code reads, plus what the shared modules it imports read
    (followed transitively), plus the provider rows' variables for the router."""
    files = _python_files(SERVICES_DIR / service)
    seen: set[Path] = set()
    frontier = _shared_modules_imported(files)
    while frontier:
        module = frontier.pop()
        seen.add(module)
        module_files = _python_files(module)
        files += module_files
        frontier |= _shared_modules_imported(module_files) - seen
    names = _names_read(files)
    if service == "router":
        names |= catalog_provider_variables()
    return names


def test_the_scan_finds_what_a_service_reads() -> None:
    # Variables read in settings modules, through a table, and in a shared library.
    assert {"AIG_EDGE_PORT", "AIG_KEY_PEPPER", "AIG_CATALOG_PATH"} <= variables_read_by("edge")
    assert {"OPENAI_API_KEY", "AIG_GOOGLE_BASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} <= (
        variables_read_by("router")
    )
    assert "AIG_CLICKHOUSE_URL" in variables_read_by("billing")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", DEPLOYABLES)
def test_every_variable_a_service_reads_is_set_in_its_container(
    rendered: dict[str, Rendered], overlay: str, service: str
) -> None:
    container = rendered[overlay].get("Deployment", service)["spec"]["template"]["spec"][
        "containers"
    ][0]
    wired = {item["name"] for item in container.get("env", [])}
    missing = variables_read_by(service) - wired - set(NOT_IN_A_CLUSTER)
    missing -= set(FALLBACKS_IN.get(service, {}))
    assert not missing, f"{service} reads {sorted(missing)}: wire them in k8s/base/{service}.yaml"
