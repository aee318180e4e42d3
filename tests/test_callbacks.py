"""benchmarks.callbacks.WeightAverage: the average by hand, swapping, resume, a real fit."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch

from benchmarks.callbacks import WeightAverage


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.norm = torch.nn.BatchNorm1d(1)


def _fitting(sanity: bool = False):
    return SimpleNamespace(state=SimpleNamespace(fn="fit"), sanity_checking=sanity)


def _set(module: Tiny, value: float) -> None:
    with torch.no_grad():
        module.linear.weight.fill_(value)
        module.norm.num_batches_tracked.fill_(int(value))


def test_average_matches_hand_computation_and_swaps():
    module, callback = Tiny(), WeightAverage(decay=0.5, warmup=False)
    _set(module, 0.0)
    callback.on_train_start(None, module)
    for value in (4.0, 8.0):  # two "steps": average 0 -> 2 -> 5
        callback.on_train_batch_start(None, module, None, 0)
        _set(module, value)
        callback.on_train_batch_end(None, module, None, None, 0)
    callback.on_validation_start(_fitting(), module)
    assert torch.allclose(module.linear.weight, torch.full((1, 2), 5.0))
    assert module.norm.num_batches_tracked.item() == 8  # integer buffers are copied, not averaged
    callback.on_train_batch_start(None, module, None, 0)  # raw weights back before training
    assert torch.allclose(module.linear.weight, torch.full((1, 2), 8.0))
    callback.on_train_end(None, module)  # the trained model is the average
    assert torch.allclose(module.linear.weight, torch.full((1, 2), 5.0))


def test_warmup_decay_and_sanity_check():
    callback = WeightAverage(decay=0.999)
    assert callback.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    callback.updates = 90
    assert callback.current_decay() == pytest.approx(0.91)
    callback.updates = 10**6
    assert callback.current_decay() == 0.999
    module, fresh = Tiny(), WeightAverage()
    fresh.on_train_start(None, module)
    before = module.linear.weight.clone()
    _set(module, 3.0)
    fresh.on_validation_start(_fitting(sanity=True), module)  # no swap before any step
    assert torch.allclose(module.linear.weight, torch.full((1, 2), 3.0)) and not torch.equal(before, module.linear.weight)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(decay=1.0)


def test_state_saved_while_swapped_resumes_raw_weights():
    module, callback = Tiny(), WeightAverage(decay=0.5, warmup=False)
    _set(module, 0.0)
    callback.on_train_start(None, module)
    _set(module, 6.0)
    callback.on_train_batch_end(None, module, None, None, 0)
    callback.on_validation_start(_fitting(), module)  # the checkpoint is written now: average in the module
    state, saved_weights = callback.state_dict(), {k: v.clone() for k, v in module.state_dict().items()}
    resumed_module, resumed = Tiny(), WeightAverage(decay=0.5, warmup=False)
    resumed_module.load_state_dict(saved_weights)
    resumed.load_state_dict(state)
    resumed.on_train_start(None, resumed_module)
    assert torch.allclose(resumed_module.linear.weight, torch.full((1, 2), 6.0))  # raw, not the average 3
    assert resumed.updates == 1 and torch.allclose(resumed._average["linear.weight"], torch.full((1, 2), 3.0))


class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.trajectory: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.linear(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.trajectory.append(self.linear.weight.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_leaves_the_average_of_the_trajectory():
    torch.manual_seed(0)
    x = torch.randn(64, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, 3 * x), batch_size=8)
    module, callback = Regression(), WeightAverage(decay=0.6, warmup=False)
    start = module.linear.weight.item()
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)
    expected = start
    for weight in module.trajectory:  # the raw weights after each step
        expected = 0.6 * expected + 0.4 * weight
    assert len(module.trajectory) == 16
    assert module.linear.weight.item() == pytest.approx(expected, rel=1e-6)
    assert abs(module.trajectory[-1] - expected) > 1e-3  # the average is not the last weights


class EpochResults(pl.LightningModule):
    """A module that, like the families', computes its epoch's results in on_validation_epoch_end."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.last_results: dict[str, dict] = {}
        self.drawn: list[tuple[int, int | None]] = []

    def training_step(self, batch, batch_idx):
        return self.linear(batch["x"]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.linear(batch["x"]).pow(2).mean())

    def on_validation_epoch_end(self) -> None:
        self.last_results["val"] = {"epoch": self.current_epoch}

    def figures(self, batch) -> dict:
        import matplotlib.pyplot as plt

        self.drawn.append((self.current_epoch, self.last_results.get("val", {}).get("epoch")))
        return {"curve": plt.figure()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_figure_of_each_epoch_shows_that_epochs_results(tmp_path):
    """Callbacks' on_validation_epoch_end runs before the module's: a figure drawn there would
    show the previous epoch's results (epoch 2's file with epoch 1's curve)."""
    from benchmarks.callbacks import FigureLogger

    loader = torch.utils.data.DataLoader([{"x": torch.randn(1)} for _ in range(8)], batch_size=4)
    module = EpochResults()
    trainer = pl.Trainer(max_epochs=3, callbacks=[FigureLogger(str(tmp_path))], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader, loader)
    assert module.drawn == [(0, 0), (1, 1), (2, 2)]
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == [f"curve_epoch{e:03d}.png" for e in range(3)]


def test_epoch_metrics_log_writes_one_line_per_epoch(caplog):
    from benchmarks.callbacks import EpochMetricsLog

    loader = torch.utils.data.DataLoader([{"x": torch.randn(1)} for _ in range(8)], batch_size=4)
    trainer = pl.Trainer(max_epochs=2, callbacks=[EpochMetricsLog()], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with caplog.at_level("INFO", logger="benchmarks.callbacks"):
        trainer.fit(EpochResults(), loader, loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "benchmarks.callbacks"]
    assert [line.split(":")[0] for line in lines] == ["epoch 000", "epoch 001"] and all("val/loss=" in line for line in lines)
