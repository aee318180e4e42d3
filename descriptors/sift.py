"""SIFT on patches: OpenCV's SIFT descriptor computed at the patch centre, the keypoint
size chosen so that the descriptor window covers the patch. A descriptor function like any
learned one: ``patches (N, H, W) uint8 (or float in [0, 1], (N, 1, H, W)) -> (N, 128)``."""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["sift_describe", "SIFT_SIZE_FACTOR"]

#: OpenCV samples the descriptor within radius 3/2 * size * sqrt(2) * (4 + 1) / 2 of the
#: keypoint (4x4 cells of 3 sigma, sigma = size / 2, plus rotation and interpolation margins),
#: so size = side / 5.303 makes that radius the patch's half side (as hpatches-benchmark's
#: ``extract_opencv_sift.py`` does).
SIFT_SIZE_FACTOR = 1.5 * np.sqrt(2) * 2.5


def _as_uint8(patches) -> np.ndarray:
    if isinstance(patches, torch.Tensor):
        patches = patches.detach().cpu()
        if patches.dim() == 4:
            patches = patches[:, 0]
        patches = patches.numpy()
    patches = np.asarray(patches)
    if patches.ndim == 4:
        patches = patches[:, 0]
    if patches.ndim != 3:
        raise ValueError(f"patches must be (N, H, W) or (N, 1, H, W), got {patches.shape}")
    if patches.dtype != np.uint8:
        patches = np.clip(np.rint(patches.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return patches


def sift_describe(patches, root: bool = False) -> np.ndarray:
    """OpenCV SIFT descriptors of the patches, upright (angle 0), float32 ``(N, 128)``.

    ``root=True`` gives RootSIFT (L1-normalise, then square root: Arandjelovic & Zisserman).
    """
    patches = _as_uint8(patches)
    n, height, width = patches.shape
    sift = cv2.SIFT_create()
    keypoint = [cv2.KeyPoint((width - 1) / 2.0, (height - 1) / 2.0, min(height, width) / SIFT_SIZE_FACTOR, 0.0)]
    out = np.zeros((n, 128), dtype=np.float32)
    for i in range(n):
        _, descriptor = sift.compute(np.ascontiguousarray(patches[i]), keypoint)
        if descriptor is not None and len(descriptor):
            out[i] = descriptor[0]
    if root:
        out = np.sqrt(out / np.maximum(out.sum(1, keepdims=True), 1e-12))
    return out
