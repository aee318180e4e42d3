"""Figures of the real-photo benchmark: success curves (the BBS/DDIS papers' style), time per
query against AUC, and time per query against the reference size."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_success_curves(rows: list[dict], path: Path, title: str) -> None:
    """Success rate against the IoU threshold, one line per method, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in sorted(rows, key=lambda r: -r["auc"]):
        ax.plot(row["thresholds"], row["success_curve"], label=f"{row['method']} [{row['auc']:.3f}]")
    ax.set(xlabel="overlap threshold (IoU >)", ylabel="success rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="method [AUC]")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_vs_auc(rows: list[dict], path: Path, title: str) -> None:
    """Milliseconds per query (log scale) against AUC, one point per method."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        ax.scatter(row["ms_per_query"], row["auc"])
        ax.annotate(row["method"], (row["ms_per_query"], row["auc"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="ms per query (batch 1)", ylabel="AUC", title=title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_vs_size(rows: list[dict], path: Path, title: str) -> None:
    """Milliseconds per query against the reference's long side (log-log), one line per method."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["long_side"], r["ms_per_query"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set(xscale="log", yscale="log", xlabel="reference long side (px)", ylabel="ms per query", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
