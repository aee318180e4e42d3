"""Per-move credit (discounted returns of every window's reward) and the categorical
first move over a query / first-view similarity map (Cluttered-and-Mixed MNIST)."""

from __future__ import annotations

import math

import pytest
import torch

from regionsearch.losses import baseline_loss, discounted_returns, reinforce_loss
from regionsearch.module import RegionSearchModule, map_loss, net_config
from regionsearch.nets.blocks import SimilarityMap, correlate
from regionsearch.nets.search_path import SearchPathMatcher

TINY = {"channels": (8, 8, 8, 8, 8), "hidden_size": 16, "window_size": 0.28}
MAP = {**TINY, "first_move": "map", "first_glimpse_size": 112}


# -- per-move credit ---------------------------------------------------------------------
def test_discounted_returns_hand_case():
    rewards = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (T=3, B=2)
    # G_2 = r_2; G_1 = r_1 + 0.5 G_2; G_0 = r_0 + 0.5 G_1
    expected = torch.tensor([[0.0 + 0.5 * 1.5, 1.0 + 0.5 * 0.5], [1.5, 0.5], [1.0, 1.0]])
    torch.testing.assert_close(discounted_returns(rewards, 0.5), expected)
    torch.testing.assert_close(discounted_returns(rewards, 1.0), torch.tensor([[2.0, 2.0], [2.0, 1.0], [1.0, 1.0]]))
    torch.testing.assert_close(discounted_returns(rewards, 0.0), rewards)


def test_reinforce_and_baseline_with_per_move_returns():
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]])
    baselines = torch.tensor([[0.5, 0.2], [0.25, 0.0]])
    returns = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    # -mean_b sum_t logp_t (G_t - b_t): b0: -1*0.5 + -0.5*0.25; b1: -2*-0.2 + -1*1
    expected = -((-0.5 - 0.125) + (0.4 - 1.0)) / 2
    assert reinforce_loss(log_probs, baselines, returns).item() == pytest.approx(expected)
    assert baseline_loss(baselines, returns).item() == pytest.approx((0.25 + 0.04 + 0.0625 + 1.0) / 4)
    # a final reward (B,) still means the same reward for every move
    final = torch.tensor([1.0, 0.0])
    assert reinforce_loss(log_probs, baselines, final) == reinforce_loss(log_probs, baselines, final.expand(2, 2))


def test_step_returns_are_normalised_per_move():
    module = RegionSearchModule(SearchPathMatcher(steps=3, **TINY), credit="steps", discount=0.5)
    truth = torch.tensor([[10.0, 10.0, 38.0, 38.0]])
    hit, miss = truth, torch.tensor([[60.0, 60.0, 88.0, 88.0]])
    windows = torch.stack([miss, hit, hit])  # windows 1..3: the target from the second move on
    returns = module.step_returns(windows, truth)
    # raw returns 0.75, 1.5, 1 over the maxima 1.75, 1.5, 1
    torch.testing.assert_close(returns[:, 0], torch.tensor([0.75 / 1.75, 1.0, 1.0]))
    undiscounted = RegionSearchModule(SearchPathMatcher(steps=3, **TINY), credit="steps").step_returns(windows, truth)
    torch.testing.assert_close(undiscounted[:, 0], torch.tensor([2 / 3, 1.0, 1.0]))
    with pytest.raises(ValueError):
        RegionSearchModule(SearchPathMatcher(**TINY), credit="every")
    with pytest.raises(ValueError):
        RegionSearchModule(SearchPathMatcher(**TINY), discount=1.5)


