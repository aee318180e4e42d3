"""LightningModules that train the patch networks and evaluate them by FPR95.

- :class:`MetricLearningModule`: pair -> score networks (MatchNet, DeepCompare, SNet-GLoss).
- :class:`DescriptorModule`: patch -> descriptor networks (DeepDesc, TFeat, TNet, L2-Net,
  CS/binary L2-Net, HardNet), compared by L2 or Hamming distance.

Batches are dicts of float tensors in [0, 1], patches ``(B, 1, 64, 64)`` (see the brief's
contract): train ``{"patch1", "patch2", "label"}`` (pairs), ``{"anchor", "positive",
"negative"}`` (triplets) or ``{"anchor", "positive"}`` (one pair per 3D point, in-batch
negatives); val/test ``{"patch1", "patch2", "label"}``. Patches are resized to the network's
``patch_size`` with ``F.interpolate(bilinear, align_corners=False)``.
"""

from __future__ import annotations

import math
from functools import partial

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from core.distributed import gather_in_sample_order

from . import losses as L
from .evaluate import fpr_at_recall, roc_points
from .nets import CSL2Net, MatchNet, hamming_from_signs, network_spec
from .plots import plot_roc_points

METRIC_LOSSES = ("softmax_ce", "hinge", "gloss_pair")
PAIR_LOSSES = ("pair_hinge", "gloss_pair")
TRIPLET_LOSSES = ("triplet_margin", "ratio", "gloss_triplet", "tloss", "tgloss")
POINT_LOSSES = ("hardnet", "l2net")
DESCRIPTOR_LOSSES = PAIR_LOSSES + TRIPLET_LOSSES + POINT_LOSSES
BATCH_KEYS = {
    **{name: ("patch1", "patch2", "label") for name in PAIR_LOSSES},
    **{name: ("anchor", "positive", "negative") for name in TRIPLET_LOSSES},
    **{name: ("anchor", "positive") for name in POINT_LOSSES},
}


