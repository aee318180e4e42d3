"""Compositions of the real Brown set (photos, sequences, tracks, a mix) and the
leave-one-sequence-out protocol: the splitter never leaks a test sequence into training or
validation, and a fold builds end to end on a tiny data root (two sequences and a track set in
their official layouts)."""

from __future__ import annotations

import inspect
import json

import hydra
import numpy as np
import pytest

from descriptors.data import brown
from descriptors.data.datamodule import BrownDataModule
from descriptors.data.real import geometry as G
from descriptors.data.real import portable as P
from descriptors.data.real import protocols
from descriptors.data.real.tracks import extract_track_correspondences, read_track_set
from tests.descriptors.data.multiview_scene import write_wall_scene
from tests.descriptors.data.test_real import _write_layout, texture

#: the cache folder of conf/data/brown_real.yaml's set for data_root=/data before track sets
#: existed (and of build_real_brown's defaults): the photo composition keeps its cached sets
DEFAULT_KEYS = {"brown_real": "6606a70e8a", "defaults": "671b25c5c0"}


def test_leave_one_out_never_leaks_the_test_sequence():
    folds = protocols.leave_one_out_folds()
    assert [fold.test for fold in folds] == list(protocols.REAL_SEQUENCES)
    assert len(protocols.REAL_SEQUENCES) == 7 and "vgg_dinosaur" in protocols.REAL_SEQUENCES
    for fold in folds:
        assert fold.test not in fold.train and fold.val not in fold.train and fold.val != fold.test
        assert sorted((*fold.train, fold.val, fold.test)) == sorted(protocols.REAL_SEQUENCES)
        assert fold.val == ("wall" if fold.test == "graf" else "graf")
    assert protocols.leave_one_out_folds() == folds  # deterministic
    with pytest.raises(ValueError, match="distinct"):
        protocols.leave_one_out_folds(["a", "a", "b"])
    with pytest.raises(ValueError, match="no validation sequence"):
        protocols.leave_one_out_folds(["a", "b", "c"], val_preference=("a",))


