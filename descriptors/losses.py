"""Training losses of the patch matching methods (pure functions).

Conventions: ``labels`` are floats, 1 = matching pair, 0 = not; descriptors are rows;
every loss returns a scalar averaged over the batch unless its docstring says otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# -- metric learning (pair -> score) -------------------------------------------------------
def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MatchNet: two-class cross-entropy of the metric network's logits (class 1 = match).

    Shape:
        logits (B, 2), labels (B,) -> ()
    """
    return F.cross_entropy(logits, labels.long())


def hinge_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DeepCompare ``nn.MarginCriterion``: ``mean(max(0, 1 - y * o))`` with ``y = +1 / -1``.

    Shape:
        output (B,), labels (B,) -> ()
    """
    y = 2.0 * labels.to(output) - 1.0
    return torch.clamp(1.0 - y * output, min=0).mean()


# -- distances -----------------------------------------------------------------------------
def pair_distances(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Row-wise Euclidean distance ``||a - b + eps||`` (``F.pairwise_distance``'s convention).

    Shape:
        (B, D), (B, D) -> (B,)
    """
    return F.pairwise_distance(a, b, p=2.0, eps=eps)


def distance_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """HardNet ``distance_matrix_vector``: ``sqrt(|a|^2 + |b|^2 - 2 a.b + eps)`` (rounding
    below zero clamped first, so a duplicate row gives sqrt(eps), not NaN).

    Shape:
        (B, D), (N, D) -> (B, N)
    """
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return torch.sqrt(squared.clamp(min=0) + eps)


# -- DeepDesc ------------------------------------------------------------------------------
def _hardest_mean(losses: torch.Tensor, ratio: float) -> torch.Tensor:
    if losses.numel() == 0:
        return losses.sum()
    keep = max(1, math.ceil(losses.numel() / ratio))
    return torch.topk(losses, keep).values.mean()


def pairwise_hinge_loss(
    distances: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 4.0,
    positive_mining: float = 1.0,
    negative_mining: float = 1.0,
) -> torch.Tensor:
    """DeepDesc hinge embedding with "fracking" (hard mining).

    Per pair ``l = d`` for a match and ``max(0, C - d)`` otherwise. With a mining factor
    ``r = K_f / K_b > 1`` only the ``ceil(n / r)`` largest losses of that kind are kept (DeepDesc
    forwards ``r`` times more pairs than it back-propagates: ``p8_n8`` = factor 8 for both).
    The positive and negative means are added, so each kind weighs half whatever the balance.

    Shape:
        distances (B,), labels (B,) -> ()
    """
    positive = labels > 0.5
    positive_losses = distances[positive]
    negative_losses = torch.clamp(margin - distances[~positive], min=0)
    return 0.5 * (_hardest_mean(positive_losses, positive_mining) + _hardest_mean(negative_losses, negative_mining))


# -- TFeat ---------------------------------------------------------------------------------
def _triplet_distances(anchor, positive, negative, swap: bool) -> tuple[torch.Tensor, torch.Tensor]:
    d_positive = pair_distances(anchor, positive)
    d_negative = pair_distances(anchor, negative)
    if swap:  # anchor swap: the harder of d(a, n) and d(p, n)
        d_negative = torch.minimum(d_negative, pair_distances(positive, negative))
    return d_positive, d_negative


def triplet_margin_loss(anchor, positive, negative, margin: float = 2.0, swap: bool = True) -> torch.Tensor:
    """TFeat margin ranking loss ``mean(max(0, margin + d+ - d-))``, ``d-`` with anchor swap
    (equals ``F.triplet_margin_loss(a, p, n, margin, swap=swap)``).

    Shape:
        (B, D) x 3 -> ()
    """
    d_positive, d_negative = _triplet_distances(anchor, positive, negative, swap)
    return torch.clamp(margin + d_positive - d_negative, min=0).mean()


def ratio_loss(anchor, positive, negative, swap: bool = True) -> torch.Tensor:
    """TFeat / PN-Net ratio loss (``DistanceRatioCriterion``): softmax over ``(d-, d+)``, MSE to
    the target ``(1, 0)``; both entries err by ``s+ = e^{d+} / (e^{d+} + e^{d-})``, so the
    two-element MSE is ``mean(s+^2)``.

    Shape:
        (B, D) x 3 -> ()
    """
    d_positive, d_negative = _triplet_distances(anchor, positive, negative, swap)
    soft = torch.softmax(torch.stack([d_negative, d_positive], dim=1), dim=1)
    target = torch.tensor([1.0, 0.0], device=soft.device, dtype=soft.dtype).expand_as(soft)
    return F.mse_loss(soft, target)


