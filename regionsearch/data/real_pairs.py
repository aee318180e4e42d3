"""Query/reference training pairs from real photographs, for the search path on real images.

A pair is a query (a region of one photo) and a reference (another view of the same scene or
object, or the same photo under a photometric and geometric change) with the query's box in
it. Four sources, each split by scene / object / photo so that no content is shared between
``train`` and ``val``:

- ``sequences``: the Oxford affine sequences and HPatches' v_churchill (data README): a box in
  image 1 mapped through the ground-truth homography H1toK; its target is the bounding box of
  the mapped corners in image K. graf's lower band is off the wall plane (README): queries
  there are not drawn. Train: wall, bark, leuven, graf; val: bikes, v_churchill.
- ``coil``: COIL-100 object views (Nene, Nayar, Murase); the object in view v is found in the
  neighbouring view (15 or 30 degrees on) pasted on a background photo. Train: objects < 50.
- ``logos``: FlickrLogos-27 scenes (Kalantidis et al.): a logo box (or any box) of a photo, found
  in the same photo after a per-axis rescale (aspect change) and a photometric change.
  Split by image name hash.
- ``photos``: scikit-image's sample photos under the same change. Split by photo.

BBS105 (``template_matching/bbs``) is a test set: nothing here reads it.

References keep their own aspect ratio: a crop of the photo whose long side is scaled to
``reference_size``, padded (bottom, right) to a square canvas, its valid ``(height, width)`` in
``reference_sizes``; the query is scaled by the same factor (template matching's same-scale
prior; the target's own size then differs through the view change and the rescale), padded to
``query_size`` with its valid size in ``query_sizes``. Boxes ``(x1, y1, x2, y2)`` in reference
pixels (:mod:`regionsearch.evaluate`). Deterministic by seed; :func:`cached_real_pairs` caches.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.errors import DatasetNotFoundError
from core.files import cached_arrays
from core.readers.flickrlogos import read_flickrlogos27
from regionsearch.data.bbs import BBSPair

SOURCES = ("sequences", "coil", "logos", "photos")
SEQUENCE_SPLITS = {"train": ("wall", "bark", "leuven", "graf"), "val": ("bikes", "v_churchill")}
PHOTO_SPLITS = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel"),
    "val": ("chelsea", "cat"),
}
COIL_VAL_FROM = 50  # objects >= this id are validation objects
GRAF_WALL_FRACTION = 0.6  # graf: queries only in the upper 60 % (the wall plane, README)
ASPECTS = (4 / 3, 3 / 4, 1.0, 16 / 9)
TARGET_FRACTION = (0.08, 0.45)  # the target's long side over the reference's, drawn uniformly
BOX_FRACTION = (0.06, 0.3)  # a random query box's sides over the photo's short side, drawn uniformly
_CACHE_VERSION = 1


# --------------------------------------------------------------------------- sources


def _read_rgb(path: Path, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """RGB uint8 image, shrunk so its long side is at most ``max_side``; returns the shrink factor."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        factor = 1.0
        if max_side and max(image.size) > max_side:
            factor = max_side / max(image.size)
            image = image.resize((round(image.width * factor), round(image.height * factor)), Image.BILINEAR)
        return np.asarray(image), factor


def _read_homography(path: Path) -> np.ndarray:
    matrix = np.loadtxt(path, dtype=np.float64).reshape(3, 3)
    return matrix / matrix[2, 2]  # leuven's H1to6p is not normalised (README)


def load_sequences(root: Path, names: tuple[str, ...], max_side: int = 500) -> list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]]:
    """Per sequence: image 1 and [(image K, H1toK at this resolution)] for K = 2..6."""
    sequences = []
    for name in names:
        folder = root / "sequences" / name
        hpatches = (folder / "1.ppm").is_file()
        first = folder / ("1.ppm" if hpatches else "img1.ppm")
        if not first.is_file():
            raise DatasetNotFoundError(f"sequence {name} not found", folder, "set DEEPMATCH_DATA to the shared data folder")
        image1, f1 = _read_rgb(first, max_side)
        others = []
        for k in range(2, 7):
            image_k, fk = _read_rgb(folder / (f"{k}.ppm" if hpatches else f"img{k}.ppm"), max_side)
            homography = _read_homography(folder / (f"H_1_{k}" if hpatches else f"H1to{k}p"))
            # the homography between the shrunk images: D_k H D_1^-1
            scaled = np.diag([fk, fk, 1.0]) @ homography @ np.diag([1 / f1, 1 / f1, 1.0])
            others.append((image_k, scaled))
        sequences.append((name, image1, others))
    return sequences


