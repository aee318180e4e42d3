"""Logo datasets for region search, read in their official layouts.

Region search: given a *query* image (here a clean crop of a brand logo), find its
window in a *reference* image (a Flickr photo showing the same brand elsewhere).

Datasets
--------
FlickrLogos-32
    S. Romberg, L. G. Pueyo, R. Lienhart, R. van Zwol, "Scalable Logo Recognition in
    Real-World Images", ACM ICMR 2011. 8,240 Flickr images, 32 brands + ``no-logo``;
    boxes in ``classes/masks/<class>/<id>.jpg.bboxes.txt``. Distributed on request
    (password-protected archive) by the Multimedia Computing and Computer Vision Lab of
    Augsburg University, for research purposes only; the images keep their Flickr
    licences. :data:`FLICKRLOGOS32_URL`.
FlickrLogos-27
    Y. Kalantidis, L. G. Pueyo, M. Trevisiol, R. van Zwol, Y. Avrithis, "Scalable
    Triangulation-based Logo Recognition", ACM ICMR 2011. Flickr images of 27 brands;
    the training-set annotation lists each box once per "subset" id, hence the
    de-duplication here. Free for research use; the images keep their Flickr licences.
    :data:`FLICKRLOGOS27_URL`.

Boxes follow :mod:`regionsearch.evaluate`: ``(x1, y1, x2, y2)`` in continuous pixel
coordinates, ``x2``/``y2`` exclusive. FlickrLogos-32 ``x y w h`` becomes
``(x, y, x + w, y + h)``; FlickrLogos-27 inclusive corners ``x1 y1 x2 y2`` become
``(x1, y1, x2 + 1, y2 + 1)``. A few official FlickrLogos-27 boxes reach one pixel past
the image border; :func:`load_logo_pairs` clips boxes to the image.

Readers never decode images (they only check the files exist), so they are fast; the
pair builder decodes each needed image once (JPEG ``draft`` mode at the smallest
resolution that still serves every crop) and errors name the offending file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.files import cached_arrays
from core.readers.flickrlogos import (
    FLICKRLOGOS27_URL,
    FLICKRLOGOS32_SPLITS,
    FLICKRLOGOS32_URL,
    LogoAnnotation,
    read_flickrlogos27,
    read_flickrlogos32,
    read_logo_dataset,
)

_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR  # Pillow < 9.1 has no Resampling

__all__ = [
    "FLICKRLOGOS27_URL",
    "FLICKRLOGOS32_URL",
    "FLICKRLOGOS32_SPLITS",
    "LogoAnnotation",
    "cached_logo_pairs",
    "load_logo_pairs",
    "query_aspects_in_reference",
    "read_flickrlogos27",
    "read_flickrlogos32",
    "read_logo_dataset",
    "split_by_image",
]


# --------------------------------------------------------------------------- splits


def split_by_image(
    annotations: Sequence[LogoAnnotation],
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> tuple[list[LogoAnnotation], list[LogoAnnotation], list[LogoAnnotation]]:
    """Deterministic train/val/test split that never puts one image in two splits.

    Images (not boxes) are shuffled with ``seed`` and cut by ``fractions`` (normalised to
    sum to one); every annotation follows its image. Order inside a split follows the
    input order.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers, got {fractions.tolist()}")
    fractions = fractions / fractions.sum()
    images = sorted({str(a.image_path) for a in annotations})
    order = np.random.default_rng(seed).permutation(len(images))
    cuts = np.round(np.cumsum(fractions) * len(images)).astype(int)
    part_of = {}
    for rank, index in enumerate(order):
        part_of[images[index]] = int(np.searchsorted(cuts, rank, side="right"))
    parts: tuple[list, list, list] = ([], [], [])
    for annotation in annotations:
        parts[min(part_of[str(annotation.image_path)], 2)].append(annotation)
    return parts


def _select_split(annotations, split_fraction, split: str, split_seed: int):
    if split_fraction is None:
        return list(annotations)
    if isinstance(split_fraction, (int, float)):
        split_fraction = (1.0 - float(split_fraction), 0.0, float(split_fraction))
    names = ("train", "val", "test")
    if split not in names:
        raise ValueError(f"split must be one of {names}, got {split!r}")
    return split_by_image(annotations, split_fraction, seed=split_seed)[names.index(split)]


