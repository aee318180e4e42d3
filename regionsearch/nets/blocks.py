"""The search path's building blocks: windows cut from the reference, the two encoders (the
seed's five Conv-ReLU layers and the offline ImageNet EfficientNet-Lite0 blocks) and the
similarity map of the query over the whole reference used by the map first move."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def crop_windows(images: torch.Tensor, boxes: torch.Tensor, size: int, batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Resample windows to ``size x size`` in a single batched op.

    Uses ``roi_align`` with half-pixel alignment, which averages several samples per
    output cell when shrinking (so a whole 100x100 reference seen as a 32x32 glimpse is
    not aliased), and equals plain slicing for an integer box of the output size.
    By default window ``i`` is cut from image ``i``; ``batch_index`` (K,) picks the image
    of each of K windows instead (many windows of one image without copying it).

    Shape:
        images: (B, C, H, W), boxes: (B, 4) or (K, 4) with batch_index -> (B or K, C, size, size)
    """
    if batch_index is None:
        if images.dim() != 4 or boxes.shape != (images.shape[0], 4):
            raise ValueError(f"expected images (B,C,H,W) and boxes (B,4), got {tuple(images.shape)} and {tuple(boxes.shape)}")
        batch_index = torch.arange(images.shape[0], device=images.device)
    # float32 rois: a bf16 batch index would be inexact above 256
    rois = torch.cat([batch_index.to(device=images.device, dtype=torch.float32).unsqueeze(1), boxes.to(images.device, torch.float32)], dim=1)
    crops = roi_align(images.float(), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return crops.to(images.dtype)


class SiameseEncoder(nn.Module):
    """Five Conv-ReLU layers followed by global average pooling (shared by query and window).

    With the default strides a 32x32 glimpse shrinks to 1x1 before the pooling, so the
    feature still knows *where* in the window a pattern sits (zero padding breaks the
    translation invariance): the policy needs that to move the window.

    Shape:
        (B, in_channels, glimpse_size, glimpse_size) -> (B, channels[-1])
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 64, 128, 128),
        strides: tuple[int, ...] = (2, 2, 2, 2, 2),
        kernel_size: int = 3,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        channels, strides = tuple(channels), tuple(strides)
        if len(channels) != 5 or len(strides) != 5:
            raise ValueError(f"the encoder has five Conv-ReLU layers: got channels={channels}, strides={strides}")
        layers: list[nn.Module] = []
        previous = in_channels
        for width, stride in zip(channels, strides):
            layers += [nn.Conv2d(previous, width, kernel_size, stride=stride, padding=kernel_size // 2), nn.ReLU(inplace=True)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_dim = channels[-1]
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]

    def forward_with_map(self, x: torch.Tensor, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled feature and, when ``layer`` (1..5) is given, the feature map after that
        Conv-ReLU layer (stride ``2 ** layer`` with the default strides), from one pass.

        Shape:
            (B, C, H, W) -> (B, D), (B, channels[layer - 1], H / 2**layer, W / 2**layer)
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        feature_map = None
        if layer is not None:
            feature_map = self.features[: 2 * layer](x)
            x = self.features[2 * layer :](feature_map)
        else:
            x = self.features(x)
        feature = x.mean(dim=(2, 3))
        return (F.normalize(feature, dim=1) if self.normalize else feature), feature_map


class PretrainedEncoder(nn.Module):
    """The first MBConv blocks of the offline ImageNet EfficientNet-Lite0 (:mod:`core.backbones`)
    plus a small trainable head: colour glimpses -> a unit-norm feature that keeps the layout.

    The head (1x1 Conv-ReLU, then a linear map of the flattened cells) keeps *where* in the
    glimpse a pattern sits, as the five-layer encoder's 1x1 output does: the policy needs it.
    ``freeze``: the backbone gets no gradient and stays in eval mode (its BatchNorm statistics
    never move); only the head learns. :meth:`fuse_for_inference` (frozen only) runs the maps
    through a faster folded copy of the backbone while no gradient is recorded.

    Shape:
        (B, 3, glimpse_size, glimpse_size) RGB in [0, 1] -> (B, out_dim); the map of
        :meth:`forward_with_map` is block ``block``'s output, stride :attr:`map_stride`.
    """

    def __init__(self, glimpse_size: int = 64, block: int = 4, out_dim: int = 128, freeze: bool = True, pretrained: bool = True) -> None:
        super().__init__()
        from core.backbones import LITE0_BLOCK_STRIDES, EfficientNetLite0Blocks

        self.backbone = EfficientNetLite0Blocks((block,), pretrained=pretrained)
        self.map_stride = LITE0_BLOCK_STRIDES[block]
        self.map_channels = self.backbone.channels[0]
        cells = math.ceil(glimpse_size / self.map_stride)
        self.head = nn.Sequential(nn.Conv2d(self.map_channels, 16, 1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(16 * cells * cells, out_dim))
        self.in_channels = 3
        self.out_dim = out_dim
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        # FusedLite0Blocks or None, kept out of the module tree (and so out of the state dict)
        self.__dict__["_fused_backbone"] = None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # frozen: BatchNorm keeps its ImageNet statistics
        if mode:
            self.__dict__["_fused_backbone"] = None
        return self

    def fuse_for_inference(self) -> PretrainedEncoder:
        """Feature maps computed without gradient go through a folded copy of the frozen backbone
        (:class:`core.backbones.FusedLite0Blocks`: same maps to float rounding, about 1.4x faster
        on a CPU). The copy is dropped by ``train()``, and once any backbone tensor has been replaced
        or changed in place since (a loaded state dict, ``.to()``, an edited weight): fuse again."""
        if not self.freeze:
            raise ValueError("only a frozen backbone can be fused: a trained one changes its weights")
        self.__dict__["_fused_backbone"] = self.backbone.fused_for_inference()  # on the backbone's device
        self.__dict__["_fused_from"] = self._backbone_state()
        return self

    def _backbone_state(self) -> tuple:
        """Which tensors the backbone holds and their in-place version counters: a loaded state dict
        or an edited weight changes it."""
        return tuple((t.data_ptr(), t._version) for t in (*self.backbone.parameters(), *self.backbone.buffers()))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        backbone = self.backbone
        if self._fused_backbone is not None and not torch.is_grad_enabled():
            if self._backbone_state() == self._fused_from:
                backbone = self._fused_backbone
            else:
                self.__dict__["_fused_backbone"] = None  # stale: the backbone changed after fusing
        return backbone(backbone.normalize(x))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]

    def forward_with_map(self, x: torch.Tensor, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feature_map = self.feature_map(x)
        return F.normalize(self.head(feature_map), dim=1), feature_map

    def pool_windows(self, feature_map: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """Features of windows read off an already computed map (Fast R-CNN's RoI pooling):
        ``boxes`` in the pixels of the image the map came from. A glimpse then costs no
        backbone pass, whatever its size.

        Shape:
            feature_map: (B, C, h, w); boxes: (K, 4) -> (K, out_dim)
        """
        if batch_index is None:
            batch_index = torch.arange(boxes.shape[0], device=boxes.device)
        rois = torch.cat([batch_index.to(feature_map.device, torch.float32).unsqueeze(1), boxes.to(feature_map.device, torch.float32)], dim=1)
        cells = math.isqrt(self.head[-1].in_features // 16)
        pooled = roi_align(feature_map.float(), rois, output_size=(cells, cells), spatial_scale=1 / self.map_stride, sampling_ratio=2, aligned=True)
        return F.normalize(self.head(pooled), dim=1)


def fuse_frozen_backbone(net: nn.Module, fuse: bool = True) -> bool:
    """Fuse ``net.encoder`` for inference where it is a frozen :class:`PretrainedEncoder`
    (:meth:`PretrainedEncoder.fuse_for_inference`; ``fuse=False`` drops a folded copy, e.g. before
    ``torch.export`` traces the net); whether the net has one now. Changes the net passed in."""
    encoder = getattr(net, "encoder", None)
    if not isinstance(encoder, PretrainedEncoder):
        return False
    if fuse and encoder.freeze:
        encoder.fuse_for_inference()
        return True
    encoder.__dict__["_fused_backbone"] = None
    return False


def correlate(reference_map: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-correlation of unit-norm feature cells, averaged over the template:
    the mean cosine similarity of the template with every placement inside the map.

    Shape:
        reference_map: (B, C, h, w), template: (B, C, k, l) -> (B, h - k + 1, w - l + 1)
    """
    batch, channels, height, width = reference_map.shape
    if template.shape[:2] != (batch, channels) or template.shape[2] > height or template.shape[3] > width:
        raise ValueError(f"template {tuple(template.shape)} does not fit the map {tuple(reference_map.shape)}")
    reference_map, template = F.normalize(reference_map, dim=1), F.normalize(template, dim=1)
    scores = F.conv2d(reference_map.reshape(1, batch * channels, height, width), template, groups=batch)
    return scores[0] / (template.shape[2] * template.shape[3])


class SimilarityMap(nn.Module):
    """Where is the query in the whole-reference view? A coarse score per location.

    The query's and the reference's feature maps (an intermediate layer of the siamese
    encoder) go through a shared 1x1 projection; the query map is then correlated with the
    reference map (SiamFC style) and scaled by a learned temperature: the logits of a
    categorical first move. One extra pass over the first view, no extra windows.

    Shape:
        reference_map: (B, C, h, w), query_map: (B, C, k, l) -> logits (B, (h - k + 1) * (w - l + 1))
    """

    def __init__(self, channels: int, hidden: int = 0, initial_scale: float = 10.0) -> None:
        super().__init__()
        # hidden > 0: a 3x3 Conv-ReLU of that width before the 1x1 projection (more room to
        # learn map-specific features than a linear map of the encoder's)
        if hidden > 0:
            self.projection = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1))
        else:
            self.projection = nn.Conv2d(channels, channels, 1)
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial_scale)))

    def forward(self, reference_map: torch.Tensor, query_map: torch.Tensor) -> torch.Tensor:
        scores = correlate(self.projection(reference_map), self.projection(query_map))
        return self.log_scale.exp() * scores.flatten(1)
