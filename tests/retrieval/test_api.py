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
    with pytest.raises(ValueError, match="expected an image"):
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
