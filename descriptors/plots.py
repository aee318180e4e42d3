"""Figures of the patch benchmarks: ROC and precision-recall curves (Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .evaluate import ArrayLike, average_precision, fpr_at_recall, pr_curve, roc_curve  # noqa: E402

__all__ = ["plot_roc", "plot_pr", "plot_roc_points"]


def plot_roc(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str = "ROC", max_fpr: float = 1.0):
    """One ROC curve per entry ``name -> (distances, labels)``, FPR95 in the legend."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (distances, labels) in curves.items():
        fpr, tpr, _ = roc_curve(distances, labels)
        ax.plot(fpr, tpr, label=f"{name} (FPR95 {100 * fpr_at_recall(distances, labels):.2f}%)")
    ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, max_fpr)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pr(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], title: str = "Precision-recall"):
    """One precision-recall curve per entry ``name -> (distances, labels)``, AP in the legend."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (distances, labels) in curves.items():
        precision, recall, _ = pr_curve(distances, labels)
        ax.plot(recall, precision, label=f"{name} (AP {100 * average_precision(distances, labels):.2f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_roc_points(results: dict[str, dict], title: str = "ROC (validation pairs)", earlier: list[dict] | None = None):
    """ROC curves of ``{name: {"fpr", "tpr", "fpr95"}}`` with the 95% recall line (Agg figure);
    ``earlier`` curves (e.g. previous epochs) are drawn thin and grey underneath."""
    figure, axis = plt.subplots(figsize=(5, 4))
    for index, result in enumerate(earlier or []):
        axis.plot(result["fpr"], result["tpr"], color="grey", linewidth=0.6, alpha=0.3 + 0.5 * index / max(len(earlier), 1))
    for name, result in results.items():
        axis.plot(np.asarray(result["fpr"]), np.asarray(result["tpr"]), label=f"{name} (FPR95 {100 * result['fpr95']:.2f}%)")
    axis.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate (recall)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_title(title)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure
