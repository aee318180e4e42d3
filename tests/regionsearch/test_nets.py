"""The networks: batched crops, the search-path matcher, its policy gradient and losses, the exhaustive CNN, a tiny training run."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from regionsearch.evaluate import box_iou
from regionsearch.losses import baseline_loss, contrastive_loss, reinforce_loss
from regionsearch.module import RegionSearchModule
from regionsearch.nets.blocks import SiameseEncoder, crop_windows
from regionsearch.nets.exhaustive import ExhaustiveCNNMatcher
from regionsearch.nets.search_path import SearchPathMatcher, SearchPathPolicy


# -- batched crops -----------------------------------------------------------------------
def test_batched_crop_equals_plain_slicing():
    images = torch.rand(3, 2, 20, 24)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [5.0, 3.0, 13.0, 11.0], [16.0, 12.0, 24.0, 20.0]])
    crops = crop_windows(images, boxes, 8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        torch.testing.assert_close(crops[i], images[i, :, y1:y2, x1:x2])


def test_crop_of_whole_image_averages_when_shrinking():
    image = torch.zeros(1, 1, 8, 8)
    image[..., ::2, ::2] = 1.0  # a checkerboard that aliases if sampled at one point per cell
    crop = crop_windows(image, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 4)
    torch.testing.assert_close(crop, torch.full_like(crop, 0.25))


# -- networks ----------------------------------------------------------------------------
def test_encoder_shape_and_constant_input():
    encoder = SiameseEncoder(in_channels=3)
    out = encoder(torch.full((2, 3, 32, 32), 0.5))
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        encoder(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError):
        SiameseEncoder(channels=(8, 8, 8))


@pytest.mark.parametrize(("size_mode", "compare"), [("schedule", False), ("isotropic", False), ("anisotropic", False), ("schedule", True)])
def test_matcher_shapes_and_first_window(size_mode, compare):
    net = SearchPathMatcher(in_channels=1, steps=4, size_mode=size_mode, channels=(8, 8, 8, 8, 8), hidden_size=16, compare=compare)
    assert net.policy.cell.input_size == (3 * 8 + 5 if compare else 2 * 8 + 4)
    out = net(torch.rand(5, 1, 28, 28), torch.rand(5, 1, 60, 80), sample=True, final_feature=True)
    assert out.windows.shape == (5, 5, 4) and out.log_probs.shape == (4, 5) and out.baselines.shape == (4, 5)
    torch.testing.assert_close(out.windows[0], torch.tensor([[0.0, 0.0, 80.0, 60.0]] * 5))
    assert out.final_feature.shape == (5, 8)


def test_schedule_zooms_to_the_query_size():
    net = SearchPathMatcher(steps=6, window_size=0.28, zoom_steps=2, channels=(8, 8, 8, 8, 8), hidden_size=16)
    windows = net(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 100, 100)).windows
    widths = (windows[..., 2] - windows[..., 0])[:, 0].detach()
    assert widths[0] == pytest.approx(100) and widths[1] == pytest.approx(100 * 0.28**0.5, rel=1e-4)
    assert torch.allclose(widths[2:], torch.tensor(28.0))


def test_policy_gradient_reaches_only_the_mean():
    policy = SearchPathPolicy(feature_dim=4, hidden_size=8, action_dim=2, std=0.2)
    mean = torch.zeros(3, 2, requires_grad=True)
    action, log_prob = policy.sample(mean)
    assert not action.requires_grad  # the draw is detached
    log_prob.sum().backward()
    # d/dmu log N(a; mu, s) = (a - mu) / s^2, computed from the (unclamped) draw
    assert torch.all(mean.grad.abs() > 0)

    # The baseline head's loss must not reach the LSTM; the REINFORCE loss must not reach the baseline head.
    q, w, loc = torch.rand(3, 4), torch.rand(3, 4), torch.rand(3, 4)
    m, b, _ = policy(q, w, loc, policy.initial_state(3, "cpu", torch.float32))
    baseline_loss(b.unsqueeze(0), torch.ones(3)).backward()
    assert policy.baseline_head.weight.grad is not None
    assert policy.cell.weight_ih.grad is None
    policy.zero_grad(set_to_none=True)
    m, b, _ = policy(q, w, loc, policy.initial_state(3, "cpu", torch.float32))
    a, lp = policy.sample(m)
    reinforce_loss(lp.unsqueeze(0), b.unsqueeze(0), torch.ones(3)).backward()
    assert policy.baseline_head.weight.grad is None and policy.cell.weight_ih.grad is not None


def test_gradcheck_encoder():
    encoder = SiameseEncoder(channels=(2, 2, 2, 2, 2)).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(encoder, (x,), eps=1e-6, atol=1e-4)


# -- losses ------------------------------------------------------------------------------
def test_losses_hand_computed():
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # distances 5 and 0.5
    matched = torch.tensor([True, False])
    # matched: d = 5; unmatched: max(0, 1 - 0.5) = 0.5
    assert contrastive_loss(q, g, matched, margin=1.0) == pytest.approx((5 + 0.5) / 2)
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]])  # (T=2, B=2)
    baselines = torch.tensor([[0.5, 0.2], [0.5, 0.2]])
    reward = torch.tensor([1.0, 0.0])
    # -mean_b sum_t logp * (R - b) = -((-1.5)*0.5 + (-3)*(-0.2)) / 2
    assert reinforce_loss(log_probs, baselines, reward) == pytest.approx(-(-0.75 + 0.6) / 2)
    assert baseline_loss(baselines, reward) == pytest.approx(((0.5**2 + 0.2**2) * 2) / 4)


# -- exhaustive CNN ----------------------------------------------------------------------
def test_exhaustive_cnn_finds_an_exact_copy():
    torch.manual_seed(0)
    net = SearchPathMatcher(window_size=0.5, channels=(8, 16, 16, 32, 32), glimpse_size=16)
    rng = np.random.default_rng(0)
    reference = rng.random((32, 32)).astype(np.float32)
    query = reference[8:24, 12:28].copy()
    result = ExhaustiveCNNMatcher(net, stride=1)(query, reference)
    assert result.windows == 17 * 17
    assert box_iou(result.box, np.array([12, 8, 28, 24.0])) == pytest.approx(1.0)


# -- learning ----------------------------------------------------------------------------
def _bright_squares(n, generator):
    references = torch.zeros(n, 1, 36, 36)
    xy = torch.randint(0, 25, (n, 2), generator=generator)
    for i, (x, y) in enumerate(xy.tolist()):
        references[i, 0, y : y + 12, x : x + 12] = 1.0
    boxes = torch.cat([xy, xy + 12], dim=1).float()
    return {"query": torch.ones(n, 1, 12, 12), "reference": references, "box": boxes}


def test_tiny_training_localises_a_bright_square():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = SearchPathMatcher(steps=3, window_size=1 / 3, zoom_steps=1, glimpse_size=16, channels=(8, 16, 16, 32, 32), hidden_size=64, std=0.1)
    module = RegionSearchModule(net, reward="success")
    module.log = lambda *args, **kwargs: None  # no trainer attached
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    val = _bright_squares(256, generator)
    untrained = (box_iou(net.search(val["query"], val["reference"]), val["box"]) > 0.5).float().mean()
    # Bounded by steps, not seconds (a busy machine must not fail it): ~1 s per 50 steps on 2 cores,
    # and it typically succeeds within 300-600 steps.
    start, success = time.perf_counter(), 0.0
    for _ in range(40):
        for _ in range(50):
            loss = module.training_step(_bright_squares(64, generator), 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        success = (box_iou(net.search(val["query"], val["reference"]), val["box"]) > 0.5).float().mean().item()
        if success > 0.9:
            break
    assert success > 0.9, f"success {success:.2f} after {time.perf_counter() - start:.0f}s (untrained {untrained:.2f})"
    assert untrained < 0.5
