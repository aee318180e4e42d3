"""Deterministic Translated / Cluttered / Cluttered-and-Mixed MNIST region-search pairs.

A pair is a *query* (a clean, centred 28x28 digit) and a *reference* canvas that contains a
different instance of the same class (the *target*) at a random position, optionally with
clutter and distractor digits. The task is to find the target's box in the reference.

Recipes (see ``shared/reference/regionsearch.md`` section 1.2):

* **translated** (RAM): the target pasted at a uniformly random integer offset fully
  inside a 60x60 zero canvas.
* **cluttered** (DeepMind ``mnist_cluttered.lua``): plus ``num_clutter`` fragments, each a
  random ``clutter_size`` x ``clutter_size`` crop of a random digit of the pool (any class,
  never the target image) added at a random position inside the canvas. Everything is
  summed on the [0, 1] scale and clipped at 1 (additive, not pasted).
* **mixed** ("Cluttered and Mixed", not described in the paper; a documented guess): plus
  ``num_distractor_digits`` full digits of classes other than the target's, at positions
  whose boxes do not intersect the target box (and, when possible, each other), then the
  clutter.

Sums are taken in integers on the uint8 scale and clipped at 255, which is exactly the
[0, 1] float recipe (``x / 255`` summed and clipped at 1) without rounding error. Where no
clutter or distractor touches the target, the reference equals the digit pixel for pixel.

Boxes follow :mod:`regionsearch.evaluate`: ``(x1, y1, x2, y2)``, x2/y2 exclusive, so a digit
pasted at column ``c``, row ``r`` has the box ``(c, r, c + 28, r + 28)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CanvasSpec",
    "PRESETS",
    "GENERATOR_VERSION",
    "get_spec",
    "generate_pairs",
    "cached_pairs",
    "pool_fingerprint",
    "cache_key",
]

log = logging.getLogger(__name__)

#: Bump when the generator's output for a given (pool, n, spec, seed) changes; part of the cache key.
GENERATOR_VERSION = 1

KINDS = ("translated", "cluttered", "mixed")

#: Keys of :func:`generate_pairs`' output.
PAIR_KEYS = (
    "queries",
    "references",
    "boxes",
    "query_labels",
    "target_index",
    "query_index",
    "distractor_boxes",
    "distractor_index",
    "distractor_labels",
)


@dataclass(frozen=True)
class CanvasSpec:
    """How a reference canvas is built (see the module docstring)."""

    kind: str  # "translated" | "cluttered" | "mixed"
    canvas_size: int = 60
    num_clutter: int = 0  # clutter_size^2 fragments of random other digits, added then clipped
    clutter_size: int = 8
    num_distractor_digits: int = 0  # "mixed": full digits of other classes, off the target box

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"CanvasSpec.kind must be one of {KINDS}, got {self.kind!r}")
        for field in ("canvas_size", "num_clutter", "clutter_size", "num_distractor_digits"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"CanvasSpec.{field} must be an int, got {value!r}")
            object.__setattr__(self, field, int(value))
        if self.num_clutter < 0 or self.num_distractor_digits < 0:
            raise ValueError("num_clutter and num_distractor_digits must be >= 0")
        if self.clutter_size < 1:
            raise ValueError(f"clutter_size must be >= 1, got {self.clutter_size}")
        if self.kind == "translated" and (self.num_clutter or self.num_distractor_digits):
            raise ValueError(
                "a 'translated' canvas has no clutter or distractors; use 'cluttered'/'mixed'"
            )
        if self.kind == "cluttered" and self.num_distractor_digits:
            raise ValueError("distractor digits need kind='mixed'")
        if self.clutter_size > self.canvas_size:
            raise ValueError(f"clutter_size {self.clutter_size} > canvas_size {self.canvas_size}")


PRESETS: dict[str, CanvasSpec] = {
    "translated": CanvasSpec("translated", 60),
    "cluttered": CanvasSpec("cluttered", 100, num_clutter=8),
    "cluttered60": CanvasSpec("cluttered", 60, num_clutter=4),
    "mixed": CanvasSpec("mixed", 100, num_clutter=8, num_distractor_digits=3),
}


def get_spec(spec: CanvasSpec | str | dict) -> CanvasSpec:
    """A :class:`CanvasSpec` from itself, a preset name, or a mapping of its fields
    (a mapping may name a ``preset`` and override some fields)."""
    if isinstance(spec, CanvasSpec):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown canvas preset {spec!r}; expected one of {sorted(PRESETS)}")
        return PRESETS[spec]
    fields = dict(spec)
    preset = fields.pop("preset", None)
    if preset is not None:
        fields = {**asdict(get_spec(preset)), **fields}
    return CanvasSpec(**fields)


def _check_pool(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if len(images) < 2:
        raise ValueError("the digit pool needs at least 2 images (query and target must differ)")
    return images, labels.astype(np.int64, copy=False)


def _intersects(ax, ay, bx, by, w: int, h: int) -> np.ndarray:
    """Whether equal-size boxes at top-left (ax, ay) and (bx, by) overlap with positive area."""
    return (np.abs(ax - bx) < w) & (np.abs(ay - by) < h)


def _place_distractors(
    rng: np.random.Generator,
    target_x: np.ndarray,
    target_y: np.ndarray,
    num: int,
    span_x: int,
    span_y: int,
    w: int,
    h: int,
    max_tries: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners ``(n, num)`` of distractors that avoid the target box and each other.

    Vectorised rejection sampling (``max_tries`` rounds per distractor); the few pairs
    left are placed by enumerating all valid positions, which first avoids the target and
    the earlier distractors, then, if that is impossible, only the target. Raises
    ``ValueError`` when not even the target can be avoided.
    """
    n = len(target_x)
    xs = np.zeros((n, num), dtype=np.int64)
    ys = np.zeros((n, num), dtype=np.int64)
    grid_y, grid_x = np.meshgrid(np.arange(span_y), np.arange(span_x), indexing="ij")
    grid_x, grid_y = grid_x.ravel(), grid_y.ravel()
    for k in range(num):
        pending = np.arange(n)
        for _ in range(max_tries):
            if pending.size == 0:
                break
            cx = rng.integers(0, span_x, pending.size)
            cy = rng.integers(0, span_y, pending.size)
            bad = _intersects(cx, cy, target_x[pending], target_y[pending], w, h)
            for j in range(k):
                bad |= _intersects(cx, cy, xs[pending, j], ys[pending, j], w, h)
            good = ~bad
            xs[pending[good], k] = cx[good]
            ys[pending[good], k] = cy[good]
            pending = pending[bad]
        for i in pending:  # rare: crowded canvases; exact placement
            off_target = ~_intersects(grid_x, grid_y, target_x[i], target_y[i], w, h)
            free = off_target.copy()
            for j in range(k):
                free &= ~_intersects(grid_x, grid_y, xs[i, j], ys[i, j], w, h)
            candidates = np.flatnonzero(free) if free.any() else np.flatnonzero(off_target)
            if candidates.size == 0:
                raise ValueError(
                    f"cannot place a {w}x{h} distractor digit without overlapping the target box "
                    f"at ({int(target_x[i])}, {int(target_y[i])}) in a canvas of "
                    f"{span_x + w - 1}x{span_y + h - 1}; use a larger canvas_size or fewer distractors"
                )
            choice = candidates[rng.integers(0, candidates.size)]
            xs[i, k], ys[i, k] = grid_x[choice], grid_y[choice]
    return xs, ys


