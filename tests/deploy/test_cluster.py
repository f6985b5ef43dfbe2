"""Cluster addresses: parsed strictly before any connection is tried; the optional back-ends
name the extra to install when their package is missing."""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import pytest

from mosaicflow import cluster
from mosaicflow._shared.dashboard import dashboard_link
from mosaicflow._shared.workers import WORKER_ENVIRONMENT
from mosaicflow.config import ClusterConfig, Config
from mosaicflow.errors import ClusterError, ConfigError


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("local", ("local", None)),
        ("local-cuda", ("local-cuda", None)),
        ("kubernetes", ("kubernetes", None)),
        ("kubernetes://mosaicflow", ("kubernetes", "mosaicflow")),
        ("tcp://127.0.0.1:8786", ("scheduler", "tcp://127.0.0.1:8786")),
        ("tls://scheduler.example.org:8786", ("scheduler", "tls://scheduler.example.org:8786")),
    ],
)
def test_addresses_understood(address, expected):
    assert cluster.parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("tcp://127.0.0.1:notaport", "bad scheduler address"),
        ("tcp://127.0.0.1:99999", "bad scheduler address"),
        ("tcp://127.0.0.1", "needs a host and a port"),
        ("tcp://:8786", "needs a host and a port"),
        ("tcp://127.0.0.1:8786/path", "needs a host and a port"),
        ("foo://x", "unknown scheme 'foo://'"),
        ("foo://", "unknown scheme 'foo://'"),
        ("kubernetes://Not_A_Name", "not a valid Kubernetes cluster name"),
        ("kubernetes://", "not a valid Kubernetes cluster name"),
        ("loca", "not understood"),
        ("", "not understood"),
    ],
)
def test_bad_addresses_fail_before_any_connection(address, says):
    start = time.monotonic()
    with pytest.raises(ClusterError, match="--cluster") as info:
        cluster.connect(address, timeout=30)
    assert says in str(info.value)
    assert time.monotonic() - start < 5  # no connection attempt, no timeout waited for


@pytest.mark.skipif(
    importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda is installed here"
)
def test_local_cuda_without_dask_cuda_names_the_gpu_extra():
    with pytest.raises(ClusterError, match=r"local-cuda.*mosaicflow\[gpu\]"):
        cluster.connect("local-cuda")


@pytest.mark.parametrize("address", ["kubernetes", "kubernetes://mosaicflow"])
def test_kubernetes_without_dask_kubernetes_names_the_k8s_extra(monkeypatch, address):
    # a None entry in sys.modules makes the import fail as if the package were absent
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ClusterError, match=r"kubernetes.*mosaicflow\[k8s\]"):
        cluster.connect(address)


@pytest.mark.parametrize("address", ["kubernetes", "kubernetes://mosaicflow"])
def test_kubernetes_without_an_api_server_is_a_clear_error(monkeypatch, tmp_path, address):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match=r"--cluster.*cannot reach .* on Kubernetes"):
        cluster.connect(address)