# -- similarity map ----------------------------------------------------------------------
def test_correlate_peaks_where_the_template_was_cut():
    torch.manual_seed(0)
    reference_map = torch.randn(2, 5, 7, 6)
    template = reference_map[:, :, 3:5, 1:3].clone()
    template[1] = reference_map[1, :, 0:2, 4:6]
    scores = correlate(reference_map, template)
    assert scores.shape == (2, 6, 5)
    assert scores[0, 3, 1].item() == pytest.approx(1.0) and scores[1, 0, 4].item() == pytest.approx(1.0)
    assert scores.max() <= 1.0 + 1e-6
    assert (scores.flatten(1).argmax(1) == torch.tensor([3 * 5 + 1, 0 * 5 + 4])).all()
    with pytest.raises(ValueError):
        correlate(reference_map, torch.randn(2, 5, 8, 2))
    for hidden in (0, 6):
        similarity = SimilarityMap(5, hidden)
        assert similarity(reference_map, template).shape == (2, 30)
        # the same head on both sides: an exact copy of the template's cells still scores 1
        projected = similarity.projection(reference_map)
        assert correlate(projected, projected[:, :, 3:5, 1:3])[0, 3, 1].item() == pytest.approx(1.0)


def test_map_cells_and_centres_geometry():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, **MAP)
    query, reference = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 100, 100)
    query_feature, view_feature, logits, centres = net.first_view_map(query, reference)
    # 112 px view, layer 4 (stride 16): a 7x7 map; the 32 px query gives a 2x2 template -> 6x6 cells
    assert logits.shape == (2, 36) and centres.shape == (36, 2)
    spacing = 16 * 100 / 112
    torch.testing.assert_close(centres[0], torch.tensor([spacing, spacing]))  # (16*0 + 32/2) view px
    torch.testing.assert_close(centres[1], torch.tensor([2 * spacing, spacing]))  # x varies fastest
    torch.testing.assert_close(centres[-1], torch.tensor([6 * spacing, 6 * spacing]))
    torch.testing.assert_close(query_feature, net.encode(query))
    whole = torch.tensor([[0.0, 0.0, 100.0, 100.0]]).expand(2, 4)
    torch.testing.assert_close(view_feature, net.encode(reference, whole, size=112))


def test_map_move_is_the_best_cell_without_sampling_and_a_draw_with():
    torch.manual_seed(0)
    centres = torch.tensor([[25.0, 25.0], [75.0, 25.0], [50.0, 75.0]])
    logits = torch.tensor([[0.0, 2.0, 1.0], [9.0, 0.0, 0.0]])
    action, log_prob = SearchPathMatcher.map_move(logits, centres, sample=False, height=100, width=100)
    torch.testing.assert_close(action, torch.tensor([[0.5, -0.5], [-0.5, -0.5]]))
    torch.testing.assert_close(log_prob, torch.zeros(2))
    draws = [SearchPathMatcher.map_move(logits, centres, sample=True, height=100, width=100) for _ in range(200)]
    picked = torch.stack([a for a, _ in draws])  # (200, 2, 2)
    assert (picked[:, 0] != torch.tensor([0.5, -0.5])).any(dim=1).any()  # a less likely cell gets drawn too
    for action, log_prob in draws[:10]:
        cell = [next(i for i, c in enumerate(centres) if torch.allclose(2 * c / 100 - 1, a)) for a in action]
        torch.testing.assert_close(log_prob, logits.log_softmax(1)[torch.arange(2), cell])


def test_the_path_starts_with_the_map_move():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, **MAP).eval()
    query, reference = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 100, 100)
    out = net(query, reference)
    best = out.first_centres[out.first_logits.argmax(1)]
    torch.testing.assert_close((out.windows[1, :, :2] + out.windows[1, :, 2:]) / 2, best)
    side = 100 * net.scheduled_size(1)
    torch.testing.assert_close(out.windows[1, :, 2:] - out.windows[1, :, :2], torch.full((2, 2), side))
    assert out.windows.shape == (4, 2, 4) and out.window_features.shape == (3, 2, 8)
    assert SearchPathMatcher(**TINY)(query, reference).first_logits is None  # gaussian by default
    with pytest.raises(ValueError):
        SearchPathMatcher(first_move="grid", **TINY)
    with pytest.raises(ValueError):
        SearchPathMatcher(context_scales=(2.0,), **MAP)


