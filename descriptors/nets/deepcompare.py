"""DeepCompare (Zagoruyko & Komodakis, CVPR 2015): 2ch, 2ch-deep, 2ch-2stream, siamese,
pseudo-siamese and central-surround siamese networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MetricNetwork, center_crop, mlp, msr_init, standardize_patches


# -- DeepCompare ---------------------------------------------------------------------------
def deepcompare_normalize(x: torch.Tensor) -> torch.Tensor:
    """DeepCompare input: per-patch mean subtracted, divided by 256 (on the 0..255 scale)."""
    return (x - x.mean(dim=(-3, -2, -1), keepdim=True)) * (255.0 / 256.0)


def deepcompare_input(x: torch.Tensor, input_eps: float | None = None) -> torch.Tensor:
    """The paper's input (``deepcompare_normalize``) or, with ``input_eps``, each patch
    standardised, ``(x - mean_patch) / (std_patch + input_eps)`` (not the paper's: as DeepDesc's
    and TNet's option; a fixed 1/256 scale leaves a low-contrast sequence's patches faint)."""
    return deepcompare_normalize(x) if input_eps is None else standardize_patches(x, input_eps)


def two_channel_input(patch1: torch.Tensor, patch2: torch.Tensor, input_eps: float | None = None) -> torch.Tensor:
    """The 2-channel nets' input: both patches prepared by ``deepcompare_input``, stacked as channels."""
    return torch.cat([deepcompare_input(patch1, input_eps), deepcompare_input(patch2, input_eps)], dim=1)


