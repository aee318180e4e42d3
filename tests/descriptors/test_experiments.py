"""Every descriptors experiment as a Hydra multirun (fast_dev_run) on a Brown fixture written in
the official layout, and the Optuna search config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from descriptors.data.brown import TEST_MATCH_FILE, write_subset
from descriptors.data.samplers import sample_match_pairs
from tests.conftest import REPO, run_module

EXPERIMENTS = REPO / "conf" / "experiment" / "descriptors"
FINETUNE = "tfeat_liberty_finetune"
#: experiments on the real-data set only (its builder's options): composed in their own tests
REAL_ONLY = ("l2net_jittered",)


def write_brown_fixture(root: Path, subsets=("liberty", "notredame"), n_points: int = 120, per_point: int = 3, seed: int = 0) -> Path:
    """``root/brown/<subset>/``: bmp tiles, info.txt, interest.txt and the m50 test pairs.

    Each 3D point is a smooth random texture; its patches are shifted, noisy views of it."""
    rng = np.random.default_rng(seed)
    for k, subset in enumerate(subsets):
        base = rng.normal(size=(n_points, 12, 12))
        base = np.kron(base, np.ones((6, 6)))  # 72x72 blocky textures
        patches, point_ids = [], []
        for point in range(n_points):
            for _ in range(per_point):
                dy, dx = rng.integers(0, 8, 2)
                view = base[point, dy : dy + 64, dx : dx + 64] + 0.3 * rng.normal(size=(64, 64))
                patches.append(np.clip(128 + 40 * view, 0, 255).astype(np.uint8))
                point_ids.append(1000 * k + point)
        point_ids = np.array(point_ids)
        pairs = sample_match_pairs(point_ids, 200, seed=seed + k)
        write_subset(root / "brown" / subset, np.stack(patches), point_ids, match_files={TEST_MATCH_FILE: pairs})
    return root


def test_every_experiment_names_a_val_metric_and_a_recipe():
    names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    for family in ("matchnet", "deepcompare", "gloss", "tnet", "deepdesc", "tfeat", "l2net", "hardnet"):
        assert any(family in n for n in names), family
    for plus in ("l2net_plus", "cs_l2net_plus", "hardnet_plus"):
        assert plus in names
    for path in EXPERIMENTS.glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path
        assert "monitor: val/fpr95" in text and "optimized_metric: val/fpr95_best" in text and "monitor_mode: min" in text, path
        assert "override /data: brown" in text and "data=brown_real" in text, path


def test_every_descriptors_experiment_fast_dev_run(tmp_path):
    data = write_brown_fixture(tmp_path / "data")
    sweep = tmp_path / "sweep"
    result = run_module(
        [
            # the fine-tuning experiment trains on real data from published weights: test_published runs it
            "benchmarks.train", "-m", f"+experiment/descriptors=glob(*,exclude=[{FINETUNE},{','.join(REAL_ONLY)}])", "++trainer.fast_dev_run=true",
            f"hydra.sweep.dir={sweep}", f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}",
            "data.n_train=16", "data.batch_size=8", "data.n_val=32", "data.n_test=32", "data.eval_batch_size=32",
            "logger=none", "extras.print_config=false", "trainer=cpu",
        ],
        cwd=REPO,
        env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert len(jobs) == len(list(EXPERIMENTS.glob("*.yaml"))) - 1 - len(REAL_ONLY) >= 20
    for job in jobs:
        metrics = json.loads(job.read_text())
        assert 0.0 <= metrics["test/fpr95"] <= 1.0, job


def test_the_jittered_l2net_is_l2net_on_jittered_real_frames(make_cfg):
    jittered, plain = (make_cfg([f"experiment=descriptors/{name}", "data=brown_real"]) for name in ("l2net_jittered", "l2net"))
    assert jittered.data.real_data.frame_jitter == "h" and plain.data.real_data.frame_jitter is None
    assert jittered.model == plain.model and jittered.data.sampler == plain.data.sampler == "points"
    assert make_cfg(["experiment=descriptors/l2net_jittered"]).data.real_data.frame_jitter == "h"  # real data by default
