"""Hydra multiruns in a subprocess: every experiment, an Optuna sweep, a joblib sweep."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO, SHARED_DATA, run_module

TINY = ["data.n_train=128", "data.n_val=32", "data.n_test=32", "logger=none", "extras.print_config=false", "trainer=cpu"]


def _job_metrics(sweep_dir):
    return sorted(sweep_dir.glob("*/metrics.json"))


def test_every_regionsearch_experiment_fast_dev_run(tmp_path):
    # The logo experiment needs FlickrLogos-27 under the data root; every other one runs anywhere.
    has_logos = (SHARED_DATA / "flickrlogos27").is_dir()
    selection = "glob(*)" if has_logos else "glob(*,exclude=flickrlogos)"
    result = run_module(
        ["benchmarks.train", "-m", f"+experiment/regionsearch={selection}", "++trainer.fast_dev_run=true", f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={SHARED_DATA}", *TINY],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment" / "regionsearch").glob("*.yaml"))
    assert len(_job_metrics(tmp_path)) == len(experiments) - (0 if has_logos else 1) >= 4


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None, reason="needs the sweep extra")
def test_optuna_sweep_two_trials(tmp_path):
    result = run_module(
        ["benchmarks.train", "-m", "hparams_search=regionsearch_optuna", "experiment=regionsearch/demo", "hydra.sweeper.n_trials=2", "++trainer.fast_dev_run=true", f"hydra.sweep.dir={tmp_path}", *TINY],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_job_metrics(tmp_path)) == 2
    optimization = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in optimization and "best_params" in optimization


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None, reason="needs the sweep extra")
def test_joblib_multirun_two_jobs(tmp_path):
    result = run_module(
        ["benchmarks.train", "-m", "launcher=joblib", "experiment=regionsearch/demo", "model.optimizer.lr=0.001,0.002", "++trainer.fast_dev_run=true", f"hydra.sweep.dir={tmp_path}", *TINY],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_metrics(tmp_path)
    assert len(jobs) == 2
    assert all("test/success_rate" in json.loads(p.read_text()) for p in jobs)
