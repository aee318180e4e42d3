"""Losses on hand cases and tiny CPU fits of the retrieval modules on a fake contract datamodule."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from retrieval.losses import contrastive_loss, triplet_loss
from retrieval.module import RegionalAttentionModule, RetrievalFineTuneModule, train_attention
from retrieval.nets.attention import RegionalAttentionNet
from retrieval.nets.backbones import Backbone
from retrieval.nets.retrieval_net import RetrievalNet, extract_multiscale
from retrieval.pooling import GeM
from tests.retrieval.nets.test_attention import toy_regions

Q = [1.0, 0.0]
P = [0.6, 0.8]
FAR = [0.0, 1.0]
NEAR = [0.9, math.sqrt(1 - 0.81)]


def tuples(*rows):
    return torch.tensor([rows]), torch.tensor([[-1, 1] + [0] * (len(rows) - 2)])


def test_contrastive_loss_hand_case():
    embeddings, labels = tuples(Q, P, FAR, NEAR)
    d_pos = math.sqrt((1 - 0.6) ** 2 + 0.8**2)
    d_near = math.sqrt(0.1**2 + 0.19)
    expected = 0.5 * d_pos**2 + 0.0 + 0.5 * (0.7 - d_near) ** 2  # FAR is beyond the margin
    assert contrastive_loss(embeddings, labels, margin=0.7).item() == pytest.approx(expected, abs=1e-5)
    two = contrastive_loss(torch.cat([embeddings, embeddings]), torch.cat([labels, labels]), margin=0.7)
    assert two.item() == pytest.approx(2 * expected, abs=1e-5)  # summed, not averaged


def test_triplet_loss_hand_case():
    embeddings, labels = tuples(Q, P, FAR, NEAR)
    # ||q - p||^2 = 0.8; ||q - far||^2 = 2 (no loss); ||q - near||^2 = 0.2
    assert triplet_loss(embeddings, labels, margin=0.1).item() == pytest.approx(0.8 - 0.2 + 0.1, abs=1e-5)
    with pytest.raises(ValueError, match="exactly one query"):
        triplet_loss(embeddings, torch.tensor([[1, 1, 0, 0]]))


def tiny_backbone(channels: int = 8) -> Backbone:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
    )
    return Backbone("tiny", features, channels, 4, classifier=nn.Linear(channels, 3))


def make_images(labels: list[int], seed: int) -> torch.Tensor:
    """Class c: a bright blob in one of three places, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(len(labels), 3, 32, 32, generator=generator) * 0.3
    for i, label in enumerate(labels):
        images[i, label, 4 + 8 * label : 12 + 8 * label, 4:28] += 1.0
    return images


