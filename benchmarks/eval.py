"""Evaluate a checkpoint: ``python -m benchmarks.eval experiment=regionsearch/translated ckpt_path=...``."""

from __future__ import annotations

import logging

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from benchmarks.utils import (
    ConfigError,
    check_checkpoint,
    check_config,
    config_summary,
    extras,
    instantiate_loggers,
    log_final_metrics,
    log_results_line,
    metric_dict,
    report_user_errors,
    save_metrics,
    task_wrapper,
)

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Load ``ckpt_path`` into the configured model and report the test metrics."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        raise ConfigError("eval needs a checkpoint: add ckpt_path=/path/to/run/checkpoints/best.ckpt")
    check_config(cfg)
    check_checkpoint(cfg, resume=False)  # missing, empty, truncated or foreign: one line, before any data work
    log.info("evaluating %s\n%s", ckpt_path, config_summary(cfg))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = metric_dict(trainer.callback_metrics)
    save_metrics(metrics, cfg.paths.output_dir)
    log_final_metrics(metrics)
    log_results_line(cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    extras(cfg)
    evaluate(cfg)


if __name__ == "__main__":
    main()
