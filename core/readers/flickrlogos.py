"""FlickrLogos-27 and FlickrLogos-32 annotation readers, in the official layouts.

Shared by region search (logo query/reference pairs) and retrieval (logo crops and scenes).

FlickrLogos-32
    S. Romberg, L. G. Pueyo, R. Lienhart, R. van Zwol, "Scalable Logo Recognition in
    Real-World Images", ACM ICMR 2011. 8,240 Flickr images, 32 brands + ``no-logo``;
    boxes in ``classes/masks/<class>/<id>.jpg.bboxes.txt``. Distributed on request
    (password-protected archive) by the Multimedia Computing and Computer Vision Lab of
    Augsburg University, for research purposes only; the images keep their Flickr
    licences. :data:`FLICKRLOGOS32_URL`.
FlickrLogos-27
    Y. Kalantidis, L. G. Pueyo, M. Trevisiol, R. van Zwol, Y. Avrithis, "Scalable
    Triangulation-based Logo Recognition", ACM ICMR 2011. Flickr images of 27 brands;
    the training-set annotation lists each box once per "subset" id, hence the
    de-duplication here. Free for research use; the images keep their Flickr licences.
    :data:`FLICKRLOGOS27_URL`.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates, ``x2``/``y2`` exclusive.
FlickrLogos-32 ``x y w h`` becomes ``(x, y, x + w, y + h)``; FlickrLogos-27 inclusive corners
``x1 y1 x2 y2`` become ``(x1, y1, x2 + 1, y2 + 1)``. Readers never decode images (they only
check the files exist), so they are fast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import CorruptDatasetError, DatasetNotFoundError

__all__ = [
    "FLICKRLOGOS27_HINT",
    "FLICKRLOGOS27_URL",
    "FLICKRLOGOS32_HINT",
    "FLICKRLOGOS32_SPLITS",
    "FLICKRLOGOS32_URL",
    "LogoAnnotation",
    "read_flickrlogos27",
    "read_flickrlogos32",
    "read_logo_dataset",
]


FLICKRLOGOS32_URL = (
    "http://www.multimedia-computing.de/flickrlogos/data/FlickrLogos-32_dataset_v2.zip"
)
FLICKRLOGOS27_URL = "http://image.ntua.gr/iva/datasets/flickr_logos/flickr_logos_27_dataset.tar.gz"

FLICKRLOGOS32_SPLITS = {
    "train": "trainset.txt",
    "val": "valset.txt",
    "test": "testset.txt",
    "trainval": "trainvalset.txt",
    "all": "all.txt",
}
FLICKRLOGOS27_ANNOTATION = "flickr_logos_27_dataset_training_set_annotation.txt"
FLICKRLOGOS27_IMAGE_DIRS = ("images", "flickr_logos_27_dataset_images")

FLICKRLOGOS32_HINT = (
    "FlickrLogos-32 is given on request by the Multimedia Computing lab of Augsburg University "
    f"(password-protected archive {FLICKRLOGOS32_URL}); unzip it and pass its FlickrLogos-v2 folder "
    "as root, or set DEEPMATCH_DATA (the data root) to the folder that contains it"
)
FLICKRLOGOS27_HINT = (
    f"Download FlickrLogos-27 from {FLICKRLOGOS27_URL}, extract it and the nested "
    "flickr_logos_27_dataset_images.tar.gz, and pass that folder as root, or set DEEPMATCH_DATA "
    "(the data root) to the folder that contains flickrlogos27/"
)


@dataclass(frozen=True)
class LogoAnnotation:
    """One logo instance: the image it is in, its brand and its box ``(x1, y1, x2, y2)``."""

    image_path: Path
    brand: str
    box: tuple[float, float, float, float]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


# --------------------------------------------------------------------------- helpers


def _read_lines(path: Path, hint: str) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError("Missing annotation file", path, hint)
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise CorruptDatasetError(
            f"Not a text annotation file ({exc.reason})", path, hint
        ) from None
    except OSError as exc:
        raise CorruptDatasetError(f"Cannot read annotation file ({exc})", path, hint) from None


def _parse_numbers(fields: Sequence[str], path: Path, lineno: int, hint: str) -> list[float]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise CorruptDatasetError(
            f"Non-numeric value on line {lineno} ({' '.join(fields)!r})", path, hint
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise CorruptDatasetError(f"Non-finite value on line {lineno}", path, hint)
    return values


def _dedupe(annotations: Iterable[LogoAnnotation]) -> list[LogoAnnotation]:
    return list(dict.fromkeys(annotations))


def _big_enough(box: Sequence[float], min_size: float) -> bool:
    width, height = box[2] - box[0], box[3] - box[1]
    return width > 0 and height > 0 and width >= min_size and height >= min_size


class _CaseInsensitiveDir:
    """Lookup of sub-folders ignoring case (FlickrLogos-32 has ``hp`` vs ``HP``)."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._entries: dict[str, Path] | None = None

    def get(self, name: str) -> Path:
        exact = self.parent / name
        if exact.is_dir():
            return exact
        if self._entries is None:
            self._entries = {}
            if self.parent.is_dir():
                for child in sorted(self.parent.iterdir()):
                    if child.is_dir():
                        self._entries.setdefault(child.name.lower(), child)
        return self._entries.get(name.lower(), exact)


