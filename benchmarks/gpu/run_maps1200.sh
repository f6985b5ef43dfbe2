#!/usr/bin/env bash
# The maps-1200 benchmark on one GPU node: an NVIDIA H100/H200 image with PyTorch and CuPy
# installed and none of mosaicflow's other dependencies, which it installs from the wheels
# that make_wheelhouse.sh brought along (no network needed). See README.md beside this file.
#
#   bash benchmarks/gpu/run_maps1200.sh
#
# Settings (environment variables):
#   OUT       where the results are copied (default ./gpu-results): bench-maps1200/ with
#             bench.json, bench.md, bench.png, dask-report.html, and the install and run logs
#   WORK      where the tiles and the run store are written (default /tmp/mosaicflow-gpu;
#             about 10 GB for maps-1200)
#   WORKERS   local worker processes (default: mosaicflow's, one per core, at most 8)
#   MODEL     a segmentation checkpoint: windowed inference on the GPU instead of Otsu
#   NAIVE     1 (default) also runs the naive single-process baseline; 0 skips it
#   ALSO_CPU  1 also runs the same benchmark with the default (CPU) settings, for a
#             comparison on the same node (default 0)
#   PYTHON    the image's Python, the one with PyTorch and CuPy (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
house="$here/wheelhouse"
out="$(mkdir -p "${OUT:-$PWD/gpu-results}" && cd "${OUT:-$PWD/gpu-results}" && pwd)"
work="${WORK:-/tmp/mosaicflow-gpu}"
python="${PYTHON:-python3}"
log="$out/install.log"
export PYTHONUNBUFFERED=1

if [ ! -f "$house/requirements.txt" ]; then
    echo "no wheelhouse at $house: run benchmarks/gpu/make_wheelhouse.sh where PyPI is reached" >&2
    exit 2
fi

echo "== the node" | tee "$log"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) 2>&1 | tee -a "$log"
versions() {
    "$python" - <<'PY'
import torch, cupy
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU {torch.cuda.is_available()}), "
      f"cupy {cupy.__version__} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})")
PY
}
before="$(versions)"
echo "before: $before" | tee -a "$log"

echo "== installing mosaicflow from $house" | tee -a "$log"
# The image's PyTorch, CuPy and CUDA libraries are pinned to what is installed: pip may add
# packages but never replace these (with --no-index an install that needs to fails instead).
pins="$work/image-pins.txt"
mkdir -p "$work"
"$python" -m pip list --format=json | "$python" -c '
import json, re, sys
keep = re.compile(r"^(torch|torchvision|torchaudio|triton|cupy.*|nvidia-.*|cuda-.*|numba.*|jax.*)$")
for p in json.load(sys.stdin):
    if keep.match(p["name"].lower()):
        print(f"{p[\"name\"]}=={p[\"version\"]}")
' > "$pins"
"$python" -m pip install --no-index --find-links "$house" --constraint "$pins" \
    "$(ls "$house"/mosaicflow-*.whl)" 2>&1 | tee -a "$log"
# cuCIM without its dependencies: it asks for CuPy's CUDA toolkit extra, which the image's
# CuPy already has in its own way.
"$python" -m pip install --no-index --find-links "$house" --no-deps \
    $(cat "$house/gpu-packages.txt") 2>&1 | tee -a "$log"
after="$(versions)"
echo "after:  $after" | tee -a "$log"
if [ "$before" != "$after" ]; then
    echo "the install changed PyTorch or CuPy; stopping" | tee -a "$log" >&2
    exit 1
fi
"$python" -c "
from mosaicflow import dispatch
import cucim.skimage
assert dispatch.gpu_available(), 'mosaicflow.dispatch sees no GPU'
print('mosaicflow sees the GPU; cuCIM', cucim.__version__)
" 2>&1 | tee -a "$log"

bench() {  # name, then extra options
    local name="$1"
    shift
    local folder="$work/$name"
    local args=(--scenario maps-1200 --data "$work/input" --out "$folder")
    [ -n "${WORKERS:-}" ] && args+=(--workers "$WORKERS")
    [ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
    [ "${NAIVE:-1}" = 0 ] && args+=(--no-naive)
    echo "== mosaicflow bench ${args[*]} $*" | tee "$out/$name.log"
    "$python" -c 'import sys; from mosaicflow.cli import main; sys.exit(main())' \
        bench "${args[@]}" "$@" 2>&1 | tee -a "$out/$name.log"
    mkdir -p "$out/$name"
    cp "$folder"/bench.json "$folder"/bench.md "$folder"/bench.png "$folder"/dask-report.html \
        "$out/$name/"
}

bench bench-maps1200 --config "$here/gpu.yaml"
if [ "${ALSO_CPU:-0}" = 1 ]; then
    bench bench-maps1200-cpu
fi
echo "== results in $out"
