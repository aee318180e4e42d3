"""MNIST IDX reader, file finder and loader (embedded test set, truncated train copies)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.files import md5sum
from regionsearch.data.mnist import (
    EMBEDDED_DIR,
    MNIST_FILES,
    find_mnist_file,
    load_mnist,
    read_idx,
    write_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """Official IDX layout, written independently of regionsearch.data.mnist.write_idx."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def data_root() -> Path:
    env = os.environ.get("DEEPMATCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def small_digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(
        np.uint8
    )


@pytest.fixture
def truncated_train_root(tmp_path: Path) -> Path:
    """A data root laid out like shared/data/mnist: 5 of 12 training images, all 12 labels."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12).astype(np.uint8)
    root = tmp_path / "mnist"
    root.mkdir()
    write(root / "train-images-idx3-ubyte.first5.gz", idx_bytes(images[:5]), gz=True)
    write(root / "train-labels-idx1-ubyte.gz", idx_bytes(labels), gz=True)
    np.save(tmp_path / "expected_images.npy", images[:5])
    np.save(tmp_path / "expected_labels.npy", labels[:5])
    return root


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip_images_and_labels(tmp_path, small_digits, gz):
    images, labels = small_digits
    img_path = write(tmp_path / "images.idx", idx_bytes(images), gz)  # name does not say gz
    lab_path = write(tmp_path / "labels.idx", idx_bytes(labels), gz)
    got_images, got_labels = read_idx(img_path), read_idx(lab_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    assert got_labels.dtype == np.uint8 and got_labels.shape == (7,)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_multibyte_types_are_big_endian(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    got = read_idx(write(tmp_path / "ints.gz", idx_bytes(values), gz=True))
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, values)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    np.testing.assert_array_equal(
        read_idx(write(tmp_path / "f", idx_bytes(floats), gz=False)), floats
    )


@pytest.mark.parametrize("gz", [True, False])
def test_write_idx_matches_official_layout(tmp_path, small_digits, gz):
    images, _ = small_digits
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), images)
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    assert raw == idx_bytes(images)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_is_corrupt(tmp_path, small_digits, gz):
    images, _ = small_digits
    full = idx_bytes(images)
    if gz:
        packed = gzip.compress(full)
        path = tmp_path / "cut.gz"
        path.write_bytes(packed[: len(packed) // 2])  # truncated gzip stream
    else:
        path = write(tmp_path / "cut", full[:-100], gz=False)  # truncated data
    with pytest.raises(CorruptDatasetError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_header_is_corrupt(tmp_path, small_digits):
    path = write(tmp_path / "header", idx_bytes(small_digits[0])[:9], gz=False)
    with pytest.raises(CorruptDatasetError, match="header"):
        read_idx(path)


@pytest.mark.parametrize(
    "magic", [b"\x01\x00\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00\x08\x00", b"PK\x03\x04"]
)
def test_bad_magic_is_corrupt(tmp_path, small_digits, magic):
    path = write(tmp_path / "magic.gz", magic + idx_bytes(small_digits[0])[4:], gz=True)
    with pytest.raises(CorruptDatasetError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_size_is_corrupt(tmp_path, small_digits):
    path = write(tmp_path / "long", idx_bytes(small_digits[0]) + b"\x00" * 5, gz=False)
    with pytest.raises(CorruptDatasetError, match="too long") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_is_not_found(tmp_path):
    path = tmp_path / "nope" / "t10k-images-idx3-ubyte.gz"
    with pytest.raises(DatasetNotFoundError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "download" in str(info.value).lower()
    assert isinstance(info.value, FileNotFoundError)


# --------------------------------------------------------------------------- embedded set


def test_bundled_files_have_official_md5s():
    for kind in ("test_images", "test_labels"):
        name, md5 = MNIST_FILES[kind]
        assert md5sum(EMBEDDED_DIR / name) == md5
    assert (EMBEDDED_DIR / "ATTRIBUTION.md").is_file()
    # nothing but the test set and its attribution is bundled
    assert sorted(p.name for p in EMBEDDED_DIR.iterdir() if not p.name.startswith(".")) == [
        "ATTRIBUTION.md",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_load_embedded_test_set():
    images, labels = load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])  # the official order
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images.min() == 0


def test_train_without_root_is_not_found():
    with pytest.raises(DatasetNotFoundError, match="(?i)data root"):
        load_mnist("train")


def test_bad_split():
    with pytest.raises(ValueError):
        load_mnist("val")


# --------------------------------------------------------------------------- data roots


def test_truncated_train_copy_truncates_labels(truncated_train_root):
    images, labels = load_mnist("train", root=truncated_train_root)
    np.testing.assert_array_equal(
        images, np.load(truncated_train_root.parent / "expected_images.npy")
    )
    np.testing.assert_array_equal(
        labels, np.load(truncated_train_root.parent / "expected_labels.npy")
    )
    assert labels.dtype == np.int64
    # a data root holding mnist/ works too
    images2, _ = load_mnist("train", root=truncated_train_root.parent)
    assert len(images2) == 5


def test_official_name_wins_over_truncated_copy(truncated_train_root):
    images = np.zeros((12, 28, 28), dtype=np.uint8)
    write(truncated_train_root / "train-images-idx3-ubyte", idx_bytes(images), gz=False)
    assert find_mnist_file(truncated_train_root, "train_images").name == "train-images-idx3-ubyte"
    assert len(load_mnist("train", root=truncated_train_root)[0]) == 12


def test_fewer_labels_than_images_is_corrupt(tmp_path):
    write(
        tmp_path / "train-images-idx3-ubyte.first9.gz",
        idx_bytes(np.zeros((9, 28, 28), np.uint8)),
        gz=True,
    )
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(CorruptDatasetError, match="labels"):
        load_mnist("train", root=tmp_path)


def test_count_mismatch_with_official_names_is_corrupt(tmp_path):
    write(
        tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(np.zeros((3, 28, 28), np.uint8)), gz=True
    )
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(CorruptDatasetError):
        load_mnist("test", root=tmp_path)


def test_missing_files_in_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train-labels-idx1-ubyte"):
        find_mnist_file(tmp_path, "train_labels")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_mnist("test", root=tmp_path / "missing")
    with pytest.raises(ValueError):
        find_mnist_file(tmp_path, "val_images")


def test_uncompressed_official_names_are_found(tmp_path, small_digits):
    images, labels = small_digits
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(images), gz=False)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels), gz=False)
    got_images, got_labels = load_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_shared_data_truncated_train_set():
    root = data_root() / "mnist"
    if not (root / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST data not found at {root} (set DEEPMATCH_DATA)")
    images, labels = load_mnist("train", root=root)
    assert images.shape == (19690, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (19690,)
    assert len(read_idx(find_mnist_file(root, "train_labels"))) == 60000
    np.testing.assert_array_equal(labels[:8], [5, 0, 4, 1, 9, 2, 1, 3])  # official training order
    assert md5sum(root / MNIST_FILES["train_labels"][0]) == MNIST_FILES["train_labels"][1]
