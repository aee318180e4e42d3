"""The official evaluation protocols of patch descriptors (imports no model).

- Patch pairs: FPR at 95% recall (HardNet's definition), ROC / PR curves, AUC and AP, and
  distances between descriptors (L2, Hamming for binary descriptors).
- HPatches: verification, matching and retrieval (:func:`evaluate_hpatches`, implemented in
  :mod:`descriptors.evaluation.hpatches`, cross-checked against the official logic in
  :mod:`descriptors.evaluation.hpatches_official`).

Convention: ``distances`` are "lower = more similar"; for similarity scores pass ``-score``.
``labels`` are 1 for a matching pair (same 3D point), 0 otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from .evaluation.hpatches import (
    HPatchesResults,
    describe_sequences,
    evaluate_hpatches,
    evaluate_matching,
    evaluate_retrieval,
    evaluate_verification,
    matching_map_by_sequence,
    summarize,
    verification_distances,
)

__all__ = [
    "fpr_at_recall",
    "roc_curve",
    "roc_points",
    "pr_curve",
    "roc_auc",
    "average_precision",
    "pair_distances",
    "to_bits",
    "hamming_pair_distances",
    "hamming_cdist",
    "used_patches",
    "indexed_pair_distances",
    "pairs_fpr95",
    "HPatchesResults",
    "describe_sequences",
    "matching_map_by_sequence",
    "evaluate_hpatches",
    "evaluate_matching",
    "evaluate_retrieval",
    "evaluate_verification",
    "summarize",
    "verification_distances",
]

ArrayLike = np.ndarray | torch.Tensor | list


def _numpy(values: ArrayLike, dtype=np.float64) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


def _check(distances: np.ndarray, labels: np.ndarray) -> None:
    if distances.shape != labels.shape:
        raise ValueError(f"distances {distances.shape} and labels {labels.shape} differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (non-matching) or 1 (matching)")


def fpr_at_recall(distances: ArrayLike, labels: ArrayLike, recall: float = 0.95) -> float:
    """False-positive rate at the distance threshold that first reaches ``recall``.

    Exactly HardNet's ``ErrorRateAt95Recall``: sort pairs by ascending distance, take the first
    index where the cumulative positive count reaches ``recall * #positives``; FP = negatives
    before that index, TN = negatives from it on; return FP / (FP + TN). The sort is stable, so
    ties keep the input order (numpy's default quicksort leaves tied order undefined).
    """
    d = _numpy(distances)
    y = _numpy(labels, np.int64)
    _check(d, y)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("fpr_at_recall needs both matching and non-matching pairs")
    y = y[np.argsort(d, kind="stable")]
    threshold_index = int(np.argmax(np.cumsum(y) >= recall * np.sum(y)))
    false_positives = int(np.sum(y[:threshold_index] == 0))
    true_negatives = int(np.sum(y[threshold_index:] == 0))
    return false_positives / (false_positives + true_negatives)


def roc_points(distances, labels) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) when accepting pairs with distance <= each observed threshold.

    Pure numpy and tolerant of infinite distances (a diverged network's pairs), unlike
    :func:`roc_curve`, so the training modules use it every validation epoch.

    Tied distances are accepted together (one point per distinct value), starting at (0, 0).

    Shape:
        distances, labels: (N,) -> fpr (K,), tpr (K,)
    """
    distances, labels = _numpy(distances), _numpy(labels) > 0.5
    order = np.argsort(distances, kind="stable")
    distances, labels = distances[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(distances)), len(distances) - 1]
    true_positives = np.cumsum(labels)[last_of_value]
    false_positives = np.cumsum(~labels)[last_of_value]
    tpr = np.r_[0.0, true_positives / max(int(labels.sum()), 1)]
    fpr = np.r_[0.0, false_positives / max(int((~labels).sum()), 1)]
    return fpr, tpr


