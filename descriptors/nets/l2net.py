"""The L2-Net family (Tian et al., CVPR 2017): L2-Net, CS L2-Net, binary L2-Net, and HardNet
(Mishchuk et al., NIPS 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    DescriptorNetwork,
    center_crop,
    l2_normalize,
    sign_straight_through,
    standardize_patches,
)


# -- L2-Net family (Tian et al., CVPR 2017) and HardNet (Mishchuk et al., NIPS 2017) --------
class L2Net(DescriptorNetwork):
    """L2-Net: six 3x3 conv-BN(affine=False)-ReLU blocks (32, 32, 64/2, 64, 128/2, 128), dropout,
    8x8 conv to 128, BN(affine=False), L2 normalisation. Input standardised per patch.

    The defaults are the official L2-Net weights' layout (conv biases, BN eps 1e-4, no dropout,
    eps 1e-12 in the standardisation; ``input_eps`` larger than that is a contrast floor, see
    :func:`standardize_patches`); :class:`HardNet` is the bias-free variant. The module
    list keeps the same indices either way (a ``Dropout(0)`` holds the place), which is also
    ``kornia.feature.HardNet``'s state_dict layout.

    ``forward(x, return_features=True)`` also returns the maps L2-Net's E3 supervises: the output
    of the first BN layer and of the last BN layer (before the L2 normalisation).

    Shape:
        (B, 1, 32, 32) -> (B, 128), unit L2 norm
    """

    patch_size = 32
    descriptor_dim = 128
    first_bn_index = 1
    last_bn_index = 20

    def __init__(self, bias: bool = True, bn_eps: float = 1e-4, dropout: float = 0.0, input_eps: float = 1e-12) -> None:
        super().__init__()
        self.input_eps = input_eps
        layers: list[nn.Module] = []
        for n_in, n_out, stride in ((1, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)):
            layers += [
                nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=bias),
                nn.BatchNorm2d(n_out, affine=False, eps=bn_eps),
                nn.ReLU(),
            ]
        layers += [nn.Dropout(dropout), nn.Conv2d(128, 128, kernel_size=8, bias=bias), nn.BatchNorm2d(128, affine=False, eps=bn_eps)]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.check_patches(x)
        h = standardize_patches(x, self.input_eps)
        if h.device.type == "cpu" and h.dtype == torch.float32:
            # oneDNN's CPU convolutions skip a layout reorder per layer with channels-last input
            # (what kornia.feature.HardNet does); values are unchanged
            h = h.to(memory_format=torch.channels_last)
        return self.describe_normalized(h, return_features)

    def describe_normalized(self, h: torch.Tensor, return_features: bool = False):
        """The trunk on already normalised patches: unit descriptors and, with
        ``return_features``, the first and last BN outputs (CS L2-Net's intermediate losses)."""
        if not return_features:
            return l2_normalize(self.features(h).flatten(1))
        maps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in (self.first_bn_index, self.last_bn_index):
                maps.append(h.flatten(1))
        return l2_normalize(h.flatten(1)), maps


class HardNet(L2Net):
    """HardNet: L2-Net without conv biases, BN(affine=False, eps 1e-5), Dropout(0.3) before the
    8x8 conv, ``input_norm`` (eps 1e-7), ``L2Norm``; orthogonal init with gain 0.6
    (``DagnyT/hardnet code/HardNet.py``). Loads ``kornia.feature.HardNet``'s state_dict as is.

    Shape:
        (B, 1, 32, 32) -> (B, 128), unit L2 norm
    """

    def __init__(self, dropout: float = 0.3, input_eps: float = 1e-7) -> None:
        super().__init__(bias=False, bn_eps=1e-5, dropout=dropout, input_eps=input_eps)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.6)


class CSL2Net(DescriptorNetwork):
    """CS L2-Net (``cal_L2Net_des.m``): two unshared L2-Nets, one on the whole patch resized x0.5
    (64 -> 32, bilinear), one on the centre crop [16:48]; the two 128-d outputs concatenated.

    Shape:
        (B, 1, 64, 64) -> (B, 256) (each half has unit norm)
    """

    patch_size = 64
    descriptor_dim = 256

    def __init__(self, bias: bool = True, bn_eps: float = 1e-4, dropout: float = 0.0, input_eps: float = 1e-12) -> None:
        super().__init__()
        self.surround = L2Net(bias, bn_eps, dropout, input_eps)
        self.centre = L2Net(bias, bn_eps, dropout, input_eps)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.check_patches(x)
        surround = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        centre = center_crop(x, 32)
        if not return_features:
            return torch.cat([self.surround(surround), self.centre(centre)], dim=1)
        d_surround, maps_surround = self.surround(surround, return_features=True)
        d_centre, maps_centre = self.centre(centre, return_features=True)
        return torch.cat([d_surround, d_centre], dim=1), maps_surround + maps_centre


class BinaryL2Net(DescriptorNetwork):
    """Binary (CS) L2-Net: ``sign`` of the float descriptor, values in {-1, +1} (``example.m``),
    compared by Hamming distance. ``forward`` binarises with a straight-through gradient;
    training uses the float descriptors (``float_descriptors``), binarised at test time.

    Shape:
        (B, 1, patch_size, patch_size) -> (B, 128) or (B, 256) in {-1, +1}
    """

    distance = "hamming"

    def __init__(self, central_surround: bool = False, **l2net_kwargs) -> None:
        super().__init__()
        self.float_net = CSL2Net(**l2net_kwargs) if central_surround else L2Net(**l2net_kwargs)
        self.patch_size = self.float_net.patch_size
        self.descriptor_dim = self.float_net.descriptor_dim

    def float_descriptors(self, x: torch.Tensor, return_features: bool = False):
        return self.float_net(x, return_features=return_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_straight_through(self.float_net(x))
