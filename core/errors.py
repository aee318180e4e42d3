"""Errors that a user can act on: they name the path and how to get the data or fix the file."""

from __future__ import annotations

from pathlib import Path


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or corrupt.

    The message always names the offending path and says how to obtain the data,
    so the runner can print it as one line instead of a stack trace.
    """

    def __init__(self, what: str, path: str | Path, hint: str = "") -> None:
        self.what = what
        self.path = Path(path)
        self.hint = hint
        message = f"{what}: {self.path}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A file or folder of a dataset does not exist."""


class CorruptDatasetError(DatasetError, ValueError):
    """A dataset file exists but cannot be parsed (truncated, wrong format, bad checksum)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, truncated, not a PyTorch file, or
    written by another family. The message names the path (never suggests ``weights_only=False``)."""

    def __init__(self, what: str, path: str | Path, hint: str = "") -> None:
        self.what = what
        self.path = Path(path)
        self.hint = hint
        message = f"{what}: {self.path}"
        if hint:
            message += f". {hint}"
        super().__init__(message)


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint file at the path."""


class WeightsNotFoundError(DatasetNotFoundError):
    """Pretrained weights are neither installed nor in the cache, and cannot be downloaded (offline)."""