def roc_curve(distances: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` as :func:`sklearn.metrics.roc_curve` on ``-distances``
    (thresholds are distances: a pair is called matching when its distance <= threshold)."""
    d, y = _numpy(distances), _numpy(labels, np.int64)
    _check(d, y)
    fpr, tpr, thresholds = sk_roc_curve(y, -d, drop_intermediate=False)
    return fpr, tpr, -thresholds


def pr_curve(distances: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` as :func:`sklearn.metrics.precision_recall_curve`."""
    d, y = _numpy(distances), _numpy(labels, np.int64)
    _check(d, y)
    precision, recall, thresholds = precision_recall_curve(y, -d)
    return precision, recall, -thresholds


def roc_auc(distances: ArrayLike, labels: ArrayLike) -> float:
    d, y = _numpy(distances), _numpy(labels, np.int64)
    _check(d, y)
    return float(roc_auc_score(y, -d))


def average_precision(distances: ArrayLike, labels: ArrayLike) -> float:
    d, y = _numpy(distances), _numpy(labels, np.int64)
    _check(d, y)
    return float(average_precision_score(y, -d))


def pair_distances(descriptors1: torch.Tensor, descriptors2: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Distance of each row pair ``(B, D), (B, D) -> (B,)``: ``l2``, ``l1`` or ``hamming``."""
    if descriptors1.shape != descriptors2.shape:
        raise ValueError(f"descriptor shapes differ: {tuple(descriptors1.shape)} vs {tuple(descriptors2.shape)}")
    if metric == "l2":
        return (descriptors1 - descriptors2).pow(2).sum(-1).sqrt()
    if metric == "l1":
        return (descriptors1 - descriptors2).abs().sum(-1)
    if metric == "hamming":
        return hamming_pair_distances(descriptors1, descriptors2)
    raise ValueError(f"unknown metric {metric!r}; expected l2, l1 or hamming")


def to_bits(descriptors: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Binary descriptors as a bool tensor ``(N, bits)``.

    Accepts ±1 (or any real values: bit = value > 0, i.e. ``sign``), 0/1 values, or uint8
    packed bytes (8 bits per byte, numpy ``packbits`` order, as ORB/BRIEF store them).
    """
    tensor = torch.as_tensor(descriptors)
    if tensor.dtype == torch.uint8 and tensor.numel() and int(tensor.max()) > 1:
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=tensor.device)
        return ((tensor.unsqueeze(-1) >> shifts) & 1).bool().flatten(-2)
    if tensor.dtype == torch.bool:
        return tensor
    return tensor > 0


def hamming_pair_distances(descriptors1, descriptors2) -> torch.Tensor:
    """Number of differing bits of each row pair (see :func:`to_bits` for the formats)."""
    bits1, bits2 = to_bits(descriptors1), to_bits(descriptors2)
    if bits1.shape != bits2.shape:
        raise ValueError(f"bit shapes differ: {tuple(bits1.shape)} vs {tuple(bits2.shape)}")
    return (bits1 ^ bits2).sum(-1).to(torch.float32)


def hamming_cdist(descriptors1, descriptors2) -> torch.Tensor:
    """All-pairs Hamming distances ``(N, bits), (M, bits) -> (N, M)``, by one matmul:
    for bits in {0,1}, hamming = |a| + |b| - 2 a.b."""
    bits1 = to_bits(descriptors1).to(torch.float32)
    bits2 = to_bits(descriptors2).to(torch.float32)
    if bits1.shape[-1] != bits2.shape[-1]:
        raise ValueError(f"bit lengths differ: {bits1.shape[-1]} vs {bits2.shape[-1]}")
    return bits1.sum(-1, keepdim=True) + bits2.sum(-1) - 2 * bits1 @ bits2.T


def used_patches(patches: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The patches ``[i, j, label]`` pairs use, each once, and the pairs as ``(M, 2)`` indices into
    them (a training pool holds hundreds of thousands of patches; the pairs use a few thousand)."""
    used, index = np.unique(pairs[:, :2], return_inverse=True)
    return patches[used], index.reshape(-1, 2)


def indexed_pair_distances(descriptors: torch.Tensor, pairs: np.ndarray, binary: bool) -> np.ndarray:
    """Distance of every ``(i, j)`` row of ``pairs`` between rows of ``descriptors``: L2, or with
    ``binary`` the Hamming distance of +-1 codes."""
    a, b = descriptors[pairs[:, 0]].float(), descriptors[pairs[:, 1]].float()
    if binary:
        return ((a.shape[1] - (a * b).sum(1)) / 2).numpy()
    return (a - b).norm(dim=1).numpy()


def pairs_fpr95(describe, patches: np.ndarray, pairs: np.ndarray, binary: bool = False) -> float:
    """FPR95 of ``[i, j, label]`` pairs into ``patches``, each patch a pair uses described once
    by ``describe`` (uint8 patches -> ``(n, D)`` array or tensor)."""
    pool, index = used_patches(patches, pairs)
    described = torch.as_tensor(np.asarray(describe(pool), dtype=np.float32))
    return float(fpr_at_recall(indexed_pair_distances(described, index, binary), pairs[:, 2]))
