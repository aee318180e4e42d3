"""Device choice, the device label every results table carries, and a synchronised timer."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> the GPU when one is visible, else the CPU; anything else as torch spells it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device | str) -> str:
    """``NVIDIA H100 ...`` or ``CPU (x86_64, 2 threads)``: the label every results table carries."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_median(fn: Callable[[], Any], repeats: int = 1, device: torch.device | str | None = None) -> tuple[float, Any]:
    """``(median seconds over repeats, last result)``, synchronising the GPU around each call."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result
