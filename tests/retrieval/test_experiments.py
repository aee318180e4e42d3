"""Every retrieval experiment runs end to end (fast_dev_run multirun), an Optuna sweep over one,
and the pieces the experiments added: the group-classification datamodule and smoke-run metrics."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.data.classification_datamodule import RetrievalGroupClassificationDataModule
from retrieval.data.datamodule import RetrievalEvalDataModule, subset_set
from retrieval.data.datasets import RetrievalSet
from tests.conftest import REPO, SHARED_DATA, run_module

EXPERIMENTS = REPO / "conf" / "experiment" / "retrieval"
# Small enough for 2 cores: 64 px images, a few tuples/images, a handful of queries.
TINY = [
    "data.n_train=8", "data.n_val=4", "data.n_test=4", "++data.image_size=64", "++data.train_image_size=64",
    "data.batch_size=2", "logger=none", "extras.print_config=false", "trainer=cpu",
]
NEEDS = {"coil100": SHARED_DATA / "coil100", "flickrlogos27": SHARED_DATA / "flickrlogos27"}


def _available() -> tuple[list[str], list[str]]:
    names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    runnable = [n for n in names if NEEDS[n.split("_")[0]].is_dir()]
    return names, runnable


def test_every_retrieval_experiment_fast_dev_run(tmp_path):
    names, runnable = _available()
    assert len(names) >= 8 and all(n.split("_")[0] in NEEDS for n in names)
    if not runnable:
        pytest.skip(f"no retrieval data under {SHARED_DATA}")
    skipped = sorted(set(names) - set(runnable))
    selection = "glob(*)" if not skipped else f"glob(*,exclude=[{','.join(skipped)}])"
    result = run_module(
        ["benchmarks.train", "-m", f"+experiment/retrieval={selection}", "++trainer.fast_dev_run=true",
         f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={SHARED_DATA}", *TINY],
        cwd=REPO, env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(jobs) == len(runnable)
    for job in jobs:
        metrics = json.loads(job.read_text())
        experiment = (job.parent / ".hydra" / "overrides.yaml").read_text().split("=")[1].split()[0]
        assert {"val/map", "test/map", "train/loss"} <= set(metrics), (experiment, metrics)
        if experiment.startswith("coil100"):  # one batch holds a query and its views: a real mAP
            assert 0 < metrics["val/map"] <= 1 and 0 < metrics["test/map"] <= 1, (experiment, metrics)
        if "attention" in experiment:
            assert "train/accuracy" in metrics


@pytest.mark.slow  # ~25 s: the mechanism is covered fast by tests/test_sweeps.py
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None, reason="needs the sweep extra")
@pytest.mark.skipif(not NEEDS["coil100"].is_dir(), reason="needs COIL-100 under the data root")
def test_retrieval_optuna_sweep_two_trials(tmp_path):
    result = run_module(
        ["benchmarks.train", "-m", "hparams_search=retrieval_optuna", "experiment=retrieval/coil100_gem", "hydra.sweeper.n_trials=2",
         "++trainer.fast_dev_run=true", f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={SHARED_DATA}", *TINY],
        cwd=REPO, env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(sorted(tmp_path.glob("*/metrics.json"))) == 2
    optimization = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in optimization and "model.optimizer.lr" in optimization


def _write_coil(root: Path, objects=(2, 3, 4, 5, 6, 7, 8, 9), angles=(0, 15, 30)) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for o in objects:
        for a in angles:
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"obj{o}__{a}.png")
    return root


def test_group_classification_trains_on_train_groups_only(tmp_path):
    _write_coil(tmp_path / "coil100")
    dm = RetrievalGroupClassificationDataModule("coil100", data_root=str(tmp_path), train_image_size=16, image_size=16,
                                                split_fractions=(0.5, 0.25, 0.25), batch_size=4, eval_batch_size=8)
    dm.setup()
    train_groups = set(dm.group_splits["train"].tolist())
    assert dm.num_classes == len(train_groups) == 4
    # every training image is a view of a train object, labelled 0..num_classes-1
    names = {Path(p).stem.split("__")[0] for p in dm.train_items.paths}
    assert names == {dm.train_items.group_names[g] for g in range(4)}
    assert not names & {dm.sets["test"].extra["group_names"][g] for g in dm.group_splits["test"]}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].max() < 4
    queries, database = dm.test_dataloader()
    assert len(queries.dataset) == 2 and len(database.dataset) == 4  # 2 test objects x (1 query, 2 views)


def test_subset_evaluation_reindexes_the_ground_truth(tmp_path):
    rset = RetrievalSet(
        "toy", "groups", [Path(f"{i}.jpg") for i in range(4)], [Path("q0.jpg"), Path("q1.jpg")], [None, None],
        [{"ok": np.array([0, 2]), "junk": np.array([3])}, {"ok": np.array([1]), "junk": np.array([], dtype=np.int64)}],
    )
    sub = subset_set(rset, np.array([0]), np.array([2, 3]))
    assert sub.database == [Path("2.jpg"), Path("3.jpg")] and sub.queries == [Path("q0.jpg")]
    assert sub.gnd[0]["ok"].tolist() == [0] and sub.gnd[0]["junk"].tolist() == [1]
    _write_coil(tmp_path / "coil100", objects=(2, 3), angles=(0, 15, 30))
    dm = RetrievalEvalDataModule("coil100", data_root=str(tmp_path), image_size=16)
    # queries: obj2, obj3 (angle 0); database: obj2@15, obj2@30, obj3@15, obj3@30
    q = torch.tensor([[1.0, 0.0]])
    db = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # items 1 (obj2@30) and 2 (obj3@15)
    metrics = dm.evaluate("test", q, db, query_indices=[0], database_indices=[1, 2])
    assert math.isclose(metrics["map"], 0.25)  # the one positive at rank 2: trapezoid (0/1 + 1/2) / 2
    with pytest.raises(ValueError, match="expected 2 query"):
        dm.evaluate("test", q, db)
