"""Image decoding for retrieval: max-side resizing, query box crops, ImageNet normalisation.

Test images are resized so that their longer side is at most ``image_size`` (cirtorch's
``imresize``/``thumbnail`` semantics: never enlarged). A query is cropped to its box
*first* and then scaled by the factor its full image would get, so it keeps the database
scale (cirtorch v1.2 "fixed cropping of down-sampled query image"). Training images are
resized to a fixed ``S x S`` square so that tuples and batches stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from core.errors import CorruptDatasetError, DatasetNotFoundError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageListDataset",
    "SameSizeBatchSampler",
    "clip_box",
    "image_size_of",
    "load_image",
    "normalize",
    "output_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS  # cirtorch's Image.ANTIALIAS

Box = tuple[float, float, float, float]


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DatasetNotFoundError("Image not found", path, "Check the dataset root") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptDatasetError(f"Unreadable image ({exc})", path, "Re-extract or re-download the dataset") from None


def image_size_of(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (no decode)."""
    with _open(Path(path)) as image:
        return image.size


def clip_box(box: Sequence[float], size: tuple[int, int], path: Path | None = None) -> Box:
    """``box`` clipped to a ``(width, height)`` image; an error when nothing is left."""
    width, height = size
    x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if x2 <= x1 or y2 <= y1:
        raise CorruptDatasetError(f"Box {tuple(box)} lies outside the {width}x{height} image", path or "<image>", "Check its annotation")
    return (x1, y1, x2, y2)


def output_size(full_size: tuple[int, int], box: Sequence[float] | None, image_size: int | None) -> tuple[int, int]:
    """``(width, height)`` that :func:`load_image` returns (max-side mode)."""
    width, height = full_size
    scale = 1.0 if image_size is None else min(1.0, image_size / max(width, height))
    if box is not None:
        x1, y1, x2, y2 = clip_box(box, full_size)
        width, height = x2 - x1, y2 - y1
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalize(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(3, H, W)`` normalised with the ImageNet mean/std."""
    tensor = torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def load_image(
    path: str | Path, box: Sequence[float] | None = None, image_size: int | None = None, square: bool = False
) -> torch.Tensor:
    """Decode ``path`` into a normalised float ``(3, H, W)`` tensor.

    ``square=False``: longer side at most ``image_size`` (a crop keeps its image's scale).
    ``square=True``: the image (or crop) resized to ``image_size x image_size``.
    Errors name the file (missing, unreadable or truncated).
    """
    path = Path(path)
    source = _open(path)
    try:
        full = source.size
        region = clip_box(box, full, path) if box is not None else (0.0, 0.0, float(full[0]), float(full[1]))
        if square:
            if image_size is None:
                raise ValueError("square resizing needs an image_size")
            target = (image_size, image_size)
        else:
            target = output_size(full, region if box is not None else None, image_size)
        if image_size is not None and source.format == "JPEG":
            scale = max(target[0] / (region[2] - region[0]), target[1] / (region[3] - region[1]))
            if scale < 0.5:  # decode at a reduced JPEG scale: much faster for big photos
                source.draft("RGB", (math.ceil(full[0] * scale), math.ceil(full[1] * scale)))
                sx, sy = source.size[0] / full[0], source.size[1] / full[1]
                region = (region[0] * sx, region[1] * sy, region[2] * sx, region[3] * sy)
        image = source.convert("RGB")
        if target != image.size or box is not None:
            image = image.resize(target, _LANCZOS, box=region)
        pixels = np.asarray(image, dtype=np.uint8)
    except (DatasetNotFoundError, CorruptDatasetError):
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDatasetError(f"Unreadable or truncated image ({exc})", path, "Re-extract or re-download the dataset") from None
    finally:
        source.close()
    return normalize(pixels)


class ImageListDataset(Dataset):
    """``{"image": float (3, H, W), "index": long ()}`` for a list of images or box crops."""

    def __init__(
        self,
        paths: Sequence[Path],
        boxes: Sequence[Box | None] | None = None,
        image_size: int | None = 1024,
        square: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        if len(self.boxes) != len(self.paths):
            raise ValueError("paths and boxes have different lengths")
        self.image_size = image_size
        self.square = square

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = load_image(self.paths[index], self.boxes[index], self.image_size, self.square)
        return {"image": image, "index": torch.tensor(index, dtype=torch.long)}

    def output_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of item ``index`` (reads the file header only)."""
        if self.square:
            return (self.image_size, self.image_size)
        return output_size(image_size_of(self.paths[index]), self.boxes[index], self.image_size)


class SameSizeBatchSampler(Sampler[list[int]]):
    """In-order batches of up to ``batch_size`` consecutive items of equal output size.

    Images of varying sizes cannot be stacked: runs of equal size are batched, the rest
    comes one at a time. ``batch_size=1`` reads no headers.
    """

    def __init__(self, dataset: ImageListDataset, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self._batches: list[list[int]] | None = None

    def batches(self) -> list[list[int]]:
        if self._batches is None:
            n = len(self.dataset)
            if self.batch_size == 1 or n == 0:
                self._batches = [[i] for i in range(n)]
            else:
                batches: list[list[int]] = []
                previous = None
                for i in range(n):
                    size = self.dataset.output_size(i)
                    if size != previous or len(batches[-1]) >= self.batch_size:
                        batches.append([])
                    batches[-1].append(i)
                    previous = size
                self._batches = batches
        return self._batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
