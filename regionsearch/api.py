"""Use a trained matcher without Hydra: ``RegionSearcher.from_checkpoint(path).search(query, reference)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .model import SearchPathMatcher


class RegionSearcher:
    """Query + reference -> the box of the reference that matches the query.

    Args:
        net: a trained :class:`SearchPathMatcher`.
        device: where to run (``"cpu"``, ``"cuda"``...).
    """

    def __init__(self, net: SearchPathMatcher, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> RegionSearcher:
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
        return cls(net, device)

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
        windows = self.net(queries, references, sample=False).windows.cpu().numpy()
        if single:
            windows = windows[:, 0]
        return (windows[-1], windows) if return_path else windows[-1]
