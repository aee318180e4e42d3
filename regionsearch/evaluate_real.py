"""The peers' protocol on real template/search pairs (BBS105; as DDIS, QATM and DIM evaluate).

The template is image A cut at the rounded box (:meth:`regionsearch.data.bbs.BBSPair.template`);
a method returns one box in image B; ``success(t)`` = share of pairs with IoU > t for
t = 0, 0.05, ..., 1; AUC = mean of the first 20 values (t = 0 .. 0.95, the DDIS script's
``mean(curve(1:end-1))``); also success at IoU > 0.5 and the mean IoU. Imports no model:
a method is any callable ``(template, image_b) -> MethodResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from regionsearch.evaluate import IOU_THRESHOLDS, box_iou, success_auc, success_curve

__all__ = ["MethodResult", "PairOutcome", "real_pair_ious", "run_method", "summarize_real"]


@dataclass
class MethodResult:
    """A method's answer for one pair: its box in image B and the candidate windows it scored."""

    box: np.ndarray  # (4,) float64 (x1, y1, x2, y2) in image B's pixels
    windows: int


@dataclass
class PairOutcome:
    """One pair's box, IoU with the ground truth, windows and wall-clock time."""

    box: np.ndarray
    iou: float
    windows: int
    seconds: float


def summarize_real(ious: Sequence[float]) -> dict:
    """``auc`` (mean success over t = 0 .. 0.95), ``success_rate`` (IoU > 0.5), ``mean_iou``,
    ``curve`` (success at the 21 thresholds of :data:`IOU_THRESHOLDS`)."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise ValueError("no IoU to summarise: the method ran on no pair")
    curve = success_curve(ious)
    return {
        "auc": success_auc(ious),
        "success_rate": float((ious > 0.5).mean()),
        "mean_iou": float(ious.mean()),
        "curve": curve.tolist(),
        "thresholds": IOU_THRESHOLDS.tolist(),
    }


def real_pair_ious(boxes: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """IoU of each predicted ``(N, 4)`` box with its ground truth ``(N, 4)``."""
    return box_iou(np.asarray(boxes, dtype=np.float64), np.asarray(truths, dtype=np.float64))


def run_method(method: Callable[[np.ndarray, np.ndarray], MethodResult], pairs) -> list[PairOutcome]:
    """Run ``method(template, image_b)`` on every pair (batch 1), timing each call; the template
    is cut from image A at the rounded box. IoU is against the pair's ground-truth box in B."""
    outcomes = []
    for pair in pairs:
        template = pair.template()
        start = time.perf_counter()
        result = method(template, pair.image_b)
        seconds = time.perf_counter() - start
        box = np.asarray(result.box, dtype=np.float64)
        iou = float(real_pair_ious(box[None], pair.box_b[None])[0])
        outcomes.append(PairOutcome(box, iou, int(result.windows), seconds))
    return outcomes
