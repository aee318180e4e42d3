"""Logo baselines that keep the query's true aspect, and the "scale given" row.

The logo pairs squash each query crop to a square; a template that keeps the logo's shape is
the square query stretched back to its true aspect (in reference pixels), searched over scales
relative to the reference, or resized to the true box (the scale given, only position searched).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.suites.regionsearch import run_baseline, template_sizes
from regionsearch.baselines import (
    aspect_template_sizes,
    match_bbs,
    match_mtm,
    match_ncc,
    resize_template,
    resize_template_to,
)
from regionsearch.data.logos import query_aspects_in_reference
from regionsearch.evaluate import box_iou

# the benchmark's logo scale sets (conf/benchmark/regionsearch.yaml)
OLD_SQUARE_SCALES = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
REFERENCE_SCALES = (0.118, 0.166, 0.235, 0.333, 0.471, 0.666, 0.942)


def _logo_pair(seed=0, box=(50, 90, 110, 110)):
    """A wide (3:1) smooth logo pasted into a 160x160 noise scene at ``box``; the query is the
    same logo squashed to 64x64, as the logo pairs store it. Returns query, reference, box."""
    rng = np.random.default_rng(seed)
    logo = cv2.GaussianBlur(rng.random((100, 300)).astype(np.float32), (0, 0), 4)
    logo = (logo - logo.min()) / (logo.max() - logo.min())
    reference = rng.random((160, 160)).astype(np.float32)
    x1, y1, x2, y2 = box
    reference[y1:y2, x1:x2] = cv2.resize(logo, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
    query = cv2.resize(logo, (64, 64), interpolation=cv2.INTER_AREA)
    return query, reference, np.array(box, dtype=np.float64)


def _iou(result, box) -> float:
    return float(box_iou(result.box, box))


# ------------------------------------------------------------------ the known answer


def test_aspect_keeping_multiscale_ncc_finds_a_wide_logo_the_square_templates_miss():
    query, reference, box = _logo_pair()
    sizes = aspect_template_sizes(reference.shape, 3.0, REFERENCE_SCALES)
    assert all(abs(w / h - 3.0) < 0.15 for w, h in sizes)
    aspect = match_ncc(query, reference, sizes=sizes)
    square = match_ncc(query, reference, scales=OLD_SQUARE_SCALES)
    assert _iou(aspect, box) > 0.7
    assert _iou(square, box) < 0.5 < _iou(aspect, box)
    assert aspect.windows == sum((161 - w) * (161 - h) for w, h in sizes)
    # the size prior keeps the answer here, and 0 is the plain maximum
    assert _iou(match_ncc(query, reference, sizes=sizes, area_exponent=0.2), box) > 0.7
    plain = match_ncc(query, reference, sizes=sizes, area_exponent=0.0)
    np.testing.assert_array_equal(plain.box, aspect.box)


@pytest.mark.parametrize("matcher", [match_ncc, match_mtm, match_bbs])
def test_scale_given_finds_the_logo_at_the_given_size(matcher):
    query, reference, box = _logo_pair(seed=1)
    result = matcher(query, reference, sizes=[(60, 20)])
    np.testing.assert_array_equal(result.box, box)
    assert result.box[2] - result.box[0] == 60 and result.box[3] - result.box[1] == 20
    if matcher is not match_bbs:  # BBS at stride 1 too, but its windows are its own grid
        assert result.windows == (160 - 60 + 1) * (160 - 20 + 1)


def test_mtm_keeps_the_aspect_too():
    query, reference, box = _logo_pair(seed=2)
    sizes = aspect_template_sizes(reference.shape, 3.0, REFERENCE_SCALES)
    assert _iou(match_mtm(query, reference, sizes=sizes), box) > 0.7


# ------------------------------------------------------------------ sizes and their checks


def test_aspect_template_sizes_follow_area_and_aspect_and_drop_what_does_not_fit():
    sizes = aspect_template_sizes((160, 160), 2.0, (0.25, 0.5, 0.9))
    w, h = sizes[0]
    assert (w, h) == (round(0.25 * 160 * np.sqrt(2)), round(0.25 * 160 / np.sqrt(2)))
    assert len(sizes) == 2  # 0.9 * 160 * sqrt(2) = 204 px is wider than the reference
    assert aspect_template_sizes((100, 400), 1.0, (0.5,)) == [(100, 100)]  # relative to sqrt(H * W)
    assert aspect_template_sizes((160, 160), 1.0, (0.001,)) == [(3, 3)]  # at least 3 px


@pytest.mark.parametrize("aspect", [0.0, -1.0, float("nan"), float("inf")])
def test_aspect_template_sizes_rejects_bad_aspects(aspect):
    with pytest.raises(ValueError, match="aspect"):
        aspect_template_sizes((160, 160), aspect, (0.5,))


def test_bad_sizes_and_scales_are_refused():
    query, reference, _ = _logo_pair()
    with pytest.raises(ValueError, match="scale"):
        aspect_template_sizes((160, 160), 1.0, (0.0,))
    for sizes in ([], [(0, 5)], [(5,)]):
        with pytest.raises(ValueError, match="sizes"):
            match_ncc(query, reference, sizes=sizes)
    with pytest.raises(ValueError, match=r"resized to \[\(200, 20\)\].*larger than the reference"):
        match_ncc(query, reference, sizes=[(200, 20)])
    with pytest.raises(ValueError, match="area_exponent"):
        match_ncc(query, reference, sizes=[(60, 20)], area_exponent=float("nan"))
    with pytest.raises(ValueError, match="at least 1x1"):
        resize_template_to(query, 0, 4)


def test_resize_template_is_unchanged_by_the_exact_size_path():
    rng = np.random.default_rng(5)
    query = rng.random((40, 30, 3)).astype(np.float32)
    for scale in (0.3, 1.0, 1.7):
        h, w = resize_template(query, scale).shape[:2]
        np.testing.assert_array_equal(resize_template(query, scale), resize_template_to(query, w, h))
    assert resize_template_to(query, 30, 40) is not query


# ------------------------------------------------------------------ the query's true aspect


def test_query_aspect_in_squashed_reference_pixels(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "query.png")
    Image.new("RGB", (200, 100)).save(tmp_path / "wide.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "square.png")
    boxes = np.array([[0, 0, 30, 10], [10, 10, 30, 50]], dtype=np.float32)
    aspects = query_aspects_in_reference(boxes, [str(tmp_path / "wide.png"), str(tmp_path / "square.png")], (160, 160))
    # 3:1 in a 200x100 scene squashed to 160x160: x shrinks 0.8, y grows 1.6 -> 1.5; then 1:2 unchanged
    np.testing.assert_allclose(aspects, [1.5, 0.5])
    with pytest.raises(ValueError, match="reference images"):
        query_aspects_in_reference(boxes, [str(tmp_path / "wide.png")], (160, 160))
    with pytest.raises(ValueError, match="positive"):
        query_aspects_in_reference(np.array([[5, 5, 5, 9]]), [str(tmp_path / "wide.png")], (160, 160))


def _pairs(query, reference, box, sources=None):
    return SimpleNamespace(
        queries=torch.from_numpy((query * 255).astype(np.uint8))[None, None],
        references=torch.from_numpy((reference * 255).astype(np.uint8))[None, None],
        boxes=torch.tensor(box[None], dtype=torch.float32),
        sources=sources or {},
    )


def test_suite_rows_pass_each_pair_its_template_sizes(tmp_path):
    query, reference, box = _logo_pair(seed=3)
    Image.new("RGB", (300, 100)).save(tmp_path / "q.png")
    Image.new("RGB", (160, 160)).save(tmp_path / "r.png")
    sources = {"query_boxes": np.array([[0, 0, 300, 100]], dtype=np.float32), "reference_images": np.array([str(tmp_path / "r.png")])}
    pairs = _pairs(query, reference, box, sources)
    assert template_sizes(pairs, "query") is None
    assert template_sizes(pairs, "box_size")(0) == {"sizes": [(60, 20)]}
    assert template_sizes(pairs, "query_aspect", (0.2165,))(0) == {"sizes": [(60, 20)]}
    given = run_baseline("ncc_scale_given", {"matcher": "ncc", "template": "box_size"}, pairs, 1, None, None)
    aspect = run_baseline("ncc_aspect", {"matcher": "ncc", "template": "query_aspect", "scales": REFERENCE_SCALES}, pairs, 1, None, None)
    square = run_baseline("ncc", {"scales": OLD_SQUARE_SCALES}, pairs, 1, None, None)
    assert given["ious"][0] > 0.9 and aspect["ious"][0] > 0.7 and square["ious"][0] < 0.5
    assert given["windows_per_query"] == 101 * 141
    with pytest.raises(ValueError, match="template must be one of"):
        template_sizes(pairs, "free")
    with pytest.raises(ValueError, match="logo pairs"):
        template_sizes(_pairs(query, reference, box), "query_aspect", (0.2,))
    json.dumps(float(aspect["ms_per_query"]))  # a plain number for the JSON rows


def test_baselines_only_run_keeps_the_published_search_path_row(tmp_path, cache_dir):
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from benchmarks.suites.regionsearch import run_suite

    publish = tmp_path / "published"
    publish.mkdir()
    keys = ("success_rate", "mean_iou", "auc", "ms_per_query", "windows_per_query", "n_pairs")
    kept = [{**dict.fromkeys(keys, 1.0), "dataset": "translated", "method": method, "device": "x"} for method in ("search_path", "prior_box", "ncc")]
    kept[1]["ms_per_query"] = 0.0  # the prior box costs nothing: no speed-up
    (publish / "regionsearch.json").write_text(json.dumps(kept))
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_suite(
            output_dir=str(tmp_path / "run"),
            datasets=["translated"],
            n_test=8,
            baselines={"translated": {"ncc": {}, "ncc_scale_given": {"matcher": "ncc", "template": "box_size"}, "exhaustive_cnn": {}}},
            base_overrides=["data.n_train=16", "data.n_val=8", "data.digits=embedded", f"paths.cache_dir={cache_dir}"],
            publish_dir=str(publish),
            num_threads=1,
            baselines_only=True,
        )
    GlobalHydra.instance().clear()
    assert [r["method"] for r in rows] == ["ncc", "ncc_scale_given"]  # no checkpoint: no search path, no CNN
    assert rows[1]["success_rate"] == 1.0 and all(r["threads"] == 1 for r in rows)
    published = {r["method"]: r for r in json.loads((publish / "regionsearch.json").read_text())}
    assert published["search_path"] == kept[0] and published["prior_box"] == kept[1]
    assert published["ncc"]["n_pairs"] == 8  # re-run, replaced
    assert published["ncc"]["speedup_of_search_path"] == round(published["ncc"]["ms_per_query"], 2)
    assert "re-run on their own" in (publish / "regionsearch.md").read_text()
    with pytest.raises(ValueError, match="only test-split runs"):
        run_suite(output_dir=str(tmp_path / "val"), datasets=["translated"], publish_dir=str(publish), eval_split="val")
