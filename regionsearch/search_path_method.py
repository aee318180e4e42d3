"""The learned search path as a template-matching method on photos, and its cheap local ZNCC steps.

:class:`SearchPathMethod` wraps a trained matcher (``first_view='reference'``) as a protocol method
``(template, image) -> MethodResult``, like the baselines of :mod:`regionsearch.template_baselines`:
a first look sized per pair within a share of an exhaustive scan's windows, then (optionally) a
ZNCC re-ranking of the second look's candidates (``rerank``) and a local ZNCC alignment of the final
window (``refine``). Every placement any step scores counts as a window, inside the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from regionsearch.evaluate import MethodResult
from regionsearch.nets.blocks import fuse_frozen_backbone
from regionsearch.template_baselines import _float_rgb, match_opencv, template_sized_box

__all__ = ["SearchPathMethod", "SearchTrace", "local_zncc", "zncc_refine", "zncc_refine_windows"]


def _refine_geometry(template_hw: tuple[int, int], radius: float, template_px: int) -> tuple[float, int, int, int, int]:
    """Working scale, the template's size there and the search's half-extent (working pixels)."""
    h, w = template_hw
    factor = min(1.0, template_px / max(h, w))
    work_h, work_w = max(1, round(h * factor)), max(1, round(w * factor))
    return factor, work_h, work_w, math.ceil(radius * work_h), math.ceil(radius * work_w)


def zncc_refine_windows(template_hw: tuple[int, int], radius: float, template_px: int) -> int:
    """The most windows :func:`zncc_refine` scores for a template of this size (read off sizes only)."""
    _, _, _, reach_y, reach_x = _refine_geometry(template_hw, radius, template_px)
    return (2 * reach_y + 1) * (2 * reach_x + 1)


def local_zncc(
    template: np.ndarray, image: np.ndarray, centre: tuple[float, float], radius: float = 0.2, template_px: int = 32
) -> tuple[float, float, int, float | None]:
    """:func:`zncc_refine` that also returns the best placement's ZNCC (in [-1, 1]; None where
    nothing was scored): ``(centre_x, centre_y, windows scored, score)``. A flat template has no
    ZNCC (OpenCV would score it 1 everywhere and move the centre to the first placement): nothing is
    scored and the centre stays."""
    if radius < 0 or template_px < 1:
        raise ValueError(f"radius must be >= 0 and template_px >= 1, got {radius}, {template_px}")
    t = _float_rgb(template, "template")
    image = np.asarray(image)
    factor, work_h, work_w, reach_y, reach_x = _refine_geometry(t.shape[:2], radius, template_px)
    # the neighbourhood at full resolution: the template's box around the centre, widened by the reach,
    # cut to the image and resampled to at most the working size that holds the reach (so the windows
    # never exceed zncc_refine_windows, the budget's reservation)
    half_w, half_h = (work_w / 2 + reach_x) / factor, (work_h / 2 + reach_y) / factor
    x0, y0 = max(0, math.floor(centre[0] - half_w)), max(0, math.floor(centre[1] - half_h))
    x1, y1 = min(image.shape[1], math.ceil(centre[0] + half_w)), min(image.shape[0], math.ceil(centre[1] + half_h))
    out_w, out_h = min(work_w + 2 * reach_x, round((x1 - x0) * factor)), min(work_h + 2 * reach_y, round((y1 - y0) * factor))
    if out_h < work_h or out_w < work_w:
        return float(centre[0]), float(centre[1]), 0, None
    # only the neighbourhood is converted and resampled, never the whole image
    crop = cv2.resize(_float_rgb(image[y0:y1, x0:x1], "image"), (out_w, out_h), interpolation=cv2.INTER_AREA)
    small = cv2.resize(t, (work_w, work_h), interpolation=cv2.INTER_AREA) if factor < 1 else t
    if float(small.std()) < 1e-6:
        return float(centre[0]), float(centre[1]), 0, None
    found = match_opencv(small, crop, "zncc")
    scale_x, scale_y = (x1 - x0) / out_w, (y1 - y0) / out_h
    centre_x, centre_y = (found.box[0] + found.box[2]) / 2, (found.box[1] + found.box[3]) / 2
    return x0 + centre_x * scale_x, y0 + centre_y * scale_y, found.windows, found.score


def zncc_refine(template: np.ndarray, image: np.ndarray, centre: tuple[float, float], radius: float = 0.2, template_px: int = 32) -> tuple[float, float, int]:
    """Move a found window's centre to the best colour ZNCC (``TM_CCOEFF_NORMED``) placement of
    the template within ``radius`` of its size around ``centre``, at a working resolution where
    the template's long side is at most ``template_px``: a cheap, exact alignment for a matcher
    that finds the right place on a coarse grid. Returns ``(centre_x, centre_y, windows scored)``;
    the centre is unchanged where the neighbourhood does not hold the template (image border)."""
    return local_zncc(template, image, centre, radius, template_px)[:3]


def _shifted(window: np.ndarray, shift_x: float, shift_y: float) -> np.ndarray:
    """A box ``(x1, y1, x2, y2)`` moved by ``(shift_x, shift_y)``, its size kept."""
    return window + np.array([shift_x, shift_y, shift_x, shift_y])


@dataclass(frozen=True)
class SearchTrace:
    """One query's search: ``result`` (the method's answer), the net's ``windows`` (T + 1, 4) (window 0
    the whole reference, window 1 the first look's pick, then each move; before any ZNCC step) and the
    second look's ``candidates`` (K, 3) ``(x, y, net score)``, NaN rows unused (None without one)."""

    result: MethodResult
    windows: np.ndarray
    candidates: np.ndarray | None


