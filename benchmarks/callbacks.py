"""Callbacks shared by every family."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class FigureLogger(pl.Callback):
    """After validation, ask the module for figures (``module.figures(batch)`` -> name: matplotlib
    figure), save them as PNG under ``output_dir/figures`` and send them to wandb when it logs.

    Search paths, ROC curves and retrieval grids all go through this one callback.
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
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
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
