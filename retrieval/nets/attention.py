"""Regional attention for R-MAC (Kim & Yoon, BMVC 2018; seed 003).

Each region's feature ``k`` gets a positive weight
``phi(k) = softplus(W_c tanh(W_r k + b_r) + b_c)``; with *context-awareness* ``k`` is the
region feature concatenated with the global feature of the image. The descriptor is the
weighted mean of the L2-normalised (optionally whitened) regional MAC vectors, L2-normalised.

As in the reference code (``ContextAwareRegionalAttentionNetwork``): the attention input is
the *mean*-pooled region feature (and the mean-pooled global feature), the aggregated vectors
are the regional *max*-pooled ones, and the weights are not normalised to sum to one (the
mean divides by the number of regions). Regions are the R-MAC grid on the feature map, or
arbitrary boxes in input pixels (e.g. region proposals) pooled with ``torchvision.ops``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..pooling import boxes_to_rois, l2n, regional_max, rmac_regions, roi_mac
from ..whiten import whiten_apply
from .backbones import Backbone, build_backbone


def regional_mean(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Average of every grid region (feature-cell boxes ``x0, y0, x1, y1``, exclusive ends).

    Shape:
        (B, C, H, W), (R, 4) -> (B, R, C)
    """
    return torch.stack([x[..., y0:y1, x0:x1].mean(dim=(-2, -1)) for x0, y0, x1, y1 in regions.tolist()], dim=1)


def roi_mean(x: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor], spatial_scale: float = 1.0) -> torch.Tensor:
    """Mean feature over boxes in input pixels (``roi_align`` with one bin, adaptive sampling).

    Shape:
        (B, C, H, W), (B, K, 4) -> (B, K, C)
    """
    rois = boxes_to_rois(boxes).to(x.device)
    pooled = roi_align(x, rois, output_size=1, spatial_scale=spatial_scale, sampling_ratio=-1).flatten(1)
    return pooled.view(x.shape[0], -1, x.shape[1])


