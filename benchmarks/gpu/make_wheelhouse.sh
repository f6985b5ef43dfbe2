#!/usr/bin/env bash
# Fill benchmarks/gpu/wheelhouse/ with the wheels mosaicflow needs on a GPU node whose image
# already holds PyTorch and CuPy (and the CUDA libraries they bring) but none of mosaicflow's
# other dependencies. Runs on a machine that reaches PyPI; the node itself needs no network.
#
#   bash benchmarks/gpu/make_wheelhouse.sh
#
# Settings (environment variables):
#   PYTHON_VERSION  the node's Python, major.minor (default 3.12)
#   CUDA_MAJOR      the CUDA major version of the node's CuPy and PyTorch: 12 or 13 (default 13);
#                   picks cucim-cu${CUDA_MAJOR}
#   EXTRA_SKIP      a regular expression of further package names to leave out because the
#                   node's image already has them (e.g. '^(numpy|scipy|pandas|pyarrow)$'),
#                   to make the wheelhouse smaller
#   PYTHON          the Python that runs pip here (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
house="$here/wheelhouse"
pyver="${PYTHON_VERSION:-3.12}"
cuda="${CUDA_MAJOR:-13}"
python="${PYTHON:-python3}"
extra_skip="${EXTRA_SKIP:-}"

# pip matches manylinux tags exactly: every glibc level up to the node's is listed.
platform_args=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
    manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platform_args+=(--platform "${tag}_x86_64")
done
target_args=(--only-binary=:all: --python-version "$pyver" --implementation cp "${platform_args[@]}")

# What the node's image provides and must not be replaced: PyTorch, CuPy, the CUDA libraries
# and the packages pinned to them. cuCIM's image codec library (nvidia-nvimgcodec) is no part of
# such an image: it is kept.
skip='^(torch|torchvision|torchaudio|triton|cupy|cupy-cuda[0-9x]+|nvidia-(?!nvimgcodec).*|cuda-.*|numba-cuda)$'

rm -rf "$house"
mkdir -p "$house"
echo "== mosaicflow wheel (from $repo)"
# setuptools leaves build/ in the checkout, and a later wheel would take stale modules from it
had_build=0
[ -e "$repo/build" ] && had_build=1
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$house" "$repo"
[ "$had_build" = 1 ] || rm -rf "$repo/build"
wheel="$(ls "$house"/mosaicflow-*.whl)"

echo "== resolving mosaicflow + cucim-cu${cuda} for CPython $pyver, Linux x86_64"
report="$(mktemp)"
scratch="$(mktemp -d)"  # pip asks for a --target with foreign platforms; --dry-run fills none
trap 'rm -rf "$report" "$scratch"' EXIT
"$python" -m pip install --quiet --dry-run --ignore-installed --report "$report" \
    --target "$scratch" "${target_args[@]}" "$wheel" "cucim-cu${cuda}"

"$python" - "$report" "$skip" "$extra_skip" "$house" <<'PY'
import json
import re
import sys

report, skip, extra, house = sys.argv[1:]
keep, left = [], []
for item in json.load(open(report))["install"]:
    name = item["metadata"]["name"].lower().replace("_", "-")
    version = item["metadata"]["version"]
    if name == "mosaicflow":
        continue
    if re.match(skip, name) or (extra and re.match(extra, name)):
        left.append(f"{name}=={version}")
    else:
        keep.append(f"{name}=={version}")
with open(f"{house}/requirements.txt", "w") as fh:
    fh.write("\n".join(sorted(keep)) + "\n")
with open(f"{house}/left-to-the-image.txt", "w") as fh:
    fh.write("\n".join(sorted(left)) + "\n")
print(f"{len(keep)} wheels to fetch; left to the node's image: {', '.join(sorted(left))}")
PY

echo "== downloading"
"$python" -m pip download --quiet --no-deps "${target_args[@]}" --dest "$house" \
    --requirement "$house/requirements.txt"
# installed without their dependencies on the node (CuPy's CUDA toolkit is the image's)
ls "$house" | grep -E '^(cucim_cu|nvidia_nvimgcodec)' | sed 's/-.*//; s/_/-/g' > "$house/gpu-packages.txt"

count="$(ls "$house"/*.whl | wc -l)"
size="$(du -sh "$house" | cut -f1)"
echo "== $house: $count wheels, $size"
