"""Trained patch networks on plain arrays, without Hydra or Lightning.

::

    from descriptors.api import PatchDescriptor, PatchMatcher

    hardnet = PatchDescriptor.from_checkpoint("logs/train/.../checkpoints/epoch_009.ckpt")
    vectors = hardnet.describe(patches)          # (N, H, W) uint8 or float in [0, 1] -> (N, D)
    d = hardnet.distance(vectors[:10], vectors[10:20])   # row-paired L2 (Hamming for binary nets)

    matchnet = PatchMatcher.from_checkpoint("logs/train/.../checkpoints/epoch_024.ckpt")
    scores = matchnet.score(patches1, patches2)  # (N,) similarity, higher = more alike

A checkpoint written by :class:`descriptors.module.PatchMatchingModule` names the network's
class and constructor arguments (``checkpoint["network"]``); older checkpoints are rebuilt
from the run's ``config_tree.yaml`` beside the ``checkpoints/`` folder. Patches of any size
are resized to the network's ``patch_size`` exactly as in training
(``F.interpolate(bilinear, align_corners=False)``).

The HPatches protocols (verification, matching, retrieval) are :func:`evaluate_hpatches`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from core.checkpoints import load_checkpoint, load_weights
from core.errors import CheckpointError
from core.validation import (
    CHANNEL_AXIS_SIZES,
    require_channels,
    require_finite,
    require_ndim,
    require_nonempty_image,
    require_pixel_dtype,
    require_same_count,
)

from .evaluate import evaluate_hpatches
from .inference import inference_copy, use_channels_last
from .module import resize_patches
from .nets import hamming_from_signs, network_from_spec

__all__ = ["load_network", "as_patch_tensor", "evaluate_hpatches", "PatchDescriptor", "PatchMatcher"]

FAMILY = "patch-descriptor"
TRAIN_HINT = "Train one with `python -m benchmarks.train experiment=descriptors/hardnet`"


def _spec_from_config_tree(checkpoint_path: Path) -> dict | None:
    """The net's ``_target_`` and arguments from ``<run>/config_tree.yaml`` (``model.net``)."""
    for folder in (checkpoint_path.parent, checkpoint_path.parent.parent):
        tree = folder / "config_tree.yaml"
        if tree.is_file():
            net = (yaml.safe_load(tree.read_text()) or {}).get("model", {}).get("net")
            if isinstance(net, dict) and "_target_" in net:
                kwargs = {k: v for k, v in net.items() if not k.startswith("_")}
                return {"class": net["_target_"], "kwargs": kwargs}
    return None


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a Lightning checkpoint, in eval mode on ``device``.

    Raises:
        CheckpointError: (a ``ValueError``; ``CheckpointNotFoundError`` is also a
            ``FileNotFoundError``) one line naming the path: missing, empty, truncated or not a
            PyTorch file, another family's checkpoint, no record of its network, weights that do
            not fit that network, or NaN / infinite weights.
    """
    checkpoint = load_checkpoint(path, family=FAMILY, require=("state_dict",), hint=TRAIN_HINT)
    spec = checkpoint.get("network")
    if spec is None and "net_config" in checkpoint:
        # region-search and retrieval checkpoints describe their net as net_config
        raise CheckpointError(f"not a {FAMILY} checkpoint (it holds a net_config, as region-search and retrieval checkpoints do)", path, TRAIN_HINT)
    spec = spec or _spec_from_config_tree(Path(path))
    if spec is None:
        raise CheckpointError(
            "checkpoint does not say which network it holds (no 'network' entry and no config_tree.yaml "
            "beside it): retrain with this version, or build the net and load_state_dict yourself", path
        )
    try:
        net = network_from_spec(spec)
    except (AttributeError, ImportError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"not a {FAMILY} checkpoint (its network entry does not build a network: {error})", path, TRAIN_HINT) from None
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    load_weights(net, state, path, family=FAMILY, hint=TRAIN_HINT)
    return net.to(device).eval()


def as_patch_tensor(patches, patch_size: int | None = None, name: str = "patches") -> torch.Tensor:
    """``(N, H, W)`` / ``(N, 1, H, W)`` uint8 (0..255) or float ([0, 1]), numpy or torch ->
    float32 ``(N, 1, S, S)`` in [0, 1], resized to ``patch_size`` when given.

    Raises:
        ValueError: naming ``name``: an integer type other than uint8, another layout (colour
            patches, one (H, W) patch), patches without pixels, or NaN / infinite values.
    """
    layouts = "grey (N, H, W) or (N, 1, H, W) patches"
    require_pixel_dtype(patches, name)
    # numpy input is copied: memory-mapped or read-only arrays cannot back a tensor
    x = patches if isinstance(patches, torch.Tensor) else torch.from_numpy(np.array(patches))
    require_ndim(x, name, (3, 4), layouts)
    if x.dim() == 4:
        # (N, C, H, W), or channels last (N, H, W, C) when the last axis is a channel count
        channels = x.shape[-1] if x.shape[1] not in CHANNEL_AXIS_SIZES and x.shape[-1] in CHANNEL_AXIS_SIZES else x.shape[1]
        require_channels(name, channels, 1, x.shape, layouts)
        if x.shape[1] != 1:  # (N, H, W, 1)
            x = x.permute(0, 3, 1, 2)
    elif x.shape[-1] in CHANNEL_AXIS_SIZES:
        # (H, W, 3) would otherwise be read as H patches 3 pixels wide
        raise ValueError(f"{name} looks like one (H, W, {x.shape[-1]}) image, shape {tuple(x.shape)}: pass {layouts}")
    else:
        x = x.unsqueeze(1)
    if len(x):
        require_nonempty_image(name, x.shape[-2], x.shape[-1])
    require_finite(x, name)
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    return resize_patches(x, patch_size) if patch_size else x


class _Applied:
    """``net`` (the trained network, left as it is) and ``runner``, what computes: with
    ``optimize`` an inference copy (BatchNorm folded into the convolutions, channels-last on
    the CPU unless ``channels_last`` says otherwise; see :mod:`descriptors.inference`), the
    same outputs up to float rounding; without, ``net`` itself."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", batch_size: int = 1024, optimize: bool = True, channels_last: bool | None = None) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.patch_size = int(net.patch_size)
        self.channels_last = bool(optimize and (use_channels_last(self.device) if channels_last is None else channels_last))
        self.runner = inference_copy(self.net, self.device, self.channels_last) if optimize else self.net

    def _batches(self, patches, name: str = "patches"):
        x = as_patch_tensor(patches, name=name)
        for start in range(0, len(x), self.batch_size):
            batch = resize_patches(x[start : start + self.batch_size].to(self.device), self.patch_size)
            yield batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


