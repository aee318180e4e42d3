"""Brown / UBC PhotoTour patches in their official layout: the reader, the download, a
memory-mapped cache, content digests and the writer of the same layout.

Official layout of one subset folder (``liberty``, ``notredame``, ``yosemite``)::

    patches0000.bmp ...   1024x1024 grey tiles of 16x16 patches of 64x64, row-major
                          (left to right, then top to bottom); the last tile partly filled
    info.txt              one line per patch: "3D-point-id unused"
    interest.txt          one line per patch: "reference-image-id x y orientation log2-scale"
    m50_<n>_<n>_0.txt     match pairs: "patch1 point1 unused patch2 point2 unused";
                          label = (point1 == point2); m50_100000_100000_0.txt is the test set
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.files import atomic_file, file_lock, lock_path, md5sum

log = logging.getLogger(__name__)

BROWN_SUBSETS = ("liberty", "notredame", "yosemite")
#: torchvision's (now dead) official URLs and the md5 of those zips.
BROWN_URLS = {name: f"http://icvl.ee.ic.ac.uk/vbalnt/{name}.zip" for name in BROWN_SUBSETS}
BROWN_MD5 = {
    "notredame": "509eda8535847b8c0a90bbb210c83484",
    "yosemite": "533b2e8eb7ede31be40abc317b2fd4f0",
    "liberty": "fdd9152f138ea5ef2091746689176414",
}
#: Re-packed zips (different md5s, not known here: checked by zip integrity instead).
BROWN_MIRROR = "https://cmp.felk.cvut.cz/~mishkdmy/datasets/BrownPhotoTour/"
BROWN_PATCH_COUNTS = {"notredame": 468159, "yosemite": 633587, "liberty": 450092}
#: file names of the cached look-alike groups in a subset's cache folder (v1: lookalike_groups'
#: NCC of 16x16 reference patches, overlapping keypoints skipped)
LOOKALIKE_CACHE_PREFIX = "lookalikes-v1-"

#: mean / std of the patches on [0, 1] (HardNet's normalisation constants)
BROWN_MEAN_STD = {"liberty": (0.4437, 0.2019), "notredame": (0.4854, 0.1864), "yosemite": (0.4844, 0.1818)}
TEST_MATCH_FILE = "m50_100000_100000_0.txt"

PATCH = 64
TILE = 1024
PER_ROW = TILE // PATCH
PER_TILE = PER_ROW * PER_ROW


def _hint(subset: str) -> str:
    url = BROWN_URLS.get(subset, "<subset>.zip")
    return (
        f"Get the Brown/UBC PhotoTour subset {subset!r} ({url}, dead; mirror {BROWN_MIRROR}{subset}.zip), "
        f"unzip it to <data_root>/brown/{subset}/ (e.g. descriptors.data.brown.download_brown(root, '{subset}')) "
        "and point the data root (DEEPMATCH_DATA / data.data_root) at it"
    )


@dataclass
class BrownSubset:
    """One subset: ``patches`` uint8 ``(N, 64, 64)`` (possibly memory-mapped), ``point_ids``
    int64 ``(N,)``, ``interest`` float ``(N, 5)`` or None, the folder it came from and, when
    loaded through a cache, the cache folder (where derived arrays such as look-alikes live)."""

    name: str
    patches: np.ndarray
    point_ids: np.ndarray
    interest: np.ndarray | None
    folder: Path
    cache: Path | None = None

    def __len__(self) -> int:
        return len(self.point_ids)

    def matches(self, match_file: str = TEST_MATCH_FILE) -> np.ndarray:
        """``(M, 3)`` int64 ``[patch1, patch2, is_match]`` from one of the subset's m50 files."""
        return read_matches(self.folder / match_file, n_patches=len(self))


