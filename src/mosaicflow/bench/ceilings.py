"""The physical ceilings of the machine a benchmark runs on, measured on one core in a few
seconds: memory bandwidth, the run store's codec, local disk and the float32 / float64 FLOP
rate; scaled to the run's cores, they bound what each stage could reach (``bench.work``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes of each array of the memory-bandwidth measurement: larger than the last-level cache
#: one core reaches, so that the copies stream through main memory (larger arrays only make
#: the first touch of their pages slower).
MEMORY_BYTES = 128 * 2**20
#: Bytes of the disk probe file, written into the benchmark folder and removed.
DISK_BYTES = 64 * 2**20
DISK_BLOCK = 4 * 2**20
#: Name of the disk probe file (removed after the measurement, also when it fails).
DISK_PROBE = ".ceiling-disk-probe"
#: Side of the square float matrices of the FLOP measurement.
MATMUL_N = 1024
#: The codec measurement's chunks, one per kind of image the run store holds: the noisy
#: mosaic, the smoothed (denoised) mosaic, the uint8 particle mask and uint32 labels.
CODEC_KINDS = ("image", "smooth", "mask", "labels")
GB, MB = 1e9, 1e6


def _best(fn: Callable[[], Any], repeat: int) -> float:
    """The shortest of ``repeat`` timed calls (after one untimed warm-up call), in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return max(min(times), 1e-9)


def memory_bandwidth(nbytes: int = MEMORY_BYTES, repeat: int = 5) -> dict[str, float]:
    """One core's memory bandwidth in GB/s, counting bytes read plus bytes written (as STREAM
    does): ``copy`` (``np.copyto``, 2 x nbytes a call) and ``add`` (``np.add`` into a third
    array, 3 x nbytes); ``used`` is the larger."""
    n = nbytes // 8
    a = np.ones(n)
    b = np.full(n, 2.0)
    c = np.zeros(n)  # every page touched before the clock starts
    copy = 2 * a.nbytes / _best(lambda: np.copyto(c, a), repeat) / GB
    add = 3 * a.nbytes / _best(lambda: np.add(a, b, out=c), repeat) / GB
    return {"copy": round(copy, 3), "add": round(add, 3), "used": round(max(copy, add), 3)}


