"""MatchNet (Han et al., CVPR 2015): tower, bottleneck and metric network."""

from __future__ import annotations

import torch
from torch import nn

from .common import MetricNetwork, mlp


# -- MatchNet ----------------------------------------------------------------------------
class MatchNetTower(nn.Module):
    """MatchNet feature network (``feature_net.pbtxt``), Caffe ceil-mode pooling: 64 -> 64x8x8.

    Shape:
        (B, 1, 64, 64) already preprocessed -> (B, 4096) or (B, bottleneck)
    """

    def __init__(self, bottleneck: int | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(24, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 96, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 96, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        # The paper's optional FC bottleneck after pool4 (ReLU like every layer but the last).
        self.bottleneck = nn.Sequential(nn.Linear(4096, bottleneck), nn.ReLU(inplace=True)) if bottleneck else None
        self.out_dim = bottleneck or 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.bottleneck(x) if self.bottleneck is not None else x


class MatchNet(MetricNetwork):
    """MatchNet (Han et al., CVPR 2015): shared feature tower + 3-layer metric network.

    Input preprocessing ``(255 x - 128) / 160``. ``forward`` returns the two-class logits of the
    metric network (index 1 = match); ``scores`` is ``logit1 - logit0``, a monotone function of
    the softmax match probability (no saturation ties). ``describe`` + ``compare`` are the
    two-step use (describe every patch once, then score pairs of features).

    ``init="he"`` (default): He-normal weights for every conv / linear layer before a ReLU,
    zero biases, N(0, 0.01) for the logit layer. With PyTorch's default init the eight ReLU
    layers shrink the signal (logit spread ~0.01 at init, tiny first-layer gradients) and the
    network stays at chance for the first thousands of SGD steps; ``init="default"`` keeps it.

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B, 2)
    """

    patch_size = 64

    def __init__(self, bottleneck: int | None = None, hidden: int = 1024, init: str = "he") -> None:
        super().__init__()
        if init not in ("he", "default"):
            raise ValueError(f"init must be 'he' or 'default', got {init!r}")
        self.tower = MatchNetTower(bottleneck)
        self.metric = mlp([2 * self.tower.out_dim, hidden, hidden, 2])
        self.feature_dim = self.tower.out_dim
        if init == "he":
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)
            nn.init.normal_(self.metric[-1].weight, std=0.01)

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.tower((x * 255.0 - 128.0) / 160.0)

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return self.metric(torch.cat([features1, features2], dim=1))

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1), self.describe(patch2))

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        return output[:, 1] - output[:, 0]
