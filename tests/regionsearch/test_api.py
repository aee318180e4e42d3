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


# -- bad checkpoints and bad input: one ValueError naming the path or the argument ----------------
def _save_module_checkpoint(net, path):
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(RegionSearchModule(net))
    trainer.save_checkpoint(path)
    return path


def _truncated(tmp_path):
    good = _save_module_checkpoint(_net(), tmp_path / "good.ckpt")
    (tmp_path / "half.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return tmp_path / "half.ckpt"


def _empty(tmp_path):
    (tmp_path / "empty.ckpt").touch()
    return tmp_path / "empty.ckpt"


def _garbage(tmp_path):
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 8)
    return tmp_path / "garbage.ckpt"


def _retrieval_checkpoint(tmp_path):
    # what retrieval's fine-tuning writes: a net_config without the matcher's keys
    state = {"net.backbone.features.0.weight": torch.zeros(2, 3, 1, 1)}
    torch.save({"state_dict": state, "net_config": {"kind": "retrieval_net", "backbone": "efficientnet_lite0"}}, tmp_path / "retrieval.ckpt")
    return tmp_path / "retrieval.ckpt"


def _descriptor_checkpoint(tmp_path):
    torch.save({"state_dict": {"net.features.0.weight": torch.zeros(32, 1, 3, 3)}}, tmp_path / "hardnet.ckpt")
    return tmp_path / "hardnet.ckpt"


def _other_architecture(tmp_path):
    path = _save_module_checkpoint(_net(), tmp_path / "good.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["net_config"]["hidden_size"] = 32  # the weights are of hidden_size 16
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    return tmp_path / "mismatch.ckpt"


def _diverged(tmp_path):
    net = _net()
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    return _save_module_checkpoint(net, tmp_path / "nan.ckpt")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp_path: tmp_path / "missing.ckpt", "checkpoint not found"),
        (_empty, "empty"),
        (_truncated, "truncated"),
        (_garbage, "not a PyTorch checkpoint"),
        (_retrieval_checkpoint, "not a region-search checkpoint"),
        (_descriptor_checkpoint, "not a region-search checkpoint"),
        (_other_architecture, "weights do not fit"),
        (_diverged, "NaN or infinite weights"),
    ],
)
def test_bad_checkpoints_give_one_line_naming_the_path(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        RegionSearcher.from_checkpoint(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert "weights_only" not in message  # never advise the unsafe weights_only=False


@pytest.fixture(scope="module")
def grey_searcher():
    return RegionSearcher(_net())


@pytest.mark.parametrize(
    ("query", "reference", "expected"),
    [
        (np.full((28, 28), np.nan, np.float32), np.zeros((60, 60), np.float32), "query has 784 NaN or infinite values"),
        (np.zeros((28, 28), np.float32), np.pad(np.zeros((59, 60), np.float32), ((0, 1), (0, 0)), constant_values=np.inf), "reference has 60 NaN or infinite"),
        (torch.zeros(2, 1, 28, 28).index_fill_(2, torch.tensor([3]), float("nan")), torch.zeros(2, 1, 60, 60), "query has 56 NaN"),
        (np.zeros((28, 28, 3), np.uint8), np.zeros((60, 60), np.uint8), "query is a RGB image \\(shape \\(28, 28, 3\\)\\) but the model takes grey"),
        (np.zeros((28, 28), np.uint8), np.zeros((60, 60, 4), np.uint8), "reference is a RGBA image"),
        (torch.zeros(1, 3, 28, 28), torch.zeros(1, 1, 60, 60), "query is a RGB image"),
        (np.zeros((28, 28), np.uint8), np.zeros((20, 20), np.uint8), "reference \\(20x20 pixels\\) is smaller than the query \\(28x28\\)"),
        (np.zeros((28, 28), np.uint8), np.zeros((60, 27), np.uint8), "reference \\(60x27 pixels\\) is smaller than the query"),
        (np.zeros((28, 28), np.int64), np.zeros((60, 60), np.uint8), "query must be uint8 \\(0..255\\) or float \\(0..1\\), got dtype int64"),
        (np.zeros((0, 28), np.uint8), np.zeros((60, 60), np.uint8), "query is empty"),
        (np.zeros(28, np.uint8), np.zeros((60, 60), np.uint8), "query must be grey \\(h, w\\)"),
        (np.zeros((5, 28, 28), np.uint8), np.zeros((4, 60, 60), np.uint8), "query holds 5 images but reference holds 4"),
    ],
)
def test_bad_input_gives_a_value_error_naming_the_argument(grey_searcher, query, reference, expected):
    with pytest.raises(ValueError, match=expected):
        grey_searcher.search(query, reference)


def test_channel_layouts_that_are_accepted():
    grey, colour = RegionSearcher(_net()), RegionSearcher(SearchPathMatcher(in_channels=3, steps=3, channels=(8, 8, 8, 8, 8), hidden_size=16))
    # a grey (h, w, 1) array is one image, as is (h, w); a (B, h, w) stack is a batch
    assert grey.search(np.zeros((28, 28, 1), np.uint8), np.zeros((60, 60, 1), np.uint8)).shape == (4,)
    np.testing.assert_allclose(grey.search(np.zeros((28, 28, 1), np.uint8), np.zeros((60, 60), np.uint8)),
                               grey.search(np.zeros((28, 28), np.uint8), np.zeros((60, 60), np.uint8)))
    assert grey.search(np.zeros((3, 28, 28), np.uint8), np.zeros((3, 60, 60), np.uint8)).shape == (3, 4)
    assert colour.search(np.zeros((28, 28, 3), np.uint8), np.zeros((60, 60, 3), np.uint8)).shape == (4,)
    assert colour.search(np.zeros((2, 28, 28, 3), np.uint8), np.zeros((2, 60, 60, 3), np.uint8)).shape == (2, 4)
    # uint8 tensors are 0..255 like uint8 arrays
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    reference = np.random.default_rng(1).integers(0, 256, (60, 60), dtype=np.uint8)
    np.testing.assert_allclose(grey.search(torch.from_numpy(image)[None, None], torch.from_numpy(reference)[None, None])[0],
                               grey.search(image, reference), atol=1e-6)
    with pytest.raises(ValueError, match="reference is a grey image .* but the model takes RGB"):
        colour.search(np.zeros((28, 28, 3), np.uint8), np.zeros((60, 60), np.uint8))


def test_the_classical_matchers_are_part_of_the_api():
    from regionsearch import api

    query = np.zeros((8, 8), np.uint8)
    query[2:6, 2:6] = 255
    reference = np.zeros((30, 30), np.uint8)
    reference[12:20, 5:13] = query
    for name in ("ncc", "mtm", "bbs"):
        assert getattr(api, f"match_{name}") is api.get_baseline(name)
    np.testing.assert_array_equal(api.match_ncc(query, reference).box, [5, 12, 13, 20])
