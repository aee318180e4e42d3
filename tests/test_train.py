"""The train / eval entry points: fast_dev_run, resume, eval, wandb offline, DDP, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.eval import evaluate
from benchmarks.train import train
from tests.conftest import REPO, SHARED_DATA, run_module

DEMO = ["experiment=regionsearch/demo", "data.digits=embedded", "logger=none"]


def test_fast_dev_run(make_cfg, tmp_path):
    cfg = make_cfg([*DEMO, "++trainer.fast_dev_run=true"])
    metrics = train(cfg)
    assert "test/success_rate" in metrics and 0.0 <= metrics["test/success_rate"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["test/success_rate"] == metrics["test/success_rate"]
    assert list((tmp_path / "figures").glob("search_paths_epoch*.png"))  # the plot callback ran


def test_train_then_eval_reports_same_metrics(make_cfg, tmp_path, cache_dir):
    cfg = make_cfg([*DEMO, "trainer.max_epochs=1", "callbacks=default"])
    metrics = train(cfg)
    best = (tmp_path / "checkpoint.txt").read_text().strip()
    assert Path(best).is_file()
    eval_dir = tmp_path / "eval"
    from tests.conftest import FAST, compose_config

    eval_cfg = compose_config("eval", [*FAST, *DEMO, f"ckpt_path={best}"], eval_dir, cache_dir)
    eval_metrics = evaluate(eval_cfg)
    assert eval_metrics["test/success_rate"] == pytest.approx(metrics["test/success_rate"])
    assert (eval_dir / "metrics.json").is_file()


@pytest.mark.parametrize("callbacks", ["default", "[default,weight_average]"])
def test_resume_is_exact(tmp_path, cache_dir, callbacks):
    """1 epoch + resume to 2 epochs == 2 epochs straight: weights, optimizer, scheduler, step; with
    the weight average too (its checkpoint is written with the average swapped in).

    The resumed run writes into a new run folder (as the README's resume command does) and must
    still test the same best epoch: with ``monitor_mode=min`` the straight run's best is epoch 0,
    which a resume that forgot the saved best score would replace by epoch 1."""
    from tests.conftest import FAST, compose_config

    def run(folder, epochs, ckpt=None):
        overrides = [*FAST, *DEMO, f"trainer.max_epochs={epochs}", "monitor_mode=min", f"callbacks={callbacks}", "callbacks.rich_progress_bar=null"]
        metrics = train(compose_config("train", [*overrides, *([f"ckpt_path={ckpt}"] if ckpt else [])], tmp_path / folder, cache_dir))
        last = torch.load(tmp_path / folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        return last, metrics, Path((tmp_path / folder / "checkpoint.txt").read_text())

    straight, straight_metrics, straight_best = run("straight", 2)
    first, _, _ = run("first", 1)
    resumed, resumed_metrics, resumed_best = run("resumed", 2, tmp_path / "first" / "checkpoints" / "last.ckpt")
    assert first["epoch"] == 0 and resumed["epoch"] == straight["epoch"] == 1  # last.ckpt: the last epoch
    assert resumed["global_step"] == straight["global_step"] == 2 * first["global_step"] > 0
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    adam_straight, adam_resumed = straight["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"]
    for index in adam_straight:
        torch.testing.assert_close(adam_resumed[index]["exp_avg"], adam_straight[index]["exp_avg"])
    assert resumed["lr_schedulers"][0] == straight["lr_schedulers"][0]
    # the same best epoch, tested from the resumed run's own folder, with the same numbers
    assert straight_best.name == "epoch_000.ckpt", "the case needs a best epoch before the resume"
    assert resumed_best.name == straight_best.name and resumed_best.parent == tmp_path / "resumed" / "checkpoints"
    assert resumed_metrics["test/success_rate"] == pytest.approx(straight_metrics["test/success_rate"])
    assert (tmp_path / "first" / "checkpoints" / "epoch_000.ckpt").is_file()  # the earlier run keeps its files
    if "weight_average" in callbacks:
        (average_state,) = [v for k, v in straight["callbacks"].items() if "WeightAverage" in k]
        (resumed_state,) = [v for k, v in resumed["callbacks"].items() if "WeightAverage" in k]
        assert resumed_state["updates"] == average_state["updates"] == straight["global_step"]
        for key, value in average_state["average"].items():
            torch.testing.assert_close(resumed_state["average"][key], value, msg=key)
            torch.testing.assert_close(straight["state_dict"][key], value, msg=key)  # saved swapped in


def test_wandb_offline_writes_run_folder(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg([*DEMO, "logger=wandb", "++trainer.fast_dev_run=true"])
    train(cfg)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, f"no offline run under {tmp_path / 'wandb'}"
    import wandb

    assert wandb.run is None  # the task wrapper closed it


def test_ddp_spawn_two_cpu_processes(make_cfg, tmp_path):
    cfg = make_cfg([*DEMO, "trainer=ddp_spawn", "trainer.max_epochs=1", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2", "test=false", "callbacks=none"])
    metrics = train(cfg)
    assert "val/success_rate" in metrics


def test_ddp_inside_multirun_is_refused(tmp_path):
    result = run_module(
        ["benchmarks.train", "-m", *DEMO, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"hydra.sweep.dir={tmp_path}", "extras.print_config=false"],
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "error: SweepConfigError" in result.stderr and "ddp_spawn" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_gives_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-data"
    result = run_module(
        ["benchmarks.train", "experiment=regionsearch/flickrlogos", f"paths.data_dir={missing}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "extras.print_config=false"],
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(missing) in error_lines[0] and "DEEPMATCH_DATA" in error_lines[0]


def test_bad_optimized_metric_is_a_clear_error(tmp_path):
    result = run_module(
        ["benchmarks.train", *DEMO, "++trainer.fast_dev_run=true", "optimized_metric=val/nope", f"hydra.run.dir={tmp_path}", "extras.print_config=false"],
        cwd=REPO,
    )
    assert result.returncode == 1 and "val/nope" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="real MNIST training digits not available")
def test_official_digits_from_data_root(make_cfg):
    import hydra

    cfg = make_cfg(["data=mnist_cluttered", f"paths.data_dir={SHARED_DATA}", "data.digits=official"])
    datamodule = hydra.utils.instantiate(cfg.data)
    pools = datamodule.digit_pools()
    assert len(pools["train"][0]) == 19690 and len(pools["test"][0]) == 5000


@pytest.mark.parametrize(
    ("entry", "overrides", "expected"),
    [
        ("benchmarks.train", ["model.reward=foo"], "reward must be one of"),
        ("benchmarks.eval", [], "eval needs a checkpoint"),
        ("benchmarks.eval", ["ckpt_path=/no/such.ckpt"], "checkpoint not found"),
    ],
)
def test_bad_values_give_one_line(tmp_path, entry, overrides, expected):
    result = run_module([entry, *DEMO, *overrides, f"hydra.run.dir={tmp_path}", "extras.print_config=false"], cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


@pytest.mark.skipif(not (SHARED_DATA / "coil100").is_dir(), reason="COIL-100 not under the data root")
def test_test_only_run_needs_no_validation_metric(tmp_path):
    """``train=false``: an off-the-shelf model is only tested; no optimized_metric error."""
    result = run_module(
        ["benchmarks.train", "model=retrieval_mac", "data=coil100", "train=false", "data.n_test=4", "data.image_size=64", "trainer=cpu", "logger=none", f"paths.data_dir={SHARED_DATA}", f"hydra.run.dir={tmp_path}", "extras.print_config=false"],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 0.0 <= json.loads((tmp_path / "metrics.json").read_text())["test/map"] <= 1.0
