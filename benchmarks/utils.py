"""Runner plumbing shared by the Hydra entry points: the task wrapper, instantiators,
the DDP + multirun guard, config checks before any data work, one-line user errors, exit
codes for signals, config printing, metrics files and the run's closing summary."""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core.checkpoints import load_checkpoint
from core.errors import CheckpointError, DatasetError

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what, where and how to fix it."""


class SweepConfigError(ConfigError):
    """A configuration that makes the whole sweep invalid: stops it, even inside a multirun."""


# Errors a user fixes by changing data or config: reported as one line, not a stack trace.
USER_ERRORS: tuple[type[BaseException], ...] = (DatasetError, CheckpointError, ConfigError, OmegaConfBaseException)


def user_error(exc: BaseException) -> BaseException | None:
    """The user-facing error behind ``exc``, if any.

    Besides :data:`USER_ERRORS`, a ``ValueError``/``TypeError`` raised by a constructor
    that Hydra instantiated is a bad config value (e.g. ``model.reward=foo``).
    """
    seen = set()
    instantiating = False
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USER_ERRORS) or (instantiating and isinstance(exc, (ValueError, TypeError))):
            return exc
        instantiating = instantiating or isinstance(exc, InstantiationException)
        exc = exc.__cause__ or exc.__context__
    return None


def _multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def report_user_errors(fn: Callable) -> Callable:
    """Entry-point decorator: print one ``error: ...`` line and exit 1 for user errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SIGTERMException:
            # Lightning stops gracefully, then raises SystemExit with code 0: a scheduler would
            # take the killed job for a finished one. Exit like a process killed by SIGTERM.
            last = _last_checkpoint(args[0] if args else None)
            log.error("stopped by SIGTERM")
            print(f"error: stopped by SIGTERM{f'; resume with ckpt_path={last}' if last else ''}", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        except Exception as exc:
            cause = user_error(exc)
            # In a multirun the sweeper decides what a failed job means (max_failure_rate):
            # SystemExit would end the whole sweep, so only single runs exit here.
            if cause is None or (_multirun() and not isinstance(cause, SweepConfigError)):
                raise
            message = " ".join(str(cause).split())  # OmegaConf errors span several lines
            print(f"error: {type(cause).__name__}: {message}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper


def _last_checkpoint(cfg: Any) -> Path | None:
    try:
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    except Exception:  # not a run config, or no output folder yet
        return None
    return path if path.is_file() else None


def task_wrapper(task: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Run a task; log failures to the run's log file; always close wandb.

    Without ``wandb.finish()`` every job of a multirun would log into the first job's run.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> dict:
        try:
            return task(cfg)
        except Exception as exc:
            if user_error(exc) is None:
                log.exception("task failed")
            raise
        finally:
            close_wandb()

    return wrapper


def close_wandb() -> None:
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        log.info("closing wandb run %s", wandb.run.id)
        wandb.finish()


def launched_externally() -> bool:
    """True when torchrun or SLURM's srun started the processes (Lightning then does not re-launch)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def _uses_subprocess_ddp(trainer_cfg: DictConfig) -> bool:
    """Lightning's subprocess launcher runs for ddp (or auto) strategies on several devices or nodes."""
    strategy = trainer_cfg.get("strategy", "auto")
    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy).lower()
    if any(word in name for word in ("spawn", "fork", "notebook")) or not ("ddp" in name or name == "auto"):
        return False
    devices = trainer_cfg.get("devices", 1)
    several = (
        devices in (-1, "-1", "auto")
        or (str(devices).isdigit() and int(devices) > 1)
        or (OmegaConf.is_list(devices) and len(devices) > 1)
    )
    return several or int(trainer_cfg.get("num_nodes", 1) or 1) > 1


def check_ddp_multirun(cfg: DictConfig) -> None:
    """Stop a Hydra multirun that would use Lightning's subprocess DDP launcher.

    Lightning re-launches every rank from ``sys.argv``; with ``-m`` each rank then runs
    its own sweep (and under Optuna samples its own hyperparameters), silently.
    """
    if "trainer" not in cfg or launched_externally():
        return
    if _multirun() and _uses_subprocess_ddp(cfg.trainer):
        raise SweepConfigError(
            "trainer.strategy=ddp with several devices cannot run inside a Hydra multirun (every rank would "
            "re-run the whole sweep). Use trainer=ddp_spawn, launch each job with torchrun, or sweep with "
            "launcher=submitit_slurm (one SLURM task per device)"
        )


# Config values checked before any data work: (dotted key, allows None, test, what it must be).
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


_TRAINER_CHECKS = {
    "max_epochs": (lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1: no limit)"),
    "min_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "max_steps": (lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1: no limit)"),
    "min_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "num_nodes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "check_val_every_n_epoch": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "log_every_n_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "gradient_clip_val": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}
_FRACTION_OR_COUNT = (lambda v: (_is_int(v) and v >= 0) or (_is_number(v) and 0.0 <= v <= 1.0), "an integer >= 0 or a fraction in [0, 1]")
_OPTIMIZER_CHECKS = {
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def _data_check(key: str):
    if key.endswith("batch_size"):
        return (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
    if key == "num_workers":
        return (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    if key.startswith("n_"):
        return (lambda v: _is_int(v) and v >= 0, "an integer >= 0 or null")
    return None


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would fail (or mean nothing) late, with one line naming the key.

    Checked: the trainer's counts, the data's sizes (``*batch_size``, ``n_*``, ``num_workers``),
    the optimizer's ``lr`` / ``weight_decay`` / ``momentum``. Runs before any data work.
    """
    checks: list[tuple[str, Any, tuple]] = []
    trainer = cfg.get("trainer") or {}
    for key, check in _TRAINER_CHECKS.items():
        checks.append((f"trainer.{key}", trainer.get(key), check))
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches"):
        checks.append((f"trainer.{key}", trainer.get(key), _FRACTION_OR_COUNT))
    for key, value in (cfg.get("data") or {}).items():
        check = _data_check(str(key))
        if check and not isinstance(value, (DictConfig, list)) and not OmegaConf.is_list(value):
            checks.append((f"data.{key}", value, check))
    optimizer = (cfg.get("model") or {}).get("optimizer")
    if isinstance(optimizer, DictConfig):
        for key, check in _OPTIMIZER_CHECKS.items():
            checks.append((f"model.optimizer.{key}", optimizer.get(key), check))
    for key, value, (is_valid, expected) in checks:
        if value is not None and not is_valid(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def check_checkpoint(cfg: DictConfig, resume: bool) -> None:
    """Refuse a missing, empty, truncated or foreign ``ckpt_path`` before any data work.

    ``resume``: training continues from it, so it must hold the optimizer and loop states
    (a weights-only checkpoint cannot resume).
    """
    path = cfg.get("ckpt_path")
    if not path:
        return
    if resume:
        keys = ("state_dict", "epoch", "global_step", "optimizer_states", "loops")
        hint = "resuming needs a full training checkpoint such as <run folder>/checkpoints/last.ckpt"
    else:
        keys = ("state_dict",)
        hint = "give a checkpoint written by python -m benchmarks.train (<run folder>/checkpoints/*.ckpt)"
    load_checkpoint(path, require=keys, hint=hint, mmap=True)


def extras(cfg: DictConfig) -> None:
    """Checks and conveniences before a task: DDP guard, warnings filter, config tree."""
    check_ddp_multirun(cfg)
    if cfg.get("extras", {}).get("ignore_warnings"):
        import warnings

        warnings.filterwarnings("ignore")
    if cfg.get("extras", {}).get("print_config", True):
        print_config_tree(cfg)


@rank_zero_only
def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Print the resolved config as a rich tree and save it next to the run's outputs."""
    from rich import print as rich_print
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key))
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml"))
    rich_print(tree)
    output_dir = save_to or cfg.get("paths", {}).get("output_dir")
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "config_tree.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_callbacks(cfg: DictConfig | None, has_logger: bool) -> list[pl.Callback]:
    callbacks = []
    for name, entry in (cfg or {}).items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            continue
        # LearningRateMonitor refuses to run without a logger.
        if "LearningRateMonitor" in entry._target_ and not has_logger:
            log.info("skipping callback %s: no logger", name)
            continue
        callbacks.append(hydra.utils.instantiate(entry))
    return callbacks


def instantiate_loggers(cfg: DictConfig | None) -> list:
    return [hydra.utils.instantiate(entry) for entry in (cfg or {}).values() if isinstance(entry, DictConfig) and "_target_" in entry]


def metric_dict(metrics: dict[str, Any]) -> dict[str, float]:
    """Tensors and numbers -> floats (for JSON and sweepers)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.item())
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


@rank_zero_only
def save_metrics(metrics: dict[str, float], output_dir: str | Path, name: str = "metrics.json") -> Path:
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return path


def get_metric_value(metrics: dict[str, float], metric_name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error when the experiment never logged it."""
    if not metric_name:
        return None
    if metric_name not in metrics:
        raise ConfigError(
            f"optimized_metric {metric_name!r} was not logged; logged metrics: {sorted(metrics)}. "
            "Set optimized_metric to one of them (experiments name it for you)"
        )
    value = float(metrics[metric_name])
    return value if math.isfinite(value) else float("nan")


def config_summary(cfg: DictConfig) -> str:
    """A few lines for the run's log: the command line's overrides and what they selected."""
    lines = []
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without Hydra's runtime (tests, suites)
        overrides = []
    lines.append(f"overrides: {' '.join(overrides) if overrides else '(none)'}")
    for group in ("data", "model"):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            plain = {k: v for k, v in node.items() if not isinstance(v, (DictConfig, list)) and not OmegaConf.is_list(v) and k != "_target_"}
            lines.append(f"{group}: {node.get('_target_', '?')} " + " ".join(f"{k}={v}" for k, v in plain.items()))
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig):
        keys = ("max_epochs", "accelerator", "devices", "precision", "strategy")
        lines.append("trainer: " + " ".join(f"{k}={trainer.get(k)}" for k in keys if trainer.get(k) is not None))
    run = {k: cfg.get(k) for k in ("seed", "monitor", "monitor_mode", "ckpt_path") if cfg.get(k) is not None}
    lines.append(" ".join(f"{k}={v}" for k, v in run.items()))
    return "\n".join(f"  {line}" for line in lines)


@rank_zero_only
def log_final_metrics(metrics: dict[str, float]) -> None:
    log.info("final metrics: %s", ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())) or "(none)")


@rank_zero_only
def log_results_line(output_dir: str | Path, best_checkpoint: str = "") -> str:
    """The run's last line: where its results are (folder, metrics.json, figures/, best checkpoint)."""
    output_dir = Path(output_dir)
    parts = []
    if (output_dir / "metrics.json").is_file():
        parts.append("metrics.json")
    figures = sorted((output_dir / "figures").glob("*.png"))
    if figures:
        parts.append(f"figures/ ({len(figures)} PNG)")
    if best_checkpoint:
        best = Path(best_checkpoint)
        parts.append(f"best checkpoint {best.relative_to(output_dir) if best.is_relative_to(output_dir) else best}")
    line = f"results in {output_dir}: {', '.join(parts) or 'nothing written'}"
    log.info(line)
    return line
