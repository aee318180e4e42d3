"""MNIST in its official IDX format: reader, file finder, loader and downloader.

The official files are ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (LeCun, Cortes, Burges;
CC BY-SA 3.0). The test set is bundled in ``regionsearch/assets`` (see its
``ATTRIBUTION.md``) and is what :func:`load_mnist` reads when no data root is given.

IDX format: a 4-byte magic ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in C order, big-endian. Files may be gzipped or raw;
the reader tells them apart by their first two bytes (``0x1f 0x8b`` = gzip), not by name.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.files import md5sum

__all__ = [
    "MNIST_MIRRORS",
    "MNIST_FILES",
    "EMBEDDED_DIR",
    "IDX_DTYPES",
    "read_idx",
    "write_idx",
    "find_mnist_file",
    "load_mnist",
    "download_mnist",
    "md5sum",
]

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}

#: Number of items in the official files (a truncated training-image copy may hold fewer).
MNIST_COUNTS = {"train": 60000, "test": 10000}

EMBEDDED_DIR: Path = Path(__file__).resolve().parents[1] / "assets"

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _download_hint(kind: str | None = None) -> str:
    names = [MNIST_FILES[kind][0]] if kind else [name for name, _ in MNIST_FILES.values()]
    return (
        f"Get {', '.join(names)} from {MNIST_MIRRORS[0]} (or {MNIST_MIRRORS[1]}) into that folder, "
        "e.g. with regionsearch.data.mnist.download_mnist(root), and point the data root at it"
    )


def _read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip detected by magic bytes)."""
    if not path.exists():
        raise DatasetNotFoundError("MNIST file not found", path, _download_hint())
    if not path.is_file():
        raise DatasetNotFoundError("MNIST path is not a file", path, _download_hint())
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptDatasetError(f"cannot read IDX file ({exc})", path) from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise CorruptDatasetError(
                f"truncated or corrupt gzip IDX file ({exc})",
                path,
                "Delete it and download it again",
            ) from exc
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    Raises :class:`DatasetNotFoundError` if the file is missing and
    :class:`CorruptDatasetError` (naming the path) if it is truncated, has a bad magic
    number or its size does not match its header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise CorruptDatasetError(f"IDX file too short ({len(data)} bytes) for a header", path)
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise CorruptDatasetError(
            f"bad IDX magic number 0x{data[:4].hex()} (expected 0x0000<type><ndim>)", path
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CorruptDatasetError(
            f"IDX header truncated ({len(data)} bytes, {header_len} needed for {ndim} dims)", path
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "too long"
        raise CorruptDatasetError(
            f"IDX file {what}: header says {dims} of {dtype.name} ({expected} data bytes), "
            f"found {actual} data bytes",
            path,
            "Delete it and download it again",
        )
    array = np.frombuffer(
        data, dtype=dtype, count=int(np.prod(dims, dtype=np.int64)), offset=header_len
    )
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``compress`` or the name ends in ``.gz``).

    The inverse of :func:`read_idx`; used to write fixtures in the official format.
    """
    path = Path(path)
    array = np.asarray(array)
    code = next(
        (
            c
            for c, dt in IDX_DTYPES.items()
            if dt.newbyteorder("=") == array.dtype.newbyteorder("=")
        ),
        None,
    )
    if code is None:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path



def _search_dirs(root: Path) -> list[Path]:
    # The folder itself, a data root holding ``mnist/``, and torchvision's ``MNIST/raw`` layout.
    return [root, root / "mnist", root / "MNIST" / "raw"]


def find_mnist_file(root: str | os.PathLike, kind: str) -> Path:
    """Locate the file of ``kind`` (a key of :data:`MNIST_FILES`) under ``root``.

    Looks in ``root``, ``root/mnist`` and ``root/MNIST/raw`` for the official name, then its
    un-gzipped name, then (``train_images`` only) a truncated copy matching
    ``train-images-idx3-ubyte*`` such as ``train-images-idx3-ubyte.first19690.gz``.
    """
    if kind not in MNIST_FILES:
        raise ValueError(f"unknown MNIST file kind {kind!r}; expected one of {sorted(MNIST_FILES)}")
    root = Path(root).expanduser()
    official = MNIST_FILES[kind][0]
    plain = official[: -len(".gz")]
    dirs = [d for d in _search_dirs(root) if d.is_dir()]
    for name in (official, plain):
        for folder in dirs:
            if (folder / name).is_file():
                return folder / name
    if kind == "train_images":
        for folder in dirs:
            partial = sorted(
                p
                for p in folder.glob(plain + "*")
                if p.is_file() and not p.name.endswith((".part", ".tmp", ".md5"))
            )
            if partial:
                return partial[0]
    if not root.exists():
        raise DatasetNotFoundError("MNIST data root does not exist", root, _download_hint(kind))
    raise DatasetNotFoundError(
        f"MNIST file {official} (or {plain}) not found in", root, _download_hint(kind)
    )


def _is_truncated_copy(path: Path, kind: str) -> bool:
    official = MNIST_FILES[kind][0]
    return path.name not in (official, official[: -len(".gz")])


def load_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``root=None`` reads the embedded test set; the training set needs a data root holding
    the official files. If the training images are a truncated copy (fewer images than
    labels), the labels are truncated to match; they are the first N labels because the
    copy keeps the official order.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None:
        if split == "train":
            raise DatasetNotFoundError(
                "the MNIST training set is not bundled (only the test set is, in",
                EMBEDDED_DIR,
                "Set the MNIST data root (e.g. DEEPMATCH_DATA or the dataset's root option) to a "
                "folder holding train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz, or "
                "fetch them with regionsearch.data.mnist.download_mnist(root)",
            )
        root = EMBEDDED_DIR
    image_path = find_mnist_file(root, f"{split}_images")
    label_path = find_mnist_file(root, f"{split}_labels")
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise CorruptDatasetError(
            f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}",
            image_path,
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise CorruptDatasetError(
            f"expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}", label_path
        )
    if labels.size and int(labels.max()) > 9:
        raise CorruptDatasetError(f"labels outside 0..9 (max {int(labels.max())})", label_path)
    n_images, n_labels = len(images), len(labels)
    if n_images != n_labels:
        if _is_truncated_copy(image_path, f"{split}_images") and n_labels > n_images:
            labels = labels[:n_images]
        else:
            raise CorruptDatasetError(
                f"{n_images} images in {image_path.name} but {n_labels} labels in", label_path
            )
    return np.ascontiguousarray(images), labels.astype(np.int64)


def download_mnist(
    root: str | os.PathLike,
    files: Iterable[str] = ("train_images", "train_labels", "test_images", "test_labels"),
    timeout: float = 60.0,
) -> None:
    """Download the official MNIST files into ``root``, trying each mirror, checking md5s.

    Files already present with the right md5 are kept. Each file is written atomically.
    Raises :class:`DatasetNotFoundError` if no mirror could deliver a file and
    :class:`CorruptDatasetError` if every download had the wrong checksum.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for kind in files:
        if kind not in MNIST_FILES:
            raise ValueError(
                f"unknown MNIST file kind {kind!r}; expected one of {sorted(MNIST_FILES)}"
            )
        name, expected_md5 = MNIST_FILES[kind]
        target = root / name
        if target.is_file() and md5sum(target) == expected_md5:
            continue
        failures: list[str] = []
        bad_checksum = False
        for mirror in MNIST_MIRRORS:
            url = mirror + name
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
            tmp = Path(tmp_name)
            try:
                with (
                    os.fdopen(fd, "wb") as out,
                    urllib.request.urlopen(url, timeout=timeout) as response,
                ):
                    while block := response.read(1 << 20):
                        out.write(block)
                got = md5sum(tmp)
                if got != expected_md5:
                    bad_checksum = True
                    failures.append(f"{url}: md5 {got} != {expected_md5}")
                    continue
                os.replace(tmp, target)
                break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                failures.append(f"{url}: {exc}")
            finally:
                if tmp.exists():
                    tmp.unlink()
        else:
            error = CorruptDatasetError if bad_checksum else DatasetNotFoundError
            raise error(
                f"could not download {name} ({'; '.join(failures)}) into",
                root,
                "Check the network or copy the official file there by hand",
            )