def test_local_workers_start_with_the_worker_environment():
    """glibc reads its settings when a process starts: the nanny must put them in place before
    it starts the worker (a real local cluster, its workers' own environment)."""
    import dask

    client = cluster.connect("local", n_workers=1, threads_per_worker=1)
    try:
        seen = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRONMENT})
        # The nanny hands the worker this process's Dask configuration, over the environment:
        # no statistical profile is kept while a task runs.
        client.submit(_busy, 0.5, pure=False).result()
        profiled = client.run(
            lambda dask_worker: (
                dask.config.get("distributed.worker.profile.enabled"),
                dask_worker.profile_recent["count"] + len(dask_worker.profile_history),
            )
        )
        # the event-loop callbacks' intervals, in the workers and in this process's scheduler
        # and nannies
        servers = [
            *client.run(_intervals).values(),
            client.run_on_scheduler(_intervals),
            *(_intervals(nanny) for nanny in client.cluster.workers.values()),
        ]
    finally:
        cluster.close(client)
    assert list(seen.values()) == [WORKER_ENVIRONMENT]
    assert list(profiled.values()) == [(False, 0)]
    assert len(servers) == 3
    for tick, monitor, memory in servers:
        assert tick == pytest.approx(0.2)  # Dask's default: 0.02 s
        assert monitor == pytest.approx(2000)  # ms; Dask's default: 500
        assert memory in (None, pytest.approx(0.5))  # Dask's default: 0.1 s
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"  # this process: as was
    assert WORKER_ENVIRONMENT["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] == "False"
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process: as was
    assert {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"} <= set(
        WORKER_ENVIRONMENT
    )


def _intervals(server=None, dask_worker=None, dask_scheduler=None) -> tuple:
    """A Dask server's tick interval (s), system monitor interval (ms) and memory monitor
    interval (s; ``None`` for the scheduler, which has none)."""
    server = server or dask_worker or dask_scheduler
    monitor = server.periodic_callbacks["monitor"].callback_time
    memory = getattr(getattr(server, "memory_manager", None), "memory_monitor_interval", None)
    return server._tick_interval, monitor, memory


def _busy(seconds: float) -> int:
    """Keep a worker's task thread busy in Python for ``seconds``."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def _finalizer_script(marker, *, closed: bool, status: int) -> str:
    """A fresh interpreter that installs the quick exit, holds an object whose finaliser writes
    ``marker`` at interpreter shutdown, and exits with ``status``."""
    return (
        "import os, sys\n"
        "from mosaicflow._shared import worker_exit\n"
        "worker_exit.install()\n"
        f"fd = os.open({str(marker)!r}, os.O_WRONLY | os.O_CREAT)\n"
        "class Held:\n"
        "    def __del__(self, write=os.write, fd=fd):\n"
        "        write(fd, b'finalised')\n"
        "held = Held()\n"
        + ("worker_exit.mark_closed()\n" if closed else "")
        + f"sys.exit({status})\n"
    )


def _run_finalizer_script(marker, *, closed: bool, status: int):
    import subprocess

    script = _finalizer_script(marker, closed=closed, status=status)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("status", [0, 3])
def test_quick_exit_skips_the_interpreter_shutdown_only_after_a_clean_close(tmp_path, status):
    closed = tmp_path / "closed"
    done = _run_finalizer_script(closed, closed=True, status=status)
    assert done.returncode == 0, done.stderr  # a clean close ends the process with status 0
    assert closed.read_text() == ""  # ...before module teardown would finalise `held`
    # Not marked closed (an error, a signal): the usual shutdown, and the process's own status.
    running = tmp_path / "running"
    done = _run_finalizer_script(running, closed=False, status=status)
    assert done.returncode == status, done.stderr
    assert running.read_text() == "finalised"


HEARTBEATS = """
import logging, sys
from mosaicflow._shared import worker_exit
logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(message)s")
log = logging.getLogger("distributed.worker")
worker_exit.install()

def failed_heartbeat():
    try:
        raise OSError("Stream is closed")
    except OSError:
        log.exception("Failed to communicate with scheduler during heartbeat.")

failed_heartbeat()  # while the worker runs: a real failure
worker_exit.mark_closed()
failed_heartbeat()  # in flight when the worker closed its connections
log.error("another error after the close")
"""


def test_a_cleanly_closed_worker_drops_only_its_last_heartbeat_failure():
    import subprocess

    done = subprocess.run([sys.executable, "-c", HEARTBEATS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("during heartbeat") == 1, done.stderr
    assert done.stderr.count("Traceback") == 1, done.stderr
    assert "another error after the close" in done.stderr


def test_local_workers_exit_quickly_after_the_handlers_registered_later(tmp_path):
    """The local cluster's spawned workers carry the quick exit; the atexit handlers registered
    after it (as fsspec and Zarr register theirs on import) still run when the cluster closes.
    (A forked worker ends with ``os._exit`` as multiprocessing ends every forked child: no
    handler runs there, and its tasks' writes are complete when they return.)"""
    marker = tmp_path / "later-handler"

    def register_later(path: str) -> bool:
        import atexit
        import logging

        from mosaicflow._shared import worker_exit

        atexit.register(lambda: open(path, "w").write("ran"))
        quiet = worker_exit._not_a_closing_heartbeat
        return worker_exit._state["installed"] and (
            quiet in logging.getLogger("distributed.worker").filters
        )

    client = cluster.connect("local", n_workers=1, threads_per_worker=1, start_method="spawn")
    try:
        assert "mosaicflow-quick-exit" in next(iter(client.run(_plugin_names).values()))
        assert client.submit(register_later, str(marker), pure=False).result() is True
    finally:
        cluster.close(client)
    assert marker.read_text() == "ran"


def _plugin_names(dask_worker=None):
    return sorted(dask_worker.plugins)


def test_a_local_cluster_whose_workers_refuse_the_plugin_is_closed_and_named(monkeypatch):
    from distributed import Client

    started = []

    def refuse(self, plugin, *args, **kwargs):
        started.append(self.cluster)
        raise RuntimeError("plugin refused")

    monkeypatch.setattr(Client, "register_plugin", refuse)
    with pytest.raises(ClusterError, match="the local workers did not start cleanly"):
        cluster.connect("local", n_workers=1, threads_per_worker=1)
    assert started and started[0].status.name == "closed"  # not left running


def test_auto_start_method_forks_on_linux_unless_a_fork_unsafe_package_is_loaded(monkeypatch):
    import multiprocessing
    import types

    can_fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux"
    for name in cluster.FORK_UNSAFE:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert cluster.local_start_method("auto") == ("fork" if can_fork else "spawn")
    assert cluster.local_start_method("spawn") == "spawn"
    for name in ("torch", "cupy"):  # a thread pool or a CUDA context a child cannot use
        with monkeypatch.context() as m:
            m.setitem(sys.modules, name, types.ModuleType(name))
            assert cluster.local_start_method("auto") == "spawn"
            if can_fork:  # asked for explicitly, it is what the user gets
                assert cluster.local_start_method("fork") == "fork"
    monkeypatch.setattr(sys, "platform", "darwin")  # fork there breaks system frameworks
    assert cluster.local_start_method("auto") == "spawn"


@pytest.mark.parametrize("asked", ["forkserver", "", "Fork"])
def test_unknown_start_methods_name_the_setting(asked):
    with pytest.raises(ConfigError, match=r"cluster.start_method must be one of auto, fork"):
        cluster.local_start_method(asked)
    with pytest.raises(ConfigError, match=r"cluster.start_method must be one of"):
        Config(cluster=ClusterConfig(start_method=asked))


def test_fork_without_fork_names_the_setting_and_platform(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(ConfigError, match=r"cluster.start_method: fork is not available"):
        cluster.local_start_method("fork")
    assert cluster.local_start_method("auto") == "spawn"


def _worker_state():
    from mosaicflow._shared import worker_malloc

    return "mosaicflow_fork_probe" in sys.modules, dict(worker_malloc.applied), os.getpid()


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers: Linux only")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_local_workers_started_either_way_get_the_allocator_settings(monkeypatch, method):
    """A forked worker is a copy of this process (a module only this process made is there);
    glibc read its environment before the nanny set it, so the plugin sets the allocator's
    values with mallopt, in spawned workers too."""
    import types

    from mosaicflow._shared.worker_malloc import MALLOPT_PARAMETERS

    monkeypatch.setitem(sys.modules, "mosaicflow_fork_probe", types.ModuleType("probe"))
    client = cluster.connect("local", n_workers=2, threads_per_worker=1, start_method=method)
    try:
        states = list(client.run(_worker_state).values())
        assert "mosaicflow-malloc-settings" in next(iter(client.run(_plugin_names).values()))
        # the workers compute, and the cluster closes with no process left behind
        assert client.submit(_busy, 0.05, pure=False).result() > 0
    finally:
        cluster.close(client)
    expected = {name: int(WORKER_ENVIRONMENT[name]) for name in MALLOPT_PARAMETERS}
    assert [probe for probe, _, _ in states] == [method == "fork"] * 2
    assert all(applied == expected for _, applied, _ in states)
    for _, _, pid in states:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="forked workers: Linux only")
def test_forking_waits_for_the_background_imports(monkeypatch):
    """A module half imported by another thread stays half imported in a forked copy, its lock
    held for ever: the pipeline's import thread is named, and a fork waits for it."""
    import importlib
    import threading
    import types

    from mosaicflow._shared.workers import IMPORT_THREAD
    from mosaicflow.pipeline import _import_in_background

    release = threading.Event()
    real_import = importlib.import_module

    def slow_import(name, package=None):
        if name != "mosaicflow_probe_module":
            return real_import(name, package)
        release.wait(10)
        time.sleep(3.0)  # still importing when the workers are forked
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))  # the import's effect
        return sys.modules[name]

    monkeypatch.setattr(importlib, "import_module", slow_import)
    _import_in_background("mosaicflow_probe_module")
    assert IMPORT_THREAD in {t.name for t in threading.enumerate()}
    release.set()
    client = cluster.connect("local", n_workers=1, threads_per_worker=1, start_method="fork")
    try:  # the worker is a copy of this process made after the import had finished
        seen = client.run(lambda: "mosaicflow_probe_module" in sys.modules)
    finally:
        cluster.close(client)
    assert list(seen.values()) == [True]


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim: Linux only")
def test_freed_heap_is_handed_back_before_the_workers_are_forked(monkeypatch):
    """What a process freed but glibc kept (100 kB arrays, each below a small live one that
    keeps it from the heap's top) is handed back by ``release_free_memory``, and a fork does
    that first, so the workers do not start holding it."""
    import subprocess

    script = (
        "import numpy as np, psutil\n"
        "from mosaicflow._shared.worker_malloc import release_free_memory\n"
        "rss = lambda: psutil.Process().memory_info().rss / 2**20\n"
        "pairs = [(np.ones(12_500), np.ones(8)) for _ in range(2000)]\n"
        "pinned = [small for _, small in pairs]\n"
        "del pairs\n"
        "before = rss()\n"
        "assert release_free_memory()\n"
        "print(before - rss())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 100  # MiB handed back, of the 190 MB freed

    from mosaicflow._shared import worker_malloc

    calls = []
    monkeypatch.setattr(worker_malloc, "release_free_memory", lambda: calls.append(1) or True)
    client = cluster.connect("local", n_workers=1, threads_per_worker=1, start_method="fork")
    cluster.close(client)
    assert calls == [1]
    client = cluster.connect("local", n_workers=1, threads_per_worker=1, start_method="spawn")
    cluster.close(client)
    assert calls == [1]  # nothing to hand back before a spawn


def _http_status(client, path: str) -> int:
    """What the local scheduler's HTTP server answers at ``path``."""
    import urllib.error
    import urllib.request

    port = client.scheduler_info()["services"]["dashboard"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_local_cluster_serves_a_dashboard_only_when_asked():
    """Off by default (the driver's CPU): the scheduler still answers health checks on a free
    port, without the Bokeh pages; asked for, they are at the address given."""
    client = cluster.connect("local", n_workers=1)
    try:
        assert dashboard_link(client) is None
        assert _http_status(client, "/health") == 200
        assert _http_status(client, "/status") == 404
    finally:
        cluster.close(client)
    client = cluster.connect("local", n_workers=1, dashboard=True)
    try:
        link = dashboard_link(client)
        assert link is not None and link.startswith("http://127.0.0.1:")
        assert link.endswith("/status") and _http_status(client, "/status") == 200
    finally:
        cluster.close(client)


def test_the_dashboard_setting_and_option_reach_the_config():
    from mosaicflow.cli import build_parser
    from mosaicflow.cli.run import config_from_args

    parse = build_parser().parse_args
    assert ClusterConfig().dashboard is False
    assert config_from_args(parse(["run", "acq", "--out", "r.zarr"])).cluster.dashboard is False
    asked = parse(["run", "acq", "--out", "r.zarr", "--dashboard"])
    assert config_from_args(asked).cluster.dashboard is True
    assert Config().replace("cluster", dashboard=True).cluster.dashboard is True