# --------------------------------------------------------------------------- pairs


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DatasetNotFoundError("Image not found", path, "Check the dataset root") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptDatasetError(
            f"Unreadable image ({exc})", path, "Re-extract the dataset"
        ) from None


def _image_size(path: Path) -> tuple[int, int]:
    with _open_image(path) as image:
        return image.size


def _clip_box(box: Sequence[float], size: tuple[int, int], path: Path) -> tuple[float, ...]:
    width, height = size
    x1, y1 = max(0.0, box[0]), max(0.0, box[1])
    x2, y2 = min(float(width), box[2]), min(float(height), box[3])
    if x2 <= x1 or y2 <= y1:
        raise CorruptDatasetError(
            f"Box {tuple(box)} lies outside the {width}x{height} image",
            path,
            "Check its annotation",
        )
    return (x1, y1, x2, y2)


def _decode(
    path: Path,
    reference_size: int | None,
    crops: Sequence[tuple[float, float, float, float]],
    query_size: int,
) -> tuple[tuple[int, int], np.ndarray | None, list[np.ndarray]]:
    """Decode ``path`` once; return its size, the resized image and the resized crops."""
    source = image = _open_image(path)
    try:
        full_w, full_h = image.size
        boxes = [_clip_box(box, (full_w, full_h), path) for box in crops]
        # Smallest decode scale that still gives every output at least its own resolution.
        scale = 0.0
        if reference_size is not None:
            scale = max(scale, reference_size / full_w, reference_size / full_h)
        for x1, y1, x2, y2 in boxes:
            scale = max(scale, query_size / (x2 - x1), query_size / (y2 - y1))
        scale = min(scale, 1.0)
        if image.format == "JPEG" and scale < 0.5:
            image.draft("RGB", (math.ceil(full_w * scale), math.ceil(full_h * scale)))
        image = image.convert("RGB")  # forces the decode
    except (DatasetNotFoundError, CorruptDatasetError):
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDatasetError(
            f"Unreadable or truncated image ({exc})", path, "Re-extract the dataset"
        ) from None
    finally:
        source.close()
    sx, sy = image.size[0] / full_w, image.size[1] / full_h
    reference = None
    if reference_size is not None:
        reference = np.asarray(
            image.resize((reference_size, reference_size), _BILINEAR),
            dtype=np.uint8,
        )
    queries = [
        np.asarray(
            image.resize(
                (query_size, query_size),
                _BILINEAR,
                box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy),
            ),
            dtype=np.uint8,
        )
        for x1, y1, x2, y2 in boxes
    ]
    return (full_w, full_h), reference, queries