# -- GLoss ---------------------------------------------------------------------------------
def global_loss(
    positive_distances: torch.Tensor, negative_distances: torch.Tensor, margin: float = 0.4, weight: float = 0.8
) -> torch.Tensor:
    """The global loss: ``var(d+) + var(d-) + lambda * max(0, mean(d+) - mean(d-) + alpha)``
    with batch (population) variances; ``alpha`` = ``margin``, ``lambda`` = ``weight``.

    Shape:
        (P,), (N,) -> ()
    """
    variances = positive_distances.var(unbiased=False) + negative_distances.var(unbiased=False)
    return variances + weight * torch.clamp(positive_distances.mean() - negative_distances.mean() + margin, min=0)


def squared_quarter_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GLoss distance ``||a - b||^2 / 4``: in [0, 1] for unit descriptors.

    Shape:
        (B, D), (B, D) -> (B,)
    """
    return ((a - b) ** 2).sum(dim=1) / 4.0


def global_loss_triplet(anchor, positive, negative, margin: float = 0.4, weight: float = 0.8) -> torch.Tensor:
    """Triplet form of the global loss (``GlobalCriterionTriplet``): d = ||a - b||^2 / 4.

    Shape:
        (B, D) x 3 -> ()
    """
    return global_loss(squared_quarter_distance(anchor, positive), squared_quarter_distance(anchor, negative), margin, weight)


def global_loss_pairs(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.4, weight: float = 0.8) -> torch.Tensor:
    """Pair form of the global loss: distances of labelled pairs (for SNet, ``1 - similarity``,
    which gives J3 = var + var + lambda * max(0, mu(s-) - mu(s+) + m)). Needs both kinds.

    Shape:
        distances (B,), labels (B,) -> ()
    """
    positive = labels > 0.5
    if positive.all() or not positive.any():
        raise ValueError("global_loss_pairs needs positive and negative pairs in the batch")
    return global_loss(distances[positive], distances[~positive], margin, weight)


def triplet_ratio_hinge_loss(anchor, positive, negative, margin: float = 0.01) -> torch.Tensor:
    """GLoss paper's triplet loss J2 = ``mean(max(0, 1 - d- / (d+ + m)))`` (TNet-TLoss).

    Shape:
        (B, D) x 3 -> ()
    """
    d_positive, d_negative = _triplet_distances(anchor, positive, negative, swap=False)
    return torch.clamp(1.0 - d_negative / (d_positive + margin), min=0).mean()


def tgloss(anchor, positive, negative, margin: float = 0.01, gloss_weight: float = 1.0, gloss_margin: float = 0.4, gloss_lambda: float = 0.8) -> torch.Tensor:
    """TNet-TGLoss: J2 + gamma * J1 (triplet loss plus the global loss, ``gamma = gloss_weight``)."""
    return triplet_ratio_hinge_loss(anchor, positive, negative, margin) + gloss_weight * global_loss_triplet(
        anchor, positive, negative, gloss_margin, gloss_lambda
    )


# -- L2-Net --------------------------------------------------------------------------------
def _matching_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """-1/2 * mean_i (log softmax_row(logits)_ii + log softmax_col(logits)_ii)."""
    rows = torch.log_softmax(logits, dim=1).diagonal()
    cols = torch.log_softmax(logits, dim=0).diagonal()
    return -0.5 * (rows + cols).mean()


def l2net_e1(anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """L2-Net E1: D_ij = ||x_i - y_j||, S = exp(2 - D); the match d_ii must win its row and its
    column: -1/2 (log s^r_ii + log s^c_ii), averaged over the p pairs (the paper sums).

    Shape:
        (p, D), (p, D) -> ()
    """
    return _matching_cross_entropy(2.0 - distance_matrix(anchor, positive))


def decorrelation_penalty(descriptors: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Sum of squared off-diagonal correlations between descriptor dimensions over the batch.

    Shape:
        (p, D) -> ()
    """
    centred = descriptors - descriptors.mean(dim=0, keepdim=True)
    centred = centred / (centred.norm(dim=0, keepdim=True) + eps)
    correlation = centred.T @ centred
    off_diagonal = correlation - torch.diag_embed(correlation.diagonal())
    return (off_diagonal**2).sum()


