"""Exhaustive template-matching baselines for region search.

Each baseline slides the query (the template) over every position of the
reference, at every requested scale, and returns the best window. They are the
non-learned comparison points of the RL region matcher ("Learning Search Path
for Region-Level Image Matching", Krishna et al.), whose paper compares against:

* **NCC** -- zero-mean normalised cross-correlation (``cv2.TM_CCOEFF_NORMED``),
  the cheapest exhaustive matcher.
* **MTM** -- Y. Hel-Or, H. Hel-Or, E. David, "Fast Template Matching in
  Non-Linear Tone-Mapped Images", ICCV 2011 (TPAMI 2014: "Matching by Tone
  Mapping: Photometric Invariant Template Matching").  Piecewise-constant (PWC)
  tone mapping, pattern-to-window direction, computed for all windows at once
  with one box sum per statistic and one correlation per bin (slice transform).
* **BBS** -- T. Dekel, S. Oron, M. Rubinstein, S. Avidan, W. T. Freeman,
  "Best-Buddies Similarity for Robust Template Matching", CVPR 2015 (TPAMI 2017:
  Oron, Dekel, Xue, Freeman, Avidan).  Counts mutual nearest-neighbour patch
  pairs between the template and every window; exact, O(N^2) per window.

All functions take numpy arrays (``(h, w)`` or ``(h, w, 3)``, float in [0, 1] or
uint8) and return a :class:`MatchResult` whose box follows
:mod:`regionsearch.evaluate`: ``(x1, y1, x2, y2)`` with x2/y2 exclusive, so a
window whose top-left pixel is (row r, column c) and whose size is tw x th has
the box ``(c, r, c + tw, r + th)``.  Ties are broken by the first window in
row-major order (as ``cv2.minMaxLoc`` does), scales in the order given.

This module is an independent implementation from the papers; public ports
(``Alexyuda/mtm``, ``wakanawakana/python/BBS``, the authors' MATLAB release)
were read for default parameters only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = [
    "MatchResult",
    "match_ncc",
    "match_mtm",
    "match_bbs",
    "resize_template",
    "resize_template_to",
    "aspect_template_sizes",
    "BASELINES",
    "get_baseline",
]


@dataclass
class MatchResult:
    """Best window found by an exhaustive baseline."""

    box: np.ndarray  # (4,) float64, x1, y1, x2, y2 in reference pixel coordinates
    score: float  # similarity at that window, higher is better (MTM: negative distance)
    windows: int  # candidate windows evaluated, summed over all positions and scales
    scale: float = 1.0  # the template scale factor of the best window


# --------------------------------------------------------------------------------------
# Input handling shared by all baselines
# --------------------------------------------------------------------------------------


def _as_float_image(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an image and return it as contiguous float32 in [0, 1] ((h, w) or (h, w, 3))."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{name} must have shape (h, w) or (h, w, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image, dtype=np.float32) / np.float32(255.0)
    # Other integer types have no agreed range (0..255? 0..65535?): refuse rather than
    # silently mix scales, which would skew BBS's colour-vs-position weighting.
    if not (np.issubdtype(image.dtype, np.floating) or image.dtype == np.bool_):
        raise ValueError(
            f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {image.dtype}"
        )
    return np.ascontiguousarray(image, dtype=np.float32)


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    scales = tuple(float(s) for s in np.atleast_1d(np.asarray(scales, dtype=np.float64)))
    if not scales:
        raise ValueError("scales must contain at least one scale factor")
    for s in scales:
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"scale factors must be positive and finite, got {scales}")
    return scales


def resize_template(query: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``query`` by ``scale`` (area averaging to shrink, bilinear to enlarge).

    Each side becomes ``round(side * scale)``, at least 3 pixels; ``scale == 1``
    returns an unchanged copy.  Works for ``(h, w)`` and ``(h, w, C)`` arrays.
    """
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be positive and finite, got {scale}")
    h, w = query.shape[:2]
    return resize_template_to(query, max(3, int(round(w * scale))), max(3, int(round(h * scale))))


