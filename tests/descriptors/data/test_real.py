"""The real-patch writer: corresponding patches come from the same scene point (synthetic warp
with a known H), both sequence layouts, the Brown and HPatches outputs, the e/h/t jitter."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import CorruptDatasetError, DatasetNotFoundError
from descriptors.data import brown, hpatches
from descriptors.data.datamodule import BrownDataModule
from descriptors.data.real import geometry as G
from descriptors.data.real import portable as P
from descriptors.data.real import writer as W
from descriptors.data.samplers import scene_ids


def texture(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """Smooth random blobs: plenty of SIFT keypoints, no exact repetitions."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(size[0] // 8, size[1] // 8))
    image = cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def warped_sequence() -> G.ImageSequence:
    """Image 2 = image 1 under a known homography, no photometric change."""
    image = texture()
    H = np.array([[0.9, 0.12, 20.0], [-0.08, 1.05, 8.0], [1e-4, -5e-5, 1.0]])
    warped = cv2.warpPerspective(image, H, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)
    return G.ImageSequence("v_synthetic", [image, warped], [np.eye(3), H])


def test_local_affine_is_the_jacobian():
    H = np.array([[0.9, 0.12, 20.0], [-0.08, 1.05, 8.0], [1e-3, -5e-4, 1.0]])
    points = np.array([[10.0, 20.0], [100.0, 50.0]])
    eps = 1e-5
    numeric = np.stack(
        [(G.apply_homography(H, points + [eps, 0]) - G.apply_homography(H, points - [eps, 0])) / (2 * eps),
         (G.apply_homography(H, points + [0, eps]) - G.apply_homography(H, points - [0, eps])) / (2 * eps)],
        -1,
    )
    np.testing.assert_allclose(G.local_affine(H, points), numeric, rtol=1e-5, atol=1e-7)


def test_corresponding_patches_show_the_same_scene_point(warped_sequence):
    corr = W.extract_correspondences(warped_sequence, max_keypoints=150, magnification=2.5)
    both = np.flatnonzero(corr.inside.all(0))
    assert len(both) > 40
    # the keypoint centre maps to its position in image 2 through H
    np.testing.assert_allclose(corr.centres[1, both], G.apply_homography(warped_sequence.homographies[1], corr.keypoints[both, :2]))
    p1 = G.warp_patches(warped_sequence.images[0], corr.centres[0, both], corr.linear[0, both], 64).astype(float)
    p2 = G.warp_patches(warped_sequence.images[1], corr.centres[1, both], corr.linear[1, both], 64).astype(float)
    same = np.abs(p1 - p2).mean(axis=(1, 2))
    shuffled = np.abs(p1 - np.roll(p2, 7, axis=0)).mean(axis=(1, 2))
    assert np.median(same) < 4.0  # grey levels: only interpolation differences
    assert np.median(shuffled) > 5 * np.median(same)
    assert corr.report[0]["median_ncc"] > 0.95


def test_ncc_check_drops_wrong_geometry(warped_sequence):
    wrong = G.ImageSequence("v_wrong", warped_sequence.images, [np.eye(3), np.array([[1.0, 0, 40], [0, 1, 0], [0, 0, 1]])])
    corr = W.extract_correspondences(wrong, max_keypoints=100, min_ncc=0.5)
    assert corr.report[0]["inside"] > 0 and corr.report[0]["kept"] < 0.2 * corr.report[0]["inside"]


