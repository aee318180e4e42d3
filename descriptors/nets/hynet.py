"""HyNet (Tian et al., NeurIPS 2020; ``yuruntian/HyNet model.py``): L2-Net's trunk with Filter
Response Normalisation + TLU instead of BatchNorm + ReLU."""

from __future__ import annotations

import torch
from torch import nn

from .common import DescriptorNetwork


class FilterResponseNorm2d(nn.Module):
    """FRN (Singh & Krishnan, CVPR 2020): ``x / sqrt(mean_{H,W}(x^2) + |eps|)``, then a per-channel
    scale ``weight`` and shift ``bias``; no batch statistics. ``eps`` is a buffer (HyNet does not
    learn it), kept in the state dict as the official files have it."""

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.register_buffer("eps", torch.tensor([eps]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        return self.weight * (x * torch.rsqrt(nu2 + self.eps.abs())) + self.bias


class TLU(nn.Module):
    """Thresholded linear unit: ``max(x, tau)`` with a learned per-channel ``tau`` (init -1)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.tau = nn.Parameter(-torch.ones(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, self.tau)


class HyNet(DescriptorNetwork):
    """HyNet: FRN-TLU on the raw patch (no per-patch standardisation: FRN divides by the patch's
    RMS), six 3x3 conv-FRN-TLU blocks (32, 32, 64/2, 64, 128/2, 128, conv biases), dropout, 8x8
    conv without bias, BN(affine=False), L2 normalisation of ``x + 1e-10`` (the original's LRN).
    Module names and state-dict keys (``layer1`` ... ``layer7``) are the official files' and
    ``kornia.feature.HyNet``'s.

    Shape:
        (B, 1, 32, 32) -> (B, descriptor_dim), unit L2 norm
    """

    patch_size = 32

    def __init__(self, descriptor_dim: int = 128, dropout: float = 0.3, bias: bool = True) -> None:
        super().__init__()
        self.descriptor_dim = descriptor_dim

        def block(n_in: int, n_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=bias), FilterResponseNorm2d(n_out), TLU(n_out)]

        self.layer1 = nn.Sequential(FilterResponseNorm2d(1), TLU(1), *block(1, 32))
        self.layer2 = nn.Sequential(*block(32, 32))
        self.layer3 = nn.Sequential(*block(32, 64, 2))
        self.layer4 = nn.Sequential(*block(64, 64))
        self.layer5 = nn.Sequential(*block(64, 128, 2))
        self.layer6 = nn.Sequential(*block(128, 128))
        self.layer7 = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(128, descriptor_dim, kernel_size=8, bias=False),
                                    nn.BatchNorm2d(descriptor_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5, self.layer6, self.layer7):
            x = layer(x)
        x = x.flatten(1) + 1e-10
        return x / x.norm(dim=1, keepdim=True)
