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


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU-...-Linear (no ReLU after the last layer)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


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
        self.metric = _mlp([2 * self.tower.out_dim, hidden, hidden, 2])
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


# -- DeepCompare ---------------------------------------------------------------------------
def deepcompare_normalize(x: torch.Tensor) -> torch.Tensor:
    """DeepCompare input: per-patch mean subtracted, divided by 256 (on the 0..255 scale)."""
    return (x - x.mean(dim=(-3, -2, -1), keepdim=True)) * (255.0 / 256.0)


def _siam_tower(in_channels: int = 1) -> nn.Sequential:
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

    def __init__(self, hidden: int | None = 256) -> None:
        super().__init__()
        self.features = _siam_tower(in_channels=2)
        self.decision = _mlp([256, hidden, 1] if hidden else [256, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = torch.cat([deepcompare_normalize(patch1), deepcompare_normalize(patch2)], dim=1)
        return self.decision(self.features(x)).squeeze(1)


class DeepCompare2chDeep(MetricNetwork):
    """DeepCompare 2ch-deep (``2chdeep.lua``): C(96,4,3)-ReLU, 3x C(96,3)-ReLU, P(2,2, ceil),
    3x C(192,3)-ReLU, FC(768,768)-ReLU-FC(768,1).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,)
    """

    patch_size = 64

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2, 96, 4, stride=3), nn.ReLU(inplace=True)]
        for _ in range(3):
            layers += [nn.Conv2d(96, 96, 3), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        for i in range(3):
            layers += [nn.Conv2d(96 if i == 0 else 192, 192, 3), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.Flatten(1))
        self.decision = _mlp([768, 768, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = torch.cat([deepcompare_normalize(patch1), deepcompare_normalize(patch2)], dim=1)
        return self.decision(self.features(x)).squeeze(1)


class DeepCompare2ch2Stream(MetricNetwork):
    """DeepCompare 2ch-2stream, central-surround (``2ch2stream.lua``).

    Surround (``fovea``) = the 2-channel pair average-pooled 64 -> 32; centre (``iris``) = the
    central 32x32 crop; each through its own 4-conv stream (768), concat 1536 -> FC768-ReLU-FC1.

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,)
    """

    patch_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.surround = _2ch2stream_stream()
        self.centre = _2ch2stream_stream()
        self.decision = _mlp([1536, 768, 1])
        msr_init(self)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        x = torch.cat([deepcompare_normalize(patch1), deepcompare_normalize(patch2)], dim=1)
        features = torch.cat([self.surround(F.avg_pool2d(x, 2, 2)), self.centre(center_crop(x, 32))], dim=1)
        return self.decision(features).squeeze(1)


class DeepCompareSiamese(MetricNetwork):
    """DeepCompare siamese (``siam.lua``) or pseudo-siamese (``shared=False``: unshared towers).

    Towers C(96,7,3)-ReLU-P-C(192,5)-ReLU-P-C(256,3)-ReLU -> 256-d; top FC(512,512)-ReLU-FC(512,1).

    Shape:
        patch1, patch2: (B, 1, 64, 64) -> (B,); describe: (B, 1, 64, 64) -> (B, 256)
    """

    patch_size = 64

    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.shared = shared
        self.tower1 = _siam_tower()
        self.tower2 = self.tower1 if shared else _siam_tower()
        self.decision = _mlp([512, 512, 1])
        self.feature_dim = 256
        msr_init(self)

    def describe(self, x: torch.Tensor, branch: int = 1) -> torch.Tensor:
        self.check_patches(x)
        return (self.tower1 if branch == 1 else self.tower2)(deepcompare_normalize(x))

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return self.decision(torch.cat([features1, features2], dim=1)).squeeze(1)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1, 1), self.describe(patch2, 2))


class DeepComparePseudoSiamese(DeepCompareSiamese):
    """DeepCompare pseudo-siamese: the siamese towers without weight sharing."""

    def __init__(self) -> None:
        super().__init__(shared=False)


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

    def __init__(self) -> None:
        super().__init__()
        self.tower = CentralSurroundTower()
        self.decision = _mlp([1024, 1024, 1024, 1])
        self.feature_dim = 512
        msr_init(self)

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.tower(deepcompare_normalize(x))

    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        return self.decision(torch.cat([features1, features2], dim=1)).squeeze(1)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        self.check_pair(patch1, patch2)
        return self.compare(self.describe(patch1), self.describe(patch2))


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
        self.tower = CentralSurroundTower() if central_surround else _siam_tower()
        self.feature_dim = 512 if central_surround else 256
        sizes = [1024, 1024, 1024, 1] if central_surround else [512, 512, 1]
        self.decision = _mlp(sizes)
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


class TNet(DescriptorNetwork):
    """TNet embedding of TNet-TGLoss / TNet-TLoss (``model_global_triplet_liberty.mat``):
    C(96,7,3)-ReLU-P2-C(192,5)-ReLU-P2-C(256,3)-ReLU-C(256,1)-ReLU-C(256,1)-L2, 256-d.
    Input: the dataset mean (``mean``) subtracted.

    Shape:
        (B, 1, 64, 64) -> (B, 256), unit L2 norm
    """

    patch_size = 64
    descriptor_dim = 256

    def __init__(self, mean: float = BROWN_MEAN) -> None:
        super().__init__()
        self.mean = mean
        # DeepCompare's siamese tower (without its Flatten) + two 1x1 convolutions
        self.features = nn.Sequential(
            *list(_siam_tower())[:-1],
            nn.Conv2d(256, 256, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 1),
            nn.Flatten(1),
        )
        msr_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return l2_normalize(self.features(x - self.mean))


# -- DeepDesc (Simo-Serra et al., ICCV 2015) ------------------------------------------------
class DeepDesc(DescriptorNetwork):
    """DeepDesc ``CNN3``: three conv-Tanh-L2pool stages with subtractive normalisation.

    C(32,7)-Tanh-L2Pool(2,2)-SubNorm(5x5 Gaussian) -> C(64,6)-Tanh-L2Pool(3,3)-SubNorm ->
    C(128,5)-Tanh-L2Pool(4,4) -> 128-d, not L2-normalised. Input ``(x - mean) / std`` (the
    per-pixel mean/std images replaced by their averages, 119/255 and 47/255).

    Shape:
        (B, 1, 64, 64) -> (B, 128)
    """

    patch_size = 64
    descriptor_dim = 128

    def __init__(self, mean: float = 119.0 / 255.0, std: float = 47.0 / 255.0) -> None:
        super().__init__()
        self.mean, self.std = mean, std
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


# -- registry ------------------------------------------------------------------------------
NETWORKS: dict[str, type[nn.Module]] = {
    "matchnet": MatchNet,
    "deepcompare_2ch": DeepCompare2ch,
    "deepcompare_2chdeep": DeepCompare2chDeep,
    "deepcompare_2ch2stream": DeepCompare2ch2Stream,
    "deepcompare_siam": DeepCompareSiamese,
    "deepcompare_pseudosiam": DeepComparePseudoSiamese,
    "deepcompare_siam2stream": DeepCompareSiamese2Stream,
    "snet": SNet,
    "cs_snet": CSSNet,
    "tnet": TNet,
    "deepdesc": DeepDesc,
    "tfeat": TFeat,
    "l2net": L2Net,
    "cs_l2net": CSL2Net,
    "binary_l2net": BinaryL2Net,
    "hardnet": HardNet,
}


def network_spec(net: nn.Module) -> dict:
    """``{"class": "module.Qualname", "kwargs": {...}}``: what rebuilds ``net`` (weights aside)."""
    return {"class": f"{type(net).__module__}.{type(net).__qualname__}", "kwargs": dict(getattr(net, "init_kwargs", {}))}


def network_from_spec(spec: dict) -> nn.Module:
    """Rebuild a network from :func:`network_spec` (only classes of this package's modules)."""
    import importlib

    module_name, _, class_name = spec["class"].rpartition(".")
    if not module_name.startswith("descriptors.") and module_name != "kornia.feature":
        raise ValueError(f"refusing to build {spec['class']!r}: not a descriptors network")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**spec.get("kwargs", {}))


def build_network(name: str, **kwargs) -> nn.Module:
    """Instantiate a network of :data:`NETWORKS` by name (configs use the class ``_target_``)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters (shared towers counted once)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)

