"""LightningDataModules for image retrieval: evaluation, tuple training, classification.

Evaluation (:class:`RetrievalEvalDataModule`)
    ``val_dataloader()`` / ``test_dataloader()`` return two loaders ``[queries, database]``
    with batches ``{"image": float (B, 3, H, W) ImageNet-normalised, "index": long (B,)}``;
    the longer side is at most ``image_size``; queries are cropped to their boxes.
    Consecutive images of equal size are batched (up to ``eval_batch_size``), others come
    one at a time. :meth:`~RetrievalEvalDataModule.evaluate` ranks the database for every
    query and returns the protocol's metrics (``map``, ``map_medium``, ``mp@5``, ``ns`` ...).
Tuple training (:class:`RetrievalTupleDataModule`)
    train batches ``{"images": float (B, 2 + nnum, 3, S, S), "labels": long (B, 2 + nnum)}``
    with labels ``-1`` (query), ``1`` (positive), ``0`` (negatives); the model calls
    :meth:`~RetrievalTupleDataModule.mine` with its embedding function at the start of
    every epoch. Validation/test as above on groups disjoint from the training groups.
Classification (:class:`RetrievalClassificationDataModule`)
    ``{"image": float (B, 3, S, S), "label": long (B,)}`` and ``num_classes``.

Size knobs (every data config has them): ``n_train`` = tuples (or training images) per
epoch, ``n_val`` / ``n_test`` = number of queries (or images) evaluated; null = all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.errors import DatasetNotFoundError

from . import datasets as ds
from .evaluate import evaluate_protocol
from .images import ImageListDataset, SameSizeBatchSampler, load_image
from .mining import draw_query_pairs, mine_tuples, random_tuples
from .search import rank

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_DATASETS",
    "GROUPED_DATASETS",
    "RetrievalClassificationDataModule",
    "RetrievalEvalDataModule",
    "RetrievalGroupClassificationDataModule",
    "RetrievalTupleDataModule",
    "TupleDataset",
]

EVAL_DATASETS = ("oxford5k", "paris6k", "roxford5k", "rparis6k", "holidays", "ukbench", "folder", "coil100", "flickrlogos27")
#: Datasets made of groups, which can be split into disjoint train/val/test groups.
GROUPED_DATASETS = ("folder", "coil100", "flickrlogos27")


def _resolve_root(dataset: str, data_root: str | None, root: str | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    if data_root is None:
        raise DatasetNotFoundError(
            f"no data root configured for {dataset}", "<unset>", "set DEEPMATCH_DATA (paths.data_dir) or data.root"
        )
    return Path(data_root).expanduser() / dataset


def _grouped_items(dataset: str, root: Path, min_box_size: float) -> ds.GroupedImages:
    if dataset == "coil100":
        return ds.coil100_items(root)
    if dataset == "flickrlogos27":
        return ds.flickrlogos27_items(root, min_size=min_box_size)
    if dataset == "folder":
        return ds.folder_items(root)
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
        self.sets: dict[str, ds.RetrievalSet] = {}
        self.group_splits: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ reading

    def dataset_root(self) -> Path:
        return _resolve_root(self.dataset, self.data_root, self.root)

    def _distractor_paths(self) -> list[Path]:
        paths: list[Path] = []
        for folder in self.distractor_dirs:
            folder = Path(folder).expanduser()
            if not folder.is_absolute() and self.data_root is not None:
                folder = Path(self.data_root) / folder
            paths += ds.read_distractors(folder)
        return paths

    def _read_set(self, groups: np.ndarray | None) -> ds.RetrievalSet:
        root = self.dataset_root()
        if self.dataset in ("oxford5k", "paris6k"):
            return ds.read_oxford_paris(root, self.dataset, self.exclude, self.drop_unreadable)
        if self.dataset in ("roxford5k", "rparis6k"):
            return ds.read_revisited(root, self.dataset)
        if self.dataset == "holidays":
            return ds.read_holidays(root, self.holidays_image_dir)
        if self.dataset == "ukbench":
            return ds.read_ukbench(root)
        if self.dataset == "coil100":
            return ds.read_coil100(root, self.query_angle, groups)
        if self.dataset == "flickrlogos27":
            return ds.read_flickrlogos27_retrieval(root, groups, self.queries_per_brand, self.min_box_size)
        return ds.read_folder(root, self.queries_per_group, groups)

    def _n_groups(self) -> int:
        return len(_grouped_items(self.dataset, self.dataset_root(), self.min_box_size).group_names)

    def setup(self, stage: str | None = None) -> None:
        if self.sets:
            return
        distractors = self._distractor_paths()
        if self.split_fractions is None:
            full = self._read_set(None)
            splits = {"val": full, "test": full}
        else:
            self.group_splits = ds.split_groups(self._n_groups(), self.split_fractions, self.split_seed)
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
        from .evaluate import revisited_gnd
        from .plots import plot_rankings

        self.setup()
        rset = self.sets[split]
        n = min(n_queries, len(rset.queries))
        ranks = self.ranks(query_vectors[:n], database_vectors, topk=top)
        gnd = revisited_gnd(rset.gnd[:n], "medium") if rset.protocol == "revisited" else rset.gnd[:n]
        return plot_rankings(rset.queries[:n], rset.query_boxes[:n], rset.database, ranks, gnd, n, top)


def subset_set(rset: ds.RetrievalSet, query_indices: np.ndarray, database_indices: np.ndarray) -> ds.RetrievalSet:
    """``rset`` restricted to some queries and database images, ground truth re-indexed."""
    from dataclasses import replace

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


class TupleDataset(Dataset):
    """Tuples of items (rows of ``tuples``: query, positive, negatives) as square images."""

    def __init__(self, items: ds.GroupedImages, tuples: np.ndarray, image_size: int) -> None:
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
        self.train_items: ds.GroupedImages | None = None
        self.train_set: TupleDataset | None = None
        self.last_mining: dict[str, float] = {}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_set is not None:
            return
        items = _grouped_items(self.dataset, self.dataset_root(), self.min_box_size)
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


class _ClassificationDataset(Dataset):
    def __init__(self, items: ds.GroupedImages, indices: np.ndarray, image_size: int, flip: bool, seed: int) -> None:
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


def split_items(items: ds.GroupedImages, fractions: Sequence[float], seed: int, by_image: bool) -> dict[str, np.ndarray]:
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
        self.items: ds.GroupedImages | None = None
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
        root = _resolve_root(self.dataset, self.data_root, self.root)
        items = _grouped_items(self.dataset, root, self.min_box_size)
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


def _largest_logo_per_image(items: ds.GroupedImages) -> ds.GroupedImages:
    best: dict[Path, int] = {}
    for i, (path, box) in enumerate(zip(items.paths, items.boxes)):
        area = (box[2] - box[0]) * (box[3] - box[1])
        j = best.get(path)
        if j is None or area > (items.boxes[j][2] - items.boxes[j][0]) * (items.boxes[j][3] - items.boxes[j][1]):
            best[path] = i
    order = sorted(best.values())
    return ds.GroupedImages(
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
        self.train_items: ds.GroupedImages | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.train_items is not None:
            return
        items = _grouped_items(self.dataset, self.dataset_root(), self.min_box_size)
        train_groups = self.group_splits["train"]
        if self.dataset == "flickrlogos27" and not self.crops:
            outside = {p for p, g in zip(items.paths, items.groups) if g not in set(train_groups.tolist())}
            items = _largest_logo_per_image(items)
            keep = np.array([p not in outside for p in items.paths], dtype=bool)
            items = ds.GroupedImages([p for p, k in zip(items.paths, keep) if k], items.groups[keep], [None] * int(keep.sum()), items.group_names)
        items = items.select_groups(train_groups)
        if not len(items):
            raise ValueError(f"no training images in the train groups of {self.dataset}")
        label_of = {int(g): i for i, g in enumerate(train_groups)}
        items = ds.GroupedImages(
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