class IndexedImages(Dataset):
    """Served in reverse order so that the module has to use ``index`` to sort."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        index = len(self.images) - 1 - i
        return {"image": self.images[index], "index": torch.tensor(index)}


class FakeRetrievalData(pl.LightningDataModule):
    """The retrieval contract: tuple train batches, mine(embed_fn), two eval loaders + evaluate."""

    num_classes = 3

    def __init__(self, classification: bool = False):
        super().__init__()
        self.classification = classification
        self.query_labels = [0, 1, 2]
        self.database_labels = [0, 1, 2, 0, 1, 2]
        self.queries = make_images(self.query_labels, 1)
        self.database = make_images(self.database_labels, 2)
        self.pool_labels = [0, 1, 2] * 4
        self.pool = make_images(self.pool_labels, 3)
        self.mined: list[torch.Tensor] = []
        self.evaluated: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def mine(self, embed_fn):
        vectors = torch.cat([embed_fn(self.pool[i : i + 4]) for i in range(0, len(self.pool), 4)])
        self.mined.append(vectors)

    def train_dataloader(self):
        if self.classification:
            labels = torch.tensor(self.pool_labels)
            items = [{"image": image, "label": label} for image, label in zip(self.pool, labels)]
            return DataLoader(items, batch_size=4)
        items = []
        for i in range(6):  # query, positive (same class), two negatives
            q = i % 3
            images = make_images([q, q, (q + 1) % 3, (q + 2) % 3], 10 + i)
            items.append({"images": images, "labels": torch.tensor([-1, 1, 0, 0])})
        return DataLoader(items, batch_size=2)

    def _eval_loaders(self):
        return [DataLoader(IndexedImages(self.queries), batch_size=2), DataLoader(IndexedImages(self.database), batch_size=4)]

    def val_dataloader(self):
        return self._eval_loaders()

    def test_dataloader(self):
        return self._eval_loaders()

    def evaluate(self, split, query_vectors, database_vectors):
        self.evaluated[split] = (query_vectors, database_vectors)
        order = (query_vectors @ database_vectors.T).argsort(dim=1, descending=True)
        aps, top1 = [], []
        for q, ranking in enumerate(order.tolist()):
            hits = [self.database_labels[j] == self.query_labels[q] for j in ranking]
            precisions = [sum(hits[: r + 1]) / (r + 1) for r, hit in enumerate(hits) if hit]
            aps.append(sum(precisions) / len(precisions))
            top1.append(float(hits[0]))
        return {"map": sum(aps) / len(aps), "top1": sum(top1) / len(top1)}


def trainer(max_epochs: int = 2):
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )


def test_fine_tuning_fits_validates_and_logs_val_map():
    datamodule = FakeRetrievalData()
    net = RetrievalNet(tiny_backbone(), GeM())
    module = RetrievalFineTuneModule(
        net, loss="contrastive", margin=0.7, optimizer=lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-6)
    )
    batchnorm = net.backbone.features[1]
    running_mean = batchnorm.running_mean.clone()
    fit_trainer = trainer()
    fit_trainer.fit(module, datamodule=datamodule)
    assert "val/map" in fit_trainer.callback_metrics and "val/map_best" in fit_trainer.callback_metrics
    assert 0 < fit_trainer.callback_metrics["val/map"] <= 1
    assert torch.equal(batchnorm.running_mean, running_mean)  # frozen BatchNorm
    assert net.pool.p.item() != 3.0  # GeM's p is trained
    assert len(datamodule.mined) == 2  # once per epoch
    mined = datamodule.mined[0]
    assert mined.shape == (12, 8) and torch.allclose(mined.norm(dim=1), torch.ones(12), atol=1e-5)
    # vectors reach evaluate in index order, whatever order the loaders served them
    queries, database = datamodule.evaluated["val"]
    module.eval()
    with torch.no_grad():
        assert torch.allclose(queries, net(datamodule.queries), atol=1e-5)
        assert torch.allclose(database, net(datamodule.database), atol=1e-5)
    results = trainer().validate(module, datamodule=datamodule, verbose=False)
    assert set(results[0]) >= {"val/map", "val/top1"}
    results = trainer().test(module, datamodule=datamodule, verbose=False)
    assert "test/map" in results[0]


def test_pool_parameter_group_and_multiscale():
    net = RetrievalNet(tiny_backbone(), GeM())
    module = RetrievalFineTuneModule(net, optimizer=lambda params: torch.optim.Adam(params, lr=1e-6, weight_decay=1e-6))
    optimizer = module.configure_optimizers()
    base, pool = optimizer.param_groups
    assert pool["params"] == [net.pool.p] and pool["lr"] == pytest.approx(1e-5) and pool["weight_decay"] == 0.0
    assert base["lr"] == 1e-6 and base["weight_decay"] == 1e-6 and len(base["params"]) == len([p for p in net.parameters() if p.requires_grad]) - 1
    images = torch.rand(2, 3, 32, 32)
    net.eval()
    ms = module.embed(images, scales=(1.0, 1 / math.sqrt(2), 0.5))
    with torch.no_grad():
        outs = [net(images), net(nn.functional.interpolate(images, scale_factor=1 / math.sqrt(2), mode="bilinear")), net(nn.functional.interpolate(images, scale_factor=0.5, mode="bilinear"))]
    expected = sum(o.pow(3) for o in outs) / 3
    expected = expected.pow(1 / 3)
    assert torch.allclose(ms, expected / expected.norm(dim=1, keepdim=True), atol=1e-5)  # msp = GeM's p
    assert torch.allclose(extract_multiscale(net, images, (1.0,)), net(images), atol=1e-6)


def test_triplet_fine_tuning_runs():
    datamodule = FakeRetrievalData()
    module = RetrievalFineTuneModule(RetrievalNet(tiny_backbone(), "rmac"), loss="triplet", margin=0.1)
    fit_trainer = trainer(max_epochs=1)
    fit_trainer.fit(module, datamodule=datamodule)
    assert "val/map" in fit_trainer.callback_metrics and torch.isfinite(fit_trainer.callback_metrics["train/loss"])


def test_attention_training_changes_only_the_attention():
    datamodule = FakeRetrievalData(classification=True)
    net = RegionalAttentionNet(tiny_backbone(), context=True)
    module = RegionalAttentionModule(net, num_classes=3)
    backbone_state = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    attention_state = {k: v.clone() for k, v in net.attention.state_dict().items()}
    fit_trainer = trainer(max_epochs=1)
    fit_trainer.fit(module, datamodule=datamodule)
    assert "val/map" in fit_trainer.callback_metrics
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in backbone_state.items())
    assert any(not torch.equal(v, net.attention.state_dict()[k]) for k, v in attention_state.items())
    with pytest.raises(ValueError, match="num_classes=3"):
        trainer(max_epochs=1).fit(RegionalAttentionModule(RegionalAttentionNet(tiny_backbone()), num_classes=4), datamodule=datamodule)


def test_layers_the_network_never_runs_get_no_gradient():
    net = RetrievalNet(tiny_backbone(), "mac")
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    unused = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # DDP without find_unused_parameters
    assert not any(p.requires_grad for p in net.backbone.classifier.parameters())


def test_ddp_gather_puts_vectors_back_in_index_order(monkeypatch):
    """Two ranks, DistributedSampler-style: rank r gets samples r, r+2, ...; the last one padded."""
    module = RetrievalFineTuneModule(RetrievalNet(tiny_backbone(), "mac"))
    vectors = torch.arange(5, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # vector i = (i, i, i)
    rank_indices = [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 0])]  # 5 samples, padded with sample 0
    monkeypatch.setattr(type(module), "trainer", property(lambda self: type("T", (), {"world_size": 2})()))

    def all_gather(tensor):
        if tensor.dtype == torch.long:
            return torch.stack(rank_indices)
        return torch.stack([vectors[i] for i in rank_indices])

    monkeypatch.setattr(module, "all_gather", all_gather)
    ordered, items = module._assemble([(rank_indices[0], vectors[rank_indices[0]])], "query")
    assert torch.equal(ordered, vectors) and items is None
    rank_indices[1] = torch.tensor([1, 1, 0])  # sample 3 extracted nowhere
    with pytest.raises(RuntimeError, match="1 of 5 query images were not extracted"):
        module._assemble([(rank_indices[0], vectors[rank_indices[0]])], "query")


@pytest.mark.slow
def test_fit_under_ddp_on_two_cpu_processes():
    datamodule = FakeRetrievalData()
    module = RetrievalFineTuneModule(RetrievalNet(tiny_backbone(), "gem"))
    ddp = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    ddp.fit(module, datamodule=datamodule)
    assert "val/map" in ddp.callback_metrics
    single = trainer().validate(module, datamodule=datamodule, verbose=False)[0]
    assert float(ddp.callback_metrics["val/map"]) == pytest.approx(single["val/map"])


def test_selection_keeps_the_best_scoring_epoch():
    regions, global_mean = toy_regions(12, 0)
    labels = torch.arange(12) % 3
    scores = iter([0.2, 0.5, 0.5, 0.1])
    states = []

    def select(attention):
        states.append({k: v.clone() for k, v in attention.state_dict().items()})
        return next(scores)

    attention, stats = train_attention(regions, global_mean, labels, context=True, hidden=4, epochs=4, batch_size=4, select=select)
    assert stats["selected_epoch"] == 2 and stats["val_map"] == 0.5  # ties keep the earlier epoch
    assert stats["val_map_per_epoch"] == [0.2, 0.5, 0.5, 0.1]
    for key, value in attention.state_dict().items():
        assert torch.equal(value, states[1][key])
        assert not torch.equal(value, states[3][key])
    _, unselected = train_attention(regions, global_mean, labels, context=False, hidden=4, epochs=2)
    assert "selected_epoch" not in unselected and unselected["epochs"] == 2
