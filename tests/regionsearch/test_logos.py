"""Tests for regionsearch.data.logos on tiny fixtures written in the official layouts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import CorruptDatasetError, DatasetNotFoundError
from regionsearch.data.logos import (
    FLICKRLOGOS27_URL,
    FLICKRLOGOS32_URL,
    LogoAnnotation,
    cached_logo_pairs,
    load_logo_pairs,
    read_flickrlogos27,
    read_flickrlogos32,
    split_by_image,
)

COLOURS = {
    "adidas": (230, 30, 30),
    "HP": (30, 30, 230),
    "Pepsi": (30, 200, 30),
    "Apple": (230, 200, 20),
    "Solo": (200, 30, 200),
}


def write_jpeg(
    path: Path,
    size: tuple[int, int],
    boxes: list[tuple[str, tuple[int, int, int, int]]],
    seed: int = 0,
):
    """A grey textured JPEG with each ``(brand, (x1, y1, x2, y2))`` box (exclusive) painted."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = (110 + rng.integers(-12, 13, size=(height, width, 3))).astype(np.uint8)
    for brand, (x1, y1, x2, y2) in boxes:
        pixels[y1:y2, x1:x2] = COLOURS[brand]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


# ----------------------------------------------------------------- FlickrLogos-32 fixture

FL32_IMAGES = {
    # (class folder in jpg/, file): (size, [(x, y, w, h)])
    ("adidas", "101.jpg"): ((120, 90), [(10, 20, 30, 25), (70, 40, 40, 30)]),
    ("adidas", "102.jpg"): ((100, 100), [(5, 5, 50, 40)]),
    ("adidas", "103.jpg"): ((90, 120), [(20, 30, 40, 40)]),
    ("HP", "201.jpg"): ((110, 80), [(30, 10, 44, 33)]),
    ("HP", "202.jpg"): ((100, 100), [(40, 40, 50, 50)]),
    ("no-logo", "301.jpg"): ((80, 80), []),
}
FL32_LISTS = {
    "trainset.txt": [("adidas", "101.jpg"), ("HP", "201.jpg")],
    "valset.txt": [("adidas", "102.jpg"), ("no-logo", "301.jpg")],
    "testset.txt": [("adidas", "103.jpg"), ("HP", "202.jpg"), ("no-logo", "301.jpg")],
}


@pytest.fixture
def fl32_root(tmp_path: Path) -> Path:
    root = tmp_path / "FlickrLogos-32_dataset_v2" / "FlickrLogos-v2"
    for index, ((cls, filename), (size, boxes)) in enumerate(FL32_IMAGES.items()):
        brand = "adidas" if cls == "adidas" else "HP"
        exclusive = [(brand, (x, y, x + w, y + h)) for x, y, w, h in boxes]
        write_jpeg(root / "classes" / "jpg" / cls / filename, size, exclusive, seed=index)
        if cls == "no-logo":
            continue
        mask_folder = "hp" if cls == "HP" else cls  # the official case quirk
        lines = ["x y width height"] + [f"{x} {y} {w} {h}" for x, y, w, h in boxes]
        bboxes = root / "classes" / "masks" / mask_folder / f"{filename}.bboxes.txt"
        bboxes.parent.mkdir(parents=True, exist_ok=True)
        bboxes.write_text("\n".join(lines) + "\n")
    for name, entries in FL32_LISTS.items():
        (root / name).write_text("".join(f"{c},{f}\n" for c, f in entries))
    trainval = FL32_LISTS["trainset.txt"] + FL32_LISTS["valset.txt"]
    (root / "trainvalset.txt").write_text("".join(f"{c},{f}\n" for c, f in trainval))
    (root / "all.txt").write_text("".join(f"{c},{f}\r\n" for c, f in FL32_IMAGES))
    return root