def attention_aggregate(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of region vectors, then L2.

    Shape:
        vectors (B, R, D), weights (B, R) -> (B, D)
    """
    return l2n((vectors * weights.unsqueeze(-1)).mean(dim=1))



def attention_pool(maxima: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of the *raw* regional MACs, the classifier's input in attention training
    (``Train_ImageNet.py``); with ``mask`` (padded regions, see :func:`pad_regions`) the sum is
    divided by the number of real regions (``weights`` must already be 0 on padding).

    Shape:
        maxima (B, R, C), weights (B, R) [, mask (B, R)] -> (B, C)
    """
    if mask is None:
        return (maxima * weights.unsqueeze(-1)).mean(dim=1)
    return (maxima * weights.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)


def pad_regions(regions: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (regional max, regional mean) pairs with different region counts as one batch.

    Shape:
        [((R_i, C), (R_i, C))] -> maxima (N, Rmax, C), means (N, Rmax, C), mask (N, Rmax) of real regions
    """
    size = max(len(m) for m, _ in regions)
    channels = regions[0][0].shape[-1]
    maxima = torch.zeros(len(regions), size, channels)
    means = torch.zeros(len(regions), size, channels)
    mask = torch.zeros(len(regions), size)
    for i, (m, a) in enumerate(regions):
        maxima[i, : len(m)], means[i, : len(a)], mask[i, : len(m)] = m, a, 1
    return maxima, means, mask

class RegionalAttention(nn.Module):
    """``phi(k) = softplus(W_c act(W_r k + b_r) + b_c)``, act = tanh (the paper; the authors'
    training script uses softplus: ``hidden_activation="softplus"``).

    Args:
        in_channels: C of the region feature.
        context: concatenate the global feature to every region (input 2C), Kim & Yoon's
            context-aware variant; without it the input is the region feature alone.
        hidden: width of the hidden layer (64 in the reference code).

    Shape:
        regional (B, R, C), global_feature (B, C) (when ``context``) -> weights (B, R), > 0
    """

    def __init__(self, in_channels: int, context: bool = True, hidden: int = 64, hidden_activation: str = "tanh") -> None:
        super().__init__()
        if hidden_activation not in ("tanh", "softplus"):
            raise ValueError(f"hidden_activation must be tanh or softplus, got {hidden_activation!r}")
        self.in_channels, self.context = in_channels, context
        self.hidden_activation = hidden_activation
        self.region_layer = nn.Linear(in_channels * (2 if context else 1), hidden)  # W_r, b_r
        self.weight_layer = nn.Linear(hidden, 1)  # W_c, b_c

    def forward(self, regional: torch.Tensor, global_feature: torch.Tensor | None = None) -> torch.Tensor:
        if regional.dim() != 3 or regional.shape[-1] != self.in_channels:
            raise ValueError(f"expected regional features (B, R, {self.in_channels}), got {tuple(regional.shape)}")
        if self.context:
            if global_feature is None or global_feature.shape != (regional.shape[0], self.in_channels):
                raise ValueError("the context-aware attention needs the global feature (B, C)")
            regional = torch.cat([regional, global_feature.unsqueeze(1).expand_as(regional)], dim=-1)
        hidden = self.region_layer(regional)
        hidden = torch.tanh(hidden) if self.hidden_activation == "tanh" else F.softplus(hidden)
        return F.softplus(self.weight_layer(hidden)).squeeze(-1)


class RegionalAttentionNet(nn.Module):
    """Backbone + regions + regional attention: the attention-weighted R-MAC descriptor.

    Args:
        backbone: a :class:`~retrieval.nets.backbones.Backbone` or a name (built with ``pretrained``).
        levels, overlap: the R-MAC grid (Kim & Yoon test with L = 5 on ResNet-101 at 1024 px).
        context: context-aware attention (global feature concatenated to each region).
        region_whiten: optional ``nn.Linear`` on the L2-normalised regional MACs (their PCA).

    Shape:
        images (B, 3, H, W) [, boxes (B, K, 4) input pixels] -> (B, D), unit L2 norm
    """

    def __init__(
        self,
        backbone: Backbone | str = "efficientnet_lite0",
        levels: int = 3,
        overlap: float = 0.4,
        context: bool = True,
        hidden: int = 64,
        hidden_activation: str = "tanh",
        region_whiten: nn.Linear | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, pretrained=pretrained)
        self.backbone = backbone
        self.levels, self.overlap = levels, overlap
        self.attention = RegionalAttention(backbone.out_channels, context, hidden, hidden_activation)
        self.region_whiten = region_whiten

    @property
    def output_dim(self) -> int:
        return self.region_whiten.out_features if self.region_whiten is not None else self.backbone.out_channels

    def regions(self, feature_map: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor] | None = None):
        """Regional max ``(B, R, C)``, attention weights ``(B, R)`` for a feature map."""
        if boxes is None:
            grid = rmac_regions(feature_map.shape[-2], feature_map.shape[-1], self.levels, self.overlap).to(feature_map.device)
            maxima, means = regional_max(feature_map, grid), regional_mean(feature_map, grid)
        else:
            scale = 1.0 / self.backbone.stride
            maxima, means = roi_mac(feature_map, boxes, scale), roi_mean(feature_map, boxes, scale)
        global_mean = feature_map.mean(dim=(-2, -1)) if self.attention.context else None
        return maxima, self.attention(means, global_mean)

    def classification_features(self, images: torch.Tensor, boxes=None) -> torch.Tensor:
        """Attention-weighted mean of the *raw* regional MACs (the input of the classifier in
        attention training, as ``Train_ImageNet.py``).

        Shape:
            (B, 3, H, W) -> (B, C)
        """
        maxima, weights = self.regions(self.backbone(images), boxes)
        return attention_pool(maxima, weights)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
        maxima, weights = self.regions(self.backbone(images), boxes)
        vectors = l2n(maxima)
        if self.region_whiten is not None:
            vectors = l2n(self.region_whiten(vectors))
        return attention_aggregate(vectors, weights)

    def multiscale_power(self) -> float:
        return 1.0



RegionPCA = tuple[np.ndarray, np.ndarray, int]  # (mean, projection, dims) of :func:`~retrieval.whiten.pca_whiten_learn`


@torch.no_grad()
def attention_vectors(
    attention: RegionalAttention | None,
    regions: list[tuple[torch.Tensor, torch.Tensor]],
    global_mean: torch.Tensor,
    region_pca: RegionPCA | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Per image: ``L2(mean_r w_r v_r)`` with ``v_r`` the L2 (optionally region-PCA-whitened)
    regional MACs; ``attention=None`` gives R-MAC (``w = 1``, sum = mean after the L2).
    Returns ``(N, D)`` and the ms per image of this aggregation (attention MLP included).

    Shape:
        [((R_i, C), (R_i, C))], global_mean (N, C) -> (N, D)
    """
    out, times = [], []
    for i, (maxima, means) in enumerate(regions):
        start = time.perf_counter()
        vectors = l2n(maxima)
        if region_pca is not None:
            vectors = whiten_apply(vectors, region_pca[0], region_pca[1], region_pca[2])
        if attention is None:
            weights = torch.ones(len(vectors))
        else:
            weights = attention(means[None], global_mean[i : i + 1] if attention.context else None)[0]
        out.append(attention_aggregate(vectors[None], weights[None])[0])
        times.append((time.perf_counter() - start) * 1000)
    return torch.stack(out), times


def weighted_region_sum(
    attention: RegionalAttention | None, vectors: torch.Tensor, means: torch.Tensor, mask: torch.Tensor, global_mean: torch.Tensor
) -> torch.Tensor:
    """``L2(sum_r w_r v_r)`` over padded regions (:func:`pad_regions`; padding has weight 0,
    ``w = mask`` without attention): :func:`attention_vectors` for a whole set at once, the fast
    path of a per-epoch model selection (not timed).

    Shape:
        vectors (N, R, D), means (N, R, C), mask (N, R), global_mean (N, C) -> (N, D)
    """
    weights = mask if attention is None else attention(means, global_mean if attention.context else None) * mask
    return l2n((vectors * weights.unsqueeze(-1)).sum(1))


def padded_region_vectors(maxima: torch.Tensor, region_pca: RegionPCA | None = None) -> torch.Tensor:
    """The L2 (optionally region-PCA-whitened) regional MACs of padded maxima; computed once
    per set, since only the weights change between epochs.

    Shape:
        (N, R, C) -> (N, R, D)
    """
    vectors = l2n(maxima)
    if region_pca is not None:
        flat = whiten_apply(vectors.reshape(-1, vectors.shape[-1]), region_pca[0], region_pca[1], region_pca[2])
        vectors = flat.reshape(*vectors.shape[:2], -1)
    return vectors
