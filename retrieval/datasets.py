"""Readers for image-retrieval test sets in their official layouts, and grouped image sets.

Every reader returns a :class:`RetrievalSet`: database image paths, query image paths
with their boxes (queries are cropped to the box when loaded), per-query ground truth and
the evaluation protocol. Readers only list and check files; images are decoded by the
datamodules. Missing or unparsable files raise :class:`~retrieval.errors.DatasetError`
subclasses that name the path and say how to get the data.

Sets and layouts
----------------
Oxford5k / Paris6k (old protocol)
    Images (``jpg/`` or the root; Paris's nested ``paris/<landmark>/`` folders are
    flattened) and ``gt_files/<landmark>_<n>_{query,good,ok,junk}.txt``. A query line
    reads ``oxc1_all_souls_000013 136.5 34.1 648.5 955.7`` (Oxford's ``oxc1_`` prefix is
    stripped; Paris has none). ok = good + ok, junk = junk; the query image stays in the
    database, as in the official ``gnd_oxford5k.mat``.
Revisited Oxford / Paris
    ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` (``imlist``, ``qimlist``, ``gnd`` with
    ``bbx`` and ``easy``/``hard``/``junk`` 0-based indices) and ``jpg/<name>.jpg``.
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
    Parsed by :func:`regionsearch.logos.read_flickrlogos27`; the query is a logo box crop,
    positives are the other images showing the brand, the query's own image is junk.
Distractors
    Flickr100k (Oxford105k / Paris106k) or R1M (``revisitop1m.txt`` + ``jpg/``) folders,
    appended after the database by :meth:`RetrievalSet.with_distractors`; never positives.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.readers.flickrlogos import FLICKRLOGOS27_HINT, read_flickrlogos27

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_HINTS",
    "DATASET_URLS",
    "GroupedImages",
    "RetrievalSet",
    "coil100_angles",
    "coil100_items",
    "find_images",
    "flickrlogos27_items",
    "folder_items",
    "read_coil100",
    "read_distractors",
    "read_flickrlogos27_retrieval",
    "read_folder",
    "read_gnd_pickle",
    "read_holidays",
    "read_oxford_paris",
    "read_revisited",
    "read_ukbench",
    "split_groups",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")

#: Official download locations (no machine here reaches them; users with a network can).
DATASET_URLS = {
    "oxford5k": [
        "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/gt_files_170407.tgz",
    ],
    "paris6k": [
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_120310.tgz",
    ],
    "roxford5k": ["http://cmp.felk.cvut.cz/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl"],
    "rparis6k": ["http://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl"],
    "holidays": [
        "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg1.tar.gz",
        "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg2.tar.gz",
    ],
    "ukbench": ["https://archive.org/download/ukbench/ukbench.zip"],
    "flickr100k": [
        "http://www.robots.ox.ac.uk/~vgg/data/oxbuildings/ox100k/oxc1_100k.part01.rar (.. part40)"
    ],
    "r1m": [
        "http://ptak.felk.cvut.cz/revisitop/revisitop1m/revisitop1m.txt",
        "http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.{1..100}.tar.gz",
    ],
}

DATASET_HINTS = {
    "oxford5k": (
        f"Download {DATASET_URLS['oxford5k'][0]} into <root>/jpg and {DATASET_URLS['oxford5k'][1]} "
        "into <root>/gt_files, with <root> = <data root>/oxford5k (or cirtorch's "
        "http://cmp.felk.cvut.cz/cnnimageretrieval/data/test/oxford5k/gnd_oxford5k.pkl into <root>)"
    ),
    "paris6k": (
        "Download paris_1-v1.tgz and paris_2-v1.tgz (images) into <root>/jpg and paris_120310.tgz "
        "(ground truth) into <root>/gt_files from https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/, "
        "with <root> = <data root>/paris6k"
    ),
    "roxford5k": (
        f"Download {DATASET_URLS['roxford5k'][0]} into <data root>/roxford5k and the Oxford5k images "
        f"({DATASET_URLS['oxford5k'][0]}) into <data root>/roxford5k/jpg"
    ),
    "rparis6k": (
        f"Download {DATASET_URLS['rparis6k'][0]} into <data root>/rparis6k and the Paris6k images "
        "(paris_1-v1.tgz, paris_2-v1.tgz, flattened) into <data root>/rparis6k/jpg"
    ),
    "holidays": (
        "Download jpg1.tar.gz and jpg2.tar.gz from ftp://ftp.inrialpes.fr/pub/lear/douze/data/ and "
        "extract both into <data root>/holidays (they create jpg/)"
    ),
    "ukbench": f"Download {DATASET_URLS['ukbench'][0]} and extract it into <data root>/ukbench (it creates full/)",
    "flickr100k": (
        f"Download and unrar {DATASET_URLS['flickr100k'][0]} into a folder and pass it as a distractor folder"
    ),
    "r1m": (
        "Download revisitop1m.txt and the 100 jpg tarballs from http://ptak.felk.cvut.cz/revisitop/revisitop1m/ "
        "into a folder (revisitop1m.txt + jpg/) and pass it as a distractor folder"
    ),
    "coil100": (
        "COIL-100 (Columbia Object Image Library) files obj{O}__{A}.png belong in <data root>/coil100"
    ),
    "flickrlogos27": FLICKRLOGOS27_HINT,
    "folder": "Pass a folder laid out as <root>/<group>/<image>",
}


@dataclass
class RetrievalSet:
    """A retrieval test set: database, queries (with boxes) and ground truth.

    ``gnd[i]`` has ``ok`` and ``junk`` index arrays into ``database`` (``revisited`` sets
    have ``easy``/``hard``/``junk`` instead). ``protocol`` selects the metrics:
    ``oxford`` (old protocol), ``revisited`` (E/M/H), ``holidays``, ``ukbench`` (N-S) or
    ``groups`` (mAP over group membership). ``database_groups``/``query_groups`` are set
    where groups exist (-1 for distractors).
    """

    name: str
    protocol: str
    database: list[Path]
    queries: list[Path]
    query_boxes: list[tuple[float, float, float, float] | None]
    gnd: list[dict[str, np.ndarray]]
    database_groups: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    distractors: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.queries) == len(self.query_boxes) == len(self.gnd)):
            raise ValueError("queries, query_boxes and gnd must have the same length")

    def __len__(self) -> int:
        return len(self.queries)

    def with_distractors(self, paths: Sequence[Path]) -> RetrievalSet:
        """The same set with ``paths`` appended to the database (after every base image)."""
        paths = list(paths)
        groups = self.database_groups
        if groups is not None:
            groups = np.concatenate([groups, np.full(len(paths), -1, dtype=groups.dtype)])
        return replace(
            self,
            database=[*self.database, *paths],
            database_groups=groups,
            distractors=self.distractors + len(paths),
        )

    def first_queries(self, n: int | None) -> RetrievalSet:
        """The set restricted to its first ``n`` queries (all when None)."""
        if n is None or n >= len(self.queries):
            return self
        if n < 0:
            raise ValueError(f"the number of queries must be >= 0, got {n}")
        groups = None if self.query_groups is None else self.query_groups[:n]
        return replace(
            self,
            queries=self.queries[:n],
            query_boxes=self.query_boxes[:n],
            gnd=self.gnd[:n],
            query_groups=groups,
        )


@dataclass
class GroupedImages:
    """Images (or boxes of images) with a group label each: training material.

    ``boxes[i]`` is ``None`` for a whole image or ``(x1, y1, x2, y2)`` for a crop.
    ``group_names[g]`` names group id ``g``.
    """

    paths: list[Path]
    groups: np.ndarray
    boxes: list[tuple[float, float, float, float] | None]
    group_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def select_groups(self, keep: Iterable[int]) -> GroupedImages:
        keep = set(int(g) for g in keep)
        mask = [int(g) in keep for g in self.groups]
        return GroupedImages(
            [p for p, m in zip(self.paths, mask) if m],
            self.groups[np.asarray(mask, dtype=bool)] if len(mask) else self.groups,
            [b for b, m in zip(self.boxes, mask) if m],
            self.group_names,
        )


# --------------------------------------------------------------------------- helpers


def _require_dir(path: Path, what: str, dataset: str) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what} not found", path, DATASET_HINTS[dataset])
    return path


def _read_text_lines(path: Path, dataset: str) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError("Missing ground-truth file", path, DATASET_HINTS[dataset])
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as exc:
        raise CorruptDatasetError(f"Unreadable text file ({exc})", path, DATASET_HINTS[dataset]) from None


def find_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` sorted by path (hidden files skipped)."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(
        p for p in pattern if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _image_folder(root: Path, dataset: str, candidates: Sequence[str] = ("jpg", "images")) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    if find_images(root, recursive=False):
        return root
    raise DatasetNotFoundError(
        f"No image folder ({', '.join(candidates)}/) or images found", root / candidates[0], DATASET_HINTS[dataset]
    )


def _groups_gnd(database_groups: np.ndarray, query_groups: np.ndarray, query_in_database: Sequence[int | None]):
    """ok = database images of the query's group; junk = the query's own image if it is there."""
    gnd = []
    for group, own in zip(query_groups.tolist(), query_in_database):
        ok = np.flatnonzero(database_groups == group)
        junk = np.array([], dtype=np.int64)
        if own is not None:
            ok = ok[ok != own]
            junk = np.array([own], dtype=np.int64)
        gnd.append({"ok": ok.astype(np.int64), "junk": junk})
    return gnd


# --------------------------------------------------------------------------- Oxford / Paris

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
    root = _require_dir(Path(root).expanduser(), f"{dataset} root", dataset)
    if (root / f"gnd_{dataset}.pkl").is_file() and not any(root.glob("**/*_query.txt")):
        return read_gnd_pickle(root, dataset)  # cirtorch's copy of the official gnd
    gt_dir = _gt_folder(root, dataset)
    image_dir = _image_folder(root, dataset)
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
        lines = _read_text_lines(query_path, dataset)
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
            names = _read_text_lines(gt_dir / f"{landmark}_{number}_{kind}.txt", dataset)
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
    root = _require_dir(Path(root).expanduser(), f"{dataset} root", dataset)
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
    image_dir = _require_dir(root / "jpg", f"{dataset} image folder", dataset)
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


# --------------------------------------------------------------------------- Holidays / UKBench


def read_holidays(root: str | os.PathLike, image_dir: str | None = None) -> RetrievalSet:
    """INRIA Holidays: ``jpg/<imno>.jpg``; queries ``imno % 100 == 0``; group ``imno // 100``.

    ``image_dir`` selects another folder under ``root`` (e.g. a rotated/upright copy).
    The query is in the database and is excluded from its own results (junk).
    """
    root = _require_dir(Path(root).expanduser(), "Holidays root", "holidays")
    folder = _require_dir(root / image_dir, "Holidays image folder", "holidays") if image_dir else _image_folder(root, "holidays")
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
    gnd = _groups_gnd(groups, query_groups, query_positions.tolist())
    return RetrievalSet(
        "holidays", "holidays", database, [database[i] for i in query_positions], [None] * len(query_positions),
        gnd, groups, query_groups, extra={"query_in_database": query_positions},
    )


_UKB_NAME = re.compile(r"^ukbench(\d{5})$")


def read_ukbench(root: str | os.PathLike) -> RetrievalSet:
    """UKBench: ``full/ukbench%05d.jpg``; image ``n`` is in group ``n // 4``; every image is a query."""
    root = _require_dir(Path(root).expanduser(), "UKBench root", "ukbench")
    folder = _image_folder(root, "ukbench", candidates=("full", "jpg"))
    database = [p for p in find_images(folder, recursive=False) if _UKB_NAME.match(p.stem)]
    if not database:
        raise DatasetNotFoundError("No ukbenchNNNNN.jpg images", folder, DATASET_HINTS["ukbench"])
    numbers = np.array([int(_UKB_NAME.match(p.stem)[1]) for p in database], dtype=np.int64)
    groups = numbers // 4
    positions = list(range(len(database)))
    gnd = _groups_gnd(groups, groups, positions)
    return RetrievalSet(
        "ukbench", "ukbench", database, list(database), [None] * len(database), gnd, groups, groups.copy(),
        extra={"query_in_database": np.arange(len(database))},
    )


