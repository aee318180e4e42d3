"""Options added for Cluttered-and-Mixed MNIST: a sharper first view, a RAM-style retina,
the distractor-aware discrimination loss and a feature-only warm-up."""

from __future__ import annotations

import pytest
import torch

from regionsearch.module import RegionSearchModule, net_config
from regionsearch.nets.blocks import crop_windows
from regionsearch.nets.search_path import SearchPathMatcher

TINY = {"channels": (8, 8, 8, 8, 8), "hidden_size": 16, "window_size": 0.28}


def _whole(batch: int, size: int) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, size, size]]).expand(batch, 4)


def test_first_glimpse_size_only_changes_the_first_view():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, first_glimpse_size=64, **TINY)
    query, reference = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 100, 100)
    out = net(query, reference)
    first = net.encoder(crop_windows(reference, _whole(2, 100), 64))
    torch.testing.assert_close(out.window_features[0], first)
    assert not torch.allclose(first, net.encoder(crop_windows(reference, _whole(2, 100), 32)))
    # later windows (and the query) keep the usual glimpse size
    torch.testing.assert_close(out.window_features[1], net.encode(reference, out.windows[1]))
    torch.testing.assert_close(out.query_feature, net.encode(query))


@pytest.mark.parametrize("first_glimpse_size", [None, 48])
def test_retina_context_views_are_scaled_windows_for_the_policy_only(first_glimpse_size):
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=2, context_scales=(2, 4), first_glimpse_size=first_glimpse_size, **TINY)
    assert net.policy.cell.input_size == 2 * 8 + 4 + 2 * 8
    reference = torch.rand(3, 1, 100, 100)
    window = torch.tensor([[40.0, 30.0, 68.0, 58.0]]).expand(3, 4)
    feature, context = net.encode_step(reference, window, step=1)
    torch.testing.assert_close(feature, net.encode(reference, window))
    twice = torch.tensor([[26.0, 16.0, 82.0, 72.0]]).expand(3, 4)
    four_times = torch.tensor([[-2.0, -12.0, 110.0, 100.0]]).expand(3, 4)
    torch.testing.assert_close(context, torch.cat([net.encode(reference, twice), net.encode(reference, four_times)], dim=1))
    # the first view honours first_glimpse_size, its context views the usual glimpse size
    feature0, context0 = net.encode_step(reference, _whole(3, 100), step=0)
    torch.testing.assert_close(feature0, net.encode(reference, _whole(3, 100), size=first_glimpse_size))
    assert context0.shape == (3, 16)
    out = net(torch.rand(3, 1, 28, 28), reference, sample=True)
    assert out.windows.shape == (3, 3, 4) and out.window_features.shape == (2, 3, 8)
    with pytest.raises(ValueError):
        SearchPathMatcher(context_scales=(0.0,), **TINY)


def test_new_options_survive_the_checkpoint_config():
    net = SearchPathMatcher(first_glimpse_size=64, context_scales=(2.0, 4.0), **TINY)
    config = net_config(net)
    assert config["first_glimpse_size"] == 64 and config["context_scales"] == [2.0, 4.0]
    rebuilt = SearchPathMatcher(**config)
    rebuilt.load_state_dict(net.state_dict())  # same parameter shapes


def _mixed_batch(batch: int = 4):
    """Query = a bright square; the target is a copy of it, the 'distractors' are exact copies too."""
    reference = torch.zeros(batch, 1, 100, 100)
    query = torch.zeros(batch, 1, 28, 28)
    query[:, :, 8:20, 8:20] = 1.0
    boxes = [(0, 0), (50, 0), (0, 60), (60, 60)]
    for x, y in boxes:
        reference[:, :, y : y + 28, x : x + 28] = query[0]
    truth = torch.tensor([[0.0, 0.0, 28.0, 28.0]]).expand(batch, 4)
    distractors = torch.tensor([[[x, y, x + 28.0, y + 28.0] for x, y in boxes[1:]]]).expand(batch, 3, 4)
    return {"query": query, "reference": reference, "box": truth, "distractors": distractors, "label": torch.zeros(batch, dtype=torch.long)}


