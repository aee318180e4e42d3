"""The BBS105 real-photo suite end to end on a tiny fixture in the authors' release layout."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.suites.regionsearch_real import (
    markdown_table,
    run_suite,
    search_path_matchers,
    search_path_panels,
)
from regionsearch.evaluate import real_pair_ious
from tests.regionsearch.bbs_fixture import write_bbs_fixture

ROW_KEYS = {"dataset", "method", "auc", "success_rate", "mean_iou", "ms_per_query", "ms_per_query_batched", "windows_per_query", "n_pairs", "device"}
METHODS = {
    "ssd": {},
    "ncc": {},
    "zncc": {},
    "bbs": {"max_patches": 64, "stride": 3},
    "ddis": {"max_points": 256},
    "deep_zncc": {},
    "deep_qatm": {},
}


def test_suite_writes_rows_tables_and_plots(tmp_path):
    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=3)
    publish = tmp_path / "published"
    rows = run_suite(
        output_dir=str(tmp_path / "run"),
        data_dir=str(tmp_path / "data"),
        methods=METHODS,
        size_methods=("ncc", "bbs", "ddis"),
        sizes=(60, 96),
        size_pairs=1,
        publish_dir=str(publish),
    )
    assert [r["method"] for r in rows] == list(METHODS)
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["dataset"] == "bbs105" and row["n_pairs"] == 3
        assert 0 <= row["auc"] <= 1 and row["windows_per_query"] > 0 and row["ms_per_query"] > 0
    # image B is image A shifted: the exact pixel methods find every template
    by_method = {r["method"]: r for r in rows}
    assert by_method["zncc"]["success_rate"] == 1.0 and by_method["ssd"]["mean_iou"] > 0.9
    for name in ("regionsearch_real.json", "regionsearch_real.md", "regionsearch_real_success.png", "regionsearch_real_time_vs_auc.png", "regionsearch_real_time_vs_size.png"):
        assert (publish / name).is_file(), name
    assert json.loads((publish / "regionsearch_real.json").read_text()) == rows
    sizes = json.loads((publish / "regionsearch_real_sizes.json").read_text())
    assert {(r["method"], r["long_side"]) for r in sizes} == {(m, s) for m in ("ncc", "bbs", "ddis") for s in (60, 96)}
    table = (publish / "regionsearch_real.md").read_text()
    assert "0.64 (DDIS, colour)" in table and "DIM, colour (published only)" in table


def test_markdown_flags_rows_far_from_their_published_auc():
    row = {"method": "ncc", "auc": 0.40, "success_rate": 0.5, "mean_iou": 0.4, "ms_per_query": 1.0, "windows_per_query": 10, "n_pairs": 105, "device": "cpu"}
    close = {**row, "method": "ssd", "auc": 0.47}
    table = markdown_table([row, close], [], quick=False, versions={})
    assert "| ncc | 0.400 | 0.48 (NCC, colour) | -0.080 **>0.03** |" in table
    assert "| ssd | 0.470 | 0.46 (SSD, colour) | +0.010 |" in table
    assert "More than 0.03 AUC from the published number: ncc." in table
    assert "- ncc: OpenCV's TM_CCORR_NORMED" in table


def test_markdown_names_a_subset_and_quick_runs():
    row = {"method": "ssd", "auc": 0.47, "success_rate": 0.5, "mean_iou": 0.4, "ms_per_query": 1.0, "windows_per_query": 10, "n_pairs": 35, "device": "cpu"}
    assert "35 pairs, a subset: pairs 1, 4, 7, ..., 103 (every 3 pairs)" in markdown_table([row], [], False, {}, "pairs 1, 4, 7, ..., 103 (every 3 pairs)")
    assert "QUICK: downscaled subset, not comparable" in markdown_table([row], [], True, {})


def _search_path_checkpoint(tmp_path):
    """A small untrained photo search path (first look at 64 px) saved as a checkpoint."""
    import torch

    from regionsearch.module import net_config
    from regionsearch.nets.search_path import SearchPathMatcher

    net = SearchPathMatcher(
        in_channels=3, glimpse_size=32, steps=2, channels=[32] * 5, hidden_size=32, encoder="efficientnet_lite0", freeze_encoder=True,
        first_move="map", first_view="reference", size_mode="anisotropic", first_glimpse_size=64, relative_moves=True,
    )  # fmt: skip
    checkpoint = tmp_path / "search_path.ckpt"
    torch.save({"net_config": net_config(net), "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, checkpoint)
    return checkpoint


def test_search_path_rows_merge_beside_the_published_baselines(tmp_path):
    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=3)
    publish = tmp_path / "published"
    baseline = run_suite(output_dir=str(tmp_path / "run0"), data_dir=str(tmp_path / "data"), methods={"ncc": {}}, size_methods=(), publish_dir=str(publish))
    checkpoint = _search_path_checkpoint(tmp_path)
    rows = run_suite(
        output_dir=str(tmp_path / "run1"), data_dir=str(tmp_path / "data"), methods={}, search_path_checkpoint=str(checkpoint),
        size_methods=(), sizes=(60, 96), size_pairs=1, publish_dir=str(publish),
    )  # fmt: skip
    assert [r["method"] for r in rows] == ["search_path", "search_path_template_box"]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["ms_per_query_batched"] > 0 and 0 < row["windows_share_of_exhaustive"]
    published = json.loads((publish / "regionsearch_real.json").read_text())
    assert [r["method"] for r in published] == ["ncc", "search_path", "search_path_template_box"] and published[0] == baseline[0]
    table = (publish / "regionsearch_real.md").read_text()
    assert "| ncc |" in table and "| search_path |" in table and "## The search path" in table
    sizes = json.loads((publish / "regionsearch_real_sizes.json").read_text())
    assert {r["method"] for r in sizes} == {"search_path"}
    # the grid of search paths on the pairs, in the run and published beside the tables
    assert (tmp_path / "run1" / "regionsearch_real_search_paths.jpg").is_file() and (publish / "regionsearch_real_search_paths.jpg").is_file()
    assert not (tmp_path / "run0" / "regionsearch_real_search_paths.jpg").exists()  # no search path, no grid


def test_search_path_panels_trace_the_answer_on_evenly_spread_pairs(tmp_path):
    from regionsearch.api import RegionSearcher
    from regionsearch.data.bbs import load_bbs_pairs
    from regionsearch.plots import plot_real_search_paths

    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=5)
    pairs = load_bbs_pairs(tmp_path / "data" / "template_matching" / "bbs")
    look = {"view": 48, "second_view": 96, "candidates": 2, "radius": 1, "rerank": {"weight": 0.5, "radius": 0.1, "template_px": 16}}
    method = search_path_matchers(RegionSearcher.from_checkpoint(_search_path_checkpoint(tmp_path)).net, [look], "cpu")["search_path"]
    panels = search_path_panels(method, pairs, count=3)
    assert [p["label"].split(" (")[0] for p in panels] == [f"pair {pairs[i].number}" for i in (0, 2, 4)]  # first, middle, last
    for panel, pair in zip(panels, (pairs[0], pairs[2], pairs[4])):
        result = method(pair.template(), pair.image_b)  # the traced answer is the method's answer
        np.testing.assert_allclose(panel["answer"], result.box)
        assert panel["windows"].shape == (method.net.steps + 1, 4) and panel["candidates"].shape == (2, 3)
        np.testing.assert_allclose(panel["windows"][0], [0, 0, pair.image_b.shape[1], pair.image_b.shape[0]])  # window 0: all of B
        assert panel["label"].endswith(f"IoU {float(real_pair_ious(result.box[None], pair.box_b[None])[0]):.2f}")
    assert len(search_path_panels(method, pairs, count=8)) == 5 and search_path_panels(method, [], count=8) == []
    panels[0]["candidates"] = None  # a net without a second look
    panels[1]["candidates"][1] = np.nan  # an unused candidate row
    plot_real_search_paths(panels, tmp_path / "paths.png", "paths")
    assert (tmp_path / "paths.png").stat().st_size > 0


def test_search_path_at_several_first_look_views(tmp_path):
    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=2)
    checkpoint = _search_path_checkpoint(tmp_path)
    rows = run_suite(
        output_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"), methods={"ncc": {}}, search_path_checkpoint=str(checkpoint),
        search_path_view=[96, 48], size_methods=(), sizes=(60,), size_pairs=1,
    )  # fmt: skip
    names = ["ncc", "search_path", "search_path_template_box", "search_path_at_48px", "search_path_at_48px_template_box"]
    assert [r["method"] for r in rows] == names
    by_method = {r["method"]: r for r in rows}
    assert by_method["search_path"]["first_look_view"] == 96 and by_method["search_path_at_48px"]["first_look_view"] == 48
    # a smaller first look places the template at fewer cells: fewer windows
    assert by_method["search_path_at_48px"]["windows_per_query"] < by_method["search_path"]["windows_per_query"]
    sizes = json.loads((tmp_path / "run" / "regionsearch_real_sizes.json").read_text())
    assert {r["method"] for r in sizes} == {"search_path", "search_path_at_48px"}
    table = (tmp_path / "run" / "regionsearch_real.md").read_text()
    assert "- search_path_at_48px (free box: width and height predicted; first look 48 px)" in table


def test_search_path_with_a_second_look(tmp_path):
    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=2)
    checkpoint = _search_path_checkpoint(tmp_path)
    rows = run_suite(
        output_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"), methods={}, search_path_checkpoint=str(checkpoint),
        search_path_view=[48, {"view": 48, "second_view": 96, "candidates": 2, "radius": 1}, {"windows_share": 0.05}, {"view": 48, "windows_share": 0.05, "second_view": 96, "candidates": 1, "radius": 1}],
        size_methods=(), sizes=(60,), size_pairs=1,
    )  # fmt: skip
    by_method = {r["method"]: r for r in rows}
    budget = by_method["search_path_within_5pct"]
    assert budget["first_look_budget"] == {"windows_share": 0.05, "template_px": None, "max_view": 768} and budget["first_look_view"] is None
    assert by_method["search_path_within_5pct_then_2x_k1_r1_template_box"]["second_look"] == {"view": "2x", "candidates": 1, "radius": 1}
    looked = by_method["search_path_at_48px_then_96px_k2_r1"]
    assert looked["second_look"] == {"view": 96, "candidates": 2, "radius": 1} and "second_look" not in by_method["search_path"]
    # the second look's placements count: 2 x 3 x 3 to 2 x 4 x 4 more windows than the first look alone
    assert 0 < looked["windows_per_query"] - by_method["search_path"]["windows_per_query"] <= 32
    table = (tmp_path / "run" / "regionsearch_real.md").read_text()
    assert "first look 48 px, then 96 px around its 2 best cells (radius 1)" in table


def test_search_path_with_a_zncc_refinement_and_a_rerank(tmp_path):
    write_bbs_fixture(tmp_path / "data" / "template_matching" / "bbs", n_pairs=2)
    checkpoint = _search_path_checkpoint(tmp_path)
    rerank = {"view": 48, "second_view": 96, "candidates": 2, "radius": 1, "rerank": {"weight": 0.5, "radius": 0.1, "template_px": 16}}
    rows = run_suite(
        output_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"), methods={}, search_path_checkpoint=str(checkpoint),
        search_path_view=[48, {"view": 48, "refine": {"radius": 0.25, "template_px": 16}}, rerank], size_methods=(), sizes=(60,), size_pairs=1,
    )  # fmt: skip
    by_method = {r["method"]: r for r in rows}
    refined = by_method["search_path_at_48px_zncc_a0p25_t16"]
    assert refined["refine"] == {"radius": 0.25, "template_px": 16} and "refine" not in by_method["search_path"]
    # the refinement's placements count: at most (2 * 4 + 1)^2 more windows per query with a 16 px template
    assert 0 < refined["windows_per_query"] - by_method["search_path"]["windows_per_query"] <= 81
    assert refined["windows_share_of_exhaustive"] <= refined["windows_share_max"] <= 1
    table = (tmp_path / "run" / "regionsearch_real.md").read_text()
    assert "first look 48 px, then colour ZNCC within 0.25 of the template's size, template at 16 px" in table
    reranked = by_method["search_path_at_48px_then_96px_k2_r1_rerank_w0p5_a0p1_t16"]
    assert reranked["rerank"] == {"weight": 0.5, "radius": 0.1, "template_px": 16} and "rerank" not in by_method["search_path"]
    # the second look (2 x 4 x 4 placements at most) and each candidate's alignment ((2 * 2 + 1)^2 at most,
    # 16 px template) count
    assert 0 < reranked["windows_per_query"] - by_method["search_path"]["windows_per_query"] <= 32 + 2 * 25
    assert "candidates re-ranked by net score + 0.5 x colour ZNCC within 0.1 of the template's size" in table


def test_validation_mode_scores_the_val_split_and_never_publishes(tmp_path, monkeypatch):
    import pytest

    from benchmarks.suites import regionsearch_real
    from regionsearch.data.bbs import BBSPair

    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    pair = BBSPair(0, "real_pairs_val", 0, 0, image[10:30, 20:40], np.array([0.0, 0.0, 20, 20]), image, np.array([20.0, 10, 40, 30]))
    seen = {}
    monkeypatch.setattr(regionsearch_real, "validation_pairs", lambda root, cache, **kw: seen.update(kw) or [pair, pair])
    rows = run_suite(output_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "nothing"), methods={"zncc": {}}, size_methods=(), validation={"n_pairs": 2, "reference_size": 80})
    assert seen == {"n_pairs": 2, "reference_size": 80}
    assert rows[0]["dataset"] == "real_pairs_val" and rows[0]["n_pairs"] == 2 and rows[0]["success_rate"] == 1.0
    assert "the real_pairs val split, not BBS105" in (tmp_path / "run" / "regionsearch_real.md").read_text()
    with pytest.raises(ValueError, match="not published"):
        run_suite(output_dir=str(tmp_path / "run2"), data_dir=str(tmp_path / "nothing"), methods={"zncc": {}}, validation={"n_pairs": 2}, publish_dir=str(tmp_path / "pub"))
