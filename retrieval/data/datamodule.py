"""LightningDataModules for image retrieval: evaluation, tuple training, classification.

Evaluation (:class:`RetrievalEvalDataModule`)
    ``val_dataloader()`` / ``test_dataloader()`` return two loaders ``[queries, database]``
    with batches ``{"image": float (B, 3, H, W) ImageNet-normalised, "index": long (B,)}``;
    the longer side is at most ``image_size``; queries are cropped to their boxes.
    Consecutive images of equal size are batched (up to ``eval_batch_size``), others come
    one at a time. :meth:`~RetrievalEvalDataModule.evaluate` ranks the database for every
    query and returns the protocol's metrics (``map``, ``map_medium``, ``mp@5``, ``ns`` ...).
Tuple training (:mod:`retrieval.data.tuple_datamodule`) and classification
(:mod:`retrieval.data.classification_datamodule`) extend it; validation/test stay as here, on
groups disjoint from the training groups.

Size knobs (every data config has them): ``n_train`` = tuples (or training images) per
epoch, ``n_val`` / ``n_test`` = number of queries (or images) evaluated; null = all.
"""


from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from core.errors import DatasetNotFoundError

from ..evaluate import evaluate_protocol
from ..search import rank
from .datasets import GroupedImages, RetrievalSet, read_distractors, split_groups
from .images import ImageListDataset, SameSizeBatchSampler
from .landmarks import read_oxford_paris, read_revisited
from .objects import (
    coil100_items,
    flickrlogos27_items,
    folder_items,
    read_coil100,
    read_flickrlogos27_retrieval,
    read_folder,
    read_holidays,
    read_ukbench,
)

log = logging.getLogger(__name__)

__all__ = ["EVAL_DATASETS", "GROUPED_DATASETS", "RetrievalEvalDataModule", "grouped_items", "resolve_root", "subset_set"]

EVAL_DATASETS = ("oxford5k", "paris6k", "roxford5k", "rparis6k", "holidays", "ukbench", "folder", "coil100", "flickrlogos27")
#: Datasets made of groups, which can be split into disjoint train/val/test groups.
GROUPED_DATASETS = ("folder", "coil100", "flickrlogos27")