class PatchDescriptor(_Applied):
    """A patch -> descriptor network applied to arrays (eval mode, no gradients, batched).

    Attributes: ``descriptor_dim``, ``patch_size``, ``binary`` (sign codes compared by Hamming).
    """

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", batch_size: int = 1024, optimize: bool = True, channels_last: bool | None = None) -> None:
        if getattr(net, "kind", None) != "descriptor":
            raise ValueError(f"{type(net).__name__} is not a descriptor network: use PatchMatcher")
        super().__init__(net, device, batch_size, optimize, channels_last)
        self.descriptor_dim = int(net.descriptor_dim)
        self.binary = getattr(net, "distance", "l2") == "hamming"

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024, optimize: bool = True, channels_last: bool | None = None) -> PatchDescriptor:
        return cls(load_network(path, device), device, batch_size, optimize, channels_last)

    @torch.inference_mode()
    def describe(self, patches) -> torch.Tensor:
        """Descriptors of the patches. Shape: (N, H, W) or (N, 1, H, W) -> (N, descriptor_dim)
        float32 on the CPU ({-1, +1} for binary nets)."""
        chunks = [self.runner(x).float().cpu() for x in self._batches(patches)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.descriptor_dim)

    __call__ = describe

    def distance(self, a, b) -> torch.Tensor:
        """Row-paired distances of descriptors: L2, or Hamming for binary nets. (N, D) x 2 -> (N,)."""
        a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
        require_finite(a, "a")
        require_finite(b, "b")
        return hamming_from_signs(a, b) if self.binary else (a - b).norm(dim=1)

    def cdist(self, a, b) -> torch.Tensor:
        """All distances between two descriptor sets. (N, D), (M, D) -> (N, M)."""
        a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
        require_finite(a, "a")
        require_finite(b, "b")
        return (a.shape[1] - a @ b.T) / 2 if self.binary else torch.cdist(a, b)


