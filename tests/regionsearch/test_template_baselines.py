"""Every real-photo baseline finds a textured template pasted in a noisy scene (known answer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.backbones import EfficientNetLite0Blocks
from regionsearch.evaluate import box_iou
from regionsearch.search_path_method import zncc_refine, zncc_refine_windows
from regionsearch.template_baselines import (
    DeepFeatures,
    build_template_methods,
    ddis_authors_peak,
    match_bbs_colour,
    match_ddis,
    match_opencv,
)

from .bbs_fixture import textured_scene

# template top-left in the scene and its size
COL, ROW, TW, TH = 61, 37, 40, 32
TRUTH = np.array([COL, ROW, COL + TW, ROW + TH], dtype=np.float64)


@pytest.fixture(scope="module")
def synthetic_pair():
    rng = np.random.default_rng(3)
    template = textured_scene(rng, TH, TW).astype(np.float32)
    template = np.clip(template * 1.6 - 60, 0, 255)  # more contrast than the background
    scene = rng.normal(128, 40, (120, 160, 3)).clip(0, 255).astype(np.float32)
    scene[ROW : ROW + TH, COL : COL + TW] = template
    scene = (scene + rng.normal(0, 8, scene.shape)).clip(0, 255)  # noise on the pasted template too
    return template.astype(np.uint8), scene.astype(np.uint8)


@pytest.fixture(scope="module")
def deep():
    return DeepFeatures()


@pytest.mark.parametrize("method", ["ssd", "ncc", "zncc"])
def test_opencv_baselines_find_the_exact_window(synthetic_pair, method):
    template, scene = synthetic_pair
    result = match_opencv(template, scene, method)
    np.testing.assert_array_equal(result.box, TRUTH)
    assert result.windows == (120 - TH + 1) * (160 - TW + 1)


def test_bbs_finds_the_template(synthetic_pair):
    template, scene = synthetic_pair
    result = match_bbs_colour(template, scene)  # the benchmark's setting: <= 144 patches, stride 3
    assert np.abs(result.box - TRUTH).max() <= 1.5  # within the stride
    assert match_bbs_colour(template, scene, max_patches=TW * TH, stride=1).box.tolist() == TRUTH.tolist()
    np.testing.assert_allclose(result.box[2:] - result.box[:2], [TW, TH])  # template-sized


def test_ddis_finds_the_template_exactly(synthetic_pair):
    template, scene = synthetic_pair
    result = match_ddis(template, scene, max_points=TW * TH, localize="argmax")  # full resolution
    np.testing.assert_allclose(result.box, TRUTH)
    # the authors' localisation (smoothed map, centre of mass) lands within a pixel
    assert np.abs(match_ddis(template, scene, max_points=TW * TH).box - TRUTH).max() <= 1
    assert result.windows == (120 - TH + 1) * (160 - TW + 1)


def test_ddis_at_a_working_resolution_maps_the_box_back(synthetic_pair):
    template, scene = synthetic_pair
    result = match_ddis(template, scene, max_points=320)  # template shrunk by ~0.5
    assert box_iou(result.box, TRUTH) > 0.8
    np.testing.assert_allclose(result.box[2:] - result.box[:2], [TW, TH])


def test_ddis_diversity_prefers_one_to_one_matches():
    # a window made of a single repeated colour maps every point to one template point:
    # kappa = |S|, so its score exp(1 - |S|) / (1 + r) is far below a true match's
    rng = np.random.default_rng(0)
    template = textured_scene(rng, 12, 12)
    scene = np.full((24, 48, 3), template[0, 0], np.uint8)
    scene[6:18, 30:42] = template
    result = match_ddis(template, scene, localize="argmax")
    np.testing.assert_allclose(result.box, [30, 6, 42, 18])


def test_ddis_authors_peak_smooths_then_takes_the_centre_of_mass():
    score_map = np.zeros((9, 12))
    score_map[4, 2] = 3.0  # an isolated spike: the highest score, but little mass
    score_map[3:6, 7:10] = 1.0  # a broad plateau centred at (4, 8): more mass in a 2x2 box
    assert ddis_authors_peak(score_map, (6, 6)) == (4, 8)


@pytest.mark.parametrize("method", ["match_zncc", "match_qatm"])
def test_deep_baselines_find_the_template(synthetic_pair, deep, method):
    template, scene = synthetic_pair
    result = getattr(deep, method)(template, scene)
    # windows move by a 4-px cell and the template's features are computed on it alone (no
    # context): within about one cell of the truth
    assert np.abs(result.box - TRUTH).max() <= 6
    assert box_iou(result.box, TRUTH) > 0.6
    np.testing.assert_allclose(result.box[2:] - result.box[:2], [TW, TH])
    assert result.windows == (30 - 8 + 1) * (40 - 10 + 1)  # stride-4 cells: 30 x 40 image, 8 x 10 template


def test_feature_shapes_and_the_backbone_blocks(deep):
    features = deep(np.zeros((50, 70, 3), np.uint8))
    assert features.shape == (40 + 112, 12, 18)  # round(50 / 4), round(70 / 4)
    blocks = EfficientNetLite0Blocks((2, 4, 10), pretrained=False)
    maps = blocks(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6)]
    assert blocks.strides == (4, 8, 16) and blocks.channels == (24, 40, 112)
    with pytest.raises(ValueError, match="blocks"):
        EfficientNetLite0Blocks((16,), pretrained=False)


def test_methods_by_name(synthetic_pair):
    template, scene = synthetic_pair
    methods = build_template_methods({"zncc": {}, "ddis": {"max_points": 320}})
    assert set(methods) == {"zncc", "ddis"}
    assert box_iou(methods["zncc"](template, scene).box, TRUTH) == 1.0
    with pytest.raises(ValueError, match="unknown template-matching methods"):
        build_template_methods({"sift": {}})


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="colour image"):
        match_opencv(np.zeros((4, 4), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="larger than the search image"):
        match_opencv(np.zeros((9, 4, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown method"):
        match_opencv(np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), "sad")


def test_zncc_refine_moves_a_nearby_centre_onto_the_template(synthetic_pair):
    template, scene = synthetic_pair
    truth_x, truth_y = COL + TW / 2, ROW + TH / 2
    # full resolution (template long side 40 <= 64): reach ceil(0.25 * 32) = 8 rows, ceil(0.25 * 40) = 10 columns
    x, y, windows = zncc_refine(template, scene, (truth_x - 7, truth_y + 6), radius=0.25, template_px=64)
    assert (x, y) == (truth_x, truth_y)
    assert windows == zncc_refine_windows((TH, TW), 0.25, 64) == 17 * 21
    # at a working resolution (template long side 20 px: half size) within one working pixel
    x, y, windows = zncc_refine(template, scene, (truth_x + 5, truth_y - 4), radius=0.3, template_px=20)
    assert abs(x - truth_x) <= 2 and abs(y - truth_y) <= 2
    assert windows <= zncc_refine_windows((TH, TW), 0.3, 20) == (2 * 5 + 1) * (2 * 6 + 1)
    # the windows never exceed the bound the window budget reserves, wherever the centre falls
    for centre_x, centre_y in [(80.3, 60.7), (81.5, 59.5), (79.9, 61.2)]:
        for radius, template_px in [(0.25, 64), (0.3, 24), (0.1, 17)]:
            assert 0 < zncc_refine(template, scene, (centre_x, centre_y), radius, template_px)[2] <= zncc_refine_windows((TH, TW), radius, template_px)
    # out of reach: a centre 3 template widths away stays near its own neighbourhood
    x, _, _ = zncc_refine(template, scene, (truth_x + 3 * TW, truth_y), radius=0.25, template_px=64)
    assert abs(x - (truth_x + 3 * TW)) <= 10


def test_zncc_refine_at_the_border_and_bad_arguments(synthetic_pair):
    template, scene = synthetic_pair
    # a neighbourhood cut by the border still holds the template: the answer stays inside the image
    x, y, windows = zncc_refine(template, scene, (TW / 2, TH / 2), radius=0.25, template_px=64)
    assert TW / 2 <= x <= 160 - TW / 2 and TH / 2 <= y <= 120 - TH / 2 and 0 < windows < 17 * 21
    # a centre whose neighbourhood cannot hold the template: unchanged, no window scored
    assert zncc_refine(template, scene[:20], (80.0, 10.0), radius=0.25) == (80.0, 10.0, 0)
    with pytest.raises(ValueError, match="radius"):
        zncc_refine(template, scene, (80.0, 60.0), radius=-1)