def resolve_root(dataset: str, data_root: str | None, root: str | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    if data_root is None:
        raise DatasetNotFoundError(
            f"no data root configured for {dataset}", "<unset>", "set DEEPMATCH_DATA (paths.data_dir) or data.root"
        )
    return Path(data_root).expanduser() / dataset


def grouped_items(dataset: str, root: Path, min_box_size: float) -> GroupedImages:
    if dataset == "coil100":
        return coil100_items(root)
    if dataset == "flickrlogos27":
        return flickrlogos27_items(root, min_size=min_box_size)
    if dataset == "folder":
        return folder_items(root)
    raise ValueError(f"{dataset} has no groups to train on; use one of {GROUPED_DATASETS}")


class RetrievalEvalDataModule(pl.LightningDataModule):
    """Queries + database of one retrieval test set, and its evaluation.

    Args:
        dataset: one of :data:`EVAL_DATASETS`.
        data_root: the data root; the set is read from ``<data_root>/<dataset>`` unless
            ``root`` names its folder (e.g. ``root=/data/my_groups`` for ``folder``).
        image_size: the longer side of test images (never enlarged).
        distractors: folders (Flickr100k, R1M) appended to every split's database.
        split_fractions: for grouped sets (:data:`GROUPED_DATASETS`), the train/val/test
            fractions of groups (val evaluates the val groups, test the test groups);
            None = val and test both use every group. Benchmarks (Oxford, ...) have one
            set, used for val and test.
        query_angle: COIL-100 query view. queries_per_group: folder queries per group.
        queries_per_brand: FlickrLogos-27 queries per brand. min_box_size: smallest logo box.
        exclude: Oxford/Paris image names (no extension) left out of the database.
        drop_unreadable: Oxford/Paris: leave broken image files out (Paris has 20).
        holidays_image_dir: folder under the Holidays root (e.g. a rotated copy).
        n_val, n_test: number of queries evaluated (the first ones; None = all).
        n_train, batch_size: accepted for the shared config interface (tuple subclass).
        eval_batch_size: images per evaluation batch (equal sizes only).
        kappas: the k of mP@k. search_backend / topk: how :func:`retrieval.search.rank`
            ranks (topk None = the full ranking).
    """

    def __init__(
        self,
        dataset: str = "coil100",
        data_root: str | None = None,
        root: str | None = None,
        image_size: int | None = 1024,
        distractors: Sequence[str] = (),
        split_fractions: Sequence[float] | None = None,
        split_seed: int = 0,
        query_angle: int = 0,
        queries_per_group: int = 1,
        queries_per_brand: int = 1,
        min_box_size: float = 10.0,
        exclude: Sequence[str] = (),
        drop_unreadable: bool = False,
        holidays_image_dir: str | None = None,
        n_train: int | None = None,
        n_val: int | None = None,
        n_test: int | None = None,
        batch_size: int = 1,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        kappas: Sequence[int] = (1, 5, 10),
        search_backend: str = "torch",
        topk: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in EVAL_DATASETS:
            raise ValueError(f"dataset must be one of {EVAL_DATASETS}, got {dataset!r}")
        if split_fractions is not None and dataset not in GROUPED_DATASETS:
            raise ValueError(f"split_fractions only applies to {GROUPED_DATASETS}, not {dataset}")
        for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or null, got {value}")
        self.dataset = dataset
        self.data_root = data_root
        self.root = root
        self.image_size = image_size
        self.distractor_dirs = list(distractors or ())
        self.split_fractions = None if split_fractions is None else tuple(float(f) for f in split_fractions)
        self.split_seed = split_seed
        self.query_angle = query_angle
        self.queries_per_group = queries_per_group
        self.queries_per_brand = queries_per_brand
        self.min_box_size = min_box_size
        self.exclude = list(exclude or ())
        self.drop_unreadable = drop_unreadable
        self.holidays_image_dir = holidays_image_dir
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.kappas = tuple(int(k) for k in kappas)
        self.search_backend = search_backend
        self.topk = topk
        self.sets: dict[str, RetrievalSet] = {}
        self.group_splits: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ reading

    def dataset_root(self) -> Path:
        return resolve_root(self.dataset, self.data_root, self.root)

    def _distractor_paths(self) -> list[Path]:
        paths: list[Path] = []
        for folder in self.distractor_dirs:
            folder = Path(folder).expanduser()
            if not folder.is_absolute() and self.data_root is not None:
                folder = Path(self.data_root) / folder
            paths += read_distractors(folder)
        return paths

    def _read_set(self, groups: np.ndarray | None) -> RetrievalSet:
        root = self.dataset_root()
        if self.dataset in ("oxford5k", "paris6k"):
            return read_oxford_paris(root, self.dataset, self.exclude, self.drop_unreadable)
        if self.dataset in ("roxford5k", "rparis6k"):
            return read_revisited(root, self.dataset)
        if self.dataset == "holidays":
            return read_holidays(root, self.holidays_image_dir)
        if self.dataset == "ukbench":
            return read_ukbench(root)
        if self.dataset == "coil100":
            return read_coil100(root, self.query_angle, groups)
        if self.dataset == "flickrlogos27":
            return read_flickrlogos27_retrieval(root, groups, self.queries_per_brand, self.min_box_size)
        return read_folder(root, self.queries_per_group, groups)

    def _n_groups(self) -> int:
        return len(grouped_items(self.dataset, self.dataset_root(), self.min_box_size).group_names)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        distractors = self._distractor_paths()
        if self.split_fractions is None:
            full = self._read_set(None)
            splits = {"val": full, "test": full}
        else:
            self.group_splits = split_groups(self._n_groups(), self.split_fractions, self.split_seed)
            splits = {}
            for split in ("val", "test"):
                if not len(self.group_splits[split]):
                    raise ValueError(f"split_fractions {self.split_fractions} leave no {split} group")
                splits[split] = self._read_set(self.group_splits[split])
        for split, rset in splits.items():
            if distractors:
                rset = rset.with_distractors(distractors)
            self.sets[split] = rset.first_queries(self.sizes[split])
            log.info("%s %s: %d queries, %d database images (%d distractors)", self.dataset, split,
                     len(self.sets[split].queries), len(self.sets[split].database), self.sets[split].distractors)

    # ------------------------------------------------------------------ loaders

    def _eval_loader(self, dataset: ImageListDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=SameSizeBatchSampler(dataset, self.eval_batch_size),
            num_workers=self.num_workers,
        )

    def eval_datasets(self, split: str) -> tuple[ImageListDataset, ImageListDataset]:
        """``(queries, database)`` image datasets of ``split`` (``val`` or ``test``)."""
        self.setup()
        rset = self.sets[split]
        queries = ImageListDataset(rset.queries, rset.query_boxes, self.image_size)
        database = ImageListDataset(rset.database, None, self.image_size)
        return queries, database

    def eval_dataloaders(self, split: str) -> list[DataLoader]:
        return [self._eval_loader(d) for d in self.eval_datasets(split)]

    def val_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders("test")

    # ------------------------------------------------------------------ evaluation

    def evaluate(
        self,
        split: str,
        query_vectors: torch.Tensor,
        database_vectors: torch.Tensor,
        query_indices: Sequence[int] | None = None,
        database_indices: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """Metrics of ``split`` from descriptors in loader order (row i = item ``index`` i).

        Ranks by inner product (pass L2-normalised vectors for cosine similarity).
        ``query_indices`` / ``database_indices``: the vectors are of these items only (a smoke
        run that extracted a few batches); the protocol is then restricted to them, so the
        numbers are not the benchmark's.
        """
        self.setup()
        if split not in self.sets:
            raise ValueError(f"split must be one of {sorted(self.sets)}, got {split!r}")
        rset = self.sets[split]
        if query_indices is not None or database_indices is not None:
            rset = subset_set(
                rset,
                np.arange(len(rset.queries)) if query_indices is None else np.asarray(query_indices, dtype=np.int64),
                np.arange(len(rset.database)) if database_indices is None else np.asarray(database_indices, dtype=np.int64),
            )
            ranks = self.ranks(query_vectors, database_vectors)
            return evaluate_protocol(rset.protocol, ranks, rset.gnd, self.kappas, rset.query_groups, rset.database_groups)
        if query_vectors.shape[0] != len(rset.queries) or database_vectors.shape[0] != len(rset.database):
            raise ValueError(
                f"{split}: expected {len(rset.queries)} query and {len(rset.database)} database vectors, "
                f"got {query_vectors.shape[0]} and {database_vectors.shape[0]}"
            )
        ranks = self.ranks(query_vectors, database_vectors)
        return evaluate_protocol(rset.protocol, ranks, rset.gnd, self.kappas, rset.query_groups, rset.database_groups)

    def ranks(self, query_vectors: torch.Tensor, database_vectors: torch.Tensor, topk: int | None = None) -> np.ndarray:
        """``(n_db or topk, n_q)`` database indices by decreasing inner product (revisitop layout)."""
        indices, _ = rank(
            query_vectors.detach().float(), database_vectors.detach().float(), topk=topk or self.topk, backend=self.search_backend
        )
        return indices.cpu().numpy().T

    def ranking_figure(self, split: str, query_vectors: torch.Tensor, database_vectors: torch.Tensor, n_queries: int = 4, top: int = 8):
        """A figure of the first queries and their top results (green ok, grey junk, red negative);
        revisited sets are framed by the Medium ground truth."""
        from ..evaluate import revisited_gnd
        from ..plots import plot_rankings

        self.setup()
        rset = self.sets[split]
        n = min(n_queries, len(rset.queries))
        ranks = self.ranks(query_vectors[:n], database_vectors, topk=top)
        gnd = revisited_gnd(rset.gnd[:n], "medium") if rset.protocol == "revisited" else rset.gnd[:n]
        return plot_rankings(rset.queries[:n], rset.query_boxes[:n], rset.database, ranks, gnd, n, top)


def subset_set(rset: RetrievalSet, query_indices: np.ndarray, database_indices: np.ndarray) -> RetrievalSet:
    """``rset`` restricted to some queries and database images, ground truth re-indexed."""
    position = np.full(len(rset.database), -1, dtype=np.int64)
    position[database_indices] = np.arange(len(database_indices))
    gnd = []
    for q in query_indices.tolist():
        entry = {}
        for key, value in rset.gnd[q].items():
            if key == "bbx":
                entry[key] = value
                continue
            mapped = position[np.asarray(value, dtype=np.int64)]
            entry[key] = mapped[mapped >= 0]
        gnd.append(entry)
    return replace(
        rset,
        database=[rset.database[i] for i in database_indices],
        queries=[rset.queries[i] for i in query_indices],
        query_boxes=[rset.query_boxes[i] for i in query_indices],
        gnd=gnd,
        database_groups=None if rset.database_groups is None else rset.database_groups[database_indices],
        query_groups=None if rset.query_groups is None else rset.query_groups[query_indices],
    )