def test_flickrlogos32_boxes_splits_and_case_quirk(fl32_root: Path):
    test = read_flickrlogos32(fl32_root, "test")
    assert [(a.brand, a.image_path.name, a.box) for a in test] == [
        ("adidas", "103.jpg", (20.0, 30.0, 60.0, 70.0)),
        ("HP", "202.jpg", (40.0, 40.0, 90.0, 90.0)),
    ]
    assert test[1].image_path == fl32_root / "classes" / "jpg" / "HP" / "202.jpg"
    train = read_flickrlogos32(fl32_root, "train")
    assert [(a.brand, a.box) for a in train] == [
        ("adidas", (10.0, 20.0, 40.0, 45.0)),
        ("adidas", (70.0, 40.0, 110.0, 70.0)),
        ("HP", (30.0, 10.0, 74.0, 43.0)),
    ]
    assert len(read_flickrlogos32(fl32_root, "val")) == 1  # no-logo skipped
    assert len(read_flickrlogos32(fl32_root, "trainval")) == 4
    everything = read_flickrlogos32(fl32_root, "all")
    assert len(everything) == 6 and all(a.brand != "no-logo" for a in everything)
    # the parent folder of FlickrLogos-v2 is accepted too
    assert read_flickrlogos32(fl32_root.parent, "test") == test
    assert len(read_flickrlogos32(fl32_root, "all", min_size=35)) == 3
    with pytest.raises(ValueError):
        read_flickrlogos32(fl32_root, "training")


def test_flickrlogos32_pairs_use_painted_boxes(fl32_root: Path):
    annotations = read_flickrlogos32(fl32_root, "all")
    pairs = load_logo_pairs(annotations, n_pairs=10, seed=3, query_size=32, reference_size=80)
    assert list(pairs["brands"]) == ["HP", "adidas"]
    check_pairs(pairs, 32, 80)