def _write_layout(folder, sequence: G.ImageSequence, layout: str) -> None:
    folder.mkdir(parents=True)
    for n, (image, H) in enumerate(zip(sequence.images, sequence.homographies), start=1):
        cv2.imwrite(str(folder / (f"img{n}.ppm" if layout == "oxford" else f"{n}.ppm")), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        if n > 1:
            np.savetxt(folder / (f"H1to{n}p" if layout == "oxford" else f"H_1_{n}"), H)


@pytest.mark.parametrize("layout", ["oxford", "hpatches"])
def test_sequence_layouts_roundtrip(tmp_path, layout):
    seq = G.synthetic_sequence("v_x", texture(1), n_images=3, seed=0)
    _write_layout(tmp_path / "v_x", seq, layout)
    read = G.read_image_sequence(tmp_path / "v_x", n_images=3)
    for a, b in zip(read.images, seq.images):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(read.homographies, seq.homographies):
        np.testing.assert_allclose(a, b / b[2, 2], rtol=1e-6)


def test_missing_or_bad_sequence_files(tmp_path):
    seq = G.synthetic_sequence("v_x", texture(1), n_images=3, seed=0)
    _write_layout(tmp_path / "v_x", seq, "hpatches")
    (tmp_path / "v_x" / "H_1_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="H_1_3"):
        G.read_image_sequence(tmp_path / "v_x", n_images=3)
    (tmp_path / "v_x" / "H_1_3").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(CorruptDatasetError, match="H_1_3"):
        G.read_image_sequence(tmp_path / "v_x", n_images=3)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        G.read_image_sequence(tmp_path / "nowhere")


def test_brown_layout_output_reads_back(tmp_path):
    seqs = [G.synthetic_sequence(f"v_{k}", texture(k), n_images=4, seed=k) for k in range(2)]
    corrs = [W.extract_correspondences(s, max_keypoints=80) for s in seqs]
    info = W.write_brown_set(tmp_path / "real", corrs, seqs, n_match_pairs=200)
    subset = brown.read_subset(tmp_path / "real")
    assert len(subset) == info["patches"] and subset.patches.shape[1:] == (64, 64)
    counts = np.bincount(subset.point_ids)
    assert counts.min() >= 2 and len(counts) == info["points"]
    matches = subset.matches(info["match_file"])
    assert len(matches) == 200 and matches[:, 2].sum() == 100
    # patches of one point look alike (same scene point), patches of different points do not
    first = subset.patches[subset.point_ids == 0].astype(float)
    other = subset.patches[subset.point_ids == 5].astype(float)
    assert np.abs(first[0] - first[1]).mean() < np.abs(first[0] - other[0]).mean()


def test_hpatches_layout_output_and_jitter_overlaps(tmp_path):
    seq = G.synthetic_sequence("v_x", texture(3, (320, 400)), n_images=6, seed=0, strength=0.08)
    corr = W.extract_correspondences(seq, max_keypoints=120)
    info = W.write_hpatches_set(tmp_path / "hpatches-release" / "v_x", corr, seq)
    loaded = hpatches.load_hpatches(tmp_path)
    assert set(loaded["v_x"]) == set(hpatches.IMAGES)
    assert all(len(p) == info["patches"] for p in loaded["v_x"].values())
    overlap = info["median_overlap"]
    assert overlap["e"] == pytest.approx(0.85, abs=0.04) and overlap["h"] == pytest.approx(0.72, abs=0.04)
    assert overlap["t"] < overlap["h"] - 0.05
    # more jitter = less alike
    ref = loaded["v_x"]["ref"].astype(float)
    diff = {level: np.abs(ref - loaded["v_x"][f"{level}1"]).mean() for level in "eht"}
    assert diff["e"] < diff["h"] < diff["t"]


def test_frame_overlap_identity_and_shift():
    identity = np.tile(np.eye(2), (3, 1, 1))
    overlaps = G.frame_overlap(identity, np.array([[0.0, 0.0], [2.2, 0.0], [1.0, 0.0]]), samples=201)
    # two unit disks 1 apart: lens 2 acos(1/2) - sqrt(3)/2 over union 2 pi - lens
    lens = 2 * np.arccos(0.5) - np.sqrt(3) / 2
    assert overlaps[0] == 1.0 and overlaps[1] == 0.0
    assert overlaps[2] == pytest.approx(lens / (2 * np.pi - lens), abs=0.01)


def test_brown_real_config_matches_the_builder_and_holds_the_test_out(tmp_path):
    import inspect

    import yaml

    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "conf" / "data" / "brown_real.yaml").read_text())
    accepted = set(inspect.signature(P.build_real_brown).parameters) - {"data_root", "cache_dir"}
    assert set(config["real_data"]) <= accepted
    assert config["real_data"]["test_sequence"] not in config["real_data"]["train_sequences"]
    # selection protocol: validation on a held-out real sequence, neither trained on nor the test
    val_sequences = config["real_data"]["val_sequences"]
    assert config["val_subset"] in val_sequences and config["test_subset"] not in val_sequences
    assert not set(val_sequences) & set(config["real_data"]["train_sequences"])
    assert 0 <= config["hard_negatives"] <= 1
    with pytest.raises(ValueError, match="held out"):
        P.build_real_brown(None, tmp_path, train_sequences=("graf", "v_churchill"), test_sequence="v_churchill")
    with pytest.raises(ValueError, match="neither training sequences"):
        P.build_real_brown(None, tmp_path, train_sequences=("graf",), val_sequences=("graf",))
    with pytest.raises(ValueError, match="neither training sequences"):
        P.build_real_brown(None, tmp_path, train_sequences=(), val_sequences=("v_churchill",), test_sequence="v_churchill")


