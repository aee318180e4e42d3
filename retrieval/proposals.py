"""Region proposals for regional attention (seed 003's RPN ablation): the region-proposal
network of torchvision's Faster R-CNN (ResNet-50 FPN, COCO), boxes in input pixels.

The COCO weights are a download (``pretrained=True``; offline, ONE
:class:`~retrieval.nets.backbones.WeightsNotFoundError` names the file and where to put it);
``pretrained=False`` gives random weights (tests, shapes). The boxes feed
:class:`~retrieval.nets.attention.RegionalAttentionNet` (``boxes=``) or ``roi_mac`` / ``roi_mean``.
:func:`sliding_window_boxes` is the learning-free stand-in: dense multi-scale windows in
feature-map cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from .nets.backbones import load_torchvision_weights


class RegionProposals(nn.Module):
    """Top-scoring RPN boxes per image, in the pixel frame of the input images.

    Args:
        max_boxes: proposals kept per image (after the RPN's NMS, highest objectness first).
        pretrained: load torchvision's COCO Faster R-CNN weights (a download).
        min_size, max_size: the detector's own resizing (torchvision defaults 800 / 1333).

    Shape:
        images float (B, 3, H, W) in [0, 1] (RGB, NOT mean/std-normalised: the detector
        normalises itself) -> list of B tensors (K_i, 4) ``x1, y1, x2, y2``, K_i <= max_boxes
    """

    def __init__(self, max_boxes: int = 64, pretrained: bool = True, min_size: int = 800, max_size: int = 1333) -> None:
        super().__init__()
        if max_boxes < 1:
            raise ValueError(f"max_boxes must be positive, got {max_boxes}")
        detector = fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, min_size=min_size, max_size=max_size,
            rpn_post_nms_top_n_test=max_boxes,
        )
        if pretrained:
            detector.load_state_dict(load_torchvision_weights("fasterrcnn_resnet50_fpn"))
        self.transform, self.backbone, self.rpn = detector.transform, detector.backbone, detector.rpn
        self.max_boxes = max_boxes
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, _ = self.transform(list(images))
        proposals, _ = self.rpn(image_list, self.backbone(image_list.tensors))
        out = []
        for boxes, resized, original in zip(proposals, image_list.image_sizes, sizes):
            # back from the detector's resized frame to the input's
            scale = boxes.new_tensor([original[1] / resized[1], original[0] / resized[0]] * 2)
            boxes = (boxes[: self.max_boxes] * scale).round()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, original[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, original[0])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out.append(boxes[keep])
        return out


def sliding_window_boxes(
    height: int,
    width: int,
    scales: Sequence[float] = (1.0, 0.75, 0.5, 0.35),
    aspects: Sequence[float] = (1.0, 2.0, 0.5),
    overlap: float = 0.5,
    max_boxes: int = 64,
) -> torch.Tensor:
    """Region-proposal-style boxes on a ``height x width`` feature map: dense multi-scale sliding
    windows (side ``scale * min(h, w)``, width/height ratio ``aspect``, neighbours overlapping by
    ``overlap``), the whole map first, duplicates removed, at most ``max_boxes`` (larger scales
    first). A learning-free stand-in for RPN proposals.

    Returns long ``(R, 4)`` cell boxes ``x0, y0, x1, y1`` (exclusive ends).
    """
    boxes: list[tuple[int, int, int, int]] = [(0, 0, width, height)]
    short = min(height, width)
    for scale in scales:
        for aspect in aspects:
            side = scale * short
            box_w = int(min(width, max(1, round(side * np.sqrt(aspect)))))
            box_h = int(min(height, max(1, round(side / np.sqrt(aspect)))))
            step_x = max(1, round(box_w * (1 - overlap)))
            step_y = max(1, round(box_h * (1 - overlap)))
            xs = sorted({*range(0, width - box_w + 1, step_x), width - box_w})
            ys = sorted({*range(0, height - box_h + 1, step_y), height - box_h})
            boxes += [(x, y, x + box_w, y + box_h) for y in ys for x in xs]
    unique = list(dict.fromkeys(boxes))[:max_boxes]
    return torch.tensor(unique, dtype=torch.long).view(-1, 4)
