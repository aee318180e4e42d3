"""Readers on tiny fixtures written in the official layouts (tiny JPEGs), and their errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import CorruptDatasetError, DatasetNotFoundError
from retrieval.data.datasets import read_distractors
from retrieval.data.images import load_image
from retrieval.data.landmarks import read_oxford_paris, read_revisited
from retrieval.data.objects import (
    read_flickrlogos27_retrieval,
    read_folder,
    read_holidays,
    read_ukbench,
)


def write_jpeg(path: Path, size=(40, 30), colour=(120, 60, 30), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-10, 11, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


OXFORD_IMAGES = ["all_souls_000001", "all_souls_000002", "all_souls_000003", "ashmolean_000001", "ashmolean_000002", "christ_church_000001"]


def write_oxford(root: Path, prefix: str = "oxc1_", nested: bool = False) -> Path:
    """Oxford layout: jpg/<name>.jpg + gt_files/<landmark>_<n>_{query,good,ok,junk}.txt.

    ``nested`` writes Paris-style ``jpg/paris/<landmark>/<name>.jpg`` folders.
    """
    for i, name in enumerate(OXFORD_IMAGES):
        folder = root / "jpg" / ("paris/" + name.rsplit("_", 1)[0] if nested else "")
        write_jpeg(folder / f"{name}.jpg", size=(60 + 4 * i, 40), seed=i)
    gt = root / "gt_files"
    gt.mkdir(parents=True)
    lists = {
        ("all_souls", 1): ("all_souls_000001", "10.5 4.0 40.5 30.0", ["all_souls_000001", "all_souls_000002"], ["all_souls_000003"], ["christ_church_000001"]),
        ("ashmolean", 2): ("ashmolean_000002", "0 0 20 20", ["ashmolean_000002"], [], ["ashmolean_000001"]),
        ("ashmolean", 1): ("ashmolean_000001", "5 5 25 25", ["ashmolean_000001", "ashmolean_000002"], [], []),
    }
    for (landmark, n), (query, box, good, ok, junk) in lists.items():
        (gt / f"{landmark}_{n}_query.txt").write_text(f"{prefix}{query} {box}\n")
        for kind, names in (("good", good), ("ok", ok), ("junk", junk)):
            (gt / f"{landmark}_{n}_{kind}.txt").write_text("".join(f"{x}\n" for x in names))
    return root


def test_oxford_gt_files(tmp_path):
    rset = read_oxford_paris(write_oxford(tmp_path / "oxford5k"), "oxford5k")
    index = {p.stem: i for i, p in enumerate(rset.database)}
    assert [p.stem for p in rset.database] == sorted(OXFORD_IMAGES)
    assert [p.stem for p in rset.queries] == ["all_souls_000001", "ashmolean_000001", "ashmolean_000002"]  # landmark, number
    assert rset.query_boxes[0] == (10.5, 4.0, 40.5, 30.0)
    first = rset.gnd[0]
    assert sorted(first["ok"].tolist()) == sorted(index[n] for n in ("all_souls_000001", "all_souls_000002", "all_souls_000003"))
    assert first["junk"].tolist() == [index["christ_church_000001"]]
    assert index["all_souls_000001"] in first["ok"]  # the query stays in the database (official gnd)
    assert rset.protocol == "oxford"


def test_paris_nested_folders_no_prefix(tmp_path):
    rset = read_oxford_paris(write_oxford(tmp_path / "paris6k", prefix="", nested=True), "paris6k")
    assert len(rset.database) == len(OXFORD_IMAGES) and len(rset.queries) == 3
    assert rset.queries[0].parent.name == "all_souls"


def test_missing_gt_file_names_the_path(tmp_path):
    root = write_oxford(tmp_path / "oxford5k")
    (root / "gt_files" / "ashmolean_2_junk.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="ashmolean_2_junk.txt"):
        read_oxford_paris(root, "oxford5k")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        read_oxford_paris(tmp_path / "nowhere", "oxford5k")


def write_revisited(root: Path, name: str = "roxford5k") -> Path:
    imlist = [f"img_{i}" for i in range(5)]
    qimlist = ["query_a", "query_b"]
    for i, image in enumerate(imlist + qimlist):
        write_jpeg(root / "jpg" / f"{image}.jpg", size=(50, 40), seed=i)
    gnd = [
        {"bbx": [1.0, 2.0, 30.0, 35.0], "easy": [0, 1], "hard": [2], "junk": [3]},
        {"bbx": [0.0, 0.0, 20.0, 20.0], "easy": [], "hard": [4], "junk": []},  # no easy positive
    ]
    with (root / f"gnd_{name}.pkl").open("wb") as handle:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, handle)
    return root


def test_revisited_pickle_and_easy_medium_hard(tmp_path):
    from retrieval.evaluate import evaluate_protocol, revisited_gnd

    rset = read_revisited(write_revisited(tmp_path / "roxford5k"), "roxford5k")
    assert [p.name for p in rset.queries] == ["query_a.jpg", "query_b.jpg"]
    assert rset.query_boxes[0] == (1.0, 2.0, 30.0, 35.0) and len(rset.database) == 5
    easy = revisited_gnd(rset.gnd, "easy")
    assert easy[1]["ok"].size == 0  # skipped (NaN) under Easy
    assert sorted(revisited_gnd(rset.gnd, "medium")[0]["ok"].tolist()) == [0, 1, 2]
    assert sorted(revisited_gnd(rset.gnd, "hard")[0]["junk"].tolist()) == [0, 1, 3]
    perfect = np.stack([np.array([0, 1, 2, 3, 4]), np.array([4, 0, 1, 2, 3])], axis=1)
    metrics = evaluate_protocol(rset.protocol, perfect, rset.gnd)
    assert metrics["map_easy"] == metrics["map_medium"] == metrics["map_hard"] == 1.0


def test_corrupt_pickle_names_the_path(tmp_path):
    root = write_revisited(tmp_path / "rparis6k", "rparis6k")
    (root / "gnd_rparis6k.pkl").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(CorruptDatasetError, match="gnd_rparis6k.pkl"):
        read_revisited(root, "rparis6k")
    (root / "gnd_rparis6k.pkl").unlink()
    with pytest.raises(DatasetNotFoundError, match="gnd_rparis6k.pkl"):
        read_revisited(root, "rparis6k")


def test_unreadable_jpeg_names_the_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(CorruptDatasetError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(DatasetNotFoundError, match="absent.jpg"):
        load_image(tmp_path / "absent.jpg")


def test_query_crop_keeps_database_scale(tmp_path):
    path = write_jpeg(tmp_path / "wide.jpg", size=(200, 100))
    assert load_image(path, image_size=100).shape == (3, 50, 100)
    assert load_image(path, box=(0, 0, 100, 50), image_size=100).shape == (3, 25, 50)  # crop scaled by 0.5 too
    assert load_image(path, box=(150, 0, 210, 40), image_size=None).shape == (3, 40, 50)  # clipped to the image
    assert load_image(path, box=(0, 0, 100, 50), image_size=32, square=True).shape == (3, 32, 32)


def test_holidays_names(tmp_path):
    for i, name in enumerate(["100000", "100001", "100002", "100100", "100101"]):
        write_jpeg(tmp_path / "holidays" / "jpg" / f"{name}.jpg", seed=i)
    rset = read_holidays(tmp_path / "holidays")
    assert [p.stem for p in rset.queries] == ["100000", "100100"]
    assert rset.gnd[0]["ok"].tolist() == [1, 2] and rset.gnd[0]["junk"].tolist() == [0]  # query excluded
    assert rset.gnd[1]["ok"].tolist() == [4] and rset.database_groups.tolist() == [1000, 1000, 1000, 1001, 1001]


def test_ukbench_names_and_ns(tmp_path):
    from retrieval.evaluate import evaluate_protocol

    for i in range(8):
        write_jpeg(tmp_path / "ukbench" / "full" / f"ukbench{i:05d}.jpg", seed=i)
    rset = read_ukbench(tmp_path / "ukbench")
    assert len(rset.queries) == len(rset.database) == 8
    assert rset.database_groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    ranks = np.array([[*range(4 * (q // 4), 4 * (q // 4) + 4), *(j for j in range(8) if j // 4 != q // 4)] for q in range(8)]).T
    assert evaluate_protocol("ukbench", ranks, rset.gnd, (1,), rset.query_groups, rset.database_groups)["ns"] == 4.0


def test_folder_of_groups(tmp_path):
    for g in ("cat", "dog"):
        for i in range(3):
            write_jpeg(tmp_path / "groups" / g / f"{i}.jpg", seed=i)
    rset = read_folder(tmp_path / "groups")
    assert [p.parent.name + "/" + p.name for p in rset.queries] == ["cat/0.jpg", "dog/0.jpg"]
    assert len(rset.database) == 4 and rset.gnd[1]["ok"].tolist() == [2, 3]


def write_flickrlogos27(root: Path) -> Path:
    """annotation file ``image class subset x1 y1 x2 y2`` (inclusive) + images/."""
    lines = []
    for i in range(6):
        brand = "Adidas" if i < 3 else "Nike"
        write_jpeg(root / "images" / f"{i}.jpg", size=(80, 60), seed=i)
        for subset in (1, 2):  # the official file repeats a box per subset
            lines.append(f"{i}.jpg {brand} {subset} 5 5 {20 + 5 * i} 40")
    (root / "flickr_logos_27_dataset_training_set_annotation.txt").write_text("\n".join(lines) + "\n")
    return root


def test_flickrlogos27_retrieval_junk_is_own_image(tmp_path):
    rset = read_flickrlogos27_retrieval(write_flickrlogos27(tmp_path / "flickrlogos27"), queries_per_brand=2)
    assert len(rset.database) == 6
    assert [p.name for p in rset.queries] == ["2.jpg", "1.jpg", "5.jpg", "4.jpg"]  # largest boxes first
    assert rset.gnd[0]["junk"].tolist() == [2] and rset.gnd[0]["ok"].tolist() == [0, 1]
    assert rset.query_boxes[0] == (5.0, 5.0, 31.0, 41.0)  # inclusive corners -> exclusive


def test_distractors_are_appended_and_never_positive(tmp_path):
    from retrieval.evaluate import evaluate_protocol

    base = read_folder(_two_groups(tmp_path))
    for i in range(3):
        write_jpeg(tmp_path / "r1m" / "jpg" / f"d{i}.jpg", seed=10 + i)
    (tmp_path / "r1m" / "revisitop1m.txt").write_text("d0\nd1\nd2\n")
    paths = read_distractors(tmp_path / "r1m")
    assert [p.name for p in paths] == ["d0.jpg", "d1.jpg", "d2.jpg"]
    big = base.with_distractors(paths)
    assert big.database[: len(base.database)] == base.database and big.distractors == 3
    assert all(max(g["ok"]) < len(base.database) for g in big.gnd)
    assert big.database_groups[-3:].tolist() == [-1, -1, -1]
    # distractors ranked first lower the mAP
    n = len(big.database)
    ranks = np.stack([np.r_[n - 3 : n, 0 : n - 3]] * len(big.gnd), axis=1)
    assert evaluate_protocol("groups", ranks, big.gnd)["map"] < 1.0
    with pytest.raises(DatasetNotFoundError, match="missing_folder"):
        read_distractors(tmp_path / "missing_folder")


def _two_groups(tmp_path: Path) -> Path:
    for g in ("a", "b"):
        for i in range(2):
            write_jpeg(tmp_path / "two" / g / f"{i}.jpg", seed=i)
    return tmp_path / "two"


def test_download_unpacks_and_flattens_paris_layout(tmp_path):
    """file:// URLs stand in for the official ones (no network here)."""
    import tarfile

    from retrieval.data.download import download_dataset

    source = write_oxford(tmp_path / "source", prefix="", nested=True)
    with tarfile.open(tmp_path / "paris_1-v1.tgz", "w:gz") as tar:
        tar.add(source / "jpg" / "paris", arcname="paris")
    with tarfile.open(tmp_path / "paris_120310.tgz", "w:gz") as tar:
        for path in (source / "gt_files").iterdir():
            tar.add(path, arcname=path.name)
    root = tmp_path / "paris6k"
    urls = [((tmp_path / "paris_1-v1.tgz").as_uri(), "jpg", True), ((tmp_path / "paris_120310.tgz").as_uri(), "gt_files", True)]
    download_dataset("paris6k", root, urls=urls)
    assert sorted(p.stem for p in (root / "jpg").glob("*.jpg")) == sorted(OXFORD_IMAGES)  # flattened
    assert len(read_oxford_paris(root, "paris6k").queries) == 3
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        download_dataset("paris6k", tmp_path / "other", urls=[((tmp_path / "absent.tgz").as_uri(), "jpg", True)])