def load_coil(root: Path, split: str) -> dict[int, dict[int, np.ndarray]]:
    folder = root / "coil100"
    if not folder.is_dir():
        raise DatasetNotFoundError("COIL-100 not found", folder, "set DEEPMATCH_DATA to the shared data folder")
    objects: dict[int, dict[int, np.ndarray]] = {}
    for path in sorted(folder.glob("obj*__*.png")):
        obj, angle = (int(v) for v in path.stem[3:].split("__"))
        if (obj >= COIL_VAL_FROM) == (split == "val"):
            objects.setdefault(obj, {})[angle] = _read_rgb(path)[0]
    return objects


def _in_split(name: str, split: str, val_fraction: float = 0.2) -> bool:
    value = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return (value < val_fraction) == (split == "val")


def load_logo_photos(root: Path, split: str, limit: int, max_side: int = 500) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """FlickrLogos-27 photos of the split (by name hash) with their logo boxes, at most ``limit``."""
    annotations = read_flickrlogos27(root / "flickrlogos27")
    by_image: dict[Path, list] = {}
    for annotation in annotations:
        if _in_split(annotation.image_path.name, split):
            by_image.setdefault(annotation.image_path, []).append(annotation.box)
    photos = []
    for path in sorted(by_image)[:limit]:
        image, factor = _read_rgb(path, max_side)
        photos.append((image, [np.asarray(box, dtype=np.float64) * factor for box in by_image[path]]))
    return photos


def load_skimage_photos(split: str) -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)()[..., :3] for name in PHOTO_SPLITS[split]]


# --------------------------------------------------------------------------- pair geometry


def _random_box(rng: np.random.Generator, height: float, width: float, low: float = 0.06, high: float = 0.3, y_max: float | None = None) -> np.ndarray:
    side = min(height, width)
    w, h = side * rng.uniform(low, high), side * rng.uniform(low, high)
    y_limit = (y_max if y_max is not None else height) - h
    x1, y1 = rng.uniform(0, width - w), rng.uniform(0, max(1.0, y_limit))
    return np.array([x1, y1, x1 + w, y1 + h])


def _photometric(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, per-channel gain, sometimes blur and noise."""
    out = image.astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength) + mean * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength)
    out *= rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength, size=3).astype(np.float32)
    if rng.random() < 0.3 * strength:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3 * strength:
        out += rng.normal(0, 4, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def cut_pair(
    source: np.ndarray,
    query_box: np.ndarray,
    target: np.ndarray,
    target_box: np.ndarray,
    rng: np.random.Generator,
    reference_size: int,
    query_size: int,
    target_fraction: tuple[float, float] = TARGET_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Query = ``source`` at ``query_box``; reference = a crop of ``target`` around ``target_box`` at
    a random aspect, its long side scaled to ``reference_size``; the query scaled by the same factor.
    The target's long side over the crop's is drawn from ``target_fraction`` (the crop is cut to
    the photo, so small targets in small photos come out larger).
    Returns (query, reference, box in the reference) or None when the geometry does not fit."""
    th, tw = target.shape[:2]
    target_box = np.clip(np.asarray(target_box, dtype=np.float64), 0, [tw, th, tw, th])
    box_w, box_h = target_box[2] - target_box[0], target_box[3] - target_box[1]
    if box_w < 4 or box_h < 4:
        return None
    fraction = rng.uniform(*target_fraction)  # the target's long side over the reference's
    long_side = max(box_w, box_h) / fraction
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    crop_w, crop_h = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
    crop_w, crop_h = min(crop_w, tw), min(crop_h, th)
    if crop_w < box_w or crop_h < box_h:
        return None
    x_range = (max(0.0, target_box[2] - crop_w), min(target_box[0], tw - crop_w))
    y_range = (max(0.0, target_box[3] - crop_h), min(target_box[1], th - crop_h))
    if x_range[0] > x_range[1] or y_range[0] > y_range[1]:
        return None
    x0, y0 = rng.uniform(*x_range), rng.uniform(*y_range)
    x0, y0, crop_w, crop_h = int(x0), int(y0), int(crop_w), int(crop_h)
    scale = reference_size / max(crop_w, crop_h)
    ref_w, ref_h = max(1, min(reference_size, round(crop_w * scale))), max(1, min(reference_size, round(crop_h * scale)))
    reference = cv2.resize(target[y0 : y0 + crop_h, x0 : x0 + crop_w], (ref_w, ref_h), interpolation=cv2.INTER_AREA)
    qx1, qy1, qx2, qy2 = (int(round(v)) for v in query_box)
    qx1, qy1 = max(qx1, 0), max(qy1, 0)
    crop = source[qy1:qy2, qx1:qx2]
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return None
    q_scale = min(scale, query_size / max(crop.shape[:2]))
    q_w, q_h = max(4, round(crop.shape[1] * q_scale)), max(4, round(crop.shape[0] * q_scale))
    query = cv2.resize(crop, (min(q_w, query_size), min(q_h, query_size)), interpolation=cv2.INTER_AREA)
    box = (np.asarray(target_box, dtype=np.float64) - [x0, y0, x0, y0]) * scale
    box = np.clip(box, 0, [ref_w, ref_h, ref_w, ref_h])
    return query, reference, box


def _sequence_pair(sequences, rng, reference_size, query_size, target_fraction=TARGET_FRACTION, box_fraction=BOX_FRACTION):
    name, image1, others = sequences[rng.integers(len(sequences))]
    image_k, homography = others[rng.integers(len(others))]
    h1, w1 = image1.shape[:2]
    box = _random_box(rng, h1, w1, *box_fraction, y_max=h1 * GRAF_WALL_FRACTION if name == "graf" else None)
    corners = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[2], box[3], 1], [box[0], box[3], 1]]).T
    mapped = homography @ corners
    mapped = mapped[:2] / mapped[2]
    hk, wk = image_k.shape[:2]
    if mapped.min() < 0 or mapped[0].max() > wk or mapped[1].max() > hk:
        return None
    target_box = np.array([mapped[0].min(), mapped[1].min(), mapped[0].max(), mapped[1].max()])
    return cut_pair(image1, box, _photometric(image_k, rng, 0.5), target_box, rng, reference_size, query_size, target_fraction)


