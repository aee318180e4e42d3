"""Readers of the object and photo-collection test sets, and of grouped image sets.

Holidays
    ``jpg/<imno>.jpg``; queries are the images with ``imno % 100 == 0``; group
    ``imno // 100``; the query is excluded from its own results (junk).
UKBench
    ``full/ukbench00000.jpg`` ...; groups of 4 consecutive images; every image is a query.
Folder of groups
    ``<root>/<group>/<image>``; the first ``queries_per_group`` images (sorted) of each group
    are held out as queries, the rest is the database.
COIL-100
    ``obj{O}__{A}.png``: one object = one group; the view at ``query_angle`` is the query,
    the other views are the database.
FlickrLogos-27
    Parsed by :func:`core.readers.flickrlogos.read_flickrlogos27`; the query is a logo box crop,
    positives are the other images showing the brand, the query's own image is junk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.readers.flickrlogos import FLICKRLOGOS27_HINT, read_flickrlogos27

from .datasets import (
    DATASET_HINTS,
    GroupedImages,
    RetrievalSet,
    find_images,
    groups_gnd,
    image_folder,
    require_dir,
)

__all__ = [
    "coil100_angles",
    "coil100_items",
    "flickrlogos27_items",
    "folder_items",
    "read_coil100",
    "read_flickrlogos27_retrieval",
    "read_folder",
    "read_holidays",
    "read_ukbench",
]


# --------------------------------------------------------------------------- Holidays / UKBench


def read_holidays(root: str | os.PathLike, image_dir: str | None = None) -> RetrievalSet:
    """INRIA Holidays: ``jpg/<imno>.jpg``; queries ``imno % 100 == 0``; group ``imno // 100``.

    ``image_dir`` selects another folder under ``root`` (e.g. a rotated/upright copy).
    The query is in the database and is excluded from its own results (junk).
    """
    root = require_dir(Path(root).expanduser(), "Holidays root", "holidays")
    folder = require_dir(root / image_dir, "Holidays image folder", "holidays") if image_dir else image_folder(root, "holidays")
    database = find_images(folder, recursive=False)
    try:
        numbers = np.array([int(p.stem) for p in database], dtype=np.int64)
    except ValueError:
        bad = next(p for p in database if not p.stem.isdigit())
        raise CorruptDatasetError("Holidays image names must be numbers like 100000.jpg", bad, DATASET_HINTS["holidays"]) from None
    if not len(database):
        raise DatasetNotFoundError("No Holidays images", folder, DATASET_HINTS["holidays"])
    groups = numbers // 100
    query_positions = np.flatnonzero(numbers % 100 == 0)
    query_groups = groups[query_positions]
    gnd = groups_gnd(groups, query_groups, query_positions.tolist())
    return RetrievalSet(
        "holidays", "holidays", database, [database[i] for i in query_positions], [None] * len(query_positions),
        gnd, groups, query_groups, extra={"query_in_database": query_positions},
    )


_UKB_NAME = re.compile(r"^ukbench(\d{5})$")


def read_ukbench(root: str | os.PathLike) -> RetrievalSet:
    """UKBench: ``full/ukbench%05d.jpg``; image ``n`` is in group ``n // 4``; every image is a query."""
    root = require_dir(Path(root).expanduser(), "UKBench root", "ukbench")
    folder = image_folder(root, "ukbench", candidates=("full", "jpg"))
    database = [p for p in find_images(folder, recursive=False) if _UKB_NAME.match(p.stem)]
    if not database:
        raise DatasetNotFoundError("No ukbenchNNNNN.jpg images", folder, DATASET_HINTS["ukbench"])
    numbers = np.array([int(_UKB_NAME.match(p.stem)[1]) for p in database], dtype=np.int64)
    groups = numbers // 4
    positions = list(range(len(database)))
    gnd = groups_gnd(groups, groups, positions)
    return RetrievalSet(
        "ukbench", "ukbench", database, list(database), [None] * len(database), gnd, groups, groups.copy(),
        extra={"query_in_database": np.arange(len(database))},
    )


def _grouped_set(name: str, items: GroupedImages, is_query: np.ndarray, groups: Iterable[int] | None) -> RetrievalSet:
    """Queries = items flagged ``is_query``; database = the others; both limited to ``groups``."""
    keep = np.ones(len(items), dtype=bool) if groups is None else np.isin(items.groups, np.asarray(list(groups)))
    database_idx = np.flatnonzero(keep & ~is_query)
    query_idx = np.flatnonzero(keep & is_query)
    database_groups = items.groups[database_idx]
    query_groups = items.groups[query_idx]
    gnd = groups_gnd(database_groups, query_groups, [None] * len(query_idx))
    return RetrievalSet(
        name, "groups", [items.paths[i] for i in database_idx], [items.paths[i] for i in query_idx],
        [items.boxes[i] for i in query_idx], gnd, database_groups, query_groups,
        extra={"group_names": items.group_names},
    )


def folder_items(root: str | os.PathLike) -> GroupedImages:
    """Every image of ``<root>/<group>/<image>`` with its group (groups sorted by name)."""
    root = require_dir(Path(root).expanduser(), "Folder-of-groups root", "folder")
    group_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, groups = [], []
    for g, folder in enumerate(group_dirs):
        images = find_images(folder, recursive=True)
        paths += images
        groups += [g] * len(images)
    if not paths:
        raise DatasetNotFoundError("No <group>/<image> files", root, DATASET_HINTS["folder"])
    return GroupedImages(paths, np.array(groups, dtype=np.int64), [None] * len(paths), [p.name for p in group_dirs])


