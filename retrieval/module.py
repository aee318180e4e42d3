"""LightningModules of the retrieval family: tuple fine-tuning and regional-attention training,
and :func:`train_attention`, the regional attention's training on cached region features
(what the retrieval benchmark runs: one backbone pass per image, then many cheap epochs).

Both evaluate the same way (the contract of the retrieval datamodules): ``val_dataloader()`` /
``test_dataloader()`` give two loaders ``[queries, database]`` of ``{"image", "index"}``
batches; the module extracts every vector (multi-scale if ``eval_scales`` has several), gathers
them across DDP ranks, puts them in ``index`` order and calls
``trainer.datamodule.evaluate(split, queries, database)``; every returned metric is logged as
``<split>/<name>``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from functools import partial

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .api import describe_net
from .losses import LOSSES
from .nets.attention import RegionalAttention, RegionalAttentionNet, attention_pool, pad_regions
from .nets.retrieval_net import RetrievalNet, extract_multiscale
from .pooling import GeM

log = logging.getLogger(__name__)

def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics fixed), as cirtorch's training."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


class _RetrievalModule(pl.LightningModule):
    """Shared parts: ``embed`` (eval mode, no grad), retrieval validation/test, optimizers."""

    net: nn.Module

    def __init__(self, optimizer=None, scheduler=None, eval_scales: tuple[float, ...] = (1.0,)) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.eval_scales = tuple(float(s) for s in eval_scales)
        self._vectors: dict[str, dict[int, list[tuple[torch.Tensor, torch.Tensor]]]] = {"val": {}, "test": {}}
        self.best_metrics: dict[str, float] = {}

    def _apply_frozen_modes(self) -> None:
        """Put the layers that must not train (frozen BatchNorm, a frozen backbone) in eval mode."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self._apply_frozen_modes()
        return self

    # -- embedding ----------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: torch.Tensor, scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
        """L2-normalised descriptors ``(B, D)`` in eval mode (the ``embed_fn`` given to ``mine``)."""
        was_training = self.training
        self.eval()
        try:
            images = images.to(self.device)
            if tuple(scales) == (1.0,):
                return self.net(images)
            return extract_multiscale(self.net, images, tuple(scales))
        finally:
            self.train(was_training)

    # -- evaluation ---------------------------------------------------------------------
    def _retrieval_step(self, batch: dict, split: str, dataloader_idx: int) -> None:
        if dataloader_idx not in (0, 1):
            raise ValueError(f"retrieval evaluation expects two loaders [queries, database], got loader {dataloader_idx}")
        vectors = self.embed(batch["image"], self.eval_scales)
        self._vectors[split].setdefault(dataloader_idx, []).append((batch["index"].detach(), vectors.detach()))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._retrieval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._retrieval_step(batch, "test", dataloader_idx)

    def _batches_limited(self, split: str) -> bool:
        """True in a smoke run (``fast_dev_run``, ``limit_val_batches``...) that skips eval batches."""
        trainer = self.trainer
        limit = getattr(trainer, "limit_val_batches" if split == "val" else "limit_test_batches", 1.0)
        return bool(getattr(trainer, "fast_dev_run", False)) or limit != 1.0

    def _assemble(self, parts: list[tuple[torch.Tensor, torch.Tensor]], what: str, split: str = "val"):
        """Vectors of one loader, gathered over ranks, in ``index`` order ``(N, D)`` on the CPU,
        and the item indices they belong to (``None`` when every item is there)."""
        indices = torch.cat([index for index, _ in parts]).long()
        vectors = torch.cat([vector for _, vector in parts])
        if self.trainer.world_size > 1:
            # DistributedSampler pads with repeats; the index puts each vector back in its place.
            indices = self.all_gather(indices).flatten(0, 1)
            vectors = self.all_gather(vectors).flatten(0, 1)
        indices, vectors = indices.cpu(), vectors.float().cpu()
        count = int(indices.max()) + 1
        seen = torch.bincount(indices, minlength=count)
        expected = self._expected_count(split, what)
        if not bool((seen > 0).all()) or (expected is not None and count < expected):
            if not self._batches_limited(split):
                missing = int((seen == 0).sum()) + max(0, (expected or count) - count)
                raise RuntimeError(
                    f"{missing} of {expected or count} {what} images were not extracted: retrieval evaluation needs "
                    f"every image (do not limit the validation/test batches)"
                )
            present = torch.nonzero(seen > 0).flatten()
            ordered = vectors.new_zeros(count, vectors.shape[1])
            ordered[indices] = vectors
            return ordered[present], present.numpy()
        ordered = vectors.new_zeros(count, vectors.shape[1])
        ordered[indices] = vectors
        return ordered, None

    def _expected_count(self, split: str, what: str) -> int | None:
        sets = getattr(getattr(self.trainer, "datamodule", None), "sets", None)
        if not isinstance(sets, dict) or split not in sets:
            return None
        return len(sets[split].queries if what == "query" else sets[split].database)

    def _finish_retrieval(self, split: str) -> None:
        parts = self._vectors[split]
        self._vectors[split] = {}
        if not parts or self.trainer.sanity_checking:
            return
        if set(parts) != {0, 1}:
            raise RuntimeError(f"{split} needs two loaders [queries, database], got loaders {sorted(parts)}")
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "evaluate"):
            raise RuntimeError("retrieval evaluation needs a datamodule with evaluate(split, queries, database)")
        (queries, query_items), (database, database_items) = self._assemble(parts[0], "query", split), self._assemble(parts[1], "database", split)
        if query_items is None and database_items is None:
            results = datamodule.evaluate(split, queries, database)
        else:  # a smoke run: the metric of the extracted subset only
            log.warning("%s: only %d queries and %d database images were extracted (limited batches): metrics on that subset",
                        split, len(queries), len(database))
            results = datamodule.evaluate(split, queries, database, query_indices=query_items, database_indices=database_items)
        for name, value in results.items():
            self.log(f"{split}/{name}", float(value), prog_bar=name == "map", sync_dist=True)
        if split == "val":
            for name, value in results.items():
                self.best_metrics[name] = max(self.best_metrics.get(name, float("-inf")), float(value))
            if "map" in self.best_metrics:
                self.log("val/map_best", self.best_metrics["map"], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._finish_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_retrieval("test")

    # -- optimisation -------------------------------------------------------------------
    def _parameter_groups(self) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        factory = self.optimizer_factory or partial(torch.optim.Adam, lr=1e-6, weight_decay=1e-6)
        groups = self._parameter_groups()
        optimizer = factory(params=groups)
        for group, spec in zip(optimizer.param_groups, groups):
            if "lr_multiplier" in spec:  # relative to the optimizer's lr, before any scheduler
                group["lr"] = optimizer.defaults["lr"] * spec["lr_multiplier"]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_metrics"] = dict(self.best_metrics)
        try:  # the recipe retrieval.api.Retriever.from_checkpoint rebuilds the network from
            checkpoint["net_config"] = describe_net(self.net)
        except ValueError as exc:  # a custom network: the checkpoint still restores with the config
            log.warning("checkpoint without net_config (%s): Retriever.from_checkpoint cannot load it", exc)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_metrics = dict(checkpoint.get("best_metrics", {}))


class RetrievalFineTuneModule(_RetrievalModule):
    """Deep Image Retrieval / cirtorch fine-tuning of a :class:`~retrieval.nets.retrieval_net.RetrievalNet` on tuples.

    Train batches: ``{"images": (B, 2 + N, 3, S, S), "labels": (B, 2 + N)}`` (labels -1 query,
    1 positive, 0 negatives). At the start of every training epoch the module calls
    ``trainer.datamodule.mine(self.embed)`` when the datamodule has ``mine``.

    Args:
        net: the network.
        loss: ``contrastive`` (cirtorch's squared form, summed) or ``triplet``.
        margin: 0.7 for contrastive (cirtorch default), e.g. 0.1/0.5 for triplet.
        optimizer: partial optimizer (cirtorch: Adam lr 1e-6, wd 1e-6).
        scheduler: partial LR scheduler stepped every epoch (cirtorch: ExponentialLR exp(-0.01)).
        pool_lr_multiplier: GeM's p learns at this multiple of the lr, without weight decay (10).
        freeze_bn: BatchNorm in eval mode while training (cirtorch ``set_batchnorm_eval``).
        eval_scales: extraction scales for validation/test (cirtorch ms: ``[1, 1/sqrt2, 1/2]``).
    """

    def __init__(
        self,
        net: RetrievalNet,
        loss: str = "contrastive",
        margin: float = 0.7,
        optimizer=None,
        scheduler=None,
        pool_lr_multiplier: float = 10.0,
        freeze_bn: bool = True,
        eval_scales: tuple[float, ...] = (1.0,),
    ) -> None:
        super().__init__(optimizer, scheduler, eval_scales)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss_fn = LOSSES[loss]
        self.train()  # Lightning restores the modes it captured: start frozen

    def _apply_frozen_modes(self) -> None:
        if self.hparams.freeze_bn:
            freeze_batchnorm(self.net)

    def on_train_epoch_start(self) -> None:
        self._apply_frozen_modes()
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "mine"):
            datamodule.mine(self.embed)

    def training_step(self, batch, batch_idx):
        images, labels = batch["images"], batch["labels"]
        if images.dim() != 5 or labels.shape != images.shape[:2]:
            raise ValueError(f"expected images (B, T, 3, S, S) and labels (B, T), got {tuple(images.shape)}, {tuple(labels.shape)}")
        batch_size, tuple_size = labels.shape
        embeddings = self.net(images.flatten(0, 1)).view(batch_size, tuple_size, -1)
        loss = self.loss_fn(embeddings, labels, self.hparams.margin)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        with torch.no_grad():
            query = embeddings[labels == -1].unsqueeze(1)
            distances = (embeddings - query).norm(dim=-1)
            self.log("train/positive_distance", distances[labels == 1].mean(), batch_size=batch_size)
            self.log("train/negative_distance", distances[labels == 0].mean(), batch_size=batch_size)
        return loss

    def _parameter_groups(self) -> list[dict]:
        pool_params = [p for m in self.net.modules() if isinstance(m, GeM) for p in m.parameters() if p.requires_grad]
        pool_ids = {id(p) for p in pool_params}
        others = [p for p in self.net.parameters() if p.requires_grad and id(p) not in pool_ids]
        groups = [{"params": others}]
        if pool_params:
            groups.append({"params": pool_params, "weight_decay": 0.0, "lr_multiplier": self.hparams.pool_lr_multiplier})
        return groups


