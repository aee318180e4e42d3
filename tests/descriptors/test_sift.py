"""SIFT on patches: OpenCV's descriptor at the patch centre, usable like a learned one."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from descriptors.sift import SIFT_SIZE_FACTOR, sift_describe


def patches(n: int = 6, size: int = 65) -> np.ndarray:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(n, size // 4, size // 4))
    return np.stack([np.clip(cv2.resize(p, (size, size), interpolation=cv2.INTER_CUBIC) * 60 + 128, 0, 255) for p in raw]).astype(np.uint8)


def test_shape_and_matches_opencv_directly():
    stack = patches()
    out = sift_describe(stack)
    assert out.shape == (6, 128) and out.dtype == np.float32
    keypoint = cv2.KeyPoint(32.0, 32.0, 65 / SIFT_SIZE_FACTOR, 0.0)
    _, direct = cv2.SIFT_create().compute(stack[2], [keypoint])
    np.testing.assert_array_equal(out[2], direct[0])
    assert np.linalg.norm(out, axis=1).min() > 100  # OpenCV scales unit vectors by 512


def test_float_tensor_input_and_rootsift():
    stack = patches(4, 64)
    from_uint8 = sift_describe(stack)
    from_tensor = sift_describe(torch.from_numpy(stack).float().div(255).unsqueeze(1))
    np.testing.assert_array_equal(from_uint8, from_tensor)
    root = sift_describe(stack, root=True)
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, rtol=1e-5)


def test_discriminates_patches():
    stack = patches(8)
    d = sift_describe(stack)
    same = sift_describe(np.clip(stack.astype(int) + 10, 0, 255).astype(np.uint8))  # brightness shift
    own = np.linalg.norm(d - same, axis=1)
    others = np.linalg.norm(d - np.roll(same, 1, axis=0), axis=1)
    assert (own < others).all()