def generate_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    spec: CanvasSpec | str,
    seed: int,
    *,
    chunk_size: int = 512,
    max_tries: int = 100,
) -> dict[str, np.ndarray]:
    """Generate ``n`` query/reference pairs from the digit pool ``(images, labels)``.

    Returns a dict with ``queries`` uint8 ``(n, 28, 28)``, ``references`` uint8
    ``(n, S, S)``, ``boxes`` float32 ``(n, 4)`` (target box), ``query_labels`` int64
    ``(n,)``, ``target_index`` and ``query_index`` int64 ``(n,)`` (indices into ``images``),
    ``distractor_boxes`` float32 ``(n, K, 4)``, ``distractor_index`` and
    ``distractor_labels`` int64 ``(n, K)`` with ``K = spec.num_distractor_digits`` (0 allowed).
    The same arguments always give identical arrays.
    """
    spec = get_spec(spec)
    images, labels = _check_pool(images, labels)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    num_images, h, w = images.shape
    size = spec.canvas_size
    if h > size or w > size:
        raise ValueError(f"digits of {h}x{w} do not fit in a canvas of {size}x{size}")
    cs = spec.clutter_size
    if spec.num_clutter and (cs > h or cs > w):
        raise ValueError(f"clutter_size {cs} is larger than the digits ({h}x{w})")
    K, M = spec.num_distractor_digits, spec.num_clutter
    rng = np.random.default_rng(seed)

    # Class bookkeeping: the pool sorted by class, so each class is a contiguous block.
    order = np.argsort(labels, kind="stable")
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rank = np.empty(num_images, dtype=np.int64)
    rank[order] = np.arange(num_images)
    class_of = np.searchsorted(classes, labels)
    eligible = np.flatnonzero(counts[class_of] >= 2)
    if eligible.size == 0:
        raise ValueError(
            "no class has two images: a query must be another image of the target's class"
        )

    # 1. target and query (same class, different image)
    target = eligible[rng.integers(0, eligible.size, n)]
    tc = class_of[target]
    j = rng.integers(0, counts[tc] - 1) if n else np.zeros(0, dtype=np.int64)
    j = j + (j >= rank[target] - starts[tc])
    query = order[starts[tc] + j]

    # 2. target position, uniform over all integer offsets fully inside the canvas
    span_x, span_y = size - w + 1, size - h + 1
    tx = rng.integers(0, span_x, n)
    ty = rng.integers(0, span_y, n)

    # 3. distractor digits of other classes, off the target box
    if K:
        others = num_images - counts[tc]
        if n and others.min() == 0:
            raise ValueError("mixed canvases need digits of at least two classes in the pool")
        u = rng.integers(0, others[:, None], (n, K)) if n else np.zeros((0, K), dtype=np.int64)
        block_start = starts[tc][:, None]
        distractor = order[u + (u >= block_start) * counts[tc][:, None]]
        dx, dy = _place_distractors(rng, tx, ty, K, span_x, span_y, w, h, max_tries)
    else:
        distractor = np.zeros((n, 0), dtype=np.int64)
        dx = dy = np.zeros((n, 0), dtype=np.int64)

    # 4. clutter: random crops of random other images, at random places
    if M:
        src = rng.integers(0, num_images - 1, (n, M))
        src = src + (src >= target[:, None])
        crop_x = rng.integers(0, w - cs + 1, (n, M))
        crop_y = rng.integers(0, h - cs + 1, (n, M))
        put_x = rng.integers(0, size - cs + 1, (n, M))
        put_y = rng.integers(0, size - cs + 1, (n, M))

    # Rendering (no randomness below): integer sums on the uint8 scale, clipped at 255.
    layers = 1 + K + M
    acc_dtype = np.uint16 if 255 * layers <= np.iinfo(np.uint16).max else np.int32
    references = np.empty((n, size, size), dtype=np.uint8)
    ar_h, ar_w, ar_c = np.arange(h), np.arange(w), np.arange(cs)
    for s in range(0, n, chunk_size):
        e = min(n, s + chunk_size)
        b = e - s
        acc = np.zeros((b, size, size), dtype=acc_dtype)
        bi = np.arange(b)[:, None, None]

        def add(x0, y0, patch, rows=ar_h, cols=ar_w, acc=acc, bi=bi):
            # One patch per canvas per call, so the fancy-indexed += has no duplicate indices.
            acc[
                bi, y0[:, None, None] + rows[None, :, None], x0[:, None, None] + cols[None, None, :]
            ] += patch

        add(tx[s:e], ty[s:e], images[target[s:e]])
        for k in range(K):
            add(dx[s:e, k], dy[s:e, k], images[distractor[s:e, k]])
        for m in range(M):
            frag = images[
                src[s:e, m][:, None, None],
                crop_y[s:e, m][:, None, None] + ar_c[None, :, None],
                crop_x[s:e, m][:, None, None] + ar_c[None, None, :],
            ]
            add(put_x[s:e, m], put_y[s:e, m], frag, ar_c, ar_c)
        np.minimum(acc, 255, out=acc)
        references[s:e] = acc

    boxes = np.stack([tx, ty, tx + w, ty + h], axis=-1).astype(np.float32).reshape(n, 4)
    distractor_boxes = (
        np.stack([dx, dy, dx + w, dy + h], axis=-1).astype(np.float32).reshape(n, K, 4)
    )
    return {
        "queries": np.ascontiguousarray(images[query]),
        "references": references,
        "boxes": boxes,
        "query_labels": labels[target].astype(np.int64),
        "target_index": target.astype(np.int64),
        "query_index": query.astype(np.int64),
        "distractor_boxes": distractor_boxes,
        "distractor_index": distractor.astype(np.int64).reshape(n, K),
        "distractor_labels": labels[distractor].astype(np.int64).reshape(n, K),
    }


