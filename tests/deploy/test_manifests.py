"""The Kubernetes manifests: generated from mosaicflow.deploy byte for byte, valid under strict
offline validation (and the validator refuses what the API server would refuse or silently
drop), consistent with each other and with the ``kubernetes`` back-end."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess

import pytest
import yaml

from mosaicflow import deploy
from mosaicflow._shared.workers import WORKER_ENVIRONMENT
from mosaicflow.errors import ConfigError

from .conftest import DEPLOYMENTS


def test_committed_manifests_are_exactly_what_the_builder_writes(tmp_path):
    written = deploy.write(tmp_path)
    assert {p.name for p in written} == set(deploy.manifests())
    for path in written:
        committed = DEPLOYMENTS / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from mosaicflow.deploy: run "
            "`python -m mosaicflow.deploy deployments/kubernetes`"
        )


@pytest.mark.parametrize("name", [n for n in deploy.manifests() if n != "kustomization.yaml"])
def test_every_manifest_validates_strictly(validator, committed, name):
    validator.validate(committed[name])


def test_the_kustomization_lists_existing_files_and_known_fields(committed):
    k = committed["kustomization.yaml"]
    known = {"apiVersion", "kind", "resources", "images", "namespace", "secretGenerator"}
    assert set(k) <= known
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    for resource in k["resources"]:
        assert (DEPLOYMENTS / resource).is_file(), resource
    images = {f"{i['name']}:{i['newTag']}" for i in k["images"]}
    used = {c["image"] for name in k["resources"] for c in _containers(committed[name])}
    assert used <= images


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (kustomize built in)")
def test_kustomize_builds_and_rewrites_every_image(validator, tmp_path):
    shutil.copytree(DEPLOYMENTS, tmp_path / "k", ignore=shutil.ignore_patterns("*.md"))
    path = tmp_path / "k" / "kustomization.yaml"
    k = yaml.safe_load(path.read_text())
    for image in k["images"]:
        image["newName"] = f"registry.example.org/{image['name']}"
    path.write_text(yaml.safe_dump(k))
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "k")], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    objects = list(yaml.safe_load_all(built.stdout))
    assert {o["kind"] for o in objects} == {"DaskJob", "DaskWorkerGroup"}
    images = {c["image"] for o in objects for c in _containers(o)}
    assert images and all(i.startswith("registry.example.org/") for i in images)
    for obj in objects:
        validator.validate(obj)


def _containers(obj):
    """Every container of a manifest, wherever it is embedded."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _containers(value)


# -- what the validator refuses (each starts from a manifest that passes) ----------------------


def _gpu_container(group):
    return group["spec"]["worker"]["spec"]["containers"][0]


def test_an_integer_gpu_limit_is_refused(validator, committed):
    group = copy.deepcopy(committed["gpu-workergroup.yaml"])
    validator.validate(group)
    _gpu_container(group)["resources"]["limits"]["nvidia.com/gpu"] = 1
    with pytest.raises(ValueError, match=r"limits.nvidia.com/gpu: 1 is not of type 'string'"):
        validator.validate(group)


@pytest.mark.parametrize(
    ("where", "misspelt"),
    [("container", "resource"), ("worker group", "workr"), ("pod", "nodeSelecter")],
)
def test_a_misspelt_field_is_refused(validator, committed, where, misspelt):
    group = copy.deepcopy(committed["gpu-workergroup.yaml"])
    if where == "container":
        container = _gpu_container(group)
        container[misspelt] = container.pop("resources")
    elif where == "worker group":
        group["spec"][misspelt] = group["spec"].pop("worker")
    else:
        pod = group["spec"]["worker"]["spec"]
        pod[misspelt] = pod.pop("nodeSelector")
    with pytest.raises(ValueError, match=misspelt):
        validator.validate(group)


def test_misspelt_fields_in_the_job_and_the_secret_are_refused(validator, committed):
    job = copy.deepcopy(committed["daskjob.yaml"])
    job["spec"]["job"]["spec"]["containers"][0]["argz"] = ["mosaicflow"]
    with pytest.raises(ValueError, match="argz"):
        validator.validate(job)
    secret = copy.deepcopy(committed["secret-example.yaml"])
    secret["stringdata"] = secret.pop("stringData")
    with pytest.raises(ValueError, match="stringdata"):
        validator.validate(secret)


