"""Use a trained matcher without Hydra: ``RegionSearcher.from_checkpoint(path).search(query, reference)``.

The classical matchers the paper compares against are here too: ``match_ncc``, ``match_mtm``,
``match_bbs`` (or ``get_baseline(name)``), each ``(query, reference) -> MatchResult``;
``sizes=aspect_template_sizes(reference.shape, aspect, scales)`` searches a logo at its true aspect.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.checkpoints import load_checkpoint, load_weights
from core.errors import CheckpointError
from core.validation import (
    CHANNEL_AXIS_SIZES,
    require_channels,
    require_finite,
    require_fits_inside,
    require_ndim,
    require_nonempty_image,
    require_pixel_dtype,
    require_same_count,
)

from .baselines import (
    BASELINES,
    MatchResult,
    aspect_template_sizes,
    get_baseline,
    match_bbs,
    match_mtm,
    match_ncc,
)
from .evaluate import box_iou
from .nets.blocks import fuse_frozen_backbone
from .nets.search_path import SearchPathMatcher

__all__ = [
    "BASELINES", "MatchResult", "RegionSearcher", "aspect_template_sizes", "evaluate_search_path", "get_baseline", "match_bbs", "match_mtm",
    "match_ncc",
]

TRAIN_HINT = "Train one with `python -m benchmarks.train experiment=regionsearch/translated`"


class _SearchWindows(nn.Module):
    """The deterministic search as a tensor function (what the compiler exports)."""

    def __init__(self, net: SearchPathMatcher) -> None:
        super().__init__()
        self.net = net

    def forward(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        return self.net(queries, references, sample=False).windows


class _AheadOfTimeSearch:
    """The search exported (``torch.export``) and compiled by AOTInductor into a native library,
    one per input shape, built on first use. Called without Python guards or a Python wrapper
    per op: at batch 1 that overhead is most of the time (torch.compile's JIT graph kept ~0.3 ms
    of it here). The weights are baked in at compile time: build a new searcher after changing them."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.runners: dict[tuple, object] = {}
        self._folder = tempfile.TemporaryDirectory(prefix="deepmatch_search_")

    def __call__(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        # the library was built from contiguous examples: hand it contiguous inputs (an HWC
        # array arrives as a permuted view) rather than rely on the runner's stride handling
        queries, references = queries.contiguous(), references.contiguous()
        key = (tuple(queries.shape), tuple(references.shape), queries.dtype, references.dtype, str(queries.device))
        runner = self.runners.get(key)
        if runner is None:
            with torch.no_grad():
                program = torch.export.export(self.module, (queries, references))
                package = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(self._folder.name) / f"search_{len(self.runners)}.pt2"))
            runner = self.runners[key] = torch._inductor.aoti_load_package(package)
        return runner(queries, references)


