"""``run_check``: every part that fits in the budget, in order, one failure not losing the others."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.gpu_check import REPO
from benchmarks.gpu_check.plan import FAMILIES, MIN_SECONDS, PARTS, Deadline, Sizes
from benchmarks.gpu_check.report import versions, write_results
from benchmarks.gpu_check.speed import (
    descriptor_speed,
    hpatches_evaluator,
    retrieval_speed,
    search_speed,
)
from benchmarks.gpu_check.training import train_family
from core.timing import device_name

log = logging.getLogger("gpu_check")


def run_check(device: str, out_dir: Path, budget_s: float, sizes: Sizes, parts=PARTS, data_dir: Path | None = None, work: Path | None = None) -> dict:
    """Every part that fits in ``budget_s``; writes ``gpu.json`` and ``gpu.md`` into ``out_dir``."""
    deadline = Deadline(budget_s)
    data_dir = Path(data_dir or os.environ.get("DEEPMATCH_DATA") or REPO / ".gpu-carry" / "data")
    work = Path(work or tempfile.mkdtemp(prefix="gpu_check_runs_"))
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # training / timing; off for the comparisons
    results: dict = {
        "device": device_name(device), "device_kind": device, "cpu": device_name("cpu"), "versions": versions(),
        "sizes": asdict(sizes), "budget_s": budget_s, "parts": {}, "skipped": {}, "failed": {},
    }
    state: dict = {}
    runners: dict[str, Callable] = {
        **{f"train_{f}": (lambda f=f: train_family(f, sizes, device, work, data_dir, deadline, state)) for f in FAMILIES},
        "search_speed": lambda: search_speed(sizes, device, state, data_dir, deadline),
        "descriptor_speed": lambda: descriptor_speed(sizes, device, state, data_dir),
        "retrieval_speed": lambda: retrieval_speed(sizes, device, state, data_dir),
        "hpatches_evaluator": lambda: hpatches_evaluator(sizes, device, state, data_dir),
    }
    scale = 1.0 if sizes.train_steps >= 100 else 0.0
    for part in parts:
        need = MIN_SECONDS[part] * scale
        if deadline.left() < need:
            results["skipped"][part] = f"deadline: {deadline.left():.0f} s left, needs ~{need:.0f} s"
            log.warning("skipping %s: %s", part, results["skipped"][part])
            continue
        log.info("part %s (%.0f s left)", part, deadline.left())
        start = time.perf_counter()
        try:
            row = runners[part]()
        except Exception as error:  # noqa: BLE001 (one failed part must not lose the others)
            results["failed"][part] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            log.error("part %s failed:\n%s", part, traceback.format_exc())
            continue
        row["part_seconds"] = round(time.perf_counter() - start, 1)
        results["parts"][part] = row
    results["total_seconds"] = round(budget_s - deadline.left(), 1)
    write_results(results, out_dir)
    return results
