"""The results: the software versions, ``gpu.json`` and its summary ``gpu.md``."""

from __future__ import annotations

import importlib
import json
import logging
import platform
from pathlib import Path

import torch

from benchmarks.gpu_check.plan import FAMILIES, UNITS

log = logging.getLogger("gpu_check")


def versions() -> dict:
    """Python, torch, CUDA, cuDNN and the packages the check uses (None: not installed)."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    for module in ("lightning", "cv2", "hydra", "omegaconf", "kornia", "numpy"):
        try:
            out[module] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            out[module] = None
    return out


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    """``gpu.md``: one table per kind of part, then the parts skipped or failed and why."""
    kind = results["device_kind"]
    parts = results["parts"]
    lines = [
        f"# GPU check: {results['device']}",
        "",
        f"Device `{kind}`: {results['device']}; CPU beside it: {results['cpu']}. "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v) + ".",
        f"Written by `make gpu-check` (`python -m benchmarks.gpu_check`) in {results['total_seconds']} s of a {results['budget_s']:.0f} s budget.",
        "",
        "## Training throughput (items/s; short runs, warm-up steps excluded)",
        "",
        f"| family | items | {kind} | precision | CPU | speed-up | checkpoint on the CPU: same outputs | max abs difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        row = parts.get(f"train_{family}")
        if row is None:
            reason = results["skipped"].get(f"train_{family}") or results["failed"].get(f"train_{family}", "not run")
            lines.append(f"| {family} | {UNITS[family]} | - | - | - | - | - | {reason} |")
            continue
        portable = row.get("portable") or {}
        lines.append(
            f"| {family} | {row['unit']} | {_fmt(row['device']['items_per_s'])} | {row['device']['precision']} | {_fmt(row['cpu']['items_per_s'])} "
            f"| {_fmt(row['speedup_vs_cpu'])} | {portable.get('allclose', '-')} | {_fmt(portable.get('max_abs_difference'), 6)} |"
        )
    search = parts.get("search_speed")
    if search and "skipped" not in search:
        lines += [
            "", f"## Region search on Mixed MNIST ({search['pairs']} test pairs; ms/query)", "",
            f"Compiled on the device (AOTInductor, built in {search.get('compile_s', '-')} s): batch 1 {_fmt(search.get(f'{kind}_compiled_ms_per_query_batch1'), 3)}, "
            f"batched {_fmt(search.get(f'{kind}_compiled_ms_per_query_batched'), 3)} ms/query; the ratios use the faster of eager and compiled.", "",
            f"| search path {kind} batch 1 | batched ({search['batch']}) | search path CPU batch 1 | CPU batched | NCC (CPU) | MTM (CPU) | BBS (CPU) | vs best of MTM/BBS (b1 / batched) | ours / NCC (b1 / batched) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {_fmt(search[f'{kind}_ms_per_query_batch1'], 3)} | {_fmt(search[f'{kind}_ms_per_query_batched'], 3)} | {_fmt(search['cpu_ms_per_query_batch1'], 3)} "
            f"| {_fmt(search['cpu_ms_per_query_batched'], 3)} | {_fmt(search['cpu_ncc_ms_per_query'], 3)} | {_fmt(search['cpu_mtm_ms_per_query'], 2)} | {_fmt(search['cpu_bbs_ms_per_query'], 2)} "
            f"| {search['speedup_vs_best_of_mtm_bbs_batch1']}x / {search['speedup_vs_best_of_mtm_bbs_batched']}x | {search['ratio_to_ncc_batch1']} / {search['ratio_to_ncc_batched']} |",
        ]
    speed = [(name, parts.get(name)) for name in ("descriptor_speed", "retrieval_speed")]
    rows = []
    for name, row in speed:
        if row and "skipped" not in row:
            unit = "patches_per_s" if name == "descriptor_speed" else "images_per_s"
            extra = f"kornia HardNet {_fmt(row.get(f'{kind}_kornia_patches_per_s'))} (ours / kornia {row.get('speed_ratio_vs_kornia', '-')})" if name == "descriptor_speed" else ""
            rows.append(f"| {name.replace('_', ' ')} ({unit.replace('_per_s', '/s')}) | {_fmt(row.get(f'{kind}_{unit}'))} | {_fmt(row.get(f'cpu_{unit}'))} | {extra} |")
    if rows:
        lines += ["", "## Inference throughput", "", f"| what | {kind} | CPU | peer |", "|---|---|---|---|", *rows]
    hp = parts.get("hpatches_evaluator")
    if hp and "skipped" not in hp:
        lines += ["", f"## HPatches evaluator ({hp['patches_per_image']} patches per image, one carried sequence; seconds per task)", "",
                  "| where | " + " | ".join(hp[f"{kind}_seconds"]) + " |", "|---" * (1 + len(hp[f"{kind}_seconds"])) + "|"]
        for where in dict.fromkeys([kind, "cpu"]):
            lines.append(f"| {where} | " + " | ".join(_fmt(s, 3) for s in hp[f"{where}_seconds"].values()) + " |")
    if results["skipped"] or results["failed"]:
        lines += ["", "## Not run", ""]
        lines += [f"- {part}: skipped ({why})" for part, why in results["skipped"].items()]
        lines += [f"- {part}: failed ({why})" for part, why in results["failed"].items()]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "gpu.md").write_text(markdown(results))
    log.info("wrote %s and %s", out_dir / "gpu.json", out_dir / "gpu.md")