def test_real_brown_validation_sequence_is_held_out_of_training(tmp_path):
    """val_sequences: a real sequence becomes its own validation subset (exact frames, pairs of
    one scene, like the test) and none of its patches is in the training subset; the
    datamodule validates on it with val_subset=<name>."""
    root = tmp_path / "data" / "sequences"
    for k, (name, layout) in enumerate((("seq_train", "oxford"), ("seq_val", "oxford"), ("v_test", "hpatches"))):
        _write_layout(root / name, G.synthetic_sequence(name, texture(10 + k), n_images=6, seed=k, strength=0.05), layout)
    kwargs = dict(n_coil=0, n_logos=0, skimage_photos=False, test_keypoints=60, n_train_pairs=200, n_test_pairs=200,
                  train_sequences=("seq_train",), test_sequence="v_test", min_ncc=None)
    folder = P.build_real_brown(tmp_path / "data", tmp_path / "cache", val_sequences=("seq_val",), **kwargs)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["real_train", "seq_val", "v_test"]
    train, val = brown.read_subset(folder / "real_train"), brown.read_subset(folder / "seq_val")
    # the training subset is exactly what the same build without the validation sequence writes
    plain = P.build_real_brown(tmp_path / "data", tmp_path / "cache", **kwargs)
    assert plain != folder and not (plain / "seq_val").exists()
    np.testing.assert_array_equal(train.patches[:], brown.read_subset(plain / "real_train").patches[:])
    # no validation patch is a training patch
    train_set = {p.tobytes() for p in np.asarray(train.patches)}
    assert not any(p.tobytes() in train_set for p in np.asarray(val.patches))
    matches = val.matches("m50_200_200_0.txt")
    assert len(matches) == 200 and matches[:, 2].sum() == 100
    module = BrownDataModule(data_root=str(tmp_path / "data"), train_subset="real_train", val_subset="seq_val", test_subset="v_test",
                                   n_train=32, n_val=50, batch_size=16, test_match_file="m50_200_200_0.txt", cache_dir=str(tmp_path / "cache"),
                                   real_data={**kwargs, "val_sequences": ["seq_val"]})
    module.setup("fit")
    assert len(module.splits["val"]) == 50
    batch = next(iter(module.val_dataloader()))
    assert batch["patch1"].shape == (50, 1, 64, 64)


@pytest.mark.slow
def test_real_brown_set_from_shared_data(tmp_path):
    """The real-data Brown set (photos under random homographies + graf; v_churchill held out)
    through the datamodule, as conf/data/brown_real.yaml builds it (~20 s)."""
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "sequences" / "v_churchill").is_dir():
        pytest.skip("shared real sequences not available")

    module = BrownDataModule(
        data_root=str(SHARED_DATA), train_subset="real_train", test_subset="v_churchill", sampler="points",
        n_train=256, n_val=100, n_test=100, batch_size=64, test_match_file="m50_1000_1000_0.txt", cache_dir=str(tmp_path),
        real_data={"n_coil": 4, "n_logos": 4, "skimage_photos": False, "n_train_pairs": 1000, "n_test_pairs": 1000, "test_keypoints": 300,
                   "realistic_photometric": True, "degrade_reference": True, "keypoint_density": 1900.0, "scene_negatives": True,
                   "max_scale": 1.6, "max_rotation": 45.0, "perspective": 0.25, "max_tilt": 3.0},
        hard_negatives=0.5,
    )
    module.prepare_data()
    module.setup("fit")
    module.setup("test")
    batch = next(iter(module.train_dataloader()))
    assert batch["anchor"].shape == (64, 1, 64, 64)
    test = next(iter(module.test_dataloader()))
    assert 0 < test["label"].mean() < 1


