"""The BBS105 reader on fixtures written in the authors' release layout."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import CorruptDatasetError, DatasetNotFoundError
from regionsearch.data.bbs import list_bbs_pairs, load_bbs_pairs, read_bbs_box, template_box

from .bbs_fixture import write_bbs_fixture


def test_pairs_sorted_by_number_and_both_frm1_boxes_told_apart(tmp_path):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=3)
    files = list_bbs_pairs(root)
    assert [f.number for f in files] == [1, 2, 3]
    first = files[0]
    assert (first.video, first.frame_a, first.frame_b) == ("video1", 10, 30)
    # both box files are tagged frm1: the template box is the one of image A's frame
    assert first.box_a.name == "pair0001_frm1_video1_0010.txt"
    assert first.box_b.name == "pair0001_frm1_video1_0030.txt"
    assert first.image_b.name == "pair0001_frm2_video1_0030.jpg"


def test_boxes_are_zero_based_continuous_and_the_template_is_cut_at_the_rounded_box(tmp_path):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=1)
    (pair,) = load_bbs_pairs(root)
    np.testing.assert_allclose(pair.box_a, [20.25, 15.5, 44.75, 35.5])  # x,y,w,h -> x1,y1,x+w,y+h
    assert pair.image_a.shape == (72, 96, 3) and pair.image_a.dtype == np.uint8
    # x 20.25 -> 20, y 15.5 -> 16 (half up, as MATLAB), w 24.5 -> 25, h 20 -> 20
    assert pair.template_box() == (20, 16, 45, 36)
    assert pair.template().shape == (20, 25, 3)
    np.testing.assert_array_equal(pair.template(), pair.image_a[16:36, 20:45])


def test_template_box_is_clipped_to_the_image():
    assert template_box(np.array([-0.4, 2.0, 12.6, 9.0]), (8, 10)) == (0, 2, 10, 8)


def test_read_box_accepts_the_release_format(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("247.500000,114.750000,19.500000,45.750000")  # no newline, as released
    np.testing.assert_allclose(read_bbs_box(path), [247.5, 114.75, 267.0, 160.5])


def test_missing_folder_is_one_dataset_error_naming_the_path_and_the_source(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="BBS dataset folder not found") as info:
        list_bbs_pairs(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "BBS_code_and_data_release" in message
    assert "\n" not in message


def test_missing_ground_truth_box_names_the_expected_file(tmp_path):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=2)
    (root / "pair0002_frm1_video2_0040.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="pair 0002 lacks its ground-truth box in B") as info:
        list_bbs_pairs(root)
    assert "pair0002_frm1_video2_0040.txt" in str(info.value)


def test_missing_image_b(tmp_path):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=1)
    (root / "pair0001_frm2_video1_0030.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks image B"):
        list_bbs_pairs(root)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,0,4", "1,2,3,-4", "nan,1,2,3"])
def test_bad_box_is_a_corrupt_dataset_error(tmp_path, text):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=1)
    (root / "pair0001_frm1_video1_0010.txt").write_text(text)
    with pytest.raises(CorruptDatasetError, match="pair0001_frm1_video1_0010.txt"):
        load_bbs_pairs(root)


def test_box_outside_its_image_is_corrupt(tmp_path):
    root = write_bbs_fixture(tmp_path / "bbs", n_pairs=1)
    (root / "pair0001_frm1_video1_0030.txt").write_text("500,10,5,5")
    with pytest.raises(CorruptDatasetError, match="outside"):
        load_bbs_pairs(root)


def test_rescaled_pair_scales_boxes_with_images(tmp_path):
    (pair,) = load_bbs_pairs(write_bbs_fixture(tmp_path / "bbs", n_pairs=1))
    half = pair.rescaled(0.5)
    assert half.image_b.shape == (36, 48, 3)
    np.testing.assert_allclose(half.box_b, pair.box_b / 2)
