"""The search path's second, finer look (coarse to fine) and the BBS-shaped validation pairs."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest
import torch

from regionsearch.data import real_pairs
from regionsearch.nets.blocks import PretrainedEncoder
from regionsearch.nets.second_look import local_maxima, second_look_candidates
from tests.regionsearch.test_real_search_path import real_matcher, write_sequence_fixture


def test_local_maxima_best_first_and_only_peaks():
    grid = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 5.0],
            [3.0, 0.0, 0.0, 4.0],  # 4.0 sits beside 5.0: not a peak
        ]
    )
    assert local_maxima(grid.flatten(), 3, 4, 2).tolist() == [7, 8]
    assert local_maxima(grid.flatten(), 3, 4, 10).tolist() == [7, 8, 1]
    # cells outside the reference come in as -inf and are never candidates
    masked = grid.flatten().clone()
    masked[[1, 7, 8]] = float("-inf")
    assert local_maxima(masked, 3, 4, 10).tolist()[0] == 11 and 7 not in local_maxima(masked, 3, 4, 10).tolist()


def _photo(seed: int, height: int, width: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.random((height // 8, width // 8, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.clip(noise, 0, 1)).permute(2, 0, 1)[None]


def test_second_look_finds_the_template_near_a_coarse_guess():
    torch.manual_seed(0)
    encoder = PretrainedEncoder(glimpse_size=32, block=2, out_dim=32, freeze=True, pretrained=False).eval()
    projection = torch.nn.Identity()
    reference = _photo(1, 160, 224)
    x1, y1, w, h = 96, 64, 48, 40
    query = reference[..., y1 : y1 + h, x1 : x1 + w]
    truth = torch.tensor([x1 + w / 2, y1 + h / 2])
    # a guess 10 px off, and a far decoy: the second look lands on the template
    guesses = torch.stack([truth + torch.tensor([10.0, -6.0]), torch.tensor([30.0, 30.0])])
    with torch.no_grad():
        found, scores, placements = second_look_candidates(encoder, projection, reference, query, (160, 224), 1.0, guesses, radius=3)
    # per candidate: its best placement and mean cosine; the guess near the template beats the decoy
    assert found.shape == (2, 2) and scores.shape == (2,) and int(scores.argmax()) == 0
    assert bool((scores.abs() <= 1 + 1e-5).all())
    assert torch.allclose(found[0], truth, atol=encoder.map_stride / 2)
    # radius 3: 7 (or 8, the crop rounding up) placements a side per candidate
    assert 2 * 49 <= placements <= 2 * 64
    # scale 0.5 (a coarser look) still answers in reference pixels
    with torch.no_grad():
        coarse = second_look_candidates(encoder, projection, reference, query, (160, 224), 0.5, guesses[:1], radius=2)[0][0]
    assert torch.allclose(coarse, truth, atol=encoder.map_stride)


def test_matcher_second_look_counts_its_placements():
    torch.manual_seed(0)
    plain = real_matcher().eval()
    looked = real_matcher(second_look_view=128, second_look_candidates=2, second_look_radius=1).eval()
    looked.load_state_dict(plain.state_dict())
    query, reference = torch.rand(1, 3, 21, 13), torch.rand(1, 3, 70, 110)
    with torch.no_grad():
        one, two = plain(query, reference), looked(query, reference)
    extra = two.windows_evaluated - one.windows_evaluated
    # radius 1: 2r + 1 placements a side, one more where the crop's size rounds up
    assert 2 * 9 <= extra.item() <= 2 * 16
    window = two.windows[1, 0]
    torch.testing.assert_close(window[2:] - window[:2], torch.tensor([13.0, 21.0]))  # still the query's size
    with pytest.raises(ValueError, match="second_look_view"):
        real_matcher(first_view="glimpse", second_look_view=128)


def test_validation_pairs_in_the_protocols_form(tmp_path):
    write_sequence_fixture(tmp_path, np.random.default_rng(0))
    pairs = real_pairs.validation_pairs(
        tmp_path, tmp_path / "cache", n_pairs=6, reference_size=96, query_size=48, sources=("sequences", "photos"), target_fraction=(0.2, 0.3)
    )
    assert len(pairs) == 6
    for pair in pairs:
        template, image = pair.template(), pair.image_b
        assert template.shape[:2] == pair.image_a.shape[:2] and max(image.shape[:2]) == 96
        x1, y1, x2, y2 = pair.box_b
        assert 0 <= x1 < x2 <= image.shape[1] + 1e-3 and 0 <= y1 < y2 <= image.shape[0] + 1e-3
        # the crop is cut to the photo, which only makes the target larger than drawn
        assert max(x2 - x1, y2 - y1) / max(image.shape[:2]) >= 0.2 - 0.02
    with pytest.raises(ValueError, match="target_fraction"):
        real_pairs.build_real_pairs(tmp_path, "val", 2, target_fraction=(0.5, 0.2))


def test_box_fraction_bounds_the_targets_from_below(tmp_path):
    # 200x240 photos shifted by a translation: the target is the query box, and with target
    # fractions this small every crop is cut to the whole 240 px photo
    write_sequence_fixture(tmp_path, np.random.default_rng(0))
    build = partial(real_pairs.build_real_pairs, tmp_path, "val", 24, reference_size=96, query_size=48, sources=("sequences",), target_fraction=(0.02, 0.03))

    def target_fractions(pairs):
        boxes = pairs["boxes"]
        return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / pairs["reference_sizes"].max(1)

    small = target_fractions(build(box_fraction=(0.05, 0.1)))
    assert small.max() <= 0.1 * 200 / 240 + 0.01  # box sides <= 0.1 of the 200 px short side
    assert np.median(target_fractions(build())) > 0.1  # the default boxes, 0.06-0.3 of it
    with pytest.raises(ValueError, match="box_fraction"):
        real_pairs.build_real_pairs(tmp_path, "val", 2, box_fraction=(0.0, 0.2))


def test_datamodule_passes_the_target_sizes_to_the_builder(tmp_path):
    from regionsearch.data.datamodule import RealPairDataModule

    write_sequence_fixture(tmp_path, np.random.default_rng(0))
    # unset: the builder's defaults and its cache keys (caches built before these options stay valid)
    assert "box_fraction" not in RealPairDataModule(tmp_path).builder
    module = RealPairDataModule(tmp_path, reference_size=96, query_size=48, sources=["sequences"], n_train=8, n_val=8, cache_dir=tmp_path / "cache", target_fraction=[0.02, 0.03], box_fraction=[0.05, 0.1])
    module.setup()
    expected = real_pairs.build_real_pairs(tmp_path, "val", 8, reference_size=96, query_size=48, sources=("sequences",), target_fraction=(0.02, 0.03), box_fraction=(0.05, 0.1))
    np.testing.assert_array_equal(module.splits["val"].boxes.numpy(), expected["boxes"])


def test_first_look_sized_per_pair_within_the_window_budget():
    from regionsearch.search_path_method import SearchPathMethod

    net = real_matcher()  # block 2: stride 4, three steps
    assert net.encoder.map_stride == 4 and net.steps == 3
    method = SearchPathMethod(net, windows_share=0.01)
    # 100 x 200 image, 20 x 20 template: 81 * 181 = 14661 placements, a budget of 146.6 windows;
    # a 64 px view has 8 x 16 = 128 cells (+ 3 glimpses = 131), a 72 px one 9 x 18 = 162
    assert method.budget_view((20, 20), (100, 200)) == 64
    # the template's long side at 4 px needs only a 40 px view (20 px in 200 -> 4 px in 40)
    assert SearchPathMethod(net, windows_share=0.01, template_px=4).budget_view((20, 20), (100, 200)) == 40
    assert SearchPathMethod(net, windows_share=0.01, max_view=48).budget_view((20, 20), (100, 200)) == 48
    image, template = np.zeros((100, 200, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)
    result = method(template, image)
    assert net.first_glimpse_size == 64 and result.windows <= 0.01 * 81 * 181
    # a second look's placements come out of the same budget: a smaller first look
    looked = SearchPathMethod(real_matcher(second_look_view=128, second_look_candidates=1, second_look_radius=1), windows_share=0.01)
    assert looked.budget_view((20, 20), (100, 200)) == 56  # 7 x 14 = 98 cells + 3 + 16 <= 146.6
    with pytest.raises(ValueError, match="windows_share"):
        SearchPathMethod(net, windows_share=2.0)


def test_refine_counts_its_windows_within_the_budget_and_moves_the_box():
    from regionsearch.search_path_method import SearchPathMethod, zncc_refine

    refine = {"radius": 0.2, "template_px": 20}
    method = SearchPathMethod(real_matcher(), windows_share=0.01, refine=refine)
    # 20 x 20 template at full resolution: reach 4 -> 81 windows; 40 px view: 5 x 10 = 50 cells + 3 + 81 <= 146.6
    assert method.budget_view((20, 20), (100, 200)) == 40
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    template = image[30:50, 120:140].copy()
    assert method(template, image).windows <= 0.01 * 81 * 181  # first look, glimpses and refinement together
    assert method.budget((20, 20), (100, 200)) == (40, True)
    # a refinement the budget cannot hold at any view (41 x 41 windows > 146.6): the pair goes without
    # it, with the view it would have had alone
    wide = SearchPathMethod(real_matcher(), windows_share=0.01, refine={"radius": 1.0, "template_px": 20})
    assert wide.budget((20, 20), (100, 200)) == (64, False)
    assert wide(template, image).windows == SearchPathMethod(wide.net, windows_share=0.01)(template, image).windows
    net = real_matcher()
    plain, refined = SearchPathMethod(net, box="template"), SearchPathMethod(net, box="template", refine=refine)
    before, after = plain(template, image), refined(template, image)
    centre = ((before.box[0] + before.box[2]) / 2, (before.box[1] + before.box[3]) / 2)
    x, y, scored = zncc_refine(template, image, centre, **refine)
    np.testing.assert_allclose(after.box, [x - 10, y - 10, x + 10, y + 10])
    assert after.windows == before.windows + scored and scored > 0
    with pytest.raises(ValueError, match="refine takes"):
        SearchPathMethod(real_matcher(), refine={"radius": 0.2})


def test_rerank_moves_the_window_to_the_candidate_zncc_confirms():
    from regionsearch.search_path_method import SearchPathMethod, local_zncc, zncc_refine_windows

    rerank = {"weight": 1.0, "radius": 0.25, "template_px": 20}
    net = real_matcher(second_look_view=128, second_look_candidates=2, second_look_radius=1)
    image = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    template = image[30:50, 120:140].copy()  # centre (130, 40)
    method = SearchPathMethod(net, box="template", rerank=rerank)
    window = np.array([20.0, 60.0, 40.0, 80.0])  # the net's answer around its pick (30, 70)
    # the net prefers a far decoy (0.9) to a candidate 3 px off the template (0.5): ZNCC there is ~1
    candidates = np.array([[30.0, 70.0, 0.9], [133.0, 38.0, 0.5]])
    moved, scored = method._reranked(window, candidates, template, image)
    np.testing.assert_allclose(moved, [120, 30, 140, 50], atol=1)
    # every candidate's alignment counts: 2 x (2 * 5 + 1)^2 windows at most
    assert 0 < scored <= 2 * zncc_refine_windows((20, 20), 0.25, 20) == 2 * 121
    decoy_x, decoy_y, _, _ = local_zncc(template, image, (30.0, 70.0), 0.25, 20)
    # weight 0: the net's own ranking, only aligned locally
    unweighted = SearchPathMethod(net, box="template", rerank={**rerank, "weight": 0.0})
    np.testing.assert_allclose(unweighted._reranked(window, candidates, template, image)[0], window + [decoy_x - 30, decoy_y - 70] * 2)
    # NaN rows (fewer local maxima than candidates) are skipped; none at all leaves the window
    np.testing.assert_allclose(method._reranked(window, np.vstack([candidates, np.full(3, np.nan)]), template, image)[0], moved)
    assert method._reranked(window, np.full((2, 3), np.nan), template, image) == (window, 0)
    # a flat template has no ZNCC: nothing is scored, every candidate scores -1 where it is, so the
    # net's own pick wins, unmoved
    assert local_zncc(np.full_like(template, 128), image, (30.0, 70.0), 0.25, 20) == (30.0, 70.0, 0, None)
    flat, counted = method._reranked(window, candidates, np.full_like(template, 128), image)
    np.testing.assert_allclose(flat, window)
    assert counted == 0
    # end to end: the net's candidates come out of its second look and their windows are counted
    result = method(template, image)
    plain = SearchPathMethod(net, box="template")(template, image)
    assert result.windows > plain.windows
    with pytest.raises(ValueError, match="rerank takes"):
        SearchPathMethod(net, rerank={"weight": 1.0})
    with pytest.raises(ValueError, match="second look"):
        SearchPathMethod(real_matcher(), rerank=rerank)


def test_rerank_windows_are_reserved_in_the_budget():
    from regionsearch.search_path_method import SearchPathMethod

    rerank = {"weight": 1.0, "radius": 0.1, "template_px": 20}
    net = real_matcher(second_look_view=128, second_look_candidates=1, second_look_radius=1)
    method = SearchPathMethod(net, windows_share=0.01, rerank=rerank)
    # one candidate aligned within 0.1 x 20 px: reach 2 -> 25 windows; with 3 glimpses and 16 second-look
    # placements a 56 px view (7 x 14 = 98 cells, 142 in all) is the largest within 146.6 (64 px: 172)
    assert method.local_windows((20, 20)) == 25 and method.budget((20, 20), (100, 200)) == (56, True)
    image = np.random.default_rng(1).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    assert method(image[30:50, 120:140].copy(), image).windows <= 0.01 * 81 * 181
    # with a refinement too (81 windows) both are reserved: 106 + 19 leaves no room even for a 32 px view
    # (4 x 8 = 32 cells), so the pair goes without both, with the view it has alone (56 px: 98 + 19)
    both = SearchPathMethod(net, windows_share=0.01, rerank=rerank, refine={"radius": 0.2, "template_px": 20})
    assert both.local_windows((20, 20)) == 25 + 81 and both.budget((20, 20), (100, 200)) == (56, False)
    assert both(image[30:50, 120:140].copy(), image).windows <= 0.01 * 81 * 181
