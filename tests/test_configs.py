"""Every config file composes, and every object it describes instantiates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import hydra
import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.utils import instantiate_callbacks, instantiate_loggers

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def test_groups_exist():
    for group in ("data", "model", "trainer", "logger", "callbacks", "paths", "hydra", "debug", "launcher", "hparams_search", "experiment", "benchmark"):
        assert options(group), f"conf/{group} is empty"


@pytest.mark.parametrize("name", options("data"))
def test_data_configs_instantiate(make_cfg, name):
    cfg = make_cfg([f"data={name}"])
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, pl.LightningDataModule)


@pytest.mark.parametrize("name", options("model"))
def test_model_configs_instantiate(make_cfg, name):
    cfg = make_cfg([f"model={name}"])
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, pl.LightningModule)
    optimizer = model.configure_optimizers()
    assert optimizer


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_configs(make_cfg, name):
    cfg = make_cfg([f"trainer={name}"])
    accelerator = cfg.trainer.get("accelerator")
    if accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer._target_.endswith("Trainer")  # composes; needs a GPU to instantiate
        return
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer, pl.Trainer)


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs(make_cfg, name):
    cfg = make_cfg([f"logger={name}"])
    loggers = instantiate_loggers(cfg.get("logger"))
    assert len(loggers) == {"none": 0, "many_loggers": 2}.get(name, 1)


@pytest.mark.parametrize("name", options("callbacks"))
def test_callback_configs(make_cfg, name):
    cfg = make_cfg([f"callbacks={name}"])
    callbacks = instantiate_callbacks(cfg.get("callbacks"), has_logger=True)
    assert all(isinstance(c, pl.Callback) for c in callbacks)
    if name != "none":
        assert callbacks


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_configs_compose(make_cfg, name):
    cfg = make_cfg([f"experiment={name}"])
    assert cfg.optimized_metric.startswith("val/")
    assert cfg.monitor.startswith("val/")
    hydra.utils.instantiate(cfg.model)
    hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize("name", options("debug"))
def test_debug_configs(make_cfg, name):
    cfg = make_cfg([f"debug={name}"])
    assert cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("name", options("hparams_search"))
def test_hparams_search_configs(make_cfg, name):
    cfg = make_cfg([f"hparams_search={name}"])
    assert cfg.optimized_metric
    assert cfg.hydra.sweeper.params


@pytest.mark.parametrize("name", options("launcher"))
def test_launcher_configs(make_cfg, name):
    plugin = "hydra_plugins.hydra_joblib_launcher" if name == "joblib" else "hydra_plugins.hydra_submitit_launcher"
    if importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} not installed (pip install -e .[sweep,slurm])")
    for trainer in ("default", "ddp"):
        cfg = make_cfg([f"launcher={name}", f"trainer={trainer}"])
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # every interpolation resolves
        assert launcher["_target_"].startswith("hydra_plugins.")


@pytest.mark.parametrize("name", options("benchmark"))
def test_benchmark_configs(make_cfg, name):
    cfg = make_cfg([f"benchmark={name}"], config_name="benchmark", fast=False)
    assert cfg.benchmark._target_.startswith("benchmarks.")
    assert cfg.benchmark.output_dir


def test_eval_config_requires_checkpoint(make_cfg):
    cfg = make_cfg(["ckpt_path=x.ckpt"], config_name="eval")
    assert cfg.ckpt_path == "x.ckpt"


def test_family_packages_do_not_import_hydra():
    for package in ("regionsearch", "descriptors", "retrieval"):
        for path in (CONF.parent / package).rglob("*.py"):
            text = path.read_text()
            assert "import hydra" not in text and "from hydra" not in text and "omegaconf" not in text, path
