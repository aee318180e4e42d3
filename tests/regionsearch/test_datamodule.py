"""Datamodules turn generated pairs into batches of the documented shapes."""

from __future__ import annotations

import pytest
import torch

from core.errors import DatasetNotFoundError
from regionsearch.data.datamodule import LogoRegionDataModule, MNISTRegionDataModule
from tests.regionsearch.test_logos import write_jpeg


def test_mnist_datamodule_embedded_batches(tmp_path):
    dm = MNISTRegionDataModule(canvas="cluttered", digits="embedded", n_train=64, n_val=16, n_test=16, batch_size=8, eval_batch_size=16, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["query"].shape == (8, 1, 28, 28) and batch["reference"].shape == (8, 1, 100, 100)
    assert batch["box"].shape == (8, 4) and batch["label"].shape == (8,)
    assert batch["reference"].dtype == torch.float32 and 0 <= batch["reference"].min() and batch["reference"].max() <= 1
    assert torch.allclose(batch["box"][:, 2] - batch["box"][:, 0], torch.tensor(28.0))
    assert len(dm.val_dataloader().dataset) == 16 and len(dm.test_dataloader().dataset) == 16
    assert list(tmp_path.glob("mnist-cluttered-train-*.npz"))  # cached once


def test_mnist_datamodule_official_needs_data(tmp_path):
    dm = MNISTRegionDataModule(digits="official", data_root=str(tmp_path / "nothing"), cache_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="nothing"):
        dm.setup("fit")


def write_flickrlogos32(root):
    """FlickrLogos-v2 layout: classes/jpg/<class>/<id>.jpg, classes/masks/<class>/<id>.jpg.bboxes.txt, split lists."""
    lists = {"trainset.txt": [], "valset.txt": [], "testset.txt": []}
    for c, brand in enumerate(["adidas", "HP"]):
        for i in range(9):
            name = f"{c}{i:02d}.jpg"
            box = (10 + 3 * i, 12 + 2 * i, 30, 24)
            write_jpeg(root / "classes" / "jpg" / brand / name, (100, 90), [(brand, (box[0], box[1], box[0] + box[2], box[1] + box[3]))], seed=i)
            masks = root / "classes" / "masks" / brand.lower()
            masks.mkdir(parents=True, exist_ok=True)
            (masks / f"{name}.bboxes.txt").write_text("x y width height\n" + " ".join(map(str, box)) + "\n")
            lists[["trainset.txt", "valset.txt", "testset.txt"][i % 3]].append(f"{brand},{name}")
    for name, entries in lists.items():
        (root / name).write_text("\n".join(entries) + "\n")
    (root / "trainvalset.txt").write_text("\n".join(lists["trainset.txt"] + lists["valset.txt"]) + "\n")
    return root


def test_logo_datamodule_on_official_fl32_layout(tmp_path):
    fl32_root = write_flickrlogos32(tmp_path / "FlickrLogos-v2")
    dm = LogoRegionDataModule(dataset="flickrlogos32", data_root=str(fl32_root), n_train=12, n_val=4, n_test=6, batch_size=4, eval_batch_size=6, min_box_size=0, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    assert batch["query"].shape == (6, 3, 64, 64) and batch["reference"].shape == (6, 3, 160, 160)
    assert (batch["box"][:, 2:] <= 160).all() and (batch["box"][:, :2] >= 0).all()


def test_logo_datamodule_missing_root(tmp_path):
    dm = LogoRegionDataModule(data_root=str(tmp_path / "absent"), cache_dir=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="absent"):
        dm.setup("fit")


def test_mixed_batches_carry_the_distractor_boxes(tmp_path):
    dm = MNISTRegionDataModule(canvas="mixed", digits="embedded", n_train=32, n_val=8, n_test=8, batch_size=8, eval_batch_size=8, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["distractors"].shape == (8, 3, 4) and batch["distractors"].dtype == torch.float32
    torch.testing.assert_close(batch["distractors"], dm.splits["val"].distractor_boxes[:8])
    # distractor digits never overlap the target box (the generator's contract)
    truth = batch["box"].unsqueeze(1)
    overlap_x = torch.minimum(truth[..., 2], batch["distractors"][..., 2]) - torch.maximum(truth[..., 0], batch["distractors"][..., 0])
    overlap_y = torch.minimum(truth[..., 3], batch["distractors"][..., 3]) - torch.maximum(truth[..., 1], batch["distractors"][..., 1])
    assert ((overlap_x <= 0) | (overlap_y <= 0)).all()
    plain = MNISTRegionDataModule(canvas="cluttered", digits="embedded", n_train=16, n_val=8, n_test=8, batch_size=8, cache_dir=str(tmp_path))
    plain.setup("fit")
    assert "distractors" not in next(iter(plain.train_dataloader()))
