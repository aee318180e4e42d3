"""LightningDataModules for region search: MNIST canvases and logo scenes.

Both turn generated (query, reference, box) arrays into batches of float tensors in
``[0, 1]``: ``{"query": (B,C,h,w), "reference": (B,C,H,W), "box": (B,4), "label": (B,)}``;
Cluttered-and-Mixed MNIST batches also carry ``"distractors": (B,K,4)``, the boxes of the K
distractor digits (hard negatives for the encoder, see ``RegionSearchModule``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import DatasetNotFoundError

from .canvases import cached_pairs, get_spec
from .logos import cached_logo_pairs
from .mnist import load_mnist
from .real_pairs import cached_real_pairs

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("DEEPMATCH_CACHE", Path.home() / ".cache" / "deepmatch"))


class PairArrayDataset(Dataset):
    """(query, reference, box, label[, distractors]) from uint8 arrays ``(N,h,w)`` or ``(N,h,w,3)``.

    ``distractors`` (the ``(K, 4)`` boxes of the distractor digits) is only returned when
    the pairs have at least one (Cluttered-and-Mixed MNIST).
    """

    def __init__(self, pairs: dict[str, np.ndarray]) -> None:
        self.queries = _to_nchw(pairs["queries"])
        self.references = _to_nchw(pairs["references"])
        self.boxes = torch.as_tensor(pairs["boxes"], dtype=torch.float32)
        self.labels = torch.as_tensor(pairs["query_labels"], dtype=torch.long)
        # where each logo pair came from (query box in its image, image paths): the baselines that
        # keep the query's true aspect need it; absent for MNIST canvases
        self.sources = {k: np.asarray(pairs[k]) for k in ("query_boxes", "query_images", "reference_images") if k in pairs}
        distractors = pairs.get("distractor_boxes")
        has_distractors = distractors is not None and np.asarray(distractors).ndim == 3 and np.asarray(distractors).shape[1] > 0
        self.distractor_boxes = torch.as_tensor(distractors, dtype=torch.float32) if has_distractors else None
        if not (len(self.queries) == len(self.references) == len(self.boxes) == len(self.labels)):
            raise ValueError("pair arrays have different lengths")
        if self.distractor_boxes is not None and len(self.distractor_boxes) != len(self.boxes):
            raise ValueError("pair arrays have different lengths")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "query": self.queries[index].float().div_(255),
            "reference": self.references[index].float().div_(255),
            "box": self.boxes[index],
            "label": self.labels[index],
        }
        if self.distractor_boxes is not None:
            item["distractors"] = self.distractor_boxes[index]
        return item


def _to_nchw(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.unsqueeze(1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2).contiguous()


class _PairDataModule(pl.LightningDataModule):
    """Shared loaders; subclasses fill ``self.splits`` with one :class:`PairArrayDataset` per split."""

    def __init__(self, batch_size: int, num_workers: int, eval_batch_size: int | None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.splits: dict[str, PairArrayDataset] = {}

    def _per_device(self, batch_size: int) -> int:
        # Under DDP every rank gets its share of the configured (global) batch.
        world = self.trainer.world_size if self.trainer is not None else 1
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the number of devices {world}")
        return batch_size // world

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self._per_device(batch_size),
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)


class MNISTRegionDataModule(_PairDataModule):
    """Translated / Cluttered / Cluttered-and-Mixed MNIST canvases.

    Args:
        canvas: a preset name of :data:`regionsearch.data.canvases.PRESETS` or a mapping of
            :class:`~regionsearch.data.canvases.CanvasSpec` fields (``preset`` + overrides).
        data_root: folder with the official MNIST files (or a ``mnist/`` subfolder).
        digits: ``official`` (train canvases from training digits; val/test from the two
            halves of the test digits), ``embedded`` (the bundled test set split
            8000/1000/1000, needs no data) or ``auto`` (official when available).
        n_train, n_val, n_test: number of pairs per split.
        cache_dir: where generated canvases are cached.
    """

    def __init__(
        self,
        canvas="translated",
        data_root: str | None = None,
        digits: str = "auto",
        n_train: int = 20000,
        n_val: int = 1000,
        n_test: int = 1000,
        batch_size: int = 128,
        eval_batch_size: int | None = 500,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        if digits not in ("auto", "official", "embedded"):
            raise ValueError(f"digits must be auto, official or embedded, got {digits!r}")
        self.spec = get_spec(canvas if isinstance(canvas, str) else dict(canvas))
        self.data_root = data_root
        self.digits = digits
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        self.seed = seed

    @property
    def in_channels(self) -> int:
        return 1

    def digit_pools(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.digits in ("auto", "official"):
            try:
                if self.data_root is None:
                    raise DatasetNotFoundError("no MNIST data root configured", "<unset>", "set DEEPMATCH_DATA or data.data_root")
                train_images, train_labels = load_mnist("train", self.data_root)
                test_images, test_labels = load_mnist("test", self.data_root)
                half = len(test_images) // 2
                return {
                    "train": (train_images, train_labels),
                    "val": (test_images[:half], test_labels[:half]),
                    "test": (test_images[half:], test_labels[half:]),
                }
            except DatasetNotFoundError:
                if self.digits == "official":
                    raise
                log.warning("MNIST not found under %s: using the embedded test set split 8000/1000/1000", self.data_root)
        images, labels = load_mnist("test", None)
        return {
            "train": (images[:8000], labels[:8000]),
            "val": (images[8000:9000], labels[8000:9000]),
            "test": (images[9000:], labels[9000:]),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pools = self.digit_pools()
        for index, (split, n) in enumerate(self.sizes.items()):
            images, labels = pools[split]
            pairs = cached_pairs(self.cache_dir, f"mnist-{self.spec.kind}-{split}", images, labels, n, self.spec, self.seed * 10 + index)
            self.splits[split] = PairArrayDataset(pairs)


class LogoRegionDataModule(_PairDataModule):
    """Logo queries in real scenes (FlickrLogos-27 here; FlickrLogos-32 where a user has it).

    FlickrLogos-32 uses its official ``trainset``/``valset``/``testset`` lists;
    FlickrLogos-27 has no official split, so its images are split by
    ``split_fractions`` with no image shared between splits.
    """

    def __init__(
        self,
        dataset: str = "flickrlogos27",
        data_root: str | None = None,
        query_size: int = 64,
        reference_size: int = 160,
        min_box_size: float = 8.0,
        split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        n_train: int = 20000,
        n_val: int = 1000,
        n_test: int = 1000,
        batch_size: int = 64,
        eval_batch_size: int | None = 250,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        if dataset not in ("flickrlogos27", "flickrlogos32"):
            raise ValueError(f"dataset must be flickrlogos27 or flickrlogos32, got {dataset!r}")
        self.dataset = dataset
        self.data_root = data_root
        self.query_size = query_size
        self.reference_size = reference_size
        self.min_box_size = min_box_size
        self.split_fractions = tuple(split_fractions)
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        self.seed = seed

    @property
    def in_channels(self) -> int:
        return 3

    def dataset_root(self) -> Path:
        if self.data_root is None:
            raise DatasetNotFoundError(f"no data root configured for {self.dataset}", "<unset>", "set DEEPMATCH_DATA or data.data_root")
        root = Path(self.data_root)
        return root / self.dataset if (root / self.dataset).is_dir() else root

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        root = self.dataset_root()
        for index, (split, n) in enumerate(self.sizes.items()):
            kwargs = {
                "dataset": self.dataset,
                "root": str(root),
                "n_pairs": n,
                "seed": self.seed * 10 + index,
                "query_size": self.query_size,
                "reference_size": self.reference_size,
                "min_box_size": self.min_box_size,
                "split": split,
            }
            if self.dataset == "flickrlogos32":
                kwargs["reader_kwargs"] = {"split": split}  # the official trainset/valset/testset lists
            else:
                kwargs["split_fraction"] = self.split_fractions
            pairs = cached_logo_pairs(self.cache_dir, f"{self.dataset}-{split}", kwargs)
            self.splits[split] = PairArrayDataset(pairs)


class RealPairDataset(PairArrayDataset):
    """:class:`PairArrayDataset` of padded real-photo pairs: items also carry the valid
    ``query_size`` and ``reference_size`` (height, width) of the padded images."""

    def __init__(self, pairs: dict[str, np.ndarray]) -> None:
        super().__init__(pairs)
        self.query_sizes = torch.as_tensor(pairs["query_sizes"], dtype=torch.float32)
        self.reference_sizes = torch.as_tensor(pairs["reference_sizes"], dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        item["query_size"], item["reference_size"] = self.query_sizes[index], self.reference_sizes[index]
        return item


class RealPairDataModule(_PairDataModule):
    """Query/reference pairs cut from real photos (:mod:`regionsearch.data.real_pairs`):
    Oxford / HPatches sequences, COIL-100 views, FlickrLogos-27 and scikit-image photos.
    ``val`` is the builder's own validation split (other scenes, objects and photos); ``test``
    reuses it (``n_test`` is accepted for the shared overrides and ignored): the real test set
    (BBS105) is scored by the benchmark suite, never trained on."""

    def __init__(
        self,
        data_root: str | None = None,
        reference_size: int = 192,
        query_size: int = 96,
        sources: tuple[str, ...] = ("sequences", "coil", "logos", "photos"),
        n_train: int = 2000,
        n_val: int = 300,
        n_test: int | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = 50,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
        target_fraction: tuple[float, float] | None = None,
        box_fraction: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, eval_batch_size)
        self.data_root = data_root
        self.builder = {"reference_size": reference_size, "query_size": query_size, "sources": tuple(sources), "seed": seed}
        # the builder's defaults unless set (and then part of the cache key)
        for name, value in (("target_fraction", target_fraction), ("box_fraction", box_fraction)):
            if value is not None:
                self.builder[name] = tuple(float(v) for v in value)
        self.sizes = {"train": n_train, "val": n_val}
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE

    @property
    def in_channels(self) -> int:
        return 3

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.data_root is None:
            raise DatasetNotFoundError("no data root configured for the real pairs", "<unset>", "set DEEPMATCH_DATA or data.data_root")
        for split, n in self.sizes.items():
            self.splits[split] = RealPairDataset(cached_real_pairs(self.cache_dir, self.data_root, split=split, n_pairs=n, **self.builder))
        self.splits["test"] = self.splits["val"]
