"""The search path on real photos: the pretrained encoder (shapes, frozen means frozen), the first
look at the reference's own scale, the real-pairs builder (deterministic, never reads BBS) and a
short training run on tiny real pairs made here."""

from __future__ import annotations

from functools import partial

import cv2
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from regionsearch.data import real_pairs
from regionsearch.data.datamodule import RealPairDataset
from regionsearch.evaluate import box_iou
from regionsearch.module import RegionSearchModule
from regionsearch.nets.blocks import PretrainedEncoder, fuse_frozen_backbone
from regionsearch.nets.search_path import SearchPathMatcher
from regionsearch.search_path_method import SearchPathMethod


def real_matcher(**overrides) -> SearchPathMatcher:
    settings = dict(
        in_channels=3, glimpse_size=32, steps=3, channels=[32] * 5, hidden_size=32, encoder="efficientnet_lite0", freeze_encoder=True,
        encoder_block=2, first_move="map", first_view="reference", size_mode="anisotropic", first_glimpse_size=64, relative_moves=True, pretrained=False,
    )  # fmt: skip
    settings.update(overrides)
    return SearchPathMatcher(**settings)


def test_pretrained_encoder_shapes():
    encoder = PretrainedEncoder(glimpse_size=64, block=4, out_dim=96, freeze=True, pretrained=False)
    feature, feature_map = encoder.forward_with_map(torch.rand(2, 3, 64, 64))
    assert feature.shape == (2, 96) and feature_map.shape == (2, 40, 8, 8)
    torch.testing.assert_close(feature.norm(dim=1), torch.ones(2))
    pooled = encoder.pool_windows(torch.rand(2, 40, 12, 16), torch.tensor([[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 40.0, 90.0]]))
    assert pooled.shape == (2, 96)
    with pytest.raises(ValueError, match="colour input"):
        SearchPathMatcher(in_channels=1, encoder="efficientnet_lite0")


def test_frozen_means_frozen():
    net = real_matcher()
    backbone = net.encoder.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}  # weights and BatchNorm statistics
    assert all(not p.requires_grad for p in backbone.parameters())
    net.train()
    assert not backbone.training  # BatchNorm stays in eval mode
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    out = net(torch.rand(2, 3, 20, 16), torch.rand(2, 3, 64, 80), sample=True, final_feature=True)
    loss = out.first_logits.logsumexp(1).sum() + out.final_feature.sum() + out.log_probs.sum()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in backbone.parameters())
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert net.encoder.head[0].weight.grad is not None  # the head learns
    unfrozen = real_matcher(freeze_encoder=False)
    assert all(p.requires_grad for p in unfrozen.encoder.backbone.parameters())


