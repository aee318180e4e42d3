"""Template-matching baselines on real colour photos, each returning one template-sized box.

Every ``match_*`` takes the template ``(h, w, 3)`` and the search image ``(H, W, 3)`` (RGB,
uint8 or float in [0, 1]) and returns a :class:`~regionsearch.evaluate.MethodResult`: the
box ``(x1, y1, x2, y2)`` of the template's size in the search image and the number of candidate
windows scored. Boxes follow :mod:`regionsearch.evaluate` (continuous pixels, x2/y2 exclusive).

* SSD / NCC / ZNCC: OpenCV ``matchTemplate`` on colour (``TM_SQDIFF``, ``TM_CCORR_NORMED``,
  ``TM_CCOEFF_NORMED``), every position.
* BBS (Dekel et al., CVPR 2015): :func:`regionsearch.baselines.match_bbs`, colour 3x3 patches +
  xy, run at a working resolution where the template has at most ``max_patches`` patches.
* DDIS (Talmi, Mechrez, Zelnik-Manor, "Template Matching with Deformable Diversity
  Similarity", CVPR 2017), implemented from the paper: exhaustive nearest-neighbour field,
  diversity and deformation terms (:func:`match_ddis`).
* Deep features (EfficientNet-Lite0 ImageNet features, :class:`DeepFeatures`): ZNCC on the
  feature maps, and QATM's soft mutual nearest-neighbour score (Cheng et al., CVPR 2019).

Working-resolution choices (``max_patches``, ``max_points``, strides) are set by cost on a
2-core CPU, never by accuracy on the test pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.backbones import EfficientNetLite0Blocks
from regionsearch.baselines import match_bbs
from regionsearch.evaluate import MethodResult

__all__ = ["DeepFeatures", "OPENCV_MODES", "TEMPLATE_METHODS", "build_template_methods", "ddis_authors_peak", "match_bbs_colour", "match_ddis", "match_opencv", "template_sized_box"]

# method -> (OpenCV mode, higher is better)
OPENCV_MODES = {
    "ssd": (cv2.TM_SQDIFF, False),
    "ncc": (cv2.TM_CCORR_NORMED, True),
    "zncc": (cv2.TM_CCOEFF_NORMED, True),
}


def _float_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        raise ValueError(f"{name} must be a colour image (h, w, 3), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")
    return np.ascontiguousarray(image, dtype=np.float32)


def _check_fits(template: np.ndarray, image: np.ndarray) -> None:
    if template.shape[0] > image.shape[0] or template.shape[1] > image.shape[1]:
        raise ValueError(f"template {template.shape[:2]} is larger than the search image {image.shape[:2]}")


def template_sized_box(center_x: float, center_y: float, width: int, height: int) -> np.ndarray:
    """The ``width x height`` box centred at ``(center_x, center_y)``."""
    return np.array([center_x - width / 2, center_y - height / 2, center_x + width / 2, center_y + height / 2], dtype=np.float64)


# --------------------------------------------------------------------------------------
# SSD / NCC / ZNCC
# --------------------------------------------------------------------------------------


def match_opencv(template: np.ndarray, image: np.ndarray, method: str = "zncc") -> MethodResult:
    """``cv2.matchTemplate`` on colour at every position; ``method`` in :data:`OPENCV_MODES`.

    OpenCV sums the per-channel scores (ZNCC: per-channel means removed). Windows whose
    normalised score is undefined (flat) count as no match.
    """
    if method not in OPENCV_MODES:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(OPENCV_MODES)}")
    mode, higher = OPENCV_MODES[method]
    t, ref = _float_rgb(template, "template"), _float_rgb(image, "image")
    _check_fits(t, ref)
    scores = cv2.matchTemplate(ref, t, mode)
    worst = -np.inf if higher else np.inf
    scores = np.nan_to_num(scores, nan=worst, posinf=worst, neginf=worst)
    flat = int(np.argmax(scores) if higher else np.argmin(scores))  # first best, row-major
    row, col = divmod(flat, scores.shape[1])
    th, tw = t.shape[:2]
    return MethodResult(np.array([col, row, col + tw, row + th], dtype=np.float64), int(scores.size), float(scores[row, col]))


# --------------------------------------------------------------------------------------
# Working resolution shared by BBS and DDIS
# --------------------------------------------------------------------------------------


def _shrink_factor(template_shape: Sequence[int], max_area: float) -> float:
    """Scale (<= 1) that brings the template's area down to ``max_area`` pixels."""
    area = float(template_shape[0] * template_shape[1])
    return min(1.0, math.sqrt(max_area / area))


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def _box_back(box: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """A box found at the working resolution -> the template-sized box at full resolution,
    centred where the found window's centre maps to."""
    cx, cy = (box[0] + box[2]) / 2 / factor, (box[1] + box[3]) / 2 / factor
    return template_sized_box(cx, cy, width, height)


# --------------------------------------------------------------------------------------
# BBS
# --------------------------------------------------------------------------------------


def match_bbs_colour(template: np.ndarray, image: np.ndarray, max_patches: int = 144, patch_size: int = 3, gamma: float = 2.0, stride: int = 3) -> MethodResult:
    """Best-Buddies Similarity with the paper's colour (RGB 3x3 patches) + xy features.

    Template and image are shrunk (area averaging) so that the template holds at most
    ``max_patches`` non-overlapping ``patch_size`` patches (larger templates cost O(N^2) per
    window); windows every ``stride`` pixels of that resolution; the best window's centre,
    mapped back, centres the template-sized box.
    """
    t, ref = _float_rgb(template, "template"), _float_rgb(image, "image")
    _check_fits(t, ref)
    th, tw = t.shape[:2]
    factor = _shrink_factor(t.shape, max_patches * patch_size**2)
    # keep at least one patch per side
    factor = max(factor, min(1.0, patch_size / min(th, tw)))
    result = match_bbs(_resize(t, factor), _resize(ref, factor), patch_size=patch_size, gamma=gamma, stride=stride)
    return MethodResult(_box_back(result.box, factor, tw, th), result.windows)


# --------------------------------------------------------------------------------------
# DDIS
# --------------------------------------------------------------------------------------

# Pixels of the (patches x template points) distance matrix per chunk of the NN field.
_DDIS_CHUNK = 1 << 22


def _patch_features(image: np.ndarray, patch_size: int) -> torch.Tensor:
    """Every overlapping ``patch_size`` colour patch as a vector: (H - p + 1, W - p + 1, 3 p^2)."""
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    cols = F.unfold(x, kernel_size=patch_size)[0]
    return cols.T.reshape(h - patch_size + 1, w - patch_size + 1, -1)


def _nearest_template_point(image_features: torch.Tensor, template_features: torch.Tensor) -> torch.Tensor:
    """Exact NN (squared L2) in the template of every image patch: (M, K), (N, K) -> (M,) int64."""
    t_sq = (template_features * template_features).sum(1)
    chunk = max(1, _DDIS_CHUNK // max(1, template_features.shape[0]))
    out = torch.empty(image_features.shape[0], dtype=torch.int64)
    for start in range(0, image_features.shape[0], chunk):
        block = image_features[start : start + chunk]
        # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2; ||a||^2 is constant per row: drop it
        out[start : start + chunk] = (t_sq[None, :] - 2.0 * block @ template_features.T).argmin(dim=1)
    return out


def ddis_authors_peak(score_map: np.ndarray, window_hw: tuple[float, float]) -> tuple[int, int]:
    """The DDIS authors' localisation on a map of window scores (index = window top-left).

    The map is summed over boxes of a third of the window's size (``ceil``); the best box's
    centre is then moved to the centre of mass of the scores in the window-sized neighbourhood
    around it (cropped symmetrically at the map's border), rounded. Returns (row, col).
    """
    rows, cols = score_map.shape
    kh, kw = min(rows, math.ceil(window_hw[0] / 3)), min(cols, math.ceil(window_hw[1] / 3))
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = score_map.cumsum(0).cumsum(1)
    sums = integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw] + integral[:-kh, :-kw]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    r0, c0 = i + kh // 2, j + kw // 2
    half_r = min(int(window_hw[0] // 2), r0, rows - 1 - r0)
    half_c = min(int(window_hw[1] // 2), c0, cols - 1 - c0)
    crop = np.clip(score_map[r0 - half_r : r0 + half_r + 1, c0 - half_c : c0 + half_c + 1], 0, None)
    total = crop.sum()
    if total <= 0:
        return r0, c0
    dr = (crop.sum(1) * np.arange(-half_r, half_r + 1)).sum() / total
    dc = (crop.sum(0) * np.arange(-half_c, half_c + 1)).sum() / total
    return int(round(r0 + dr)), int(round(c0 + dc))


def match_ddis(
    template: np.ndarray,
    image: np.ndarray,
    max_points: int = 1024,
    patch_size: int = 3,
    stride: int = 1,
    localize: str = "authors",
    window_chunk: int = 2048,
) -> MethodResult:
    """Deformable Diversity Similarity (Talmi, Mechrez, Zelnik-Manor, CVPR 2017), exhaustive.

    Points are every overlapping ``patch_size`` colour patch (RGB vector) of the template
    (set T) and of a window (set S), at a working resolution where the template has at most
    ``max_points`` pixels. For each window, implemented as the paper's DDIS:

        DDIS(S, T) = 1/|T| * sum_{s_i in S} exp(1 - kappa(NN(s_i))) / (1 + r_i)

    where NN(s_i) is s_i's exact appearance nearest neighbour in T (the NN field of the whole
    image is computed once: it does not depend on the window), kappa(t) = how many points of the
    window have t as their NN (diversity: many-to-one matches are discounted exponentially), and
    r_i = || position of s_i in the window - position of NN(s_i) in the template ||, measured in
    pixels of the full-resolution image (the deformation term). This is the authors' per-window
    score (``roimehrez/DDIS``, bandwidth h = 1; the 1/|T| only rescales it). Windows every
    ``stride`` pixels of the working resolution. ``localize="authors"`` picks the window as the
    authors' code does (:func:`ddis_authors_peak`: the score map box-filtered over a third of the
    template's size, then refined by its centre of mass); ``"argmax"`` takes the best window.
    Its centre, mapped back, centres the template-sized box.
    """
    if localize not in ("authors", "argmax"):
        raise ValueError(f"localize must be 'authors' or 'argmax', got {localize!r}")
    t, ref = _float_rgb(template, "template"), _float_rgb(image, "image")
    _check_fits(t, ref)
    th_full, tw_full = t.shape[:2]
    factor = _shrink_factor(t.shape, max_points)
    factor = max(factor, min(1.0, patch_size / min(th_full, tw_full)))
    t, ref = _resize(t, factor), _resize(ref, factor)
    th, tw = t.shape[:2]
    if th < patch_size or tw < patch_size:
        raise ValueError(f"template {t.shape[:2]} is smaller than one {patch_size}x{patch_size} patch")
    _check_fits(t, ref)

    t_feat = _patch_features(t, patch_size)  # (ph, pw, K): the template points
    ph, pw = t_feat.shape[:2]
    n = ph * pw
    i_feat = _patch_features(ref, patch_size)
    ih, iw = i_feat.shape[:2]
    nn_field = _nearest_template_point(i_feat.reshape(ih * iw, -1), t_feat.reshape(n, -1))

    # point j of every window sits at grid offset (dy_j, dx_j); so does template point j
    dy, dx = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    grid_xy = torch.stack([dx, dy], 1).to(torch.float32) / factor  # full-resolution pixels
    offsets = dy * iw + dx
    rows = torch.arange(0, ih - ph + 1, stride)
    cols = torch.arange(0, iw - pw + 1, stride)
    starts = (rows[:, None] * iw + cols[None, :]).reshape(-1)
    scores = torch.empty(starts.numel())
    for k in range(0, starts.numel(), window_chunk):
        nn = nn_field[starts[k : k + window_chunk, None] + offsets[None, :]]  # (B, N): NN of each window point
        b = nn.shape[0]
        kappa = torch.zeros(b, n).scatter_add_(1, nn, torch.ones(b, n)).gather(1, nn)
        r = (grid_xy[None, :, :] - grid_xy[nn]).norm(dim=2)
        scores[k : k + window_chunk] = (torch.exp(1.0 - kappa) / (1.0 + r)).sum(1) / n
    if localize == "argmax":
        r, c = divmod(int(torch.argmax(scores)), cols.numel())  # first best, row-major
    else:
        r, c = ddis_authors_peak(scores.reshape(rows.numel(), cols.numel()).double().numpy(), (th / stride, tw / stride))
    row, col = int(rows[r]), int(cols[c])
    box = np.array([col, row, col + tw, row + th], dtype=np.float64)
    return MethodResult(_box_back(box, factor, tw_full, th_full), int(starts.numel()))


# --------------------------------------------------------------------------------------
# Deep features: ZNCC and QATM on EfficientNet-Lite0 maps
# --------------------------------------------------------------------------------------


class DeepFeatures:
    """ImageNet features of EfficientNet-Lite0 for template matching, at stride 4.

    The outputs of ``blocks`` (default 4: stride 8, 40 channels, and 10: stride 16, 112
    channels; one middle and one deep layer, as QATM pairs a shallow and a deeper VGG layer)
    are bilinearly resized to the image's size / 4 (rounded), each L2-normalised per position,
    and concatenated. The template runs through the network on its own (as QATM does), so its
    map has ``round(h / 4) x round(w / 4)`` cells.
    """

    def __init__(self, blocks: Sequence[int] = (4, 10), pretrained: bool = True, device: str | torch.device = "cpu", cell: int = 4) -> None:
        self.device = torch.device(device)
        # inference only: the folded copy (same maps to float rounding, about 1.4x faster on a CPU)
        self.net = EfficientNetLite0Blocks(blocks, pretrained).to(self.device).eval().fused_for_inference()
        self.cell = int(cell)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(h, w, 3) RGB -> (C, max(1, round(h / cell)), max(1, round(w / cell))) float32."""
        x = torch.from_numpy(_float_rgb(image, "image").transpose(2, 0, 1).copy())[None].to(self.device)
        h, w = x.shape[-2:]
        size = (max(1, round(h / self.cell)), max(1, round(w / self.cell)))
        maps = self.net(self.net.normalize(x))
        maps = [F.normalize(F.interpolate(m, size=size, mode="bilinear", align_corners=False), dim=1) for m in maps]
        return torch.cat(maps, dim=1)[0]

    def _box(self, row: int, col: int, cells: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        # window of cells [col, col + cw) covers pixels [cell * col, cell * (col + cw))
        (ch, cw), (h, w) = cells, size
        return template_sized_box(self.cell * (col + cw / 2), self.cell * (row + ch / 2), w, h)

    def match_zncc(self, template: np.ndarray, image: np.ndarray) -> MethodResult:
        """ZNCC between the template's feature block and every window of the image's map
        (per-channel means removed, summed over channels, as ``TM_CCOEFF_NORMED`` on colour)."""
        _check_fits(template, image)
        tf, imf = self(template), self(image)
        c, ch, cw = tf.shape
        ch, cw = min(ch, imf.shape[1]), min(cw, imf.shape[2])
        tf = tf[:, :ch, :cw]
        n = ch * cw
        t0 = tf - tf.mean(dim=(1, 2), keepdim=True)
        numerator = F.conv2d(imf[None], t0[None])[0, 0]
        mean_windows = F.avg_pool2d(imf[None], (ch, cw), stride=1)[0]  # (C, h', w')
        mean_sq = F.avg_pool2d((imf * imf).sum(0, keepdim=True)[None], (ch, cw), stride=1)[0, 0]
        energy = (n * (mean_sq - (mean_windows * mean_windows).sum(0))).clamp(min=1e-12)
        scores = numerator / (t0.norm() * energy.sqrt()).clamp(min=1e-12)
        best = int(torch.argmax(scores))
        row, col = divmod(best, scores.shape[1])
        return MethodResult(self._box(row, col, (ch, cw), template.shape[:2]), int(scores.numel()))

    def match_qatm(self, template: np.ndarray, image: np.ndarray, alpha: float = 25.0) -> MethodResult:
        """QATM (Cheng, Wu, Abd-Almageed, Natarajan, CVPR 2019) on these features.

        Channels are standardised over the template's and the image's positions together, then
        L2-normalised per position; rho = cosine similarity of every (template cell t, image
        cell s); QATM(s, t) = sqrt(softmax_s(alpha rho) * softmax_t(alpha rho)) (soft mutual
        nearest neighbours); q(s) = max_t QATM(s, t); a window's score is the mean of log q over
        its cells (the log of their geometric mean), alpha = 25 (the paper's value).
        """
        _check_fits(template, image)
        tf, imf = self(template), self(image)
        c, ch, cw = tf.shape
        ch, cw = min(ch, imf.shape[1]), min(cw, imf.shape[2])
        tf = tf[:, :ch, :cw]
        t_flat, i_flat = tf.reshape(c, -1), imf.reshape(c, -1)
        both = torch.cat([t_flat, i_flat], dim=1)
        mean, std = both.mean(1, keepdim=True), both.std(1, keepdim=True).clamp(min=1e-6)
        t_flat = F.normalize((t_flat - mean) / std, dim=0)
        i_flat = F.normalize((i_flat - mean) / std, dim=0)
        rho = alpha * (t_flat.T @ i_flat)  # (template cells, image cells)
        log_quality = 0.5 * (torch.log_softmax(rho, dim=1) + torch.log_softmax(rho, dim=0))
        log_q = log_quality.max(dim=0).values.reshape(imf.shape[1:])
        scores = F.avg_pool2d(log_q[None, None], (ch, cw), stride=1)[0, 0]
        best = int(torch.argmax(scores))
        row, col = divmod(best, scores.shape[1])
        return MethodResult(self._box(row, col, (ch, cw), template.shape[:2]), int(scores.numel()))


# --------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------

TEMPLATE_METHODS = ("ssd", "ncc", "zncc", "bbs", "ddis", "deep_zncc", "deep_qatm")


def build_template_methods(settings: dict[str, dict], device: str | torch.device = "cpu", pretrained: bool = True) -> dict:
    """``{name: keyword arguments}`` -> ``{name: callable(template, image) -> MethodResult}``.

    Names are :data:`TEMPLATE_METHODS`; the deep rows share one :class:`DeepFeatures` (its
    ``blocks`` may be given in either deep row's settings).
    """
    unknown = sorted(set(settings) - set(TEMPLATE_METHODS))
    if unknown:
        raise ValueError(f"unknown template-matching methods {unknown}; choose from {list(TEMPLATE_METHODS)}")
    settings = {name: dict(kwargs or {}) for name, kwargs in settings.items()}
    deep = None
    if "deep_zncc" in settings or "deep_qatm" in settings:
        blocks = [s.pop("blocks") for s in (settings.get("deep_zncc", {}), settings.get("deep_qatm", {})) if "blocks" in s]
        deep = DeepFeatures(tuple(blocks[0]) if blocks else (4, 10), pretrained=pretrained, device=device)
    methods = {}
    for name, kwargs in settings.items():
        if name in OPENCV_MODES:
            methods[name] = partial(match_opencv, method=name, **kwargs)
        elif name == "bbs":
            methods[name] = partial(match_bbs_colour, **kwargs)
        elif name == "ddis":
            methods[name] = partial(match_ddis, **kwargs)
        elif name == "deep_zncc":
            methods[name] = partial(deep.match_zncc, **kwargs)
        else:
            methods[name] = partial(deep.match_qatm, **kwargs)
    return methods