def l2net_e2(anchor: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """L2-Net E2 = 1/2 (sum_{i!=j} r1_ij^2 + sum_{i!=j} r2_ij^2): decorrelated dimensions.

    The q x q correlation matrix of p descriptors has rank < p, so its off-diagonal sum is at
    least q^2 / (p - 1) - q: with p <= q pairs per batch E2 cannot reach 0.

    Shape:
        (p, D), (p, D) -> ()
    """
    return 0.5 * (decorrelation_penalty(anchor) + decorrelation_penalty(positive))


def l2net_e3(features_anchor: torch.Tensor, features_positive: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """L2-Net E3: E1's row/column softmax on inner products G = F1^T F2 of flattened
    intermediate feature maps (matching pairs must have the largest similarity).
    ``normalize=True`` takes cosine similarities instead (an option, not the paper: the raw
    inner products of a 32x32x32 BN map are in the thousands).

    Shape:
        (p, K), (p, K) -> ()
    """
    a, b = features_anchor.flatten(1), features_positive.flatten(1)
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return _matching_cross_entropy(a @ b.T)


def l2net_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    features_anchor: list[torch.Tensor] | None = None,
    features_positive: list[torch.Tensor] | None = None,
    e2_weight: float = 1.0,
    e3_weight: float = 1.0,
    e3_normalize: bool = False,
) -> torch.Tensor:
    """(E1 + e2_weight * E2 + e3_weight * E3) / p: L2-Net's total, per pair (E3: the mean over
    the supervised maps, the network's first and last BN outputs).

    The paper sums E1 and E3 over the p pairs of a batch; here they are averaged (as HardNet's
    ``loss_L2Net`` does), so E2, a sum over the q x q dimension pairs that does not grow with p,
    is divided by p to keep the paper's balance. Added whole to the averaged E1 it outweighed
    E1 p times over (about 200 against 5 at p = 192), and longer runs got worse, not better."""
    loss = l2net_e1(anchor, positive)
    if e2_weight:
        loss = loss + e2_weight * l2net_e2(anchor, positive) / anchor.shape[0]
    if e3_weight and features_anchor:
        e3 = torch.stack([l2net_e3(fa, fp, e3_normalize) for fa, fp in zip(features_anchor, features_positive)]).mean()
        loss = loss + e3_weight * e3
    return loss


# -- HardNet -------------------------------------------------------------------------------
def hardnet_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float = 1.0, anchor_swap: bool = True) -> torch.Tensor:
    """HardNet ``loss_HardNet`` (batch_reduce ``min``, loss ``triplet_margin``).

    Distances ``sqrt(|a|^2 + |p|^2 - 2 a.p + 1e-6)``; +10 on the diagonal and on entries below
    0.008 (suspected duplicates); the hardest negative is the row minimum, with anchor swap also
    the column minimum; ``mean(clamp(margin + d(a_i, p_i) - min_neg_i, 0))``.

    Shape:
        (B, D), (B, D) -> ()
    """
    distances = distance_matrix(anchor, positive)
    positives = distances.diagonal()
    eye = torch.eye(distances.shape[0], device=distances.device, dtype=distances.dtype)
    negatives = distances + 10.0 * eye
    negatives = negatives + 10.0 * (negatives < 0.008).to(distances.dtype)
    hardest = negatives.min(dim=1).values
    if anchor_swap:
        hardest = torch.minimum(hardest, negatives.min(dim=0).values)
    return torch.clamp(margin + positives - hardest, min=0).mean()


LOSSES = {
    "softmax_ce": softmax_cross_entropy,
    "hinge": hinge_loss,
    "pair_hinge": pairwise_hinge_loss,
    "triplet_margin": triplet_margin_loss,
    "ratio": ratio_loss,
    "gloss_triplet": global_loss_triplet,
    "gloss_pair": global_loss_pairs,
    "tloss": triplet_ratio_hinge_loss,
    "tgloss": tgloss,
    "l2net": l2net_loss,
    "hardnet": hardnet_loss,
}
