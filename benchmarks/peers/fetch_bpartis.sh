#!/usr/bin/env bash
# Fetch BPartIS (Yildirim & Cole 2021): the imagedataextractor 2.0.4 wheel, unpacked, for
# benchmarks/peers/bpartis.py. Only the wheel itself (no dependencies: its OCR stack is not
# needed for segmentation). Idempotent: an existing wheel or unpacked tree is kept.
#
#     benchmarks/peers/fetch_bpartis.sh [DIR]    # default DIR /work/scratch/peers
#
# Leaves DIR/imagedataextractor-2.0.4-py3-none-any.whl and DIR/imagedataextractor-2.0.4/
# (holding imagedataextractor/segment/*.py and imagedataextractor/models/seg-model.pt).
set -euo pipefail

DIR="${1:-/work/scratch/peers}"
VERSION="2.0.4"
WHEEL="imagedataextractor-${VERSION}-py3-none-any.whl"
DEST="${DIR}/imagedataextractor-${VERSION}"
# sha256 of the wheel as fetched for the benchmark: a later fetch must be the same code and weights.
SHA256="f77270e47fe1994f663d204fad923afa7719b635030605483668569306ea304a"

mkdir -p "${DIR}"
if [[ ! -f "${DIR}/${WHEEL}" ]]; then
    python -m pip download --no-deps "imagedataextractor==${VERSION}" -d "${DIR}"
fi
echo "${SHA256}  ${DIR}/${WHEEL}" | sha256sum --check --quiet - || {
    echo "fetch_bpartis.sh: ${DIR}/${WHEEL}: sha256 differs from ${SHA256}" >&2
    exit 1
}
if [[ ! -f "${DEST}/imagedataextractor/models/seg-model.pt" ]]; then
    rm -rf "${DEST}.partial"
    python -m zipfile -e "${DIR}/${WHEEL}" "${DEST}.partial"
    rm -rf "${DEST}"
    mv "${DEST}.partial" "${DEST}"
fi
echo "BPartIS unpacked in ${DEST}"
