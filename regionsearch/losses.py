"""Losses of the search-path matcher: REINFORCE with a learned baseline, and the
contrastive feature loss of the poster (Hadsell et al. form, unsquared distance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reinforce_loss(log_probs: torch.Tensor, baselines: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Policy-gradient loss ``-sum_t log pi(a_t) (R - b_t)``, averaged over the batch.

    The final reward is credited to every move (as RAM does); the baseline is detached
    so that this term only trains the policy.

    Shape:
        log_probs, baselines: (T, B); reward: (B,) -> scalar
    """
    advantage = reward.unsqueeze(0) - baselines.detach()
    return -(log_probs * advantage).sum(dim=0).mean()


def baseline_loss(baselines: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the learned baseline against the reward it predicts."""
    return F.mse_loss(baselines, reward.unsqueeze(0).expand_as(baselines))


def contrastive_loss(query_feature: torch.Tensor, window_feature: torch.Tensor, matched: torch.Tensor, margin: float) -> torch.Tensor:
    """``d(q, g)`` when the window matched the truth, ``max(0, m - d(q, g))`` otherwise.

    Shape:
        query_feature, window_feature: (B, D); matched: (B,) bool -> scalar
    """
    distance = (query_feature - window_feature).norm(dim=1)
    matched = matched.to(distance.dtype)
    return (matched * distance + (1 - matched) * (margin - distance).clamp(min=0)).mean()