def pool_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """md5 over the pool's shapes, all image bytes and all labels."""
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(np.asarray(labels).astype(np.int64))
    digest = hashlib.md5()
    digest.update(repr((images.shape, str(images.dtype), labels.shape)).encode())
    digest.update(memoryview(images).cast("B"))
    digest.update(memoryview(labels).cast("B"))
    return digest.hexdigest()


def cache_key(
    images: np.ndarray, labels: np.ndarray, n: int, spec: CanvasSpec | str, seed: int
) -> str:
    """Short hash of everything that determines :func:`generate_pairs`' output."""
    payload = {
        "version": GENERATOR_VERSION,
        "spec": asdict(get_spec(spec)),
        "n": int(n),
        "seed": int(seed),
        "pool": pool_fingerprint(images, labels),
    }
    return hashlib.md5(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _load_cache(path: Path, n: int, spec: CanvasSpec) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in PAIR_KEYS}
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any corruption (bad zip, not an npz, missing key)
        log.warning("regenerating unreadable canvas cache %s (%s)", path, exc)
        return None
    if any(len(a) != n for a in arrays.values()) or arrays["references"].shape[1:] != (
        spec.canvas_size,
        spec.canvas_size,
    ):
        log.warning("regenerating canvas cache %s with unexpected shapes", path)
        return None
    return arrays


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def cached_pairs(
    cache_dir: str | os.PathLike,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    spec: CanvasSpec | str,
    seed: int,
) -> dict[str, np.ndarray]:
    """:func:`generate_pairs`, cached in ``cache_dir/{name}-{hash}.npz``.

    The hash covers the generator version, the spec, ``n``, ``seed`` and a fingerprint of
    the digit pool. Files are written atomically (temporary file + ``os.replace``), so
    parallel jobs never read a half-written cache; an unreadable cache is regenerated.
    """
    spec = get_spec(spec)
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    safe_name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(name)) or "pairs"
    path = cache_dir / f"{safe_name}-{cache_key(images, labels, n, spec, seed)}.npz"
    arrays = _load_cache(path, int(n), spec)
    if arrays is not None:
        return arrays
    arrays = generate_pairs(images, labels, n, spec, seed)
    _save_atomic(path, arrays)
    return arrays
