"""The manifests run as local processes on 127.0.0.1: the scheduler, CPU worker and GPU worker
containers' commands and environments from the committed YAML, then the DaskJob's
``mosaicflow run``; the job completes and its particle table equals a LocalCluster run's
(one run of the session's cluster, the reference of both stores).

What a cluster does and this test does instead, each step said where it happens: the operator
injects ``DASK_SCHEDULER_ADDRESS`` and ``DASK_WORKER_NAME``, the kubelet expands ``$(VAR)`` in
args and resolves ``secretKeyRef`` from the Secret; each pod has its own network namespace, so
here the listening ports become free ports of 127.0.0.1; there is no GPU and no dask-cuda here,
so the GPU worker's ``dask cuda worker`` runs as ``dask worker`` with the same arguments
(``--resources GPU=1`` included)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client

from mosaicflow import deploy
from mosaicflow.cli import main
from mosaicflow.io.store import RunStore

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """The kubelet's ``$(VAR)`` expansion of command and args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in args]


def _container_env(container: dict, secret: dict) -> dict[str, str]:
    """The container's variables as the kubelet sets them (secretKeyRef from the Secret)."""
    out = {}
    for item in container.get("env", []):
        if "value" in item:
            out[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            if ref["key"] in secret["stringData"] or not ref.get("optional"):
                out[item["name"]] = secret["stringData"][ref["key"]]
    return out


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    """Replace an option's value (pod-local ports become free local ones)."""
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return args


@pytest.fixture
def processes():
    """Started subprocesses, each in its own session, stopped (group by group) at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _start(processes, args, env, log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    proc = subprocess.Popen(
        args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    handle.close()
    processes.append(proc)
    return proc


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """The scheduler's readinessProbe: GET /health on the dashboard port."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"scheduler not ready at {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def local_reference(small_grid, client, tmp_path_factory) -> Path:
    """The same run on a LocalCluster (the session's, two worker processes)."""
    ref = tmp_path_factory.mktemp("reference") / "local.zarr"
    argv = ["run", str(small_grid.folder), "--out", str(ref), "--quiet"]
    assert main([*argv, "--cluster", client.scheduler.address]) == 0
    return ref


@pytest.mark.cluster
@pytest.mark.parametrize(
    "store",
    ["local", "s3"],
)
def test_manifests_run_as_processes_and_match_a_local_cluster(
    committed, processes, small_grid, local_reference, tmp_path, store, s3_server
):
    job, group = committed["daskjob.yaml"], committed["gpu-workergroup.yaml"]
    secret = committed["secret-example.yaml"]
    if store == "s3":  # the Secret's values point at a real S3-protocol server on 127.0.0.1
        key, password = "AKIAK8SJOBTEST", "k8s-job-s3cr3t"
        endpoint, _ = s3_server(small_grid.folder, "mosaicflow-k8s", key, password)
        secret = {
            **secret,
            "stringData": {
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": password,
                "AWS_ENDPOINT_URL": endpoint,
            },
        }
        assert set(secret["stringData"]) == set(committed["secret-example.yaml"]["stringData"])
    cluster_spec = job["spec"]["cluster"]["spec"]
    # nothing of this machine's configuration reaches the containers but what the manifests say
    hidden = ("DASK_", "MOSAICFLOW_", "AWS_", "FSSPEC_")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(hidden)}

    # scheduler: its container, listening on 127.0.0.1 instead of the pod's 0.0.0.0
    (sched,) = cluster_spec["scheduler"]["spec"]["containers"]
    port, dash = _free_port(), _free_port()
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    args = _set_option(sched["args"], "--host", "127.0.0.1")
    args = _set_option(args, "--port", str(port))
    args = _set_option(args, "--dashboard-address", f"127.0.0.1:{dash}")
    env = base_env | _container_env(sched, secret)
    log = tmp_path / "scheduler.log"
    proc = _start(processes, [_executable(args[0]), *args[1:]], env, log)
    probe = sched["readinessProbe"]["httpGet"]
    assert probe["port"] == "http-dashboard"
    _wait_healthy(f"http://127.0.0.1:{dash}{probe['path']}", proc, log)
    address = f"tcp://127.0.0.1:{port}"

    # workers: every replica of the CPU group and of the GPU group
    groups = [("default", cluster_spec["worker"]), ("gpu", group["spec"]["worker"])]
    n_workers = 0
    for group_name, worker in groups:
        (container,) = worker["spec"]["containers"]
        args = list(container["args"])
        if args[:3] == ["dask", "cuda", "worker"]:
            args = ["dask", "worker", *args[3:]]  # no GPU, no dask-cuda here (module docstring)
        args = _set_option(args, "--dashboard-address", "127.0.0.1:0")
        for i in range(worker["replicas"]):
            env = base_env | _container_env(container, secret)
            env |= {  # what the operator injects
                "DASK_WORKER_NAME": f"{job['metadata']['name']}-{group_name}-worker-{i}",
                deploy.SCHEDULER_ADDRESS_ENV: address,
            }
            argv = _expand(args, env)
            log = tmp_path / f"{group_name}-{i}.log"
            _start(processes, [_executable(argv[0]), *argv[1:]], env, log)
            n_workers += 1

    with Client(address, timeout=30) as c:
        c.wait_for_workers(n_workers, timeout=60)
        info = c.scheduler_info(n_workers=-1)["workers"].values()
        labelled = {w["name"]: w.get("resources", {}) for w in info}
    assert {n for n, r in labelled.items() if r.get("GPU") == 1} == {"mosaicflow-gpu-worker-0"}
    assert sum(1 for r in labelled.values() if not r) == cluster_spec["worker"]["replicas"]

    # the job: its command against local paths, or against the S3 server with the Secret's
    # credentials and endpoint as the only way to reach it
    (container,) = job["spec"]["job"]["spec"]["containers"]
    if store == "s3":
        out = "s3://mosaicflow-k8s/run.zarr"
        stores = {deploy.Deployment.input: "s3://mosaicflow-k8s/acq", deploy.Deployment.out: out}
    else:
        out = tmp_path / "k8s.zarr"
        stores = {deploy.Deployment.input: str(small_grid.folder), deploy.Deployment.out: str(out)}
    assert set(stores) <= set(container["args"])
    env = base_env | _container_env(container, secret) | {deploy.SCHEDULER_ADDRESS_ENV: address}
    argv = _expand([stores.get(a, a) for a in container["args"]], env)
    assert argv[argv.index("--cluster") + 1] == address
    result = subprocess.run(
        [_executable(argv[0]), *argv[1:]], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "particles found" in result.stdout

    options = (
        {
            "endpoint_url": secret["stringData"]["AWS_ENDPOINT_URL"],
            "key": secret["stringData"]["AWS_ACCESS_KEY_ID"],
            "secret": secret["stringData"]["AWS_SECRET_ACCESS_KEY"],
        }
        if store == "s3"
        else None
    )
    got = RunStore(str(out), mode="r", storage_options=options).read_table("particles")
    want = RunStore(str(local_reference), mode="r").read_table("particles")
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)
