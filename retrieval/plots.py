"""Figures for retrieval results (matplotlib, Agg-safe: no pyplot state is kept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .images import IMAGENET_MEAN, IMAGENET_STD, load_image

__all__ = ["denormalize", "plot_rankings"]

_COLOURS = {"ok": "tab:green", "junk": "tab:gray", "neg": "tab:red"}


def denormalize(image: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised ``(3, H, W)`` -> ``(H, W, 3)`` floats in [0, 1] for imshow."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_rankings(
    queries: Sequence[Path],
    query_boxes: Sequence[Sequence[float] | None],
    database: Sequence[Path],
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    n_queries: int = 4,
    top: int = 8,
    image_size: int = 128,
):
    """Each row: a query crop, then its ``top`` results framed green (positive), grey
    (junk) or red (negative). ``ranks`` is ``(n_db, n_q)`` as in :mod:`retrieval.evaluate`;
    for revisited sets pass a Medium/Easy/Hard ``gnd`` from ``revisited_gnd``.
    Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    n_queries = min(n_queries, len(queries))
    top = min(top, ranks.shape[0])
    fig = Figure(figsize=(1.6 * (top + 1), 1.7 * max(n_queries, 1)))
    axes = fig.subplots(max(n_queries, 1), top + 1, squeeze=False)
    for row in range(n_queries):
        query = load_image(queries[row], query_boxes[row], image_size)
        axes[row, 0].imshow(denormalize(query))
        axes[row, 0].set_title(f"query {row}", fontsize=7)
        ok = set(np.asarray(gnd[row]["ok"]).tolist())
        junk = set(np.asarray(gnd[row].get("junk", ())).tolist())
        for col in range(top):
            index = int(ranks[col, row])
            kind = "ok" if index in ok else "junk" if index in junk else "neg"
            ax = axes[row, col + 1]
            ax.imshow(denormalize(load_image(database[index], None, image_size)))
            ax.set_title(f"#{col + 1} ({index})", fontsize=6)
            for spine in ax.spines.values():
                spine.set_edgecolor(_COLOURS[kind])
                spine.set_linewidth(3)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
