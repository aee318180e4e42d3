"""Datamodules yield the contract's batches (real COIL-100 when present, tmp fixtures)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from core.errors import DatasetNotFoundError
from retrieval.data.classification_datamodule import RetrievalClassificationDataModule
from retrieval.data.datamodule import RetrievalEvalDataModule
from retrieval.data.tuple_datamodule import RetrievalTupleDataModule
from tests.conftest import SHARED_DATA
from tests.retrieval.data.test_datasets import write_jpeg, write_oxford

COIL = SHARED_DATA / "coil100"
needs_coil = pytest.mark.skipif(not COIL.is_dir(), reason=f"COIL-100 not found at {COIL}")


def tiny_embed(images: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.adaptive_avg_pool2d(images, 2).flatten(1), dim=1)


def collect(loader) -> torch.Tensor:
    vectors, indices = [], []
    for batch in loader:
        assert set(batch) == {"image", "index"}
        assert batch["image"].dtype == torch.float32 and batch["image"].dim() == 4 and batch["image"].shape[1] == 3
        assert batch["index"].dtype == torch.long
        vectors.append(tiny_embed(batch["image"]))
        indices.append(batch["index"])
    order = torch.argsort(torch.cat(indices))
    return torch.cat(vectors)[order]


def write_groups(root, n_groups=8, per_group=3, sizes=((40, 30),)):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200), (90, 90, 90), (240, 240, 240)]
    for g in range(n_groups):
        for i in range(per_group):
            write_jpeg(root / f"g{g}" / f"{i}.jpg", size=sizes[(g + i) % len(sizes)], colour=colours[g % len(colours)], seed=i)
    return root


@needs_coil
def test_coil100_eval_tuples_and_classification():
    dm = RetrievalEvalDataModule("coil100", data_root=str(SHARED_DATA), image_size=64, split_fractions=(0.5, 0.2, 0.3), n_val=5, eval_batch_size=16)
    queries, database = dm.val_dataloader()
    batch = next(iter(database))
    assert batch["image"].shape == (16, 3, 64, 64) and batch["index"].tolist() == list(range(16))
    rset = dm.sets["val"]
    assert len(rset.queries) == 5 and all(p.stem.endswith("__0") for p in rset.queries)
    assert not set(rset.queries) & set(rset.database)
    test_objects = {p.stem.split("__")[0] for p in dm.sets["test"].database}
    assert not test_objects & {p.stem.split("__")[0] for p in rset.database}  # disjoint objects
    metrics = dm.evaluate("val", collect(queries), collect(database))
    assert set(metrics) == {"map", "mp@1", "mp@5", "mp@10"} and 0 < metrics["map"] <= 1

    tm = RetrievalTupleDataModule("coil100", data_root=str(SHARED_DATA), train_image_size=32, n_train=6, poolsize=40, nnum=3, batch_size=3)
    tm.setup("fit")
    batch = next(iter(tm.train_dataloader()))
    assert batch["images"].shape == (3, 5, 3, 32, 32)
    assert batch["labels"].tolist() == [[-1, 1, 0, 0, 0]] * 3
    train_objects = {tm.train_items.paths[i].stem.split("__")[0] for i in range(len(tm.train_items))}
    assert not train_objects & test_objects

    cm = RetrievalClassificationDataModule("coil100", data_root=str(SHARED_DATA), image_size=32, n_train=16, batch_size=8)
    batch = next(iter(cm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].dtype == torch.long
    assert cm.num_classes == 59 and int(batch["label"].max()) < 59


def test_folder_eval_batches_group_equal_sizes(tmp_path):
    root = write_groups(tmp_path / "folder", n_groups=3, sizes=((40, 30), (30, 40)))
    dm = RetrievalEvalDataModule("folder", data_root=str(tmp_path), eval_batch_size=4)
    queries, database = dm.test_dataloader()
    shapes = [tuple(b["image"].shape) for b in database]
    assert sum(s[0] for s in shapes) == len(dm.sets["test"].database) == 6
    assert all(len({s[2:]}) == 1 for s in shapes)  # a batch never mixes sizes
    # perfect descriptors (one-hot group) give mAP 1
    rset = dm.sets["test"]
    q = F.one_hot(torch.as_tensor(rset.query_groups), 3).float()
    db = F.one_hot(torch.as_tensor(rset.database_groups), 3).float()
    assert dm.evaluate("test", q, db)["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="expected 3 query"):
        dm.evaluate("test", q[:2], db)
    assert root.is_dir()


def test_oxford_datamodule_crops_queries(tmp_path):
    write_oxford(tmp_path / "oxford5k")
    dm = RetrievalEvalDataModule("oxford5k", data_root=str(tmp_path), image_size=None)
    queries, database = dm.val_dataloader()
    first = next(iter(queries))
    assert first["image"].shape == (1, 3, 26, 30)  # box 10.5 4 40.5 30 at full scale
    metrics = dm.evaluate("val", collect(queries), collect(database))
    assert {"map", "mp@1", "mp@5", "mp@10"} == set(metrics)


def test_missing_dataset_is_one_clear_error(tmp_path):
    dm = RetrievalEvalDataModule("roxford5k", data_root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="roxford5k"):
        dm.setup("test")
    with pytest.raises(DatasetNotFoundError, match="data root"):
        RetrievalEvalDataModule("holidays").setup()


class _TinyRetrievalModule(pl.LightningModule):
    """Follows the contract: mine at every epoch start, evaluate two val loaders."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(12, 8)
        self.mined = 0
        self.tuples_seen = []
        self._vectors = {0: [], 1: []}

    def embed(self, images):
        return F.normalize(self.proj(F.adaptive_avg_pool2d(images, 2).flatten(1)), dim=1)

    def on_train_epoch_start(self):
        self.trainer.datamodule.mine(self.embed)
        self.mined += 1

    def training_step(self, batch, batch_idx):
        b, t = batch["labels"].shape
        assert batch["images"].shape[:2] == (b, t)
        vectors = self.embed(batch["images"].flatten(0, 1)).view(b, t, -1)
        self.tuples_seen.append(self.trainer.datamodule.train_set.tuples.copy())
        return (1 - (vectors[:, :1] * vectors[:, 1:2]).sum(-1)).mean() + (vectors[:, :1] * vectors[:, 2:]).sum(-1).clamp(min=0).mean()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._vectors[dataloader_idx].append((batch["index"], self.embed(batch["image"])))

    def on_validation_epoch_end(self):
        def ordered(items):
            index = torch.cat([i for i, _ in items])
            return torch.cat([v for _, v in items])[torch.argsort(index)]

        metrics = self.trainer.datamodule.evaluate("val", ordered(self._vectors[0]), ordered(self._vectors[1]))
        self.log_dict({f"val/{k}": v for k, v in metrics.items()})
        self._vectors = {0: [], 1: []}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_tuple_datamodule_in_a_trainer_remines_every_epoch(tmp_path):
    write_groups(tmp_path / "folder", n_groups=8, per_group=3)
    dm = RetrievalTupleDataModule("folder", data_root=str(tmp_path), train_image_size=16, image_size=32, n_train=4,
                                  poolsize=50, nnum=2, batch_size=2, split_fractions=(0.5, 0.25, 0.25), eval_batch_size=8)
    module = _TinyRetrievalModule()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert module.mined == 2 and dm.epoch == 2
    assert len(module.tuples_seen) == 4  # 2 batches per epoch
    assert "val/map" in trainer.callback_metrics
    queries, positives = dm.whitening_pairs(10)
    assert (dm.train_items.groups[queries] == dm.train_items.groups[positives]).all() and (queries != positives).all()
    batches = list(dm.train_items_dataloader())
    assert sum(len(b["index"]) for b in batches) == len(dm.train_items) and batches[0]["image"].shape[-1] == 16
    train_groups = set(dm.train_items.groups.tolist())
    assert not train_groups & set(dm.sets["val"].query_groups.tolist())
    for tuples in module.tuples_seen:
        groups = dm.train_items.groups[tuples]
        assert (groups[:, 0] == groups[:, 1]).all() and (groups[:, 2:] != groups[:, :1]).all()


