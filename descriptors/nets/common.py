"""Patch matching networks from MatchNet to HardNet, layer for layer (plain PyTorch).

Two kinds (the ``kind`` attribute):

- ``"metric"``: a pair of patches -> a match score (MatchNet, DeepCompare, SNet-GLoss).
  ``forward(patch1, patch2)`` returns the raw output the training loss needs (MatchNet: two
  logits, the others: one value per pair); ``scores(output)`` turns it into a similarity
  (higher = more alike), and FPR95 is computed on ``-scores``.
- ``"descriptor"``: a patch -> a vector (DeepDesc, TFeat, TNet, L2-Net, CS L2-Net, binary
  L2-Net, HardNet), ``descriptor_dim`` long, compared by ``distance`` (``"l2"`` or ``"hamming"``).

Every network takes grayscale patches ``(B, 1, patch_size, patch_size)`` with values in
``[0, 1]`` (the datamodules' format) and does its original input normalisation itself; a
wrong shape raises ``ValueError``. Resizing 64 -> 32 is the caller's job (the LightningModules
do it with ``F.interpolate(bilinear, align_corners=False)``, HardNet's ``cv2.resize``).

Shared here: the input normalisations, the bases with their input checks and
:func:`network_spec`; one module per group of networks beside it.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn

# Brown mean/std (Liberty, on [0, 1]): the stand-in for the originals' dataset mean images.
BROWN_MEAN = 0.4437
BROWN_STD = 0.2019


# -- pure functions ----------------------------------------------------------------------
def standardize_patches(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-patch ``(x - mean) / (std + eps)`` with detached statistics (HardNet ``input_norm``).

    The papers' eps (1e-7 / 1e-12) only guards against division by zero, which makes the
    networks contrast-invariant: a patch of faint texture is stretched to the same unit variance
    as a real edge, noise and compression artefacts included. A larger eps is a contrast floor
    (intensities in [0, 1]): patches with std well above it are standardised, fainter ones only
    scaled by ``1 / (std + eps)``.

    Shape:
        (B, C, H, W) -> (B, C, H, W)
    """
    std, mean = torch.std_mean(x, dim=(-3, -2, -1), keepdim=True)
    return (x - mean.detach()) / (std.detach() + eps)


def l2_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` along dim 1 (HardNet ``L2Norm``): a zero vector stays zero
    with a finite gradient.

    Shape:
        (B, D) -> (B, D)
    """
    return x / torch.sqrt(torch.sum(x * x, dim=1, keepdim=True) + eps)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window (DeepCompare's ``SpatialZeroPadding(-16, ...)``).

    Shape:
        (B, C, H, W) -> (B, C, size, size)
    """
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def gaussian_kernel2d(size: int = 5, sigma: float | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian; ``sigma`` defaults to Torch7 ``image.gaussian``'s 0.25 * size.

    Shape:
        -> (size, size), sums to 1
    """
    sigma = 0.25 * size if sigma is None else sigma
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).float()


def subtractive_normalization(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Torch7 ``SpatialSubtractiveNormalization``: subtract the Gaussian-weighted local mean
    taken over all channels, with the border correction (the mean of a zero-padded window is
    divided by the kernel mass inside the image).

    Shape:
        x: (B, C, H, W), kernel: (k, k) odd -> (B, C, H, W)
    """
    channels, k = x.shape[1], kernel.shape[-1]
    weight = (kernel / channels).to(x).expand(1, channels, k, k)
    local_mean = F.conv2d(x, weight, padding=k // 2)
    coverage = F.conv2d(torch.ones_like(x[:1]), weight, padding=k // 2)
    return x - local_mean / coverage


def hamming_from_signs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamming distance of row-paired {-1, +1} codes: ``(D - a.b) / 2``.

    Shape:
        (B, D), (B, D) -> (B,)
    """
    return (a.shape[1] - (a * b).sum(dim=1)) / 2


def sign_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Values in {-1, +1} (0 -> +1), gradient of the identity (straight-through estimator)."""
    binary = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (binary - x).detach()


def msr_init(module: nn.Module) -> None:
    """DeepCompare's ``utils.MSRinit``: conv weights ~ N(0, sqrt(2 / (k*k*out))), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SubtractiveNorm2d(nn.Module):
    """Module wrapper of :func:`subtractive_normalization` with a fixed Gaussian kernel."""

    def __init__(self, size: int = 5, sigma: float | None = None) -> None:
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel2d(size, sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return subtractive_normalization(x, self.kernel)


class L2Norm(nn.Module):
    """Module wrapper of :func:`l2_normalize`."""

    def __init__(self, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(x, self.eps)


# -- bases -------------------------------------------------------------------------------
def _recording_init(init):
    """Wrap a network's ``__init__`` so the instance keeps the arguments it was built with
    (``init_kwargs``, plain values): a checkpoint then names the class and these arguments
    and the network can be rebuilt without a config (``descriptors.api``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        recorded = {}
        for name, value in list(bound.arguments.items())[1:]:
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update(value)
            elif signature.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
                recorded[name] = value
        # the outermost (most derived) __init__ returns last, so its arguments win
        self.__dict__["init_kwargs"] = recorded

    return wrapper


class PatchNetwork(nn.Module):
    """Common input checks; subclasses set ``patch_size``, ``kind`` and ``in_channels``.

    Every subclass records its constructor arguments in ``init_kwargs`` (see
    :func:`network_spec`)."""

    patch_size: int = 64
    kind: str = "descriptor"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])

    def check_patches(self, x: torch.Tensor, name: str = "patches") -> None:
        p = self.patch_size
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (p, p):
            raise ValueError(f"{type(self).__name__} expects {name} of shape (B, 1, {p}, {p}), got {tuple(x.shape)}")


class DescriptorNetwork(PatchNetwork):
    """A patch -> descriptor network; ``distance`` says how descriptors compare."""

    kind = "descriptor"
    descriptor_dim: int = 128
    distance: str = "l2"


class MetricNetwork(PatchNetwork):
    """A pair -> score network. ``scores(output)``: similarity, higher = more alike."""

    kind = "metric"

    def check_pair(self, patch1: torch.Tensor, patch2: torch.Tensor) -> None:
        self.check_patches(patch1, "patch1")
        self.check_patches(patch2, "patch2")
        if patch1.shape[0] != patch2.shape[0]:
            raise ValueError(f"patch1 and patch2 differ in batch size: {patch1.shape[0]} vs {patch2.shape[0]}")

    def scores(self, output: torch.Tensor) -> torch.Tensor:
        return output


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU-...-Linear (no ReLU after the last layer)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)



def network_spec(net: nn.Module) -> dict:
    """``{"class": "module.Qualname", "kwargs": {...}}``: what rebuilds ``net`` (weights aside)."""
    return {"class": f"{type(net).__module__}.{type(net).__qualname__}", "kwargs": dict(getattr(net, "init_kwargs", {}))}



def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters (shared towers counted once)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
