"""Pooling against naive loops, the Tolias/cirtorch region grid, and integral max-pooling."""

from __future__ import annotations

import math

import pytest
import torch

from retrieval.pooling import (
    RMAC,
    GeM,
    IntegralRMAC,
    aggregate_regions,
    all_regions,
    center_prior,
    gem,
    integral_region_pool,
    integral_tables,
    l2n,
    mac,
    regional_max,
    rmac,
    rmac_regions,
    roi_mac,
    spoc,
)


def feature_map(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def cirtorch_rmac_loop(x, levels=3, eps=1e-6):
    """cirtorch's ``rmac()`` written out as a loop over regions (global MAC region included)."""
    ovr = 0.4
    steps = torch.Tensor([2, 3, 4, 5, 6, 7])
    height, width = x.size(2), x.size(3)
    w = min(width, height)
    b = (max(height, width) - w) / (steps - 1)
    _, idx = torch.min(torch.abs(((w**2 - w * b) / w**2) - ovr), 0)
    wd = idx.item() + 1 if height < width else 0
    hd = idx.item() + 1 if height > width else 0
    v = x.amax(dim=(-2, -1))
    v = v / (v.norm(dim=1, keepdim=True) + eps)
    for level in range(1, levels + 1):
        wl = math.floor(2 * w / (level + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if level + wd == 1 else (width - wl) / (level + wd - 1)
        cen_w = torch.floor(wl2 + torch.Tensor(range(level - 1 + wd + 1)) * b) - wl2
        b = 0 if level + hd == 1 else (height - wl) / (level + hd - 1)
        cen_h = torch.floor(wl2 + torch.Tensor(range(level - 1 + hd + 1)) * b) - wl2
        for i in cen_h.tolist():
            for j in cen_w.tolist():
                region = x[:, :, int(i) : int(i) + wl, int(j) : int(j) + wl]
                vt = region.amax(dim=(-2, -1))
                v = v + vt / (vt.norm(dim=1, keepdim=True) + eps)
    return v


@pytest.mark.parametrize("height,width", [(12, 12), (7, 7), (30, 30), (2, 2)])
def test_square_map_has_14_regions(height, width):
    assert len(rmac_regions(height, width, levels=3)) == 14


def test_regions_of_zero_side_are_skipped():
    assert rmac_regions(1, 1, levels=3).tolist() == [[0, 0, 1, 1]]  # floor(2 / 3) = 0 at L = 2, 3


@pytest.mark.parametrize("height,width", [(24, 32), (3, 4), (32, 43), (32, 24), (12, 16)])
def test_four_by_three_map_has_20_regions(height, width):
    assert len(rmac_regions(height, width, levels=3)) == 20


def test_region_grid_levels():
    regions = rmac_regions(12, 12, levels=3)
    sides = (regions[:, 2] - regions[:, 0]).tolist()
    assert sides == [12] + [8] * 4 + [6] * 9  # floor(2w / (l + 1))
    assert (regions[:, 2] - regions[:, 0] == regions[:, 3] - regions[:, 1]).all()  # square


@pytest.mark.parametrize("height", range(1, 41, 3))
@pytest.mark.parametrize("width", range(1, 41, 4))
def test_regions_lie_inside_the_map(height, width):
    for levels in (1, 3, 5):
        regions = rmac_regions(height, width, levels)
        assert (regions[:, :2] >= 0).all()
        assert (regions[:, 2] <= width).all() and (regions[:, 3] <= height).all()
        assert (regions[:, 2] > regions[:, 0]).all() and (regions[:, 3] > regions[:, 1]).all()


@pytest.mark.parametrize("height,width", [(12, 12), (24, 32), (32, 24), (9, 13), (5, 17)])
def test_rmac_matches_cirtorch_loop(height, width):
    x = feature_map(2, 6, height, width)
    expected = l2n(cirtorch_rmac_loop(x, levels=3))
    assert torch.allclose(rmac(x, levels=3, include_global=True), expected, atol=1e-6)
    # without the global region (Tolias): the loop's sum minus the global term
    v_global = l2n(x.amax(dim=(-2, -1)))
    expected_tolias = l2n(cirtorch_rmac_loop(x, levels=3) - v_global)
    assert torch.allclose(RMAC(levels=3)(x), expected_tolias, atol=1e-5)


def test_rmac_region_whitening_is_applied_per_region():
    x = feature_map(1, 4, 8, 8)
    linear = torch.nn.Linear(4, 3)
    regions = regional_max(x, rmac_regions(8, 8))
    expected = l2n(l2n(linear(l2n(regions))).sum(dim=1))
    assert torch.allclose(rmac(x, region_whiten=linear), expected, atol=1e-6)
    assert rmac(x, region_whiten=linear).shape == (1, 3)


def test_regional_max_against_a_loop_over_cells():
    x = feature_map(2, 5, 13, 9)
    regions = rmac_regions(13, 9, levels=4)
    out = regional_max(x, regions)
    assert out.shape == (2, len(regions), 5)
    for r, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        expected = torch.full((2, 5), -1.0)
        for i in range(y0, y1):
            for j in range(x0, x1):
                expected = torch.maximum(expected, x[:, :, i, j])
        assert torch.equal(out[:, r], expected)


def test_mac_spoc_gem_against_loops():
    x = feature_map(2, 3, 4, 5)
    naive_max = torch.zeros(2, 3)
    naive_sum = torch.zeros(2, 3)
    naive_cube = torch.zeros(2, 3)
    weighted = torch.zeros(2, 3)
    sigma = min(4, 5) / 2 / 3
    for i in range(4):
        for j in range(5):
            value = x[:, :, i, j]
            naive_max = torch.maximum(naive_max, value)
            naive_sum += value
            naive_cube += value**3
            weighted += value * math.exp(-((j - 2.0) ** 2 + (i - 1.5) ** 2) / (2 * sigma**2))
    assert torch.allclose(mac(x), naive_max)
    assert torch.allclose(spoc(x), naive_sum, atol=1e-5)
    assert torch.allclose(spoc(x, center=True), weighted, atol=1e-5)
    assert torch.allclose(gem(x, 3.0), (naive_cube / 20) ** (1 / 3), atol=1e-5)


def test_center_prior_peaks_at_the_centre():
    prior = center_prior(7, 9)
    assert prior[3, 4] == 1.0 and prior.argmax() == 3 * 9 + 4
    sigma = 7 / 6
    assert prior[3, 0].item() == pytest.approx(math.exp(-16 / (2 * sigma**2)), rel=1e-5)


def test_gem_limits_and_learnable_p():
    x = feature_map(2, 4, 6, 6) + 0.1
    assert torch.allclose(gem(x, 1.0), x.mean(dim=(-2, -1)), atol=1e-6)
    assert torch.allclose(gem(x, 200.0), mac(x), rtol=0.03)
    layer = GeM()
    assert layer.p.item() == 3.0 and layer.eps == 1e-6
    layer(x).sum().backward()
    assert layer.p.grad is not None and torch.isfinite(layer.p.grad).all()
    per_channel = GeM(channels=4)
    assert per_channel(x).shape == (2, 4)
    assert torch.allclose(per_channel(x), gem(x, 3.0), atol=1e-6)


def test_roi_mac_follows_torchvision_roi_pool_semantics():
    x = feature_map(2, 3, 6, 8)
    boxes = torch.tensor([[[0.0, 0.0, 63.0, 31.0], [32.0, 16.0, 127.0, 95.0]], [[16.0, 16.0, 48.0, 48.0], [0.0, 0.0, 127.0, 95.0]]])
    out = roi_mac(x, boxes, spatial_scale=1 / 16)
    assert out.shape == (2, 2, 3)
    for b in range(2):
        for k in range(2):
            # RoI max-pool (Fast R-CNN): corners rounded to cells, the end cell included
            x0, y0, x1, y1 = (round(v / 16) for v in boxes[b, k].tolist())
            assert torch.equal(out[b, k], x[b, :, y0 : y1 + 1, x0 : x1 + 1].amax(dim=(-2, -1)))
    with pytest.raises(ValueError, match="same number of boxes"):
        roi_mac(x, [boxes[0], boxes[1][:1]], 1 / 16)


def test_integral_pooling_bounds_the_max():
    # values within a factor 4 of the channel max: the float64 tables are exact enough there
    x = 0.25 + 0.75 * feature_map(1, 16, 10, 12)
    regions = all_regions(10, 12, sizes=(1, 2, 5, 10))
    exact = regional_max(x, regions)
    areas = ((regions[:, 2] - regions[:, 0]) * (regions[:, 3] - regions[:, 1])).float()
    tables, scale = integral_tables(x, alpha=10.0)
    approx = integral_region_pool(tables, scale, regions, alpha=10.0)
    bound = areas.pow(1 / 10).view(1, -1, 1)
    assert (approx >= exact * (1 - 1e-4)).all() and (approx <= exact * bound * (1 + 1e-4)).all()
    mean = integral_region_pool(tables, scale, regions, alpha=10.0, reduction="mean")
    assert (mean <= exact * (1 + 1e-4)).all() and (mean >= exact / bound * (1 - 1e-4)).all()
    single = regions[:, 2] - regions[:, 0] == 1  # 1x1 regions: the value itself
    assert torch.allclose(approx[:, single], exact[:, single], rtol=1e-3)


def test_integral_pooling_close_to_explicit_max():
    x = feature_map(2, 32, 12, 16).pow(4)  # peaked activations, as after ReLU
    regions = rmac_regions(12, 16, levels=3)
    exact = regional_max(x, regions)
    approx = integral_region_pool(*integral_tables(x, 10.0), regions, 10.0)
    assert ((l2n(approx) * l2n(exact)).sum(-1) > 0.99).all()
    # typical entries are within 10% of the max (the bound allows up to |R|^(1/10), ~1.7 here)
    assert ((approx - exact).abs() / exact).median() < 0.1
    assert ((IntegralRMAC(alpha=10.0)(x) * aggregate_regions(exact)).sum(-1) > 0.99).all()


def test_pooling_input_check():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        mac(torch.zeros(3, 4, 5))
