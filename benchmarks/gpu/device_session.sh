#!/usr/bin/env bash
# Every GPU check of mosaicflow in one call on a GPU node where mosaicflow and its dependencies
# already import (the wheels installed by run_maps1200.sh, or with pip --target and PYTHONPATH,
# as README.md beside this file shows): the gpu test marker, the GPU inference and denoising
# benchmarks, and maps-1200 end to end with the GPU settings (the default model, then Otsu),
# then with the CPU settings on the same node. Steps are independent: one that fails or runs
# out of time leaves the others' results. Each step's results are packed into OUT as soon as
# it ends (one tarball per step), so a call stopped at its time limit still returns them.
#
#   OUT=/path/to/results bash benchmarks/gpu/device_session.sh
#
# Settings (environment variables):
#   OUT        results (required): env.tar.gz, tests.tar.gz, inference.tar.gz, bench-*.tar.gz
#   WORK       tiles, run stores and logs (default /tmp/mosaicflow-gpu)
#   SCENARIO   the bench scenario (default maps-1200; "tiny" checks the script in seconds)
#   WORKERS    local worker processes of the bench runs (default: one per core)
#   DEADLINE   seconds from the start after which no further step starts (default 540)
#   STEPS      which steps run, in this order: any of "tests inference model otsu denoise cpu"
#              (default all; e.g. STEPS="otsu cpu denoise" finishes what a first call left)
#   REQUIRE_GPU  1 (default) stops at once where mosaicflow sees no GPU; 0 runs what it can
#   PYTHON     the Python with PyTorch and CuPy (default python3)
set -uo pipefail

out="${OUT:?set OUT to the results folder}"
work="${WORK:-/tmp/mosaicflow-gpu}"
scenario="${SCENARIO:-maps-1200}"
workers="${WORKERS:-$(nproc)}"
deadline="${DEADLINE:-540}"
steps=" ${STEPS:-tests inference model otsu denoise cpu} "
wanted() { [[ "$steps" == *" $1 "* ]]; }
py="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
logs="$work/logs"
export PYTHONUNBUFFERED=1
mkdir -p "$out" "$logs"
cd "$repo" || exit 2
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
left() { echo $((deadline - $(elapsed))); }
pack() {  # name, then paths under $work
    local name="$1"
    shift
    tar czf "$out/$name.tar.gz" -C "$work" "$@" 2>/dev/null
}
step() {  # name, cap in seconds, then the command; runs it with at most min(cap, time left)
    local name="$1" cap="$2"
    shift 2
    local limit
    limit=$(left)
    [ "$limit" -gt "$cap" ] && limit=$cap
    if [ "$limit" -lt 20 ]; then
        echo "== $name: skipped, $(elapsed) s gone of $deadline" | tee -a "$logs/steps.txt"
        return 1
    fi
    echo "== $name (at $(elapsed) s, limit $limit s): $*" | tee -a "$logs/steps.txt"
    local s=$(date +%s)
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - s)) s" | tee -a "$logs/steps.txt"
    tail -n 25 "$logs/$name.log"
    return $rc
}

# 1. the node, and whether mosaicflow sees its GPU
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    echo "cores: $(nproc); $(free -g | sed -n 2p)"
    "$py" - <<'PY'
import torch, cupy
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cupy {cupy.__version__}")
from mosaicflow import dispatch
print("mosaicflow sees a GPU:", dispatch.gpu_available())
try:
    import cucim
    import cucim.skimage.filters  # noqa: F401
    print("cuCIM", cucim.__version__)
except Exception as exc:  # registration's GPU path needs it; reported, not fatal here
    print("cuCIM does not import:", repr(exc))
PY
} >"$logs/env.txt" 2>&1
cat "$logs/env.txt"
pack env logs
if [ "${REQUIRE_GPU:-1}" = 1 ] && ! grep -q "sees a GPU: True" "$logs/env.txt"; then
    echo "mosaicflow sees no GPU: stopping"
    exit 3
