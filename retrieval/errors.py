"""Dataset errors of the retrieval family: the region-search classes, re-exported.

Re-exporting (not subclassing) keeps one hierarchy, so ``benchmarks.utils`` prints any of
them as a single ``error: ...`` line.
"""

from __future__ import annotations

from regionsearch.errors import CorruptDatasetError, DatasetError, DatasetNotFoundError

__all__ = ["CorruptDatasetError", "DatasetError", "DatasetNotFoundError"]
