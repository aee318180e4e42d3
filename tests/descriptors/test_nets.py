"""Patch networks: shapes, gradients, input checks, normalisation layers, kornia equivalence."""

from __future__ import annotations

import kornia.feature
import pytest
import torch
import torch.nn.functional as F

from descriptors.nets import (
    NETWORKS,
    BinaryL2Net,
    CSL2Net,
    DeepCompare2ch,
    DeepCompare2ch2Stream,
    DeepCompareSiamese,
    DeepCompareSiamese2Stream,
    DeepDesc,
    HardNet,
    L2Net,
    MatchNet,
    SNet,
    TFeat,
    TNet,
    build_network,
    center_crop,
    gaussian_kernel2d,
    hamming_from_signs,
    l2_normalize,
    sign_straight_through,
    standardize_patches,
    subtractive_normalization,
)

DESCRIPTOR_DIMS = {"tnet": 256, "deepdesc": 128, "tfeat": 128, "l2net": 128, "cs_l2net": 256, "binary_l2net": 128, "hardnet": 128}
PATCH_SIZES = {"tfeat": 32, "l2net": 32, "binary_l2net": 32, "hardnet": 32}


def _run(net, batch: int = 3, value: float | None = None):
    p = net.patch_size
    make = (lambda: torch.full((batch, 1, p, p), value)) if value is not None else (lambda: torch.rand(batch, 1, p, p))
    return net(make(), make()) if net.kind == "metric" else net(make())


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_shapes_and_gradients(name):
    torch.manual_seed(0)
    net = build_network(name)
    assert net.patch_size == PATCH_SIZES.get(name, 64)
    out = _run(net)
    if net.kind == "metric":
        assert out.shape == ((3, 2) if name == "matchnet" else (3,))
        assert net.scores(out).shape == (3,)
    else:
        assert out.shape == (3, DESCRIPTOR_DIMS[name]) and net.descriptor_dim == DESCRIPTOR_DIMS[name]
    out.square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("train", [True, False])
def test_constant_patches_give_finite_outputs(name, train):
    net = build_network(name).train(train)
    for value in (0.0, 0.5, 1.0):
        assert torch.isfinite(_run(net, 2, value)).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_wrong_input_shape_raises(name):
    net = build_network(name)
    other = 64 if net.patch_size == 32 else 32
    wrong = torch.rand(2, 1, other, other)
    with pytest.raises(ValueError, match=r"\(B, 1, "):
        net(wrong, wrong) if net.kind == "metric" else net(wrong)
    with pytest.raises(ValueError):
        rgb = torch.rand(2, 3, net.patch_size, net.patch_size)
        net(rgb, rgb) if net.kind == "metric" else net(rgb)


def test_unknown_network_name():
    with pytest.raises(ValueError, match="unknown network"):
        build_network("sift")


def test_matchnet_tower_is_caffe_sized_and_bottleneck():
    net = MatchNet()
    x = torch.rand(2, 1, 64, 64)
    assert net.tower.features(x).shape == (2, 64, 8, 8)  # ceil-mode pooling: 64 -> 32 -> 16 -> 8
    assert net.describe(x).shape == (2, 4096)
    small = MatchNet(bottleneck=128)
    assert small.describe(x).shape == (2, 128) and small.metric[0].in_features == 256
    # the two-step use gives the same logits as the pair forward
    torch.testing.assert_close(net.compare(net.describe(x), net.describe(x.flip(0))), net(x, x.flip(0)))
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    assert net.scores(logits).tolist() == [2.0, -2.0]


def test_matchnet_he_init_keeps_the_signal_alive():
    """At init the features of different patches must differ (PyTorch's default init shrinks
    them through the eight ReLU layers, so the metric net starts with no gradient signal)."""
    x = torch.rand(16, 1, 64, 64)

    def feature_spread(net):
        with torch.no_grad():
            return net.describe(x).std(0).mean().item()

    torch.manual_seed(0)
    he = MatchNet()
    torch.manual_seed(0)
    default = MatchNet(init="default")
    assert feature_spread(he) > 10 * feature_spread(default)
    assert he.metric[-1].weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert all(m.bias.abs().max() == 0 for m in he.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="init"):
        MatchNet(init="xavier")


