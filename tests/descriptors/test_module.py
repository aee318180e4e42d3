"""LightningModules: FPR95, batch formats, every loss path, optimiser recipes, tiny training runs."""

from __future__ import annotations

import math
from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve
from torch.utils.data import DataLoader, Dataset

from descriptors.evaluate import fpr_at_recall, roc_points
from descriptors.module import (
    DescriptorModule,
    MetricLearningModule,
    random_dihedral,
    resize_patches,
)
from descriptors.nets import (
    BinaryL2Net,
    CSL2Net,
    DeepCompare2ch,
    DeepDesc,
    HardNet,
    L2Net,
    MatchNet,
    SNet,
    TFeat,
    TNet,
)


# -- FPR95 --------------------------------------------------------------------------------
def test_fpr_at_recall_hand_case():
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    labels = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    # 95% of 4 positives = 3.8 -> reached at the 4th positive (index 5); negatives before: 2 of 4
    assert fpr_at_recall(distances, labels) == pytest.approx(0.5)
    # recall 0.5 -> 2 positives, first reached at index 2: one negative (index 1) before it
    assert fpr_at_recall(distances, labels, recall=0.5) == pytest.approx(0.25)
    assert fpr_at_recall(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])) == 0.0
    with pytest.raises(ValueError, match="both matching and non-matching"):
        fpr_at_recall([0.1, 0.2], [1, 1])


def test_fpr_at_recall_agrees_with_sklearn_roc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    distances = rng.normal(size=2000) - 1.5 * labels  # continuous: no ties
    fpr, tpr, _ = roc_curve(labels, -distances)
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert fpr_at_recall(distances, labels) == pytest.approx(expected, abs=1.0 / (labels == 0).sum())
    ours_fpr, ours_tpr = roc_points(distances, labels)
    assert ours_fpr[np.argmax(ours_tpr >= 0.95)] == pytest.approx(expected)
    assert ours_fpr[-1] == ours_tpr[-1] == 1.0


