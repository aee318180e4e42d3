"""Figures for retrieval results (matplotlib, Agg-safe: no pyplot state is kept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .data.images import IMAGENET_MEAN, IMAGENET_STD, load_image
from .nets.attention import RegionalAttentionNet
from .pooling import rmac_regions

__all__ = ["denormalize", "plot_rankings", "plot_region_attention", "region_weight_map"]

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


def region_weight_map(regions: torch.Tensor, weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per feature cell, the mean attention weight of the grid regions covering it.

    Shape:
        regions (R, 4) cells, weights (R,) -> (height, width)
    """
    total = weights.new_zeros(height, width)
    count = weights.new_zeros(height, width)
    for (x0, y0, x1, y1), weight in zip(regions.tolist(), weights.tolist()):
        total[y0:y1, x0:x1] += weight
        count[y0:y1, x0:x1] += 1
    return total / count.clamp(min=1)


def plot_region_attention(net: RegionalAttentionNet, images: torch.Tensor, max_images: int = 4):
    """Images with the attention over the R-MAC grid as a heat map (mean weight per cell).

    ``images`` are normalised with the backbone's mean/std; returns a matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = images[:max_images]
    with torch.no_grad():
        feature_map = net.backbone(images)
        _, weights = net.regions(feature_map)
    grid = rmac_regions(feature_map.shape[-2], feature_map.shape[-1], net.levels, net.overlap)
    mean = images.new_tensor(net.backbone.mean).view(3, 1, 1)
    std = images.new_tensor(net.backbone.std).view(3, 1, 1)
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3), squeeze=False)
    for ax, image, image_weights in zip(axes[0], images, weights):
        rgb = (image * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        heat = region_weight_map(grid, image_weights.cpu(), feature_map.shape[-2], feature_map.shape[-1])
        ax.imshow(rgb)
        ax.imshow(heat.numpy(), cmap="jet", alpha=0.4, extent=(0, rgb.shape[1], rgb.shape[0], 0), interpolation="nearest")
        ax.set_title(f"weights {image_weights.min():.2f}..{image_weights.max():.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig
