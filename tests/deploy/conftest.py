"""Strict offline validation of Kubernetes manifests: native objects with kubernetes-validate
(strict schemas: unknown fields are errors), the dask-kubernetes custom resources against the
CRD schemas shipped inside the dask-kubernetes wheel, made strict, and every embedded pod spec
and service spec again as a native Pod / Service. The API server would drop unknown fields of a
custom resource silently; here they fail."""

from __future__ import annotations

import copy
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mosaicflow import deploy

#: The Kubernetes version the manifests are validated for.
K8S_VERSION = "1.33"
DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments" / "kubernetes"
CRD_FILES = {
    "DaskCluster": "daskcluster.yaml",
    "DaskWorkerGroup": "daskworkergroup.yaml",
    "DaskJob": "daskjob.yaml",
}
#: Where each kind embeds pod specs and service specs (paths of keys from the object's spec).
POD_SPECS = {
    "DaskCluster": [("scheduler", "spec"), ("worker", "spec")],
    "DaskWorkerGroup": [("worker", "spec")],
    "DaskJob": [
        ("job", "spec"),
        ("cluster", "spec", "scheduler", "spec"),
        ("cluster", "spec", "worker", "spec"),
    ],
}
SERVICE_SPECS = {
    "DaskCluster": [("scheduler", "service")],
    "DaskJob": [("cluster", "spec", "scheduler", "service")],
}
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists ``properties`` and
    neither allows more nor preserves unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_schemas() -> dict[str, dict[str, Any]]:
    # The helm chart's CRDs are the operator's schemas with every $ref resolved (the PodSpec
    # inline); the same files the operator's chart installs into a cluster.
    crds = files("dask_kubernetes") / "operator/deployment/helm/dask-kubernetes-operator/crds"
    out = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.safe_load((crds / name).read_text())
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = strict(version["schema"]["openAPIV3Schema"])
    return out


class Validator:
    """``validate(obj)`` raises ``ValueError`` naming the object, the path and the reason."""

    def __init__(self) -> None:
        self.crds = _crd_schemas()

    def validate(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        where = f"{kind} {obj.get('metadata', {}).get('name')!r}"
        if kind in self.crds:
            self._custom(obj, where)
        else:
            self._native(obj, where)

    def _native(self, obj: dict[str, Any], where: str) -> None:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            raise ValueError(f"{where}: {path}: {exc.message}") from None
        name = obj["metadata"]["name"]
        if not DNS_1123_SUBDOMAIN.match(name) or len(name) > 253:
            raise ValueError(f"{where}: metadata.name is not a DNS-1123 subdomain")

    def _custom(self, obj: dict[str, Any], where: str) -> None:
        kind = obj["kind"]
        if obj.get("apiVersion") != "kubernetes.dask.org/v1":
            raise ValueError(f"{where}: apiVersion {obj.get('apiVersion')!r}")
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        errors = sorted(
            jsonschema.Draft7Validator(self.crds[kind]).iter_errors(body), key=lambda e: e.path
        )
        if errors:
            lines = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
            raise ValueError(f"{where}: " + "; ".join(lines))
        meta = obj.get("metadata", {})
        extra = set(meta) - METADATA_KEYS
        if extra:
            raise ValueError(f"{where}: metadata: unknown fields {sorted(extra)}")
        try:
            deploy.check_name(meta.get("name"), what=f"{kind} metadata.name")
            if kind == "DaskWorkerGroup":
                deploy.check_name(obj["spec"]["cluster"], what="DaskWorkerGroup spec.cluster")
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for path in POD_SPECS.get(kind, []):
            self._embedded(obj, path, "Pod", where)
        for path in SERVICE_SPECS.get(kind, []):
            self._embedded(obj, path, "Service", where)

    def _embedded(self, obj: dict[str, Any], path: tuple[str, ...], kind: str, where: str) -> None:
        spec = obj["spec"]
        for key in path:
            spec = spec[key]
        wrapped = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": "embedded"},
            "spec": copy.deepcopy(spec),
        }
        self._native(wrapped, f"{where} spec.{'.'.join(path)} (as a {kind})")


@pytest.fixture(scope="session")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="session")
def committed() -> dict[str, dict[str, Any]]:
    """The committed manifests of deployments/kubernetes, parsed."""
    return {name: yaml.safe_load((DEPLOYMENTS / name).read_text()) for name in deploy.manifests()}
