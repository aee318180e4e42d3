"""The "evaluate every candidate" approach the search path is faster than: the trained
siamese encoder scores every window of the reference against the query."""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import MatchResult
from .search_path import SearchPathMatcher


class ExhaustiveCNNMatcher:
    """Slide a window of the query's size (times each scale) with ``stride`` over the
    reference, encode every window with the matcher's encoder and return the window
    whose feature is nearest to the query's.

    Args:
        net: a trained matcher (only its encoder is used).
        stride: window step in reference pixels.
        scales: window sizes as multiples of the final window of the search path
            (``net.window_size`` of the reference side in schedule mode, else the query size).
        batch_size: windows encoded per forward pass.
    """

    def __init__(self, net: SearchPathMatcher, stride: int = 2, scales=(1.0,), device="cpu", batch_size: int = 2048) -> None:
        self.net = net.eval()
        self.stride = stride
        self.scales = tuple(scales)
        self.device = torch.device(device)
        self.batch_size = batch_size

    def _window_sides(self, query_shape, reference_shape) -> list[tuple[int, int]]:
        height, width = reference_shape
        if self.net.size_mode == "schedule":
            base_h, base_w = self.net.window_size * height, self.net.window_size * width
        else:
            base_h, base_w = query_shape
        return [(round(base_h * s), round(base_w * s)) for s in self.scales if round(base_h * s) <= height and round(base_w * s) <= width]

    @torch.no_grad()
    def __call__(self, query: np.ndarray, reference: np.ndarray) -> MatchResult:
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a if a.ndim == 3 else a[..., None])).permute(2, 0, 1)[None].float().to(self.device)  # noqa: E731
        q, r = to_tensor(query), to_tensor(reference)
        if q.max() > 1:
            q, r = q / 255, r / 255
        height, width = reference.shape[:2]
        query_feature = self.net.encode(q)
        boxes = []
        for h, w in self._window_sides(query.shape[:2], (height, width)):
            ys = torch.arange(0, height - h + 1, self.stride, dtype=torch.float32)
            xs = torch.arange(0, width - w + 1, self.stride, dtype=torch.float32)
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            boxes.append(torch.stack([x.flatten(), y.flatten(), x.flatten() + w, y.flatten() + h], dim=1))
        if not boxes:
            raise ValueError(f"no window of the configured scales fits a {height}x{width} reference")
        boxes = torch.cat(boxes).to(self.device)
        distances = []
        for chunk in boxes.split(self.batch_size):
            # every window indexes the one reference: no per-window copy of the image
            features = self.net.encode(r, chunk, batch_index=torch.zeros(len(chunk), dtype=torch.long))
            distances.append((features - query_feature).norm(dim=1))
        distances = torch.cat(distances)
        best = int(distances.argmin())
        return MatchResult(box=boxes[best].double().cpu().numpy(), score=-float(distances[best]), windows=len(boxes))
