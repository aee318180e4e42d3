"""Use a trained matcher without Hydra: ``RegionSearcher.from_checkpoint(path).search(query, reference)``."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .evaluate import box_iou
from .nets.search_path import SearchPathMatcher


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
        self._eager = _SearchWindows(self.net).eval()
        self._search = _AheadOfTimeSearch(self._eager) if compile else self._eager
        self.compiled = compile

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", compile: bool = False) -> RegionSearcher:
        """Load a Lightning checkpoint written by ``benchmarks.train`` (or by the benchmark suite)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (train one with `python -m benchmarks.train experiment=regionsearch/translated`)")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if "net_config" not in checkpoint:
            raise ValueError(f"{path} is not a region-search checkpoint (no net_config)")
        net = SearchPathMatcher(**checkpoint["net_config"])
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        net.load_state_dict(state)
        return cls(net, device, compile)

    @torch.no_grad()
    def windows(self, queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """The search path of a batch: float (B, C, h, w) queries and (B, C, H, W) references
        on the searcher's device -> windows (T+1, B, 4), the last row the answers."""
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

    def _as_batch(self, images, name: str) -> torch.Tensor:
        """(h,w) / (h,w,C) arrays, or (B,h,w) / (B,h,w,C) stacks, or (B,C,h,w) tensors -> float (B,C,h,w)."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            tensor = images.float()
        else:
            array = np.asarray(images)
            channels = self.net.in_channels
            if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == channels and channels == 3):
                array = array[None]
            if array.ndim == 3:
                array = array[..., None]
            if array.ndim != 4 or array.shape[-1] != channels:
                raise ValueError(f"{name}: expected (h,w{',3' if channels == 3 else ''}) images, got shape {np.asarray(images).shape}")
            tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
            if array.dtype == np.uint8:
                tensor = tensor / 255
        return tensor.to(self.device)

    @torch.no_grad()
    def search(self, query, reference, return_path: bool = False):
        """Boxes ``(x1, y1, x2, y2)`` in reference pixels: ``(4,)`` for one pair, ``(B, 4)`` for a batch.

        Images are uint8 (0..255) or float (0..1) arrays / tensors; with ``return_path``
        also the windows of the whole search path, ``(T+1, 4)`` or ``(T+1, B, 4)``.
        """
        single = not (isinstance(query, torch.Tensor) and query.dim() == 4) and np.asarray(query).ndim == (2 if self.net.in_channels == 1 else 3)
        queries, references = self._as_batch(query, "query"), self._as_batch(reference, "reference")
        if queries.shape[0] != references.shape[0]:
            raise ValueError(f"{queries.shape[0]} queries but {references.shape[0]} references")
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