fi
config=benchmarks/gpu/gpu.yaml
if ! grep -q "^cuCIM " "$logs/env.txt"; then  # no cuCIM: the model on the GPU, the rest on CPU
    printf 'segment:\n  device: auto\n' >"$work/gpu-no-cucim.yaml"
    config="$work/gpu-no-cucim.yaml"
fi

# 2. the scenario's tiles (reused when WORK already holds them), synthesised in the background
#    while the tests and the short benchmarks run (a thread pool)
: >"$logs/synthesis.log"
synth=
if wanted model || wanted otsu || wanted cpu; then
    "$py" -c "
import sys, time
from mosaicflow.bench.scenarios import get, grid_folder
t = time.perf_counter()
grid_folder(get(sys.argv[1]), sys.argv[2])
print(f'synthesis {time.perf_counter() - t:.1f} s')
" "$scenario" "$work/input" >"$logs/synthesis.log" 2>&1 &
    synth=$!
fi

# 3. the gpu test marker; a failure is run again with warnings not turned into errors, to tell
#    a warning from this image's package versions from a wrong result
gpu_tests=(tests/dispatch/test_gpu.py tests/segmentation/test_predict.py tests/segmentation/test_train.py
    tests/stitch/test_register.py)
if wanted tests; then
    if ! step tests-gpu 240 "$py" -m pytest -p no:cacheprovider -m gpu -rA "${gpu_tests[@]}"; then
        step tests-gpu-warnings-allowed 120 "$py" -m pytest -p no:cacheprovider -m gpu -rA \
            -o filterwarnings=default "${gpu_tests[@]}"
    fi
    pack tests logs
fi

# 4. windowed inference of the shipped model on the GPU (runs beside the synthesis)
if wanted inference; then
    step inference 150 "$py" benchmarks/bench_gpu_inference.py --json "$logs/gpu_inference.json"
    pack inference logs
fi

# 5. the scenario end to end: GPU settings with the default model, then with Otsu
[ -n "$synth" ] && wait "$synth"
cat "$logs/synthesis.log"
bench() {  # name, cap, then extra options
    local name="$1" cap="$2"
    shift 2
    step "$name" "$cap" "$py" -c 'import sys; from mosaicflow.cli import main; sys.exit(main())' \
        bench --scenario "$scenario" --data "$work/input" --out "$work/$name" \
        --workers "$workers" --no-naive "$@"
    local rc=$?
    pack "$name" logs "$name/bench.json" "$name/bench.md" "$name/bench.png"
    # the run store (gigabytes, not needed further), only in a folder the benchmark marked as
    # its own (mosaicflow.bench.outputs.MARKER)
    [ -f "$work/$name/.mosaicflow-bench" ] && rm -rf "${work:?}/$name/run.zarr"
    return $rc
}
wanted model && bench bench-gpu-model 240 --config "$config" --model default
wanted otsu && bench bench-gpu-otsu 150 --config "$config"

# 6. the denoisers on CuPy against the CPU, then the CPU settings on this node for comparison
if wanted denoise; then
    step denoise 120 "$py" benchmarks/bench_denoise.py --size 3072 --workers 4 \
        --json "$logs/denoise.json"
    pack denoise logs
fi
wanted cpu && bench bench-cpu-otsu 150
echo "== done at $(elapsed) s"
cat "$logs/synthesis.log" "$logs/steps.txt"
"$py" - "$work" <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("bench-*/bench.json")):
    d = json.loads(f.read_text())
    r = d["run"]
    stages = ", ".join(f"{k} {v['seconds']:.1f}" for k, v in d["stages"].items())
    print(f"{f.parent.name}: {r['wall_s']:.1f} s wall ({r['cluster_start_s']:.1f} start), "
          f"{r['mosaic_mpx']:.0f} Mpx, {r['n_particles']} particles, peak "
          f"{r['peak_worker_rss_mib']:.0f} MiB/worker, {r['n_workers']} workers | {stages}")
PY