def _object_box(view: np.ndarray) -> np.ndarray | None:
    mask = view.max(axis=2) > 30
    if mask.sum() < 50:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _coil_pair(objects, backgrounds, rng, reference_size, query_size, target_fraction=TARGET_FRACTION):
    ids = sorted(objects)
    views = objects[ids[rng.integers(len(ids))]]
    angle = sorted(views)[rng.integers(len(views))]
    other = (angle + 15 * int(rng.choice([-2, -1, 1, 2]))) % 360
    if other not in views:
        return None
    query_view, target_view = views[angle], views[other]
    query_box, object_box = _object_box(query_view), _object_box(target_view)
    if query_box is None or object_box is None:
        return None
    background = backgrounds[rng.integers(len(backgrounds))]
    bh, bw = background.shape[:2]
    zoom = rng.uniform(0.5, 1.5)
    pasted = cv2.resize(target_view, (round(128 * zoom), round(128 * zoom)), interpolation=cv2.INTER_AREA)
    ph, pw = pasted.shape[:2]
    if ph >= bh or pw >= bw:
        return None
    y0, x0 = int(rng.integers(0, bh - ph)), int(rng.integers(0, bw - pw))
    scene = background.copy()
    mask = pasted.max(axis=2, keepdims=True) > 30  # COIL's black turntable background is left out
    scene[y0 : y0 + ph, x0 : x0 + pw] = np.where(mask, pasted, scene[y0 : y0 + ph, x0 : x0 + pw])
    target_box = object_box * zoom + [x0, y0, x0, y0]
    query = cv2.resize(query_view, (round(128 * zoom), round(128 * zoom)), interpolation=cv2.INTER_AREA)
    return cut_pair(query, query_box * zoom, _photometric(scene, rng, 0.5), target_box, rng, reference_size, query_size, target_fraction)


def _jittered_pair(photo: np.ndarray, boxes: list[np.ndarray], rng, reference_size, query_size, target_fraction=TARGET_FRACTION, box_fraction=BOX_FRACTION):
    """A box of a photo (one of ``boxes`` or a random one) found in the same photo rescaled per
    axis (aspect change up to 1.25x) under a photometric change."""
    h, w = photo.shape[:2]
    box = boxes[rng.integers(len(boxes))] if boxes and rng.random() < 0.5 else _random_box(rng, h, w, *box_fraction)
    sx, sy = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)
    target = cv2.resize(photo, (round(w * sx), round(h * sy)), interpolation=cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR)
    target_box = np.asarray(box, dtype=np.float64) * [sx, sy, sx, sy]
    return cut_pair(photo, box, _photometric(target, rng), target_box, rng, reference_size, query_size, target_fraction)


# --------------------------------------------------------------------------- builder


