"""Translated / Cluttered / Mixed MNIST pair generators and their cache."""

from __future__ import annotations

import numpy as np
import pytest

from regionsearch.data.canvases import PRESETS, CanvasSpec, cached_pairs, generate_pairs, get_spec
from regionsearch.data.mnist import load_mnist

N = 64


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist("test")  # the embedded default
    return images[:2000], labels[:2000]


@pytest.fixture(scope="module")
def pairs(pool) -> dict[str, dict[str, np.ndarray]]:
    images, labels = pool
    return {name: generate_pairs(images, labels, N, spec, seed=3) for name, spec in PRESETS.items()}


def crop(reference: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    return reference[y1:y2, x1:x2]


def intersects(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return (w > 0) & (h > 0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_and_dtypes(pairs, name):
    out, size, k = pairs[name], PRESETS[name].canvas_size, PRESETS[name].num_distractor_digits
    assert out["queries"].shape == (N, 28, 28) and out["queries"].dtype == np.uint8
    assert out["references"].shape == (N, size, size) and out["references"].dtype == np.uint8
    assert out["boxes"].shape == (N, 4) and out["boxes"].dtype == np.float32
    assert (
        out["distractor_boxes"].shape == (N, k, 4) and out["distractor_boxes"].dtype == np.float32
    )
    for key in ("query_labels", "target_index", "query_index"):
        assert out[key].shape == (N,) and out[key].dtype == np.int64
    assert out["distractor_labels"].shape == (N, k)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_box_inside_canvas_and_digit_sized(pairs, name):
    boxes, size = pairs[name]["boxes"], PRESETS[name].canvas_size
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
    np.testing.assert_array_equal(boxes[:, 2] - boxes[:, 0], 28)
    np.testing.assert_array_equal(boxes[:, 3] - boxes[:, 1], 28)
    np.testing.assert_array_equal(boxes, np.round(boxes))  # integer offsets
    assert len(np.unique(boxes[:, :2], axis=0)) > N // 2  # positions actually vary


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_query_is_another_instance_of_the_target_class(pool, pairs, name):
    images, labels = pool
    out = pairs[name]
    assert (out["query_index"] != out["target_index"]).all()
    np.testing.assert_array_equal(labels[out["query_index"]], labels[out["target_index"]])
    np.testing.assert_array_equal(out["query_labels"], labels[out["target_index"]])
    np.testing.assert_array_equal(out["queries"], images[out["query_index"]])  # clean, as is


def test_translated_target_exact_and_zero_elsewhere(pool, pairs):
    images, _ = pool
    out = pairs["translated"]
    for ref, box, t in zip(out["references"], out["boxes"], out["target_index"]):
        np.testing.assert_array_equal(crop(ref, box), images[t])
        outside = ref.copy()
        x1, y1, x2, y2 = (int(v) for v in box)
        outside[y1:y2, x1:x2] = 0
        assert not outside.any()


@pytest.mark.parametrize("name", ["cluttered", "cluttered60", "mixed"])
def test_cluttered_target_present_and_clutter_outside(pool, pairs, name):
    images, _ = pool
    out = pairs[name]
    clutter_outside = 0
    for ref, box, t in zip(out["references"], out["boxes"], out["target_index"]):
        assert (crop(ref, box) >= images[t]).all()  # added then clipped: never below the digit
        outside = ref.copy()
        x1, y1, x2, y2 = (int(v) for v in box)
        outside[y1:y2, x1:x2] = 0
        clutter_outside += bool(outside.any())
    assert clutter_outside >= 0.9 * N
    # additive: the reference is not just the target, and some pixels saturate or sum
    assert out["references"].sum(dtype=np.int64) > sum(
        images[t].sum(dtype=np.int64) for t in out["target_index"]
    )


def test_clutter_is_additive_and_clipped(pool):
    images, labels = pool
    spec = CanvasSpec("cluttered", 40, num_clutter=30, clutter_size=8)
    out = generate_pairs(images, labels, 32, spec, seed=0)
    refs = out["references"]
    assert refs.max() == 255
    # pixels that are not a single uint8 digit value appear only through sums
    untouched = [
        np.array_equal(crop(r, b), images[t])
        for r, b, t in zip(refs, out["boxes"], out["target_index"])
    ]
    assert not all(untouched)


def test_target_untouched_without_overlap(pool):
    """Where no fragment lands, the target pixels are exactly the digit's (clutter far away)."""
    images, labels = pool
    out = generate_pairs(images, labels, 200, PRESETS["cluttered"], seed=5)
    exact = sum(
        np.array_equal(crop(r, b), images[t])
        for r, b, t in zip(out["references"], out["boxes"], out["target_index"])
    )
    assert exact > 0  # with 8 small fragments on 100x100, many targets are untouched


def test_mixed_distractors(pool, pairs):
    images, labels = pool
    out = pairs["mixed"]
    k = PRESETS["mixed"].num_distractor_digits
    assert (out["distractor_labels"] != out["query_labels"][:, None]).all()
    np.testing.assert_array_equal(out["distractor_labels"], labels[out["distractor_index"]])
    assert not intersects(out["boxes"][:, None, :], out["distractor_boxes"]).any()
    for i in range(k):
        for j in range(i + 1, k):
            assert not intersects(
                out["distractor_boxes"][:, i], out["distractor_boxes"][:, j]
            ).any()
    db = out["distractor_boxes"]
    assert (db[..., :2] >= 0).all() and (db[..., 2:] <= PRESETS["mixed"].canvas_size).all()
    np.testing.assert_array_equal(db[..., 2] - db[..., 0], 28)
    # each distractor digit is present (added) at its box
    for ref, boxes, idx in zip(out["references"], db, out["distractor_index"]):
        for box, d in zip(boxes, idx):
            assert (crop(ref, box) >= images[d]).all()


def test_mixed_impossible_placement_raises(pool):
    images, labels = pool
    spec = CanvasSpec(
        "mixed", 40, num_distractor_digits=1
    )  # a 28 box never fits beside another in 40
    with pytest.raises(ValueError, match="distractor"):
        generate_pairs(images, labels, 4, spec, seed=0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_deterministic(pool, pairs, name):
    images, labels = pool
    again = generate_pairs(images, labels, N, PRESETS[name], seed=3)
    other = generate_pairs(images, labels, N, PRESETS[name], seed=4)
    assert again.keys() == pairs[name].keys()
    for key in again:
        np.testing.assert_array_equal(again[key], pairs[name][key])
    assert not np.array_equal(other["references"], pairs[name]["references"])
    assert not np.array_equal(other["boxes"], pairs[name]["boxes"])


def test_chunking_does_not_change_output(pool):
    images, labels = pool
    a = generate_pairs(images, labels, 50, "mixed", seed=1, chunk_size=7)
    b = generate_pairs(images, labels, 50, "mixed", seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_zero_pairs_and_spec_validation(pool):
    images, labels = pool
    out = generate_pairs(images, labels, 0, "mixed", seed=0)
    assert out["references"].shape == (0, 100, 100) and out["distractor_boxes"].shape == (0, 3, 4)
    with pytest.raises(ValueError):
        CanvasSpec("rotated")
    with pytest.raises(ValueError):
        CanvasSpec("translated", num_clutter=2)
    with pytest.raises(ValueError):
        generate_pairs(
            images, labels, 1, CanvasSpec("cluttered", 20), 0
        )  # digit larger than canvas
    assert get_spec("cluttered60") == CanvasSpec("cluttered", 60, num_clutter=4)
    assert get_spec({"preset": "mixed", "num_distractor_digits": 1}).num_distractor_digits == 1


def test_cached_pairs_writes_once_and_reloads(tmp_path, pool):
    images, labels = pool
    first = cached_pairs(tmp_path, "val", images, labels, 16, "cluttered60", seed=2)
    files = list(tmp_path.glob("val-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = cached_pairs(tmp_path, "val", images, labels, 16, "cluttered60", seed=2)
    assert files[0].stat().st_mtime_ns == mtime  # not rewritten
    fresh = generate_pairs(images, labels, 16, "cluttered60", seed=2)
    for key in fresh:
        np.testing.assert_array_equal(first[key], fresh[key])
        np.testing.assert_array_equal(second[key], fresh[key])
        assert second[key].dtype == fresh[key].dtype
    # another seed, n, spec or pool is another file
    cached_pairs(tmp_path, "val", images, labels, 16, "cluttered60", seed=3)
    cached_pairs(tmp_path, "val", images, labels, 17, "cluttered60", seed=2)
    cached_pairs(tmp_path, "val", images[:-1], labels[:-1], 16, "cluttered60", seed=2)
    assert len(list(tmp_path.glob("val-*.npz"))) == 4
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("garbage", [b"", b"not a zip file at all", b"PK\x03\x04broken"])
def test_corrupt_cache_is_regenerated(tmp_path, pool, garbage):
    images, labels = pool
    first = cached_pairs(tmp_path, "test", images, labels, 8, "translated", seed=0)
    (path,) = tmp_path.glob("test-*.npz")
    path.write_bytes(garbage)
    again = cached_pairs(tmp_path, "test", images, labels, 8, "translated", seed=0)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
    reread = cached_pairs(tmp_path, "test", images, labels, 8, "translated", seed=0)
    np.testing.assert_array_equal(reread["references"], first["references"])
    assert path.stat().st_size > 1000  # rewritten


def test_truncated_cache_is_regenerated(tmp_path, pool):
    images, labels = pool
    first = cached_pairs(tmp_path, "t", images, labels, 8, "mixed", seed=0)
    (path,) = tmp_path.glob("t-*.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = cached_pairs(tmp_path, "t", images, labels, 8, "mixed", seed=0)
    np.testing.assert_array_equal(again["references"], first["references"])
