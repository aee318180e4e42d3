"""The runner under concurrency, signals and bad input: own run folders, non-zero exit on SIGTERM,
one clear line before any data work, and a run that says where its results are."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

import hydra
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from benchmarks.train import train
from benchmarks.utils import ConfigError, log_results_line
from tests.conftest import REPO, run_module

DEMO = ["experiment=regionsearch/demo", "data.digits=embedded", "logger=none"]
TINY = [*DEMO, "trainer=cpu", "extras.print_config=false", "data.n_train=64", "data.n_val=32", "data.n_test=32", "data.batch_size=32", "data.eval_batch_size=32"]


def test_runs_started_in_the_same_second_get_their_own_folders(monkeypatch):
    """Two runs whose clocks read the same second (a few microseconds apart) write to two folders."""
    import hydra.core.utils

    ticks = iter(range(1000))

    class SameSecond(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2025, 1, 2, 3, 4, 5, 10 * next(ticks))

    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecond)  # Hydra's ${now:...} resolver
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        configs = [compose(config_name="train", overrides=DEMO, return_hydra_config=True) for _ in range(2)]
        (run_a, sweep_a), (run_b, sweep_b) = [(str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)) for cfg in configs]
    GlobalHydra.instance().clear()
    assert run_a != run_b and sweep_a != sweep_b
    assert "/train/runs/2025-01-02_03-04-05" in run_a and "/train/multiruns/2025-01-02_03-04-05" in sweep_a


def test_sigterm_stops_gracefully_and_exits_non_zero(tmp_path):
    """A scheduler's SIGTERM must not look like success (Lightning's graceful stop exits 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update({"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"})
    command = [sys.executable, "-m", "benchmarks.train", *TINY, "trainer.max_epochs=500", "test=false", "callbacks.rich_progress_bar=null", f"hydra.run.dir={tmp_path}"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "checkpoints" / "last.ckpt").is_file():  # training is under way
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.time() < deadline, "training never wrote a checkpoint"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "last.ckpt" in stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer >= -1 (-1: no limit), got 'abc'"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs must be an integer"),
        ("data.batch_size=-4", "data.batch_size must be an integer >= 1, got -4"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("data.eval_batch_size=0", "data.eval_batch_size must be an integer >= 1"),
        ("data.n_train=many", "data.n_train must be an integer >= 0 or null, got 'many'"),
        ("model.optimizer.lr=-1", "model.optimizer.lr must be a number > 0, got -1"),
        ("model.optimizer.lr=nan", "model.optimizer.lr must be a number > 0"),
    ],
)
def test_bad_values_are_refused_before_any_data_work(make_cfg, monkeypatch, override, expected):
    cfg = make_cfg([*DEMO, override])

    def no_data_work(*args, **kwargs):
        raise AssertionError("instantiated something before checking the config")

    monkeypatch.setattr(hydra.utils, "instantiate", no_data_work)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert expected in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_bad_ckpt_path_is_refused_before_any_data_work(make_cfg, monkeypatch, tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    cfg = make_cfg([*DEMO, f"ckpt_path={path}"])
    monkeypatch.setattr(hydra.utils, "instantiate", lambda *a, **k: pytest.fail("data work before the checkpoint check"))
    with pytest.raises(ValueError, match=str(path)):
        train(cfg)


def test_weights_only_checkpoint_cannot_resume(make_cfg, monkeypatch, tmp_path):
    import torch

    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, path)
    monkeypatch.setattr(hydra.utils, "instantiate", lambda *a, **k: pytest.fail("data work before the checkpoint check"))
    with pytest.raises(ValueError, match="lacks 'epoch'.*last.ckpt"):
        train(make_cfg([*DEMO, f"ckpt_path={path}"]))


@pytest.mark.parametrize(("entry", "content"), [("benchmarks.train", b"PK\x03\x04\x14\x00"), ("benchmarks.eval", b"garbage")])
def test_bad_checkpoint_is_one_line_from_the_command_line(tmp_path, entry, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    result = run_module([entry, *TINY, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CheckpointError" in errors[0] and str(path) in errors[0], result.stderr[-2000:]


def test_a_run_logs_its_config_epochs_metrics_and_where_its_results_are(tmp_path):
    result = run_module(["benchmarks.train", *TINY, "trainer.max_epochs=2", "callbacks.rich_progress_bar=null", f"hydra.run.dir={tmp_path}"], cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    log_text = (tmp_path / "train.log").read_text()
    for expected in ("overrides: experiment=regionsearch/demo", "trainer: max_epochs=2", "epoch 000: ", "epoch 001: ", "val/success_rate=", "final metrics: ", "test/success_rate="):
        assert expected in log_text, log_text
    last_line = log_text.strip().splitlines()[-1]
    assert f"results in {tmp_path}: metrics.json, figures/ (" in last_line
    assert "best checkpoint checkpoints/epoch_00" in last_line, last_line
    assert last_line.split(" - ", 1)[-1] in result.stdout + result.stderr  # printed too


def test_results_line_names_what_exists(tmp_path):
    assert log_results_line(tmp_path) == f"results in {tmp_path}: nothing written"
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "roc_epoch000.png").touch()
    line = log_results_line(tmp_path, best_checkpoint=str(tmp_path / "checkpoints" / "epoch_003.ckpt"))
    assert line == f"results in {tmp_path}: metrics.json, figures/ (1 PNG), best checkpoint checkpoints/epoch_003.ckpt"