def test_matchnet_preprocessing_maps_128_to_zero():
    net = MatchNet()
    seen = {}
    net.tower.features[0].register_forward_hook(lambda m, i, o: seen.update(input=i[0]))
    net.describe(torch.full((1, 1, 64, 64), 128 / 255))
    assert seen["input"].abs().max() < 1e-5


def test_siamese_shares_weights_pseudo_siamese_does_not():
    siam = DeepCompareSiamese()
    assert siam.tower2 is siam.tower1
    pseudo = build_network("deepcompare_pseudosiam")
    assert pseudo.tower2 is not pseudo.tower1
    x = torch.rand(2, 1, 64, 64)
    assert not torch.allclose(pseudo.describe(x, 1), pseudo.describe(x, 2))
    assert siam.describe(x).shape == (2, 256)


def test_central_surround_views():
    x = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64)
    torch.testing.assert_close(center_crop(x, 32), x[..., 16:48, 16:48])
    net = DeepCompare2ch2Stream()
    seen = {}
    net.centre[0].register_forward_hook(lambda m, i, o: seen.update(centre=i[0]))
    net.surround[0].register_forward_hook(lambda m, i, o: seen.update(surround=i[0]))
    p1, p2 = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    net(p1, p2)
    assert seen["centre"].shape == seen["surround"].shape == (2, 2, 32, 32)
    centred = p1 - p1.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(seen["centre"][:, :1], (centred * 255 / 256)[..., 16:48, 16:48])
    torch.testing.assert_close(seen["surround"][:, :1], F.avg_pool2d(centred * 255 / 256, 2))
    assert DeepCompareSiamese2Stream().describe(p1).shape == (2, 512)


def test_snet_similarity_in_unit_interval():
    for net in (SNet(), SNet(central_surround=True), build_network("cs_snet")):
        out = _run(net, 4)
        assert ((out > 0) & (out < 1)).all()
    assert SNet(central_surround=True).feature_dim == 512


def test_unit_norm_descriptors():
    x = torch.rand(4, 1, 64, 64)
    for net in (TNet(), L2Net(), HardNet()):
        patches = x if net.patch_size == 64 else F.interpolate(x, size=32, mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(patches).norm(dim=1), torch.ones(4))
    halves = CSL2Net()(x).view(4, 2, 128).norm(dim=2)
    torch.testing.assert_close(halves, torch.ones(4, 2))


def test_l2net_intermediate_features():
    net = L2Net()
    desc, maps = net(torch.rand(3, 1, 32, 32), return_features=True)
    assert desc.shape == (3, 128) and [m.shape for m in maps] == [(3, 32 * 32 * 32), (3, 128)]
    torch.testing.assert_close(l2_normalize(maps[1]), desc)
    cs_desc, cs_maps = CSL2Net()(torch.rand(3, 1, 64, 64), return_features=True)
    assert cs_desc.shape == (3, 256) and len(cs_maps) == 4
    assert L2Net().features[0].bias is not None and HardNet().features[0].bias is None


def test_cs_l2net_surround_is_the_half_resized_patch():
    net = CSL2Net().eval()
    x = torch.rand(2, 1, 64, 64)
    expected_surround = net.surround(F.avg_pool2d(x, 2))  # bilinear x0.5 = 2x2 mean
    torch.testing.assert_close(net(x)[:, :128], expected_surround)
    torch.testing.assert_close(net(x)[:, 128:], net.centre(x[..., 16:48, 16:48]))


@pytest.mark.parametrize("central_surround", [False, True])
def test_binary_l2net_values_and_training_path(central_surround):
    net = BinaryL2Net(central_surround=central_surround)
    size = 64 if central_surround else 32
    x = torch.rand(5, 1, size, size)
    codes = net(x)
    assert codes.shape == (5, 256 if central_surround else 128)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert net.distance == "hamming"
    net.eval()
    torch.testing.assert_close(net(x), torch.where(net.float_descriptors(x) >= 0, 1.0, -1.0))


