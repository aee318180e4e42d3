"""What every retrieval test-set reader shares: :class:`RetrievalSet`, :class:`GroupedImages`,
the official download locations and hints, file helpers, group splits and distractor lists.

Every reader (:mod:`retrieval.data.landmarks`, :mod:`retrieval.data.objects`) returns a
:class:`RetrievalSet`: database image paths, query image paths with their boxes (queries are
cropped to the box when loaded), per-query ground truth and the evaluation protocol. Readers
only list and check files; images are decoded by the datamodules. Missing or unparsable files
raise :class:`~core.errors.DatasetError` subclasses that name the path and say how to get the
data.

Distractors
    Flickr100k (Oxford105k / Paris106k) or R1M (``revisitop1m.txt`` + ``jpg/``) folders,
    appended after the database by :meth:`RetrievalSet.with_distractors`; never positives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.readers.flickrlogos import FLICKRLOGOS27_HINT

__all__ = [
    "DATASET_HINTS",
    "DATASET_URLS",
    "GroupedImages",
    "RetrievalSet",
    "find_images",
    "read_distractors",
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


def require_dir(path: Path, what: str, dataset: str) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what} not found", path, DATASET_HINTS[dataset])
    return path


def read_text_lines(path: Path, dataset: str) -> list[str]:
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


def image_folder(root: Path, dataset: str, candidates: Sequence[str] = ("jpg", "images")) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    if find_images(root, recursive=False):
        return root
    raise DatasetNotFoundError(
        f"No image folder ({', '.join(candidates)}/) or images found", root / candidates[0], DATASET_HINTS[dataset]
    )


def groups_gnd(database_groups: np.ndarray, query_groups: np.ndarray, query_in_database: Sequence[int | None]):
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
        names = read_text_lines(list_file, "r1m")
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