def siam_tower(in_channels: int = 1) -> nn.Sequential:
    """DeepCompare ``siam.lua`` descriptor: C(96,7,3)-ReLU-P-C(192,5)-ReLU-P-C(256,3)-ReLU, 64 -> 256.

    With ``in_channels=2`` it is the 2ch network's trunk (both patches as channels).
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 96, 7, stride=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(96, 192, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(192, 256, 3),
        nn.ReLU(inplace=True),
        nn.Flatten(1),
    )


def _siam2stream_stream() -> nn.Sequential:
    """DeepCompare ``siam2stream.lua`` stream on a 32x32 view: C(96,4,2)-ReLU-P-C(192,3)-ReLU-C(256,3)-ReLU-C(256,3) -> 256."""
    return nn.Sequential(
        nn.Conv2d(1, 96, 4, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(96, 192, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(192, 256, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3),
        nn.Flatten(1),
    )


def _2ch2stream_stream() -> nn.Sequential:
    """DeepCompare ``2ch2stream.lua`` stream on a 2x32x32 view: -> 192x2x2 = 768."""
    return nn.Sequential(
        nn.Conv2d(2, 96, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(96, 96, 3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(96, 192, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(192, 192, 3),
        nn.ReLU(inplace=True),
        nn.Flatten(1),
    )


class DeepCompare2ch(MetricNetwork):
    """DeepCompare 2-channel net (``2ch.lua``): the two patches stacked as channels.

    C(96,7,3)-ReLU-P(2,2)-C(192,5)-ReLU-P(2,2)-C(256,3)-ReLU-FC(256,256)-ReLU-FC(256,1) (the
    training model; the released ``eval.py`` net has one FC(256,1): ``hidden=None``).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,)
    """

    patch_size = 64

    def __init__(self, hidden: int | None = 256, input_eps: float | None = None) -> None:
        super().__init__()
        self.input_eps = input_eps
        self.features = siam_tower(in_channels=2)
        self.decision = mlp([256, hidden, 1] if hidden else [256, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = two_channel_input(patch1, patch2, self.input_eps)
        return self.decision(self.features(x)).squeeze(1)


class DeepCompare2chDeep(MetricNetwork):
    """DeepCompare 2ch-deep (``2chdeep.lua``): C(96,4,3)-ReLU, 3x C(96,3)-ReLU, P(2,2, ceil),
    3x C(192,3)-ReLU, FC(768,768)-ReLU-FC(768,1).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,)
    """

    patch_size = 64

    def __init__(self, input_eps: float | None = None) -> None:
        super().__init__()
        self.input_eps = input_eps
        layers: list[nn.Module] = [nn.Conv2d(2, 96, 4, stride=3), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [nn.Conv2d(96, 96, 3), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        for i in range(3):
            layers += [nn.Conv2d(96 if i == 0 else 192, 192, 3), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.Flatten(1))
        self.decision = mlp([768, 768, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = two_channel_input(patch1, patch2, self.input_eps)
        return self.decision(self.features(x)).squeeze(1)


class DeepCompare2ch2Stream(MetricNetwork):
    """DeepCompare 2ch-2stream, central-surround (``2ch2stream.lua``).

    Surround (``fovea``) = the 2-channel pair average-pooled 64 -> 32; centre (``iris``) = the
    central 32x32 crop; each through its own 4-conv stream (768), concat 1536 -> FC768-ReLU-FC1.

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,)
    """

    patch_size = 64

    def __init__(self, input_eps: float | None = None) -> None:
        super().__init__()
        self.input_eps = input_eps
        self.surround = _2ch2stream_stream()
        self.centre = _2ch2stream_stream()
        self.decision = mlp([1536, 768, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = two_channel_input(patch1, patch2, self.input_eps)
        features = torch.cat([self.surround(F.avg_pool2d(x, 2, 2)), self.centre(center_crop(x, 32))], dim=1)
        return self.decision(features).squeeze(1)


class DeepCompareSiamese(MetricNetwork):
    """DeepCompare siamese (``siam.lua``) or pseudo-siamese (``shared=False``: unshared towers).

    Towers C(96,7,3)-ReLU-P-C(192,5)-ReLU-P-C(256,3)-ReLU -> 256-d; top FC(512,512)-ReLU-FC(512,1).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,); describe: (B, 1, 64, 64) -> (B, 256)
    """

    patch_size = 64

    def __init__(self, shared: bool = True, input_eps: float | None = None) -> None:
        super().__init__()
        self.shared, self.input_eps = shared, input_eps
        self.tower1 = siam_tower()
        self.tower2 = self.tower1 if shared else siam_tower()
        self.decision = mlp([512, 512, 1])
        self.feature_dim = 256
        msr_init(self)

    def describe(self, x: torch.Tensor, branch: int = 1) -> torch.Tensor:
        self.check_patches(x)
        return (self.tower1 if branch == 1 else self.tower2)(deepcompare_input(x, self.input_eps))

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return self.decision(torch.cat([features1, features2], dim=1)).squeeze(1)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1, 1), self.describe(patch2, 2))


class DeepComparePseudoSiamese(DeepCompareSiamese):
    """DeepCompare pseudo-siamese: the siamese towers without weight sharing."""

    def __init__(self, input_eps: float | None = None) -> None:
        super().__init__(shared=False, input_eps=input_eps)


class CentralSurroundTower(nn.Module):
    """Per-patch central-surround descriptor of DeepCompare ``siam2stream.lua``: centre crop
    [16:48] and surround (64 -> 32 average pool) through unshared streams, concat 512-d.

    Shape:
        (B, 1, 64, 64) normalised -> (B, 512)
    """

    def __init__(self) -> None:
        super().__init__()
        self.centre = _siam2stream_stream()
        self.surround = _siam2stream_stream()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.centre(center_crop(x, 32)), self.surround(F.avg_pool2d(x, 2, 2))], dim=1)


class DeepCompareSiamese2Stream(MetricNetwork):
    """DeepCompare siamese-2stream (``siam2stream.lua``): shared central-surround towers
    (512-d per patch), top FC(1024,1024)-ReLU-FC(1024,1024)-ReLU-FC(1024,1).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,); describe: -> (B, 512)
    """

    patch_size = 64

    def __init__(self, input_eps: float | None = None) -> None:
        super().__init__()
        self.input_eps = input_eps
        self.tower = CentralSurroundTower()
        self.decision = mlp([1024, 1024, 1024, 1])
        self.feature_dim = 512
        msr_init(self)

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.tower(deepcompare_input(x, self.input_eps))

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return self.decision(torch.cat([features1, features2], dim=1)).squeeze(1)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1), self.describe(patch2))
