#!/usr/bin/env bash
# On a GPU node: the two fine-tuning steps of docs/INSTANCES.md ("Training with worker processes
# on a GPU") from the shipped weights, both validated on the shipped model's own 37 images
# (--seed 0): "tuned" (lr 5e-4, 41 epochs), then "tuned2" from it (lr 2.5e-4, 24 epochs).
# Then judge them here with benchmarks/bench_select.py. The EMPS training split must be unpacked
# first (benchmarks/gpu/pack_emps.py unpack), mosaicflow importable (README.md beside this file).
#
#   OUT=/path/to/results bash benchmarks/gpu/train_node.sh
#
# Settings (environment variables):
#   OUT       results (required): STAGE.partNN (the checkpoint in 15 MB pieces, to join with
#             cat), STAGE.json (the run's record), STAGE.log
#   EMPS      the unpacked training split (default /tmp/emps)
#   WORK      checkpoints and logs (default /tmp/mosaicflow-train)
#   STAGES    which steps, in order (default "tuned tuned2")
#   TUNED     start tuned2 from this checkpoint instead of WORK/tuned.safetensors
#   LOADERS   crop workers (default: cores - 2)
#   DEADLINE  seconds from the start by which both steps end (default 540); each step gets
#             --max-minutes from what is left, less 60 s for the sweep and the writing
#   PYTHON    the Python with PyTorch (default python3)
#   EXTRA     more `mosaicflow train` options, after each step's own (the last one given wins;
#             e.g. EXTRA="--epochs 1 --steps-per-epoch 2 --batch 2" tries the script anywhere)
set -uo pipefail

out="${OUT:?set OUT to the results folder}"
emps="${EMPS:-/tmp/emps}"
work="${WORK:-/tmp/mosaicflow-train}"
stages=" ${STAGES:-tuned tuned2} "
loaders="${LOADERS:-$(($(nproc) - 2))}"
deadline="${DEADLINE:-540}"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
mkdir -p "$out" "$work"
t0=$(date +%s)
[ -f "$emps/train.csv" ] || { echo "no $emps/train.csv: unpack the EMPS split first"; exit 2; }
common=(--images "$emps/images" --masks "$emps/segmaps" --names "$emps/train.csv"
    --synthetic 100 --supported 0.5 --invert 0.5 --batch 16 --steps-per-epoch 150 --seed 0
    --loaders "$loaders" --threads 2)

stage() {  # name, then the options of its own
    local name="$1"
    shift
    local left=$((deadline - ($(date +%s) - t0) - 60))
    if [ "$left" -lt 60 ]; then
        echo "== $name: skipped, $left s left"
        return 1
    fi
    local minutes
    minutes=$(awk -v s="$left" 'BEGIN { printf "%.2f", s / 60 }')
    echo "== $name: --max-minutes $minutes, $loaders loaders"
    "$py" -c 'import sys; from mosaicflow.cli import main; sys.exit(main())' train \
        "${common[@]}" "$@" ${EXTRA:-} --max-minutes "$minutes" --out "$work/$name.safetensors" \
        --report "$work/$name.json" 2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it" >"$work/$name.log"
    local rc=${PIPESTATUS[0]}
    tail -n 4 "$work/$name.log"
    if [ -f "$work/$name.safetensors" ]; then
        split -b 15M -d "$work/$name.safetensors" "$out/$name.part"
    fi
    cp "$work/$name.json" "$work/$name.log" "$out/" 2>/dev/null
    echo "== $name: exit $rc at $(($(date +%s) - t0)) s"
    return "$rc"
}

if [[ "$stages" == *" tuned "* ]]; then
    stage tuned --init default --lr 5e-4 --epochs 41 --patience 41
fi
if [[ "$stages" == *" tuned2 "* ]]; then
    stage tuned2 --init "${TUNED:-$work/tuned.safetensors}" --lr 2.5e-4 --epochs 24 --patience 24
fi
ls -la "$out"
