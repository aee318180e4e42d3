"""Tuple training (Deep Image Retrieval / cirtorch) on the training groups of a grouped set.

Train batches ``{"images": float (B, 2 + nnum, 3, S, S), "labels": long (B, 2 + nnum)}`` with
labels ``-1`` (query), ``1`` (positive), ``0`` (negatives); the model calls
:meth:`~RetrievalTupleDataModule.mine` with its embedding function at the start of every
epoch. Validation/test: :class:`~retrieval.data.datamodule.RetrievalEvalDataModule` on groups
disjoint from the training groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .datamodule import GROUPED_DATASETS, RetrievalEvalDataModule, grouped_items
from .datasets import GroupedImages
from .images import ImageListDataset, SameSizeBatchSampler, load_image
from .mining import draw_query_pairs, mine_tuples, random_tuples

log = logging.getLogger(__name__)

__all__ = ["RetrievalTupleDataModule", "TupleDataset"]


class TupleDataset(Dataset):
    """Tuples of items (rows of ``tuples``: query, positive, negatives) as square images."""

    def __init__(self, items: GroupedImages, tuples: np.ndarray, image_size: int) -> None:
        self.items = items
        self.tuples = tuples
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = self.tuples[index]
        images = torch.stack([load_image(self.items.paths[i], self.items.boxes[i], self.image_size, square=True) for i in row])
        labels = torch.tensor([-1, 1] + [0] * (len(row) - 2), dtype=torch.long)
        return {"images": images, "labels": labels}


def _module_device(embed_fn: Callable) -> torch.device:
    owner = getattr(embed_fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        device = getattr(owner, "device", None)
        if isinstance(device, torch.device):
            return device
        parameter = next(owner.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


class RetrievalTupleDataModule(RetrievalEvalDataModule):
    """Tuple training on the training groups of a grouped set, evaluation on the others.

    COIL-100 objects / FlickrLogos-27 brands (logo box crops) / folder groups are split
    into disjoint train/val/test groups by ``split_fractions``. Each epoch
    :meth:`mine` draws ``n_train`` (qsize) (query, positive) pairs and a pool of
    ``poolsize`` training items, and picks ``nnum`` hard negatives per query (at most one
    per group). Before the first :meth:`mine`, negatives are random (one per group).

    Args (beyond :class:`RetrievalEvalDataModule`):
        train_image_size: side S of the square training images.
        nnum: negatives per tuple. poolsize: size of the negative pool.
        n_train: tuples per epoch (qsize); None = one per training item.
        batch_size: tuples per training batch. mine_batch_size: images per embedding batch.
        seed: seeds the per-epoch draws (epoch e uses ``[seed, e]``).
    """

    def __init__(
        self,
        dataset: str = "coil100",
        train_image_size: int = 224,
        nnum: int = 5,
        poolsize: int = 2000,
        split_fractions: Sequence[float] | None = (0.5, 0.2, 0.3),
        seed: int = 0,
        batch_size: int = 5,
        mine_batch_size: int = 32,
        **kwargs,
    ) -> None:
        if dataset not in GROUPED_DATASETS:
            raise ValueError(f"tuple training needs a grouped dataset {GROUPED_DATASETS}, got {dataset!r}")
        if split_fractions is None:
            raise ValueError("tuple training needs split_fractions (disjoint train and test groups)")
        if nnum < 1 or poolsize < 1:
            raise ValueError(f"nnum and poolsize must be >= 1, got {nnum} and {poolsize}")
        super().__init__(dataset=dataset, split_fractions=split_fractions, batch_size=batch_size, **kwargs)
        self.train_image_size = train_image_size
        self.nnum = nnum
        self.poolsize = poolsize
        self.mine_batch_size = mine_batch_size
        self.seed = seed
        self.epoch = 0
        self.train_items: GroupedImages | None = None
        self.train_set: TupleDataset | None = None
        self.last_mining: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_set is not None:
            return
        items = grouped_items(self.dataset, self.dataset_root(), self.min_box_size)
        self.train_items = items.select_groups(self.group_splits["train"])
        if len(np.unique(self.train_items.groups)) <= self.nnum:
            raise ValueError(
                f"{len(np.unique(self.train_items.groups))} training groups cannot give {self.nnum} negatives "
                "from other groups; lower nnum or raise the train split fraction"
            )
        rng = np.random.default_rng([self.seed, 0])
        tuples = random_tuples(self.train_items.groups, self.qsize, self.nnum, rng, self._sources())
        self.train_set = TupleDataset(self.train_items, tuples, self.train_image_size)

    def _sources(self) -> np.ndarray:
        """The photo of each training item: a positive comes from another photo when it can."""
        assert self.train_items is not None
        photo = {}
        return np.array([photo.setdefault(p, len(photo)) for p in self.train_items.paths], dtype=np.int64)

    @property
    def qsize(self) -> int:
        assert self.train_items is not None
        return self.sizes["train"] or len(self.train_items)

    @torch.no_grad()
    def embed_train_items(self, embed_fn: Callable[[torch.Tensor], torch.Tensor], indices: np.ndarray, device: torch.device) -> torch.Tensor:
        """Descriptors ``(len(indices), D)`` of training items, square images of side S."""
        assert self.train_items is not None
        dataset = ImageListDataset(
            [self.train_items.paths[i] for i in indices], [self.train_items.boxes[i] for i in indices], self.train_image_size, square=True
        )
        loader = DataLoader(dataset, batch_size=self.mine_batch_size, num_workers=self.num_workers)
        out = []
        for batch in tqdm(loader, desc="mining: embedding", leave=False, mininterval=2):
            out.append(embed_fn(batch["image"].to(device)).float().cpu())
        return torch.cat(out)

    def mine(self, embed_fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str | None = None) -> dict[str, float]:
        """Re-mine this epoch's tuples with ``embed_fn`` (images -> L2-normalised (B, D)).

        The module owning ``embed_fn`` (if any) is put in eval mode while embedding, as
        cirtorch does, and restored afterwards. Returns mining statistics.
        """
        self.setup()
        assert self.train_items is not None and self.train_set is not None
        device = torch.device(device) if device is not None else _module_device(embed_fn)
        owner = getattr(embed_fn, "__self__", None)
        was_training = isinstance(owner, torch.nn.Module) and owner.training
        if was_training:
            owner.eval()
        try:
            rng = np.random.default_rng([self.seed, self.epoch + 1])
            tuples, stats = mine_tuples(
                self.train_items.groups,
                lambda idx: self.embed_train_items(embed_fn, idx, device),
                self.qsize,
                self.poolsize,
                self.nnum,
                rng,
                self._sources(),
            )
        finally:
            if was_training:
                owner.train()
        self.train_set.tuples = tuples  # the loader reads the dataset at every epoch's iter()
        self.epoch += 1
        self.last_mining = stats
        return stats

    def train_items_dataloader(self, square: bool = True) -> DataLoader:
        """Every training item once, ``{"image", "index"}`` batches (``mine_batch_size``), e.g.
        to learn whitening; ``square=False`` keeps the aspect (max side ``image_size``, batch 1
        where sizes differ)."""
        self.setup()
        assert self.train_items is not None
        size = self.train_image_size if square else self.image_size
        dataset = ImageListDataset(self.train_items.paths, self.train_items.boxes, size, square=square)
        return DataLoader(dataset, batch_sampler=SameSizeBatchSampler(dataset, self.mine_batch_size), num_workers=self.num_workers)

    def whitening_pairs(self, n_pairs: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(query, positive) training-item indices of the same group, for learned whitening
        (cirtorch's ``qidxs``/``pidxs``); ``n_pairs`` None = one per training item."""
        self.setup()
        assert self.train_items is not None
        return draw_query_pairs(self.train_items.groups, n_pairs or len(self.train_items), np.random.default_rng(seed), self._sources())

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=False,  # workers must see the re-mined tuples every epoch
            drop_last=False,
        )
