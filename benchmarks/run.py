"""Benchmark suites: ``python -m benchmarks.run benchmark=regionsearch [benchmark.quick=true]``."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from benchmarks.utils import extras, report_user_errors, task_wrapper

log = logging.getLogger(__name__)


@task_wrapper
def run_benchmark(cfg: DictConfig):
    """Instantiate the selected suite's ``_target_`` with its plain arguments and run it."""
    return hydra.utils.instantiate(cfg.benchmark, _convert_="all")


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="benchmark")
@report_user_errors
def main(cfg: DictConfig) -> None:
    extras(cfg)
    run_benchmark(cfg)


if __name__ == "__main__":
    main()