def read_folder(root: str | os.PathLike, queries_per_group: int = 1, groups: Iterable[int] | None = None) -> RetrievalSet:
    """Folder of groups: the first ``queries_per_group`` images of each group are the queries."""
    items = folder_items(root)
    is_query = np.zeros(len(items), dtype=bool)
    for g in np.unique(items.groups):
        members = np.flatnonzero(items.groups == g)
        if len(members) > queries_per_group:  # a group needs a database image to be queried
            is_query[members[:queries_per_group]] = True
    return _grouped_set("folder", items, is_query, groups)


_COIL_NAME = re.compile(r"^obj(?P<object>\d+)__(?P<angle>\d+)$")


def coil100_items(root: str | os.PathLike) -> GroupedImages:
    """COIL-100 views ``obj{O}__{A}.png`` grouped by object (group names ``obj{O}``),
    sorted by object then angle; :func:`coil100_angles` gives each view's angle."""
    root = require_dir(Path(root).expanduser(), "COIL-100 folder", "coil100")
    found = []
    for path in find_images(root, recursive=False):
        match = _COIL_NAME.match(path.stem)
        if match:
            found.append((int(match["object"]), int(match["angle"]), path))
    if not found:
        raise DatasetNotFoundError("No obj{O}__{A}.png files", root, DATASET_HINTS["coil100"])
    found.sort()
    objects = sorted({o for o, _, _ in found})
    group_of = {o: g for g, o in enumerate(objects)}
    return GroupedImages(
        [p for _, _, p in found],
        np.array([group_of[o] for o, _, _ in found], dtype=np.int64),
        [None] * len(found),
        [f"obj{o}" for o in objects],
    )


def coil100_angles(items: GroupedImages) -> np.ndarray:
    """The turntable angle (degrees) of every COIL-100 item."""
    return np.array([int(_COIL_NAME.match(p.stem)["angle"]) for p in items.paths], dtype=np.int64)


def read_coil100(root: str | os.PathLike, query_angle: int = 0, groups: Iterable[int] | None = None) -> RetrievalSet:
    """COIL-100: per object the view at ``query_angle`` is the query, the other views the database."""
    items = coil100_items(root)
    is_query = coil100_angles(items) == query_angle
    if not is_query.any():
        raise ValueError(f"no COIL-100 view has angle {query_angle}")
    return _grouped_set("coil100", items, is_query, groups)


def flickrlogos27_items(root: str | os.PathLike, min_size: float = 10) -> GroupedImages:
    """Every FlickrLogos-27 logo box as a crop item, grouped by brand (sorted names)."""
    annotations = read_flickrlogos27(root, min_size=min_size)
    if not annotations:
        raise CorruptDatasetError("No logo box in the annotation", Path(root), FLICKRLOGOS27_HINT)
    brands = sorted({a.brand for a in annotations})
    group_of = {b: g for g, b in enumerate(brands)}
    return GroupedImages(
        [a.image_path for a in annotations],
        np.array([group_of[a.brand] for a in annotations], dtype=np.int64),
        [tuple(a.box) for a in annotations],
        brands,
    )


def read_flickrlogos27_retrieval(
    root: str | os.PathLike,
    groups: Iterable[int] | None = None,
    queries_per_brand: int = 1,
    min_size: float = 10,
) -> RetrievalSet:
    """FlickrLogos-27 logo retrieval with boxes, like the Oxford query protocol.

    Database: every annotated image. Queries: per brand in ``groups`` (brand ids in sorted
    brand order; all when None) its ``queries_per_brand`` largest boxes from distinct
    images (ties by path). Positives: the other images showing the brand; junk: the query's
    own image. Images of other brands are in the database as distractors.
    """
    items = flickrlogos27_items(root, min_size=min_size)
    database = sorted(set(items.paths))
    position = {p: i for i, p in enumerate(database)}
    brands_of_image: dict[int, set[int]] = {}
    for path, g in zip(items.paths, items.groups.tolist()):
        brands_of_image.setdefault(position[path], set()).add(g)
    wanted = sorted(set(np.unique(items.groups).tolist()) if groups is None else set(int(g) for g in groups))
    queries, boxes, gnd, query_groups = [], [], [], []
    for g in wanted:
        members = [i for i in np.flatnonzero(items.groups == g)]
        members.sort(key=lambda i: (-(items.boxes[i][2] - items.boxes[i][0]) * (items.boxes[i][3] - items.boxes[i][1]), str(items.paths[i])))
        showing = np.array(sorted(i for i, bs in brands_of_image.items() if g in bs), dtype=np.int64)
        used: set[Path] = set()
        for i in members:
            if len(used) >= queries_per_brand or len(showing) < 2:
                break
            if items.paths[i] in used:
                continue
            used.add(items.paths[i])
            own = position[items.paths[i]]
            queries.append(items.paths[i])
            boxes.append(items.boxes[i])
            gnd.append({"ok": showing[showing != own], "junk": np.array([own], dtype=np.int64)})
            query_groups.append(g)
    database_groups = np.array([min(brands_of_image[i]) for i in range(len(database))], dtype=np.int64)
    return RetrievalSet(
        "flickrlogos27", "groups", database, queries, boxes, gnd, database_groups,
        np.array(query_groups, dtype=np.int64), extra={"group_names": items.group_names},
    )
