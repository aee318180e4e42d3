"""Regional attention: positive weights, aggregation, regions from the grid or boxes, frozen training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retrieval.module import RegionalAttentionModule, train_attention
from retrieval.nets.attention import (
    RegionalAttention,
    RegionalAttentionNet,
    attention_aggregate,
    attention_vectors,
    pad_regions,
    padded_region_vectors,
    regional_mean,
    roi_mean,
    weighted_region_sum,
)
from retrieval.nets.backbones import Backbone
from retrieval.pooling import l2n, rmac_regions


def tiny_backbone(channels: int = 8, classes: int = 10) -> Backbone:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
    )
    return Backbone("tiny", features, channels, 4, classifier=nn.Linear(channels, classes))


def test_attention_weights_are_positive():
    attention = RegionalAttention(8, context=True, hidden=4)
    regional = torch.randn(3, 14, 8) * 100
    weights = attention(regional, torch.randn(3, 8) * 100)
    assert weights.shape == (3, 14) and (weights > 0).all()
    assert attention.region_layer.in_features == 16  # region feature + global context
    plain = RegionalAttention(8, context=False)
    assert plain.region_layer.in_features == 8 and (plain(regional) > 0).all()
    with pytest.raises(ValueError, match="global feature"):
        attention(regional)


def test_attention_formula():
    attention = RegionalAttention(2, context=False, hidden=3)
    k = torch.randn(1, 5, 2)
    wr, br = attention.region_layer.weight, attention.region_layer.bias
    wc, bc = attention.weight_layer.weight, attention.weight_layer.bias
    expected = torch.nn.functional.softplus(torch.tanh(k @ wr.T + br) @ wc.T + bc).squeeze(-1)
    assert torch.allclose(attention(k), expected)
    context = RegionalAttention(2, context=True, hidden=3)
    g = torch.randn(1, 2)
    joined = torch.cat([k, g.unsqueeze(1).expand(1, 5, 2)], dim=-1)
    expected = torch.nn.functional.softplus(
        torch.tanh(joined @ context.region_layer.weight.T + context.region_layer.bias) @ context.weight_layer.weight.T
        + context.weight_layer.bias
    ).squeeze(-1)
    assert torch.allclose(context(k, g), expected)


def test_attention_aggregate_is_a_weighted_mean_then_l2():
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    weights = torch.tensor([[3.0, 1.0]])
    assert torch.allclose(attention_aggregate(vectors, weights), l2n(torch.tensor([[1.5, 0.5]])))


def test_regional_mean_and_roi_mean():
    x = torch.rand(2, 4, 9, 12)
    regions = rmac_regions(9, 12)
    expected = torch.stack([x[..., y0:y1, x0:x1].mean(dim=(-2, -1)) for x0, y0, x1, y1 in regions.tolist()], dim=1)
    assert torch.allclose(regional_mean(x, regions), expected, atol=1e-6)
    # a box covering the whole map (input pixels, stride 4): roi_align's bilinear samples average to the mean
    whole = torch.tensor([[[0.0, 0.0, 48.0, 36.0]], [[0.0, 0.0, 48.0, 36.0]]])
    assert torch.allclose(roi_mean(x, whole, 1 / 4)[:, 0], x.mean(dim=(-2, -1)), atol=0.05)


def test_network_on_grid_and_on_boxes():
    net = RegionalAttentionNet(tiny_backbone(), levels=3, context=True).eval()
    images = torch.rand(2, 3, 48, 64)
    out = net(images)
    assert out.shape == (2, 8) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    feature_map = net.backbone(images)
    maxima, weights = net.regions(feature_map)
    assert maxima.shape == (2, 20, 8) and weights.shape == (2, 20) and (weights > 0).all()
    grid = rmac_regions(12, 16).tolist()
    expected = torch.stack([feature_map[..., y0:y1, x0:x1].amax(dim=(-2, -1)) for x0, y0, x1, y1 in grid], dim=1)
    assert torch.equal(maxima, expected)
    assert torch.allclose(out, attention_aggregate(l2n(maxima), weights), atol=1e-6)
    boxes = torch.tensor([[[0.0, 0.0, 31.0, 31.0], [16.0, 8.0, 63.0, 47.0], [0.0, 0.0, 63.0, 47.0]]]).repeat(2, 1, 1)
    maxima, weights = net.regions(feature_map, boxes)
    assert maxima.shape == (2, 3, 8) and weights.shape == (2, 3)
    assert net(images, boxes).shape == (2, 8)
    whitened = RegionalAttentionNet(tiny_backbone(), region_whiten=nn.Linear(8, 5)).eval()
    assert whitened(images).shape == (2, 5) and whitened.output_dim == 5


@pytest.mark.parametrize("num_classes", [None, 5])
def test_frozen_backbone_only_attention_and_new_classifier_get_gradients(num_classes):
    module = RegionalAttentionModule(RegionalAttentionNet(tiny_backbone()), num_classes=num_classes)
    module.train()
    assert not module.net.backbone.training  # BatchNorm statistics stay fixed
    labels = torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(module.logits(torch.rand(4, 3, 32, 32)), labels)
    loss.backward()
    trained = {name for name, p in module.named_parameters() if p.grad is not None}
    expected = {f"net.attention.{n}" for n, _ in module.net.attention.named_parameters()}
    if num_classes is not None:
        expected |= {"classifier.weight", "classifier.bias"}
    assert trained == expected
    optimizer = module.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for name, p in module.named_parameters() if name in expected}
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 1e-3


def test_pretrained_classifier_is_required_without_num_classes():
    backbone = tiny_backbone()
    backbone.classifier = None
    with pytest.raises(ValueError, match="num_classes"):
        RegionalAttentionModule(RegionalAttentionNet(backbone))


def test_attention_figure_and_weight_map():
    from retrieval.plots import region_weight_map

    regions = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])
    heat = region_weight_map(regions, torch.tensor([1.0, 3.0]), 3, 3)
    assert heat.tolist() == [[1, 1, 0], [1, 2, 3], [0, 3, 3]]
    module = RegionalAttentionModule(RegionalAttentionNet(tiny_backbone()), num_classes=3)
    figures = module.figures({"image": torch.rand(2, 3, 48, 64), "index": torch.arange(2)})
    figure = figures["region_attention"]
    assert len(figure.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(figure)


def toy_regions(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    regions = []
    for i in range(n):
        r = 3 + i % 3  # images with different region counts
        maxima = torch.rand(r, 6, generator=generator)
        regions.append((maxima, maxima * 0.5))
    return regions, torch.rand(n, 6, generator=generator)


def test_padded_vectors_equal_the_per_image_ones():
    regions, global_mean = toy_regions(7, 1)
    attention, _ = train_attention(regions, global_mean, torch.arange(7) % 2, context=True, hidden=4, epochs=1, batch_size=4)
    rng = np.random.default_rng(0)
    region_pca = (rng.normal(size=6), np.linalg.qr(rng.normal(size=(6, 6)))[0], 4)
    for module in (None, attention):
        for pca in (None, region_pca):
            one_by_one, _ = attention_vectors(module, regions, global_mean, pca)
            maxima, means, mask = pad_regions(regions)
            batched = weighted_region_sum(module, padded_region_vectors(maxima, pca), means, mask, global_mean)
            torch.testing.assert_close(batched, one_by_one)