def test_sign_straight_through_and_hamming():
    x = torch.tensor([[-0.3, 0.0, 2.0]], requires_grad=True)
    y = sign_straight_through(x)
    assert y.tolist() == [[-1.0, 1.0, 1.0]]
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [[1.0, 2.0, 3.0]]
    a = torch.tensor([[1.0, 1, -1, -1], [1, 1, 1, 1]])
    b = torch.tensor([[1.0, -1, -1, 1], [1, 1, 1, 1]])
    assert hamming_from_signs(a, b).tolist() == [2.0, 0.0]


def test_standardize_and_l2norm_of_constant_patch():
    x = torch.full((2, 1, 4, 4), 0.7)
    assert standardize_patches(x).abs().max() == 0
    zero = torch.zeros(2, 3, requires_grad=True)
    out = l2_normalize(zero)
    out.sum().backward()
    assert out.abs().max() == 0 and torch.isfinite(zero.grad).all()


def test_input_eps_is_a_contrast_floor():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    faint = 0.5 + 0.01 * (x - 0.5)  # the same pattern at 1 % of the contrast (std ~0.003)
    # hand case: the standardised patch's std is std / (std + eps)
    std = faint.std(dim=(1, 2, 3))
    torch.testing.assert_close(standardize_patches(faint, 0.05).std(dim=(1, 2, 3)), std / (std + 0.05))
    # the papers' tiny eps: contrast-invariant, so the faint copy describes like the original
    invariant = L2Net().eval()
    with torch.no_grad():
        torch.testing.assert_close(invariant(faint), invariant(x), atol=1e-4, rtol=0)
    # a floor well above the faint copy's contrast: it is no longer stretched to the original's
    floored = L2Net(input_eps=0.05).eval()
    floored.load_state_dict(invariant.state_dict())
    with torch.no_grad():
        assert (floored(faint) - floored(x)).norm(dim=1).min() > 0.1
        # and a patch with contrast far above the floor is hardly affected
        torch.testing.assert_close(floored(x), invariant(x), atol=0.1, rtol=0)
    assert CSL2Net(input_eps=0.05).centre.input_eps == CSL2Net(input_eps=0.05).surround.input_eps == 0.05


def test_subtractive_normalization_hand_cases():
    kernel = gaussian_kernel2d(5)
    assert kernel.sum().item() == pytest.approx(1.0) and kernel[2, 2] == kernel.max()
    # a constant map (even at the borders, thanks to the coverage correction) becomes zero
    flat = torch.full((1, 3, 7, 7), 2.5)
    assert subtractive_normalization(flat, kernel).abs().max() < 1e-5
    # the mean is taken over all channels: two channels 0 and 2 become -1 and +1
    two = torch.cat([torch.zeros(1, 1, 6, 6), torch.full((1, 1, 6, 6), 2.0)], dim=1)
    out = subtractive_normalization(two, kernel)
    torch.testing.assert_close(out, torch.cat([-torch.ones(1, 1, 6, 6), torch.ones(1, 1, 6, 6)], dim=1))
    # an interior impulse loses k[2, 2] / C at its own position
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    assert subtractive_normalization(impulse, kernel)[0, 0, 4, 4].item() == pytest.approx(1 - kernel[2, 2].item())


def test_gradcheck_subtractive_normalization_and_l2norm():
    kernel = gaussian_kernel2d(5).double()
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: subtractive_normalization(t, kernel), (x,))
    v = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l2_normalize, (v,))


def test_deepdesc_stage_sizes():
    net = DeepDesc()
    sizes = []
    for layer in net.features:
        layer.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    net(torch.rand(1, 1, 64, 64))
    # 64 -7-> 58 -pool2-> 29 -6-> 24 -pool3-> 8 -5-> 4 -pool4-> 1
    assert sizes[2] == (32, 29, 29) and sizes[6] == (64, 8, 8) and sizes[10] == (128, 1, 1)
    lp = torch.nn.LPPool2d(2, 2, stride=2)(torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]]))
    assert lp.item() == pytest.approx(5.0)  # L2 pooling = sqrt of the sum of squares


