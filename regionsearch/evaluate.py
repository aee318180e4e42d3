"""The region-search protocol: box geometry, IoU, the success rule, curve and AUC, and
how a matcher is scored pair by pair. Imports no model: matchers come in as callables.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates of the reference
image: the pixel with integer index ``(r, c)`` covers ``[c, c+1) x [r, r+1)``,
so a 28x28 digit pasted at column 5, row 7 has the box ``(5, 7, 33, 35)``.
All functions accept numpy arrays or torch tensors of shape ``(..., 4)``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of ``(..., 4)`` boxes (zero for degenerate boxes)."""
    width = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    height = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return width * height


def box_iou(boxes_a, boxes_b):
    """Element-wise IoU of two broadcastable ``(..., 4)`` box arrays.

    Returns the same type as the input (numpy in, numpy out).
    """
    as_numpy = isinstance(boxes_a, np.ndarray) or isinstance(boxes_b, np.ndarray)
    a = torch.as_tensor(np.asarray(boxes_a) if as_numpy else boxes_a, dtype=torch.float64)
    b = torch.as_tensor(np.asarray(boxes_b) if as_numpy else boxes_b, dtype=torch.float64)
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"boxes must have a last dimension of 4, got {tuple(a.shape)} and {tuple(b.shape)}")
    left = torch.maximum(a[..., 0], b[..., 0])
    top = torch.maximum(a[..., 1], b[..., 1])
    right = torch.minimum(a[..., 2], b[..., 2])
    bottom = torch.minimum(a[..., 3], b[..., 3])
    inter = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    union = box_area(a) + box_area(b) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
    if as_numpy:
        return iou.numpy()
    return iou.to(boxes_a.dtype if torch.is_floating_point(boxes_a) else torch.float32)


def success(iou, threshold: float = 0.5):
    """A match succeeds when IoU is strictly greater than ``threshold`` (the paper's rule)."""
    return iou > threshold


IOU_THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def success_curve(ious, thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """Fraction of pairs whose IoU exceeds each threshold (the BBS/DDIS success plot)."""
    ious = np.asarray(ious, dtype=np.float64).reshape(-1, 1)
    return (ious > np.asarray(thresholds, dtype=np.float64).reshape(1, -1)).mean(axis=0)


def success_auc(ious, thresholds=IOU_THRESHOLDS) -> float:
    """Area under the success curve as the DDIS benchmark computes it: mean(curve[:-1])."""
    curve = success_curve(ious, thresholds)
    return float(curve[:-1].mean())


def summarize_ious(path_ious: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics from the IoU of every window on each path, ``(N, T+1)``; the last column is the answer."""
    final = path_ious[:, -1]
    return {
        "success_rate": float((final > threshold).mean()),
        "mean_iou": float(final.mean()),
        "auc": success_auc(final),
        "curve": success_curve(final),
        "success_per_step": (path_ious > threshold).mean(axis=0),
        "n_pairs": int(final.shape[0]),
    }


def prior_box_ious(train_boxes: torch.Tensor, test_boxes: torch.Tensor) -> np.ndarray:
    """IoU of the median training box, predicted for every test pair without looking at
    either image: the floor any matcher must beat (logo boxes are large and central)."""
    prior = train_boxes.median(dim=0).values.double()
    return box_iou(prior.expand_as(test_boxes), test_boxes.double()).numpy()


def evaluate_matcher(name: str, matcher, pairs, indices: np.ndarray, pair_kwargs: Callable[[int], dict] | None = None, **kwargs) -> dict:
    """Run an exhaustive matcher (a baseline or :class:`ExhaustiveCNNMatcher`) pair by pair on
    uint8 ``pairs``: returns the IoUs, the median ms per query and the mean windows per query.
    ``pair_kwargs(i)`` adds pair ``i``'s own keyword arguments (e.g. its template sizes)."""
    ious, times, windows = [], [], []
    for i in tqdm(indices, desc=f"  {name}", leave=False, mininterval=2):
        query = _to_hwc(pairs.queries[i])
        reference = _to_hwc(pairs.references[i])
        extra = pair_kwargs(int(i)) if pair_kwargs is not None else {}
        start = time.perf_counter()
        result = matcher(query, reference, **kwargs, **extra)
        times.append((time.perf_counter() - start) * 1000)
        ious.append(float(box_iou(np.asarray(result.box, dtype=np.float64), pairs.boxes[i].double().numpy())))
        windows.append(result.windows)
    return {"ious": np.array(ious), "ms_per_query": statistics.median(times), "windows_per_query": float(np.mean(windows))}


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    array = image.numpy()
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def center_size_to_corners(center_size: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = center_size.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def corners_to_center_size(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


# --------------------------------------------------------------------------- real template/search pairs
# The peers' protocol on BBS105 (as DDIS, QATM and DIM evaluate): the template is image A cut at
# the rounded box (:meth:`regionsearch.data.bbs.BBSPair.template`); a method returns one box in B;
# success(t) for t = 0, 0.05, ..., 1; AUC = mean of the first 20 values (the DDIS script's
# ``mean(curve(1:end-1))``). A method is any callable ``(template, image_b) -> MethodResult``.


@dataclass
class MethodResult:
    """A method's answer for one pair: its box in image B and the candidate windows it scored."""

    box: np.ndarray  # (4,) float64 (x1, y1, x2, y2) in image B's pixels
    windows: int
    score: float | None = None  # the method's own score of the box, where it reports one


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
    return run_methods({"method": method}, pairs)["method"]


def run_methods(methods: dict[str, Callable[[np.ndarray, np.ndarray], MethodResult]], pairs) -> dict[str, list[PairOutcome]]:
    """:func:`run_method` for several methods, interleaved: every pair is run by each method in
    turn, so that a load that changes during the run (a shared machine) weighs on all of them
    alike and their time ratios stay fair."""
    outcomes: dict[str, list[PairOutcome]] = {name: [] for name in methods}
    for pair in pairs:
        template = pair.template()
        for name, method in methods.items():
            start = time.perf_counter()
            result = method(template, pair.image_b)
            seconds = time.perf_counter() - start
            box = np.asarray(result.box, dtype=np.float64)
            iou = float(real_pair_ious(box[None], pair.box_b[None])[0])
            outcomes[name].append(PairOutcome(box, iou, int(result.windows), seconds))
    return outcomes
