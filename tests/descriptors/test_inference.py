"""descriptors.inference: folded BatchNorm and channels-last copies compute the same function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from descriptors.api import PatchDescriptor, PatchMatcher
from descriptors.inference import fold_batchnorm, inference_copy, use_channels_last
from descriptors.nets import NETWORKS, BinaryL2Net, CSL2Net, HardNet, L2Net


def _with_trained_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics far from the init (0 / 1), so that folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 3 + 0.2)
    return net.eval()


def test_fold_by_hand_one_conv_and_bn():
    conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    conv.weight.data = torch.tensor([[[[2.0]]], [[[-1.0]]]])
    bn = nn.BatchNorm2d(2, affine=False, eps=0.0)
    bn.running_mean.copy_(torch.tensor([1.0, 3.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    folded = fold_batchnorm(nn.Sequential(conv, bn))
    assert isinstance(folded[1], nn.Identity)
    # (2x - 1) / 2 = x - 0.5 and (-x - 3) / 0.5 = -2x - 6
    assert torch.allclose(folded[0].weight.flatten(), torch.tensor([1.0, -2.0]))
    assert torch.allclose(folded[0].bias, torch.tensor([-0.5, -6.0]))
    assert torch.allclose(folded(torch.full((1, 1, 1, 1), 3.0)).flatten(), torch.tensor([2.5, -12.0]))


@pytest.mark.parametrize("cls", [L2Net, HardNet, CSL2Net])
def test_folded_l2net_family_has_no_batchnorm_and_the_same_outputs(cls):
    torch.manual_seed(0)
    net = _with_trained_statistics(cls())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) in (7, 14)  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.rand(16, 1, cls.patch_size, cls.patch_size)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
        # the E3 maps keep their indices: the first BN's output is the folded conv's
        _, maps = (folded.surround if cls is CSL2Net else folded)(x[:, :, :32, :32], return_features=True)
        _, expected = (net.surround if cls is CSL2Net else net)(x[:, :, :32, :32], return_features=True)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(maps, expected))


def test_fold_keeps_a_batchnorm_in_training_statistics_mode():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.ReLU(), nn.BatchNorm2d(2))
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], nn.BatchNorm2d) and isinstance(folded[3], nn.BatchNorm2d)  # no running stats / not after a conv


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_channels_last_copy_matches(name):
    torch.manual_seed(0)
    net = _with_trained_statistics(NETWORKS[name]())
    runner = inference_copy(net, "cpu", channels_last=True)
    p = net.patch_size
    a, b = torch.rand(2, 8, 1, p, p)
    cl = torch.channels_last
    with torch.no_grad():
        if net.kind == "metric":
            expected, got = net(a, b), runner(a.contiguous(memory_format=cl), b.contiguous(memory_format=cl))
        else:
            expected, got = net(a), runner(a.contiguous(memory_format=cl))
    if name == "binary_l2net":
        assert torch.equal(got, expected)
    else:
        scale = expected.abs().max().clamp_min(1.0)
        assert torch.allclose(got, expected, atol=1e-5 * scale), (name, (got - expected).abs().max())
    assert not any(p.requires_grad for p in runner.parameters())


def test_channels_last_by_default_on_cpu_only():
    assert use_channels_last("cpu") and not use_channels_last("cuda") and not use_channels_last(torch.device("meta"))


def test_applied_networks_use_the_copy_and_keep_the_trained_net():
    torch.manual_seed(0)
    net = _with_trained_statistics(HardNet(input_eps=0.05))
    patches = np.random.default_rng(0).integers(0, 256, (20, 32, 32), dtype=np.uint8)
    fast, exact = PatchDescriptor(net), PatchDescriptor(net, optimize=False)
    assert fast.channels_last and not exact.channels_last and exact.runner is exact.net
    assert fast.net is net and any(isinstance(m, nn.BatchNorm2d) for m in fast.net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.runner.modules())
    assert torch.allclose(fast.describe(patches), exact.describe(patches), atol=1e-5)
    assert not PatchDescriptor(net, channels_last=False).channels_last
    binary = PatchDescriptor(_with_trained_statistics(BinaryL2Net()))
    assert torch.equal(binary.describe(patches), PatchDescriptor(binary.net, optimize=False).describe(patches))
    matcher = NETWORKS["deepcompare_2ch2stream"]().eval()
    pairs = np.random.default_rng(1).integers(0, 256, (2, 6, 64, 64), dtype=np.uint8)
    assert torch.allclose(PatchMatcher(matcher).score(*pairs), PatchMatcher(matcher, optimize=False).score(*pairs), atol=1e-4)