def test_deepdesc_per_patch_input_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    x = 0.2 + 0.3 * torch.rand(4, 1, 64, 64)
    changed = 0.1 + 0.5 * x  # a darker, flatter view of the same patches (leuven's kind of change)
    paper, per_patch = DeepDesc().eval(), DeepDesc(input_eps=1e-3).eval()
    per_patch.load_state_dict(paper.state_dict())
    with torch.no_grad():
        assert (paper(changed) - paper(x)).abs().max() > 0.1  # the dataset normalisation sees the change
        # each patch standardised: the same descriptor up to the contrast floor's share of the std
        assert torch.allclose(per_patch(changed), per_patch(x), atol=2e-2)
        standardised = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-3)
        assert torch.allclose(per_patch(x), paper(standardised * paper.std + paper.mean), atol=1e-5)



def test_tnet_per_patch_input_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    x = 0.2 + 0.3 * torch.rand(4, 1, 64, 64)
    changed = 0.1 + 0.5 * x
    paper, per_patch = TNet().eval(), TNet(input_eps=1e-3).eval()
    per_patch.load_state_dict(paper.state_dict())
    with torch.no_grad():
        assert (paper(changed) - paper(x)).abs().max() > 0.05  # mean subtraction alone sees the contrast change
        assert torch.allclose(per_patch(changed), per_patch(x), atol=2e-2)
        standardised = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-3)
        assert torch.allclose(per_patch(x), paper(standardised + paper.mean), atol=1e-5)

@pytest.mark.parametrize("net_class", [DeepCompare2ch2Stream, DeepCompare2ch, DeepCompareSiamese2Stream])
def test_deepcompare_per_patch_input_ignores_brightness_and_contrast(net_class):
    torch.manual_seed(0)
    x, y = 0.2 + 0.3 * torch.rand(2, 4, 1, 64, 64)
    paper, per_patch = net_class().eval(), net_class(input_eps=1e-6).eval()
    per_patch.load_state_dict(paper.state_dict())
    with torch.no_grad():
        # a darker, flatter view of the first patches: the paper's mean subtraction sees it,
        # the standardised input does not (eps 1e-6: no contrast floor to speak of)
        assert (paper(0.1 + 0.5 * x, y) - paper(x, y)).abs().max() > 1e-4
        torch.testing.assert_close(per_patch(0.1 + 0.5 * x, y), per_patch(x, y), rtol=1e-4, atol=1e-6)

        def standardised(p):  # zero mean, so the paper's input only rescales it by 255 / 256
            return (p - p.mean((1, 2, 3), keepdim=True)) / (p.std((1, 2, 3), keepdim=True) + 1e-6) * (256.0 / 255.0)

        torch.testing.assert_close(per_patch(x, y), paper(standardised(x), standardised(y)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("ours", "theirs"), [(HardNet, kornia.feature.HardNet), (TFeat, kornia.feature.TFeat)])
def test_identical_to_kornia_given_its_weights(ours, theirs):
    torch.manual_seed(0)
    reference = theirs(pretrained=False)
    # give the BatchNorms non-trivial running statistics first
    with torch.no_grad():
        reference.train()(torch.rand(64, 1, 32, 32))
    net = ours()
    net.load_state_dict(reference.state_dict(), strict=True)
    net.eval(), reference.eval()
    x = torch.rand(16, 1, 32, 32)
    with torch.no_grad():
        # the HardNet code standardises with eps 1e-7, kornia with 1e-6: equal to float precision
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-6)
        if ours is HardNet:
            same_eps = HardNet(input_eps=1e-6).eval()
            same_eps.load_state_dict(reference.state_dict(), strict=True)
            torch.testing.assert_close(same_eps(x), reference(x), rtol=1e-6, atol=1e-7)
    # and the other way round: kornia loads our state_dict
    theirs(pretrained=False).load_state_dict(net.state_dict(), strict=True)


def test_hardnet_init_and_dropout():
    net = HardNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    assert all(isinstance(m, torch.nn.BatchNorm2d) and not m.affine for m in net.features if isinstance(m, torch.nn.BatchNorm2d))
    assert net.features[18].p == 0.3
    w = convs[1].weight.flatten(1)  # 32 x 288: orthogonal rows scaled by the gain 0.6
    torch.testing.assert_close(w @ w.T, 0.36 * torch.eye(32), atol=1e-5, rtol=0)