def test_fold_settings_split_sequences_from_track_sets(tmp_path):
    (tmp_path / "sequences" / "graf").mkdir(parents=True)
    (tmp_path / "multiview" / "vgg_dinosaur").mkdir(parents=True)
    fold = protocols.leave_one_out_folds()[-2]  # v_churchill held out
    settings = protocols.fold_settings(fold, tmp_path, n_train_pairs=500)
    assert settings["track_sets"] == ["vgg_dinosaur"] and settings["train_sequences"] == ["wall", "bark", "bikes", "leuven"]
    assert settings["val_sequences"] == ["graf"] and settings["test_sequence"] == "v_churchill"
    assert settings["n_coil"] == settings["n_logos"] == 0 and settings["skimage_photos"] is False and settings["n_train_pairs"] == 500
    assert set(settings) <= set(inspect.signature(P.build_real_brown).parameters)
    with pytest.raises(ValueError, match="the fold's own"):
        protocols.fold_settings(fold, tmp_path, test_sequence="graf")
    based = protocols.fold_settings(fold, tmp_path, base={"n_coil": 7, "test_sequence": "graf"})
    assert based["n_coil"] == 7 and based["test_sequence"] == "v_churchill" and "skimage_photos" not in based


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Two Oxford-layout sequences and one VGG-layout track set."""
    root = tmp_path_factory.mktemp("real") / "data"
    for k, name in enumerate(("seq_a", "seq_b")):
        _write_layout(root / "sequences" / name, G.synthetic_sequence(name, texture(30 + k), n_images=6, seed=k, strength=0.05), "oxford")
    write_wall_scene(root / "multiview" / "tracks_a", seed=5, n_tracks=60)
    return root


TINY = dict(test_keypoints=60, n_train_pairs=200, n_test_pairs=200, min_ncc=None, track_radius=10.0)


def test_a_fold_builds_and_its_test_subset_is_the_held_out_sequence(tiny_root, tmp_path):
    """Each fold of (seq_a, seq_b, tracks_a) builds; the test subset is cut from the held-out
    sequence only (its points, its views), none of its patches is a training patch, and the
    training subset holds the rest; the track set trains, validates or tests by fold, and the
    datamodule reads a fold."""
    names, preference = ("seq_a", "seq_b", "tracks_a"), ("seq_a", "tracks_a")
    folds = {fold.test: fold for fold in protocols.leave_one_out_folds(names, preference)}
    roots = protocols.build_folds(tiny_root, tmp_path / "cache", names, preference, **TINY)
    assert sorted(roots) == sorted(names)
    tracks = extract_track_correspondences(read_track_set(tiny_root / "multiview" / "tracks_a"), radius=10.0)
    for test, root in roots.items():
        fold = folds[test]
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(["real_train", fold.val, test])
        report = json.loads((root / "done.json").read_text())
        assert sorted(report["pairs"]) == sorted([*fold.train, fold.val, test])
        train, held_out = brown.read_subset(root / "real_train"), brown.read_subset(root / test)
        train_patches = {p.tobytes() for p in np.asarray(train.patches)}
        assert not any(p.tobytes() in train_patches for p in np.asarray(held_out.patches))
        if test == "tracks_a":  # its kept tracks and views, nothing else
            assert report["test"]["points"] == int((tracks.inside.sum(0) >= 2).sum())
            assert report["test"]["patches"] == int(tracks.inside[:, tracks.inside.sum(0) >= 2].sum())
            assert held_out.interest[:, 0].max() <= 2
        else:  # the sequence's 6 images
            assert held_out.interest[:, 0].max() <= 5
            assert report["test"]["points"] <= 60
    # the fold that holds seq_b out trains on the track set alone
    assert json.loads((roots["seq_b"] / "done.json").read_text())["train"]["points"] == int((tracks.inside.sum(0) >= 2).sum())
    fold = folds["seq_a"]  # validates on the track set
    module = BrownDataModule(data_root=str(tiny_root), train_subset="real_train", val_subset=fold.val, test_subset=fold.test, n_train=32, n_val=50,
                             batch_size=16, test_match_file="m50_200_200_0.txt", cache_dir=str(tmp_path / "cache"),
                             real_data=protocols.fold_settings(fold, tiny_root, **TINY))
    assert module._root() == str(roots["seq_a"])
    module.setup("fit")
    assert next(iter(module.val_dataloader()))["patch1"].shape == (50, 1, 64, 64)


def test_a_track_set_may_be_the_validation_or_test_subset_but_never_also_trained_on(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="held out"):
        P.build_real_brown(tiny_root, tmp_path, train_sequences=("seq_a",), track_sets=("tracks_a",), test_sequence="tracks_a")
    with pytest.raises(ValueError, match="neither training"):
        P.build_real_brown(tiny_root, tmp_path, track_sets=("tracks_a",), val_sequences=("tracks_a",), test_sequence="seq_b")
    with pytest.raises(ValueError, match="named twice"):
        P.build_real_brown(tiny_root, tmp_path, train_sequences=("seq_a",), track_sets=("seq_a",), test_sequence="seq_b")


# --------------------------------------------------------------------------- compositions


def _key(monkeypatch, tmp_path, data_root, **settings) -> str:
    """The cache folder name build_real_brown gives ``settings`` (nothing is built)."""
    monkeypatch.setattr(P, "missing_photo_sources", lambda *args, **kwargs: [])
    monkeypatch.setattr(P, "real_brown_complete", lambda folder: True)
    return P.build_real_brown(data_root, tmp_path, **settings).name


def test_the_photo_composition_keeps_its_cache_key(monkeypatch, tmp_path, make_cfg):
    cfg = make_cfg(["data=brown_real"])
    real_data = dict(cfg.data.real_data)
    assert "track_sets" not in real_data
    assert _key(monkeypatch, tmp_path, "/data", **real_data) == DEFAULT_KEYS["brown_real"]
    assert _key(monkeypatch, tmp_path, "/data") == DEFAULT_KEYS["defaults"]
    # track options change nothing (and stay out of the key) while no track set is used
    assert _key(monkeypatch, tmp_path, "/data", **real_data, track_sets=[], track_radius=20.0) == DEFAULT_KEYS["brown_real"]
    # ... and are all in it once one is
    with_tracks = _key(monkeypatch, tmp_path, "/data", **real_data, track_sets=["vgg_dinosaur"])
    assert with_tracks != _key(monkeypatch, tmp_path, "/data", **real_data, track_sets=["vgg_dinosaur"], track_radius=20.0)


@pytest.mark.parametrize("name", ["brown_real", "brown_real_sequences", "brown_real_tracks", "brown_real_mix"])
def test_compositions_compose_and_hold_the_test_out(make_cfg, name):
    cfg = make_cfg([f"data={name}"])
    real_data = dict(cfg.data.real_data)
    assert set(real_data) <= set(inspect.signature(P.build_real_brown).parameters)
    held_in = [*real_data["train_sequences"], *real_data.get("track_sets", [])]
    assert real_data["test_sequence"] == cfg.data.test_subset == "v_churchill" and cfg.data.val_subset == "graf"
    assert real_data["test_sequence"] not in held_in and not set(real_data["val_sequences"]) & set(held_in)
    photos = real_data["n_coil"] != 0 or real_data["n_logos"] != 0 or real_data["skimage_photos"]
    sources = {"photos": photos, "sequences": bool(real_data["train_sequences"]), "tracks": bool(real_data.get("track_sets"))}
    assert sources == {
        "brown_real": {"photos": True, "sequences": False, "tracks": False},
        "brown_real_sequences": {"photos": False, "sequences": True, "tracks": False},
        "brown_real_tracks": {"photos": False, "sequences": False, "tracks": True},
        "brown_real_mix": {"photos": True, "sequences": True, "tracks": True},
    }[name]
    assert hydra.utils.instantiate(cfg.data).real_data == real_data
