"""The environment of every Dask worker process mosaicflow starts or deploys.

Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers so that glibc returns freed
memory to the system soon. Setting it at all also fixes glibc's ``mmap`` threshold at its
128 kB default, so every array a task makes above that size is a fresh ``mmap`` whose pages are
faulted in and zeroed again: the stages' NumPy and SciPy work (many chunk-sized temporaries)
then runs about half as fast as in a plain process. With both thresholds at 16 MiB, arrays up
to a few chunks are reused from the heap and at most 16 MiB of free heap is kept from the
system. Measured on 2 workers (``docs/PERFORMANCE.md``), Dask's setting / 8 / 16 / 32 MiB:
60 registration pairs 2.12 / 0.94 / 0.89 / 0.80 s; the particle table of a 199 Mpx mosaic
17.2 / 11.6 / 10.7 / 11.6 s at a peak of 273 / 321 / 359 / 444 MiB per worker.

``MALLOC_ARENA_MAX=2``: glibc gives each thread that allocates its own arena (up to 8 per
core), and a worker has several threads (the task thread, the event loop, communication and
offload threads), each arena keeping its own free heap. Two arenas lowered the particle
table's peak of a 790 Mpx mosaic from 473 to 374 MiB per worker at the same speed (52 / 50 s);
one arena gave 351 MiB.

``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``: Dask's statistical profiler samples each
worker's threads every 10 ms and keeps a profile tree per second of the worker's life, up to an
hour of them. For a run that is memory growing with its duration, not with its data: at
maps-48, 4-5 MiB more per worker after each run on the same cluster (2,900 dicts), none with
the profiler off, and 14 MiB lower peaks (docs/PERFORMANCE.md). A local cluster's nannies hand
their own Dask configuration to the workers over the environment, so
:func:`mosaicflow.cluster.connect` sets it there as well (:data:`WORKER_CONFIG`).

The event loop's health check every 200 ms instead of 20 ms
(``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL``), the system monitor every 2 s instead of 0.5 s,
and the memory monitor every 0.5 s instead of 0.1 s: each Dask server (scheduler, nanny,
worker) runs these callbacks on its event loop whether or not there is work, and on a small
machine their CPU is taken from the tasks. An idle local cluster of 2 workers used 2.5 s of CPU
in 20 s with Dask's intervals (1.2 s of it in the driver's process, which holds the scheduler
and the nannies), 0.7 s with these; the 20 ms tick alone was 1.3 s of that. A blocked event
loop is still reported (Dask's limit is 3 s), memory above a worker's limit is still acted
on within half a second, and the dashboard's system plots take a point every 2 s.
"""

from __future__ import annotations

#: glibc's thresholds (bytes, as text) and Dask's profiler switch, for worker processes.
WORKER_ENVIRONMENT: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(16 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(16 * 2**20),
    "MALLOC_ARENA_MAX": "2",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "200ms",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "500ms",
}

#: The same settings as Dask configuration, for a local cluster: its scheduler and nannies, made
#: in the driver's process, read them there, and the nannies pass them to their workers (the
#: parent's configuration would override the environment variables).
WORKER_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}

#: The name of the driver's thread that imports the stages' modules ahead of them
#: (:func:`mosaicflow.pipeline._import_in_background`): a local cluster forking its workers
#: waits for it first, since a module half imported by another thread would stay half imported,
#: its lock held for ever, in the forked copy.
IMPORT_THREAD = "mosaicflow-background-imports"