class RegionSearcher:
    """Query + reference -> the box of the reference that matches the query.

    Args:
        net: a trained :class:`SearchPathMatcher`.
        device: where to run (``"cpu"``, ``"cuda"``...).
        compile: run the search as a native library compiled ahead of time (``torch.export`` +
            AOTInductor). The search is ~40 small ops per move, so at batch 1 Python and
            dispatch overhead, not arithmetic, set its time; compiled it runs ~3.5x faster at
            batch 1 on a CPU. The first call per input shape compiles (10-30 s on a CPU, needs a
            C++ compiler); if compiling fails the searcher warns once and runs eagerly
            (``compiled`` then turns False).
    """

    def __init__(self, net: SearchPathMatcher, device: str | torch.device = "cpu", compile: bool = False) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        # eager search: a frozen ImageNet backbone's folded copy; the compiled search exports the original
        fuse_frozen_backbone(self.net, fuse=not compile)
        self._eager = _SearchWindows(self.net).eval()
        self._search = _AheadOfTimeSearch(self._eager) if compile else self._eager
        self.compiled = compile

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", compile: bool = False) -> RegionSearcher:
        """Load a Lightning checkpoint written by ``benchmarks.train`` (or by the benchmark suite).

        Raises:
            CheckpointError: (a ``ValueError``; ``CheckpointNotFoundError`` is also a
                ``FileNotFoundError``) one line naming the path: missing, empty, truncated or
                not a PyTorch file, another family's checkpoint, weights that do not fit its
                ``net_config``, or NaN / infinite weights.
        """
        checkpoint = load_checkpoint(path, family="region-search", require=("net_config.glimpse_size", "state_dict"), hint=TRAIN_HINT)
        try:
            net = SearchPathMatcher(**checkpoint["net_config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"not a region-search checkpoint (its net_config does not build a matcher: {error})", path, TRAIN_HINT) from None
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        load_weights(net, state, path, family="region-search", hint=TRAIN_HINT)
        return cls(net, device, compile)

    @torch.no_grad()
    def windows(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """The search path of a batch: float (B, C, h, w) queries and (B, C, H, W) references
        on the searcher's device -> windows (T+1, B, 4), the last row the answers.

        The timed fast path: only the network's shape check, none of :meth:`search`'s input
        checks (finite pixels, sizes), which cost a device sync per call."""
        if not self.compiled:
            return self._eager(queries, references)
        try:
            return self._search(queries, references)
        except Exception as error:  # no C++ compiler, an op the exporter cannot trace...
            windows = self._eager(queries, references)  # a bad input raises here, as without compile
            first_line = (str(error).splitlines() or [""])[0]
            warnings.warn(f"compiling the search failed ({type(error).__name__}: {first_line}); running it eagerly", stacklevel=2)
            self._search, self.compiled = self._eager, False
            return windows

    def _as_batch(self, images, name: str) -> tuple[torch.Tensor, bool]:
        """(h,w) / (h,w,C) arrays, or (B,h,w) / (B,h,w,C) stacks, or (B,C,h,w) tensors ->
        (float (B,C,h,w) on the device, whether it was one image), checked: pixel type,
        channels, size, finite values.

        An array's trailing axis of 1, 3 or 4 is its channels ((h, w, 3) is one RGB image, not
        three images 3 pixels wide); otherwise it is grey: (h, w) or a stack (B, h, w)."""
        channels = self.net.in_channels
        layouts = "grey (h, w) or (B, h, w) arrays" if channels == 1 else f"(h, w, {channels}) or (B, h, w, {channels}) arrays"
        layouts += f", or (B, {channels}, h, w) tensors"
        require_pixel_dtype(images, name)
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            require_channels(name, images.shape[1], channels, images.shape, layouts)
            tensor, single = images, False
        else:
            array = images.numpy(force=True) if isinstance(images, torch.Tensor) else np.asarray(images)
            require_ndim(array, name, (2, 3, 4), layouts)
            channels_last = array.ndim == 4 or (array.ndim == 3 and array.shape[-1] in CHANNEL_AXIS_SIZES)
            single = array.ndim == 2 or (array.ndim == 3 and channels_last)
            if not channels_last:
                array = array[..., None]
            if single:
                array = array[None]
            require_channels(name, array.shape[-1], channels, np.shape(images), layouts)
            tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
        require_nonempty_image(name, tensor.shape[-2], tensor.shape[-1])
        is_uint8 = tensor.dtype == torch.uint8
        tensor = tensor.to(self.device).float()
        require_finite(tensor, name)
        return (tensor / 255 if is_uint8 else tensor), single

    @torch.no_grad()
    def search(self, query, reference, return_path: bool = False):
        """Boxes ``(x1, y1, x2, y2)`` in reference pixels: ``(4,)`` for one pair, ``(B, 4)`` for a batch.

        Images are uint8 (0..255) or float (0..1) arrays / tensors; with ``return_path``
        also the windows of the whole search path, ``(T+1, 4)`` or ``(T+1, B, 4)``.

        Raises:
            ValueError: naming ``query`` or ``reference``: an integer type other than uint8, NaN
                or infinite pixels, the wrong channels (an RGB image for a grey searcher), no
                pixels, a reference smaller than the query, or batches of different lengths.
        """
        queries, single = self._as_batch(query, "query")
        references, _ = self._as_batch(reference, "reference")
        require_same_count("query", queries.shape[0], "reference", references.shape[0])
        require_fits_inside("query", queries.shape[-2:], "reference", references.shape[-2:])
        windows = self.windows(queries, references).cpu().numpy()
        if single:
            windows = windows[:, 0]
        return (windows[-1], windows) if return_path else windows[-1]


def evaluate_search_path(searcher: RegionSearcher, pairs, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every window of every path ``(N, T+1)`` and the answer boxes ``(N, 4)`` on uint8
    ``pairs`` (``queries``, ``references``, ``boxes``)."""
    ious, boxes = [], []
    with torch.inference_mode():
        for i in range(0, len(pairs.boxes), batch_size):
            q = pairs.queries[i : i + batch_size].float().div(255).to(searcher.device)
            r = pairs.references[i : i + batch_size].float().div(255).to(searcher.device)
            windows = searcher.net(q, r).windows.cpu()  # eager: same answers, no compile per batch size
            truth = pairs.boxes[i : i + batch_size]
            ious.append(box_iou(windows, truth.unsqueeze(0).expand_as(windows)).T)
            boxes.append(windows[-1])
    return torch.cat(ious).numpy(), torch.cat(boxes).numpy()
