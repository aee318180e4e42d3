"""Dataset errors of the descriptor family: the classes of :mod:`regionsearch.errors`, so the
runner prints them as one ``error: ...`` line that names the path and how to get the data."""

from __future__ import annotations

from regionsearch.errors import CorruptDatasetError, DatasetError, DatasetNotFoundError

__all__ = ["DatasetError", "DatasetNotFoundError", "CorruptDatasetError"]
