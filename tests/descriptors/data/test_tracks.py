"""Multi-view point tracks (the VGG Dinosaur layout): the reader and its errors, triangulation,
patch frames (one 3D neighbourhood, one orientation in every view) and the Brown subset of a
track set, on a tiny calibrated wall scene (tests/descriptors/data/multiview_scene.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import CorruptDatasetError, DatasetNotFoundError
from descriptors.data import brown
from descriptors.data.real import tracks as T
from descriptors.data.real import writer as W
from descriptors.data.real.geometry import warp_patches
from tests.descriptors.data.multiview_scene import CAMERAS, FOCAL, camera, write_wall_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiview") / "wall"
    images, projections, world, points, observed = write_wall_scene(folder)
    return folder, world, points, observed


def _pair_ncc(track_set, corr, a, b, size=64):
    both = np.flatnonzero(corr.inside[a] & corr.inside[b])
    pa = warp_patches(track_set.images[a], corr.centres[a, both], corr.linear[a, both], size)
    pb = warp_patches(track_set.images[b], corr.centres[b, both], corr.linear[b, both], size)
    return W._ncc(pa, pb), W._ncc(pa, np.roll(pb, 5, axis=0))


def test_reader_round_trips_the_layout_and_triangulates(scene):
    folder, world, points, observed = scene
    assert {p.name for p in folder.iterdir()} == {"images", "dinosaur.json", "2d_tracked_points.csv"}
    track_set = T.read_track_set(folder)
    assert track_set.name == "wall" and len(track_set.images) == 3 and track_set.images[0].shape == (240, 320)
    np.testing.assert_array_equal(track_set.observed, observed)
    np.testing.assert_allclose(track_set.points[observed], points[observed], atol=0.005)  # two decimals, as the official file
    estimate = T.triangulate_tracks(track_set.projections, track_set.points, track_set.observed)
    np.testing.assert_allclose(estimate, world, atol=5e-3)  # (world units: the wall is 5 away)
    reprojected, _ = T.project(track_set.projections, estimate)
    assert np.abs(reprojected - points)[observed].max() < 0.05


def test_extra_images_are_not_views(scene, tmp_path):
    """The Dinosaur ships viff.036, a copy of viff.000: views are those of the camera file."""
    import shutil

    folder = tmp_path / "wall"
    shutil.copytree(scene[0], folder)
    shutil.copy(folder / "images" / "viff.000.ppm", folder / "images" / "viff.003.ppm")
    track_set = T.read_track_set(folder)
    assert len(track_set.images) == len(track_set.projections) == 3


def test_the_same_3d_point_gives_the_same_patch_in_every_view(scene):
    """Patches of one track agree across views (NCC ~1: the wall is seen by a nearer, a rolled and
    a sign-flipped camera), patches of different tracks do not; the patch radius follows the
    depth (one 3D neighbourhood) and the orientation follows the camera's roll."""
    track_set = T.read_track_set(scene[0])
    corr = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.0, min_ncc=None)
    assert corr.report[0]["tracks_kept"] == 80 and corr.report[0]["median_reprojection_px"] < 0.01
    np.testing.assert_array_equal(corr.inside, scene[3])  # every tracked view, no other
    for a, b in ((0, 1), (0, 2), (1, 2)):
        same, other = _pair_ncc(track_set, corr, a, b)
        assert np.median(same) > 0.97 and same.min() > 0.85, (a, b)
        assert np.median(other) < 0.3, (a, b)
    both = np.flatnonzero(corr.inside.all(0))
    radius = np.sqrt(np.abs(np.linalg.det(corr.linear[:, both])))
    # one 3D radius: pixels x depth / focal is the same in every view
    world = T.triangulate_tracks(track_set.projections, track_set.points, track_set.observed)[both]
    depth = np.stack([(camera(*spec) @ np.c_[world, np.ones(len(world))].T)[2] for spec in CAMERAS])  # (K's last row: 0 0 1)
    size3d = radius * depth / FOCAL
    assert np.ptp(size3d, axis=0).max() < 1e-6 * size3d.mean()
    angle = np.degrees(np.arctan2(corr.linear[:, both, 1, 0], corr.linear[:, both, 0, 0]))
    assert np.median(angle[2] - angle[0]) == pytest.approx(-CAMERAS[2][2], abs=2.0)  # the third camera's 20 degree roll


def test_scale_spread_draws_one_radius_per_track(scene):
    track_set = T.read_track_set(scene[0])
    corr = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.5, min_ncc=None, seed=3)
    radius0 = np.sqrt(np.abs(np.linalg.det(corr.linear[0, corr.inside[0]])))
    assert radius0.min() >= 10 * 2**-0.5 - 0.1 and radius0.max() <= 10 * 2**0.5 + 0.1 and np.std(radius0) > 1.0
    same, _ = _pair_ncc(track_set, corr, 0, 1)
    assert np.median(same) > 0.97
    again = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.5, min_ncc=None, seed=3)
    np.testing.assert_array_equal(again.linear, corr.linear)