def build_real_pairs(
    data_root: str | os.PathLike,
    split: str,
    n_pairs: int,
    seed: int = 0,
    reference_size: int = 192,
    query_size: int = 96,
    sources: tuple[str, ...] = SOURCES,
    logo_photos: int = 150,
    target_fraction: tuple[float, float] = TARGET_FRACTION,
    box_fraction: tuple[float, float] = BOX_FRACTION,
) -> dict[str, np.ndarray]:
    """``n_pairs`` pairs of ``split`` (``train`` / ``val``), deterministic by ``seed``.
    ``target_fraction``: the range of the target's long side over the reference's (the crop is
    cut to the photo, so a large query box cannot come out small: ``box_fraction``, the range of
    a random query box's sides over the photo's short side, bounds it from below).

    Returns uint8 ``queries`` (N, q, q, 3) and ``references`` (N, S, S, 3) zero-padded at the
    bottom and right, their valid ``query_sizes`` / ``reference_sizes`` (N, 2) = (height, width),
    ``boxes`` (N, 4) float32, ``query_labels`` (N,) the source index of each pair.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    target_fraction = tuple(float(v) for v in target_fraction)
    box_fraction = tuple(float(v) for v in box_fraction)
    for name, (low, high) in (("target_fraction", target_fraction), ("box_fraction", box_fraction)):
        if not 0 < low <= high <= 1:
            raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {(low, high)}")
    unknown = set(sources) - set(SOURCES)
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {sources}")
    root = Path(data_root)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    loaded: dict[str, object] = {}
    if "sequences" in sources:
        loaded["sequences"] = load_sequences(root, SEQUENCE_SPLITS[split])
    photos = load_skimage_photos(split) if ("photos" in sources or "coil" in sources) else []
    logos = load_logo_photos(root, split, logo_photos) if ("logos" in sources or "coil" in sources and (root / "flickrlogos27").is_dir()) else []
    if "coil" in sources:
        loaded["coil"] = (load_coil(root, split), [p for p, _ in logos] + photos)
    makers = {
        "sequences": lambda: _sequence_pair(loaded["sequences"], rng, reference_size, query_size, target_fraction, box_fraction),
        "coil": lambda: _coil_pair(*loaded["coil"], rng, reference_size, query_size, target_fraction),
        "logos": lambda: _jittered_pair(*logos[rng.integers(len(logos))], rng, reference_size, query_size, target_fraction, box_fraction),
        "photos": lambda: _jittered_pair(photos[rng.integers(len(photos))], [], rng, reference_size, query_size, target_fraction, box_fraction),
    }
    queries = np.zeros((n_pairs, query_size, query_size, 3), np.uint8)
    references = np.zeros((n_pairs, reference_size, reference_size, 3), np.uint8)
    query_sizes, reference_sizes = np.zeros((n_pairs, 2), np.float32), np.zeros((n_pairs, 2), np.float32)
    boxes, labels = np.zeros((n_pairs, 4), np.float32), np.zeros(n_pairs, np.int64)
    made, attempts = 0, 0
    while made < n_pairs:
        attempts += 1
        if attempts > 50 * n_pairs + 100:
            raise RuntimeError(f"could not cut {n_pairs} pairs from {sources} (only {made})")
        source = sources[made % len(sources)]  # round robin: every source in every slice of the set
        pair = makers[source]()
        if pair is None:
            continue
        query, reference, box = pair
        queries[made, : query.shape[0], : query.shape[1]] = query
        references[made, : reference.shape[0], : reference.shape[1]] = reference
        query_sizes[made], reference_sizes[made] = query.shape[:2], reference.shape[:2]
        boxes[made], labels[made] = box, SOURCES.index(source)
        made += 1
    return {"queries": queries, "references": references, "query_sizes": query_sizes, "reference_sizes": reference_sizes, "boxes": boxes, "query_labels": labels}


def cached_real_pairs(cache_dir: str | os.PathLike, data_root: str | os.PathLike, **kwargs) -> dict[str, np.ndarray]:
    """:func:`build_real_pairs` memoised in ``cache_dir/real_pairs-<split>-<hash>.npz`` (hash of the arguments)."""
    key = json.dumps({"version": _CACHE_VERSION, "root": str(Path(data_root).resolve()), **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}, sort_keys=True)
    path = Path(cache_dir).expanduser() / f"real_pairs-{kwargs.get('split', 'train')}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    return cached_arrays(path, lambda: build_real_pairs(data_root, **kwargs))


def validation_pairs(data_root: str | os.PathLike, cache_dir: str | os.PathLike, n_pairs: int = 300, seed: int = 0, **kwargs) -> list[BBSPair]:
    """The ``val`` split's pairs in the BBS protocol's form (image A = the query, its box the whole
    query; image B = the reference), to choose the search path's test-time settings on data shaped
    like a test set's frames (``reference_size``, ``target_fraction``) without reading the test set."""
    arrays = cached_real_pairs(cache_dir, data_root, split="val", n_pairs=n_pairs, seed=seed, **kwargs)
    pairs = []
    for index in range(n_pairs):
        (qh, qw), (rh, rw) = arrays["query_sizes"][index].astype(int), arrays["reference_sizes"][index].astype(int)
        query, reference = arrays["queries"][index, :qh, :qw], arrays["references"][index, :rh, :rw]
        box_a = np.array([0.0, 0.0, qw, qh])
        pairs.append(BBSPair(index, "real_pairs_val", 0, 0, query, box_a, reference, arrays["boxes"][index].astype(np.float64)))
    return pairs