def test_flickrlogos32_errors(fl32_root: Path, tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos32(tmp_path / "missing")
    message = str(info.value)
    assert str(tmp_path / "missing") in message and FLICKRLOGOS32_URL in message
    assert "Augsburg" in message and "DEEPMATCH_DATA" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="classes"):
        read_flickrlogos32(tmp_path / "empty")

    (fl32_root / "valset.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="valset.txt"):
        read_flickrlogos32(fl32_root, "val")

    bboxes = fl32_root / "classes" / "masks" / "adidas" / "103.jpg.bboxes.txt"
    bboxes.write_text("x y width height\n20 30 40\n")
    with pytest.raises(CorruptDatasetError) as info:
        read_flickrlogos32(fl32_root, "test")
    assert "line 2" in str(info.value) and str(bboxes) in str(info.value)
    bboxes.write_text("x y width height\n20 30 forty 40\n")
    with pytest.raises(CorruptDatasetError, match="line 2"):
        read_flickrlogos32(fl32_root, "test")
    bboxes.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos32(fl32_root, "test")
    assert str(bboxes) in str(info.value)

    image = fl32_root / "classes" / "jpg" / "HP" / "201.jpg"
    image.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos32(fl32_root, "train")
    assert str(image) in str(info.value) and "line 2" in str(info.value)

    (fl32_root / "trainset.txt").write_text("adidas;101.jpg\n")
    with pytest.raises(CorruptDatasetError, match="line 1"):
        read_flickrlogos32(fl32_root, "train")


# ----------------------------------------------------------------- FlickrLogos-27 fixture

# image: (size, [(brand, inclusive x1, y1, x2, y2)])
FL27_IMAGES = {
    "1001.jpg": ((200, 150), [("Pepsi", 20, 30, 79, 89)]),
    "1002.jpg": ((180, 180), [("Pepsi", 100, 100, 159, 149), ("Apple", 10, 10, 59, 69)]),
    "1003.jpg": ((160, 120), [("Pepsi", 0, 0, 49, 39)]),
    "1004.jpg": ((220, 140), [("Apple", 120, 40, 199, 119)]),
    "1005.jpg": ((150, 150), [("Solo", 30, 30, 89, 89), ("Pepsi", 120, 120, 124, 124)]),
    "1006.jpg": ((190, 130), [("Apple", 60, 20, 139, 99)]),
}


def fl27_lines() -> list[str]:
    lines = []
    for image, (_, boxes) in FL27_IMAGES.items():
        for brand, x1, y1, x2, y2 in boxes:
            for subset in (1, 2, 6):  # the official file repeats each box per subset id
                lines.append(f"{image} {brand} {subset} {x1} {y1} {x2} {y2} ")
    return lines


@pytest.fixture
def fl27_root(tmp_path: Path) -> Path:
    root = tmp_path / "flickrlogos27"
    for index, (image, (size, boxes)) in enumerate(FL27_IMAGES.items()):
        exclusive = [(b, (x1, y1, x2 + 1, y2 + 1)) for b, x1, y1, x2, y2 in boxes]
        write_jpeg(root / "images" / image, size, exclusive, seed=10 + index)
    (root / "flickr_logos_27_dataset_training_set_annotation.txt").write_text(
        "\n".join(fl27_lines()) + "\n"
    )
    return root


def test_flickrlogos27_dedupe_and_boxes(fl27_root: Path):
    annotations = read_flickrlogos27(fl27_root)
    assert len(fl27_lines()) == 24
    assert len(annotations) == 7  # 8 unique boxes, the 5x5 Pepsi box is below min_size=10
    assert annotations[0] == LogoAnnotation(
        fl27_root / "images" / "1001.jpg", "Pepsi", (20.0, 30.0, 80.0, 90.0)
    )
    assert all(isinstance(a.box[0], float) for a in annotations)
    assert len(set(annotations)) == len(annotations)
    assert len(read_flickrlogos27(fl27_root, min_size=0)) == 8
    assert {a.brand for a in annotations} == {"Pepsi", "Apple", "Solo"}


def test_flickrlogos27_official_nested_image_folder(fl27_root: Path):
    (fl27_root / "images").rename(fl27_root / "flickr_logos_27_dataset_images")
    annotations = read_flickrlogos27(fl27_root)
    assert annotations[0].image_path == fl27_root / "flickr_logos_27_dataset_images" / "1001.jpg"
    # the folder containing the dataset folder works as root too
    assert read_flickrlogos27(fl27_root.parent) == annotations


def check_pairs(pairs: dict, query_size: int, reference_size: int) -> None:
    n = len(pairs["boxes"])
    assert (
        pairs["queries"].shape == (n, query_size, query_size, 3)
        and pairs["queries"].dtype == np.uint8
    )
    assert pairs["references"].shape == (n, reference_size, reference_size, 3)
    assert pairs["references"].dtype == np.uint8
    assert pairs["boxes"].dtype == np.float32 and pairs["query_labels"].dtype == np.int64
    assert (pairs["query_images"] != pairs["reference_images"]).all()
    boxes = pairs["boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= reference_size).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    for i in range(n):
        brand = str(pairs["brands"][pairs["query_labels"][i]])
        colour = np.array(COLOURS[brand], dtype=np.float64)
        # the query is a clean crop of the brand's painted logo
        query = pairs["queries"][i].astype(np.float64)
        assert np.abs(query[2:-2, 2:-2].mean(axis=(0, 1)) - colour).max() < 20
        # the reference shows the same brand inside the scaled box
        x1, y1, x2, y2 = boxes[i]
        inner = pairs["references"][i][
            int(np.ceil(y1)) + 1 : int(np.floor(y2)) - 1,
            int(np.ceil(x1)) + 1 : int(np.floor(x2)) - 1,
        ].astype(np.float64)
        assert inner.size > 0
        assert np.abs(inner.reshape(-1, 3) - colour).max() < 40
        # ... and not just outside it: a ring 3 px outside the box is background or another logo
        outside_left = int(np.floor(x1)) - 3
        if outside_left >= 0:
            column = pairs["references"][i][
                int(np.ceil(y1)) + 1 : int(np.floor(y2)) - 1, outside_left
            ]
            assert np.abs(column.astype(np.float64) - colour).max(axis=1).min() > 40


def test_pairs_match_brand_and_boxes(fl27_root: Path):
    annotations = read_flickrlogos27(fl27_root)
    pairs = load_logo_pairs(annotations, n_pairs=20, seed=0, query_size=24, reference_size=96)
    assert list(pairs["brands"]) == ["Apple", "Pepsi", "Solo"]
    # Solo has only one image: never a target
    assert set(pairs["query_labels"].tolist()) == {0, 1}
    check_pairs(pairs, 24, 96)
    # every target is used before any repeats: all 6 eligible boxes appear
    assert (
        len({(r, tuple(b)) for r, b in zip(pairs["reference_images"], pairs["boxes"].tolist())})
        == 6
    )
    # scaling: 1001.jpg is 200x150, its box (20, 30, 80, 90) -> x * 96/200, y * 96/150
    index = [i for i, r in enumerate(pairs["reference_images"]) if r.endswith("1001.jpg")][0]
    np.testing.assert_allclose(pairs["boxes"][index], [9.6, 19.2, 38.4, 57.6], rtol=1e-6)


def test_pairs_are_deterministic_by_seed(fl27_root: Path):
    annotations = read_flickrlogos27(fl27_root)
    first = load_logo_pairs(annotations, n_pairs=12, seed=7)
    second = load_logo_pairs(annotations, n_pairs=12, seed=7)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    other = load_logo_pairs(annotations, n_pairs=12, seed=8)
    assert not (
        np.array_equal(first["boxes"], other["boxes"])
        and np.array_equal(first["query_images"], other["query_images"])
    )
    balanced = load_logo_pairs(annotations, n_pairs=12, seed=7, balance_brands=True)
    check_pairs(balanced, 64, 160)


def test_pairs_min_box_size_and_empty(fl27_root: Path):
    annotations = read_flickrlogos27(fl27_root)
    # in 160 px references only the Apple boxes of 1004.jpg (58 x 91 px) and 1006.jpg
    # (67 x 98 px) are >= 55 px on both sides; Pepsi boxes stay usable as queries only
    big = load_logo_pairs(annotations, n_pairs=10, seed=0, min_box_size=55)
    assert {Path(r).name for r in big["reference_images"]} == {"1004.jpg", "1006.jpg"}
    assert (big["boxes"][:, 2:] - big["boxes"][:, :2] >= 55).all()
    with pytest.raises(ValueError, match="two different images"):
        load_logo_pairs([a for a in annotations if a.brand == "Solo"], n_pairs=3, seed=0)
    assert len(load_logo_pairs(annotations, n_pairs=0, seed=0)["boxes"]) == 0


def test_split_by_image_keeps_images_apart(fl27_root: Path):
    annotations = read_flickrlogos27(fl27_root)
    parts = split_by_image(annotations, (0.5, 0.25, 0.25), seed=1)
    images = [{a.image_path for a in part} for part in parts]
    assert (
        not (images[0] & images[1]) and not (images[0] & images[2]) and not (images[1] & images[2])
    )
    assert sum(len(p) for p in parts) == len(annotations)
    assert [len(i) for i in images] == [3, 1, 2]  # 6 images: round(3), round(4.5)-3, rest
    assert split_by_image(annotations, (0.5, 0.25, 0.25), seed=1) == parts
    # synthetic: many boxes per image
    many = [
        LogoAnnotation(Path(f"/x/{i % 40}.jpg"), f"b{i % 3}", (0.0, 0.0, 10.0 + i, 10.0))
        for i in range(200)
    ]
    parts = split_by_image(many, seed=5)
    images = [{a.image_path for a in part} for part in parts]
    assert [len(i) for i in images] == [28, 4, 8]
    assert len(images[0] | images[1] | images[2]) == 40

    # pairs restricted to one split only use that split's images
    train = load_logo_pairs(annotations, 8, seed=0, split_fraction=(0.5, 0.0, 0.5), split="train")
    test = load_logo_pairs(annotations, 8, seed=0, split_fraction=(0.5, 0.0, 0.5), split="test")
    train_images = set(train["query_images"]) | set(train["reference_images"])
    test_images = set(test["query_images"]) | set(test["reference_images"])
    assert not train_images & test_images
    assert list(train["brands"]) == list(test["brands"]) == ["Apple", "Pepsi", "Solo"]


def test_cached_logo_pairs(fl27_root: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    kwargs = {
        "dataset": "flickrlogos27",
        "root": str(fl27_root),
        "n_pairs": 5,
        "seed": 0,
        "query_size": 16,
    }
    first = cached_logo_pairs(cache, "fl27", kwargs)
    files = list(cache.glob("fl27-*.npz"))
    assert len(files) == 1
    (fl27_root / "flickr_logos_27_dataset_training_set_annotation.txt").unlink()
    second = cached_logo_pairs(cache, "fl27", kwargs)  # a hit never touches the dataset
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    annotations = [LogoAnnotation(Path(p), "x", (0.0, 0.0, 1.0, 1.0)) for p in ("a", "b")]
    with pytest.raises(ValueError):
        cached_logo_pairs(cache, "bad", {"n_pairs": 1, "seed": 0})
    with pytest.raises(DatasetNotFoundError):
        cached_logo_pairs(cache, "fl27", {**kwargs, "seed": 1})
    with pytest.raises(DatasetNotFoundError):  # listed images that do not exist
        cached_logo_pairs(cache, "direct", {"annotations": annotations, "n_pairs": 1, "seed": 0})


# ----------------------------------------------------------------- FlickrLogos-27 errors


def test_flickrlogos27_missing_root_and_annotation(tmp_path: Path, fl27_root: Path):
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos27(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and FLICKRLOGOS27_URL in str(info.value)

    annotation = fl27_root / "flickr_logos_27_dataset_training_set_annotation.txt"
    annotation.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos27(fl27_root)
    assert str(annotation) in str(info.value) and "DEEPMATCH_DATA" in str(info.value)


def test_flickrlogos27_missing_image(fl27_root: Path):
    missing = fl27_root / "images" / "1004.jpg"
    missing.unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        read_flickrlogos27(fl27_root)
    assert str(missing) in str(info.value)


def test_flickrlogos27_missing_image_folder(fl27_root: Path):
    for image in (fl27_root / "images").iterdir():
        image.unlink()
    (fl27_root / "images").rmdir()
    (fl27_root / "flickr_logos_27_dataset_images.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="tar xzf"):
        read_flickrlogos27(fl27_root)


@pytest.mark.parametrize(
    "bad_line",
    [
        "1002.jpg Pepsi 1 10 10 59",
        "1002.jpg Pepsi 1 10 ten 59 60",
        "1002.jpg Pepsi one 10 10 59 60",
    ],
)
def test_flickrlogos27_malformed_line(fl27_root: Path, bad_line: str):
    annotation = fl27_root / "flickr_logos_27_dataset_training_set_annotation.txt"
    lines = fl27_lines()
    lines.insert(4, bad_line)
    annotation.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptDatasetError) as info:
        read_flickrlogos27(fl27_root)
    assert "line 5" in str(info.value) and str(annotation) in str(info.value)


def test_truncated_jpeg(fl27_root: Path):
    image = fl27_root / "images" / "1006.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    annotations = read_flickrlogos27(fl27_root)  # readers do not decode
    with pytest.raises(CorruptDatasetError) as info:
        load_logo_pairs(annotations, n_pairs=10, seed=0)
    assert str(image) in str(info.value)
    image.write_bytes(b"not a jpeg at all")
    with pytest.raises(CorruptDatasetError) as info:
        load_logo_pairs(annotations, n_pairs=10, seed=0)
    assert str(image) in str(info.value)


# ----------------------------------------------------------------- real data


def real_flickrlogos27() -> Path:
    env = os.environ.get("DEEPMATCH_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "flickrlogos27"


@pytest.mark.skipif(
    not (real_flickrlogos27() / "flickr_logos_27_dataset_training_set_annotation.txt").is_file(),
    reason="FlickrLogos-27 not found (set DEEPMATCH_DATA to the data root containing flickrlogos27/)",
)
def test_real_flickrlogos27_pairs():
    annotations = read_flickrlogos27(real_flickrlogos27())
    brands = {a.brand for a in annotations}
    assert len(brands) == 27
    assert len(annotations) > 500
    assert len(set(annotations)) == len(annotations)
    assert all(a.width >= 10 and a.height >= 10 for a in annotations)
    pairs = load_logo_pairs(annotations, n_pairs=50, seed=0)
    assert pairs["queries"].shape == (50, 64, 64, 3)
    assert pairs["references"].shape == (50, 160, 160, 3)
    assert (pairs["query_images"] != pairs["reference_images"]).all()
    boxes = pairs["boxes"]
    assert (
        (boxes[:, :2] >= 0).all()
        and (boxes[:, 2:] <= 160).all()
        and (boxes[:, 2:] > boxes[:, :2]).all()
    )
    assert len(pairs["brands"]) == 27
    assert pairs["queries"].std() > 10 and pairs["references"].std() > 10
