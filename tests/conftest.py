"""Shared fixtures: wandb off, a per-session canvas cache, composed configs with tmp outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEEPMATCH_DATA") or REPO.parent / "shared" / "data")

# Small, fast defaults every composed test config gets (CPU, tiny data, no logger).
FAST = [
    "trainer=cpu",
    "logger=none",
    "extras.print_config=false",
    "data.n_train=256",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=32",
    "data.eval_batch_size=64",
]


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deepmatch-cache")
    os.environ["DEEPMATCH_CACHE"] = str(path)
    return path


def compose_config(config_name: str, overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` like the entry point does, with tmp outputs."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.paths.cache_dir = str(cache_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    def _make(overrides: list[str] = (), config_name: str = "train", fast: bool = True) -> DictConfig:
        return compose_config(config_name, [*(FAST if fast else []), *overrides], tmp_path, cache_dir)

    yield _make
    GlobalHydra.instance().clear()


def run_module(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    """Run ``python -m <args>`` in a subprocess (entry points, multiruns) and return the result."""
    import subprocess

    # Outside any cluster job: a SLURM or torchrun environment would change how Lightning launches.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update({"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
