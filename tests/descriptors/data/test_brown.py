"""Brown / UBC PhotoTour reader, cache, errors, samplers and datamodule on fixtures written
in the official layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.errors import CorruptDatasetError, DatasetNotFoundError
from descriptors.data import brown, samplers
from descriptors.data.brown import (
    load_subset,
    read_matches,
    read_subset,
    subset_digest,
    write_subset,
)
from descriptors.data.datamodule import BrownDataModule
from descriptors.data.samplers import (
    appearance_neighbours,
    lookalike_match_pairs,
    sample_match_pairs,
    scene_ids,
)

N_PATCHES = 300  # two tiles, the second partly filled


def encoded_patches(n: int) -> np.ndarray:
    """Patch k carries k in its first two pixels (k % 256, k // 256) over random texture."""
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
    patches[:, 0, 0] = np.arange(n) % 256
    patches[:, 0, 1] = np.arange(n) // 256
    return patches


def decode(batch_patches: torch.Tensor) -> np.ndarray:
    pixels = (batch_patches[:, 0, 0, :2] * 255).round().long().numpy()
    return pixels[:, 0] + 256 * pixels[:, 1]


def point_ids_for(n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    sizes = rng.integers(2, 5, n)  # 2..4 patches per point, consecutive like the official files
    return np.repeat(np.arange(n), sizes)[:n]


@pytest.fixture
def brown_root(tmp_path) -> Path:
    root = tmp_path / "data"
    for name, seed in (("liberty", 0), ("notredame", 1)):
        ids = point_ids_for(N_PATCHES)
        pairs = sample_match_pairs(ids, 200, seed)
        write_subset(root / "brown" / name, encoded_patches(N_PATCHES), ids, match_files={"m50_100000_100000_0.txt": pairs})
    return root


def test_official_tile_order(tmp_path):
    """A tile written by hand (patch k at row k // 16, column k % 16) reads back in order."""
    folder = tmp_path / "liberty"
    folder.mkdir()
    tile = np.zeros((1024, 1024), dtype=np.uint8)
    for k in range(256):
        r, c = divmod(k, 16)
        tile[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = k
    cv2.imwrite(str(folder / "patches0000.bmp"), tile)
    (folder / "info.txt").write_text("".join(f"{k // 2} 0\n" for k in range(200)))
    subset = read_subset(folder)
    assert subset.patches.shape == (200, 64, 64) and subset.interest is None
    np.testing.assert_array_equal(subset.patches[:, 10, 20], np.arange(200))
    np.testing.assert_array_equal(subset.point_ids, np.arange(200) // 2)


def test_write_read_roundtrip_and_cache(brown_root, tmp_path):
    folder = brown_root / "brown" / "liberty"
    assert sorted(p.name for p in folder.glob("*.bmp")) == ["patches0000.bmp", "patches0001.bmp"]
    subset = read_subset(folder)
    np.testing.assert_array_equal(subset.patches, encoded_patches(N_PATCHES))
    np.testing.assert_array_equal(subset.point_ids, point_ids_for(N_PATCHES))
    assert subset.interest.shape == (N_PATCHES, 5)
    matches = subset.matches()
    assert matches.shape == (200, 3) and matches[:, 2].sum() == 100
    ids = subset.point_ids
    np.testing.assert_array_equal(matches[:, 2], ids[matches[:, 0]] == ids[matches[:, 1]])

    cache = tmp_path / "cache"
    cached = load_subset(brown_root, "liberty", cache)
    assert isinstance(cached.patches, np.memmap)
    np.testing.assert_array_equal(cached.patches, subset.patches)
    (npy,) = cache.glob("brown/liberty-*/patches.npy")
    stamp = npy.stat().st_mtime_ns
    load_subset(brown_root, "liberty", cache)
    assert npy.stat().st_mtime_ns == stamp  # the second load reuses the cache


def test_truncated_or_garbled_patch_cache_is_rebuilt(brown_root, tmp_path):
    """A cut ``patches.npy`` (a full disk, a killed copy) gave numpy's "mmap length is greater
    than file size" with no path: it is only a copy of the tiles, so it is rebuilt; so is one
    with a garbled header or ``meta.json``."""
    cache = tmp_path / "cache"
    expected = np.asarray(load_subset(brown_root, "liberty", cache).patches).copy()
    (npy,) = cache.glob("brown/liberty-*/patches.npy")
    whole = npy.read_bytes()
    for broken in (whole[: len(whole) // 2], whole[:60], b"garbage" * 10, whole + b"\0" * 64):
        npy.write_bytes(broken)
        np.testing.assert_array_equal(load_subset(brown_root, "liberty", cache).patches, expected)
        assert npy.read_bytes() == whole
    meta = npy.with_name("meta.json")
    meta.write_text("{")
    np.testing.assert_array_equal(load_subset(brown_root, "liberty", cache).patches, expected)
    assert json.loads(meta.read_text())["n_patches"] == N_PATCHES
    # nothing left beside the cache but its lock
    assert sorted(p.name for p in npy.parent.iterdir()) == ["meta.json", "patches.npy"]
    assert sorted(p.name for p in npy.parent.parent.iterdir()) == sorted([npy.parent.name, f"{npy.parent.name}.lock"])


def test_patch_cache_cut_after_its_check_is_one_line(brown_root, tmp_path, monkeypatch):
    """Should the cache be cut between its check and its loading (another process), the error
    is one CorruptDatasetError line naming the file, not numpy's."""
    cache = tmp_path / "cache"
    load_subset(brown_root, "liberty", cache)
    (npy,) = cache.glob("brown/liberty-*/patches.npy")
    npy.write_bytes(npy.read_bytes()[:1000])
    monkeypatch.setattr(brown, "_patch_cache_valid", lambda *args: True)
    with pytest.raises(CorruptDatasetError, match="patches.npy") as error:
        load_subset(brown_root, "liberty", cache)
    assert error.value.path == npy and "\n" not in str(error.value)


def test_subset_digest_names_the_data(brown_root, tmp_path):
    folder = brown_root / "brown" / "liberty"
    cached = load_subset(brown_root, "liberty", tmp_path / "cache")
    digest = subset_digest(cached)
    assert len(digest) == 32 and digest == subset_digest(read_subset(folder)) == subset_digest(cached, chunk=7)
    patches = np.array(cached.patches)
    patches[123, 5, 5] ^= 1  # one bit of one pixel
    assert subset_digest(type(cached)(cached.name, patches, cached.point_ids, cached.interest, cached.folder)) != digest
    ids = np.array(cached.point_ids)
    ids[0] += 1
    assert subset_digest(type(cached)(cached.name, cached.patches, ids, cached.interest, cached.folder)) != digest


def test_missing_subset_names_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="yosemite") as info:
        load_subset(tmp_path, "yosemite")
    assert str(tmp_path) in str(info.value) and "brown" in str(info.value)


def test_truncated_bmp_names_file(brown_root):
    tile = brown_root / "brown" / "liberty" / "patches0001.bmp"
    tile.write_bytes(tile.read_bytes()[:5000])
    with pytest.raises(CorruptDatasetError, match="patches0001.bmp"):
        read_subset(tile.parent)


def test_missing_tile_names_file(brown_root):
    tile = brown_root / "brown" / "liberty" / "patches0001.bmp"
    tile.unlink()
    with pytest.raises(DatasetNotFoundError, match="patches0001.bmp"):
        read_subset(tile.parent)


def test_bad_match_file_columns(brown_root):
    path = brown_root / "brown" / "liberty" / "m50_100000_100000_0.txt"
    path.write_text("1 2 0 3 4\n")
    with pytest.raises(CorruptDatasetError, match="m50_100000_100000_0.txt.*|columns") as info:
        read_matches(path)
    assert str(path) in str(info.value) and "5 columns" in str(info.value)


def _module(root, cache, **kwargs) -> BrownDataModule:
    defaults = {"data_root": str(root), "train_subset": "liberty", "test_subset": "notredame", "n_train": 64, "n_val": 50, "n_test": 80, "batch_size": 16, "eval_batch_size": 40, "cache_dir": str(cache)}
    module = BrownDataModule(**{**defaults, **kwargs})
    module.setup("fit")
    return module


def test_pairs_are_balanced_and_labelled_by_point(brown_root, tmp_path):
    module = _module(brown_root, tmp_path / "cache", sampler="pairs")
    ids = point_ids_for(N_PATCHES)
    labels = []
    for batch in module.train_dataloader():
        assert set(batch) == {"patch1", "patch2", "label"}
        assert batch["patch1"].shape == (16, 1, 64, 64) and batch["patch1"].dtype == torch.float32
        assert 0 <= batch["patch1"].min() and batch["patch1"].max() <= 1
        a, b = decode(batch["patch1"]), decode(batch["patch2"])
        np.testing.assert_array_equal(batch["label"].numpy(), (ids[a] == ids[b]).astype(np.float32))
        assert (a[batch["label"].numpy() == 1] != b[batch["label"].numpy() == 1]).all()
        labels.append(batch["label"])
    labels = torch.cat(labels)
    assert len(labels) == 64 and labels.sum() == 32


def test_triplets(brown_root, tmp_path):
    module = _module(brown_root, tmp_path / "cache", sampler="triplets")
    ids = point_ids_for(N_PATCHES)
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"anchor", "positive", "negative"}
    a, p, n = (decode(batch[k]) for k in ("anchor", "positive", "negative"))
    assert (ids[a] == ids[p]).all() and (a != p).all() and (ids[a] != ids[n]).all()


def test_points_batches_hold_distinct_points(brown_root, tmp_path):
    module = _module(brown_root, tmp_path / "cache", sampler="points", n_train=96, batch_size=32)
    ids = point_ids_for(N_PATCHES)
    batches = list(module.train_dataloader())
    assert len(batches) == 3
    for batch in batches:
        assert set(batch) == {"anchor", "positive"}
        a, p = decode(batch["anchor"]), decode(batch["positive"])
        assert (ids[a] == ids[p]).all() and (a != p).all()
        assert len(set(ids[a])) == 32  # B pairs from B distinct 3D points


def test_eval_loaders_and_caps(brown_root, tmp_path):
    module = _module(brown_root, tmp_path / "cache")
    module.setup("test")
    val = list(module.val_dataloader())
    test = list(module.test_dataloader())
    assert sum(len(b["label"]) for b in val) == 50 and sum(len(b["label"]) for b in test) == 80
    matches = read_matches(brown_root / "brown" / "notredame" / "m50_100000_100000_0.txt")
    first = test[0]
    assert set(first) == {"patch1", "patch2", "label"}
    np.testing.assert_array_equal(decode(first["patch1"]), matches[:40, 0])
    np.testing.assert_array_equal(first["label"].numpy(), matches[:40, 2])


def test_deterministic_by_seed_and_epoch(brown_root, tmp_path):
    def first_batch(seed, epoch=0):
        module = _module(brown_root, tmp_path / "cache", sampler="pairs", seed=seed, augment=True)
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    a, b = first_batch(3), first_batch(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["patch1"], first_batch(4)["patch1"])
    assert not torch.equal(a["patch1"], first_batch(3, epoch=1)["patch1"])


def test_augmentation_is_the_same_for_both_patches(brown_root, tmp_path):
    module = _module(brown_root, tmp_path / "cache", sampler="points", augment=True, n_train=16)
    plain = _module(brown_root, tmp_path / "cache", sampler="points", augment=False, n_train=16)
    aug_item, plain_item = module.splits["train"][0], plain.splits["train"][0]
    # find the dihedral transform that maps the plain anchor to the augmented one
    candidates = [(k, f) for k in range(4) for f in (False, True)]

    def apply(x, k, f):
        x = torch.rot90(x, k, dims=(1, 2))
        return torch.flip(x, dims=(2,)) if f else x

    found = [c for c in candidates if torch.equal(apply(plain_item["anchor"], *c), aug_item["anchor"])]
    assert found and torch.equal(apply(plain_item["positive"], *found[0]), aug_item["positive"])


# --------------------------------------------------------------------------- hard negatives


def scene_fixture(root: Path, n_scenes: int = 3, points_per_scene: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A subset of ``n_scenes`` scenes (images 3s, 3s+1, 3s+2 see the points of scene s; point
    p of a scene in two or three of them); returns (point ids, scene of every patch)."""
    ids, images, scenes = [], [], []
    for scene in range(n_scenes):
        for point in range(points_per_scene):
            n_views = 2 + point % 2
            ids += [scene * points_per_scene + point] * n_views
            images += [3 * scene + (point + v) % 3 for v in range(n_views)]
            scenes += [scene] * n_views
    interest = np.zeros((len(ids), 5))
    interest[:, 0] = images
    ids_arr = np.array(ids)
    pairs = sample_match_pairs(ids_arr, 100, 0)
    write_subset(root / "brown" / "scenes", encoded_patches(len(ids)), ids_arr, interest, {"m50_100000_100000_0.txt": pairs})
    return ids_arr, np.array(scenes)


def test_scene_ids_are_the_connected_image_components(tmp_path):
    ids, scenes = scene_fixture(tmp_path)
    subset = read_subset(tmp_path / "brown" / "scenes")
    found = scene_ids(subset.point_ids, subset.interest)
    # the same partition as the fixture's scenes (labels may be renumbered)
    assert len(np.unique(found)) == 3
    for scene in range(3):
        assert len(np.unique(found[scenes == scene])) == 1
    # no interest.txt: one scene
    assert (scene_ids(ids, None) == 0).all()


@pytest.mark.parametrize("sampler", ["pairs", "triplets", "points"])
def test_hard_negatives_come_from_the_anchor_scene(tmp_path, sampler):
    ids, scenes = scene_fixture(tmp_path)
    module = BrownDataModule(data_root=str(tmp_path), train_subset="scenes", test_subset="scenes", sampler=sampler,
                             n_train=96, batch_size=32, cache_dir=str(tmp_path / "cache"), hard_negatives=1.0)
    module.setup("fit")
    same, total = 0, 0
    for batch in module.train_dataloader():
        if sampler == "pairs":
            a, b = decode(batch["patch1"]), decode(batch["patch2"])
            negative = batch["label"].numpy() == 0
            assert (ids[a[negative]] != ids[b[negative]]).all()
            same += int((scenes[a[negative]] == scenes[b[negative]]).sum())
            total += int(negative.sum())
        elif sampler == "triplets":
            a, n = decode(batch["anchor"]), decode(batch["negative"])
            assert (ids[a] != ids[n]).all()
            same += int((scenes[a] == scenes[n]).sum())
            total += len(a)
        else:
            a, p = decode(batch["anchor"]), decode(batch["positive"])
            assert len(set(ids[a])) == 32 and (ids[a] == ids[p]).all()
            # 32 points fit in one scene of 40: every in-batch negative is of that scene
            assert len(set(scenes[a])) == 1
            same, total = same + 1, total + 1
    assert same == total


def test_hard_negative_fraction_and_determinism(tmp_path):
    ids, scenes = scene_fixture(tmp_path, n_scenes=6)

    def triplets(fraction, seed=0):
        module = BrownDataModule(data_root=str(tmp_path), train_subset="scenes", test_subset="scenes", sampler="triplets",
                                 n_train=2000, batch_size=100, cache_dir=str(tmp_path / "cache"), hard_negatives=fraction, seed=seed)
        module.setup("fit")
        return module.splits["train"].indices

    half = triplets(0.5)
    np.testing.assert_array_equal(half, triplets(0.5))
    assert not np.array_equal(half, triplets(0.5, seed=1))
    # half from the own scene + 1/6 of the uniform other half
    assert np.mean(scenes[half[:, 0]] == scenes[half[:, 2]]) == pytest.approx(0.5 + 0.5 / 6, abs=0.05)
    assert np.mean(scenes[triplets(0.0)[:, 0]] == scenes[triplets(0.0)[:, 2]]) == pytest.approx(1 / 6, abs=0.04)
    with pytest.raises(ValueError, match="fraction"):
        triplets(1.5)


def family_fixture(root: Path, n_families: int = 6, overlap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Look-alike families: 4 points per family share one smooth texture (each patch a noisy
    copy), families are independent; 2-3 patches per point, the index encoded as above.
    Point p's patches are in image p % 3 at (10 p, 0), keypoint size 1; with ``overlap`` points
    0 and 1 are 1 pixel apart in one image. Returns (point ids, family of every patch)."""
    rng = np.random.default_rng(5)
    textures = cv2.resize(rng.uniform(0, 255, (n_families, 8, 8)).transpose(1, 2, 0), (64, 64)).transpose(2, 0, 1)
    ids, families, patches, interest = [], [], [], []
    for point in range(4 * n_families):
        family = point // 4
        for _ in range(2 + point % 2):
            ids.append(point)
            families.append(family)
            patches.append(np.clip(textures[family] + rng.normal(0, 6, (64, 64)), 0, 255))
            interest.append([point % 3, 10.0 * point, 0.0, 0.0, 0.0])
    interest = np.array(interest)
    if overlap:
        interest[np.isin(ids, [0, 1]), :3] = [[0, 0.0, 0.0]] * int(np.isin(ids, [0, 1]).sum())
        interest[np.array(ids) == 1, 1] = 1.0
    patches = np.array(patches).astype(np.uint8)
    patches[:, 0, 0] = np.arange(len(ids)) % 256
    patches[:, 0, 1] = np.arange(len(ids)) // 256
    ids_arr = np.array(ids)
    write_subset(root / "brown" / "families", patches, ids_arr, interest, {"m50_100000_100000_0.txt": sample_match_pairs(ids_arr, 100, 0)})
    return ids_arr, np.array(families)


def test_appearance_neighbours_find_the_look_alikes():
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, (30, 64, 64)).astype(np.float64)
    copies = np.concatenate([np.clip(prototypes + rng.normal(0, 25, prototypes.shape), 0, 255) for _ in range(4)]).astype(np.uint8)
    prototype = np.arange(len(copies)) % 30
    # a small chunk: the self-exclusion must use the right offset in every chunk
    found = appearance_neighbours(copies, 3, chunk=17)
    assert found.shape == (120, 3)
    assert (found != np.arange(120)[:, None]).all()
    assert (prototype[found] == prototype[:, None]).all()
    # brightness and contrast do not matter (NCC): a darkened, flattened copy is still found first
    dimmer = np.concatenate([copies[:1] // 3 + 40, copies[1:]])
    assert prototype[appearance_neighbours(dimmer, 1)[0, 0]] == prototype[0]
    # constant patches: no division by zero, and every row still names k others
    flat = np.concatenate([np.full((5, 64, 64), 128, np.uint8), copies[:10]])
    assert np.isfinite(appearance_neighbours(flat, 2)).all()
    with pytest.raises(ValueError, match="k must be"):
        appearance_neighbours(copies[:3], 3)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        appearance_neighbours(copies[0], 1)


@pytest.mark.parametrize("sampler", ["pairs", "triplets", "points"])
def test_lookalike_negatives_come_from_the_anchor_family(tmp_path, sampler):
    ids, families = family_fixture(tmp_path)
    module = BrownDataModule(data_root=str(tmp_path), train_subset="families", test_subset="families", sampler=sampler,
                             n_train=64, batch_size=8, cache_dir=str(tmp_path / "cache"), lookalike_negatives=1.0, lookalike_k=3)
    module.setup("fit")
    train = module.splits["train"]
    # the three look-alikes of every point are the other points of its family
    point_family = families[[np.flatnonzero(ids == p)[0] for p in range(len(train.groups))]]
    assert (point_family[train.neighbours] == point_family[:, None]).all()
    for batch in module.train_dataloader():
        if sampler == "pairs":
            a, b = decode(batch["patch1"]), decode(batch["patch2"])
            negative = batch["label"].numpy() == 0
            assert (ids[a[negative]] != ids[b[negative]]).all()
            assert (families[a[negative]] == families[b[negative]]).all()
            # the positives stay positives
            assert (ids[a[~negative]] == ids[b[~negative]]).all()
        elif sampler == "triplets":
            a, p, n = (decode(batch[k]) for k in ("anchor", "positive", "negative"))
            assert (ids[a] == ids[p]).all() and (ids[a] != ids[n]).all()
            assert (families[a] == families[n]).all()
        else:
            a, p = decode(batch["anchor"]), decode(batch["positive"])
            assert len(set(ids[a])) == 8 and (ids[a] == ids[p]).all()
            # clusters of look-alikes: two whole families of four
            assert sorted(np.bincount(families[a]).tolist())[-2:] == [4, 4]


def test_lookalikes_skip_overlapping_keypoints_and_mix_with_the_rest(tmp_path):
    ids, families = family_fixture(tmp_path, n_families=10, overlap=True)

    def module(fraction, sampler="triplets", seed=0, **kwargs):
        data = BrownDataModule(data_root=str(tmp_path), train_subset="families", test_subset="families", sampler=sampler,
                               n_train=2000, batch_size=40, cache_dir=str(tmp_path / "cache"), lookalike_negatives=fraction,
                               lookalike_k=3, seed=seed, **kwargs)
        data.setup("fit")
        return data.splits["train"]

    train = module(0.5)
    # points 0 and 1 are 1 pixel apart in one image (mostly the same pixels): not look-alikes of
    # each other; the next best (another family) takes the place
    assert 1 not in train.neighbours[0] and 0 not in train.neighbours[1]
    assert set(train.neighbours[0][:2]) == {2, 3} and set(train.neighbours[2]) == {0, 1, 3}
    # half look-alikes + 1/10 of the uniform other half
    half = train.indices
    assert np.mean(families[half[:, 0]] == families[half[:, 2]]) == pytest.approx(0.5 + 0.5 / 10, abs=0.05)
    np.testing.assert_array_equal(half, module(0.5).indices)
    assert not np.array_equal(half, module(0.5, seed=1).indices)
    # off: no neighbours computed, the draws of before
    assert module(0.0).neighbours is None
    # points: 20 of 40 in look-alike clusters, 20 from scenes, every point once per batch
    points = module(0.5, "points", hard_negatives=0.5)
    for start in range(0, 2000, 40):
        block = points.indices[start : start + 40]
        assert len(set(ids[block[:, 0]])) == 40
    with pytest.raises(ValueError, match="lookalike_negatives is a fraction"):
        module(1.5)


def test_lookalikes_are_cached_beside_the_patches(tmp_path, monkeypatch):
    family_fixture(tmp_path)

    def train_split():
        data = BrownDataModule(data_root=str(tmp_path), train_subset="families", test_subset="families", sampler="triplets",
                               n_train=64, batch_size=8, cache_dir=str(tmp_path / "cache"), lookalike_negatives=1.0, lookalike_k=3)
        data.setup("fit")
        return data.splits["train"]

    first = train_split()
    cached = list((tmp_path / "cache").rglob(f"{brown.LOOKALIKE_CACHE_PREFIX}k3.npy"))
    assert len(cached) == 1 and not list((tmp_path / "cache").rglob("*.tmp.npy"))
    np.testing.assert_array_equal(np.load(cached[0]), first.neighbours)

    def searched(*args, **kwargs):
        raise AssertionError("the look-alikes were searched again")

    monkeypatch.setattr(samplers, "lookalike_groups", searched)
    again = train_split()  # from the cache: the same neighbours and the same draws
    np.testing.assert_array_equal(again.neighbours, first.neighbours)
    np.testing.assert_array_equal(again.indices, first.indices)
    monkeypatch.undo()
    # new tiles (another mtime and size): the patch cache is rebuilt and the stale look-alikes go
    bmp = sorted((tmp_path / "brown" / "families").glob("patches*.bmp"))[0]
    bmp.write_bytes(bmp.read_bytes() + b"\0")
    load_subset(tmp_path, "families", tmp_path / "cache")
    assert not cached[0].exists()


def test_lookalike_match_pairs_keep_the_positives_and_take_negatives_from_the_family(tmp_path):
    ids, families = family_fixture(tmp_path, n_families=10, overlap=True)
    subset = load_subset(tmp_path, "families")
    matches = subset.matches()
    pairs = lookalike_match_pairs(subset, matches, k=3, seed=0)
    assert pairs.shape == matches.shape and pairs.dtype == np.int64
    positive = matches[:, 2] == 1
    assert 0 < positive.sum() < len(matches)
    # the positives and every pair's first patch and label stay, in the same order
    np.testing.assert_array_equal(pairs[positive], matches[positive])
    np.testing.assert_array_equal(pairs[:, [0, 2]], matches[:, [0, 2]])
    a, b = pairs[~positive, 0], pairs[~positive, 1]
    # negatives: another point of the anchor's family (its three look-alikes), never itself; points
    # 0 and 1, 1 pixel apart, show the same pixels: never each other's, a third family's point instead
    assert (ids[a] != ids[b]).all()
    overlapping = np.isin(ids[a], [0, 1])
    assert overlapping.any() and (families[a] == families[b])[~overlapping].all()
    assert not np.isin(ids[b][overlapping], [0, 1]).any()
    assert (families[a] != families[b])[overlapping].any()
    # several patches of a look-alike point are drawn, not just its reference patch
    assert len(set(b)) > len(set(ids[b]))
    np.testing.assert_array_equal(pairs, lookalike_match_pairs(subset, matches, k=3, seed=0))
    assert not np.array_equal(pairs, lookalike_match_pairs(subset, matches, k=3, seed=1))
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        lookalike_match_pairs(subset, matches[:, :2])


def test_match_pairs_with_scenes_stay_in_one_scene(tmp_path):
    ids, scenes = scene_fixture(tmp_path)
    pairs = sample_match_pairs(ids, 400, 0, scenes)
    assert (scenes[pairs[:, 0]] == scenes[pairs[:, 1]]).all()
    assert (ids[pairs[:, 0]] == ids[pairs[:, 1]]).sum() == 200
    # without scenes: the official uniform draw, unchanged
    np.testing.assert_array_equal(sample_match_pairs(ids, 400, 0), sample_match_pairs(ids, 400, 0, None))
