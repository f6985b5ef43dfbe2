"""The environment of every Dask worker process mosaicflow starts or deploys.

Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers so that glibc returns freed
memory to the system soon. Setting it at all also fixes glibc's ``mmap`` threshold at its
128 kB default, so every array a task makes above that size is a fresh ``mmap`` whose pages are
faulted in and zeroed again: the stages' NumPy and SciPy work (many chunk-sized temporaries)
then runs about half as fast as in a plain process (measured: 60 registration pairs 2.2 s
against 1.1 s; ``docs/PERFORMANCE.md``). With both thresholds at 32 MiB, arrays up to a few
chunks are reused from the heap and at most 32 MiB of free heap is kept from the system: the
same work took 0.83 s, at the same peak memory.
"""

from __future__ import annotations

#: glibc's thresholds for worker processes (bytes, as text for the environment).
WORKER_ENVIRONMENT: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20),
}
