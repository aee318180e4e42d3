"""The compiled search (torch.export + AOTInductor) answers like the eager one; a failing compile falls back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from benchmarks.regionsearch import search_path_timings, speed_markdown, speed_ratios
from regionsearch.api import RegionSearcher
from regionsearch.model import SearchPathMatcher


def _net() -> SearchPathMatcher:
    torch.manual_seed(0)
    return SearchPathMatcher(steps=3, channels=(8, 8, 8, 8, 8), hidden_size=16, window_size=0.4667)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="AOTInductor needs a C++ compiler")
def test_compiled_search_equals_eager():
    torch.manual_seed(0)
    net = SearchPathMatcher(in_channels=3, steps=3, channels=(8, 8, 8, 8, 8), hidden_size=16, window_size=0.4667)
    queries, references = torch.rand(1, 3, 28, 28), torch.rand(1, 3, 60, 60)
    compiled = RegionSearcher(net, compile=True)
    windows = compiled.windows(queries, references)
    assert compiled.compiled, "compiling failed on this machine"
    eager = RegionSearcher(net).windows(queries, references)
    assert windows.shape == (4, 1, 4)
    torch.testing.assert_close(windows, eager, atol=1e-4, rtol=1e-5)
    # float HWC arrays arrive as permuted (non-contiguous) views: same answers from the same library
    query, reference = (np.random.default_rng(0).random((side, side, 3), dtype=np.float32) for side in (28, 60))
    np.testing.assert_allclose(compiled.search(query, reference), RegionSearcher(net).search(query, reference), atol=1e-4)
    assert len(compiled._search.runners) == 1


def _break_the_compiler(monkeypatch):
    def broken_compile(program, **kwargs):
        raise RuntimeError("no C++ compiler\nlong inductor traceback")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken_compile)


def test_failed_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    _break_the_compiler(monkeypatch)
    net = _net()
    searcher = RegionSearcher(net, compile=True)
    queries, references = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 60, 60)
    with pytest.warns(UserWarning, match="compiling the search failed \\(RuntimeError: no C\\+\\+ compiler\\); running it eagerly"):
        windows = searcher.windows(queries, references)
    assert not searcher.compiled
    torch.testing.assert_close(windows, RegionSearcher(net).windows(queries, references))
    # a bad input is still the caller's error, with or without compile
    with pytest.raises(ValueError, match="expected query"):
        RegionSearcher(net, compile=True).windows(queries[0], references)


def test_timings_fall_back_to_eager_and_name_the_mode(monkeypatch):
    net = _net()
    queries, references = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 60, 60)
    times = search_path_timings(net, torch.device("cpu"), queries, references, (1, 4), repeats=1, compile=False)
    assert times["compiled"] is False and "compile_s" not in times
    assert times["ms_per_query"] == times["ms_per_query_eager"] == times["ms_per_query_eager_batch1"] > 0
    assert times["ms_per_query_batched"] == times["ms_per_query_eager_batched"] == times["ms_per_query_eager_batch4"] > 0
    _break_the_compiler(monkeypatch)
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