def sample_chunks(side: int = 1024, seed: int = 0) -> dict[str, np.ndarray]:
    """Realistic chunks of each kind of :data:`CODEC_KINDS`: smooth substrate noise with a few
    hundred bright discs and detector noise (uint8), the same smoothed by a Gaussian of
    sigma 1 px, its particle mask (0 or 255) and the mask's labels (uint32)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    substrate = ndi.gaussian_filter(rng.normal(size=(side, side)).astype(np.float32), 16)
    image = 70 + 12 * substrate / max(float(substrate.std()), 1e-6)
    n = max(1, round(300 * (side / 1024) ** 2))  # about a tenth of the area covered
    for y, x, r in zip(
        rng.uniform(0, side, n), rng.uniform(0, side, n), rng.uniform(3, 18, n), strict=True
    ):
        y0, y1 = int(max(0, y - r - 2)), int(min(side, y + r + 3))
        x0, x1 = int(max(0, x - r - 2)), int(min(side, x + r + 3))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += 90 * np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0, 1)
    image += rng.normal(0, 6, image.shape)
    noisy = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    smooth = np.clip(np.rint(ndi.gaussian_filter(noisy.astype(np.float32), 1)), 0, 255)
    smooth = smooth.astype(np.uint8)
    mask = ((smooth > 120) * 255).astype(np.uint8)
    labels = ndi.label(mask)[0].astype(np.uint32)
    return {"image": noisy, "smooth": smooth, "mask": mask, "labels": labels}


def codec_speed(side: int = 1024, repeat: int = 5) -> dict[str, Any]:
    """The run store's codec on one core: each chunk of :func:`sample_chunks` written to and
    read from an in-memory Zarr v3 array created as the store creates its images (its codecs:
    :func:`mosaicflow.io.ome.image_codecs`), in MB/s of raw (uncompressed) data, and the
    compression ratio."""
    import zarr

    from mosaicflow.io.ome import image_codecs

    kinds = {}
    codec = ""
    for kind, chunk in sample_chunks(side).items():
        store = zarr.storage.MemoryStore()
        array = zarr.create_array(
            store,
            shape=chunk.shape,
            chunks=chunk.shape,
            dtype=chunk.dtype,
            fill_value=0,
            compressors=image_codecs(),
            config={"write_empty_chunks": True},
        )
        codec = ", ".join(type(c).__name__ + _level(c) for c in array.compressors)

        metadata = array.nbytes_stored()  # before any chunk: the metadata document alone

        def write(array: Any = array, chunk: np.ndarray = chunk) -> None:
            array[...] = chunk

        def read(array: Any = array) -> None:
            array[...]

        encode = _best(write, repeat)
        decode = _best(read, repeat)
        stored = array.nbytes_stored() - metadata
        kinds[kind] = {
            "dtype": str(chunk.dtype),
            "encode_mbps": round(chunk.nbytes / encode / MB, 1),
            "decode_mbps": round(chunk.nbytes / decode / MB, 1),
            "ratio": round(chunk.nbytes / max(stored, 1), 3),
        }
    return {"codec": codec or "none", "chunk_px": side, "kinds": kinds}


def _level(codec: Any) -> str:
    level = getattr(codec, "level", None)
    return "" if level is None else f"(level {level})"


def disk_speed(folder: str | os.PathLike[str], nbytes: int = DISK_BYTES) -> dict[str, Any]:
    """Sequential write (with fsync) and read of a file of ``nbytes`` random bytes in
    ``folder``, in MB/s; the file is removed. Before the read the file's pages are dropped from
    the page cache (``posix_fadvise``, where the system has it: ``read_cold``), so the read
    comes from the device, not from memory."""
    path = Path(folder) / DISK_PROBE
    rng = np.random.default_rng(1)
    blocks = [rng.bytes(DISK_BLOCK) for _ in range(max(1, nbytes // DISK_BLOCK))]
    total = len(blocks) * DISK_BLOCK
    cold = hasattr(os, "posix_fadvise")
    try:
        t0 = time.perf_counter()
        with open(path, "wb", buffering=0) as fh:
            for block in blocks:
                fh.write(block)
            os.fsync(fh.fileno())
        write = time.perf_counter() - t0
        if cold:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        buffer = bytearray(DISK_BLOCK)
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buffer):
                pass
        read = time.perf_counter() - t0
    finally:
        path.unlink(missing_ok=True)
    return {
        "write_mbps": round(total / max(write, 1e-9) / MB, 1),
        "read_mbps": round(total / max(read, 1e-9) / MB, 1),
        "file_mib": total // 2**20,
        "read_cold": cold,
    }


def flop_rates(n: int = MATMUL_N, repeat: int = 3, *, torch_conv: bool = False) -> dict[str, Any]:
    """One core's FLOP rate in GFLOP/s: NumPy matrix products of ``n x n`` float32 and float64
    matrices (``2 n^3`` FLOPs each, BLAS held to one thread) and, with ``torch_conv``, torch's
    3x3 convolution of 32 to 32 channels on a 256 x 256 float32 image (the model's main
    operation); ``conv2d_f32`` is None (with ``conv2d_note``) when it is not measured."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(2)
    out: dict[str, Any] = {}
    with threadpool_limits(limits=1):
        for name, dtype in (("matmul_f32", np.float32), ("matmul_f64", np.float64)):
            a = rng.random((n, n)).astype(dtype)
            b = rng.random((n, n)).astype(dtype)

            def product(a: np.ndarray = a, b: np.ndarray = b) -> None:
                a @ b

            out[name] = round(2 * n**3 / _best(product, repeat) / 1e9, 2)
    out["conv2d_f32"], out["conv2d_note"] = None, "not measured: the run uses no model"
    if torch_conv:
        try:
            import torch
        except ImportError:
            out["conv2d_note"] = "not measured: torch is not installed"
            return out
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            x = torch.randn(1, 32, 256, 256)
            conv = torch.nn.Conv2d(32, 32, 3, padding=1, bias=False)
            with torch.no_grad():
                seconds = _best(lambda: conv(x), repeat)
        finally:
            torch.set_num_threads(threads)
        flops = 2 * 32 * 32 * 9 * 256 * 256
        out["conv2d_f32"], out["conv2d_note"] = round(flops / seconds / 1e9, 2), None
    return out