def test_match_detections_nearest_within_offset_and_scale():
    predicted = np.array([[10.0, 10.0, 4.0, 0.0], [50.0, 50.0, 4.0, 0.0], [90.0, 90.0, 4.0, 0.0]])
    detections = np.array([
        [10.5, 10.0, 4.2, 30.0],   # near the first, similar size
        [11.0, 10.0, 4.0, 0.0],    # farther than the one above
        [50.5, 50.0, 12.0, 0.0],   # near the second, but 3x the size
        [95.0, 90.0, 4.0, 0.0],    # the third is 5 px away: beyond 0.3 * 4
    ])
    np.testing.assert_array_equal(W.match_detections(predicted, detections), [0, -1, -1])
    assert (W.match_detections(predicted, np.zeros((0, 4))) == -1).all()


def test_redetected_correspondences_carry_detector_noise(warped_sequence):
    exact = W.extract_correspondences(warped_sequence, max_keypoints=150)
    noisy = W.extract_correspondences(warped_sequence, max_keypoints=150, redetect=True)
    np.testing.assert_array_equal(exact.keypoints, noisy.keypoints)
    both = np.flatnonzero(noisy.inside.all(0))
    assert len(both) > 30 and noisy.inside[1].sum() <= exact.inside[1].sum()
    # image 2 frames are detections near the mapped frames, not the mapped frames themselves
    offset = np.linalg.norm(noisy.centres[1, both] - exact.centres[1, both], axis=1)
    predicted_size = exact.keypoints[both, 2] * np.sqrt(np.abs(np.linalg.det(G.local_affine(warped_sequence.homographies[1], exact.keypoints[both, :2]))))
    assert (offset <= 0.3 * predicted_size + 1e-9).all() and offset.max() > 0
    assert not np.allclose(noisy.linear[1, both], exact.linear[1, both])
    # ... and still show the same scene point (the detector's orientation follows the image)
    assert noisy.report[0]["median_ncc"] > 0.85
    assert noisy.report[0]["median_ncc"] < exact.report[0]["median_ncc"]


def test_realistic_views_are_deterministic_and_vary_more():
    image = texture(4, (200, 260))
    a = G.synthetic_sequence("v_a", image, n_images=3, seed=5, realistic=True, max_scale=1.6, max_rotation=45.0)
    b = G.synthetic_sequence("v_a", image, n_images=3, seed=5, realistic=True, max_scale=1.6, max_rotation=45.0)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert all(np.array_equal(x, y) for x, y in zip(a.homographies, b.homographies))
    plain = G.synthetic_sequence("v_a", image, n_images=3, seed=5)
    assert not np.array_equal(a.images[1], plain.images[1])
    # degrade_reference: image 1 is no longer the photo itself; the other views are unchanged
    degraded = G.synthetic_sequence("v_a", image, n_images=3, seed=5, realistic=True, max_scale=1.6, max_rotation=45.0, degrade_reference=True)
    assert np.array_equal(a.images[0], image) and not np.array_equal(degraded.images[0], image)
    assert np.abs(degraded.images[0].astype(float) - image).mean() < 25
    assert all(np.array_equal(x, y) for x, y in zip(a.images[1:], degraded.images[1:]))


def test_brown_set_scene_negatives(tmp_path):
    seqs = [G.synthetic_sequence(f"v_{k}", texture(k), n_images=3, seed=k) for k in range(3)]
    corrs = [W.extract_correspondences(s, max_keypoints=60) for s in seqs]
    info = W.write_brown_set(tmp_path / "real", corrs, seqs, n_match_pairs=300, scene_negatives=True)
    subset = brown.read_subset(tmp_path / "real")
    matches = subset.matches(info["match_file"])
    # images 0-2 are sequence 0, 3-5 sequence 1, ...: both patches of every pair from one sequence
    sequence = subset.interest[:, 0].astype(int) // 3
    assert (sequence[matches[:, 0]] == sequence[matches[:, 1]]).all()
    assert matches[:, 2].sum() == 150
    # the sampler finds the same scenes from interest.txt
    scenes = scene_ids(subset.point_ids, subset.interest)
    assert len(np.unique(scenes)) == 3 and all(len(np.unique(sequence[scenes == s])) == 1 for s in np.unique(scenes))


