"""The region-search benchmark suites end to end on a tiny setting, their timings and table helpers."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from benchmarks.suites.regionsearch import (
    add_ratios,
    device_summary,
    in_dataset_order,
    markdown_table,
    run_speed_suite,
    run_suite,
    search_path_timings,
    speed_markdown,
    speed_ratios,
)
from regionsearch.nets.search_path import SearchPathMatcher

ROW_KEYS = {"dataset", "method", "success_rate", "mean_iou", "ms_per_query", "windows_per_query", "n_pairs", "device"}


def test_suite_writes_rows_tables_and_plots(tmp_path, cache_dir):
    GlobalHydra.instance().clear()
    publish = tmp_path / "published"
    publish.mkdir()
    # a row of another dataset already published must survive a partial re-run
    (publish / "regionsearch.json").write_text(json.dumps([{**dict.fromkeys(ROW_KEYS, 0), "auc": 0, "dataset": "mixed", "method": "ncc", "device": "x"}]))
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_suite(
            output_dir=str(tmp_path / "run"),
            datasets=["translated"],
            quick=True,
            n_test=32,
            baselines={"translated": {"ncc": {}, "mtm": {"bins": 8}, "bbs": {"quick_pairs": 3}, "exhaustive_cnn": {"stride": 4, "quick_pairs": 3}}},
            quick_overrides=["data.n_train=128", "data.n_val=32", "data.digits=embedded", "trainer.max_epochs=1", "logger=none", "callbacks=none", f"paths.cache_dir={cache_dir}", "trainer=cpu"],
            batch_sizes=(1, 16),
            timing_repeats=2,
            publish_dir=str(publish),
            compile=False,  # the compiled path: tests/regionsearch/test_compiled_search.py
        )
    GlobalHydra.instance().clear()
    assert [r["method"] for r in rows] == ["search_path", "prior_box", "ncc", "mtm", "bbs", "exhaustive_cnn"]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert 0 <= row["success_rate"] <= 1 and row["windows_per_query"] > 0
        assert row["ms_per_query"] > 0 or row["method"] == "prior_box"
    assert rows[0]["windows_per_query"] == 6 and rows[0]["n_pairs"] == 32
    assert rows[4]["n_pairs"] == 3  # the slow baseline was capped
    assert rows[1]["success_rate"] < 0.3  # positions are uniform on translated canvases: a fixed box rarely hits
    run = tmp_path / "run"
    assert json.loads((run / "regionsearch.json").read_text()) == rows
    for name in ("regionsearch.md", "success_vs_steps.png", "search_paths_translated.png", "success_curves_translated.png"):
        assert (run / name).is_file(), name
    published = json.loads((publish / "regionsearch.json").read_text())
    assert [r["dataset"] for r in published] == ["translated"] * len(rows) + ["mixed"]  # the suite's order


def test_speed_suite_writes_rows_verdicts_table_and_plot(tmp_path, cache_dir):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_speed_suite(
            output_dir=str(tmp_path / "run"),
            datasets=["translated"],
            quick=True,
            n_test=16,
            baselines={"translated": {"ncc": {}, "mtm": {"bins": 8}, "bbs": {"quick_pairs": 2}}},
            quick_overrides=["data.n_train=32", "data.n_val=16", "data.digits=embedded", f"paths.cache_dir={cache_dir}"],
            batch_sizes=(1, 8),
            timing_repeats=1,
            publish_dir=str(tmp_path / "published"),
            compile=False,
        )
    GlobalHydra.instance().clear()
    assert [r["method"] for r in rows] == ["search_path", "ncc", "mtm", "bbs"]
    assert rows[0]["weights"] == "untrained" and rows[0]["windows_per_query"] == 6 and rows[0]["compiled"] is False
    assert all(r["ms_per_query"] > 0 for r in rows)
    assert [r["n_pairs"] for r in rows[1:]] == [16, 16, 2]
    written = json.loads((tmp_path / "run" / "regionsearch_speed.json").read_text())
    assert written["rows"] == rows and written["verdicts"][0]["dataset"] == "translated"
    assert "mtm_speedup_batch1" in written["verdicts"][0] and "ncc_slowdown_batched" in written["verdicts"][0]
    for name in ("regionsearch_speed.json", "regionsearch_speed.md", "regionsearch_speed.png"):
        assert (tmp_path / "published" / name).is_file(), name


def test_ratios_and_table():
    rows = [
        {"dataset": "cluttered", "method": "search_path", "success_rate": 0.9, "mean_iou": 0.7, "auc": 0.7, "ms_per_query": 0.5, "windows_per_query": 6, "n_pairs": 10, "device": "cpu"},
        {"dataset": "cluttered", "method": "bbs", "success_rate": 0.1, "mean_iou": 0.2, "auc": 0.2, "ms_per_query": 50.0, "windows_per_query": 5329, "n_pairs": 10, "device": "cpu"},
    ]
    add_ratios(rows)
    assert rows[1]["speedup_of_search_path"] == 100.0
    table = markdown_table(rows, "cpu", quick=False)
    assert "| Cluttered MNIST | 0.90 (0.5) [0.91 (3)] | 0.10 (50) [0.11 (141)] |" in table
    assert "| cluttered | bbs |" in table and "100.0x / " in table


def test_merged_rows_keep_the_dataset_order_and_name_each_device():
    def row(dataset, method, device):
        return {"dataset": dataset, "method": method, "device": device}

    merged = [row("translated", "search_path", "A"), row("flickrlogos", "search_path", "A"), row("mixed", "search_path", "B"), row("mixed", "ncc", "CPU")]
    ordered = in_dataset_order(merged)
    assert [r["dataset"] for r in ordered] == ["translated", "mixed", "mixed", "flickrlogos"]
    assert ordered[1]["method"] == "search_path"  # stable within a dataset
    assert device_summary(ordered, "default") == "A for translated, flickrlogos; B for mixed"
    assert device_summary(ordered[:1], "default") == "A"
    assert device_summary([], "default") == "default"


def test_timings_fall_back_to_eager_and_name_the_mode(monkeypatch):
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, channels=(8, 8, 8, 8, 8), hidden_size=16, window_size=0.4667)
    queries, references = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 60, 60)
    times = search_path_timings(net, torch.device("cpu"), queries, references, (1, 4), repeats=1, compile=False)
    assert times["compiled"] is False and "compile_s" not in times
    assert times["ms_per_query"] == times["ms_per_query_eager"] == times["ms_per_query_eager_batch1"] > 0
    assert times["ms_per_query_batched"] == times["ms_per_query_eager_batched"] == times["ms_per_query_eager_batch4"] > 0
    def broken_compile(program, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken_compile)
    with pytest.warns(UserWarning, match="compiling the search failed"):
        times = search_path_timings(net, torch.device("cpu"), queries, references, (1, 4), repeats=1, compile=True)
    assert times["compiled"] is False and not any(key.startswith("ms_per_query_compiled") for key in times)


def test_speed_ratios_against_the_targets():
    rows = [
        {"dataset": "translated", "method": "search_path", "ms_per_query": 1.0, "ms_per_query_batched": 0.1, "ms_per_query_eager": 2.0, "compiled": True, "weights": "untrained"},
        {"dataset": "translated", "method": "ncc", "ms_per_query": 0.04},
        {"dataset": "translated", "method": "mtm", "ms_per_query": 10.0},
        {"dataset": "translated", "method": "bbs", "ms_per_query": 50.0},
    ]
    (verdict,) = speed_ratios(rows)
    assert verdict["mtm_speedup_batch1"] == 10.0 and not verdict["mtm_target_met_batch1"]
    assert verdict["mtm_speedup_batched"] == 100.0 and verdict["mtm_target_met_batched"]
    assert verdict["bbs_speedup_batch1"] == 50.0 and verdict["bbs_target_met_batch1"]
    assert verdict["ncc_slowdown_batch1"] == 25.0 and not verdict["ncc_target_met_batch1"]
    assert verdict["ncc_slowdown_batched"] == 2.5 and verdict["ncc_target_met_batched"]
    table = speed_markdown(rows, [verdict], "CPU")
    assert "| Translated MNIST | untrained | 2 | 1 | 0.1 | 0.04 | 10 | 50 | 10.0x ✗ / 100.0x ✓ | 50.0x ✓ / 500.0x ✓ | 25.0x ✗ / 2.5x ✓ |" in table