def measure_ceilings(
    folder: str | os.PathLike[str], *, chunk: int = 1024, torch_conv: bool = False
) -> dict[str, Any]:
    """Every single-core ceiling of this machine (about 1 to 3 s).

    Parameters
    ----------
    folder : str or path-like
        Where the disk probe file is written (the benchmark folder: the disk the run store is
        on); it is removed afterwards.
    chunk : int
        Side of the codec measurement's chunks (the run's chunk size).
    torch_conv : bool
        Also measure torch's convolution rate (importing torch takes seconds: only for runs
        that segment with a model).

    Returns
    -------
    dict
        ``memory_gbps`` (:func:`memory_bandwidth`), ``codec`` (:func:`codec_speed`), ``disk``
        (:func:`disk_speed`), ``gflops`` (:func:`flop_rates`) and ``seconds`` (the time the
        measurements took).
    """
    t0 = time.perf_counter()
    per_core: dict[str, Any] = {
        "memory_gbps": memory_bandwidth(),
        "codec": codec_speed(min(int(chunk), 2048)),
        "disk": disk_speed(folder),
        "gflops": flop_rates(torch_conv=torch_conv),
    }
    per_core["seconds"] = round(time.perf_counter() - t0, 3)
    return per_core


def usable_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def scale(per_core: dict[str, Any], cores: int) -> dict[str, Any]:
    """The machine's ceilings for a run on ``cores`` cores: every per-core rate times
    ``cores``, except the disk (one device, shared by all workers)."""
    codec = per_core["codec"]
    kinds = {
        kind: {
            **k,
            "encode_mbps": round(k["encode_mbps"] * cores, 1),
            "decode_mbps": round(k["decode_mbps"] * cores, 1),
        }
        for kind, k in codec["kinds"].items()
    }
    flops = {
        k: (round(v * cores, 2) if isinstance(v, int | float) else v)
        for k, v in per_core["gflops"].items()
    }
    memory = {k: round(v * cores, 3) for k, v in per_core["memory_gbps"].items()}
    return {
        "memory_gbps": memory,
        "codec": {**codec, "kinds": kinds},
        "disk": dict(per_core["disk"]),
        "gflops": flops,
    }


def machine_ceilings(
    folder: str | os.PathLike[str],
    *,
    workers: int,
    threads_per_worker: int = 1,
    chunk: int = 1024,
    torch_conv: bool = False,
) -> dict[str, Any]:
    """What ``bench.json`` keeps under ``machine.ceilings``: the per-core measurements and the
    machine's ceilings for the run, scaled by ``min(workers x threads, usable cores)``."""
    per_core = measure_ceilings(folder, chunk=chunk, torch_conv=torch_conv)
    cores = max(1, min(workers * threads_per_worker, usable_cores()))
    return {
        "status": "measured",
        "seconds": per_core.pop("seconds"),
        "cores": cores,
        "scaling": (
            "machine = one core's rate x cores, cores = min(workers x threads per worker, usable "
            "cores); the disk is one device and is not scaled. Memory bandwidth is shared by the "
            "cores, so the scaled figure is an upper estimate"
        ),
        "method": {
            "memory_array_mib": MEMORY_BYTES // 2**20,
            "matmul_n": MATMUL_N,
            "conv2d": "3x3, 32 to 32 channels, 256 x 256 px, float32",
            "fft_flops": "2.5 N log2 N per real transform of N points",
        },
        "per_core": per_core,
        "machine": scale(per_core, cores),
        "units": "GB = 1e9 bytes, MB = 1e6 bytes, read + written bytes for memory, raw "
        "(uncompressed) bytes for the codec",
    }


class Rates:
    """The machine's ceilings (``machine.ceilings["machine"]``) in bytes/s and FLOP/s.

    Attributes
    ----------
    memory, disk_read, disk_write : float
        Bytes per second (memory: read plus written).
    encode, decode, ratio : dict
        Per codec kind: raw bytes per second, and raw bytes per stored byte.
    flops_f32, flops_f64 : float
        Matrix-product FLOP rates.
    conv : float or None
        Torch's convolution rate, where measured.
    """

    def __init__(self, machine: dict[str, Any]) -> None:
        self.memory = machine["memory_gbps"]["used"] * GB
        kinds = machine["codec"]["kinds"]
        self.encode = {k: v["encode_mbps"] * MB for k, v in kinds.items()}
        self.decode = {k: v["decode_mbps"] * MB for k, v in kinds.items()}
        self.ratio = {k: v["ratio"] for k, v in kinds.items()}
        self.disk_read = machine["disk"]["read_mbps"] * MB
        self.disk_write = machine["disk"]["write_mbps"] * MB
        g = machine["gflops"]
        self.flops_f32 = g["matmul_f32"] * 1e9
        self.flops_f64 = g["matmul_f64"] * 1e9
        self.conv = None if g.get("conv2d_f32") is None else g["conv2d_f32"] * 1e9