class RegionalAttentionModule(_RetrievalModule):
    """Classification training of the regional attention (Kim & Yoon) with a frozen backbone.

    Train (and classification val) batches: ``{"image": (B, 3, S, S), "label": (B,)}``. The
    classifier is the backbone's pretrained ImageNet fc (``num_classes=None``, frozen; the
    labels must then be ImageNet's) or a new linear layer for ``num_classes`` labels trained
    jointly with the attention. Only the attention (and the new classifier) gets gradients;
    the backbone stays in eval mode. Retrieval validation/test is the fine-tune module's
    (two loaders + ``evaluate``); a classification val loader logs ``val/accuracy``, ``val/loss``.

    Args:
        net: a :class:`~retrieval.nets.attention.RegionalAttentionNet`.
        num_classes: None (pretrained fc), the size of a new label set, or ``"datamodule"``: a new
            linear classifier sized in ``setup()`` from ``trainer.datamodule.num_classes`` (before
            any checkpoint is restored), for label sets whose size depends on a data split.
        optimizer: partial optimizer (reference: SGD lr 1e-3, momentum 0.9, wd 5e-5).
    """

    def __init__(
        self,
        net: RegionalAttentionNet,
        num_classes: int | str | None = None,
        optimizer=None,
        scheduler=None,
        eval_scales: tuple[float, ...] = (1.0,),
    ) -> None:
        super().__init__(optimizer or partial(torch.optim.SGD, lr=1e-3, momentum=0.9, weight_decay=5e-5), scheduler, eval_scales)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.classifier: nn.Module | None
        if num_classes == "datamodule":
            self.classifier = None  # built in setup()
        elif isinstance(num_classes, str):
            raise ValueError(f"num_classes must be an int, null or 'datamodule', got {num_classes!r}")
        elif num_classes is None:
            if net.backbone.classifier is None:
                raise ValueError(f"{net.backbone.name} has no pretrained classifier on pooled features; set num_classes")
            self.classifier = net.backbone.classifier
            self.classifier.requires_grad_(False)
        else:
            self.classifier = nn.Linear(net.backbone.out_channels, num_classes)
        net.backbone.requires_grad_(False)
        if net.region_whiten is not None:  # a PCA learned beforehand; unused by the classification loss
            net.region_whiten.requires_grad_(False)
        self.train()  # Lightning restores the modes it captured: start frozen

    def _apply_frozen_modes(self) -> None:
        self.net.backbone.eval()  # frozen: BatchNorm statistics and dropout fixed

    def on_train_epoch_start(self) -> None:
        self._apply_frozen_modes()

    def setup(self, stage: str) -> None:
        expected = getattr(self.trainer.datamodule, "num_classes", None)
        if self.classifier is None:
            if expected is None:
                raise ValueError("num_classes='datamodule' needs a datamodule with num_classes")
            self.classifier = nn.Linear(self.net.backbone.out_channels, int(expected))
            return
        if stage == "fit" and expected is not None and expected != self.classifier.out_features:
            raise ValueError(
                f"the datamodule has {expected} classes but the classifier predicts {self.classifier.out_features}; "
                f"set model.num_classes={expected}"
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.net.classification_features(images))

    def training_step(self, batch, batch_idx):
        logits = self.logits(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        batch_size = len(batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/accuracy", (logits.argmax(1) == batch["label"]).float().mean(), batch_size=batch_size)
        return loss

    def _classification_step(self, batch: dict, split: str) -> None:
        logits = self.logits(batch["image"])
        batch_size = len(batch["label"])
        self.log(f"{split}/loss", F.cross_entropy(logits, batch["label"]), batch_size=batch_size, sync_dist=True)
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        self.log(f"{split}/accuracy", accuracy, prog_bar=True, batch_size=batch_size, sync_dist=True)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if "label" in batch:
            self._classification_step(batch, "val")
        else:
            self._retrieval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if "label" in batch:
            self._classification_step(batch, "test")
        else:
            self._retrieval_step(batch, "test", dataloader_idx)

    def figures(self, batch: dict) -> dict:
        """The attention over the R-MAC grid of the first validation images (FigureLogger)."""
        from .plots import plot_region_attention

        return {"region_attention": plot_region_attention(self.net, batch["image"][:4].to(self.device))}


# -- the regional attention on cached region features --------------------------------------------
def fit_classifier(
    regions: list[tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor, n_classes: int, epochs: int = 100,
    lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
) -> nn.Linear:
    """A linear classifier on the plain mean of the regional MACs (full-batch Adam), then frozen."""
    torch.manual_seed(seed)
    maxima, _, mask = pad_regions(regions)
    features = attention_pool(maxima, mask, mask)  # the plain mean of the real regions
    classifier = nn.Linear(features.shape[1], n_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(classifier(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.requires_grad_(False)


def train_attention(
    regions: list[tuple[torch.Tensor, torch.Tensor]],
    global_mean: torch.Tensor,
    labels: torch.Tensor,
    context: bool,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 1e-3,
    weight_decay: float = 5e-5,
    batch_size: int = 64,
    seed: int = 0,
    classifier: nn.Linear | None = None,
    select: Callable[[RegionalAttention], float] | None = None,
) -> tuple[RegionalAttention, dict]:
    """Kim & Yoon's classification training on cached region features (the backbone is frozen by
    construction): logits = fc(weighted mean of the raw regional MACs), the loss of
    :class:`RegionalAttentionModule` (same :func:`~retrieval.nets.attention.attention_pool`)
    without the backbone pass: full-batch features, Adam, shuffled mini-batches.

    ``classifier``: a fitted, frozen fc (Kim & Yoon keep the pretrained fc frozen), so only the
    attention learns; None: a new linear classifier learns jointly with the attention (it can
    fit small training sets alone, leaving the attention little to learn).
    ``select``: a score of the attention on held-out groups (higher is better; the benchmark
    passes the validation mAP), measured after every epoch: the epoch with the best score is
    kept (early stopping: a few hundred training images are fitted within ~15 epochs, later
    epochs learn the training brands and lose the novel ones).
    Returns the attention and its training statistics (train accuracy with uniform weights and
    after training; with ``select`` the kept epoch and the score of every epoch).
    """
    torch.manual_seed(seed)
    maxima, means, mask = pad_regions(regions)
    channels = maxima.shape[-1]
    attention = RegionalAttention(channels, context=context, hidden=hidden)
    joint = classifier is None
    classifier = nn.Linear(channels, int(labels.max()) + 1) if joint else classifier
    parameters = [*attention.parameters(), *(classifier.parameters() if joint else [])]
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        uniform_accuracy = float((classifier(attention_pool(maxima, mask, mask)).argmax(1) == labels).float().mean())

    def logits_of(idx):
        weights = attention(means[idx], global_mean[idx] if context else None) * mask[idx]
        return classifier(attention_pool(maxima[idx], weights, mask[idx]))

    scores: list[float] = []
    best_state, best_epoch = None, epochs
    for epoch in tqdm(range(1, epochs + 1), desc=f"attention{' + context' if context else ''}", leave=False, mininterval=2):
        attention.train()
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            loss = F.cross_entropy(logits_of(idx), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if select is not None:
            scores.append(float(select(attention.eval())))
            if best_state is None or scores[-1] > max(scores[:-1]):  # ties keep the earlier epoch
                best_state, best_epoch = copy.deepcopy(attention.state_dict()), epoch
    if best_state is not None:
        attention.load_state_dict(best_state)
    attention.eval()
    with torch.no_grad():
        logits = logits_of(torch.arange(len(labels)))
        stats = {
            "classifier": "joint" if joint else "frozen",
            "train_accuracy_uniform": uniform_accuracy if not joint else None,
            "train_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "train_loss": float(F.cross_entropy(logits, labels)),
            "epochs": epochs,
        }
    if select is not None:
        stats.update(selected_epoch=best_epoch, val_map=round(max(scores), 4), val_map_per_epoch=[round(v, 4) for v in scores])
    return attention, stats