class SearchPathMethod:
    """A trained search-path matcher (``first_view='reference'``) as a protocol method:
    ``(template, image) -> MethodResult`` with the final window (``box='free'``, width and
    height predicted) or a template-sized box at its centre (``box='template'``, the peers'
    output). ``windows`` counts the first look's placements plus the glimpses. ``rerank``
    (``{"weight", "radius", "template_px"}``, a matcher with a second look) aligns each of the second
    look's candidates by :func:`local_zncc` and moves the window to the candidate with the highest
    ``net score + weight * ZNCC`` (the net's mean cosine and ZNCC both in [-1, 1]): the net's features
    find the places, colour ZNCC breaks its near-ties. ``refine`` (``{"radius", "template_px"}``,
    :func:`zncc_refine`) then moves the final window's centre to the best colour ZNCC placement
    nearby. Their windows count too (and, with ``windows_share``, within the budget).

    The net comes in built (e.g. ``RegionSearcher.from_checkpoint(path).net``): this module
    imports no checkpoint format.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        box: str = "free",
        device: str | torch.device = "cpu",
        windows_share: float | None = None,
        template_px: float | None = None,
        max_view: int = 768,
        refine: dict | None = None,
        rerank: dict | None = None,
    ) -> None:
        if box not in ("free", "template"):
            raise ValueError(f"box must be free or template, got {box!r}")
        if getattr(net, "first_view", None) != "reference":
            raise ValueError("the search path on photos needs a matcher built with first_view='reference'")
        if windows_share is not None and not 0 < windows_share <= 1:
            raise ValueError(f"windows_share must be in (0, 1], got {windows_share}")
        self.net = net.to(device).eval()
        fuse_frozen_backbone(self.net)  # a frozen ImageNet backbone: its folded copy, same maps
        self.box = box
        self.device = torch.device(device)
        # a first look sized per pair (budget_view) instead of the net's fixed first_glimpse_size
        self.windows_share = windows_share
        self.template_px = template_px
        self.max_view = max_view
        self.refine = dict(refine) if refine else None
        if self.refine and set(self.refine) != {"radius", "template_px"}:
            raise ValueError(f"refine takes radius and template_px, got {sorted(self.refine)}")
        self.rerank = dict(rerank) if rerank else None
        if self.rerank and set(self.rerank) != {"weight", "radius", "template_px"}:
            raise ValueError(f"rerank takes weight, radius and template_px, got {sorted(self.rerank)}")
        if self.rerank and not net.second_look_view:
            raise ValueError("rerank re-scores the second look's candidates: the matcher needs a second look (second_look_view)")
        # a first look sized per pair keeps the second look's resolution ratio to it
        self.second_look_ratio = net.second_look_view / net.first_glimpse_size if net.second_look_view else None

    def local_windows(self, template_hw: tuple[int, int]) -> int:
        """The most windows the re-ranking (k candidates) and the refinement score for this template."""
        count = zncc_refine_windows(template_hw, **self.refine) if self.refine else 0
        if self.rerank:
            aligned = zncc_refine_windows(template_hw, self.rerank["radius"], self.rerank["template_px"])
            count += self.net.second_look_candidates * aligned
        return count

    def budget(self, template_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, bool]:
        """The first look's long side for one pair and whether the local ZNCC steps (re-ranking,
        refinement) fit beside it: the largest view (a multiple of 8 px, 32 to ``max_view``) whose
        placements, plus the glimpses (and a second look's, at most k (2r + 2)^2, and the local steps'),
        stay within ``windows_share`` of an exhaustive scan's; with ``template_px``, no larger than the
        view that shows the template's long side at that many pixels (the scale the matcher was trained
        at). Where no view leaves room for the local steps (tiny images), the pair goes without them.
        Read off the sizes only: the window budget holds for every pair, not just on average."""
        (h, w), (height, width) = template_hw, image_hw
        exhaustive = max(1, height - h + 1) * max(1, width - w + 1)
        stride, long_side = self.net.encoder.map_stride, max(height, width)
        extra = self.net.steps
        if self.net.second_look_view:
            extra += self.net.second_look_candidates * (2 * self.net.second_look_radius + 2) ** 2

        def largest_view(reserved: int) -> int | None:
            fits = None
            for candidate in range(32, self.max_view + 1, 8):
                scale = candidate / long_side
                cells = math.ceil(round(height * scale) / stride) * math.ceil(round(width * scale) / stride)
                if cells + reserved <= self.windows_share * exhaustive:
                    fits = candidate
            return fits

        local = self.local_windows(template_hw)
        view = largest_view(extra + local) if local else None
        fits = view is not None
        if view is None:
            view = largest_view(extra) or 32
        if self.template_px:
            view = min(view, max(32, 8 * round(self.template_px * long_side / max(h, w) / 8)))
        return view, fits

    def budget_view(self, template_hw: tuple[int, int], image_hw: tuple[int, int]) -> int:
        """The first look's long side for one pair (:meth:`budget`)."""
        return self.budget(template_hw, image_hw)[0]

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        array = np.ascontiguousarray(image)
        tensor = torch.from_numpy(array).to(self.device).permute(2, 0, 1).float()
        return tensor / 255 if array.dtype == np.uint8 else tensor

    def _reranked(self, window: np.ndarray, candidates: np.ndarray, template: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, int]:
        """The window moved from the net's pick (its best-scoring candidate, window 1's centre) to the
        candidate with the highest net score + weight * ZNCC after its local alignment; the windows
        scored. A candidate whose neighbourhood cannot hold the template scores ZNCC -1."""
        rows = candidates[np.isfinite(candidates).all(axis=1)]
        if len(rows) == 0:
            return window, 0
        scored, best, best_total = 0, None, -math.inf
        for x, y, net_score in rows:
            new_x, new_y, count, zncc = local_zncc(template, image, (x, y), self.rerank["radius"], self.rerank["template_px"])
            scored += count
            total = net_score + self.rerank["weight"] * (-1.0 if zncc is None else zncc)
            if total > best_total:
                best, best_total = (new_x, new_y), total
        shift_x, shift_y = np.subtract(best, rows[int(np.argmax(rows[:, 2])), :2])
        return _shifted(window, shift_x, shift_y), scored

    def _result(
        self, window: np.ndarray, template: np.ndarray, image: np.ndarray, windows: float, local: bool = True, candidates: np.ndarray | None = None
    ) -> MethodResult:
        window = np.asarray(window, dtype=np.float64)
        if self.rerank and local and candidates is not None:
            window, scored = self._reranked(window, candidates, template, image)
            windows += scored
        centre_x, centre_y = (window[0] + window[2]) / 2, (window[1] + window[3]) / 2
        if self.refine and local:
            new_x, new_y, scored = zncc_refine(template, image, (centre_x, centre_y), **self.refine)
            window, windows = _shifted(window, new_x - centre_x, new_y - centre_y), windows + scored
            centre_x, centre_y = new_x, new_y
        if self.box == "template":
            return MethodResult(template_sized_box(centre_x, centre_y, template.shape[1], template.shape[0]), int(round(windows)))
        return MethodResult(window, int(round(windows)))

    @torch.inference_mode()
    def __call__(self, template: np.ndarray, image: np.ndarray) -> MethodResult:
        return self.trace(template, image).result

    @torch.inference_mode()
    def trace(self, template: np.ndarray, image: np.ndarray) -> SearchTrace:
        """The answer (as ``__call__``) and how it was found (:class:`SearchTrace`, for plots)."""
        local = True
        if self.windows_share:
            self.net.first_glimpse_size, local = self.budget(template.shape[:2], image.shape[:2])
            if self.second_look_ratio:
                self.net.second_look_view = round(self.net.first_glimpse_size * self.second_look_ratio)
        out = self.net(self._tensor(template)[None], self._tensor(image)[None])
        candidates = None if out.look_candidates is None else out.look_candidates[0].cpu().numpy()
        result = self._result(out.boxes[0].cpu().numpy(), template, image, float(out.windows_evaluated[0]), local, candidates)
        return SearchTrace(result, out.windows[:, 0].cpu().numpy(), candidates)

    @torch.inference_mode()
    def batch(self, templates: Sequence[np.ndarray], images: Sequence[np.ndarray]) -> list[MethodResult]:
        """Several pairs in one pass: images zero-padded (bottom, right) to a common size with
        their valid sizes given to the net. Same answers as one at a time when the images share
        their size (the first look scales the padded canvas). With a first look sized per pair
        (``windows_share``) the pairs run one at a time."""
        if self.windows_share:
            return [self(t, i) for t, i in zip(templates, images)]

        def padded(arrays):
            height, width = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
            batch = torch.zeros(len(arrays), 3, height, width, device=self.device)
            for index, array in enumerate(arrays):
                batch[index, :, : array.shape[0], : array.shape[1]] = self._tensor(array)
            sizes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.float32, device=self.device)
            return batch, sizes

        queries, query_sizes = padded(templates)
        references, reference_sizes = padded(images)
        out = self.net(queries, references, query_size=query_sizes, reference_size=reference_sizes)
        boxes, counts = out.boxes.cpu().numpy(), out.windows_evaluated.cpu().numpy()
        candidates = [None] * len(templates) if out.look_candidates is None else out.look_candidates.cpu().numpy()
        return [self._result(boxes[i], templates[i], images[i], float(counts[i]), True, candidates[i]) for i in range(len(templates))]