def test_ranking_figure_frames_results_by_ground_truth(tmp_path):
    write_groups(tmp_path / "folder", n_groups=3)
    dm = RetrievalEvalDataModule("folder", data_root=str(tmp_path), image_size=32)
    dm.setup()
    rset = dm.sets["val"]
    q = F.one_hot(torch.as_tensor(rset.query_groups), 3).float()
    db = F.one_hot(torch.as_tensor(rset.database_groups), 3).float() + 0.01 * torch.arange(6.0).unsqueeze(1)
    fig = dm.ranking_figure("val", q, db, n_queries=2, top=3)
    axes = fig.axes
    assert len(axes) == 2 * 4
    colours = [ax.spines["top"].get_edgecolor() for ax in axes[1:4]]
    from matplotlib.colors import to_rgba

    assert colours[:2] == [to_rgba("tab:green")] * 2 and colours[2] == to_rgba("tab:red")  # 2 positives, then a negative


FLICKRLOGOS27 = SHARED_DATA / "flickrlogos27"


@pytest.mark.skipif(not FLICKRLOGOS27.is_dir(), reason=f"FlickrLogos-27 not found at {FLICKRLOGOS27}")
def test_flickrlogos27_real_queries_are_logo_crops():
    dm = RetrievalEvalDataModule("flickrlogos27", data_root=str(SHARED_DATA), image_size=256, split_fractions=(0.5, 0.2, 0.3), queries_per_brand=2, n_test=4)
    dm.setup()
    rset = dm.sets["test"]
    assert len(rset.queries) == 4 and len(rset.database) == 566  # every annotated photo
    for query, gnd in zip(rset.queries, rset.gnd):
        own = rset.database.index(query)
        assert gnd["junk"].tolist() == [own] and own not in gnd["ok"] and len(gnd["ok"]) > 0
    from retrieval.data.images import image_size_of, output_size

    queries, _ = dm.test_dataloader()
    first = next(iter(queries))["image"]
    width, height = image_size_of(rset.queries[0])
    x1, y1, x2, y2 = rset.query_boxes[0]
    scale = min(1.0, 256 / max(width, height))  # the crop is scaled like its photo
    assert first.shape[-1] == round((min(x2, width) - max(x1, 0)) * scale)
    assert tuple(first.shape[-2:][::-1]) == output_size((width, height), rset.query_boxes[0], 256)
    val_brands, test_brands = set(dm.sets["val"].query_groups.tolist()), set(rset.query_groups.tolist())
    assert not val_brands & test_brands
