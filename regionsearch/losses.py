"""Losses of the search-path matcher: REINFORCE with a learned baseline, and the
contrastive feature loss of the poster (Hadsell et al. form, unsquared distance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_move(reward: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    return reward.unsqueeze(0).expand_as(baselines) if reward.dim() == 1 else reward


def reinforce_loss(log_probs: torch.Tensor, baselines: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Policy-gradient loss ``-sum_t log pi(a_t) (R_t - b_t)``, averaged over the batch.

    A final reward ``(B,)`` is credited to every move (as RAM does); per-move returns
    ``(T, B)`` (see :func:`discounted_returns`) credit move t with what follows it. The
    baseline is detached so that this term only trains the policy.

    Shape:
        log_probs, baselines: (T, B); reward: (B,) or (T, B) -> scalar
    """
    advantage = _per_move(reward, baselines) - baselines.detach()
    return -(log_probs * advantage).sum(dim=0).mean()


def baseline_loss(baselines: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the learned baseline against the reward (or per-move return) it predicts."""
    return F.mse_loss(baselines, _per_move(reward, baselines))


def discounted_returns(rewards: torch.Tensor, discount: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{k >= t} discount^(k - t) r_k``: the return that follows move t.

    ``rewards[t]`` is the reward of the window move t produced.

    Shape:
        rewards: (T, B) -> (T, B)
    """
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for step in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[step] + discount * running
        returns[step] = running
    return returns


def contrastive_loss(query_feature: torch.Tensor, window_feature: torch.Tensor, matched: torch.Tensor, margin: float) -> torch.Tensor:
    """``d(q, g)`` when the window matched the truth, ``max(0, m - d(q, g))`` otherwise.

    Shape:
        query_feature, window_feature: (B, D); matched: (B,) bool -> scalar
    """
    distance = (query_feature - window_feature).norm(dim=1)
    matched = matched.to(distance.dtype)
    return (matched * distance + (1 - matched) * (margin - distance).clamp(min=0)).mean()