def test_map_loss_targets_the_nearest_cell_and_trains_only_the_encoder_and_map():
    centres = torch.tensor([[25.0, 25.0], [75.0, 25.0], [50.0, 75.0]])
    truth = torch.tensor([[60.0, 10.0, 88.0, 38.0]])  # centre (74, 24): cell 1
    logits = torch.tensor([[0.0, 2.0, 0.0]])
    expected = -torch.log_softmax(logits, 1)[0, 1]
    assert map_loss(logits, centres, truth).item() == pytest.approx(expected.item())

    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, **MAP)
    out = net(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 100, 100), sample=True)
    map_loss(out.first_logits, out.first_centres, torch.tensor([[30.0, 40.0, 58.0, 68.0]]).expand(4, 4)).backward()
    assert net.similarity_map.projection.weight.grad.abs().sum() > 0
    assert net.encoder.features[0].weight.grad.abs().sum() > 0
    assert net.encoder.features[8].weight.grad is None  # layer 5 lies after the map
    assert all(p.grad is None for p in net.policy.parameters())


def test_policy_gradient_of_the_first_move_reaches_the_map():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, **MAP)
    out = net(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 100, 100), sample=True)
    (-out.log_probs[0].sum()).backward()  # move 1 only
    assert net.similarity_map.log_scale.grad.abs() > 0
    assert net.similarity_map.projection.weight.grad.abs().sum() > 0
    # the LSTM does not make that move (stacking the moves' log-probabilities gives it zero gradients)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.policy.parameters())


def test_training_step_with_map_and_step_credit():
    torch.manual_seed(0)
    reference = torch.rand(4, 1, 100, 100)
    batch = {
        "query": torch.rand(4, 1, 28, 28),
        "reference": reference,
        "box": torch.tensor([[30.0, 40.0, 58.0, 68.0]]).expand(4, 4),
        "label": torch.zeros(4, dtype=torch.long),
    }
    logged = {}
    net = SearchPathMatcher(steps=3, compare=True, map_hidden=8, **MAP)
    module = RegionSearchModule(net, credit="steps", discount=0.9, map_weight=1.0, rollouts=2)
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert "train/loss_map" in logged and math.isfinite(loss.item())
    assert net.policy.mean_head[-1].weight.grad.abs().sum() > 0
    assert net.similarity_map.projection[0].weight.grad.abs().sum() > 0
    config = net_config(net)
    assert config["first_move"] == "map" and config["map_layer"] == 4 and config["map_hidden"] == 8
    rebuilt = SearchPathMatcher(**config)
    rebuilt.load_state_dict(net.state_dict())


def test_relative_moves_shift_the_current_window_by_up_to_half_its_side():
    net = SearchPathMatcher(steps=3, relative_moves=True, **TINY)
    current = torch.tensor([[20.0, 30.0, 48.0, 58.0], [80.0, 80.0, 100.0, 100.0]])  # centres (34, 44), (90, 90)
    actions = torch.tensor([[0.0, 0.0], [1.0, -0.5]])
    windows = net.actions_to_windows(actions, 3, 100, 100, current)
    centres = (windows[:, :2] + windows[:, 2:]) / 2
    # zero = stay; +1 = half the side (10 px) right, -0.5 = 5 px up; centres stay inside the image
    torch.testing.assert_close(centres, torch.tensor([[34.0, 44.0], [100.0, 85.0]]))
    # from the whole reference a relative move equals the absolute one
    whole = torch.tensor([[0.0, 0.0, 100.0, 100.0]]).expand(2, 4)
    torch.testing.assert_close(net.actions_to_windows(actions, 1, 100, 100, whole), net.actions_to_windows(actions, 1, 100, 100))
    # a map first move stays absolute; the LSTM's later moves start from it
    torch.manual_seed(0)
    mapped = SearchPathMatcher(steps=2, relative_moves=True, **MAP).eval()
    out = mapped(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 100, 100))
    torch.testing.assert_close((out.windows[1, :, :2] + out.windows[1, :, 2:]) / 2, out.first_centres[out.first_logits.argmax(1)])
    assert net_config(mapped)["relative_moves"] is True
