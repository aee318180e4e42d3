"""FPR at a recall level (HardNet's ``ErrorRateAt95Recall``) and ROC points, for the modules.

Kept behind these two functions so the LightningModules can later point at
:mod:`descriptors.metrics` without touching their code.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def fpr_at_recall(distances, labels, recall: float = 0.95) -> float:
    """False-positive rate at the distance threshold that first reaches ``recall`` of the positives.

    Exactly HardNet's ``ErrorRateAt95Recall``: sort ascending by distance (lower = more similar;
    pass ``-score`` for similarity scores), ``thr_idx = argmax(cumsum(labels) >= recall * P)``,
    FP = negatives before ``thr_idx``, TN = negatives from ``thr_idx`` on, result FP / (FP + TN).

    Shape:
        distances, labels: (N,) -> float in [0, 1]
    """
    distances, labels = _as_numpy(distances), _as_numpy(labels)
    if distances.shape != labels.shape:
        raise ValueError(f"distances and labels differ in length: {distances.shape} vs {labels.shape}")
    positive = labels > 0.5
    if not positive.any() or positive.all():
        raise ValueError("fpr_at_recall needs both positive and negative pairs")
    if np.isnan(distances).any():
        raise ValueError("fpr_at_recall got NaN distances")
    sorted_positive = positive[np.argsort(distances, kind="stable")]
    threshold_index = int(np.argmax(np.cumsum(sorted_positive) >= recall * positive.sum()))
    false_positives = int(np.sum(~sorted_positive[:threshold_index]))
    true_negatives = int(np.sum(~sorted_positive[threshold_index:]))
    return false_positives / (false_positives + true_negatives)


def roc_points(distances, labels) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) when accepting pairs with distance <= each observed threshold.

    Tied distances are accepted together (one point per distinct value), starting at (0, 0).

    Shape:
        distances, labels: (N,) -> fpr (K,), tpr (K,)
    """
    distances, labels = _as_numpy(distances), _as_numpy(labels) > 0.5
    order = np.argsort(distances, kind="stable")
    distances, labels = distances[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(distances)), len(distances) - 1]
    true_positives = np.cumsum(labels)[last_of_value]
    false_positives = np.cumsum(~labels)[last_of_value]
    tpr = np.r_[0.0, true_positives / max(int(labels.sum()), 1)]
    fpr = np.r_[0.0, false_positives / max(int((~labels).sum()), 1)]
    return fpr, tpr
