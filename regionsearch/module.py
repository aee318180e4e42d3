"""LightningModule that trains and evaluates :class:`~regionsearch.nets.search_path.SearchPathMatcher`."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import torch

from core.distributed import gather_in_sample_order

from .evaluate import IOU_THRESHOLDS, box_iou, summarize_ious
from .losses import baseline_loss, contrastive_loss, discounted_returns, reinforce_loss
from .nets.search_path import SearchPathMatcher

REWARDS = ("success", "iou")
CREDITS = ("final", "steps")


class RegionSearchModule(pl.LightningModule):
    """REINFORCE (reward: IoU of the final window > 0.5) + learned baseline + contrastive loss.

    Args:
        net: the matcher.
        optimizer: a partial optimizer (``torch.optim.Adam`` with lr, ...), called with the parameters.
        scheduler: optional partial LR scheduler, stepped every epoch.
        reward: ``success`` (the paper: 1 if IoU > ``iou_threshold``) or ``iou`` (dense shaping, an ablation).
        rl_weight, baseline_weight, contrastive_weight: loss weights.
        margin: contrastive margin m on L2-normalised features.
        rollouts: policy samples drawn per training pair (Monte-Carlo rollouts share the pair).
        contrastive_on: ``final`` (the answer window only) or ``path`` (every window after
            the whole-reference view, each labelled by its own IoU > threshold): the poster
            does not say which; ``path`` gives the features many more positive/negative pairs.
        discrimination_weight: weight of an auxiliary feature loss that uses what the canvas
            generator knows (batches with ``"distractors"`` boxes, Cluttered-and-Mixed MNIST):
            the contrastive loss between the query and the ground-truth window (positive)
            and the windows on the distractor digits (hard negatives, other classes), so
            the encoder learns to tell the query's class from the other digits whatever
            the policy visits. 0 = off (the paper's losses only).
        discrimination_jitter: those windows are shifted by up to this many pixels (uniform
            integers, per axis), so the features tolerate an inexact window.
        warmup_epochs: epochs at the start that train only the feature losses (contrastive,
            discrimination), with no policy gradient: the policy then learns on features
            that already separate the classes.
        credit: ``final`` (the paper: the answer's reward is credited to every move) or
            ``steps``: every window t = 1..T earns its own reward and move t is credited
            with the discounted return ``sum_{k >= t} discount^(k-t) r_k``, divided by
            ``sum_k discount^k`` so that it stays in [0, 1] like the final reward (the
            baseline predicts it); a path that finds the target early is paid for it.
        discount: the discount of ``credit=steps``.
        map_weight: weight of a cross-entropy that teaches the categorical first move
            (``first_move=map`` matchers) the map cell nearest the target's centre, next
            to its policy gradient; 0 = REINFORCE only.
    """

    def __init__(
        self,
        net: SearchPathMatcher,
        optimizer=None,
        scheduler=None,
        reward: str = "success",
        iou_threshold: float = 0.5,
        rl_weight: float = 1.0,
        baseline_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        margin: float = 0.5,
        rollouts: int = 1,
        contrastive_on: str = "final",
        discrimination_weight: float = 0.0,
        discrimination_jitter: int = 0,
        warmup_epochs: int = 0,
        credit: str = "final",
        discount: float = 1.0,
        map_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount}")
        if contrastive_on not in ("final", "path"):
            raise ValueError(f"contrastive_on must be final or path, got {contrastive_on!r}")
        # Partials and the net stay out of the checkpoint: it must load with weights_only=True.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        self._outputs: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        self._windows: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        self.best_success = 0.0
        self.last_results: dict[str, dict] = {}

    # -- training -------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        query, reference, truth = batch["query"], batch["reference"], batch["box"]
        distractors = batch.get("distractors")
        rollouts = self.hparams.rollouts
        if rollouts > 1:
            query, reference, truth = (x.repeat_interleave(rollouts, dim=0) for x in (query, reference, truth))
        sizes = valid_sizes(batch, rollouts)
        out = self.net(query, reference, sample=True, final_feature=self.hparams.contrastive_weight > 0, **sizes)
        iou = box_iou(out.boxes, truth).detach()
        matched = iou > self.hparams.iou_threshold
        reward = matched.float() if self.hparams.reward == "success" else iou.float()
        if self.hparams.credit == "steps":
            reward = self.step_returns(out.windows[1:], truth)
        losses = {
            "rl": reinforce_loss(out.log_probs, out.baselines, reward),
            "baseline": baseline_loss(out.baselines, reward),
        }
        if out.final_feature is not None:
            window_features, window_matched = out.final_feature, matched
            if self.hparams.contrastive_on == "path":
                seen = torch.cat([out.window_features[1:], out.final_feature.unsqueeze(0)])  # (T, B, D)
                window_ious = box_iou(out.windows[1:], truth.unsqueeze(0).expand_as(out.windows[1:])).detach()
                window_features, window_matched = seen.flatten(0, 1), (window_ious > self.hparams.iou_threshold).flatten()
            query_features = out.query_feature.repeat(len(window_features) // len(out.query_feature), 1)
            losses["contrastive"] = contrastive_loss(query_features, window_features, window_matched, self.hparams.margin)
        if self.hparams.discrimination_weight > 0 and distractors is not None and distractors.shape[1] > 0:
            # repeat_interleave keeps each pair's rollouts together: every rollouts-th query is the pair's own
            losses["discrimination"] = self.discrimination_loss(out.query_feature[::rollouts], batch["reference"], batch["box"], distractors)
        if self.hparams.map_weight > 0 and out.first_logits is not None:
            losses["map"] = map_loss(out.first_logits, out.first_centres, truth)
        weights = {
            "map": self.hparams.map_weight,
            "rl": 0.0 if self.current_epoch < self.hparams.warmup_epochs else self.hparams.rl_weight,
            "baseline": self.hparams.baseline_weight,
            "contrastive": self.hparams.contrastive_weight,
            "discrimination": self.hparams.discrimination_weight,
        }
        loss = sum(weights[name] * value for name, value in losses.items())
        batch_size = query.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        self.log("train/success_rate", matched.float().mean(), prog_bar=True, batch_size=batch_size)
        self.log("train/mean_iou", iou.float().mean(), batch_size=batch_size)
        return loss

    def step_returns(self, windows: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Normalised discounted returns of the windows each move produced (``credit=steps``).

        Shape:
            windows: (T, B, 4); truth: (B, 4) -> (T, B) in [0, 1]
        """
        ious = box_iou(windows, truth.unsqueeze(0).expand_as(windows)).detach().float()
        rewards = (ious > self.hparams.iou_threshold).float() if self.hparams.reward == "success" else ious
        discount = self.hparams.discount
        # the return of move t has T - t terms: normalise each by its own maximum
        horizon = torch.arange(len(windows), 0, -1, device=windows.device, dtype=torch.float32)
        scale = horizon if discount == 1.0 else (1 - discount**horizon) / (1 - discount)
        return discounted_returns(rewards, discount) / scale.unsqueeze(1)

    def discrimination_loss(self, query_feature: torch.Tensor, reference: torch.Tensor, truth: torch.Tensor, distractors: torch.Tensor) -> torch.Tensor:
        """Contrastive loss of the query against its true window (positive) and the K
        distractor windows (negatives), all encoded in one pass.

        Shape:
            query_feature: (B, D); reference: (B, C, H, W); truth: (B, 4); distractors: (B, K, 4) -> scalar
        """
        batch, count = distractors.shape[0], distractors.shape[1] + 1
        boxes = torch.cat([truth.unsqueeze(1), distractors], dim=1)  # (B, 1 + K, 4), positive first
        jitter = self.hparams.discrimination_jitter
        if jitter > 0:
            shift = torch.randint(-jitter, jitter + 1, (batch, count, 2), device=boxes.device).to(boxes.dtype)
            boxes = boxes + shift.repeat(1, 1, 2)
        index = torch.arange(batch, device=reference.device).repeat_interleave(count)
        features = self.net.encode(reference, boxes.flatten(0, 1), batch_index=index)
        matched = torch.zeros(batch, count, dtype=torch.bool, device=boxes.device)
        matched[:, 0] = True
        return contrastive_loss(query_feature.repeat_interleave(count, dim=0), features, matched.flatten(), self.hparams.margin)

    # -- evaluation -----------------------------------------------------------------
    def _evaluate_batch(self, batch, split: str) -> None:
        out = self.net(batch["query"], batch["reference"], sample=False, **valid_sizes(batch))
        if out.windows_evaluated is not None:
            self._windows[split].append(out.windows_evaluated.detach())
        # IoU of every window on the path: the last row is the answer, earlier rows give "success vs steps".
        ious = box_iou(out.windows, batch["box"].unsqueeze(0).expand_as(out.windows)).float()
        self._outputs[split].append(ious.T.detach())

    def validation_step(self, batch, batch_idx):
        self._evaluate_batch(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate_batch(batch, "test")

    def _finish_epoch(self, split: str) -> None:
        if not self._outputs[split]:
            return
        local = torch.cat(self._outputs[split])
        self._outputs[split].clear()
        # FPR95/mAP-style epoch metrics need every sample: gather across DDP ranks first.
        gathered = gather_in_sample_order(self, local, lambda: self._dataset_size(split))
        path_ious = gathered.cpu().numpy()  # (N, T+1)
        results = summarize_ious(path_ious, self.hparams.iou_threshold)
        counted = self._windows[split]
        results["windows_per_query"] = float(torch.cat(counted).mean()) if counted else float(self.net.steps)
        counted.clear()
        self.last_results[split] = results
        for name in ("success_rate", "mean_iou", "auc", "windows_per_query"):
            self.log(f"{split}/{name}", results[name], prog_bar=name == "success_rate", sync_dist=False)
        if split == "val" and not self.trainer.sanity_checking:
            self.best_success = max(self.best_success, results["success_rate"])
            self.log("val/success_rate_best", self.best_success)

    def _dataset_size(self, split: str) -> int | None:
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        try:
            return len(loaders.dataset)
        except (AttributeError, TypeError):
            return None

    def on_validation_epoch_end(self) -> None:
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._finish_epoch("test")

    # -- optimisation ---------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_success"] = self.best_success
        checkpoint["net_config"] = net_config(self.net)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_success = checkpoint.get("best_success", 0.0)

    # -- figures (used by the plot callback) ----------------------------------------
    def figures(self, batch) -> dict:
        from .plots import (  # here: importing plots switches matplotlib to Agg
            plot_search_paths,
            plot_success_curves,
        )

        with torch.no_grad():
            out = self.net(batch["query"][:8], batch["reference"][:8], sample=False, **{k: v[:8] for k, v in valid_sizes(batch).items()})
        figures = {"search_paths": plot_search_paths(batch["query"][:8], batch["reference"][:8], batch["box"][:8], out.windows)}
        if "val" in self.last_results:
            figures["success_curve"] = plot_success_curves({"search path": self.last_results["val"]["curve"]}, IOU_THRESHOLDS)
        return figures


def valid_sizes(batch: dict, rollouts: int = 1) -> dict:
    """The valid ``(height, width)`` of padded real-photo batches (``query_size``, ``reference_size``), if any."""
    return {k: batch[k].repeat_interleave(rollouts, dim=0) for k in ("query_size", "reference_size") if k in batch}


def map_loss(logits: torch.Tensor, centres: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the first move's map against the cell whose centre is nearest the target's.

    Shape:
        logits: (B, M); centres: (M, 2) or per sample (B, M, 2), reference (x, y); truth: (B, 4) -> scalar
    """
    target_centre = (truth[:, :2] + truth[:, 2:]) / 2
    if centres.dim() == 3:
        nearest = torch.cdist(target_centre.float().unsqueeze(1), centres.float()).squeeze(1).argmin(dim=1)
    else:
        nearest = torch.cdist(target_centre.float(), centres.float()).argmin(dim=1)
    return torch.nn.functional.cross_entropy(logits, nearest)


def net_config(net: SearchPathMatcher) -> dict:
    """The constructor arguments of a matcher, stored in checkpoints so the API can rebuild it without Hydra."""
    return {
        "in_channels": net.in_channels,
        "glimpse_size": net.glimpse_size,
        "steps": net.steps,
        # the pretrained encoder's output width is the last entry of channels (see SearchPathMatcher)
        "channels": [m.out_channels for m in net.encoder.features if isinstance(m, torch.nn.Conv2d)] if net.encoder_kind == "conv" else [net.encoder.out_dim] * 5,
        "strides": [m.stride[0] for m in net.encoder.features if isinstance(m, torch.nn.Conv2d)] if net.encoder_kind == "conv" else [2] * 5,
        "hidden_size": net.policy.hidden_size,
        "std": net.policy.std,
        "size_mode": net.size_mode,
        "window_size": net.window_size,
        "zoom_steps": net.zoom_steps,
        "min_size": net.min_size,
        "max_size": net.max_size,
        "compare": net.policy.compare,
        "first_glimpse_size": net.first_glimpse_size,
        "context_scales": list(net.context_scales),
        "detach_policy_features": net.detach_policy_features,
        "policy_input_norm": net.policy.input_norm_kind,
        "first_move": net.first_move,
        "map_layer": net.map_layer,
        "relative_moves": net.relative_moves,
        "map_hidden": net.map_hidden,
        "encoder": net.encoder_kind,
        "freeze_encoder": net.freeze_encoder,
        "encoder_block": net.encoder_block,
        "first_view": net.first_view,
        "size_step": net.size_step,
    }
