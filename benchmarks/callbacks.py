"""Callbacks shared by every family."""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class FigureLogger(pl.Callback):
    """After validation, ask the module for figures (``module.figures(batch)`` -> name: matplotlib
    figure), save them as PNG under ``output_dir/figures`` and send them to wandb when it logs.

    Search paths, ROC curves and retrieval grids all go through this one callback. It draws in
    ``on_validation_end``: Lightning runs callbacks' ``on_validation_epoch_end`` before the
    module's, which is where the module computes the epoch's results (``last_results``), so
    drawing there would show the previous epoch's curves.
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, max_items: int = 8) -> None:
        self.output_dir = Path(output_dir)
        self.every_n_epochs = max(1, every_n_epochs)
        self.max_items = max_items
        self._batch = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self._batch = {k: v[: self.max_items] for k, v in batch.items()}

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._batch is None or not hasattr(pl_module, "figures"):
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        import matplotlib.pyplot as plt

        figures = pl_module.figures(self._batch)
        folder = self.output_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            path = folder / f"{name}_epoch{trainer.current_epoch:03d}.png"
            figure.savefig(path, dpi=90)
            plt.close(figure)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"val/{name}", images=[str(path)], step=trainer.global_step)


class EpochMetricsLog(pl.Callback):
    """One line per epoch in the run's log (``train.log``): the epoch's logged metrics.

    Written in ``on_train_epoch_end``, after the epoch's training means and its validation
    results are both in ``trainer.callback_metrics``.
    """

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        text = ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items()))
        log.info("epoch %03d: %s", trainer.current_epoch, text or "(no metrics)")


class ResumableModelCheckpoint(ModelCheckpoint):
    """A :class:`ModelCheckpoint` whose ``last.ckpt`` is always the latest epoch and that keeps
    the best score across a resume into a new run folder.

    Lightning (>= 2.5) rewrites ``last.ckpt`` only when the epoch also entered the top k, so
    after an epoch that did not improve, ``last.ckpt`` is an older state and resuming from it
    repeats epochs. Here it is written after every validation (or training epoch end, when
    checkpoints are saved there).

    Resuming (``ckpt_path=<old run>/checkpoints/last.ckpt``) writes into a new run folder.
    Lightning's ModelCheckpoint then drops the saved best score and top-k ("dirpath has
    changed"), so the first epoch after resuming becomes "best" whatever its score and the
    run tests the wrong checkpoint. Here the old run's top-k files are linked (or copied)
    into the new folder and the saved scores restored, so the new run folder holds the true
    best checkpoint and the resumed run tests the same epoch as an uninterrupted one.

    Checkpoints written by the plain ModelCheckpoint resume into this one (same state key).
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer) -> None:
        # skipped when this step was saved already (a top-k save writes last.ckpt too)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        saved_dir = state_dict.get("dirpath")
        if self.dirpath is None or saved_dir is None or saved_dir == self.dirpath:
            return super().load_state_dict(state_dict)
        moved = {}
        for old_path in state_dict.get("best_k_models") or {}:
            new_path = self._carry_over(old_path)
            if new_path is None:
                log.warning("resume: %s is gone, so the best score restarts from the resumed epochs", old_path)
                return super().load_state_dict(state_dict)
            moved[old_path] = new_path
        state = dict(state_dict)
        state["dirpath"] = self.dirpath
        state["best_k_models"] = {moved[path]: score for path, score in (state_dict.get("best_k_models") or {}).items()}
        state["best_model_path"] = moved.get(state_dict.get("best_model_path", ""), "")
        state["kth_best_model_path"] = moved.get(state_dict.get("kth_best_model_path", ""), "")
        state["last_model_path"] = ""  # the new run writes its own last.ckpt; the old one stays untouched
        log.info("resume: best checkpoints carried over from %s (best score %s)", saved_dir, state_dict.get("best_model_score"))
        super().load_state_dict(state)

    def _carry_over(self, old_path: str) -> str | None:
        """Hard-link (else copy) an earlier run's checkpoint into this run's folder; None if it is gone."""
        source = Path(old_path)
        if not source.is_file():
            return None
        target = Path(self.dirpath) / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:  # another rank (or an earlier attempt) got there first
            pass
        except OSError:  # another file system, or links not allowed: copy, then publish atomically
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            shutil.copy2(source, partial)
            os.replace(partial, target)
        return str(target)


class RNGStateCheckpoint(pl.Callback):
    """Save the torch / CUDA / numpy / Python random states in every checkpoint and restore
    them on resume, so a resumed run draws the same shuffles and policy noise as an
    uninterrupted one (Lightning saves weights, optimizer, schedulers and loops, not RNG)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Tensors, ints and tuples only: checkpoints must stay loadable with weights_only=True.
        name, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        name, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(states["python"])


class WeightAverage(pl.Callback):
    """Exponential moving average of the module's weights (Polyak averaging), used for validation,
    checkpoints and the model that training leaves behind.

    After every training step ``average = d * average + (1 - d) * weights`` over the state dict's
    floating tensors (parameters and BatchNorm statistics; integer buffers are copied), with
    ``d = min(decay, (1 + n) / (10 + n))`` after n steps when ``warmup`` is set, so that short
    runs average over most of their steps instead of keeping the initial weights. Validation
    during fitting (and the checkpoint written after it) sees the average; the raw weights come
    back before the next training step, so the optimiser never trains the average. The callback's
    checkpoint state holds the average and, when saved while swapped in, the raw weights, so a
    resumed run continues from the same raw weights.

    Args:
        decay: the average's per-step decay in [0, 1).
        warmup: ramp the decay up from 0.1 over the first steps (see above).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self._average: dict[str, torch.Tensor] | None = None
        self._raw: dict[str, torch.Tensor] | None = None

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @staticmethod
    def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in module.state_dict().items()}

    def _swap_in(self, module: torch.nn.Module) -> None:
        if self._raw is None and self._average is not None and self.updates > 0:
            self._raw = self._snapshot(module)
            module.load_state_dict(self._average)

    def _swap_out(self, module: torch.nn.Module) -> None:
        if self._raw is not None:
            module.load_state_dict(self._raw)
            self._raw = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self._average is None:
            self._average = self._snapshot(pl_module)
        else:  # resumed: the loaded average (and raw weights) go to the module's device
            device = next(iter(pl_module.state_dict().values())).device
            self._average = {k: v.to(device) for k, v in self._average.items()}
            if self._raw is not None:
                self._raw = {k: v.to(device) for k, v in self._raw.items()}
        self._swap_out(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._swap_out(pl_module)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        decay = self.current_decay()
        for name, value in pl_module.state_dict().items():
            average = self._average[name]
            if average.is_floating_point():
                average.lerp_(value.detach(), 1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._swap_in(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        # the trained model is the average (what the last checkpoint holds, too)
        self._swap_in(pl_module)
        self._raw = None

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self._average, "raw": self._raw}

    def load_state_dict(self, state_dict: dict) -> None:
        self.updates = int(state_dict["updates"])
        self._average = state_dict["average"]
        self._raw = state_dict.get("raw")
