"""Render the kustomize overlays and check objects against pinned schemas, offline.

Kubernetes' own kinds are checked against the schemas `kubernetes-validate` ships (strict:
unknown fields fail); the operators' custom resources against the schemas written under
`k8s/schemas/`, whose Kubernetes types resolve to the same pinned definitions.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests promise to work on (lifecycle sleep: 1.30+).
KUBERNETES_VERSION = "1.33.0"
DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"
CUSTOM_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): "strimzi-kafka.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "strimzi-kafkanodepool.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "strimzi-kafkatopic.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.yaml",
    (
        "clickhouse.altinity.com/v1",
        "ClickHouseInstallation",
    ): "altinity-clickhouseinstallation.yaml",
}

Obj = dict[str, Any]


def _run(command: list[str], timeout_s: float) -> str:
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr}")
    return out.stdout


def kustomize() -> Path:
    """The pinned kustomize, built from the Go module proxy on first use."""
    printed = _run([str(REPO / "scripts" / "install_kustomize.sh")], timeout_s=900)
    return Path(printed.strip().splitlines()[-1])


def build(overlay: str) -> list[Obj]:
    out = _run([str(kustomize()), "build", str(K8S / "overlays" / overlay)], timeout_s=120)
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{self.overlay}: no {kind}/{name}")

    def workloads(self) -> Iterator[tuple[Obj, Obj]]:
        """(object, pod spec) of every Deployment and Job."""
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "Job"):
                yield obj, obj["spec"]["template"]["spec"]

    @property
    def namespace(self) -> str:
        return str(self.of_kind("Namespace")[0]["metadata"]["name"])


def _kubernetes_schema(name: str) -> Obj:
    """A schema file of the pinned version, strict flavour (unknown fields are errors)."""
    schemas = resources.files(kubernetes_validate) / "kubernetes-json-schema"
    path = schemas / f"v{KUBERNETES_VERSION}-local-strict" / name
    if not path.is_file():
        raise LookupError(f"kubernetes-validate has no schema {name} for {KUBERNETES_VERSION}")
    return dict(json.loads(path.read_text()))


@functools.cache
def _registry() -> referencing.Registry[Any]:
    definitions = referencing.Resource.from_contents(_kubernetes_schema("_definitions.json"))
    return referencing.Registry().with_resource(DEFINITIONS_URI, definitions)


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    custom = CUSTOM_SCHEMAS.get((api_version, kind))
    if custom is not None:
        schema = yaml.safe_load((K8S / "schemas" / custom).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
    else:
        # kubernetes-validate's naming: apps/v1 Deployment -> deployment-apps-v1.json,
        # networking.k8s.io/v1 -> networking-v1, v1 -> v1.
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        schema = _kubernetes_schema(f"{kind.lower()}-{group_version}.json")
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def validate(obj: Obj) -> None:
    """Raises `jsonschema.ValidationError` for a bad object, `LookupError` for an unknown kind."""
    _validator(obj["apiVersion"], obj["kind"]).validate(obj)
