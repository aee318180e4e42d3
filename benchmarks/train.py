"""Train any model on any datamodule: ``python -m benchmarks.train experiment=regionsearch/translated``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from benchmarks.callbacks import EpochMetricsLog
from benchmarks.utils import (
    check_checkpoint,
    check_config,
    config_summary,
    extras,
    get_metric_value,
    instantiate_callbacks,
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
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (optionally resuming from ``ckpt_path``), then test the best checkpoint.

    Returns every logged ``split/metric`` as floats; also written to ``metrics.json``.
    """
    check_config(cfg)
    check_checkpoint(cfg, resume=bool(cfg.get("train", True)))  # missing, empty, truncated or foreign: one line, before any data work
    log.info("config\n%s", config_summary(cfg))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = [*instantiate_callbacks(cfg.get("callbacks"), has_logger=bool(loggers)), EpochMetricsLog()]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(_loggable(cfg))

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        log.info("training%s", f" (resuming from {cfg.ckpt_path})" if cfg.get("ckpt_path") else "")
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(metric_dict(trainer.callback_metrics))
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        log.info("testing %s", best or "the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(metric_dict(trainer.callback_metrics))
        if best:
            # The benchmark suites and users find the trained weights through this file.
            (Path(cfg.paths.output_dir) / "checkpoint.txt").write_text(best)
    save_metrics(metrics, cfg.paths.output_dir)
    log_final_metrics(metrics)
    log_results_line(cfg.paths.output_dir, best_checkpoint=best)
    return metrics


def _loggable(cfg: DictConfig) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {key: resolved[key] for key in ("data", "model", "trainer", "seed", "tags", "task_name") if key in resolved}


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    extras(cfg)
    metrics = train(cfg)
    # a test-only run (train=false: an off-the-shelf model) logs no validation metric to optimise
    return get_metric_value(metrics, cfg.get("optimized_metric") if cfg.get("train", True) else None)


if __name__ == "__main__":
    main()
