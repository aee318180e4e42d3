"""The Lightning datamodule of the patch benchmarks: train on one Brown-layout subset
(official or generated from real images), validate and test on the m50 pairs of others."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from .brown import TEST_MATCH_FILE, BrownSubset, load_subset
from .real.portable import build_real_brown
from .samplers import EpochSampler, MatchPairs, PairSampler, PointSampler, TripletSampler


class BrownDataModule(pl.LightningDataModule):
    """Train on one Brown subset, validate / test on the m50 pairs of another.

    Args:
        data_root: folder holding ``brown/<subset>/`` (or the subsets directly).
        train_subset, test_subset: subset names (liberty / notredame / yosemite, or the
            generated real-data subsets, see ``real_data``).
        val_subset: subset of the validation pairs (default: ``test_subset``).
        sampler: ``pairs`` | ``triplets`` | ``points`` (see :mod:`descriptors.data.samplers`).
        n_train: training items per epoch (None: one per training patch).
        n_val, n_test: caps on the validation / test pairs (None: the whole match file).
        test_match_file, val_match_file: m50 files of the evaluation pairs.
        augment: random rot90 / flip, the same for every patch of an item.
        hard_negatives: fraction of training negatives drawn from the anchor's own scene
            (``points``: of each batch's points taken scene by scene); 0 = uniform draws.
        lookalike_negatives: fraction of training negatives that are look-alikes of the anchor
            (``points``: of each batch's points taken in clusters of look-alikes), see the
            :mod:`descriptors.data.samplers`; ``lookalike_k`` neighbours per point.
        real_data: when set, keyword arguments of :func:`descriptors.data.real.portable.build_real_brown`:
            the subsets are generated from real images into ``cache_dir`` first.
        cache_dir: the memory-mapped patch caches (and generated sets) live here.
        seed: samples are a function of (seed, epoch) only.
    """

    def __init__(
        self,
        data_root: str | None = None,
        train_subset: str = "liberty",
        test_subset: str = "notredame",
        val_subset: str | None = None,
        sampler: str = "pairs",
        n_train: int | None = None,
        n_val: int | None = 10000,
        n_test: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = 1024,
        test_match_file: str = TEST_MATCH_FILE,
        val_match_file: str | None = None,
        augment: bool = False,
        hard_negatives: float = 0.0,
        lookalike_negatives: float = 0.0,
        lookalike_k: int = 8,
        real_data: dict | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if sampler not in ("pairs", "triplets", "points"):
            raise ValueError(f"sampler must be pairs, triplets or points, got {sampler!r}")
        self.data_root = data_root
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.val_subset = val_subset or test_subset
        self.sampler = sampler
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.test_match_file = test_match_file
        self.val_match_file = val_match_file or test_match_file
        self.augment = augment
        self.hard_negatives = hard_negatives
        self.lookalike_negatives = lookalike_negatives
        self.lookalike_k = lookalike_k
        self.real_data = dict(real_data) if real_data else None
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.seed = seed
        self.subsets: dict[str, BrownSubset] = {}
        self.splits: dict[str, Dataset] = {}

    def _root(self) -> str | None:
        if self.real_data is None:
            return self.data_root
        if self.cache_dir is None:
            raise ValueError("real_data needs a cache_dir to write the generated subsets to")
        return str(build_real_brown(self.data_root, self.cache_dir, **self.real_data))

    def prepare_data(self) -> None:
        self._root()

    def subset(self, name: str) -> BrownSubset:
        """A subset by name (``train_subset``, ``val_subset``, ...), generated first where
        ``real_data`` says so; loaded once."""
        return self._subset(self._root(), name)

    def _subset(self, root: str | None, name: str) -> BrownSubset:
        if name not in self.subsets:
            self.subsets[name] = load_subset(root, name, self.cache_dir)
        return self.subsets[name]

    def _per_device(self, batch_size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the number of devices {world}")
        return batch_size // world

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        if all(split in self.splits for split in wanted):
            return
        root = self._root()
        if "train" in wanted and "train" not in self.splits:
            train = self._subset(root, self.train_subset)
            n_train = self.n_train or len(train)
            negatives = dict(hard_negatives=self.hard_negatives, lookalike_negatives=self.lookalike_negatives, lookalike_k=self.lookalike_k)
            if self.sampler == "pairs":
                self.splits["train"] = PairSampler(train, n_train, self.seed, self.augment, **negatives)
            elif self.sampler == "triplets":
                self.splits["train"] = TripletSampler(train, n_train, self.seed, self.augment, **negatives)
            else:
                per_device = self._per_device(self.batch_size)
                self.splits["train"] = PointSampler(train, n_train, per_device, self.seed, self.augment, **negatives)
        if "val" in wanted and "val" not in self.splits:
            val = self._subset(root, self.val_subset)
            self.splits["val"] = MatchPairs(val, val.matches(self.val_match_file)[: self.n_val])
        if "test" in wanted and "test" not in self.splits:
            test = self._subset(root, self.test_subset)
            self.splits["test"] = MatchPairs(test, test.matches(self.test_match_file)[: self.n_test])

    def train_dataloader(self) -> DataLoader:
        dataset = self.splits["train"]
        # points batches are built in order: shuffling would mix the distinct-point blocks
        sampler = EpochSampler(dataset, shuffle=self.sampler != "points", seed=self.seed)
        sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return DataLoader(
            dataset,
            batch_size=self._per_device(self.batch_size),
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self._per_device(self.eval_batch_size), shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