# --------------------------------------------------------------------------- grouped sets


def split_groups(n_groups: int, fractions: Sequence[float], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic ``train``/``val``/``test`` partition of group ids ``0..n_groups-1``."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers, got {fractions.tolist()}")
    order = np.random.default_rng(seed).permutation(n_groups)
    cuts = np.round(np.cumsum(fractions / fractions.sum()) * n_groups).astype(int)
    parts = np.split(order, cuts[:2])
    return {name: np.sort(part) for name, part in zip(("train", "val", "test"), parts)}


def _grouped_set(name: str, items: GroupedImages, is_query: np.ndarray, groups: Iterable[int] | None) -> RetrievalSet:
    """Queries = items flagged ``is_query``; database = the others; both limited to ``groups``."""
    keep = np.ones(len(items), dtype=bool) if groups is None else np.isin(items.groups, np.asarray(list(groups)))
    database_idx = np.flatnonzero(keep & ~is_query)
    query_idx = np.flatnonzero(keep & is_query)
    database_groups = items.groups[database_idx]
    query_groups = items.groups[query_idx]
    gnd = _groups_gnd(database_groups, query_groups, [None] * len(query_idx))
    return RetrievalSet(
        name, "groups", [items.paths[i] for i in database_idx], [items.paths[i] for i in query_idx],
        [items.boxes[i] for i in query_idx], gnd, database_groups, query_groups,
        extra={"group_names": items.group_names},
    )