def load_logo_pairs(
    annotations: Sequence[LogoAnnotation],
    n_pairs: int,
    seed: int,
    query_size: int = 64,
    reference_size: int = 160,
    split_fraction: Sequence[float] | float | None = None,
    split: str = "test",
    split_seed: int = 0,
    query_min_size: float = 16.0,
    min_box_size: float = 0.0,
    balance_brands: bool = False,
) -> dict[str, np.ndarray]:
    """Deterministic (query, reference, box) triples from logo annotations.

    For each pair a *target* annotation (brand ``b`` in image ``I``) is drawn; the query
    is a crop of another box of brand ``b`` from a different image, resized to
    ``query_size``²; the reference is ``I`` resized (aspect not kept) to
    ``reference_size``²; the ground truth is the target box scaled to reference pixels.
    Brands with fewer than two images are skipped.

    Args:
        annotations: from :func:`read_flickrlogos27` / :func:`read_flickrlogos32`.
        n_pairs, seed: how many pairs; the same seed gives the same pairs.
        split_fraction: if given, first keep only the ``split`` part
            (``train``/``val``/``test``) of :func:`split_by_image` (``annotations``,
            ``split_fraction``, ``split_seed``), so train and test pairs share no image.
            A float ``f`` means ``(1 - f, 0, f)``.
        query_min_size: prefer query boxes at least this many original pixels on each
            side (falls back to any box of the brand when none is that large).
        min_box_size: skip targets whose box in reference pixels is smaller than this on
            either side (reads the image headers).
        balance_brands: draw the target brand uniformly first, instead of drawing
            targets uniformly over boxes.

    Returns:
        ``queries`` uint8 (n, qs, qs, 3), ``references`` uint8 (n, rs, rs, 3), ``boxes``
        float32 (n, 4) ``(x1, y1, x2, y2)`` in reference pixels, ``query_labels`` int64
        (n,) index into ``brands`` (the sorted brands of all of ``annotations``, before
        any split), plus ``query_images``/``reference_images`` (paths as strings) and
        ``query_boxes`` float32 (n, 4) (the query crop in its own image's pixels).
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    annotations = list(annotations)
    brands = sorted({a.brand for a in annotations})
    brand_index = {brand: i for i, brand in enumerate(brands)}
    pool = _select_split(annotations, split_fraction, split, split_seed)

    by_brand: dict[str, list[LogoAnnotation]] = {}
    for annotation in pool:
        by_brand.setdefault(annotation.brand, []).append(annotation)
    eligible = {b: anns for b, anns in by_brand.items() if len({a.image_path for a in anns}) >= 2}

    sizes: dict[Path, tuple[int, int]] = {}
    if min_box_size > 0:
        for b in list(eligible):
            kept = []
            for a in eligible[b]:
                if a.image_path not in sizes:
                    sizes[a.image_path] = _image_size(a.image_path)
                w, h = sizes[a.image_path]
                box = _clip_box(a.box, (w, h), a.image_path)
                if (box[2] - box[0]) * reference_size / w >= min_box_size and (
                    box[3] - box[1]
                ) * reference_size / h >= min_box_size:
                    kept.append(a)
            # the target must be big enough; the query may come from any box of the brand
            eligible[b] = (kept, eligible[b])
    else:
        eligible = {b: (anns, anns) for b, anns in eligible.items()}
    eligible = {b: pair for b, pair in sorted(eligible.items()) if pair[0]}
    if n_pairs and not eligible:
        raise ValueError(
            "No brand has boxes in two different images"
            + (f" with a box >= {min_box_size}px in reference pixels" if min_box_size > 0 else "")
            + f" among {len(pool)} annotations; cannot build query/reference pairs"
        )

    rng = np.random.default_rng(seed)
    eligible_brands = list(eligible)
    targets_all = [a for b in eligible_brands for a in eligible[b][0]]
    plan: list[tuple[LogoAnnotation, LogoAnnotation]] = []
    queue: list[int] = []
    brand_queues: dict[str, list[int]] = {}
    for _ in range(n_pairs):
        if balance_brands:
            brand = eligible_brands[int(rng.integers(len(eligible_brands)))]
            candidates = eligible[brand][0]
            bq = brand_queues.setdefault(brand, [])
            if not bq:
                bq.extend(rng.permutation(len(candidates)).tolist())
            target = candidates[bq.pop()]
        else:
            if not queue:  # cycle through all targets in a random order before repeating
                queue.extend(rng.permutation(len(targets_all)).tolist())
            target = targets_all[queue.pop()]
        others = [a for a in eligible[target.brand][1] if a.image_path != target.image_path]
        if not others:  # the only other-image boxes were filtered as targets only
            others = [a for a in by_brand[target.brand] if a.image_path != target.image_path]
        clean = [a for a in others if a.width >= query_min_size and a.height >= query_min_size]
        candidates = clean or others
        plan.append((target, candidates[int(rng.integers(len(candidates)))]))

    # Decode every needed image once.
    need_reference: dict[Path, bool] = {}
    need_crops: dict[Path, list[tuple[float, float, float, float]]] = {}
    for target, query in plan:
        need_reference[target.image_path] = True
        need_reference.setdefault(query.image_path, False)
        crops = need_crops.setdefault(query.image_path, [])
        if query.box not in crops:
            crops.append(query.box)
    references: dict[Path, np.ndarray] = {}
    crops_out: dict[tuple[Path, tuple], np.ndarray] = {}
    for path, wants_reference in need_reference.items():
        crops = need_crops.get(path, [])
        size, reference, queries = _decode(
            path, reference_size if wants_reference else None, crops, query_size
        )
        sizes[path] = size
        if reference is not None:
            references[path] = reference
        for box, crop in zip(crops, queries):
            crops_out[(path, box)] = crop

    n = len(plan)
    out_queries = np.zeros((n, query_size, query_size, 3), dtype=np.uint8)
    out_references = np.zeros((n, reference_size, reference_size, 3), dtype=np.uint8)
    out_boxes = np.zeros((n, 4), dtype=np.float32)
    out_query_boxes = np.zeros((n, 4), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    for i, (target, query) in enumerate(plan):
        w, h = sizes[target.image_path]
        x1, y1, x2, y2 = _clip_box(target.box, (w, h), target.image_path)
        sx, sy = reference_size / w, reference_size / h
        out_boxes[i] = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        out_references[i] = references[target.image_path]
        out_queries[i] = crops_out[(query.image_path, query.box)]
        out_query_boxes[i] = _clip_box(query.box, sizes[query.image_path], query.image_path)
        labels[i] = brand_index[target.brand]
    return {
        "queries": out_queries,
        "references": out_references,
        "boxes": out_boxes,
        "query_labels": labels,
        "brands": np.array(brands, dtype=str),
        "query_images": np.array([str(q.image_path) for _, q in plan], dtype=str),
        "reference_images": np.array([str(t.image_path) for t, _ in plan], dtype=str),
        "query_boxes": out_query_boxes,
    }


def query_aspects_in_reference(
    query_boxes: np.ndarray, reference_images: Sequence[str], reference_shape: tuple[int, int]
) -> np.ndarray:
    """Width / height of each pair's query, at its true aspect, in its reference's pixels.

    The pairs squash the query crop to a square and the scene to ``reference_shape``
    ``(H, W)``; a template that keeps the logo's shape in the scene must therefore be
    ``(qw / qh) * (W / w_img) / (H / h_img)`` wide per unit of height, where ``qw x qh``
    is the query box in its own image (``query_boxes``) and ``w_img x h_img`` the
    reference image's size (read from its header). Uses only what a user has at query
    time: the query's crop and the reference image.
    """
    query_boxes = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    if len(reference_images) != len(query_boxes):
        raise ValueError(f"{len(query_boxes)} query boxes but {len(reference_images)} reference images")
    widths, heights = query_boxes[:, 2] - query_boxes[:, 0], query_boxes[:, 3] - query_boxes[:, 1]
    if (widths <= 0).any() or (heights <= 0).any():
        raise ValueError("every query box needs a positive width and height")
    sizes: dict[str, tuple[int, int]] = {}
    H, W = reference_shape
    aspects = np.empty(len(query_boxes))
    for i, path in enumerate(reference_images):
        if path not in sizes:
            sizes[path] = _image_size(Path(path))
        image_w, image_h = sizes[path]
        aspects[i] = widths[i] / heights[i] * (W / image_w) / (H / image_h)
    return aspects


# --------------------------------------------------------------------------- cache

_CACHE_VERSION = 1


def _jsonable(value):
    if isinstance(value, LogoAnnotation):
        return [str(value.image_path), value.brand, [float(v) for v in value.box]]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "items"):  # OmegaConf DictConfig and friends
        return _jsonable(dict(value.items()))
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return repr(value)


def cached_logo_pairs(
    cache_dir: str | os.PathLike, name: str, builder_kwargs: dict
) -> dict[str, np.ndarray]:
    """:func:`load_logo_pairs` memoised in ``cache_dir/<name>-<hash>.npz``.

    ``builder_kwargs`` are the keyword arguments of :func:`load_logo_pairs`; instead of
    ``annotations`` they may name the data with ``dataset`` (``flickrlogos27`` /
    ``flickrlogos32``), ``root`` and optional ``reader_kwargs`` (then a cache hit does
    not touch the dataset). The hash covers all of them; delete the cache when the data
    change.
    """
    kwargs = dict(builder_kwargs)
    key_material = {"version": _CACHE_VERSION, "kwargs": _jsonable(kwargs)}
    digest = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{name}-{digest}.npz"

    def build() -> dict[str, np.ndarray]:
        if "annotations" not in kwargs:
            dataset = kwargs.pop("dataset", None)
            root = kwargs.pop("root", None)
            if dataset is None or root is None:
                raise ValueError("builder_kwargs needs 'annotations' or both 'dataset' and 'root'")
            reader_kwargs = dict(kwargs.pop("reader_kwargs", None) or {})
            kwargs["annotations"] = read_logo_dataset(str(dataset), root, **reader_kwargs)
        return load_logo_pairs(**kwargs)

    return cached_arrays(path, build)