def test_ncc_check_and_reprojection_drop_bad_views(scene):
    track_set = T.read_track_set(scene[0])
    # another picture in view 2 (never a reference: the middle view of three, the first of two):
    # its patches no longer show the tracked points
    track_set.images[2] = np.ascontiguousarray(np.fliplr(track_set.images[2]))
    corr = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.0, min_ncc=0.5)
    assert corr.inside[2].sum() < 0.2 * scene[3][2].sum()
    assert corr.inside[:2].sum() > 0.9 * scene[3][:2].sum()
    # a track moved by 15 px in one view reprojects far from it: not kept there
    track_set = T.read_track_set(scene[0])
    k = int(np.flatnonzero(track_set.observed.all(0))[0])
    track_set.points[1, k] += 15.0
    corr = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.0, min_ncc=None)
    assert corr.inside[:, k].sum() < 3


def test_track_set_writes_a_brown_subset(scene, tmp_path):
    """One track = one Brown 3D point, one patch per kept view, the m50 pairs of the set."""
    track_set = T.read_track_set(scene[0])
    corr = T.extract_track_correspondences(track_set, radius=10.0, scale_spread=0.0, min_ncc=0.3)
    info = W.write_brown_set(tmp_path / "wall", [corr], [track_set], n_match_pairs=200, seed=0)
    assert info == {"patches": int(corr.inside.sum()), "points": 80, "match_file": "m50_200_200_0.txt"}
    subset = brown.read_subset(tmp_path / "wall")
    assert np.bincount(subset.point_ids).min() >= 2 and subset.interest[:, 0].max() <= 2
    pairs = subset.matches("m50_200_200_0.txt")
    patches = np.asarray(subset.patches)
    ncc = W._ncc(patches[pairs[:, 0]], patches[pairs[:, 1]])
    assert np.median(ncc[pairs[:, 2] == 1]) > 0.95 and np.median(ncc[pairs[:, 2] == 0]) < 0.3


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and error.value.hint
    return text


def test_missing_and_corrupt_files_name_the_path(scene, tmp_path):
    import shutil

    with pytest.raises(DatasetNotFoundError, match="multi-view set folder not found") as error:
        T.read_track_set(tmp_path / "nowhere")
    assert "nowhere" in _one_line(error) and "multiview" in error.value.hint
    folder = tmp_path / "wall"
    shutil.copytree(scene[0], folder)
    (folder / "2d_tracked_points.csv").rename(folder / "tracks.bak")
    with pytest.raises(DatasetNotFoundError, match="2d_tracked_points.csv") as error:
        T.read_track_set(folder)
    _one_line(error)
    (folder / "2d_tracked_points.csv").write_text("1 2 3\n")
    with pytest.raises(CorruptDatasetError, match="line 1 holds 3 numbers, expected 6") as error:
        T.read_track_set(folder)
    assert "\n" not in str(error.value)
    (folder / "tracks.bak").replace(folder / "2d_tracked_points.csv")
    (folder / "images" / "viff.002.ppm").unlink()
    with pytest.raises(DatasetNotFoundError, match="viff.002.ppm") as error:
        T.read_track_set(folder)
    _one_line(error)
    (folder / "dinosaur.json").write_text(json.dumps({"P": [[1, 2, 3]]}))
    with pytest.raises(CorruptDatasetError, match="dinosaur.json"):
        T.read_track_set(folder)
    (folder / "dinosaur.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="no camera file") as error:
        T.read_track_set(folder)
    _one_line(error)


def test_the_vgg_dinosaur_if_present():
    """The shared Dinosaur: every track triangulates (median reprojection 0.2 px, as its README
    says), nearly all are kept, and matching patches agree far more than non-matching ones."""
    from tests.conftest import SHARED_DATA

    folder = SHARED_DATA / "multiview" / "vgg_dinosaur"
    if not (folder / T.TRACKS_FILE).is_file():
        pytest.skip("the shared VGG Dinosaur is not available")
    track_set = T.read_track_set(folder)
    assert len(track_set.images) == 36 and track_set.observed.shape == (36, 4983)
    corr = T.extract_track_correspondences(track_set)
    summary = corr.report[0]
    assert summary["median_reprojection_px"] < 0.5 and summary["tracks_kept"] > 4500
    same, other = _pair_ncc(track_set, corr, 10, 11, size=32)
    assert np.median(same) > 0.5 > 0.2 > np.median(other)