def test_reference_scale_search_any_size_and_padding():
    torch.manual_seed(0)
    net = real_matcher().eval()
    query, reference = torch.rand(1, 3, 21, 13), torch.rand(1, 3, 70, 110)
    out = net(query, reference)
    assert out.windows.shape == (4, 1, 4) and out.first_logits.shape[0] == 1
    # the first look's placements inside the reference, plus the three glimpses
    assert out.windows_evaluated[0] == (out.first_logits > -1e3).sum() + 3
    # the map move gives a window of the query's size; the untrained moves keep it
    window = out.windows[1, 0]
    torch.testing.assert_close(window[2:] - window[:2], torch.tensor([13.0, 21.0]))
    torch.testing.assert_close(out.windows[-1], out.windows[1])
    # padded into a bigger batch with the valid sizes given: the same answer
    queries, references = torch.zeros(2, 3, 30, 30), torch.zeros(2, 3, 70, 110)
    queries[0, :, :21, :13], references[0] = query[0], reference[0]
    queries[1], references[1] = torch.rand(3, 30, 30), torch.rand(3, 70, 110)
    batched = net(queries, references, query_size=torch.tensor([[21.0, 13.0], [30.0, 30.0]]), reference_size=torch.tensor([[70.0, 110.0], [70.0, 110.0]]))
    torch.testing.assert_close(batched.boxes[0], out.boxes[0])
    method = SearchPathMethod(net, box="template")
    result = method((query[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), (reference[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert result.box.shape == (4,) and result.windows > 3


def test_mnist_defaults_unchanged():
    net = SearchPathMatcher()
    assert net.encoder_kind == "conv" and net.first_view == "glimpse" and not net.freeze_encoder
    with pytest.raises(ValueError, match="first_view='reference' needs"):
        SearchPathMatcher(first_view="reference")


# -- the real-pairs builder on fixtures written here -------------------------------------
def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like fixture: smooth colour noise with a few rectangles."""
    image = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        image[y : y + int(rng.integers(6, 20)), x : x + int(rng.integers(6, 20))] = rng.integers(0, 256, 3)
    return image


def write_sequence_fixture(root, rng) -> None:
    for name in real_pairs.SEQUENCE_SPLITS["train"] + real_pairs.SEQUENCE_SPLITS["val"]:
        folder = root / "sequences" / name
        folder.mkdir(parents=True)
        image = _texture(rng, 200, 240)
        hpatches = name.startswith("v_")
        Image.fromarray(image).save(folder / ("1.ppm" if hpatches else "img1.ppm"))
        for k in range(2, 7):
            shift = 3.0 * k  # image K = image 1 shifted: H1toK a translation
            Image.fromarray(np.roll(image, (int(shift), int(shift)), axis=(0, 1))).save(folder / (f"{k}.ppm" if hpatches else f"img{k}.ppm"))
            np.savetxt(folder / (f"H_1_{k}" if hpatches else f"H1to{k}p"), np.array([[1, 0, shift], [0, 1, shift], [0, 0, 1.0]]))


def test_real_pairs_deterministic_and_never_read_bbs(tmp_path, monkeypatch):
    write_sequence_fixture(tmp_path, np.random.default_rng(0))
    (tmp_path / "template_matching" / "bbs").mkdir(parents=True)
    opened = []
    original = Image.open
    monkeypatch.setattr(real_pairs.Image, "open", lambda path, *a, **k: opened.append(str(path)) or original(path, *a, **k))
    build = partial(real_pairs.build_real_pairs, tmp_path, n_pairs=12, reference_size=64, query_size=32, sources=("sequences", "photos"))
    first, again = build("train", seed=3), build("train", seed=3)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other = build("train", seed=4)
    assert not np.array_equal(first["boxes"], other["boxes"])
    assert opened and not any("template_matching" in path or "bbs" in path for path in opened)
    assert not any(f"/{name}/" in path for path in opened for name in real_pairs.SEQUENCE_SPLITS["val"])  # train reads no val scene
    # boxes inside the valid reference; sizes within the canvases
    h, w = first["reference_sizes"][:, 0], first["reference_sizes"][:, 1]
    assert (first["boxes"][:, 2] <= w + 1e-3).all() and (first["boxes"][:, 3] <= h + 1e-3).all()
    assert (np.maximum(h, w) == 64).all() and (first["query_sizes"] <= 32).all()
    cached = real_pairs.cached_real_pairs(tmp_path / "cache", tmp_path, split="val", n_pairs=4, reference_size=64, query_size=32, sources=("sequences",))
    assert len(list((tmp_path / "cache").glob("real_pairs-val-*.npz"))) == 1 and cached["boxes"].shape == (4, 4)


# -- training on tiny real pairs ----------------------------------------------------------
def tiny_pairs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Fixture photos: a query cut from a textured photo, found in a rescaled copy (x1.5 in width
    and height) of it: a query-sized window has IoU 0.43, the moves must learn to grow it."""
    rng = np.random.default_rng(seed)
    out = {"queries": np.zeros((n, 24, 24, 3), np.uint8), "references": np.zeros((n, 64, 64, 3), np.uint8), "query_sizes": np.zeros((n, 2), np.float32), "reference_sizes": np.zeros((n, 2), np.float32), "boxes": np.zeros((n, 4), np.float32), "query_labels": np.zeros(n, np.int64)}  # fmt: skip
    for i in range(n):
        photo = _texture(rng, 42, 42)
        qx, qy = int(rng.integers(0, 26)), int(rng.integers(0, 26))
        query = photo[qy : qy + 16, qx : qx + 16]
        out["queries"][i, :16, :16] = query
        out["references"][i] = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_LINEAR)
        factor = 64 / 42
        out["query_sizes"][i], out["reference_sizes"][i] = (16, 16), (64, 64)
        out["boxes"][i] = np.array([qx, qy, qx + 16, qy + 16]) * factor
    return out


def success_rate(model: RegionSearchModule, dataset: RealPairDataset) -> float:
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    model.eval()
    with torch.no_grad():
        out = model.net(batch["query"], batch["reference"], query_size=batch["query_size"], reference_size=batch["reference_size"])
    return float((box_iou(out.boxes, batch["box"]) > 0.5).float().mean())


def test_training_on_tiny_real_pairs_improves_success(tmp_path):
    torch.manual_seed(0)
    pl.seed_everything(0)
    train, val = RealPairDataset(tiny_pairs(48, 0)), RealPairDataset(tiny_pairs(32, 1))
    net = real_matcher(std=0.2, size_step=2.0, encoder_block=1)
    model = RegionSearchModule(net, optimizer=partial(torch.optim.Adam, lr=1e-2), reward="iou", map_weight=1.0, contrastive_weight=0.0, rollouts=2)
    before = success_rate(model, val)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(train, batch_size=16, shuffle=True))
    after = success_rate(model, val)
    assert after > before + 0.2, (before, after)
    # "within a minute on CPU" is the budget's size, not a timed assertion (a loaded machine would
    # fail it): 9 steps of 16 tiny pairs, about 10 s on this 2-core CPU beside two trainings
    assert trainer.global_step == 9


def test_fused_backbone_only_without_gradient_and_dropped_when_stale():
    net = real_matcher()
    encoder = net.encoder
    images = torch.rand(1, 3, 40, 56)
    keys = list(net.state_dict())
    expected = encoder.feature_map(images).detach()
    assert encoder.fuse_for_inference() is encoder and encoder._fused_backbone is not None
    assert list(net.state_dict()) == keys  # the copy is not part of the checkpoint
    calls = []
    encoder._fused_backbone.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        torch.testing.assert_close(encoder.feature_map(images), expected, rtol=1e-4, atol=1e-4)
    assert calls == [1]
    encoder.feature_map(images)  # gradient recorded: the original backbone
    assert calls == [1]
    net.train()
    assert encoder._fused_backbone is None
    # the backbone changed after fusing (a state dict loaded into it, an edited weight, a cast):
    # the stale copy is dropped and the original runs
    for change in (
        lambda: encoder.backbone.load_state_dict(encoder.backbone.state_dict()),
        lambda: encoder.backbone.stem[0].weight.mul_(2),
        lambda: net.to(torch.float64),
    ):
        encoder.fuse_for_inference()
        with torch.no_grad():
            change()
            encoder.feature_map(images.to(next(encoder.backbone.parameters()).dtype))
        assert encoder._fused_backbone is None
    assert fuse_frozen_backbone(net) and encoder._fused_backbone is not None
    assert not fuse_frozen_backbone(net, fuse=False) and encoder._fused_backbone is None  # before torch.export
    with pytest.raises(ValueError, match="frozen"):
        real_matcher(freeze_encoder=False).encoder.fuse_for_inference()
    assert not fuse_frozen_backbone(real_matcher(freeze_encoder=False))


def test_search_path_method_fuses_a_frozen_backbone_with_the_same_answer():
    torch.manual_seed(0)
    net = real_matcher().eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 110, 3), dtype=np.uint8)
    template = image[20:41, 30:43].copy()
    with torch.inference_mode():
        plain = net(torch.from_numpy(template).permute(2, 0, 1)[None].float() / 255, torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    method = SearchPathMethod(net)
    calls = []
    net.encoder._fused_backbone.register_forward_hook(lambda *args: calls.append(1))
    found = method(template, image)
    assert len(calls) >= 2  # the first look's view and template went through the folded copy
    np.testing.assert_allclose(found.box, plain.boxes[0].numpy(), atol=1e-3)
    assert found.windows == int(round(float(plain.windows_evaluated[0])))