def resize_patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size x size`` (HardNet's cv2 INTER_LINEAR 64 -> 32); no-op if equal."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def random_dihedral(*patches: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """One of the 8 rotations/flips per sample, the same for every tensor of the tuple
    (HardNet ``--fliprot``, the "+" augmentation of L2-Net / DeepCompare).

    Shape:
        each (B, C, H, H) -> (B, C, H, H)
    """
    batch = patches[0].shape[0]
    choice = torch.randint(0, 8, (batch,), generator=generator).to(patches[0].device)
    outputs = [p.clone() for p in patches]
    for k in range(1, 8):
        mask = choice == k
        if not mask.any():
            continue
        for out, source in zip(outputs, patches):
            x = torch.rot90(source[mask], k % 4, dims=(-2, -1))
            out[mask] = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return tuple(outputs)


def linear_decay(step: int, total_steps: float) -> float:
    """HardNet's ``adjust_learning_rate``: lr factor ``1 - step / total``, floored at 0."""
    return max(0.0, 1.0 - step / total_steps) if math.isfinite(total_steps) and total_steps > 0 else 1.0


class PatchMatchingModule(pl.LightningModule):
    """Shared optimisation, evaluation (FPR95 over the whole epoch, DDP-gathered) and figures.

    Args:
        net: the network.
        optimizer: partial optimizer (``torch.optim.SGD`` with lr, ...), called with the parameters.
        scheduler: optional partial LR scheduler, stepped every epoch (TFeat's ``StepLR``).
        lr_decay: ``"linear"``: HardNet's per-iteration decay to 0 over the run (a ``LambdaLR``
            stepped every step; the total comes from the trainer when training starts).
        lr_decay_steps: the total for ``lr_decay`` instead of the trainer's estimate.
        augment: random rotation/flip of each training tuple (the same for its patches); pairs
            of a metric network are also swapped at random (DeepCompare).
    """

    def __init__(self, net, optimizer=None, scheduler=None, lr_decay: str | None = None, lr_decay_steps: int | None = None, augment: bool = False) -> None:
        super().__init__()
        if lr_decay not in (None, "linear"):
            raise ValueError(f"lr_decay must be null or 'linear', got {lr_decay!r}")
        if lr_decay and scheduler is not None:
            raise ValueError("give either scheduler (per epoch) or lr_decay (per step), not both")
        self.net = net
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        self._outputs: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        self.last_results: dict[str, dict] = {}
        self.roc_history: list[dict] = []
        self.best_fpr95 = math.inf
        self._total_steps: float | None = None

    # -- helpers ----------------------------------------------------------------------------
    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        return resize_patches(x, self.net.patch_size)

    def _augment(self, *patches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return random_dihedral(*patches) if self.hparams.augment else patches

    def _check_keys(self, batch: dict, keys: tuple[str, ...], what: str) -> None:
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"{type(self).__name__} with {what} needs batch keys {keys}, missing {missing} (got {sorted(batch)})")

    # -- evaluation -------------------------------------------------------------------------
    def pair_distances(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        """Distances of labelled pairs, lower = more similar (subclasses)."""
        raise NotImplementedError

    def _evaluate_batch(self, batch: dict, split: str) -> None:
        self._check_keys(batch, ("patch1", "patch2", "label"), f"{split} batches")
        distances = self.pair_distances(batch["patch1"], batch["patch2"])
        self._outputs[split].append(torch.stack([distances.float(), batch["label"].float()], dim=1).detach())

    def validation_step(self, batch, batch_idx):
        self._evaluate_batch(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate_batch(batch, "test")

    def _dataset_size(self, split: str) -> int | None:
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        try:
            return len(loaders.dataset)
        except (AttributeError, TypeError):
            return None

    def _finish_epoch(self, split: str) -> None:
        if not self._outputs[split]:
            return
        local = torch.cat(self._outputs[split])
        self._outputs[split].clear()
        # FPR95 needs every pair of the epoch: gather across DDP ranks first.
        gathered = gather_in_sample_order(self, local, lambda: self._dataset_size(split))
        distances, labels = gathered[:, 0].cpu().numpy(), gathered[:, 1].cpu().numpy()
        if np.isnan(distances).any():
            # a diverged network: rank its NaN pairs last instead of failing the run
            rank_zero_warn(f"{split}: {int(np.isnan(distances).sum())} NaN distances counted as +inf")
            distances = np.nan_to_num(distances, nan=np.inf)
        positives = int((labels > 0.5).sum())
        if positives in (0, len(labels)):
            # e.g. the two sanity-check batches of a sorted pair list: no FPR95 to compute
            rank_zero_warn(f"{split}: {len(labels)} pairs of a single class, FPR95 skipped")
            return
        fpr95 = fpr_at_recall(distances, labels, 0.95)
        fpr, tpr = roc_points(distances, labels)
        result = {"fpr95": fpr95, "fpr": fpr, "tpr": tpr, "n_pairs": int(len(labels)), "epoch": self.current_epoch}
        self.last_results[split] = result
        self.log(f"{split}/fpr95", fpr95, prog_bar=True, sync_dist=False)
        if split == "val" and not self.trainer.sanity_checking:
            self.best_fpr95 = min(self.best_fpr95, fpr95)
            self.log("val/fpr95_best", self.best_fpr95, sync_dist=False)
            # ROC of every validation epoch (thinned to <= 256 points) for the figure
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 256)).round().astype(int))
            self.roc_history.append({"epoch": self.current_epoch, "fpr95": fpr95, "fpr": fpr[keep], "tpr": tpr[keep]})

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")

    # -- optimisation -----------------------------------------------------------------------
    def total_training_steps(self) -> float:
        """Steps of the whole run for ``lr_decay``: ``lr_decay_steps``, else the trainer's
        estimate once one is attached (inf before: the LR factor stays 1)."""
        if self.hparams.lr_decay_steps:
            return float(self.hparams.lr_decay_steps)
        if self._total_steps is None:
            if self._trainer is None:
                return math.inf
            self._total_steps = float(self.trainer.estimated_stepping_batches)
        return self._total_steps

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.hparams.lr_decay == "linear":
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_decay(step, self.total_training_steps()))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_fpr95"] = self.best_fpr95
        # class path + constructor arguments: descriptors.api rebuilds the net from the file alone
        checkpoint["network"] = network_spec(self.net)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_fpr95 = checkpoint.get("best_fpr95", math.inf)

    # -- figures (the FigureLogger callback) ------------------------------------------------
    def figures(self, batch) -> dict:
        """ROC curve of the last validation epoch, earlier epochs faded (empty before the first)."""
        if "val" not in self.last_results:
            return {}
        name = type(self.net).__name__
        return {"roc": plot_roc_points({name: self.last_results["val"]}, earlier=self.roc_history[:-1])}


