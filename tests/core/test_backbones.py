"""The folded inference copy of the EfficientNet-Lite0 blocks gives the same maps as the original."""

from __future__ import annotations

import pytest
import torch

from core.backbones import EfficientNetLite0Blocks, FusedLite0Blocks


def randomised_blocks(blocks=(2, 4)) -> EfficientNetLite0Blocks:
    """Random weights and batch-norm statistics far from the identity, so that folding is tested."""
    torch.manual_seed(0)
    net = EfficientNetLite0Blocks(blocks, pretrained=False)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
            assert module.running_mean.shape == (channels,)
    return net.eval()


@pytest.mark.parametrize("size", [(64, 64), (57, 83), (9, 7), (1, 1)])
def test_fused_blocks_give_the_original_maps(size):
    net = randomised_blocks()
    fused = net.fused_for_inference()
    assert isinstance(fused, FusedLite0Blocks) and fused.strides == net.strides and fused.channels == net.channels
    images = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected, found = net(net.normalize(images)), fused(fused.normalize(images))
    assert len(found) == len(expected) == 2
    for a, b in zip(expected, found):
        # odd sizes exercise the stride-2 SAME padding (one more on the bottom / right)
        assert b.shape == a.shape and b.is_contiguous()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_fused_blocks_are_an_inference_copy():
    net = randomised_blocks((4,))
    before = {key: value.clone() for key, value in net.state_dict().items()}
    fused = net.fused_for_inference()
    # folded weights are buffers, not parameters: nothing an optimizer could train
    assert not fused.training and list(fused.parameters()) == [] and len(list(fused.buffers())) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    for key, value in net.state_dict().items():  # the source is left as it was
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        fused(torch.rand(1, 1, 16, 16))


def test_only_odd_square_undilated_convolutions_are_folded():
    from core.backbones import _FoldedConv

    norm = torch.nn.BatchNorm2d(4).eval()
    _FoldedConv(torch.nn.Conv2d(3, 4, 3, stride=2), norm, True)
    for conv in (torch.nn.Conv2d(3, 4, 2), torch.nn.Conv2d(3, 4, 3, dilation=2), torch.nn.Conv2d(3, 4, (3, 5))):
        with pytest.raises(ValueError, match="odd, undilated"):
            _FoldedConv(conv, norm, True)
