"""A second, finer look around the first look's best placements (coarse to fine).

The search path's first look correlates the query with the whole reference at one coarse scale;
on large photos with small templates its cells are a template wide, so the best cell is often
near the target but off by a cell, or a look-alike wins. The second look takes the first look's
``candidates`` best local maxima and correlates the query again, at a finer scale
(``view`` px on the reference's long side), only in a neighbourhood of ``radius`` cells around
each: the same encoder and projection as the first look, on a small crop of the reference. Its
best placement over all candidates becomes window 1 (each candidate's best is kept for a re-ranking,
``SearchPathMethod(rerank=...)``). Every placement it scores counts as a window, so the budget of
windows stays honest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def local_maxima(logits: torch.Tensor, rows: int, columns: int, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest cells that are maxima of their 3x3 neighbourhood.

    Shape:
        logits: (rows * columns,) -> (<= count,) flat cell indices, best first
    """
    grid = logits.view(1, 1, rows, columns)
    peaks = grid == F.max_pool2d(grid, 3, stride=1, padding=1)
    scores = logits.masked_fill(~peaks.flatten(), float("-inf"))
    order = scores.argsort(descending=True)[:count]
    return order[torch.isfinite(scores[order])]


def resized(image: torch.Tensor, size: tuple[int, int], factor: float) -> torch.Tensor:
    """``image`` resampled to ``size`` by ``factor``: bilinear, antialiased when shrinking (every
    look of the search path resamples this way)."""
    return F.interpolate(image, size=size, mode="bilinear", antialias=factor < 1, align_corners=False)


def second_look_candidates(
    encoder,
    projection,
    reference: torch.Tensor,
    query: torch.Tensor,
    reference_hw: tuple[int, int],
    scale: float,
    candidate_centres: torch.Tensor,
    radius: int,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The best placement of ``query`` near each candidate centre, at ``scale`` (view px per
    reference px): its centre (reference px) and score (the mean cosine over the template's cells,
    in [-1, 1]) per candidate, and how many placements were scored (2 * radius + 1 a side per
    candidate, one more where the crop's size rounds up). Where the crop cannot hold the template,
    the first candidate comes back unscored (score 0, no placements).

    Shape:
        reference: (1, C, H, W), query: (1, C, h, w) (both unpadded), candidate_centres: (K, 2)
        (x, y) -> centres (K, 2), scores (K,), placements
    """
    stride = encoder.map_stride
    height, width = reference_hw
    qh, qw = query.shape[-2:]
    size = (max(stride, round(qh * scale)), max(stride, round(qw * scale)))
    template_map = F.normalize(projection(encoder.feature_map(resized(query, size, scale))), dim=1)
    k, kw = template_map.shape[-2:]
    margin = radius * stride / scale  # reference px
    # one crop size for every candidate (shifted inside the reference, not cut at its border), so
    # that all crops go through the backbone as one batch
    crop_w, crop_h = min(width, math.ceil(qw + 2 * margin)), min(height, math.ceil(qh + 2 * margin))
    out_h, out_w = max(size[0], round(crop_h * scale)), max(size[1], round(crop_w * scale))
    origins = [
        (min(max(0, round(cx - crop_w / 2)), width - crop_w), min(max(0, round(cy - crop_h / 2)), height - crop_h))
        for cx, cy in candidate_centres.tolist()
    ]
    crops = torch.cat([reference[..., y : y + crop_h, x : x + crop_w] for x, y in origins])
    crop_maps = F.normalize(projection(encoder.feature_map(resized(crops, (out_h, out_w), scale))), dim=1)
    if crop_maps.shape[-2] < k or crop_maps.shape[-1] < kw:
        return candidate_centres[:1], candidate_centres.new_zeros(1), 0
    # valid placements only: a template cell never falls on a crop's zero padding
    scores = F.conv2d(crop_maps, template_map)[:, 0]  # (K, rows, columns)
    best, flat = scores.flatten(1).max(dim=1)  # the first best placement of each candidate
    row, column = flat // scores.shape[-1], flat % scores.shape[-1]
    # placement (i, j) puts the template's first cell on cell (i, j): its centre in crop px is
    # stride * (i + k / 2), mapped back through the crop's resize factors
    origin = candidate_centres.new_tensor(origins)
    x = origin[:, 0] + stride * (column + kw / 2) * crop_w / out_w
    y = origin[:, 1] + stride * (row + k / 2) * crop_h / out_h
    return torch.stack([x, y], dim=1), best / (k * kw), scores.numel()
