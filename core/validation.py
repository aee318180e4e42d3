"""Checks of what a user hands the Hydra-free APIs (``*.api``): one ``ValueError`` naming the argument.

A NaN pixel gives a NaN box or vector, and a NaN vector an arbitrary ranking, without any error;
a colour image given to a grey model is read as a batch of narrow grey images; an int64 image has
no agreed range. Every API runs these checks on its inputs before the network sees them, so the
user reads what is wrong with which argument instead of a wrong answer or a shape error from deep
inside the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Trailing axis sizes read as channels in (h, w, C) arrays: grey, RGB, RGBA.
CHANNEL_AXIS_SIZES = (1, 3, 4)


def _shape(values) -> tuple[int, ...]:
    return tuple(values.shape) if hasattr(values, "shape") else np.shape(values)


def require_finite(values, name: str) -> None:
    """Raise ``ValueError`` if a float array or tensor holds NaN or infinite values (integers pass)."""
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point():
            return
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad, total = int((~finite).sum()), values.numel()
    else:
        array = np.asarray(values)
        if not np.issubdtype(array.dtype, np.inexact):
            return
        finite = np.isfinite(array)
        if finite.all():
            return
        bad, total = int(finite.size - np.count_nonzero(finite)), finite.size
    raise ValueError(f"{name} has {bad} NaN or infinite value{'s' if bad > 1 else ''} (of {total}); pass finite values")


def require_pixel_dtype(values, name: str) -> None:
    """Images are uint8 (0..255) or float (0..1): other integer types have no agreed range
    (0..255? 0..65535?), so refuse them rather than guess a scale."""
    dtype = values.dtype if isinstance(values, torch.Tensor | np.ndarray) else np.asarray(values).dtype
    if dtype in (torch.uint8, np.uint8) or (dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating)):
        return
    raise ValueError(f"{name} must be uint8 (0..255) or float (0..1), got dtype {dtype}")


def require_ndim(values, name: str, allowed: Sequence[int], layouts: str) -> None:
    """Raise ``ValueError`` unless ``values`` has one of the ``allowed`` numbers of axes;
    ``layouts`` names the accepted layouts, e.g. ``"(h, w) or (B, h, w)"``."""
    shape = _shape(values)
    if len(shape) not in allowed:
        raise ValueError(f"{name} must be {layouts}, got shape {shape}")


def require_channels(name: str, found: int, expected: int, shape: Sequence[int], layouts: str) -> None:
    """Raise ``ValueError`` when an image has ``found`` channels where the model takes ``expected``."""
    if found == expected:
        return
    kinds = {1: "grey", 3: "RGB", 4: "RGBA"}
    found_kind = kinds.get(found, f"{found}-channel")
    raise ValueError(
        f"{name} is a {found_kind} image (shape {tuple(shape)}) but the model takes {kinds.get(expected, f'{expected}-channel')} "
        f"images ({expected} channel{'s' if expected > 1 else ''}): pass {layouts}"
    )


def require_nonempty_image(name: str, height: int, width: int) -> None:
    """Raise ``ValueError`` for an image without pixels."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{name} is empty ({height}x{width} pixels)")


def require_fits_inside(inner: str, inner_hw: Sequence[int], outer: str, outer_hw: Sequence[int]) -> None:
    """Raise ``ValueError`` unless an ``inner`` image (h, w) is no larger than ``outer`` on each side
    (a query is a region of its reference)."""
    (h, w), (H, W) = inner_hw, outer_hw
    if h > H or w > W:
        raise ValueError(f"{outer} ({H}x{W} pixels) is smaller than the {inner} ({h}x{w}): the {inner} must fit inside the {outer}")


def require_same_count(first: str, first_count: int, second: str, second_count: int) -> None:
    """Raise ``ValueError`` when two batches that pair up have different lengths."""
    if first_count != second_count:
        raise ValueError(f"{first} holds {first_count} image{'s' if first_count != 1 else ''} but {second} holds {second_count}: pass one {second} per {first}")