def resize_template_to(query: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``query`` to exactly ``width`` x ``height`` pixels (its aspect may change);
    the same size returns an unchanged copy."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"template size must be at least 1x1, got {width}x{height} (w x h)")
    h, w = query.shape[:2]
    if (width, height) == (w, h):
        return query.copy()
    # INTER_AREA averages the source pixels when shrinking (no aliasing); it degrades
    # to nearest-like blocks when enlarging, where bilinear is the sensible choice.
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
    return cv2.resize(query, (width, height), interpolation=interp)


def aspect_template_sizes(reference_shape, aspect: float, scales: Sequence[float]) -> list[tuple[int, int]]:
    """Template ``(width, height)`` per scale for a multi-scale search that keeps an aspect.

    ``aspect`` is the template's width / height in reference pixels; ``scales`` are relative
    to the reference: ``sqrt(width * height) = scale * sqrt(H * W)``. Sides are rounded,
    at least 3 pixels; sizes that do not fit the ``(H, W)`` reference are dropped (the
    matchers say so when none is left).
    """
    aspect = float(aspect)
    if not np.isfinite(aspect) or aspect <= 0:
        raise ValueError(f"aspect must be positive and finite, got {aspect}")
    H, W = (int(v) for v in tuple(reference_shape)[:2])
    side = np.sqrt(H * W)
    sizes = []
    for s in _check_scales(scales):
        width = max(3, int(round(s * side * np.sqrt(aspect))))
        height = max(3, int(round(s * side / np.sqrt(aspect))))
        if width <= W and height <= H and (width, height) not in sizes:
            sizes.append((width, height))
    return sizes


def _check_sizes(sizes) -> tuple[tuple[int, int], ...]:
    sizes = tuple(tuple(int(v) for v in size) for size in sizes)
    if not sizes or any(len(size) != 2 or min(size) < 1 for size in sizes):
        raise ValueError(f"sizes must be a non-empty list of (width, height) >= 1, got {sizes}")
    return sizes


def _scaled_templates(query: np.ndarray, reference: np.ndarray, scales, min_side: int = 1, sizes=None):
    """``[(scale, template)]`` for every scale (or every ``(width, height)`` of ``sizes``,
    which replaces ``scales``) whose template fits in the reference. With ``sizes`` the
    scale is the square root of the template's area over the query's.

    Raises ValueError when no template fits, naming the sizes involved.
    """
    H, W = reference.shape[:2]
    h, w = query.shape[:2]
    if sizes is None:
        candidates = [(s, resize_template(query, s)) for s in _check_scales(scales)]
    else:
        candidates = [(float(np.sqrt(tw * th / (w * h))), resize_template_to(query, tw, th)) for tw, th in _check_sizes(sizes)]
    fitted = [(s, t) for s, t in candidates if min_side <= t.shape[0] <= H and min_side <= t.shape[1] <= W]
    if not fitted:
        asked = f"resized to {list(_check_sizes(sizes))} (w x h)" if sizes is not None else f"scaled by {list(_check_scales(scales))}"
        raise ValueError(
            f"the template ({h}x{w} HxW, {asked}) is larger than the "
            f"reference ({H}x{W} HxW) at every scale"
            + (f" or smaller than {min_side}x{min_side}" if min_side > 1 else "")
            + "; pass a smaller query or smaller scale factors"
        )
    return fitted


def _box(col: int, row: int, tw: int, th: int) -> np.ndarray:
    return np.array([col, row, col + tw, row + th], dtype=np.float64)


# --------------------------------------------------------------------------------------
# NCC
# --------------------------------------------------------------------------------------


def match_ncc(query, reference, scales=(1.0,), sizes=None, area_exponent=0.0) -> MatchResult:
    """Zero-mean normalised cross-correlation (OpenCV ``TM_CCOEFF_NORMED``), grayscale.

    ``scales`` resize the query by factors; ``sizes`` (a list of ``(width, height)``, e.g.
    from :func:`aspect_template_sizes` or the true box size) replace them (likewise in
    :func:`match_mtm` and :func:`match_bbs`). Across template sizes the best window is the
    one with the largest ``NCC * (template pixels) ** area_exponent``: with the plain maximum
    (``0``) small templates win by chance (their NCC over few pixels is noisier), a size
    prior ``> 0`` evens that out. ``score`` is that weighted value.
    """
    area_exponent = float(area_exponent)
    if not np.isfinite(area_exponent):
        raise ValueError(f"area_exponent must be finite, got {area_exponent}")
    q = _to_gray(_as_float_image(query, "query"))
    ref = _to_gray(_as_float_image(reference, "reference"))
    # OpenCV's float32 window variances cancel catastrophically on mostly-flat images
    # (e.g. black MNIST canvases: success 0.86 instead of 0.97). Zero-mean NCC does not
    # change when both images are shifted by a constant, and centring removes the cancellation.
    offset = np.float32(ref.mean())
    ref, q = ref - offset, q - offset
    best = None
    windows = 0
    for s, t in _scaled_templates(q, ref, scales, sizes=sizes):
        th, tw = t.shape
        resp = cv2.matchTemplate(ref, t, cv2.TM_CCOEFF_NORMED)
        # Constant windows (or a constant template) divide by zero: NaN/inf in some
        # OpenCV versions.  Treat them as "no correlation" and keep scores in [-1, 1].
        resp = np.clip(np.nan_to_num(resp, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        windows += resp.size
        _, max_val, _, (col, row) = cv2.minMaxLoc(resp)
        if area_exponent:
            max_val *= float(th * tw) ** area_exponent
        if best is None or max_val > best.score:
            best = MatchResult(_box(col, row, tw, th), float(max_val), 0, s)
    best.windows = windows
    return best


# --------------------------------------------------------------------------------------
# MTM (piecewise-constant tone mapping, pattern-to-window)
# --------------------------------------------------------------------------------------


def _window_sums(image: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Sum of ``image`` over every th x tw window ("valid" positions), in float64.

    Integral image rather than a float32 box filter: the MTM numerator is a
    difference of two nearly equal sums, so accumulation error matters.
    """
    ii = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(image, axis=0, dtype=np.float64), axis=1, out=ii[1:, 1:])
    return ii[th:, tw:] - ii[:-th, tw:] - ii[th:, :-tw] + ii[:-th, :-tw]


def _bin_masks(template: np.ndarray, bins: int) -> list[np.ndarray]:
    """Slice transform of the template: one 0/1 mask per non-empty bin.

    Bins are uniform over the template's own range [min, max]; the maximum goes to
    the last bin.  A constant template has a single bin.
    """
    lo, hi = float(template.min()), float(template.max())
    if hi > lo:
        idx = np.floor((template - lo) / (hi - lo) * bins).astype(np.int64)
        idx = np.clip(idx, 0, bins - 1)
    else:
        idx = np.zeros(template.shape, dtype=np.int64)
    return [(idx == j).astype(np.float32) for j in range(bins) if np.any(idx == j)]


def _mtm_distance_map(template: np.ndarray, reference: np.ndarray, bins: int) -> np.ndarray:
    """MTM distance D(p, w) for every valid window (grayscale float32 inputs).

    D = (||w||^2 - sum_j (p_j . w)^2 / |p_j|) / (m var(w)): the residual of the best
    least-squares piecewise-constant tone map of the pattern onto the window,
    normalised by the window's energy about its mean.  Windows with (numerically)
    zero variance get +inf: any tone map of the pattern fits them, so they carry
    no evidence.
    """
    th, tw = template.shape
    m = th * tw
    # D is invariant to adding a constant to the window (the PWC bins span the
    # constants), so centre the reference: it shrinks the float32 correlation error.
    ref = reference - np.float32(reference.mean())
    sum_w = _window_sums(ref, th, tw)
    sum_w2 = _window_sums(np.square(ref, dtype=np.float64), th, tw)
    energy = sum_w2 - np.square(sum_w) / m  # = m * var(w)
    explained = np.zeros_like(sum_w)
    for mask in _bin_masks(template, bins):
        # Valid correlation of the reference with the bin's indicator = p_j . w for
        # every window, with exactly the output layout of the box sums above.
        corr = cv2.matchTemplate(ref, mask, cv2.TM_CCORR).astype(np.float64)
        explained += np.square(corr) / float(mask.sum())
    residual = np.maximum(sum_w2 - explained, 0.0)
    # Relative threshold: the variance of a constant window is pure rounding noise.
    flat = energy <= 1e-9 * max(1.0, float(sum_w2.max()))
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = residual / energy
    dist[flat] = np.inf
    return dist


def match_mtm(query, reference, scales=(1.0,), bins=8, sizes=None) -> MatchResult:
    """Matching by Tone Mapping (Hel-Or et al.), PWC, pattern-to-window, grayscale.

    ``score`` is the negative MTM distance (in [-1, 0] for non-flat windows; 0 is a
    perfect fit by some tone map of the pattern).
    """
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    q = _to_gray(_as_float_image(query, "query"))
    ref = _to_gray(_as_float_image(reference, "reference"))
    best = None
    windows = 0
    for s, t in _scaled_templates(q, ref, scales, sizes=sizes):
        th, tw = t.shape
        dist = _mtm_distance_map(t, ref, bins)
        windows += dist.size
        flat_idx = int(np.argmin(dist))  # first minimum in row-major order
        row, col = divmod(flat_idx, dist.shape[1])
        score = -float(dist[row, col])
        if best is None or score > best.score:
            best = MatchResult(_box(col, row, tw, th), score, 0, s)
    best.windows = windows
    return best


# --------------------------------------------------------------------------------------
# BBS
# --------------------------------------------------------------------------------------

# Defaults of the authors' MATLAB release and its Python port: each 3x3 patch is
# weighted by a normalised Gaussian (sigma 0.6) before the squared difference, and
# patch positions are pixel coordinates times 0.0039 (~1/255, i.e. the colour scale
# of 8-bit images mapped to [0, 1]), combined as D = D_appearance + gamma * D_xy.
_BBS_SIGMA = 0.6
_BBS_XY_SCALE = 0.0039
# Entries of the (windows x N x N) distance tensor per chunk (16 MiB of float32):
# bounds memory; smaller chunks are cache-friendlier single-threaded but pay one
# intra-op thread synchronisation per op, which is slow on a busy 2-core CPU.
_BBS_CHUNK_ELEMENTS = 1 << 22


def _bbs_patch_weights(patch_size: int, channels: int) -> torch.Tensor:
    r = (patch_size - 1) / 2.0
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(xx**2 + yy**2) / (2.0 * _BBS_SIGMA**2))
    g /= g.sum()
    # Same (channel, ky, kx) order as torch.nn.functional.unfold.
    return torch.from_numpy(np.tile(g.ravel(), channels)).to(torch.float32)


def _bbs_feature_map(image: np.ndarray, patch_size: int) -> torch.Tensor:
    """Weighted pixels of the patch at every position: (H - pz + 1, W - pz + 1, C * pz^2)."""
    img = image if image.ndim == 3 else image[..., None]
    H, W, C = img.shape
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    cols = torch.nn.functional.unfold(x, kernel_size=patch_size)[0]  # (C*pz*pz, L)
    cols = cols * _bbs_patch_weights(patch_size, C)[:, None]
    return cols.T.reshape(H - patch_size + 1, W - patch_size + 1, -1).contiguous()


def _bbs_grid(template_shape, patch_size: int):
    """Top-left offsets (dy, dx) of the template's non-overlapping patches, row-major.

    A template side that is not a multiple of the patch size leaves its last
    ``side % patch_size`` rows/columns out of the patch grid (as the reference
    implementation, which requires divisible sizes, would after cropping).
    """
    ny, nx = template_shape[0] // patch_size, template_shape[1] // patch_size
    dy, dx = np.meshgrid(np.arange(ny) * patch_size, np.arange(nx) * patch_size, indexing="ij")
    return dy.ravel(), dx.ravel()


def _bbs_count(w_aug: torch.Tensor, t_aug: torch.Tensor) -> torch.Tensor:
    """Number of best-buddy pairs between one template and a batch of windows.

    ``w_aug`` (B, N, K) and ``t_aug`` (N, K) are augmented so that
    ``w_aug @ t_aug.T`` is the full squared distance
    D[b, j, i] = ||w_bj - t_i||^2 + gamma ||xy_j - xy_i||^2 (j: window patch,
    i: template patch): a single GEMM, no element-wise passes over the B N^2
    entries, which dominate the cost.  Ties go to the lowest index (``argmin``).
    Returns (B,) int64.
    """
    b, n, k = w_aug.shape
    d = (w_aug.reshape(b * n, k) @ t_aug.T).reshape(b, n, n)
    nn_w2t = d.argmin(dim=2)  # (B, N): nearest template patch of each window patch
    # Nearest window patch of each template patch.  A transposed copy + last-dim
    # argmin is faster on CPU than a strided argmin over dim 1 (same result).
    nn_t2w = d.transpose(1, 2).contiguous().argmin(dim=2)  # (B, N)
    back = torch.gather(nn_w2t, 1, nn_t2w)  # template i -> its NN j -> j's NN
    return (back == torch.arange(n)[None, :]).sum(dim=1)


def match_bbs(query, reference, scales=(1.0,), patch_size=3, gamma=2.0, stride=1, sizes=None) -> MatchResult:
    """Best-Buddies Similarity (Dekel et al.), exhaustive over windows at ``stride``.

    Template and each window are split into non-overlapping ``patch_size`` squares;
    a patch's feature is its pixels (RGB when both images are colour, otherwise
    gray) weighted by a normalised Gaussian (sigma 0.6), plus its top-left position
    within the template times 0.0039.  The patch distance is
    ``||d appearance||^2 + gamma * ||d xy||^2`` with the reference implementation's
    defaults ``patch_size=3, gamma=2``.  ``score`` = BBS in [0, 1], the number of
    mutual nearest-neighbour pairs over the number of template patches.
    """
    patch_size, stride = int(patch_size), int(stride)
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    gamma = float(gamma)
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    q = _as_float_image(query, "query")
    ref = _as_float_image(reference, "reference")
    if q.ndim != ref.ndim:  # mixed colour/gray: compare in gray
        q, ref = _to_gray(q), _to_gray(ref)
    H, W = ref.shape[:2]
    if H < patch_size or W < patch_size:
        raise ValueError(f"reference ({H}x{W}) is smaller than one {patch_size}x{patch_size} patch")

    feat_map = _bbs_feature_map(ref, patch_size)  # once for all scales
    wp, nf = feat_map.shape[1], feat_map.shape[2]
    feat_flat = feat_map.reshape(-1, nf)
    # Per reference position: [patch feature, its squared norm].
    table = torch.cat([feat_flat, (feat_flat * feat_flat).sum(1, keepdim=True)], dim=1)
    root_gamma = float(np.sqrt(gamma))

    best = None
    windows = 0
    for s, t in _scaled_templates(q, ref, scales, min_side=patch_size, sizes=sizes):
        th, tw = t.shape[:2]
        dy, dx = _bbs_grid((th, tw), patch_size)
        n = dy.size
        t_feat = _bbs_feature_map(t, patch_size)[torch.from_numpy(dy), torch.from_numpy(dx)]
        # Window patch j sits at the same grid offset as template patch j, so the
        # position part of every window's features is the same constant.
        xy = torch.from_numpy(np.stack([dx, dy], axis=1) * _BBS_XY_SCALE).to(torch.float32)
        pos = root_gamma * xy  # (N, 2)
        pos_sq = (pos * pos).sum(1)  # (N,)
        # Augmented so that w_aug @ t_aug.T = ||w_j - t_i||^2 + gamma ||xy_j - xy_i||^2:
        #   w_aug_j = [w_j, ||w_j||^2 + |pos_j|^2, pos_j, 1]
        #   t_aug_i = [-2 t_i, 1, -2 pos_i, ||t_i||^2 + |pos_i|^2]
        t_aug = torch.cat(
            [
                -2.0 * t_feat,
                torch.ones(n, 1),
                -2.0 * pos,
                ((t_feat * t_feat).sum(1) + pos_sq)[:, None],
            ],
            dim=1,
        )
        offsets = torch.from_numpy(dy * wp + dx)  # patch offsets in the flat feature map

        rows = np.arange(0, H - th + 1, stride)
        cols = np.arange(0, W - tw + 1, stride)
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        starts = torch.from_numpy((rr * wp + cc).ravel())  # window top-left, flat index
        counts = torch.empty(starts.numel(), dtype=torch.int64)
        chunk = max(1, _BBS_CHUNK_ELEMENTS // (n * n))
        for k in range(0, starts.numel(), chunk):
            idx = starts[k : k + chunk, None] + offsets[None, :]  # (B, N)
            g = table[idx]  # (B, N, F + 1)
            b = g.shape[0]
            g[..., nf] += pos_sq
            w_aug = torch.cat([g, pos.expand(b, n, 2), torch.ones(b, n, 1)], dim=2)
            counts[k : k + chunk] = _bbs_count(w_aug, t_aug)
        windows += counts.numel()

        k_best = int(torch.argmax(counts))  # first maximum (row-major)
        score = float(counts[k_best]) / n
        if best is None or score > best.score:
            r, c = divmod(k_best, cols.size)
            best = MatchResult(_box(int(cols[c]), int(rows[r]), tw, th), score, 0, s)
    best.windows = windows
    return best


BASELINES = {"ncc": match_ncc, "mtm": match_mtm, "bbs": match_bbs}


def match_ncc_skimage(query, reference, scales=(1.0,), sizes=None) -> MatchResult:
    """NCC with scikit-image's ``match_template``: the same measure as :func:`match_ncc`,
    kept as an independent peer implementation for timing and cross-checking."""
    from skimage.feature import match_template

    query = _to_gray(_as_float_image(query, "query"))
    reference = _to_gray(_as_float_image(reference, "reference"))
    best, windows = None, 0
    for scale, template in _scaled_templates(query, reference, scales, sizes=sizes):
        scores = np.nan_to_num(match_template(reference, template), nan=-1.0)
        windows += scores.size
        row, col = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if best is None or scores[row, col] > best.score:
            best = MatchResult(_box(col, row, template.shape[1], template.shape[0]), float(scores[row, col]), 0, scale)
    best.windows = windows
    return best


def get_baseline(name: str):
    """The matcher function of a baseline name: those of :data:`BASELINES`, or ``ncc_skimage``
    (scikit-image's NCC, the independent check of ours; needs the dev extra)."""
    if name in BASELINES:
        return BASELINES[name]
    if name == "ncc_skimage":
        return match_ncc_skimage
    raise KeyError(f"unknown baseline {name!r}; known: {sorted(BASELINES) + ['exhaustive_cnn', 'ncc_skimage']}")