def test_real_brown_cache_key_follows_settings(tmp_path, monkeypatch):
    """Changing a generation setting (or the writer version) never reuses a stale cached set."""
    folders = []
    # stop every build right after its cache folder is chosen; record the folders
    monkeypatch.setattr(P, "sequences_folder", lambda root: (_ for _ in ()).throw(RuntimeError("stop")))
    original = P._set_folder
    monkeypatch.setattr(P, "_set_folder", lambda cache, kind, settings: folders.append(original(cache, kind, settings)) or folders[-1])
    # no validation sequences = the key sets had before the option existed
    # no tilt (max_tilt = 1) = the key sets had before the option existed, too
    for kwargs in ({}, {"redetect": True}, {"max_scale": 1.6}, {}, {"val_sequences": ()}, {"val_sequences": ("graf",), "train_sequences": ()},
                   {"max_tilt": 1.0}, {"max_tilt": 3.0}):
        with pytest.raises(RuntimeError):
            P.build_real_brown(None, tmp_path, **kwargs)
    monkeypatch.setattr(P, "REAL_BROWN_VERSION", P.REAL_BROWN_VERSION + 1)
    with pytest.raises(RuntimeError):
        P.build_real_brown(None, tmp_path)
    assert len(set(folders[:3])) == 3 and folders[3] == folders[0] and folders[4] == folders[0]
    assert folders[5] not in folders[:5] and folders[6] == folders[0] and folders[7] not in folders[:7]
    assert folders[8] != folders[0]


