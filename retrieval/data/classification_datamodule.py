"""Classification datamodules for regional-attention training.

Batches ``{"image": float (B, 3, S, S), "label": long (B,)}`` and ``num_classes``:
:class:`RetrievalClassificationDataModule` splits the images of a set;
:class:`RetrievalGroupClassificationDataModule` trains on the train groups and evaluates
retrieval on the disjoint val/test groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .datamodule import GROUPED_DATASETS, RetrievalEvalDataModule, grouped_items, resolve_root
from .datasets import GroupedImages
from .images import load_image

__all__ = ["RetrievalClassificationDataModule", "RetrievalGroupClassificationDataModule", "split_items"]


class _ClassificationDataset(Dataset):
    def __init__(self, items: GroupedImages, indices: np.ndarray, image_size: int, flip: bool, seed: int) -> None:
        self.items = items
        self.indices = indices
        self.image_size = image_size
        self.flip = flip
        self.generator = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[index])
        image = load_image(self.items.paths[i], self.items.boxes[i], self.image_size, square=True)
        if self.flip and self.generator.random() < 0.5:
            image = image.flip(-1)
        return {"image": image, "label": torch.tensor(int(self.items.groups[i]), dtype=torch.long)}


def split_items(items: GroupedImages, fractions: Sequence[float], seed: int, by_image: bool) -> dict[str, np.ndarray]:
    """Train/val/test item indices: stratified per group, or (``by_image``) whole images
    kept in one split, so crops of one photo never straddle splits."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers, got {fractions.tolist()}")
    cum = np.cumsum(fractions / fractions.sum())
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    names = list(out)
    if by_image:
        images = sorted({str(p) for p in items.paths})
        order = rng.permutation(len(images))
        cuts = np.round(cum * len(images)).astype(int)
        part = {images[j]: min(int(np.searchsorted(cuts, r, side="right")), 2) for r, j in enumerate(order)}
        for i, path in enumerate(items.paths):
            out[names[part[str(path)]]].append(i)
    else:
        for g in np.unique(items.groups):
            members = rng.permutation(np.flatnonzero(items.groups == g))
            cuts = np.round(cum * len(members)).astype(int)
            for name, chunk in zip(names, np.split(members, cuts[:2])):
                out[name] += chunk.tolist()
    return {name: np.sort(np.array(v, dtype=np.int64)) for name, v in out.items()}