class PatchMatcher(_Applied):
    """A pair -> score network (MatchNet, DeepCompare, SNet) applied to arrays.

    ``score(patches1, patches2)`` is the similarity of each pair (higher = more alike; FPR95
    uses ``-score``). Networks with a per-patch tower (MatchNet, siamese variants, SNet) also
    give ``features`` + ``compare``, the two-step use: describe every patch once, then score
    any pairs of them (:meth:`score_index_pairs`).
    """

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", batch_size: int = 1024, optimize: bool = True, channels_last: bool | None = None) -> None:
        if getattr(net, "kind", None) != "metric":
            raise ValueError(f"{type(net).__name__} is not a metric network: use PatchDescriptor")
        super().__init__(net, device, batch_size, optimize, channels_last)
        self.two_step = hasattr(net, "describe") and hasattr(net, "compare")
        # pseudo-siamese nets describe the second patch of a pair with their second tower
        self.two_towers = getattr(net, "shared", True) is False

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 1024, optimize: bool = True, channels_last: bool | None = None) -> PatchMatcher:
        return cls(load_network(path, device), device, batch_size, optimize, channels_last)

    @torch.inference_mode()
    def score(self, patches1, patches2) -> torch.Tensor:
        """Similarity of row-paired patches. Shape: (N, H, W) x 2 -> (N,) float32 on the CPU."""
        require_same_count("patches1", len(patches1), "patches2", len(patches2))
        out = [self.runner.scores(self.runner(a, b).float()).cpu() for a, b in zip(self._batches(patches1, "patches1"), self._batches(patches2, "patches2"))]
        return torch.cat(out) if out else torch.zeros(0)

    __call__ = score

    @torch.inference_mode()
    def features(self, patches, branch: int = 1) -> torch.Tensor:
        """Tower features of each patch (two-step networks only). (N, H, W) -> (N, F)."""
        if not self.two_step:
            raise ValueError(f"{type(self.net).__name__} compares stacked pairs: it has no per-patch features")
        kwargs = {"branch": branch} if self.two_towers else {}
        return torch.cat([self.runner.describe(x, **kwargs).float() for x in self._batches(patches)])

    @torch.inference_mode()
    def compare(self, features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
        """Similarity of row-paired tower features. (N, F) x 2 -> (N,)."""
        out = []
        for start in range(0, len(features1), self.batch_size):
            f1 = features1[start : start + self.batch_size].to(self.device)
            f2 = features2[start : start + self.batch_size].to(self.device)
            out.append(self.runner.scores(self.runner.compare(f1, f2).float()).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def score_index_pairs(self, patches, pairs) -> torch.Tensor:
        """Similarity of ``pairs`` ``(M, 2)`` of indices into ``patches``: every patch described
        once when the network allows it, else each pair through the network. -> (M,)."""
        pairs = np.asarray(pairs, dtype=np.int64)
        x = as_patch_tensor(patches)
        if self.two_step:
            first = self.features(x, 1)
            second = self.features(x, 2) if self.two_towers else first
            return self.compare(first[pairs[:, 0]], second[pairs[:, 1]])
        return self.score(x[pairs[:, 0]], x[pairs[:, 1]])