def test_paris_drops_unreadable_images(tmp_path):
    root = write_oxford(tmp_path / "paris6k", prefix="", nested=True)
    broken = root / "jpg" / "paris" / "christ_church" / "christ_church_000001.jpg"
    broken.write_bytes(b"\xff\xd8\xff corrupt")
    rset = read_oxford_paris(root, "paris6k", drop_unreadable=True)
    assert len(rset.database) == len(OXFORD_IMAGES) - 1
    assert rset.gnd[0]["junk"].size == 0  # its only junk image was the broken one
    assert len(read_oxford_paris(root, "paris6k").database) == len(OXFORD_IMAGES)


def test_old_protocol_gnd_pickle_matches_gt_files(tmp_path):
    root = write_oxford(tmp_path / "oxford5k")
    from_gt = read_oxford_paris(root, "oxford5k")
    names = [p.stem for p in from_gt.database]
    entries = [{"bbx": list(b), "ok": g["ok"].tolist(), "junk": g["junk"].tolist()} for b, g in zip(from_gt.query_boxes, from_gt.gnd)]
    pkl_root = tmp_path / "pkl" / "oxford5k"
    (pkl_root).mkdir(parents=True)
    shutil.copytree(root / "jpg", pkl_root / "jpg")
    with (pkl_root / "gnd_oxford5k.pkl").open("wb") as handle:
        pickle.dump({"imlist": names, "qimlist": [p.stem for p in from_gt.queries], "gnd": entries}, handle)
    from_pkl = read_oxford_paris(pkl_root, "oxford5k")
    assert from_pkl.protocol == "oxford" and [p.name for p in from_pkl.database] == [p.name for p in from_gt.database]
    assert all((a["ok"] == b["ok"]).all() and (a["junk"] == b["junk"]).all() for a, b in zip(from_pkl.gnd, from_gt.gnd))
    shutil.copy(pkl_root / "gnd_oxford5k.pkl", pkl_root / "gnd_roxford5k.pkl")
    with pytest.raises(CorruptDatasetError, match="easy/hard"):  # an old-protocol file is not a revisited one
        read_revisited(pkl_root, "roxford5k")


def test_flickr100k_style_distractor_folder(tmp_path):
    for i in range(3):
        write_jpeg(tmp_path / "flickr100k" / f"oxc1_100k_part{i}" / f"img{i}.jpg", seed=i)
    assert [p.name for p in read_distractors(tmp_path / "flickr100k")] == ["img0.jpg", "img1.jpg", "img2.jpg"]