def test_replicas_as_a_string_is_refused(validator, committed):
    cluster = copy.deepcopy(committed["daskcluster.yaml"])
    cluster["spec"]["worker"]["replicas"] = "2"
    with pytest.raises(ValueError, match=r"worker.replicas: '2' is not of type 'integer'"):
        validator.validate(cluster)


@pytest.mark.parametrize("name", ["Mosaic_Flow", "-mosaicflow", "mosaicflow.", "m" * 60, "1abc"])
def test_an_invalid_cluster_name_is_refused(validator, committed, name):
    cluster = copy.deepcopy(committed["daskcluster.yaml"])
    cluster["metadata"]["name"] = name
    with pytest.raises(ValueError, match="not a valid Kubernetes cluster name"):
        validator.validate(cluster)
    with pytest.raises(ConfigError, match=r"Deployment\.name"):
        deploy.Deployment(name=name)


def test_worker_counts_must_be_integers():
    with pytest.raises(ConfigError, match="gpu_workers"):
        deploy.Deployment(gpu_workers="1")


# -- consistency --------------------------------------------------------------------------------


def test_the_job_runs_on_the_clusters_spec_and_the_gpu_group_joins_it(committed):
    cluster, job = committed["daskcluster.yaml"], committed["daskjob.yaml"]
    group = committed["gpu-workergroup.yaml"]
    assert job["spec"]["cluster"]["spec"] == cluster["spec"]
    # the operator names the job's cluster after the job
    assert job["metadata"]["name"] == cluster["metadata"]["name"] == group["spec"]["cluster"]
    args = job["spec"]["job"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["mosaicflow", "run"]
    assert args[args.index("--cluster") + 1] == f"$({deploy.SCHEDULER_ADDRESS_ENV})"


def test_gpu_workers_are_labelled_and_scheduled_on_gpu_nodes(committed):
    group = committed["gpu-workergroup.yaml"]
    pod = group["spec"]["worker"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:5] == ["dask", "cuda", "worker", "--resources", "GPU=1"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_credentials_come_from_the_secret_in_every_store_reader(committed):
    secret = committed["secret-example.yaml"]
    assert set(secret["stringData"]) == set(deploy.SECRET_KEYS)
    readers = [committed["daskjob.yaml"], committed["gpu-workergroup.yaml"]]
    for container in (c for obj in readers for c in _containers(obj)):
        if container["name"] == "scheduler":
            assert "env" not in container
            continue
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        assert set(refs) == set(deploy.SECRET_KEYS), container["name"]
        assert {r["name"] for r in refs.values()} == {deploy.SECRET_NAME}
        # worker containers also get the glibc settings of every worker process mosaicflow runs
        plain = {e["name"]: e["value"] for e in container["env"] if "valueFrom" not in e}
        assert plain in ({}, WORKER_ENVIRONMENT), container["name"]
        assert (plain == WORKER_ENVIRONMENT) == ("worker" in container["name"]), container["name"]


def test_the_kubernetes_back_end_builds_the_same_gpu_group():
    # KubeCluster.add_worker_group("gpu", custom_spec=...) names the group <cluster>-gpu and
    # puts the spec under spec.worker: the same object as gpu-workergroup.yaml.
    d = deploy.Deployment()
    group = deploy.gpu_worker_group(d)
    assert group["metadata"]["name"] == f"{d.name}-gpu"
    assert group["spec"] == {"cluster": d.name, "worker": deploy.gpu_worker_spec(d)}


# -- (c) server-side dry run, where an API server is at hand ------------------------------------


@pytest.mark.kube
@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG") or shutil.which("kubectl") is None,
    reason="needs KUBECONFIG, kubectl and an API server with the dask-kubernetes CRDs",
)
@pytest.mark.parametrize("name", [n for n in deploy.manifests() if n != "kustomization.yaml"])
def test_server_side_dry_run(name):
    result = subprocess.run(
        ["kubectl", "apply", "--dry-run=server", "--validate=strict", "-f", DEPLOYMENTS / name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_golden_files_parse_as_yaml_with_the_generated_header():
    for name in deploy.manifests():
        text = (DEPLOYMENTS / name).read_text()
        assert text.startswith(deploy.GENERATED)
        assert isinstance(yaml.safe_load(text), dict)
