"""Losses against hand-computed values (and brute-force / torch references where one exists)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from descriptors import losses as L

SQRT_EPS = math.sqrt(1e-6)  # HardNet's distance adds 1e-6 under the root


def test_softmax_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    # both pairs get probability 3/4 on their true class
    assert L.softmax_cross_entropy(logits, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(4 / 3))


def test_hinge_loss():
    output = torch.tensor([0.5, -2.0, -0.5, 3.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # 1 - 0.5, 1 + 2, 1 - 0.5, 1 + 3
    assert L.hinge_loss(output, labels).item() == pytest.approx((0.5 + 3.0 + 0.5 + 4.0) / 4)
    assert L.hinge_loss(torch.tensor([2.0, -1.5]), torch.tensor([1.0, 0.0])).item() == 0.0


def test_pairwise_hinge_with_fracking():
    distances = torch.tensor([1.0, 3.0, 0.5, 5.0, 2.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    # positives lose d: 1, 3; negatives max(0, 4 - d): 3.5, 0, 2
    assert L.pairwise_hinge_loss(distances, labels, margin=4.0).item() == pytest.approx(0.5 * (2.0 + 5.5 / 3))
    # mining factor 2: ceil(2/2) = 1 hardest positive (3), ceil(3/2) = 2 hardest negatives (3.5, 2)
    mined = L.pairwise_hinge_loss(distances, labels, margin=4.0, positive_mining=2, negative_mining=2)
    assert mined.item() == pytest.approx(0.5 * (3.0 + 2.75))
    # back-propagation reaches only the kept pairs
    d = distances.clone().requires_grad_(True)
    L.pairwise_hinge_loss(d, labels, margin=4.0, positive_mining=8, negative_mining=8).backward()
    assert (d.grad != 0).tolist() == [False, True, True, False, False]


def test_triplet_margin_loss_anchor_swap():
    a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    # d+ = 1, d(a, n) = 2, d(p, n) = 1: without swap 2 + 1 - 2 = 1, with swap 2 + 1 - 1 = 2
    assert L.triplet_margin_loss(a, p, n, margin=2.0, swap=False).item() == pytest.approx(1.0, abs=1e-5)
    assert L.triplet_margin_loss(a, p, n, margin=2.0, swap=True).item() == pytest.approx(2.0, abs=1e-5)
    torch.manual_seed(0)
    a, p, n = torch.randn(3, 16, 8).unbind(0)
    for swap in (False, True):
        torch.testing.assert_close(L.triplet_margin_loss(a, p, n, 2.0, swap), F.triplet_margin_loss(a, p, n, margin=2.0, swap=swap))


def test_ratio_loss():
    a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # d+ = 1, d- = min(2, sqrt(5)) = 2: s+ = e / (e + e^2) = 1 / (1 + e); loss = s+^2
    assert L.ratio_loss(a, p, n).item() == pytest.approx((1 / (1 + math.e)) ** 2, rel=1e-4)
    far = torch.tensor([[0.0, 50.0]])
    assert L.ratio_loss(a, p, far).item() < 1e-12


def test_global_loss_hand_cases():
    # margin satisfied: variances only (population): 0.01 + 0.04
    value = L.global_loss(torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.9]), margin=0.4, weight=0.8)
    assert value.item() == pytest.approx(0.05)
    # margin violated: 0.01 + 0.01 + 0.8 * (0.5 - 0.6 + 0.4)
    value = L.global_loss(torch.tensor([0.4, 0.6]), torch.tensor([0.5, 0.7]), margin=0.4, weight=0.8)
    assert value.item() == pytest.approx(0.02 + 0.24)


def test_global_loss_triplet_and_pair_forms():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # d+ = 2/4 = 0.5 and 0
    n = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])  # d- = 4/4 = 1 and 0.5
    # var(d+) = 0.0625, var(d-) = 0.0625, mu+ - mu- + 0.4 = 0.25 - 0.75 + 0.4 < 0
    assert L.global_loss_triplet(a, p, n).item() == pytest.approx(0.125)
    distances = torch.tensor([0.5, 0.0, 1.0, 0.5])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert L.global_loss_pairs(distances, labels).item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match="positive and negative"):
        L.global_loss_pairs(distances, torch.ones(4))


def test_tloss_and_tgloss():
    a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # d+ = 2, d- = 1: 1 - 1 / 2.01
    expected = 1 - 1 / 2.01
    assert L.triplet_ratio_hinge_loss(a, p, n, margin=0.01).item() == pytest.approx(expected, rel=1e-5)
    assert L.triplet_ratio_hinge_loss(a, n, p, margin=0.01).item() == 0.0  # d+ = 1, d- = 2
    # one triplet: zero variances, gloss = 0.8 * max(0, 4/4 - 1/4 + 0.4)
    assert L.tgloss(a, p, n, gloss_weight=0.5).item() == pytest.approx(expected + 0.5 * 0.8 * 1.15, rel=1e-5)


def test_l2net_e1_hand_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d_match, d_other = SQRT_EPS, math.sqrt(2 + 1e-6)
    # every row and column: -log(e^{-d_match} / (e^{-d_match} + e^{-d_other}))
    expected = math.log(1 + math.exp(-(d_other - d_match)))
    assert L.l2net_e1(a, a).item() == pytest.approx(expected, rel=1e-5)
    # column term: anchor 0 is nearer to positive 1 than anchor 1 is -> larger loss than a row-only case
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    rows = -torch.log_softmax(-L.distance_matrix(a, p), 1).diagonal()
    cols = -torch.log_softmax(-L.distance_matrix(a, p), 0).diagonal()
    assert L.l2net_e1(a, p).item() == pytest.approx(0.5 * (rows + cols).mean().item())


def test_l2net_e2_decorrelation():
    correlated = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert L.decorrelation_penalty(correlated).item() == pytest.approx(2.0, rel=1e-5)  # r12 = r21 = 1
    anti = torch.tensor([[1.0, -2.0], [2.0, -4.0], [3.0, -6.0]])
    assert L.decorrelation_penalty(anti).item() == pytest.approx(2.0, rel=1e-5)  # r = -1
    uncorrelated = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert L.decorrelation_penalty(uncorrelated).item() == pytest.approx(0.0, abs=1e-7)
    assert L.l2net_e2(correlated, uncorrelated[:3]).item() == pytest.approx(0.5 * (2.0 + L.decorrelation_penalty(uncorrelated[:3]).item()), rel=1e-5)


def test_l2net_e3_inner_products():
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # G = I: each row/column softmax gives e / (e + 1) on the diagonal
    assert L.l2net_e3(f, f).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    scaled = 3 * f
    assert L.l2net_e3(scaled, scaled).item() == pytest.approx(math.log(1 + math.exp(-9)), rel=1e-3)
    assert L.l2net_e3(scaled, scaled, normalize=True).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    maps = [torch.rand(2, 2, 3, 3), torch.rand(2, 5)]
    total = L.l2net_loss(f, f, maps, maps, e2_weight=0.0, e3_weight=2.0, e3_normalize=False)
    e3 = (L.l2net_e3(maps[0], maps[0]) + L.l2net_e3(maps[1], maps[1])) / 2
    assert total.item() == pytest.approx((L.l2net_e1(f, f) + 2 * e3).item(), rel=1e-6)


def test_l2net_total_keeps_the_papers_balance_of_e1_and_e2():
    """The paper sums E1 over the p pairs and adds E2 (a sum over dimension pairs) once: with E1
    averaged, E2 enters divided by p, so the total is the paper's E1 + E2 divided by p."""
    torch.manual_seed(0)
    a, p = torch.randn(6, 4), torch.randn(6, 4)
    total = L.l2net_loss(a, p, e2_weight=1.0, e3_weight=0.0)
    paper = 6 * L.l2net_e1(a, p) + L.l2net_e2(a, p)
    assert total.item() == pytest.approx(paper.item() / 6, rel=1e-6)
    # E2 does not grow with the batch (the same rows twice: the same correlations), so its share
    # of the per-pair total halves when p doubles, as in the paper's sum
    twice_a, twice_p = torch.cat([a, a]), torch.cat([p, p])
    assert L.l2net_e2(twice_a, twice_p).item() == pytest.approx(L.l2net_e2(a, p).item(), rel=1e-5)
    doubled = L.l2net_loss(twice_a, twice_p, e2_weight=1.0, e3_weight=0.0) - L.l2net_e1(twice_a, twice_p)
    assert doubled.item() == pytest.approx(L.l2net_e2(a, p).item() / 12, rel=1e-5)