def folder_items(root: str | os.PathLike) -> GroupedImages:
    """Every image of ``<root>/<group>/<image>`` with its group (groups sorted by name)."""
    root = _require_dir(Path(root).expanduser(), "Folder-of-groups root", "folder")
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
    root = _require_dir(Path(root).expanduser(), "COIL-100 folder", "coil100")
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


# --------------------------------------------------------------------------- distractors


def read_distractors(root: str | os.PathLike) -> list[Path]:
    """Distractor images: R1M (``revisitop1m.txt`` + ``jpg/``) or any folder (Flickr100k).

    ``root`` may also be a list file; its lines name images relative to ``<its folder>/jpg``
    (R1M lines carry no extension: ``.jpg`` is appended).
    """
    root = Path(root).expanduser()
    list_file = root if root.is_file() else root / "revisitop1m.txt"
    if list_file.is_file():
        folder = list_file.parent / "jpg"
        names = _read_text_lines(list_file, "r1m")
        paths = [folder / (n if Path(n).suffix.lower() in IMAGE_EXTENSIONS else f"{n}.jpg") for n in names]
        for path in paths[:1] + paths[-1:]:  # a cheap check that the images are extracted
            if not path.is_file():
                raise DatasetNotFoundError("Distractor image listed in revisitop1m.txt is missing", path, DATASET_HINTS["r1m"])
        return paths
    if not root.is_dir():
        raise DatasetNotFoundError("Distractor folder not found", root, f"{DATASET_HINTS['flickr100k']}; or: {DATASET_HINTS['r1m']}")
    paths = find_images(root, recursive=True)
    if not paths:
        raise DatasetNotFoundError("No distractor images", root, DATASET_HINTS["flickr100k"])
    return paths
