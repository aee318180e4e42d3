"""retrieval.api: images -> vectors and database search without Hydra, from a name or a checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retrieval.api import PRETRAINED, Retriever, build_net, describe_net
from retrieval.module import RegionalAttentionModule, RetrievalFineTuneModule
from retrieval.nets.attention import RegionalAttentionNet
from retrieval.nets.backbones import build_backbone
from retrieval.nets.retrieval_net import RetrievalNet
from retrieval.search import rank


@pytest.fixture(scope="module")
def gem_retriever():
    return Retriever.pretrained("gem", image_size=64)


def _images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40 + 8 * i, 56 - 4 * i, 3), dtype=np.uint8) for i in range(n)]


def test_embed_arrays_of_any_size_and_tensors(gem_retriever):
    images = _images()
    vectors = gem_retriever.embed(images)
    assert vectors.shape == (3, 1280) and gem_retriever.dim == 1280
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-4)
    # one image alone gives its row; a float (3, H, W) tensor in [0, 1] gives the same vector as uint8
    assert torch.allclose(gem_retriever.embed(images[1])[0], vectors[1], atol=1e-5)
    as_float = torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255
    assert torch.allclose(gem_retriever.embed([as_float])[0], vectors[2], atol=1e-5)
    # a batch tensor (N, 3, H, W) equals image-by-image embedding
    batch = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(gem_retriever.embed(batch), torch.cat([gem_retriever.embed([b]) for b in batch]), atol=1e-5)
    with pytest.raises(ValueError, match="images\\[0\\] is a RGBA image \\(shape \\(4, 5, 7\\)\\)"):
        gem_retriever.embed([np.zeros((4, 5, 7), dtype=np.uint8)])


def test_pretrained_names():
    assert {"mac", "spoc", "gem", "rmac", "neural_codes"} <= set(PRETRAINED)
    with pytest.raises(ValueError, match="unknown pretrained retriever"):
        Retriever.pretrained("vlad")


def test_search_ranks_and_query_expansion():
    database = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    queries = database[[3, 7]] + 0.01
    indices, scores = Retriever.search(queries, database, topk=5)
    assert indices.shape == (2, 5) and indices[:, 0].tolist() == [3, 7]
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # QE: a query replaced by the mean of itself and its top-k, then searched again
    expanded_indices, _ = Retriever.search(queries, database, topk=20, query_expansion=2)
    top2 = rank(queries, database, topk=2)[0]
    expanded = torch.nn.functional.normalize((queries + database[top2].sum(1)) / 3, dim=1)
    assert torch.equal(expanded_indices, rank(expanded, database)[0])
    # numpy in, a single query vector, topk larger than the database
    one, _ = Retriever.search(database[0].numpy(), database.numpy(), topk=100)
    assert one.shape == (1, 20)
    with pytest.raises(ValueError, match="expected queries"):
        Retriever.search(torch.zeros(2, 3), database)


class _TupleData(pl.LightningDataModule):
    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        items = [{"images": torch.rand(3, 3, 32, 32, generator=generator), "labels": torch.tensor([-1, 1, 0])} for _ in range(2)]
        return DataLoader(items, batch_size=2)


class _ClassData(pl.LightningDataModule):
    num_classes = 3

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        items = [{"image": torch.rand(3, 32, 32, generator=generator), "label": torch.tensor(i % 3)} for i in range(4)]
        return DataLoader(items, batch_size=2)


def _fit_and_save(module, datamodule, path):
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return module


@pytest.mark.parametrize("pooling", ["gem", "rmac"])
def test_from_checkpoint_of_a_fine_tuning_run(tmp_path, pooling):
    net = RetrievalNet(build_backbone("efficientnet_lite0", pretrained=False), pooling)
    module = _fit_and_save(RetrievalFineTuneModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2)), _TupleData(), tmp_path / "run.ckpt")
    retriever = Retriever.from_checkpoint(tmp_path / "run.ckpt", image_size=None)
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    expected = module.embed((images - torch.tensor(net.backbone.mean).view(1, 3, 1, 1)) / torch.tensor(net.backbone.std).view(1, 3, 1, 1))
    assert torch.allclose(retriever.embed(images), expected, atol=1e-5)
    if pooling == "gem":  # the trained p came back, not the initial 3
        assert float(retriever.net.pool.p) == pytest.approx(float(net.pool.p)) and float(net.pool.p) != 3.0


def test_from_checkpoint_of_an_attention_run(tmp_path):
    net = RegionalAttentionNet(build_backbone("efficientnet_lite0", pretrained=False), context=True, hidden=8)
    module = _fit_and_save(RegionalAttentionModule(net, num_classes="datamodule"), _ClassData(), tmp_path / "attention.ckpt")
    assert module.classifier.out_features == 3
    retriever = Retriever.from_checkpoint(tmp_path / "attention.ckpt", image_size=None)
    assert isinstance(retriever.net, RegionalAttentionNet) and retriever.net.attention.context
    image = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(3))
    normalised = (image - torch.tensor(net.backbone.mean).view(3, 1, 1)) / torch.tensor(net.backbone.std).view(3, 1, 1)
    assert torch.allclose(retriever.embed([image]), module.embed(normalised[None]), atol=1e-5)


def test_describe_and_build_round_trip_and_errors(tmp_path):
    net = RetrievalNet(build_backbone("efficientnet_lite0", pretrained=False), "spoc", {"center": True}, whiten=torch.nn.Linear(1280, 64))
    config = describe_net(net)
    assert config == {"kind": "retrieval_net", "backbone": "efficientnet_lite0", "pooling": "spoc", "pooling_kwargs": {"center": True}, "whiten": [1280, 64]}
    rebuilt = build_net(config)
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.output_dim == 64 and rebuilt.pool.center
    with pytest.raises(ValueError, match="cannot describe"):
        describe_net(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Retriever.from_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a retrieval checkpoint"):
        Retriever.from_checkpoint(tmp_path / "other.ckpt")


# -- neural codes: the benchmark's row ---------------------------------------------------------
def test_pretrained_neural_codes_are_the_benchmarks_1000_d_imagenet_fc(gem_retriever):
    from retrieval.api import extract_features

    retriever = Retriever.pretrained("neural_codes", image_size=64)
    images = _images(2)
    vectors = retriever.embed(images)
    assert vectors.shape == (2, 1000) and retriever.dim == 1000
    # the same vector as the benchmark's neuralcodes row (extract_features), image by image
    backbone = gem_retriever.backbone

    class _Images:
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {"image": retriever._prepare(images[i])[0]}

    features = extract_features(backbone, _Images(), gem_p=3.0, levels=2, proposals={}, desc="test")
    assert features.vectors["neuralcodes"].shape == (2, 1000)
    torch.testing.assert_close(vectors, features.vectors["neuralcodes"], atol=1e-5, rtol=1e-4)
    # the pooled 1280-d activation that feeds the classifier is SPoC (the same vector after the L2)
    pooled = RetrievalNet(backbone, "neural_codes", {"layer": "pool"}).eval()
    batch = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pooled(batch), RetrievalNet(backbone, "spoc").eval()(batch), atol=1e-5, rtol=1e-4)


def test_neural_codes_round_trip_through_a_checkpoint_config():
    net = RetrievalNet(build_backbone("efficientnet_lite0", pretrained=False), "neural_codes", {"layer": "classifier"})
    assert net.output_dim == 1000 and net.backbone.classifier.weight.requires_grad  # trained when it is the code
    assert build_net(describe_net(net)).output_dim == 1000
    assert not RetrievalNet(build_backbone("efficientnet_lite0", pretrained=False), "gem").backbone.classifier.weight.requires_grad


# -- bad checkpoints and bad input: one ValueError naming the path or the argument ----------------
@pytest.fixture(scope="module")
def gem_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("retrieval") / "gem.ckpt"
    net = RetrievalNet(build_backbone("efficientnet_lite0", pretrained=False), "gem")
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(RetrievalFineTuneModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2)))
    trainer.save_checkpoint(path)
    return path


def _truncated(tmp_path, good):
    (tmp_path / "half.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return tmp_path / "half.ckpt"


def _empty(tmp_path, good):
    (tmp_path / "empty.ckpt").touch()
    return tmp_path / "empty.ckpt"


def _garbage(tmp_path, good):
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 8)
    return tmp_path / "garbage.ckpt"


def _region_search_checkpoint(tmp_path, good):
    # what the region-search module writes: its matcher's net_config, no kind or backbone
    from regionsearch.module import RegionSearchModule
    from regionsearch.nets.search_path import SearchPathMatcher

    trainer = pl.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(RegionSearchModule(SearchPathMatcher(steps=2, channels=(8, 8, 8, 8, 8), hidden_size=16)))
    trainer.save_checkpoint(tmp_path / "regionsearch.ckpt")
    return tmp_path / "regionsearch.ckpt"


def _descriptor_checkpoint(tmp_path, good):
    torch.save({"state_dict": {"net.features.0.weight": torch.zeros(32, 1, 3, 3)}}, tmp_path / "hardnet.ckpt")
    return tmp_path / "hardnet.ckpt"


def _other_architecture(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["net_config"]["whiten"] = [1280, 64]  # the weights have no whitening
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    return tmp_path / "mismatch.ckpt"


def _unknown_kind(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["net_config"]["kind"] = "transformer"
    torch.save(checkpoint, tmp_path / "kind.ckpt")
    return tmp_path / "kind.ckpt"


def _diverged(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["net.pool.p"] = torch.tensor([float("nan")])
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    return tmp_path / "nan.ckpt"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp_path, good: tmp_path / "missing.ckpt", "checkpoint not found"),
        (_empty, "empty"),
        (_truncated, "truncated"),
        (_garbage, "not a PyTorch checkpoint"),
        (_region_search_checkpoint, "not a retrieval checkpoint"),
        (_descriptor_checkpoint, "not a retrieval checkpoint"),
        (_unknown_kind, "not a retrieval checkpoint"),
        (_other_architecture, "weights do not fit"),
        (_diverged, "NaN or infinite weights"),
    ],
)
def test_bad_checkpoints_give_one_line_naming_the_path(tmp_path, gem_checkpoint, make, expected):
    path = make(tmp_path, gem_checkpoint)
    with pytest.raises(ValueError) as info:
        Retriever.from_checkpoint(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert "weights_only" not in message  # never advise the unsafe weights_only=False
    assert Retriever.from_checkpoint(gem_checkpoint).dim == 1280  # the good one still loads


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), np.nan, np.float32)], "images\\[1\\] has 192 NaN or infinite values"),
        (torch.zeros(2, 3, 8, 8).index_fill_(3, torch.tensor([0]), float("inf")), "images\\[0\\] has 24 NaN or infinite"),
        ([np.zeros((8, 8, 4), np.uint8)], "images\\[0\\] is a RGBA image \\(shape \\(8, 8, 4\\)\\) but the model takes RGB"),
        ([np.zeros((8, 8, 5), np.uint8)], "images\\[0\\] is a 5-channel image"),
        ([np.zeros((8, 8), np.int32)], "images\\[0\\] must be uint8 \\(0..255\\) or float \\(0..1\\), got dtype int32"),
        ([np.zeros((0, 8, 3), np.uint8)], "images\\[0\\] is empty"),
        ([np.zeros(8, np.uint8)], "images\\[0\\] must be \\(H, W, 3\\), \\(3, H, W\\) or grey \\(H, W\\), got shape \\(8,\\)"),
    ],
)
def test_bad_images_give_a_value_error_naming_the_image(gem_retriever, images, expected):
    with pytest.raises(ValueError, match=expected):
        gem_retriever.embed(images)


def test_grey_images_with_a_channel_axis_are_accepted(gem_retriever):
    grey = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    expected = gem_retriever.embed([grey])
    torch.testing.assert_close(gem_retriever.embed([grey[..., None]]), expected)
    torch.testing.assert_close(gem_retriever.embed([torch.from_numpy(grey)[None]]), expected)


@pytest.mark.parametrize("which", ["query_vectors", "database_vectors"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_search_refuses_non_finite_vectors(which, bad):
    database = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    queries = database[:2].clone()
    (queries if which == "query_vectors" else database)[1, 2] = bad
    with pytest.raises(ValueError, match=f"{which} has 1 NaN or infinite value"):
        Retriever.search(queries, database)
