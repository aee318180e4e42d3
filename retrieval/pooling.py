"""Global pooling of convolutional feature maps into image descriptors (cirtorch style).

Pure functions on ``(B, C, H, W)`` maps with thin ``nn.Module`` wrappers. The functions return
unnormalised ``(B, C)`` vectors except where the method itself normalises (R-MAC); the network
(:class:`retrieval.nets.retrieval_net.RetrievalNet`) applies the final L2.

- :func:`mac` / :func:`spoc` / :func:`gem`: max, sum (optionally with the Gaussian centring
  prior of Babenko & Lempitsky, as PyRetri), generalised mean (Radenovic et al.).
- :func:`rmac_regions`: the region grid of Tolias et al. (``rmac_regionvec_act.m``, ported
  line for line by cirtorch), :func:`rmac`: per-region MAC, L2, optional per-region whitening,
  sum, L2.
- :func:`integral_tables` / :func:`integral_region_pool`: seed 004's approximate integral
  max-pooling: ``(sum_R x^a)^(1/a)`` read from summed-area tables, so every region costs O(1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_pool

EPS = 1e-6


def _check_map(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a feature map (B, C, H, W), got shape {tuple(x.shape)}")


def l2n(x: torch.Tensor, dim: int = -1, eps: float = EPS) -> torch.Tensor:
    """``x / (||x|| + eps)`` along ``dim`` (cirtorch's ``l2n``)."""
    return x / (x.norm(p=2, dim=dim, keepdim=True) + eps)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: the spatial max per channel.

    Shape:
        (B, C, H, W) -> (B, C)
    """
    _check_map(x)
    return x.amax(dim=(-2, -1))


def center_prior(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """SPoC's Gaussian centring prior, ``sigma = min(h, w) / 2 / 3`` (PyRetri's ``SPoC``).

    Shape:
        -> (height, width)
    """
    sigma = min(height, width) / 2.0 / 3.0
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)[:, None]
    squared = (xs - (width - 1) / 2.0) ** 2 + (ys - (height - 1) / 2.0) ** 2
    return torch.exp(-squared / 2.0 / sigma**2)


def spoc(x: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Sum-pooled convolutional features, optionally weighted by the centring prior.

    cirtorch's ``spoc`` averages instead of summing; after the L2 both are the same descriptor.

    Shape:
        (B, C, H, W) -> (B, C)
    """
    _check_map(x)
    if center:
        x = x * center_prior(x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
    return x.sum(dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = EPS) -> torch.Tensor:
    """Generalised mean ``(mean x^p)^(1/p)`` over the map; p -> inf is MAC, p = 1 is average.

    Shape:
        (B, C, H, W), p scalar or (C,) -> (B, C)
    """
    _check_map(x)
    if isinstance(p, torch.Tensor) and p.numel() > 1:
        p = p.view(1, -1, 1, 1)
        return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p.view(1, -1))
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


# -- R-MAC ------------------------------------------------------------------------------------
def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = 0.4) -> torch.Tensor:
    """The R-MAC region grid of Tolias et al. on an ``height x width`` feature map.

    Exactly the computation of ``rmac_regionvec_act.m`` / cirtorch's ``rmac()`` (float32 like
    cirtorch's ``torch.Tensor`` arithmetic): square regions of side ``floor(2 w / (l + 1))``
    at level ``l`` (w = the short side), ``l`` per side plus the extra regions on the long side
    chosen so that neighbours overlap by about ``overlap``.

    Returns:
        long tensor ``(R, 4)`` of ``x0, y0, x1, y1`` in feature cells, ``x1``/``y1`` exclusive.
    """
    if height < 1 or width < 1 or levels < 1:
        raise ValueError(f"need a non-empty map and levels >= 1, got {height}x{width}, L={levels}")
    short = min(width, height)
    steps = np.arange(2, 8, dtype=np.float32)  # possible region counts along the long side
    step_size = (max(height, width) - short) / (steps - 1)
    idx = int(np.argmin(np.abs(((short**2 - short * step_size) / short**2) - np.float32(overlap))))
    extra_w = idx + 1 if height < width else 0
    extra_h = idx + 1 if height > width else 0
    boxes = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        half = math.floor(side / 2 - 1)
        starts = []
        for size, extra in ((width, extra_w), (height, extra_h)):
            n = level + extra
            stride = 0.0 if n == 1 else (size - side) / (n - 1)
            positions = np.arange(n, dtype=np.float32) * np.float32(stride)
            starts.append((np.floor(np.float32(half) + positions) - half).astype(np.int64))
        for y0 in starts[1].tolist():
            for x0 in starts[0].tolist():
                boxes.append((x0, y0, x0 + side, y0 + side))
    return torch.tensor(boxes, dtype=torch.long).view(-1, 4)