def test_min_compression_drops_unresolved_correspondences():
    image = texture(6, (240, 320))
    # image 2 = image 1 unchanged, image 3 = image 1 squeezed 3x horizontally
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    squeeze = np.array([[1 / 3, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    seq = G.ImageSequence("v_s", [image, image, cv2.warpPerspective(image, squeeze, (320, 240))], [H, H, squeeze])
    kept = W.extract_correspondences(seq, max_keypoints=100)
    dropped = W.extract_correspondences(seq, max_keypoints=100, min_compression=0.5)
    # the identity view keeps everything, the 3x squeezed view loses every correspondence
    np.testing.assert_array_equal(dropped.inside[1], kept.inside[1])
    assert kept.inside[2].sum() > 10 and dropped.inside[2].sum() == 0


def test_jitter_correspondences_moves_every_frame_and_keeps_them_inside(warped_sequence):
    exact = W.extract_correspondences(warped_sequence, max_keypoints=120)
    jittered = W.extract_correspondences(warped_sequence, max_keypoints=120)
    W.jitter_correspondences(np.random.default_rng(0), jittered, warped_sequence, "e")
    for i in range(len(warped_sequence.images)):
        kept = np.flatnonzero(jittered.inside[i])
        assert len(kept) > 0.8 * exact.inside[i].sum() and not (jittered.inside[i] & ~exact.inside[i]).any()
        # every frame moved, by at most the level's translation (10 % of the patch radius)
        radius = np.sqrt(np.abs(np.linalg.det(exact.linear[i, kept])))
        shift = np.linalg.norm(jittered.centres[i, kept] - exact.centres[i, kept], axis=1)
        assert (shift > 0).all() and (shift <= 0.1 * np.sqrt(2) * radius + 1e-6).all()
    # deterministic in the generator
    again = W.extract_correspondences(warped_sequence, max_keypoints=120)
    W.jitter_correspondences(np.random.default_rng(0), again, warped_sequence, "e")
    np.testing.assert_array_equal(again.linear, jittered.linear)


def _singular_values_at(H: np.ndarray, x: float, y: float) -> np.ndarray:
    """Singular values of the homography's local affine map at (x, y), largest first."""
    p = H @ np.array([x, y, 1.0])
    jacobian = (H[:2, :2] * p[2] - np.outer(p[:2], H[2, :2])) / p[2] ** 2
    return np.linalg.svd(jacobian, compute_uv=False)


def test_random_homography_tilt_foreshortens_like_an_oblique_view():
    # no tilt: the draws (and so the sets built before the option) are unchanged
    a = G.random_homography(np.random.default_rng(3), 320, 240, 0.25, 45.0, 1.6)
    b = G.random_homography(np.random.default_rng(3), 320, 240, 0.25, 45.0, 1.6, max_tilt=1.0)
    np.testing.assert_array_equal(a, b)
    # tilt alone (no rotation, scale or corner shift): singular values 1 and 1 / t, 1 <= t <= max
    rng = np.random.default_rng(0)
    tilts = []
    for _ in range(200):
        H = G.random_homography(rng, 320, 240, strength=0.0, max_rotation=0.0, max_scale=1.0, max_tilt=3.0)
        high, low = _singular_values_at(H, 160.0, 120.0)
        assert high == pytest.approx(1.0, abs=1e-6) and 1.0 - 1e-9 <= high / low <= 3.0 + 1e-6
        tilts.append(high / low)
    # log-uniform over 1..3: median about sqrt(3); both ends reached
    assert np.median(tilts) == pytest.approx(np.sqrt(3.0), rel=0.15)
    assert min(tilts) < 1.1 and max(tilts) > 2.7
    # with corner shifts on top, the foreshortening of points that stay in view is that of real
    # oblique images (graf / v_churchill: up to 3-4:1), without views that collapse to a line
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(200):
        H = G.random_homography(rng, 320, 240, 0.25, 45.0, 1.6, max_tilt=3.0)
        for x in (60.0, 160.0, 260.0):
            for y in (50.0, 120.0, 190.0):
                p = H @ np.array([x, y, 1.0])
                if 0 <= p[0] / p[2] < 320 and 0 <= p[1] / p[2] < 240:
                    high, low = _singular_values_at(H, x, y)
                    ratios.append(high / low)
    q50, q99 = np.quantile(ratios, [0.5, 0.99])
    assert 1.5 < q50 < 2.5 and q99 < 6.0


def test_tilted_views_keep_exact_correspondences():
    """Patches cut with the exact frames in strongly foreshortened views still show the image-1
    point: the frames carry the anisotropy, the patches undo it."""
    image = texture(8, (240, 320))
    seq = G.synthetic_sequence("v_t", image, n_images=4, seed=2, photometric=0.0, max_tilt=3.0)
    plain = G.synthetic_sequence("v_t", image, n_images=4, seed=2, photometric=0.0)
    assert not np.allclose(seq.homographies[1], plain.homographies[1])
    corr = W.extract_correspondences(seq, max_keypoints=120)
    p1 = G.warp_patches(seq.images[0], corr.centres[0], corr.linear[0], 64).astype(float)
    anisotropic = 0
    for n in range(1, 4):
        both = np.flatnonzero(corr.inside[0] & corr.inside[n])
        assert len(both) > 10
        values = np.linalg.svd(corr.linear[n, both], compute_uv=False)
        anisotropic += int((values[:, 0] / values[:, 1] > 1.5).sum())
        pn = G.warp_patches(seq.images[n], corr.centres[n, both], corr.linear[n, both], 64).astype(float)
        same = np.abs(p1[both] - pn).mean(axis=(1, 2))
        shuffled = np.abs(p1[both] - np.roll(pn, 5, axis=0)).mean(axis=(1, 2))
        assert np.median(same) < 0.5 * np.median(shuffled)
    assert anisotropic > 10


def _tiny_real_data(tmp_path):
    root = tmp_path / "data" / "sequences"
    for k, (name, layout) in enumerate((("seq_train", "oxford"), ("v_test", "hpatches"))):
        _write_layout(root / name, G.synthetic_sequence(name, texture(20 + k), n_images=6, seed=k, strength=0.05), layout)
    return tmp_path / "data"


def test_real_sets_are_built_in_a_portable_process(tmp_path):
    """numpy, OpenCV, OpenBLAS and libjpeg-turbo pick code paths by the CPU at run time, which
    made the generated patches differ between machines: both real sets are written by a new
    process under portable_build_env (every such dispatch off) with OpenCV's optimised paths
    off, whatever the calling process runs under."""
    data = _tiny_real_data(tmp_path)
    expected = P.portable_build_env()
    assert expected["JSIMD_FORCENONE"] == "1" and expected["OPENBLAS_NUM_THREADS"] == "1"
    from numpy._core import _multiarray_umath as umath

    assert expected["NPY_DISABLE_CPU_FEATURES"].split() == list(umath.__cpu_dispatch__)
    # OpenCV's dispatched sets this CPU has, as in its features line ("*AVX2"; "*AVX512-SKX?" = lacking)
    line = cv2.getCPUFeaturesLine().split()
    assert expected["OPENCV_CPU_DISABLE"] == ",".join(t[1:] for t in line if t[0] == "*" and t[-1] != "?")
    assert expected["OPENCV_FOR_THREADS_NUM"] == "1"
    folder = P.build_real_brown(data, tmp_path / "cache", n_coil=0, n_logos=0, skimage_photos=False, test_keypoints=60,
                                n_train_pairs=200, n_test_pairs=200, train_sequences=("seq_train",), test_sequence="v_test", min_ncc=None)
    build = json.loads((folder / "done.json").read_text())["build"]
    assert build == {"env": expected, "opencv_optimized": False, "opencv_ipp": False}
    # and the same bytes again (several OpenCV threads did not always give them)
    again = P.build_real_brown(data, tmp_path / "cache_again", n_coil=0, n_logos=0, skimage_photos=False, test_keypoints=60,
                               n_train_pairs=200, n_test_pairs=200, train_sequences=("seq_train",), test_sequence="v_test", min_ncc=None)
    for name in ("real_train", "v_test"):
        assert brown.subset_digest(brown.read_subset(folder / name)) == brown.subset_digest(brown.read_subset(again / name))
    assert cv2.useOptimized()  # this process is untouched
    release = P.build_real_hpatches(data, tmp_path / "cache", sequences=("v_test",), n_synthetic=0, max_keypoints=60, min_ncc=None)
    assert json.loads((release.parent / "report.json").read_text())["build"] == {"env": expected, "opencv_optimized": False, "opencv_ipp": False}
    assert (release / "v_test").is_dir()


def test_portable_build_errors_reach_the_caller(tmp_path):
    """A dataset error inside the build process is raised in the caller as the same class, with
    the same message naming the path; nothing half-built is left as a cached set."""
    data = _tiny_real_data(tmp_path)
    kwargs = dict(n_coil=0, n_logos=0, skimage_photos=False, test_keypoints=60, n_train_pairs=200, n_test_pairs=200, min_ncc=None)
    with pytest.raises(DatasetNotFoundError, match="v_missing") as missing:
        P.build_real_brown(data, tmp_path / "cache", train_sequences=("seq_train",), test_sequence="v_missing", **kwargs)
    assert "sequences" in str(missing.value.path) and missing.value.hint
    (data / "sequences" / "v_test" / "1.ppm").write_bytes(b"not an image")
    with pytest.raises(CorruptDatasetError, match="1.ppm"):
        P.build_real_brown(data, tmp_path / "cache", train_sequences=("seq_train",), test_sequence="v_test", **kwargs)
    assert not list((tmp_path / "cache" / "real_brown").glob("*/done.json"))


# --------------------------------------------------------------------------- caches that cannot break

_TINY_BROWN = dict(n_coil=0, n_logos=0, skimage_photos=False, test_keypoints=60, n_train_pairs=200, n_test_pairs=200,
                   train_sequences=("seq_train",), test_sequence="v_test", min_ncc=None)

# Build the tiny set once the go file exists (both processes start together), print its folder.
_CONCURRENT_BUILD = """
import json, sys, time
from pathlib import Path
from descriptors.data.real.portable import build_real_brown

data, cache, go, kwargs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
while not go.exists():
    time.sleep(0.01)
print(build_real_brown(data, cache, **kwargs))
"""


def _assert_whole_brown_set(folder):
    report = json.loads((folder / "done.json").read_text())
    for name, info in (("real_train", report["train"]), ("v_test", report["test"])):
        subset = brown.read_subset(folder / name)
        assert len(subset) == info["patches"] and len(subset.matches(info["match_file"])) == 200


def test_two_processes_build_the_same_real_brown_set_at_once(tmp_path):
    """Two runs asking for the same uncached set at the same moment: both succeed with the
    same, whole set (built once: the second waits on the lock and reuses it), and nothing
    half-built is left beside it (the old fixed <key>.tmp folder left a done.json beside one
    subset, for good)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    data, cache, go = _tiny_real_data(tmp_path), tmp_path / "cache", tmp_path / "go"
    kwargs = {**_TINY_BROWN, "train_sequences": list(_TINY_BROWN["train_sequences"])}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_BUILD, str(data), str(cache), str(go), json.dumps(kwargs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    time.sleep(1.0)
    go.touch()
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]
    folders = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(folders) == 1
    folder = Path(folders.pop())
    _assert_whole_brown_set(folder)
    assert P.real_brown_complete(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([folder.name, f"{folder.name}.lock"])


def test_partial_real_sets_are_rebuilt_never_used(tmp_path):
    """A cached set with done.json / report.json beside missing or cut subsets (what the old
    concurrent builds left) is rebuilt, not returned."""
    data = _tiny_real_data(tmp_path)
    folder = P.build_real_brown(data, tmp_path / "cache", **_TINY_BROWN)
    whole = brown.subset_digest(brown.read_subset(folder / "real_train"))
    shutil.rmtree(folder / "real_train")  # the wreck: done.json beside the test subset only
    assert P.build_real_brown(data, tmp_path / "cache", **_TINY_BROWN) == folder
    _assert_whole_brown_set(folder)
    assert brown.subset_digest(brown.read_subset(folder / "real_train")) == whole
    assert P.real_brown_complete(folder)
    # a truncated tile, a short info.txt, an unreadable done.json: each is not a whole set
    tile = folder / "v_test" / "patches0000.bmp"
    for path, cut in ((tile, tile.read_bytes()[:5000]), (folder / "real_train" / "info.txt", b"1 0\n"), (folder / "done.json", b"{")):
        before = path.read_bytes()
        path.write_bytes(cut)
        assert not P.real_brown_complete(folder)
        path.write_bytes(before)
        assert P.real_brown_complete(folder)

    release = P.build_real_hpatches(data, tmp_path / "cache", sequences=("v_test",), n_synthetic=0, max_keypoints=60, min_ncc=None)
    assert P.real_hpatches_complete(release.parent)
    ref = (release / "v_test" / "ref.png").read_bytes()
    (release / "v_test" / "ref.png").unlink()
    assert not P.real_hpatches_complete(release.parent)
    assert P.build_real_hpatches(data, tmp_path / "cache", sequences=("v_test",), n_synthetic=0, max_keypoints=60, min_ncc=None) == release
    assert (release / "v_test" / "ref.png").read_bytes() == ref


def test_missing_photo_sources_are_refused_unless_allowed(tmp_path):
    """data=brown_real on a data root without coil100/ or flickrlogos27/ used to train on the
    12 scikit-image photos alone, silently: now one line names what is missing, and the
    smaller set is built only when asked for (under a cache key of its own)."""
    import yaml

    from tests.conftest import REPO

    data = _tiny_real_data(tmp_path)
    config = yaml.safe_load((REPO / "conf" / "data" / "brown_real.yaml").read_text())
    module = BrownDataModule(data_root=str(data), cache_dir=str(tmp_path / "cache"), real_data=config["real_data"])
    with pytest.raises(DatasetNotFoundError, match="COIL-100") as error:
        module.prepare_data()
    assert error.value.path == data / "coil100" and "FlickrLogos-27" in str(error.value)
    assert "allow_partial_sources=true" in str(error.value) and "\n" not in str(error.value)
    assert config["real_data"]["allow_partial_sources"] is False
    # only the missing one is named; an empty folder is missing too
    (data / "coil100").mkdir()
    cv2.imwrite(str(data / "coil100" / "obj1__0.png"), texture(3, (128, 128)))
    (data / "flickrlogos27" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="FlickrLogos-27") as error:
        P.build_real_brown(data, tmp_path / "cache", **{**_TINY_BROWN, "n_coil": 1, "n_logos": 3})
    assert error.value.path == data / "flickrlogos27" / "images" and "COIL" not in str(error.value)
    assert not (tmp_path / "cache" / "real_brown").exists()  # refused before any build
    # asked for: built from what is there, with the missing folders in its key
    folder = P.build_real_brown(data, tmp_path / "cache", **{**_TINY_BROWN, "n_coil": 1, "n_logos": 3}, allow_partial_sources=True)
    settings = json.loads((folder / "done.json").read_text())["settings"]
    assert settings["missing_sources"] == [str(data / "flickrlogos27" / "images")] and "allow_partial_sources" not in settings
    assert P.real_brown_complete(folder)
