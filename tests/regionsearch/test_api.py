"""The Hydra-free API: a checkpoint round trip, and the compiled search (torch.export +
AOTInductor) answers like the eager one; a failing compile falls back."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from regionsearch.api import RegionSearcher
from regionsearch.module import RegionSearchModule, net_config
from regionsearch.nets.search_path import SearchPathMatcher


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


# -- checkpoint + plain API ----------------------------------------------------------------
def test_api_round_trip(tmp_path):
    net = SearchPathMatcher(steps=3, channels=(8, 8, 8, 8, 8), hidden_size=16, window_size=0.4667)
    module = RegionSearchModule(net)
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, map_location="cpu", weights_only=True)["net_config"] == net_config(net)

    searcher = RegionSearcher.from_checkpoint(path)
    query = np.zeros((28, 28), np.uint8)
    reference = np.zeros((60, 60), np.uint8)
    box = searcher.search(query, reference)
    assert box.shape == (4,)
    box, path_windows = searcher.search(query, reference, return_path=True)
    assert path_windows.shape == (4, 4)
    boxes = searcher.search(np.zeros((5, 28, 28), np.float32), np.zeros((5, 60, 60), np.float32))
    assert boxes.shape == (5, 4)
    expected = net.eval()(torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 60, 60)).boxes[0].detach().numpy()
    np.testing.assert_allclose(box, expected, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        RegionSearcher.from_checkpoint(tmp_path / "missing.ckpt")