def regional_max(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Exact MAC of every region (feature-cell boxes ``x0, y0, x1, y1``, exclusive ends).

    One slice + max per region: with the 14-40 regions of an R-MAC grid this is several times
    faster on the CPU than stride-1 max-pools with region-sized kernels.

    Shape:
        (B, C, H, W), (R, 4) -> (B, R, C)
    """
    _check_map(x)
    return torch.stack([x[..., y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in regions.tolist()], dim=1)


def aggregate_regions(vectors: torch.Tensor, region_whiten: Callable | None = None, eps: float = EPS) -> torch.Tensor:
    """Per-region L2, optional per-region whitening (then L2 again), sum, L2.

    Shape:
        (B, R, C) -> (B, C) or (B, D) with whitening
    """
    vectors = l2n(vectors, eps=eps)
    if region_whiten is not None:
        vectors = l2n(region_whiten(vectors), eps=eps)
    return l2n(vectors.sum(dim=1), eps=eps)


def rmac_region_vectors(x: torch.Tensor, levels: int = 3, overlap: float = 0.4, include_global: bool = False) -> torch.Tensor:
    """The L2-normalised regional MACs that R-MAC sums: the training vectors of a per-region
    PCA-whitening (learn it on another dataset, then pass it as ``region_whiten``).

    Shape:
        (B, C, H, W) -> (B, R, C)
    """
    _check_map(x)
    vectors = regional_max(x, rmac_regions(x.shape[-2], x.shape[-1], levels, overlap))
    if include_global:
        vectors = torch.cat([mac(x).unsqueeze(1), vectors], dim=1)
    return l2n(vectors)


def rmac(
    x: torch.Tensor,
    levels: int = 3,
    overlap: float = 0.4,
    include_global: bool = False,
    region_whiten: Callable | None = None,
    eps: float = EPS,
) -> torch.Tensor:
    """Regional MAC on the Tolias grid, L2-normalised.

    Args:
        include_global: add the MAC of the whole map as one more region (cirtorch's ``rmac``;
            Tolias's original does not).
        region_whiten: applied to the L2-normalised region vectors ``(B, R, C)`` (e.g. the
            ``nn.Linear`` of a PCA-whitening learned on another dataset, Tolias's setting).

    Shape:
        (B, C, H, W) -> (B, C) (or (B, D) with a whitening to D dims)
    """
    return aggregate_regions(rmac_region_vectors(x, levels, overlap, include_global), region_whiten, eps)


def boxes_to_rois(boxes: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Boxes per image ``(B, K, 4)`` or a list of ``(K_i, 4)`` -> torchvision rois ``(sum K, 5)``."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (B, K, 4) or a list of (K, 4), got {tuple(boxes.shape)}")
        boxes = list(boxes)
    rois = [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rois).float()


def roi_mac(x: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor], spatial_scale: float = 1.0) -> torch.Tensor:
    """MAC over arbitrary boxes (``x0, y0, x1, y1`` in input pixels) with ``torchvision.ops.roi_pool``.

    ``spatial_scale`` = 1 / backbone stride maps pixels to feature cells.

    Shape:
        (B, C, H, W), (B, K, 4) -> (B, K, C)
    """
    _check_map(x)
    rois = boxes_to_rois(boxes).to(x.device)
    pooled = roi_pool(x, rois, output_size=1, spatial_scale=spatial_scale).flatten(1)  # (sum K, C)
    counts = torch.bincount(rois[:, 0].long(), minlength=x.shape[0])
    if not bool((counts == counts[0]).all()):
        raise ValueError(f"every image needs the same number of boxes, got {counts.tolist()}")
    return pooled.view(x.shape[0], int(counts[0]), x.shape[1])


# -- approximate integral max-pooling (seed 004, Tolias et al. 2016) --------------------------
def integral_tables(x: torch.Tensor, alpha: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed-area tables of ``(x / s)^alpha`` with ``s`` the per-channel max (no overflow).

    Returns ``(tables (B, C, H+1, W+1) float64, scale (B, C))``; built once per image.
    Precision: a region sum is a difference of table entries, exact to about 1e-16 of the
    channel's total, so a region whose max is below roughly ``(1e-16)^(1/alpha)`` (~2.5% for
    alpha = 10) of its channel's max over the map comes out too large; those entries barely
    move the L2-normalised region vectors (see :func:`benchmark_integral_max_pooling`).
    """
    _check_map(x)
    scale = x.amax(dim=(-2, -1)).clamp(min=EPS)
    powered = (x.clamp(min=0) / scale[..., None, None]).double().pow(alpha)
    tables = F.pad(powered.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return tables, scale


def integral_region_pool(
    tables: torch.Tensor, scale: torch.Tensor, regions: torch.Tensor, alpha: float = 10.0, reduction: str = "sum"
) -> torch.Tensor:
    """``(sum_{p in R} x(p)^alpha)^(1/alpha)`` for every region from four table look-ups each.

    ``reduction="sum"`` is Tolias's formula (>= the max, at most ``|R|^(1/alpha)`` times it);
    ``"mean"`` the generalised mean (<= the max). Each region is L2-normalised in R-MAC, where
    the two give the same vector.

    Shape:
        tables (B, C, H+1, W+1), scale (B, C), regions (R, 4) cells ``x0, y0, x1, y1`` -> (B, R, C)
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
    x0, y0, x1, y1 = regions.to(tables.device).unbind(-1)
    sums = tables[..., y1, x1] - tables[..., y0, x1] - tables[..., y1, x0] + tables[..., y0, x0]
    sums = sums.clamp(min=0)  # (B, C, R); rounding can leave tiny negatives
    if reduction == "mean":
        sums = sums / ((x1 - x0) * (y1 - y0)).to(sums.dtype)
    return (sums.pow(1.0 / alpha) * scale.double()[..., None]).to(scale.dtype).transpose(1, 2)


def all_regions(height: int, width: int, sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """Every square window of the given sides (default: all) at every position: the search
    space of AML-style localisation, where integral pooling pays off.

    Returns long ``(R, 4)`` boxes ``x0, y0, x1, y1``.
    """
    sizes = sizes or tuple(range(1, min(height, width) + 1))
    boxes = [
        (x0, y0, x0 + s, y0 + s)
        for s in sizes
        for y0 in range(height - s + 1)
        for x0 in range(width - s + 1)
    ]
    return torch.tensor(boxes, dtype=torch.long).view(-1, 4)


class MAC(nn.Module):
    """:func:`mac` as a layer. Shape: (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mac(x)


class SPoC(nn.Module):
    """:func:`spoc` as a layer (``center=True``: with the centring prior). Shape: (B, C, H, W) -> (B, C)."""

    def __init__(self, center: bool = False) -> None:
        super().__init__()
        self.center = center

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spoc(x, self.center)

    def extra_repr(self) -> str:
        return f"center={self.center}"


class GeM(nn.Module):
    """:func:`gem` with a learnable ``p`` (init 3; one per channel if ``channels`` is given).

    Shape:
        (B, C, H, W) -> (B, C)
    """

    def __init__(self, p: float = 3.0, eps: float = EPS, channels: int | None = None) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((channels or 1,), float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p if self.p.numel() > 1 else self.p[0], self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.data.tolist()}, eps={self.eps}"


class RMAC(nn.Module):
    """:func:`rmac` as a layer; ``region_whiten`` an optional ``nn.Linear`` (per-region PCA-w).

    Shape:
        (B, C, H, W) -> (B, C) (L2-normalised)
    """

    def __init__(
        self, levels: int = 3, overlap: float = 0.4, include_global: bool = False, region_whiten: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.levels, self.overlap, self.include_global = levels, overlap, include_global
        self.region_whiten = region_whiten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmac(x, self.levels, self.overlap, self.include_global, self.region_whiten)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, overlap={self.overlap}, include_global={self.include_global}"


class IntegralRMAC(nn.Module):
    """R-MAC whose regional maxima come from the integral approximation (Tolias et al. 2016).

    Shape:
        (B, C, H, W) -> (B, C) (L2-normalised)
    """

    def __init__(self, levels: int = 3, overlap: float = 0.4, alpha: float = 10.0) -> None:
        super().__init__()
        self.levels, self.overlap, self.alpha = levels, overlap, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x)
        regions = rmac_regions(x.shape[-2], x.shape[-1], self.levels, self.overlap)
        tables, scale = integral_tables(x, self.alpha)
        return aggregate_regions(integral_region_pool(tables, scale, regions, self.alpha))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, overlap={self.overlap}, alpha={self.alpha}"


POOLINGS = {"mac": MAC, "spoc": SPoC, "gem": GeM, "rmac": RMAC, "integral_rmac": IntegralRMAC}


def build_pooling(name: str, **kwargs) -> nn.Module:
    """A pooling layer by name (``mac``, ``spoc``, ``gem``, ``rmac``, ``integral_rmac``)."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {sorted(POOLINGS)}")
    return POOLINGS[name](**kwargs)