# -- synthetic patches in the datamodule contract ---------------------------------------------
def _textures(n: int, seed: int, size: int = 80) -> torch.Tensor:
    """Smooth random textures in [0, 1] (blurred uniform noise)."""
    noise = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    kernel = torch.exp(-(torch.arange(-6, 7.0) ** 2) / 8.0)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(noise, (6, 6, 6, 6), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = x - x.amin((2, 3), keepdim=True)
    return x / x.amax((2, 3), keepdim=True)


def _views(base: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 64x64 view of each texture under a small random similarity, contrast change and noise."""
    n = base.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * 0.35
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.06
    f = 64 / base.shape[-1]
    rows = [torch.stack([scale * angle.cos() * f, -scale * angle.sin() * f, shift[:, 0]], 1), torch.stack([scale * angle.sin() * f, scale * angle.cos() * f, shift[:, 1]], 1)]
    grid = F.affine_grid(torch.stack(rows, 1), (n, 1, 64, 64), align_corners=False)
    out = F.grid_sample(base, grid, align_corners=False, padding_mode="reflection")
    out = out * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)) + 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    return (out + 0.05 * torch.randn(out.shape, generator=generator)).clamp(0, 1)


class _DictDataset(Dataset):
    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict:
        return {key: value[index] for key, value in self.tensors.items()}


class SyntheticPatches(pl.LightningDataModule):
    """Brown-like batches (float (B, 1, 64, 64) in [0, 1]): one texture = one 3D point.

    sampler ``points`` -> {"anchor", "positive"}, ``pairs`` -> {"patch1", "patch2", "label"}
    (balanced), ``triplets`` -> {"anchor", "positive", "negative"}; val = balanced labelled pairs
    of textures never seen in training.
    """

    def __init__(self, sampler: str = "points", n_train: int = 512, n_val: int = 200, batch_size: int = 64) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        base = _textures(n_train + n_val, seed=0)
        train_base, val_base = base[:n_train], base[n_train:]
        anchor, positive = _views(train_base, generator), _views(train_base, generator)
        other = torch.roll(torch.arange(n_train), 1)
        if sampler == "points":
            self.train = _DictDataset(anchor=anchor, positive=positive)
        elif sampler == "pairs":
            label = (torch.arange(n_train) % 2 == 0).float()
            self.train = _DictDataset(patch1=anchor, patch2=torch.where(label.view(-1, 1, 1, 1) > 0, positive, positive[other]), label=label)
        else:
            self.train = _DictDataset(anchor=anchor, positive=positive, negative=positive[other])
        view1, view2 = _views(val_base, generator), _views(val_base, generator)
        label = (torch.arange(n_val) % 2 == 0).float()
        view2 = torch.where(label.view(-1, 1, 1, 1) > 0, view2, view2[torch.roll(torch.arange(n_val), 1)])
        self.val = _DictDataset(patch1=view1, patch2=view2, label=label)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=100)

    def test_dataloader(self):
        return self.val_dataloader()


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _train_and_compare(module: pl.LightningModule, datamodule: pl.LightningDataModule, epochs: int) -> tuple[float, float]:
    _trainer().validate(module, datamodule=datamodule, verbose=False)
    before = module.last_results["val"]["fpr95"]
    trainer = _trainer(max_epochs=epochs, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    after = module.last_results["val"]["fpr95"]
    assert trainer.callback_metrics["val/fpr95"].item() == pytest.approx(after)
    return before, after


def test_descriptor_module_learns_on_synthetic_patches():
    torch.manual_seed(0)
    module = DescriptorModule(TFeat(), loss="hardnet", optimizer=partial(torch.optim.Adam, lr=0.01))
    before, after = _train_and_compare(module, SyntheticPatches("points"), epochs=4)
    assert before > 0.2  # untrained (measured: 0.38)
    assert after < 0.5 * before  # trained (measured: 0.08)
    assert module.best_fpr95 <= after
    assert [r["epoch"] for r in module.roc_history] == [0, 0, 1, 2, 3]  # validate() before fit, then 4 epochs
    figure = module.figures({})["roc"]
    # the last epoch's ROC, the four earlier ones faded, the 95% recall line
    assert len(figure.axes[0].lines) == 6


def test_metric_module_learns_on_synthetic_pairs():
    torch.manual_seed(0)
    module = MetricLearningModule(DeepCompare2ch(), loss="hinge", optimizer=partial(torch.optim.Adam, lr=0.001))
    before, after = _train_and_compare(module, SyntheticPatches("pairs"), epochs=4)
    assert before > 0.5  # untrained (measured: 0.92)
    assert after < 0.5 * before  # trained (measured: 0.20)
    _trainer().test(module, datamodule=SyntheticPatches("pairs", n_train=64), verbose=False)
    assert module.last_results["test"]["n_pairs"] == 200


# -- every loss path, one step each ------------------------------------------------------------
def _batch(keys: tuple[str, ...], size: int = 8, patch: int = 64) -> dict:
    torch.manual_seed(0)
    batch = {key: torch.rand(size, 1, patch, patch) for key in keys if key != "label"}
    if "label" in keys:
        batch["label"] = (torch.arange(size) % 2).float()
    return batch


PAIRS, TRIPLETS, POINTS = ("patch1", "patch2", "label"), ("anchor", "positive", "negative"), ("anchor", "positive")


@pytest.mark.parametrize(
    ("make_net", "loss", "keys", "kwargs"),
    [
        (TFeat, "hardnet", POINTS, {}),
        (L2Net, "l2net", POINTS, {"e3_weight": 1.0}),
        (L2Net, "l2net", POINTS, {"e3_weight": 0.0}),
        (CSL2Net, "l2net", POINTS, {}),
        (BinaryL2Net, "l2net", POINTS, {}),
        (HardNet, "hardnet", POINTS, {"margin": 1.0}),
        (TFeat, "triplet_margin", TRIPLETS, {"margin": 2.0}),
        (TFeat, "ratio", TRIPLETS, {}),
        (TNet, "tloss", TRIPLETS, {}),
        (TNet, "tgloss", TRIPLETS, {"gloss_weight": 1.0}),
        (TNet, "gloss_triplet", TRIPLETS, {}),
        (DeepDesc, "pair_hinge", PAIRS, {"positive_mining": 2, "negative_mining": 2}),
        (TNet, "gloss_pair", PAIRS, {}),
    ],
)
def test_descriptor_losses_take_their_batches(make_net, loss, keys, kwargs):
    module = DescriptorModule(make_net(), loss=loss, loss_kwargs=kwargs)
    value = module.training_step(_batch(keys), 0)  # 64x64 in; 32x32 nets resize
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    with pytest.raises(KeyError, match="missing"):
        module.training_step({"anchor": torch.rand(4, 1, 64, 64)} if keys != POINTS else _batch(PAIRS), 0)


@pytest.mark.parametrize(("make_net", "loss"), [(MatchNet, "softmax_ce"), (DeepCompare2ch, "hinge"), (SNet, "gloss_pair")])
def test_metric_losses_take_pairs(make_net, loss):
    module = MetricLearningModule(make_net(), loss=loss)
    value = module.training_step(_batch(PAIRS), 0)
    assert torch.isfinite(value)
    value.backward()
    scores = module.score_pairs(torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64))
    assert scores.shape == (3,)


def test_l2net_e2_warns_on_batches_smaller_than_the_descriptor():
    module = DescriptorModule(L2Net(), loss="l2net", loss_kwargs={"e3_weight": 0.0})
    with pytest.warns(UserWarning, match="E2 with 8 pairs"):
        module.training_step(_batch(POINTS), 0)


@pytest.mark.parametrize(("branch_losses", "dim"), [(False, 256), (True, 128)])
def test_cs_l2net_e2_warning_counts_the_dimensions_e2_decorrelates(branch_losses, dim):
    module = DescriptorModule(CSL2Net(), loss="l2net", loss_kwargs={"e3_weight": 0.0}, branch_losses=branch_losses)
    with pytest.warns(UserWarning, match=f"E2 with 8 pairs per batch <= {dim} dimensions"):
        module.training_step(_batch(POINTS), 0)


@pytest.mark.parametrize("binary", [False, True])
def test_cs_l2net_branch_losses_train_each_tower_as_an_l2net(binary):
    from descriptors import losses as L

    torch.manual_seed(0)
    net = BinaryL2Net(central_surround=True) if binary else CSL2Net()
    module = DescriptorModule(net, loss="l2net", branch_losses=True)
    batch = _batch(POINTS)
    value = module.training_step(batch, 0)
    cs = net.float_net if binary else net
    # by hand: each tower is an L2-Net on its own view (the surround: the patch halved, the
    # centre: the middle crop), with its own descriptors and maps
    towers = []
    for tower, view in ((cs.surround, lambda x: F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)), (cs.centre, lambda x: x[..., 16:48, 16:48])):
        (da, fa), (dp, fp) = tower(view(batch["anchor"]), return_features=True), tower(view(batch["positive"]), return_features=True)
        towers.append(L.l2net_loss(da, dp, fa, fp))
    torch.testing.assert_close(value, (towers[0] + towers[1]) / 2)
    joint = DescriptorModule(net, loss="l2net").training_step(batch, 0)
    assert not torch.isclose(joint, value)
    with pytest.raises(ValueError, match="central-surround"):
        DescriptorModule(L2Net(), loss="l2net", branch_losses=True)
    with pytest.raises(ValueError, match="central-surround"):
        DescriptorModule(CSL2Net(), loss="hardnet", branch_losses=True)


@pytest.mark.parametrize(("module", "keys"), [(lambda: DescriptorModule(HardNet(), loss="hardnet"), POINTS), (lambda: MetricLearningModule(SNet(), loss="gloss_pair"), PAIRS)])
def test_losses_stay_float32_under_bfloat16_autocast(module, keys):
    module = module()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = module.training_step(_batch(keys), 0)
        distances = module.pair_distances(torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64))
    assert value.dtype == distances.dtype == torch.float32 and torch.isfinite(value)


def test_module_argument_checks():
    with pytest.raises(ValueError, match="metric network"):
        MetricLearningModule(TFeat())
    with pytest.raises(ValueError, match="descriptor network"):
        DescriptorModule(MatchNet())
    with pytest.raises(ValueError, match="softmax_ce"):
        MetricLearningModule(MatchNet(), loss="hinge")
    with pytest.raises(ValueError, match="loss must be"):
        DescriptorModule(TFeat(), loss="contrastive")
    with pytest.raises(ValueError, match="not both"):
        DescriptorModule(TFeat(), lr_decay="linear", scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))


def test_binary_evaluation_uses_hamming_distance():
    module = DescriptorModule(BinaryL2Net(), loss="l2net").eval()
    p1, p2 = torch.rand(6, 1, 64, 64), torch.rand(6, 1, 64, 64)
    distances = module.pair_distances(p1, p2)
    codes1, codes2 = module.describe(p1), module.describe(p2)
    assert set(codes1.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(distances, (codes1 != codes2).sum(1).float())
    # uint8 (N, 65, 65) HPatches patches are accepted as well
    assert module.describe(torch.randint(0, 256, (3, 65, 65), dtype=torch.uint8)).shape == (3, 128)


# -- optimisation ------------------------------------------------------------------------------
def test_hardnet_recipe_linear_decay_without_and_with_trainer():
    sgd = partial(torch.optim.SGD, lr=10.0, momentum=0.9, dampening=0.9, weight_decay=1e-4)
    module = DescriptorModule(HardNet(), loss="hardnet", optimizer=sgd, lr_decay="linear")
    config = module.configure_optimizers()  # no trainer attached: the factor stays 1
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert optimizer.param_groups[0]["dampening"] == 0.9 and optimizer.param_groups[0]["lr"] == 10.0
    fixed = DescriptorModule(HardNet(), loss="hardnet", optimizer=sgd, lr_decay="linear", lr_decay_steps=4)
    config = fixed.configure_optimizers()
    lrs = []
    for _ in range(5):
        lrs.append(config["optimizer"].param_groups[0]["lr"])
        config["optimizer"].step()
        config["lr_scheduler"]["scheduler"].step()
    assert lrs == pytest.approx([10.0, 7.5, 5.0, 2.5, 0.0])
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 10.0


def test_linear_decay_reaches_zero_over_a_real_run():
    torch.manual_seed(0)
    sgd = partial(torch.optim.SGD, lr=0.1, momentum=0.9, dampening=0.9)
    module = DescriptorModule(TFeat(), loss="hardnet", optimizer=sgd, lr_decay="linear")
    data = SyntheticPatches("points", n_train=128, n_val=40, batch_size=32)  # 4 steps per epoch
    trainer = _trainer(max_epochs=2, num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    assert module.total_training_steps() == 8
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0)


def test_epoch_scheduler_and_default_optimizer():
    step = partial(torch.optim.lr_scheduler.StepLR, step_size=10, gamma=0.8)
    config = DescriptorModule(TFeat(), loss="triplet_margin", scheduler=step).configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(MetricLearningModule(DeepCompare2ch()).configure_optimizers(), torch.optim.Adam)


# -- evaluation plumbing -----------------------------------------------------------------------------
def test_ddp_gather_restores_dataset_order_and_drops_padding(monkeypatch):
    module = DescriptorModule(TFeat(), loss="hardnet")
    distances = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    full = torch.stack([distances, labels], 1)
    # rank r got pairs r, r + 2, ...; rank 1 padded its last round with pair 0
    ranks = torch.stack([full[[0, 2, 4]], full[[1, 3, 0]]])
    module._outputs["test"].append(full[[0, 2, 4]])
    monkeypatch.setattr(module, "all_gather", lambda local: ranks)
    monkeypatch.setattr(module, "_dataset_size", lambda split: 5)
    module._finish_epoch("test")
    assert module.last_results["test"]["n_pairs"] == 5
    assert module.last_results["test"]["fpr95"] == fpr_at_recall(distances, labels)


def test_single_class_epochs_are_skipped_and_nan_distances_ranked_last(monkeypatch):
    module = DescriptorModule(TFeat(), loss="hardnet")
    monkeypatch.setattr(module, "all_gather", lambda local: local)
    module._outputs["test"].append(torch.tensor([[0.1, 1.0], [0.2, 1.0]]))
    with pytest.warns(UserWarning, match="single class"):
        module._finish_epoch("test")
    assert "test" not in module.last_results
    # a NaN distance counts as the farthest pair: here a positive, so recall 95% needs every pair
    module._outputs["test"].append(torch.tensor([[0.1, 1.0], [0.2, 0.0], [float("nan"), 1.0], [0.3, 0.0]]))
    with pytest.warns(UserWarning, match="NaN"):
        module._finish_epoch("test")
    assert module.last_results["test"]["fpr95"] == 1.0


def test_metric_augmentation_swaps_and_rotates_pairs():
    seen = []

    class Recorder(DeepCompare2ch):
        def forward(self, patch1, patch2):
            seen.append((patch1, patch2))
            return super().forward(patch1, patch2)

    torch.manual_seed(0)
    module = MetricLearningModule(Recorder(), loss="hinge", augment=True)
    batch = _batch(PAIRS, size=64)
    module.training_step(batch, 0)
    patch1, patch2 = seen[-1]

    def dihedral(x):
        rotations = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
        return rotations + [r.flip(-1) for r in rotations]

    kept, swapped = [], []
    for order, flags in (((batch["patch1"], batch["patch2"]), kept), ((batch["patch2"], batch["patch1"]), swapped)):
        same = [(patch1 == t1).flatten(1).all(1) & (patch2 == t2).flatten(1).all(1) for t1, t2 in zip(dihedral(order[0]), dihedral(order[1]))]
        flags.append(torch.stack(same, 1).any(1))
    kept, swapped = kept[0], swapped[0]
    assert (kept | swapped).all()  # each pair: one rotation/flip for both patches, maybe swapped
    assert 0 < int(swapped.sum()) < 64


def test_resize_matches_half_average_and_dihedral_keeps_pairs_aligned():
    x = torch.rand(4, 1, 64, 64)
    torch.testing.assert_close(resize_patches(x, 32), F.avg_pool2d(x, 2))
    assert resize_patches(x, 64) is x
    a = torch.rand(32, 1, 8, 8)
    out_a, out_b = random_dihedral(a, a.clone(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_a, out_b)  # the same transform for both patches of a tuple
    transforms = [torch.rot90(a, k, (-2, -1)) for k in range(4)]
    transforms += [t.flip(-1) for t in transforms]
    matched = torch.stack([(out_a == t).flatten(1).all(1) for t in transforms], 1)
    assert matched.any(1).all() and matched.any(0).sum() > 4  # every sample one of the 8; several used


def test_checkpoint_hparams_are_plain():
    module = DescriptorModule(TFeat(), loss="triplet_margin", loss_kwargs={"margin": 2.0})
    assert dict(module.hparams)["loss_kwargs"] == {"margin": 2.0}
    assert "net" not in module.hparams and math.isinf(module.best_fpr95)


def test_checkpoint_loads_with_weights_only(tmp_path):
    module = DescriptorModule(TFeat(), loss="hardnet", loss_kwargs={"margin": 1.0}, lr_decay="linear")
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=SyntheticPatches("points", n_train=128, n_val=40, batch_size=32))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["loss_kwargs"] == {"margin": 1.0}
    assert checkpoint["best_fpr95"] == module.best_fpr95 < 1.0
    restored = DescriptorModule.load_from_checkpoint(path, net=TFeat(), weights_only=True)
    torch.testing.assert_close(restored.net.descr[0].weight, module.net.descr[0].weight)
