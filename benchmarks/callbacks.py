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
