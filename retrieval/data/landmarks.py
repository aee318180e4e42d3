"""Readers of the landmark test sets in their official layouts.

Oxford5k / Paris6k (old protocol)
    Images (``jpg/`` or the root; Paris's nested ``paris/<landmark>/`` folders are
    flattened) and ``gt_files/<landmark>_<n>_{query,good,ok,junk}.txt``. A query line
    reads ``oxc1_all_souls_000013 136.5 34.1 648.5 955.7`` (Oxford's ``oxc1_`` prefix is
    stripped; Paris has none). ok = good + ok, junk = junk; the query image stays in the
    database, as in the official ``gnd_oxford5k.mat``.
Revisited Oxford / Paris
    ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` (``imlist``, ``qimlist``, ``gnd`` with
    ``bbx`` and ``easy``/``hard``/``junk`` 0-based indices) and ``jpg/<name>.jpg``.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError

from .datasets import (
    DATASET_HINTS,
    RetrievalSet,
    find_images,
    image_folder,
    read_text_lines,
    require_dir,
)

log = logging.getLogger(__name__)

__all__ = ["read_gnd_pickle", "read_oxford_paris", "read_revisited"]


_GT_NAME = re.compile(r"^(?P<landmark>.+)_(?P<number>\d+)_query\.txt$")


def _gt_folder(root: Path, dataset: str) -> Path:
    for name in ("gt_files", "gt_files_170407", "gt", "paris_120310"):
        if (root / name).is_dir() and any((root / name).glob("*_query.txt")):
            return root / name
    if any(root.glob("*_query.txt")):
        return root
    raise DatasetNotFoundError(
        "No ground-truth folder with <landmark>_<n>_query.txt files", root / "gt_files", DATASET_HINTS[dataset]
    )


def _readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types on broken files
        return False


def read_oxford_paris(
    root: str | os.PathLike, dataset: str = "oxford5k", exclude: Iterable[str] = (), drop_unreadable: bool = False
) -> RetrievalSet:
    """Oxford5k or Paris6k, old protocol, from the official images + ``gt_files``
    (or, without ``gt_files``, from cirtorch's ``gnd_<dataset>.pkl`` + ``jpg/``).

    Queries are ordered by landmark, then query number. ``exclude`` holds image names (no
    extension) left out of the database. ``drop_unreadable`` checks every image file and
    leaves out the broken ones (the Paris archives hold 20 corrupt images, which the
    official ``gnd_paris6k`` also leaves out). Ground-truth names not in the database are
    skipped with a warning.
    """
    if dataset not in ("oxford5k", "paris6k"):
        raise ValueError(f"dataset must be oxford5k or paris6k, got {dataset!r}")
    root = require_dir(Path(root).expanduser(), f"{dataset} root", dataset)
    if (root / f"gnd_{dataset}.pkl").is_file() and not any(root.glob("**/*_query.txt")):
        return read_gnd_pickle(root, dataset)  # cirtorch's copy of the official gnd
    gt_dir = _gt_folder(root, dataset)
    image_dir = image_folder(root, dataset)
    excluded = set(exclude)
    database = [p for p in find_images(image_dir, recursive=True) if p.stem not in excluded]
    if drop_unreadable:
        broken = [p for p in database if not _readable(p)]
        if broken:
            log.warning("%s: %d unreadable images left out: %s", dataset, len(broken), ", ".join(p.name for p in broken))
            database = [p for p in database if p not in set(broken)]
    index = {}
    for position, path in enumerate(database):
        if path.stem in index:
            raise CorruptDatasetError(f"Image name {path.stem} appears twice (also {database[index[path.stem]]})", path, DATASET_HINTS[dataset])
        index[path.stem] = position
    query_files = []
    for path in gt_dir.glob("*_query.txt"):
        match = _GT_NAME.match(path.name)
        if match:
            query_files.append((match["landmark"], int(match["number"]), path))
    query_files.sort()
    queries, boxes, gnd, skipped = [], [], [], 0
    for landmark, number, query_path in query_files:
        lines = read_text_lines(query_path, dataset)
        fields = lines[0].split() if lines else []
        if len(fields) != 5:
            raise CorruptDatasetError(
                f"Expected 'name x1 y1 x2 y2' in the query file, got {lines[:1]!r}", query_path, DATASET_HINTS[dataset]
            )
        name = fields[0][len("oxc1_"):] if fields[0].startswith("oxc1_") else fields[0]
        try:
            box = tuple(float(v) for v in fields[1:])
        except ValueError:
            raise CorruptDatasetError(f"Non-numeric query box {fields[1:]}", query_path, DATASET_HINTS[dataset]) from None
        if name not in index:
            raise DatasetNotFoundError(
                f"Query image {name} of {query_path.name} is not in the image folder", image_dir / f"{name}.jpg", DATASET_HINTS[dataset]
            )
        lists = {}
        for kind in ("good", "ok", "junk"):
            names = read_text_lines(gt_dir / f"{landmark}_{number}_{kind}.txt", dataset)
            found = [index[n] for n in names if n in index]
            skipped += len(names) - len(found)
            lists[kind] = np.array(found, dtype=np.int64)
        queries.append(database[index[name]])
        boxes.append(box)
        gnd.append({"ok": np.concatenate([lists["good"], lists["ok"]]), "junk": lists["junk"]})
    if not queries:
        raise DatasetNotFoundError("No <landmark>_<n>_query.txt file", gt_dir, DATASET_HINTS[dataset])
    if skipped:
        log.warning("%s: %d ground-truth names are not in %s and were skipped", dataset, skipped, image_dir)
    return RetrievalSet(dataset, "oxford", database, queries, boxes, gnd)


# --------------------------------------------------------------------------- revisited


def read_gnd_pickle(root: str | os.PathLike, dataset: str) -> RetrievalSet:
    """A set from ``<root>/gnd_<dataset>.pkl`` (revisitop / cirtorch format) and ``jpg/<name>.jpg``.

    ``imlist``/``qimlist`` name the images (no ``.jpg``); ``gnd`` holds per query the
    ``bbx`` and 0-based index lists: ``easy``/``hard``/``junk`` (revisited protocol; the
    queries are not in the database) or ``ok``/``junk`` (cirtorch's old-protocol copies
    ``gnd_oxford5k.pkl`` / ``gnd_paris6k.pkl``; the query stays in the database).
    """
    root = require_dir(Path(root).expanduser(), f"{dataset} root", dataset)
    pkl = root / f"gnd_{dataset}.pkl"
    if not pkl.is_file():
        raise DatasetNotFoundError("Missing ground-truth file", pkl, DATASET_HINTS[dataset])
    try:
        with pkl.open("rb") as handle:
            cfg = pickle.load(handle)
        imlist, qimlist, entries = list(cfg["imlist"]), list(cfg["qimlist"]), list(cfg["gnd"])
    except Exception as exc:  # pickle raises many types on corrupt input
        raise CorruptDatasetError(
            f"Not a ground-truth pickle with imlist/qimlist/gnd ({type(exc).__name__}: {exc})",
            pkl,
            f"Delete it and download it again. {DATASET_HINTS[dataset]}",
        ) from None
    if len(entries) != len(qimlist):
        raise CorruptDatasetError(f"{len(qimlist)} queries but {len(entries)} gnd entries", pkl, DATASET_HINTS[dataset])
    revisited = bool(entries) and "easy" in entries[0]
    keys = ("easy", "hard", "junk") if revisited else ("ok", "junk")
    image_dir = require_dir(root / "jpg", f"{dataset} image folder", dataset)
    database = [image_dir / f"{name}.jpg" for name in imlist]
    queries = [image_dir / f"{name}.jpg" for name in qimlist]
    for path in [*queries, *database]:
        if not path.is_file():
            raise DatasetNotFoundError("Image listed in the ground truth is missing", path, DATASET_HINTS[dataset])
    gnd, boxes = [], []
    for i, entry in enumerate(entries):
        try:
            lists = {k: np.asarray(entry[k], dtype=np.int64).reshape(-1) for k in keys}
            box = tuple(float(v) for v in entry["bbx"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptDatasetError(f"gnd entry {i} lacks bbx/{'/'.join(keys)} ({exc})", pkl, DATASET_HINTS[dataset]) from None
        if any(((v < 0) | (v >= len(database))).any() for v in lists.values()) or len(box) != 4:
            raise CorruptDatasetError(f"gnd entry {i} has an index outside the {len(database)} images or a bad bbx", pkl, DATASET_HINTS[dataset])
        gnd.append(lists)
        boxes.append(box)
    return RetrievalSet(dataset, "revisited" if revisited else "oxford", database, queries, boxes, gnd)


def read_revisited(root: str | os.PathLike, dataset: str = "roxford5k") -> RetrievalSet:
    """Revisited Oxford / Paris from ``gnd_<dataset>.pkl`` and ``jpg/<name>.jpg``.

    ``gnd`` entries keep ``easy``/``hard``/``junk`` (int64 arrays) and the query ``bbx``;
    the queries are not in the database.
    """
    if dataset not in ("roxford5k", "rparis6k"):
        raise ValueError(f"dataset must be roxford5k or rparis6k, got {dataset!r}")
    rset = read_gnd_pickle(root, dataset)
    if rset.protocol != "revisited":
        raise CorruptDatasetError("gnd entries have no easy/hard lists", Path(root) / f"gnd_{dataset}.pkl", DATASET_HINTS[dataset])
    return rset
