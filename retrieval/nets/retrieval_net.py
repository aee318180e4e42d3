"""Retrieval networks: backbone + global pooling (+ whitening ``nn.Linear``) + L2.

:class:`RetrievalNet` is cirtorch's ``ImageRetrievalNet`` with row vectors:
``features -> pool -> L2 -> [whiten -> L2]``. :func:`extract_multiscale` is cirtorch's
``extract_ms``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..pooling import GeM, build_pooling, l2n
from .backbones import Backbone, build_backbone

MULTISCALE = (1.0, 1.0 / math.sqrt(2.0), 0.5)


class NeuralCodes(nn.Module):
    """Marker pooling: the backbone's fully connected activations (see ``Backbone.neural_codes``).

    ``layer``: ``fc6``/``fc7`` for VGG16; for EfficientNet-Lite0/ResNet, which have no hidden fc
    layer, ``classifier`` (the ImageNet classifier's 1000-d output on the pooled map, as in the
    retrieval benchmark) or ``pool`` (the pooled pre-classifier activation, 1280-d / 2048-d).
    """

    def __init__(self, layer: str = "pool") -> None:
        super().__init__()
        self.layer = layer

    def extra_repr(self) -> str:
        return f"layer={self.layer}"


class RetrievalNet(nn.Module):
    """Global image descriptor: ``L2(whiten(L2(pool(backbone(images)))))``.

    Args:
        backbone: a :class:`~retrieval.nets.backbones.Backbone` (or its name, then built with ``pretrained``).
        pooling: a pooling module (:mod:`retrieval.pooling`, :class:`NeuralCodes`) or a name
            (``mac``, ``spoc``, ``gem``, ``rmac``, ``integral_rmac``, ``neural_codes``).
        pooling_kwargs: constructor arguments when ``pooling`` is a name.
        whiten: optional ``nn.Linear`` (e.g. :func:`retrieval.whiten.whitening_linear`).
        pretrained: only used when ``backbone`` is a name.

    Shape:
        (B, 3, H, W) normalised images -> (B, D), unit L2 norm
    """

    def __init__(
        self,
        backbone: Backbone | str = "efficientnet_lite0",
        pooling: nn.Module | str = "gem",
        pooling_kwargs: dict | None = None,
        whiten: nn.Linear | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, pretrained=pretrained)
        if isinstance(pooling, str):
            pooling_kwargs = dict(pooling_kwargs or {})
            pooling = NeuralCodes(**pooling_kwargs) if pooling == "neural_codes" else build_pooling(pooling, **pooling_kwargs)
        self.backbone = backbone
        self.pool = pooling
        self.whiten = whiten
        # Layers this network never runs get no gradient (DDP would otherwise need
        # find_unused_parameters): the ImageNet classifier, and VGG16's fc6/fc7 unless used.
        if backbone.classifier is not None and not (isinstance(pooling, NeuralCodes) and pooling.layer == "classifier"):
            backbone.classifier.requires_grad_(False)
        if backbone.head is not None:
            backbone.head.requires_grad_(False)
            if isinstance(pooling, NeuralCodes):
                for name in ("fc6", "fc7")[: 1 + (pooling.layer == "fc7")]:
                    backbone.head[name].requires_grad_(True)

    @property
    def feature_dim(self) -> int:
        """Descriptor size before whitening."""
        if isinstance(self.pool, NeuralCodes) and self.backbone.head is not None:
            return self.backbone.head[self.pool.layer][0].out_features
        if isinstance(self.pool, NeuralCodes) and self.pool.layer == "classifier":
            return self.backbone.classifier.out_features
        return self.backbone.out_channels

    @property
    def output_dim(self) -> int:
        return self.whiten.out_features if self.whiten is not None else self.feature_dim

    def pool_features(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pooled and L2-normalised descriptor of a feature map, before whitening."""
        if isinstance(self.pool, NeuralCodes):
            return l2n(self.backbone.neural_codes(feature_map, self.pool.layer))
        return l2n(self.pool(feature_map))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        vectors = self.pool_features(self.backbone(images))
        if self.whiten is not None:
            vectors = l2n(self.whiten(vectors))
        return vectors

    def set_whitening(self, linear: nn.Linear | None) -> None:
        """Attach (or remove) a learned whitening layer."""
        self.whiten = linear

    def multiscale_power(self) -> float:
        """cirtorch's ``msp``: GeM's p for GeM pooling without whitening, 1 otherwise."""
        if isinstance(self.pool, GeM) and self.whiten is None and self.pool.p.numel() == 1:
            return float(self.pool.p.detach())
        return 1.0


def extract_multiscale(
    net: nn.Module, images: torch.Tensor, scales: tuple[float, ...] = MULTISCALE, msp: float | None = None
) -> torch.Tensor:
    """cirtorch ``extract_ms``: ``L2((mean_s net(x_s)^msp)^(1/msp))`` over bilinear rescalings.

    ``msp`` defaults to ``net.multiscale_power()`` (GeM's p without whitening, else 1).

    Shape:
        (B, 3, H, W) -> (B, D)
    """
    if msp is None:
        msp = net.multiscale_power() if hasattr(net, "multiscale_power") else 1.0
    total = None
    for scale in scales:
        scaled = images if scale == 1 else F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        out = net(scaled).pow(msp)
        total = out if total is None else total + out
    return l2n((total / len(scales)).pow(1.0 / msp))

