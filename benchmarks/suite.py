"""What every benchmark suite shares: its output folder and device, and publishing its rows."""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.timing import resolve_device


def software_versions(packages: tuple[str, ...] = ("torch", "lightning", "numpy", "opencv-python-headless", "kornia")) -> dict[str, str]:
    """The installed versions of the packages a result depends on (absent ones left out), to
    tell which installation produced a row: a re-run under other versions need not reproduce it."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    if "torch" in found:
        found["torch"] = torch.__version__  # with its build tag (+cpu, +cu130), which the metadata drops
        # the instruction set torch's CPU kernels (and oneDNN's) were picked for: training on the
        # CPU rounds differently on an AVX2 and an AVX-512 machine, so its numbers reproduce
        # exactly only on the same one
        found["torch_cpu"] = torch.backends.cpu.get_cpu_capability()
    return found


def publish_files(output: Path, publish_dir: str | None, names: list[str]) -> None:
    """Copy a run's result files (``names`` in ``output``) to ``publish_dir``, when set."""
    if not publish_dir:
        return
    publish = Path(publish_dir)
    publish.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(output / name, publish / name)


def prepare_suite(output_dir: str, device: str, num_threads: int | None) -> tuple[Path, torch.device]:
    """Create the run's output folder, cap torch's threads when asked, resolve the device."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if num_threads:
        torch.set_num_threads(num_threads)
    return output, resolve_device(device)


def merge_published(
    publish_dir: str | Path, name: str, rows: list[dict], replaced: Callable[[dict], bool], sort_key: Callable[[dict], Any] | None = None
) -> tuple[Path, list[dict]]:
    """Merge ``rows`` into ``publish_dir/<name>.json``: published rows for which ``replaced`` is
    true give way to the new ones, the others stay (re-running part of a suite keeps the rest);
    ``sort_key`` puts the merged rows back in the suite's order (else kept rows come first)."""
    publish = Path(publish_dir)
    publish.mkdir(parents=True, exist_ok=True)
    published = publish / f"{name}.json"
    kept = [r for r in json.loads(published.read_text()) if not replaced(r)] if published.is_file() else []
    merged = kept + rows
    if sort_key is not None:
        merged.sort(key=sort_key)
    published.write_text(json.dumps(merged, indent=2))
    return publish, merged