# --------------------------------------------------------------------------- readers


def _flickrlogos32_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetNotFoundError("FlickrLogos-32 root not found", root, FLICKRLOGOS32_HINT)
    if not (root / "classes").is_dir():
        for nested in ("FlickrLogos-v2", "FlickrLogos-32_dataset_v2/FlickrLogos-v2"):
            if (root / nested / "classes").is_dir():
                return root / nested
        raise DatasetNotFoundError(
            "FlickrLogos-32 folder has no classes/ (expected the FlickrLogos-v2 folder)",
            root / "classes",
            FLICKRLOGOS32_HINT,
        )
    return root


def _read_bboxes_txt(path: Path, hint: str) -> list[tuple[float, float, float, float]]:
    boxes = []
    header_seen = False
    for lineno, line in enumerate(_read_lines(path, hint), start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if not boxes and not header_seen and any(c.isalpha() for c in line):
            header_seen = True  # header "x y width height"
            continue
        if len(fields) != 4:
            raise CorruptDatasetError(
                f"Expected 4 columns 'x y width height' on line {lineno}, got {len(fields)}",
                path,
                hint,
            )
        x, y, w, h = _parse_numbers(fields, path, lineno, hint)
        boxes.append((x, y, x + w, y + h))
    return boxes


def read_flickrlogos32(
    root: str | os.PathLike, split: str = "test", min_size: float = 0.0
) -> list[LogoAnnotation]:
    """Logo boxes of one official FlickrLogos-32 split (``no-logo`` images skipped).

    ``root`` is the ``FlickrLogos-v2`` folder (its parent is accepted too) holding
    ``classes/jpg/<class>/<id>.jpg``, ``classes/masks/<class>/<id>.jpg.bboxes.txt`` and
    the lists ``trainset.txt``/``valset.txt``/``testset.txt``/``trainvalset.txt``/
    ``all.txt`` (lines ``class,filename``). ``split`` is one of
    ``train``/``val``/``test``/``trainval``/``all``. Class folders are looked up
    ignoring case (``hp`` vs ``HP``). Boxes smaller than ``min_size`` pixels on either
    side are dropped; identical boxes are kept once.
    """
    if split not in FLICKRLOGOS32_SPLITS:
        raise ValueError(f"split must be one of {sorted(FLICKRLOGOS32_SPLITS)}, got {split!r}")
    root = _flickrlogos32_root(Path(root).expanduser())
    list_path = root / FLICKRLOGOS32_SPLITS[split]
    jpg_dirs = _CaseInsensitiveDir(root / "classes" / "jpg")
    mask_dirs = _CaseInsensitiveDir(root / "classes" / "masks")
    annotations: list[LogoAnnotation] = []
    for lineno, line in enumerate(_read_lines(list_path, FLICKRLOGOS32_HINT), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise CorruptDatasetError(
                f"Expected 'class,filename' on line {lineno}, got {line!r}",
                list_path,
                FLICKRLOGOS32_HINT,
            )
        brand, filename = fields
        if brand.lower() == "no-logo":
            continue
        image_path = jpg_dirs.get(brand) / filename
        if not image_path.is_file():
            raise DatasetNotFoundError(
                f"Image listed on line {lineno} of {list_path.name} is missing",
                image_path,
                FLICKRLOGOS32_HINT,
            )
        bboxes_path = mask_dirs.get(brand) / f"{filename}.bboxes.txt"
        for box in _read_bboxes_txt(bboxes_path, FLICKRLOGOS32_HINT):
            if _big_enough(box, min_size):
                annotations.append(LogoAnnotation(image_path, brand, box))
    return _dedupe(annotations)


def _flickrlogos27_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetNotFoundError("FlickrLogos-27 root not found", root, FLICKRLOGOS27_HINT)
    if not (root / FLICKRLOGOS27_ANNOTATION).is_file():
        for nested in ("flickr_logos_27_dataset", "flickrlogos27"):
            if (root / nested / FLICKRLOGOS27_ANNOTATION).is_file():
                return root / nested
    return root


def _flickrlogos27_images(root: Path) -> Path:
    for name in FLICKRLOGOS27_IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    nested_tar = root / "flickr_logos_27_dataset_images.tar.gz"
    if nested_tar.is_file():
        raise DatasetNotFoundError(
            f"FlickrLogos-27 images are not extracted; run `tar xzf {nested_tar.name}` in {root}",
            root / FLICKRLOGOS27_IMAGE_DIRS[0],
            FLICKRLOGOS27_HINT,
        )
    raise DatasetNotFoundError(
        "FlickrLogos-27 image folder not found (expected images/ or flickr_logos_27_dataset_images/)",
        root / FLICKRLOGOS27_IMAGE_DIRS[0],
        FLICKRLOGOS27_HINT,
    )


def read_flickrlogos27(root: str | os.PathLike, min_size: float = 10) -> list[LogoAnnotation]:
    """Unique logo boxes of the FlickrLogos-27 training-set annotation.

    ``root`` holds ``flickr_logos_27_dataset_training_set_annotation.txt`` (lines
    ``image class subset x1 y1 x2 y2``, inclusive pixel corners) and ``images/`` (or the
    official ``flickr_logos_27_dataset_images/``). The same box is listed once per subset
    id; each ``(image, brand, box)`` is returned once, in file order. Boxes narrower or
    shorter than ``min_size`` pixels are dropped.
    """
    root = _flickrlogos27_root(Path(root).expanduser())
    annotation_path = root / FLICKRLOGOS27_ANNOTATION
    lines = _read_lines(annotation_path, FLICKRLOGOS27_HINT)
    image_dir = _flickrlogos27_images(root)
    annotations: list[LogoAnnotation] = []
    checked: dict[str, Path] = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 7:
            raise CorruptDatasetError(
                f"Expected 7 columns 'image class subset x1 y1 x2 y2' on line {lineno}, "
                f"got {len(fields)}",
                annotation_path,
                FLICKRLOGOS27_HINT,
            )
        filename, brand = fields[0], fields[1]
        _parse_numbers(fields[2:3], annotation_path, lineno, FLICKRLOGOS27_HINT)
        x1, y1, x2, y2 = _parse_numbers(fields[3:], annotation_path, lineno, FLICKRLOGOS27_HINT)
        if filename not in checked:
            image_path = image_dir / filename
            if not image_path.is_file():
                raise DatasetNotFoundError(
                    f"Image listed on line {lineno} of {annotation_path.name} is missing",
                    image_path,
                    FLICKRLOGOS27_HINT,
                )
            checked[filename] = image_path
        box = (x1, y1, x2 + 1.0, y2 + 1.0)
        if _big_enough(box, min_size):
            annotations.append(LogoAnnotation(checked[filename], brand, box))
    return _dedupe(annotations)


def read_logo_dataset(dataset: str, root: str | os.PathLike, **kwargs) -> list[LogoAnnotation]:
    """Dispatch by name: ``flickrlogos27`` or ``flickrlogos32`` (kwargs go to the reader)."""
    readers = {"flickrlogos27": read_flickrlogos27, "flickrlogos32": read_flickrlogos32}
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in readers:
        raise ValueError(f"Unknown logo dataset {dataset!r}; expected one of {sorted(readers)}")
    return readers[key](root, **kwargs)