class RetrievalClassificationDataModule(pl.LightningDataModule):
    """Images (or logo crops) labelled by their group, for regional-attention training.

    COIL-100: label = object, views split per object by ``split_fractions``.
    FlickrLogos-27: label = brand; items are logo box crops (``crops=True``) or whole
    images labelled by their largest logo; whole images stay in one split.
    Folder: label = group folder. Batches ``{"image": (B, 3, S, S), "label": (B,)}``.

    ``n_train`` / ``n_val`` / ``n_test`` cap each split (a fixed random subset; None = all).
    """

    def __init__(
        self,
        dataset: str = "coil100",
        data_root: str | None = None,
        root: str | None = None,
        image_size: int = 224,
        crops: bool = True,
        min_box_size: float = 10.0,
        split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
        split_seed: int = 0,
        flip: bool = True,
        n_train: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in GROUPED_DATASETS:
            raise ValueError(f"classification needs a grouped dataset {GROUPED_DATASETS}, got {dataset!r}")
        self.dataset = dataset
        self.data_root = data_root
        self.root = root
        self.image_size = image_size
        self.crops = crops
        self.min_box_size = min_box_size
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.flip = flip
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.items: GroupedImages | None = None
        self.splits: dict[str, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        self.setup()
        assert self.items is not None
        return len(self.items.group_names)

    @property
    def class_names(self) -> list[str]:
        self.setup()
        assert self.items is not None
        return list(self.items.group_names)

    def setup(self, stage: str | None = None) -> None:
        if self.items is not None:
            return
        root = resolve_root(self.dataset, self.data_root, self.root)
        items = grouped_items(self.dataset, root, self.min_box_size)
        if self.dataset == "flickrlogos27" and not self.crops:
            items = _largest_logo_per_image(items)
        splits = split_items(items, self.split_fractions, self.split_seed, by_image=self.dataset == "flickrlogos27")
        rng = np.random.default_rng(self.split_seed)
        for name, indices in splits.items():
            cap = self.sizes[name]
            if cap is not None and cap < len(indices):
                indices = np.sort(rng.choice(indices, cap, replace=False))
            splits[name] = indices
        self.items, self.splits = items, splits

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        assert self.items is not None
        dataset = _ClassificationDataset(self.items, self.splits[split], self.image_size, flip=train and self.flip, seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def _largest_logo_per_image(items: GroupedImages) -> GroupedImages:
    best: dict[Path, int] = {}
    for i, (path, box) in enumerate(zip(items.paths, items.boxes)):
        area = (box[2] - box[0]) * (box[3] - box[1])
        j = best.get(path)
        if j is None or area > (items.boxes[j][2] - items.boxes[j][0]) * (items.boxes[j][3] - items.boxes[j][1]):
            best[path] = i
    order = sorted(best.values())
    return GroupedImages(
        [items.paths[i] for i in order], items.groups[order], [None] * len(order), items.group_names
    )


class RetrievalGroupClassificationDataModule(RetrievalEvalDataModule):
    """Classification training on the *train groups* of a grouped set, retrieval evaluation
    on the disjoint val/test groups: regional-attention training judged by retrieval mAP.

    Train batches ``{"image": float (B, 3, S, S), "label": long (B,)}`` with labels
    ``0..num_classes-1`` = the train groups in id order; val/test are the evaluation
    datamodule's ``[queries, database]`` loaders and :meth:`evaluate` (``val/map``).
    FlickrLogos-27: ``crops=True`` trains on the train brands' logo box crops, ``False`` on
    whole photos labelled by their largest logo, keeping only photos that show no brand
    outside the train groups (the attention then has background to learn to ignore).

    Args (beyond :class:`RetrievalEvalDataModule`):
        train_image_size: side S of the square training images. crops: see above.
        flip: random horizontal flips of training images.
        n_train: training images (a fixed random subset; None = all). batch_size: per batch.
    """

    def __init__(
        self,
        dataset: str = "coil100",
        train_image_size: int = 224,
        crops: bool = True,
        flip: bool = True,
        split_fractions: Sequence[float] | None = (0.5, 0.2, 0.3),
        seed: int = 0,
        batch_size: int = 32,
        **kwargs,
    ) -> None:
        if dataset not in GROUPED_DATASETS:
            raise ValueError(f"group classification needs a grouped dataset {GROUPED_DATASETS}, got {dataset!r}")
        if split_fractions is None:
            raise ValueError("group classification needs split_fractions (disjoint train and test groups)")
        super().__init__(dataset=dataset, split_fractions=split_fractions, batch_size=batch_size, **kwargs)
        self.train_image_size = train_image_size
        self.crops = crops
        self.flip = flip
        self.seed = seed
        self.train_items: GroupedImages | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_items is not None:
            return
        items = grouped_items(self.dataset, self.dataset_root(), self.min_box_size)
        train_groups = self.group_splits["train"]
        if self.dataset == "flickrlogos27" and not self.crops:
            outside = {p for p, g in zip(items.paths, items.groups) if g not in set(train_groups.tolist())}
            items = _largest_logo_per_image(items)
            keep = np.array([p not in outside for p in items.paths], dtype=bool)
            items = GroupedImages([p for p, k in zip(items.paths, keep) if k], items.groups[keep], [None] * int(keep.sum()), items.group_names)
        items = items.select_groups(train_groups)
        if not len(items):
            raise ValueError(f"no training images in the train groups of {self.dataset}")
        label_of = {int(g): i for i, g in enumerate(train_groups)}
        items = GroupedImages(
            items.paths, np.array([label_of[int(g)] for g in items.groups], dtype=np.int64), items.boxes,
            [items.group_names[int(g)] for g in train_groups],
        )
        cap = self.sizes["train"]
        self._train_indices = np.arange(len(items))
        if cap is not None and cap < len(items):
            self._train_indices = np.sort(np.random.default_rng(self.seed).choice(len(items), cap, replace=False))
        self.train_items = items

    @property
    def num_classes(self) -> int:
        """Number of train groups (the classifier's labels)."""
        self.setup()
        assert self.train_items is not None
        return len(self.train_items.group_names)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_items is not None
        dataset = _ClassificationDataset(self.train_items, self._train_indices, self.train_image_size, flip=self.flip, seed=self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)
