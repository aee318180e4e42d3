"""Tuple losses for retrieval fine-tuning (cirtorch ``layers/functional.py``, tuple-major).

A batch of tuples is ``embeddings (B, T, D)`` with ``labels (B, T)`` = ``[-1, 1, 0, ..., 0]``
per tuple (query, positive, N negatives), the contract of the tuple datamodule. Both losses
are summed over pairs/triplets, not averaged, as cirtorch.
"""

from __future__ import annotations

import torch


def _split_tuples(embeddings: torch.Tensor, labels: torch.Tensor):
    if embeddings.dim() != 3 or labels.shape != embeddings.shape[:2]:
        raise ValueError(f"expected embeddings (B, T, D) and labels (B, T), got {tuple(embeddings.shape)}, {tuple(labels.shape)}")
    queries = labels == -1
    if not bool((queries.sum(dim=1) == 1).all()):
        raise ValueError("every tuple needs exactly one query (label -1)")
    query = embeddings[queries]  # (B, D)
    others = embeddings[~queries].view(embeddings.shape[0], -1, embeddings.shape[-1])  # (B, T-1, D)
    other_labels = labels[~queries].view(embeddings.shape[0], -1).to(embeddings.dtype)
    return query, others, other_labels


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.7, eps: float = 1e-6) -> torch.Tensor:
    """``sum 0.5 y D^2 + 0.5 (1 - y) max(0, m - D)^2`` over (query, other) pairs, ``D = ||q - x + eps||``.

    Shape:
        embeddings (B, T, D), labels (B, T) -> scalar
    """
    query, others, other_labels = _split_tuples(embeddings, labels)
    distance = (query.unsqueeze(1) - others + eps).pow(2).sum(dim=-1).sqrt()
    loss = 0.5 * other_labels * distance.pow(2) + 0.5 * (1 - other_labels) * (margin - distance).clamp(min=0).pow(2)
    return loss.sum()


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """``sum max(0, ||a - p||^2 - ||a - n||^2 + m)`` over (query, positive, negative_i) triplets.

    Shape:
        embeddings (B, T, D), labels (B, T) with one positive per tuple -> scalar
    """
    query, others, other_labels = _split_tuples(embeddings, labels)
    positive_mask = other_labels == 1
    if not bool((positive_mask.sum(dim=1) == 1).all()):
        raise ValueError("the triplet loss needs exactly one positive (label 1) per tuple")
    positive = others[positive_mask]  # (B, D)
    negatives = others[~positive_mask].view(others.shape[0], -1, others.shape[-1])
    positive_distance = (query - positive).pow(2).sum(dim=-1, keepdim=True)
    negative_distance = (query.unsqueeze(1) - negatives).pow(2).sum(dim=-1)
    return (positive_distance - negative_distance + margin).clamp(min=0).sum()


LOSSES = {"contrastive": contrastive_loss, "triplet": triplet_loss}