def test_discrimination_loss_hand_case_and_gradient():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=2, **TINY)
    module = RegionSearchModule(net, discrimination_weight=1.0, margin=0.5)
    batch = _mixed_batch()
    query_feature = net.encode(batch["query"])
    # every window holds an exact copy of the query: the positive costs 0, each of the 3 negatives the full margin
    loss = module.discrimination_loss(query_feature, batch["reference"], batch["box"], batch["distractors"])
    assert loss.item() == pytest.approx(3 * 0.5 / 4, abs=1e-5)
    # with distractors that differ from the query the loss trains the encoder, never the policy
    batch["reference"][:, :, 0:28, 50:78] = 0.0
    loss = module.discrimination_loss(net.encode(batch["query"]), batch["reference"], batch["box"], batch["distractors"])
    loss.backward()
    assert net.encoder.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.policy.parameters())


def test_discrimination_jitter_moves_the_windows_by_at_most_jitter():
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=2, **TINY)
    module = RegionSearchModule(net, discrimination_weight=1.0, discrimination_jitter=3)
    seen = []
    original = net.encode

    def spy(images, boxes=None, batch_index=None, size=None):
        seen.append(boxes)
        return original(images, boxes, batch_index, size)

    net.encode = spy
    batch = _mixed_batch(8)
    module.discrimination_loss(torch.zeros(8, 8), batch["reference"], batch["box"], batch["distractors"])
    expected = torch.cat([batch["box"].unsqueeze(1), batch["distractors"]], dim=1).flatten(0, 1)
    shift = seen[-1] - expected
    assert shift.abs().max() <= 3 and shift.abs().max() > 0
    torch.testing.assert_close(shift[:, :2], shift[:, 2:])  # a shift, the size is kept


def test_training_step_uses_discrimination_and_warmup_skips_the_policy_gradient():
    torch.manual_seed(0)
    batch = _mixed_batch()
    batch["reference"] += 0.1 * torch.rand_like(batch["reference"])
    logged = {}

    def log(name, value, **kwargs):
        logged[name] = value

    for warmup, policy_trains in ((0, True), (1, False)):
        net = SearchPathMatcher(steps=2, **TINY)
        module = RegionSearchModule(net, discrimination_weight=1.0, warmup_epochs=warmup, rollouts=2)
        logged.clear()
        module.log = log
        module.training_step(batch, 0).backward()
        assert "train/loss_discrimination" in logged
        mean_grad = net.policy.mean_head[-1].weight.grad
        assert (mean_grad is not None and mean_grad.abs().sum() > 0) == policy_trains
        assert net.encoder.features[0].weight.grad.abs().sum() > 0
    # batches without distractor boxes (translated/cluttered/logos) simply skip the loss
    logged.clear()
    module.training_step({k: v for k, v in batch.items() if k != "distractors"}, 0)
    assert "train/loss_discrimination" not in logged


@pytest.mark.parametrize("detach", [False, True])
def test_detached_policy_features_keep_the_policy_gradient_out_of_the_encoder(detach):
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, detach_policy_features=detach, context_scales=(2.0,), **TINY)
    out = net(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 100, 100), sample=True)
    (-(out.log_probs.sum())).backward()
    encoder_grad = net.encoder.features[0].weight.grad
    assert net.policy.cell.weight_ih.grad.abs().sum() > 0  # the LSTM always learns from REINFORCE
    assert (encoder_grad is not None and encoder_grad.abs().sum() > 0) != detach


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_policy_input_norm_standardises_what_the_lstm_sees(norm):
    torch.manual_seed(0)
    net = SearchPathMatcher(steps=3, compare=True, policy_input_norm=norm, **TINY)
    seen = []
    net.policy.cell.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    net(torch.rand(6, 1, 28, 28), torch.rand(6, 1, 100, 100), sample=True)
    dim = 0 if norm == "batch" else 1  # batch: each input over the batch; layer: each sample over its inputs
    for inputs in seen:
        assert inputs.shape == (6, 3 * 8 + 5)
        torch.testing.assert_close(inputs.mean(dim=dim), torch.zeros(inputs.shape[1 - dim]), atol=1e-4, rtol=0)
    if norm == "batch":
        assert len(net.policy.input_norm) == 3  # statistics per step
        net.eval()  # running statistics: a single pair works
        assert net(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 100, 100)).windows.shape == (4, 1, 4)
    assert net_config(net)["policy_input_norm"] == norm
    assert SearchPathMatcher(**TINY).policy.input_norm is None  # off by default
    with pytest.raises(ValueError):
        SearchPathMatcher(policy_input_norm="group", **TINY)