def subset_digest(subset: BrownSubset, chunk: int = 8192) -> str:
    """MD5 (hex) of a subset's patches, point ids and keypoints: the same digest means the same
    data, so that two runs that disagree can tell a changed data set (e.g. a generated one under
    another OpenCV) from changed training."""
    digest = hashlib.md5()
    for start in range(0, len(subset.patches), chunk):
        digest.update(np.ascontiguousarray(subset.patches[start : start + chunk], dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(subset.point_ids, dtype=np.int64).tobytes())
    if subset.interest is not None:
        digest.update(np.ascontiguousarray(subset.interest, dtype=np.float64).tobytes())
    return digest.hexdigest()


def find_subset_dir(root: str | os.PathLike, subset: str) -> Path:
    """``root/brown/<subset>``, ``root/<subset>`` or ``root`` itself (holding ``info.txt``)."""
    if root is None:
        raise DatasetNotFoundError("no data root configured for Brown", "<unset>", _hint(subset))
    root = Path(root).expanduser()
    for folder in (root / "brown" / subset, root / subset, root):
        if (folder / "info.txt").is_file() and (folder is not root or root.name == subset):
            return folder
    if (root / "brown" / subset).is_dir() or (root / subset).is_dir():
        folder = root / "brown" / subset if (root / "brown" / subset).is_dir() else root / subset
        raise DatasetNotFoundError("Brown subset folder has no info.txt", folder, _hint(subset))
    raise DatasetNotFoundError(f"Brown subset {subset!r} not found under", root, _hint(subset))


def _read_columns(path: Path, columns: int, dtype, what: str, hint: str = "") -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError(f"Brown {what} not found", path, hint)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDatasetError(f"cannot read Brown {what} ({exc})", path, hint) from exc
    rows = [line.split() for line in text.splitlines() if line.strip()]
    bad = next((i for i, row in enumerate(rows) if len(row) != columns), None)
    if bad is not None:
        raise CorruptDatasetError(
            f"Brown {what}: line {bad + 1} has {len(rows[bad])} columns, expected {columns}", path, hint
        )
    try:
        return np.array(rows, dtype=np.float64).astype(dtype).reshape(len(rows), columns)
    except ValueError as exc:
        raise CorruptDatasetError(f"Brown {what}: non-numeric value ({exc})", path, hint) from exc


def read_info(path: str | os.PathLike) -> np.ndarray:
    """3D point id of every patch (``info.txt``: "pointid unused" per line)."""
    return _read_columns(Path(path), 2, np.int64, "info.txt")[:, 0]


def read_interest(path: str | os.PathLike) -> np.ndarray:
    """``(N, 5)`` float: reference image id, x, y, orientation, scale (log2 units)."""
    return _read_columns(Path(path), 5, np.float64, "interest.txt")


def read_matches(path: str | os.PathLike, n_patches: int | None = None) -> np.ndarray:
    """``(M, 3)`` int64 ``[patch1, patch2, is_match]`` from an m50 file (6 columns)."""
    path = Path(path)
    table = _read_columns(path, 6, np.int64, "match file")
    if n_patches is not None and len(table) and (table[:, [0, 3]].max() >= n_patches or table[:, [0, 3]].min() < 0):
        raise CorruptDatasetError(f"match file refers to patches outside 0..{n_patches - 1}", path)
    return np.stack([table[:, 0], table[:, 3], (table[:, 1] == table[:, 4]).astype(np.int64)], axis=1)


def read_patches(folder: str | os.PathLike, n_patches: int) -> np.ndarray:
    """The first ``n_patches`` patches of the ``patchesNNNN.bmp`` tiles of ``folder``."""
    folder = Path(folder)
    n_tiles = -(-n_patches // PER_TILE)
    patches = np.empty((n_tiles * PER_TILE, PATCH, PATCH), dtype=np.uint8)
    for tile in range(n_tiles):
        path = folder / f"patches{tile:04d}.bmp"
        if not path.is_file():
            raise DatasetNotFoundError(
                f"Brown tile missing ({n_patches} patches in info.txt need {n_tiles} tiles)", path, _hint(folder.name)
            )
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CorruptDatasetError("unreadable or truncated Brown tile", path, "Delete it and unzip the subset again")
        if image.shape != (TILE, TILE):
            raise CorruptDatasetError(f"Brown tile is {image.shape[1]}x{image.shape[0]}, expected 1024x1024", path)
        block = patches[tile * PER_TILE : (tile + 1) * PER_TILE]
        block[:] = image.reshape(PER_ROW, PATCH, PER_ROW, PATCH).transpose(0, 2, 1, 3).reshape(PER_TILE, PATCH, PATCH)
    return patches[:n_patches]


def read_subset(folder: str | os.PathLike, name: str | None = None) -> BrownSubset:
    """Read a subset folder directly from the bmp tiles (slow for real subsets: use :func:`load_subset`)."""
    folder = Path(folder)
    point_ids = read_info(folder / "info.txt")
    interest_path = folder / "interest.txt"
    interest = read_interest(interest_path) if interest_path.is_file() else None
    if interest is not None and len(interest) != len(point_ids):
        raise CorruptDatasetError(f"interest.txt has {len(interest)} lines but info.txt {len(point_ids)}", interest_path)
    return BrownSubset(name or folder.name, read_patches(folder, len(point_ids)), point_ids, interest, folder)


def _source_signature(folder: Path) -> dict:
    files = sorted(folder.glob("patches*.bmp")) + [folder / "info.txt"]
    return {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files if p.is_file()}


def _npy_holds(path: Path, shape: tuple[int, ...], dtype) -> bool:
    """Whether ``path`` is a whole ``.npy`` file of this shape and dtype (its header read, its
    size checked against it: a truncated file is not)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            reader = readers.get(np.lib.format.read_magic(handle))
            if reader is None:
                return False
            stored_shape, fortran, stored_dtype = reader(handle)
            expected = handle.tell() + int(np.prod(stored_shape)) * stored_dtype.itemsize
            return (tuple(stored_shape) == tuple(shape) and stored_dtype == np.dtype(dtype) and not fortran
                    and os.fstat(handle.fileno()).st_size == expected)
    except (OSError, ValueError):
        return False


def _patch_cache_valid(cache: Path, signature: dict, n_patches: int) -> bool:
    """The patch cache is of these tiles (``meta.json``) and whole (``patches.npy``)."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("signature") == signature
            and _npy_holds(cache / "patches.npy", (n_patches, PATCH, PATCH), np.uint8))


def load_subset(root: str | os.PathLike, subset: str, cache_dir: str | os.PathLike | None = None) -> BrownSubset:
    """A subset with its patches memory-mapped from ``<cache_dir>/brown/<subset>/patches.npy``.

    The cache is built once from the bmp tiles (and rebuilt when the tiles change, or when it
    is truncated or unreadable: it is only a copy); later loads cost one
    ``np.load(mmap_mode="r")`` instead of decoding hundreds of bitmaps. Runs that build it at
    once take turns (a lock beside it) and every file is replaced in one rename.
    """
    folder = find_subset_dir(root, subset)
    if cache_dir is None:
        return read_subset(folder, subset)
    key = hashlib.md5(str(folder.resolve()).encode()).hexdigest()[:8]
    cache = Path(cache_dir) / "brown" / f"{subset}-{key}"
    meta_path = cache / "meta.json"
    signature = _source_signature(folder)
    point_ids = read_info(folder / "info.txt")
    interest_path = folder / "interest.txt"
    interest = read_interest(interest_path) if interest_path.is_file() else None
    if interest is not None and len(interest) != len(point_ids):
        raise CorruptDatasetError(f"interest.txt has {len(interest)} lines but info.txt {len(point_ids)}", interest_path)
    if not _patch_cache_valid(cache, signature, len(point_ids)):
        with file_lock(lock_path(cache)):
            if not _patch_cache_valid(cache, signature, len(point_ids)):  # else another run just built it
                if meta_path.is_file():
                    log.warning("rebuilding the Brown patch cache %s: stale, truncated or unreadable", cache)
                patches = read_patches(folder, len(point_ids))
                cache.mkdir(parents=True, exist_ok=True)
                for derived in cache.glob(f"{LOOKALIKE_CACHE_PREFIX}*.npy"):  # of the old tiles
                    derived.unlink(missing_ok=True)
                with atomic_file(cache / "patches.npy", suffix=".npy") as tmp:
                    np.save(tmp, patches)
                with atomic_file(meta_path) as tmp:
                    tmp.write_text(json.dumps({"signature": signature, "n_patches": len(point_ids), "folder": str(folder)}))
                log.info("cached %d Brown patches of %s in %s", len(point_ids), subset, cache)
    path = cache / "patches.npy"
    try:
        patches = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:  # changed since it was checked
        raise CorruptDatasetError(f"unreadable Brown patch cache ({exc})", path, "Delete it: it is rebuilt from the tiles") from None
    if len(patches) != len(point_ids):
        raise CorruptDatasetError(f"cached patches ({len(patches)}) do not match info.txt ({len(point_ids)})", path, "Delete it: it is rebuilt from the tiles")
    return BrownSubset(subset, patches, point_ids, interest, folder, cache)


def write_subset(
    folder: str | os.PathLike,
    patches: np.ndarray,
    point_ids: np.ndarray,
    interest: np.ndarray | None = None,
    match_files: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write patches in the official layout (tiles, info.txt, interest.txt, m50 files).

    ``match_files`` maps a file name to ``(M, 2)`` patch index pairs (see :func:`write_matches`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    patches = np.asarray(patches, dtype=np.uint8)
    if patches.ndim != 3 or patches.shape[1:] != (PATCH, PATCH):
        raise ValueError(f"patches must be (N, 64, 64), got {patches.shape}")
    point_ids = np.asarray(point_ids, dtype=np.int64)
    if len(point_ids) != len(patches):
        raise ValueError("one point id per patch is needed")
    n_tiles = -(-len(patches) // PER_TILE)
    for tile in range(n_tiles):
        block = np.zeros((PER_TILE, PATCH, PATCH), dtype=np.uint8)
        chunk = patches[tile * PER_TILE : (tile + 1) * PER_TILE]
        block[: len(chunk)] = chunk
        image = block.reshape(PER_ROW, PER_ROW, PATCH, PATCH).transpose(0, 2, 1, 3).reshape(TILE, TILE)
        cv2.imwrite(str(folder / f"patches{tile:04d}.bmp"), image)
    (folder / "info.txt").write_text("".join(f"{p} 0\n" for p in point_ids))
    if interest is None:
        interest = np.zeros((len(patches), 5))
    (folder / "interest.txt").write_text(
        "".join(f"{int(r[0])} {r[1]:.6g} {r[2]:.6g} {r[3]:.6g} {r[4]:.6g}\n" for r in np.asarray(interest))
    )
    for name, pairs in (match_files or {}).items():
        write_matches(folder / name, pairs, point_ids)
    return folder


def write_matches(path: str | os.PathLike, pairs: np.ndarray, point_ids: np.ndarray) -> Path:
    """An m50 file for patch index pairs ``(M, 2)``: "patch1 point1 0 patch2 point2 0"."""
    pairs = np.asarray(pairs, dtype=np.int64)
    lines = (f"{a} {point_ids[a]} 0 {b} {point_ids[b]} 0\n" for a, b in pairs)
    Path(path).write_text("".join(lines))
    return Path(path)


def download_brown(root: str | os.PathLike, subset: str, timeout: float = 120.0) -> Path:
    """Download and unzip a subset to ``root/brown/<subset>/``: the official URL (md5
    checked), then the CTU mirror (zip integrity checked). Raises DatasetNotFoundError
    when neither works (no network)."""
    if subset not in BROWN_SUBSETS:
        raise ValueError(f"unknown Brown subset {subset!r}; expected one of {BROWN_SUBSETS}")
    target = Path(root).expanduser() / "brown"
    target.mkdir(parents=True, exist_ok=True)
    failures = []
    for url, md5 in ((BROWN_URLS[subset], BROWN_MD5[subset]), (f"{BROWN_MIRROR}{subset}.zip", None)):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{subset}.", suffix=".zip.part", dir=target)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    out.write(block)
            if md5 is not None and md5sum(tmp) != md5:
                failures.append(f"{url}: md5 mismatch")
                continue
            with zipfile.ZipFile(tmp) as archive:
                if archive.testzip() is not None:
                    failures.append(f"{url}: corrupt zip")
                    continue
                names = archive.namelist()
                nested = all(n.startswith(f"{subset}/") for n in names)
                archive.extractall(target if nested else target / subset)
            return find_subset_dir(target.parent, subset)
        except (urllib.error.URLError, OSError, TimeoutError, zipfile.BadZipFile) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DatasetNotFoundError(f"could not download Brown {subset} ({'; '.join(failures)}) into", target, _hint(subset))


# --------------------------------------------------------------------------- samplers
