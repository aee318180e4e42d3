"""The retrieval benchmark suite end to end on toy sets written in the official layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from benchmarks.suites.retrieval import METHODS, POSTPROCESS, markdown_table, run_suite, targets

ROW_KEYS = {"dataset", "method", "postprocess", "map", "dim", "ms_per_image", "device"}


def _pattern(group: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An image whose colour blocks depend on its group, plus noise (retrievable, not trivial)."""
    width, height = size
    colours = np.random.default_rng(group).integers(0, 255, (4, 3))
    image = np.zeros((height, width, 3), dtype=np.float64)
    image[: height // 2, : width // 2], image[: height // 2, width // 2 :] = colours[0], colours[1]
    image[height // 2 :, : width // 2], image[height // 2 :, width // 2 :] = colours[2], colours[3]
    return np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)


def write_coil100(root: Path, n_objects: int = 10, angles=(0, 15, 30, 45)) -> Path:
    """``obj{O}__{A}.png`` views (the official file names), 32x32."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for o in range(2, 2 + n_objects):
        for a in angles:
            Image.fromarray(_pattern(o, (32, 32), rng)).save(root / f"obj{o}__{a}.png")
    return root


def write_flickrlogos27(root: Path, n_brands: int = 10, per_brand: int = 3) -> Path:
    """``images/*.jpg`` + ``flickr_logos_27_dataset_training_set_annotation.txt`` (image class subset x1 y1 x2 y2)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = []
    for b in range(n_brands):
        for i in range(per_brand):
            name = f"{b}{i}.jpg"
            photo = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            photo[10:40, 12:52] = _pattern(100 + b, (40, 30), rng)  # the logo
            Image.fromarray(photo).save(root / "images" / name, quality=95)
            lines.append(f"{name} Brand{b} 1 12 10 51 39")
    (root / "flickr_logos_27_dataset_training_set_annotation.txt").write_text("\n".join(lines) + "\n")
    return root


def test_suite_writes_rows_tables_plots_and_merges_published_rows(tmp_path):
    write_coil100(tmp_path / "data" / "coil100")
    write_flickrlogos27(tmp_path / "data" / "flickrlogos27")
    publish = tmp_path / "published"
    publish.mkdir()
    (publish / "retrieval.json").write_text(json.dumps([{**dict.fromkeys(ROW_KEYS, 0), "dataset": "holidays", "table": "main", "device": "x"}]))
    split = {"split_fractions": [0.5, 0.2, 0.3], "split_seed": 0}
    # GeM fine-tuning through benchmarks.train on the toy COIL-100 (5 train objects x 4 views)
    finetune = {"coil100": {"experiment": "retrieval/coil100_gem", "overrides": [
        "trainer=cpu", "trainer.max_epochs=1", "data.n_train=4", "data.batch_size=2", "data.nnum=2", "data.poolsize=8",
        "data.image_size=32", "data.train_image_size=32", "data.eval_batch_size=16"]}}
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_suite(
            output_dir=str(tmp_path / "run"),
            quick=True,
            datasets=["flickrlogos27", "coil100"],
            data_root=str(tmp_path / "data"),
            dataset_settings={"flickrlogos27": {"image_size": 64, "queries_per_brand": 2, **split}, "coil100": {"image_size": 32, **split}},
            quick_settings={"flickrlogos27": {"image_size": 64}},
            proposals={"max_boxes": 8},
            whiten_dims=16,
            attention={"hidden": 8, "epochs": 40, "batch_size": 16, "lr": 0.01},
            quick_attention={"epochs": 3},
            ranking={"queries": 2, "top": 3},
            finetune=finetune,
            num_threads=1,
            publish_dir=str(publish),
        )
    GlobalHydra.instance().clear()
    n_main = len(METHODS) * len(POSTPROCESS)
    for dataset in ("flickrlogos27", "coil100"):
        mine = [r for r in rows if r["dataset"] == dataset]
        assert len([r for r in mine if r["table"] == "main"]) == n_main + (len(POSTPROCESS) if dataset == "coil100" else 0)
        assert {r["method"] for r in mine if r["table"] == "ablation"} == {
            "rmac", "attention", "attention_context", "rmac_proposals", "attention_proposals", "attention_context_proposals"}
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert 0 <= row["map"] <= 1 and row["ms_per_image"] > (row["backbone_ms"] or 0) > 0 or row["method"] == "gem_finetuned"
        assert row["ms_per_image"] > 0
        assert row["dim"] == (16 if "pcaw" in row["postprocess"] else 1000 if row["method"] == "neuralcodes" else 1280)
    for row in rows:
        if row.get("attention_training"):  # the epoch kept by the validation mAP, one score per epoch
            stats = row["attention_training"]
            assert len(stats["val_map_per_epoch"]) == stats["epochs"] == 3
            assert stats["val_map"] == max(stats["val_map_per_epoch"])
            assert stats["val_map_per_epoch"][stats["selected_epoch"] - 1] == stats["val_map"]
    coil = {(r["method"], r["postprocess"]): r for r in rows if r["dataset"] == "coil100" and r["table"] == "main"}
    assert coil[("mac", "none")]["map"] > 0.5  # the blocks make objects retrievable
    assert coil[("mac", "none")]["n_queries"] == 3 and coil[("mac", "none")]["n_database"] == 9  # 3 test objects x 3 views
    tuned = coil[("gem_finetuned", "none")]
    assert tuned["n_database"] == 9 and Path(tuned["finetune"]["checkpoint"]).is_file() and tuned["dim"] == 1280
    run = tmp_path / "run"
    assert json.loads((run / "retrieval.json").read_text()) == rows
    assert "R-MAC at most 1.15x MAC's time per image" in (run / "retrieval.md").read_text()
    assert (run / "retrieval_map.png").is_file()
    assert len(list(run.glob("retrieval_topk_coil100_*.png"))) >= 1 and len(list(run.glob("retrieval_topk_flickrlogos27_*.png"))) >= 1
    published = json.loads((publish / "retrieval.json").read_text())
    assert {r["dataset"] for r in published} == {"holidays", "flickrlogos27", "coil100"}
    assert (publish / "retrieval.md").is_file() and list(publish.glob("retrieval_topk_coil100_*.png"))


def test_targets_and_table_from_rows():
    def row(method, post, value, table="main", ms=10.0):
        return {"dataset": "flickrlogos27", "table": table, "method": method, "postprocess": post, "map": value, "dim": 8,
                "ms_per_image": ms, "device": "cpu", "n_queries": 2, "n_database": 5}

    rows = [row("mac", "none", 0.4), row("spoc", "none", 0.3), row("rmac", "none", 0.5, ms=11.0), row("attention", "none", 0.55),
            row("attention_context", "none", 0.6), row("rmac", "pcaw", 0.6), row("rmac", "pcaw+qe", 0.58)]
    checks = {claim: met for claim, met, _ in targets(rows)}
    assert checks["R-MAC above MAC and SPoC (none)"] is True
    assert checks["attention + context > attention > R-MAC (none)"] is True
    assert checks["QE adds (R-MAC + PCAw: + QE above without)"] is False
    assert checks["R-MAC at most 1.15x MAC's time per image"] is True
    assert checks["R-MAC above MAC and SPoC (pcaw)"] is None  # not measured
    table = markdown_table(rows, quick=False)
    assert "| MAC | 8 / ? | 10.0 | 0.400 |" in table and "**NOT met**" in table


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