def test_distance_matrix_matches_cdist():
    torch.manual_seed(0)
    a, b = torch.randn(5, 7), torch.randn(4, 7)
    torch.testing.assert_close(L.distance_matrix(a, b, eps=0.0), torch.cdist(a, b), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(L.distance_matrix(a, a)).all() and L.distance_matrix(a, a).diagonal().max() < 1e-2


def test_hardnet_loss_hand_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    # d(a_i, p_i) = sqrt(0.8), every negative sqrt(0.4): 1 + sqrt(0.8) - sqrt(0.4) each
    expected = 1 + math.sqrt(0.8 + 1e-6) - math.sqrt(0.4 + 1e-6)
    assert L.hardnet_loss(a, p).item() == pytest.approx(expected, rel=1e-6)


def test_hardnet_loss_ignores_duplicates_and_swaps_anchors():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # d(a0, p1) = 0.001 < 0.008 is a suspected duplicate (+10); row 0 then has no real negative,
    # but its column (anchor swap) has d(a1, p0) = sqrt(2): loss0 = max(0, 1 + 0.001 - sqrt 2) = 0.
    # Row 1: positive sqrt(2), hardest negative d(a1, p0) = sqrt(2): loss1 = 1.
    assert L.hardnet_loss(a, p).item() == pytest.approx(0.5, rel=1e-5)
    # without the swap row 0 only has the masked entry (10.001): loss0 = 0 as well, row 1 the same
    assert L.hardnet_loss(a, p, anchor_swap=False).item() == pytest.approx(0.5, rel=1e-5)
    # the swap matters when a column holds a harder negative than the row
    a2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p2 = torch.tensor([[0.0, -1.0], [0.0, 1.0], [-0.6, 0.8]])
    assert L.hardnet_loss(a2, p2, anchor_swap=True) > L.hardnet_loss(a2, p2, anchor_swap=False)


def test_hardnet_loss_matches_brute_force():
    torch.manual_seed(1)
    a, p = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    d = [[math.sqrt(float(((a[i] - p[j]) ** 2).sum()) + 1e-6) for j in range(6)] for i in range(6)]
    losses = []
    for i in range(6):
        negatives = [d[i][j] for j in range(6) if j != i and d[i][j] >= 0.008] + [d[k][i] for k in range(6) if k != i and d[k][i] >= 0.008]
        losses.append(max(0.0, 1.0 + d[i][i] - min(negatives)))
    assert L.hardnet_loss(a, p).item() == pytest.approx(sum(losses) / 6, rel=1e-4)


def test_gradcheck_losses_in_double():
    torch.manual_seed(0)
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    n = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L.hardnet_loss, (a, p))
    assert torch.autograd.gradcheck(L.l2net_e1, (a, p))
    assert torch.autograd.gradcheck(L.l2net_e2, (a, p))
    assert torch.autograd.gradcheck(L.ratio_loss, (a, p, n))
    assert torch.autograd.gradcheck(L.global_loss_triplet, (a, p, n))
