"""The device a benchmark suite runs on, and how its tables name it."""

from __future__ import annotations

import platform

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the GPU when one is visible, else the CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 ...`` or ``CPU (x86_64, 2 threads)``: the label every results table carries."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
