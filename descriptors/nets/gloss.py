"""SNet-GLoss and CS SNet-GLoss (Kumar et al., CVPR 2016)."""

from __future__ import annotations

import torch

from .common import BROWN_MEAN, MetricNetwork, mlp, msr_init
from .deepcompare import CentralSurroundTower, siam_tower


# -- GLoss (Kumar et al., CVPR 2016) -------------------------------------------------------
class SNet(MetricNetwork):
    """SNet-GLoss / CS SNet-GLoss: a siamese network whose head outputs a similarity in (0, 1)
    (sigmoid), trained with the global loss on that output.

    ``central_surround=False``: DeepCompare's siam tower (256-d per patch) + FC(512,512)-ReLU-FC1.
    ``central_surround=True``: centre crop [16:48] and surround (64 -> 32) streams of
    ``siam2stream`` (512-d per patch) + FC(1024,1024)-ReLU-FC(1024,1024)-ReLU-FC1. Input: the
    dataset mean (``mean``, stand-in for the mean images) subtracted.

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,) in (0, 1)
    """

    patch_size = 64

    def __init__(self, central_surround: bool = False, mean: float = BROWN_MEAN) -> None:
        super().__init__()
        self.central_surround = central_surround
        self.mean = mean
        self.tower = CentralSurroundTower() if central_surround else siam_tower()
        self.feature_dim = 512 if central_surround else 256
        sizes = [1024, 1024, 1024, 1] if central_surround else [512, 512, 1]
        self.decision = mlp(sizes)
        msr_init(self)

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.tower(x - self.mean)

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decision(torch.cat([features1, features2], dim=1)).squeeze(1))

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1), self.describe(patch2))


class CSSNet(SNet):
    """CS SNet-GLoss: :class:`SNet` with central-surround towers."""

    def __init__(self, mean: float = BROWN_MEAN) -> None:
        super().__init__(central_surround=True, mean=mean)