class MetricLearningModule(PatchMatchingModule):
    """Trains a pair -> score network on labelled pairs; FPR95 of ``-score``.

    Args:
        net: a metric network (``kind == "metric"``).
        loss: ``softmax_ce`` (MatchNet), ``hinge`` (DeepCompare) or ``gloss_pair`` (SNet-GLoss,
            on ``1 - similarity``).
        loss_kwargs: keyword arguments of the loss (``margin``, ``weight``).
        Other arguments: see :class:`PatchMatchingModule`.
    """

    def __init__(self, net, loss: str = "hinge", loss_kwargs: dict | None = None, optimizer=None, scheduler=None, lr_decay: str | None = None, lr_decay_steps: int | None = None, augment: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, lr_decay, lr_decay_steps, augment)
        if getattr(net, "kind", None) != "metric":
            raise ValueError(f"MetricLearningModule needs a metric network, got {type(net).__name__}")
        if loss not in METRIC_LOSSES:
            raise ValueError(f"loss must be one of {METRIC_LOSSES}, got {loss!r}")
        if (loss == "softmax_ce") != isinstance(net, MatchNet):
            raise ValueError("softmax_ce goes with MatchNet's two logits, and MatchNet only with softmax_ce")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss_kwargs"], logger=False)
        self.loss_kwargs = dict(loss_kwargs or {})
        self.hparams["loss_kwargs"] = dict(self.loss_kwargs)

    def score_pairs(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        """Similarity of each pair, higher = more alike. Shape: (B, 1, H, W) x 2 -> (B,)."""
        return self.net.scores(self.net(self._resize(patch1), self._resize(patch2)).float())

    def pair_distances(self, patch1, patch2):
        return -self.score_pairs(patch1, patch2)

    def training_step(self, batch, batch_idx):
        self._check_keys(batch, ("patch1", "patch2", "label"), f"loss {self.hparams.loss}")
        patch1, patch2 = self._augment(self._resize(batch["patch1"]), self._resize(batch["patch2"]))
        if self.hparams.augment:  # DeepCompare also swaps the two patches of a pair
            swap = (torch.rand(patch1.shape[0], device=patch1.device) < 0.5).view(-1, 1, 1, 1)
            patch1, patch2 = torch.where(swap, patch2, patch1), torch.where(swap, patch1, patch2)
        labels = batch["label"]
        output = self.net(patch1, patch2).float()  # the loss in float32 under autocast too
        name = self.hparams.loss
        if name == "softmax_ce":
            loss = L.softmax_cross_entropy(output, labels)
        elif name == "hinge":
            loss = L.hinge_loss(output, labels)
        else:
            loss = L.global_loss_pairs(1.0 - output, labels, **self.loss_kwargs)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss


class DescriptorModule(PatchMatchingModule):
    """Trains a patch -> descriptor network; FPR95 of L2 (or Hamming, binary nets) distances.

    Args:
        net: a descriptor network (``kind == "descriptor"``); binary nets (``distance ==
            "hamming"``) train their float descriptors and are binarised for evaluation.
        loss: ``hardnet`` / ``l2net`` (``{"anchor", "positive"}`` batches), ``triplet_margin`` /
            ``ratio`` (TFeat), ``tloss`` / ``tgloss`` / ``gloss_triplet`` (TNet), on
            ``{"anchor", "positive", "negative"}``, or ``pair_hinge`` (DeepDesc) / ``gloss_pair``
            on ``{"patch1", "patch2", "label"}``.
        loss_kwargs: keyword arguments of the loss function in :mod:`descriptors.losses`.
        branch_losses: for central-surround L2-Nets (:class:`CSL2Net`, binary too): the L2-Net
            loss on each tower's 128-d half with its own maps, averaged, instead of once on the
            256-d concatenation (the paper does not say which).
        init_weights: a published network's name (:func:`descriptors.nets.published.load_published`,
            e.g. ``tfeat-liberty``) whose weights are loaded into ``net`` when training starts
            (``setup("fit")``, before a resumed checkpoint is restored): fine-tuning from them.
        weights_root: where the published files lie (None: ``$DEEPMATCH_DATA/weights``).
        Other arguments: see :class:`PatchMatchingModule`.
    """

    def __init__(self, net, loss: str = "hardnet", loss_kwargs: dict | None = None, optimizer=None, scheduler=None, lr_decay: str | None = None, lr_decay_steps: int | None = None, augment: bool = False, branch_losses: bool = False,
                 init_weights: str | None = None, weights_root: str | None = None) -> None:
        super().__init__(net, optimizer, scheduler, lr_decay, lr_decay_steps, augment)
        if branch_losses and (loss != "l2net" or not isinstance(getattr(net, "float_net", net), CSL2Net)):
            raise ValueError("branch_losses needs a central-surround L2-Net (CSL2Net) and loss l2net")
        if getattr(net, "kind", None) != "descriptor":
            raise ValueError(f"DescriptorModule needs a descriptor network, got {type(net).__name__}")
        if loss not in DESCRIPTOR_LOSSES:
            raise ValueError(f"loss must be one of {DESCRIPTOR_LOSSES}, got {loss!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss_kwargs"], logger=False)
        self.loss_kwargs = dict(loss_kwargs or {})
        self.hparams["loss_kwargs"] = dict(self.loss_kwargs)
        self.binary = getattr(net, "distance", "l2") == "hamming"
        self._warned_e2 = False
        # the dimensions E2 decorrelates together: each tower's half on its own under branch_losses
        self._e2_dim = net.descriptor_dim // 2 if branch_losses else net.descriptor_dim

    def setup(self, stage: str) -> None:
        # loaded here, not in __init__: composing a config needs no weights on disk
        if stage == "fit" and self.hparams.init_weights:
            from .nets.published import load_published

            published = load_published(self.hparams.init_weights, self.hparams.weights_root)
            self.net.load_state_dict(published.state_dict())

    # -- descriptors --------------------------------------------------------------------------
    def _train_descriptors(self, x: torch.Tensor, return_features: bool = False):
        # Losses run in float32 even under autocast: HardNet's 0.008 duplicate threshold and
        # 1e-6 distance eps are below bfloat16/float16 resolution.
        if self.binary:
            out = self.net.float_descriptors(x, return_features=return_features)
        else:
            out = self.net(x, return_features=True) if return_features else self.net(x)
        if return_features:
            return out[0].float(), [f.float() for f in out[1]]
        return out.float()

    @torch.no_grad()
    def describe(self, patches: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Descriptors of patches, in eval mode: uint8 ``(N, H, W)`` (HPatches) or float
        ``(N, 1, H, W)`` in [0, 1]; resized to ``patch_size``. Shape: -> (N, descriptor_dim)."""
        was_training = self.net.training
        self.net.eval()
        if patches.dtype == torch.uint8:
            patches = patches.float().div(255.0)
        if patches.dim() == 3:
            patches = patches.unsqueeze(1)
        device = next(self.net.parameters()).device
        chunks = [self.net(self._resize(chunk.to(device))) for chunk in patches.split(batch_size)]
        self.net.train(was_training)
        return torch.cat(chunks) if chunks else patches.new_zeros(0, self.net.descriptor_dim)

    def pair_distances(self, patch1, patch2):
        d1, d2 = self.net(self._resize(patch1)).float(), self.net(self._resize(patch2)).float()
        if self.binary:
            return hamming_from_signs(d1, d2)
        return (d1 - d2).norm(dim=1)

    # -- training -------------------------------------------------------------------------------
    def _l2net_loss(self, anchor, positive, features_anchor=None, features_positive=None, **kwargs) -> torch.Tensor:
        if not self.hparams.get("branch_losses"):
            return L.l2net_loss(anchor, positive, features_anchor, features_positive, **kwargs)
        # CSL2Net: [surround | centre] descriptors, maps = the surround tower's then the centre's
        features_anchor, features_positive = features_anchor or [], features_positive or []
        half, k = anchor.shape[1] // 2, len(features_anchor) // 2
        towers = [(slice(0, half), slice(0, k)), (slice(half, None), slice(k, None))]
        return torch.stack([L.l2net_loss(anchor[:, d], positive[:, d], features_anchor[m], features_positive[m], **kwargs) for d, m in towers]).mean()

    def training_step(self, batch, batch_idx):
        name = self.hparams.loss
        keys = BATCH_KEYS[name]
        self._check_keys(batch, keys, f"loss {name}")
        patches = self._augment(*(self._resize(batch[k]) for k in keys if k != "label"))
        kwargs = self.loss_kwargs
        if name in POINT_LOSSES:
            anchor, positive = patches
            if name == "l2net" and kwargs.get("e2_weight", 1.0) and anchor.shape[0] <= self._e2_dim and not self._warned_e2:
                # the batch correlation matrix has rank < batch: E2 cannot reach 0 and fights E1
                rank_zero_warn(f"L2-Net E2 with {anchor.shape[0]} pairs per batch <= {self._e2_dim} dimensions: use larger batches")
                self._warned_e2 = True
            if name == "l2net" and kwargs.get("e3_weight", 1.0):
                (da, fa), (dp, fp) = self._train_descriptors(anchor, True), self._train_descriptors(positive, True)
                loss = self._l2net_loss(da, dp, fa, fp, **kwargs)
            elif name == "l2net":
                loss = self._l2net_loss(self._train_descriptors(anchor), self._train_descriptors(positive), **kwargs)
            else:
                loss = L.hardnet_loss(self._train_descriptors(anchor), self._train_descriptors(positive), **kwargs)
        elif name in TRIPLET_LOSSES:
            descriptors = [self._train_descriptors(p) for p in patches]
            loss = L.LOSSES[name](*descriptors, **kwargs)
        else:
            d1, d2 = (self._train_descriptors(p) for p in patches)
            labels = batch["label"]
            if name == "pair_hinge":
                loss = L.pairwise_hinge_loss(L.pair_distances(d1, d2), labels, **kwargs)
            else:
                loss = L.global_loss_pairs(L.squared_quarter_distance(d1, d2), labels, **kwargs)
        self.log("train/loss", loss, prog_bar=True, batch_size=patches[0].shape[0])
        return loss
