"""Triplet-era descriptors: TNet (TNet-TGLoss / TNet-TLoss), DeepDesc and TFeat."""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    BROWN_MEAN,
    DescriptorNetwork,
    SubtractiveNorm2d,
    l2_normalize,
    msr_init,
    standardize_patches,
)
from .deepcompare import siam_tower


class TNet(DescriptorNetwork):
    """TNet embedding of TNet-TGLoss / TNet-TLoss (``model_global_triplet_liberty.mat``):
    C(96,7,3)-ReLU-P2-C(192,5)-ReLU-P2-C(256,3)-ReLU-C(256,1)-ReLU-C(256,1)-L2, 256-d.
    Input: the dataset mean (``mean``) subtracted, or with ``input_eps`` each patch
    standardised, ``(x - mean_patch) / (std_patch + input_eps)`` (not the paper's: as DeepDesc's
    option, for sequences whose brightness and contrast change, e.g. leuven's).

    Shape:
        (B, 1, 64, 64) -> (B, 256), unit L2 norm
    """

    patch_size = 64
    descriptor_dim = 256

    def __init__(self, mean: float = BROWN_MEAN, input_eps: float | None = None) -> None:
        super().__init__()
        self.mean, self.input_eps = mean, input_eps
        # DeepCompare's siamese tower (without its Flatten) + two 1x1 convolutions
        self.features = nn.Sequential(
            *list(siam_tower())[:-1],
            nn.Conv2d(256, 256, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 1),
            nn.Flatten(1),
        )
        msr_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        if self.input_eps is not None:
            return l2_normalize(self.features(standardize_patches(x, self.input_eps)))
        return l2_normalize(self.features(x - self.mean))


# -- DeepDesc (Simo-Serra et al., ICCV 2015) ------------------------------------------------
class DeepDesc(DescriptorNetwork):
    """DeepDesc ``CNN3``: three conv-Tanh-L2pool stages with subtractive normalisation.

    C(32,7)-Tanh-L2Pool(2,2)-SubNorm(5x5 Gaussian) -> C(64,6)-Tanh-L2Pool(3,3)-SubNorm ->
    C(128,5)-Tanh-L2Pool(4,4) -> 128-d, not L2-normalised. Input ``(x - mean) / std`` (the
    per-pixel mean/std images replaced by their averages, 119/255 and 47/255), or with
    ``input_eps`` each patch standardised, ``(x - mean_patch) / (std_patch + input_eps)`` (not
    the paper's: the dataset normalisation leaves the net blind to brightness and contrast
    changes, e.g. leuven's).

    Shape:
        (B, 1, 64, 64) -> (B, 128)
    """

    patch_size = 64
    descriptor_dim = 128

    def __init__(self, mean: float = 119.0 / 255.0, std: float = 47.0 / 255.0, input_eps: float | None = None) -> None:
        super().__init__()
        self.mean, self.std, self.input_eps = mean, std, input_eps
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 7),
            nn.Tanh(),
            nn.LPPool2d(2, 2, stride=2),
            SubtractiveNorm2d(5),
            nn.Conv2d(32, 64, 6),
            nn.Tanh(),
            nn.LPPool2d(2, 3, stride=3),
            SubtractiveNorm2d(5),
            nn.Conv2d(64, 128, 5),
            nn.Tanh(),
            nn.LPPool2d(2, 4, stride=4),
            nn.Flatten(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        if self.input_eps is not None:
            return self.features(standardize_patches(x, self.input_eps))
        return self.features((x - self.mean) / self.std)


# -- TFeat (Balntas et al., BMVC 2016) -----------------------------------------------------
class TFeat(DescriptorNetwork):
    """TFeat (``tfeat_model.py``; the layout and state_dict keys of ``kornia.feature.TFeat``):
    InstanceNorm-C(32,7)-Tanh-MaxPool(2,2)-C(64,6)-Tanh-FC(4096,128)-Tanh, not L2-normalised.

    Shape:
        (B, 1, 32, 32) -> (B, descriptor_dim)
    """

    patch_size = 32

    def __init__(self, descriptor_dim: int = 128) -> None:
        super().__init__()
        self.descriptor_dim = descriptor_dim
        self.features = nn.Sequential(
            nn.InstanceNorm2d(1, affine=False),
            nn.Conv2d(1, 32, kernel_size=7),
            nn.Tanh(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(32, 64, kernel_size=6),
            nn.Tanh(),
        )
        self.descr = nn.Sequential(nn.Linear(64 * 8 * 8, descriptor_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.descr(self.features(x).flatten(1))
