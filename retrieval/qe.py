"""Query expansion and database-side augmentation on L2-normalised descriptors (dirtorch semantics).

dirtorch ``expand_descriptors(descs, db, alpha, k)``: each vector becomes
``L2(mean([x] + [d_j * sim_j^alpha for the top-k database vectors d_j]))``; ``alpha = 0`` is
average query expansion (AQE), ``alpha > 0`` alpha-QE. Without a separate database
(database-side augmentation, DBA) the set is expanded with itself and each vector's
similarity to itself is set to 0 first, as dirtorch does.
"""

from __future__ import annotations

import torch

from .pooling import l2n


def expand(vectors: torch.Tensor, database: torch.Tensor | None = None, k: int = 1, alpha: float = 0.0) -> torch.Tensor:
    """dirtorch's ``expand_descriptors`` (``database=None``: expand the set with itself).

    Similarities are clamped at 0 before ``^alpha`` when ``alpha > 0`` (dirtorch would give NaN
    for a negative similarity with a fractional alpha).

    Shape:
        vectors (Q, D), database (N, D) -> (Q, D)
    """
    if k < 0 or alpha < 0:
        raise ValueError(f"k and alpha must be non-negative, got k={k}, alpha={alpha}")
    if vectors.dim() != 2 or (database is not None and (database.dim() != 2 or database.shape[1] != vectors.shape[1])):
        raise ValueError("expected vectors (Q, D) and database (N, D)")
    if k == 0:
        return vectors
    reference = vectors if database is None else database
    if k > len(reference):
        raise ValueError(f"k={k} is larger than the database ({len(reference)} vectors)")
    similarity = vectors @ reference.T
    if database is None:
        similarity.fill_diagonal_(0)
    top_sim, top_idx = similarity.topk(k, dim=1)
    weights = top_sim.clamp(min=0).pow(alpha) if alpha > 0 else torch.ones_like(top_sim)
    neighbours = (reference[top_idx] * weights.unsqueeze(-1)).sum(dim=1)  # (Q, D)
    return l2n((vectors + neighbours) / (k + 1))


def average_query_expansion(queries: torch.Tensor, database: torch.Tensor, k: int = 5) -> torch.Tensor:
    """AQE: ``L2(mean(q, top-k database vectors))`` (Chum et al.; Kim & Yoon use k = 5)."""
    return expand(queries, database, k=k, alpha=0.0)


def alpha_query_expansion(queries: torch.Tensor, database: torch.Tensor, k: int = 2, alpha: float = 3.0) -> torch.Tensor:
    """alpha-QE (Radenovic et al.): top-k neighbours weighted by ``similarity^alpha``."""
    return expand(queries, database, k=k, alpha=alpha)


def database_augmentation(database: torch.Tensor, k: int = 2, alpha: float = 0.0) -> torch.Tensor:
    """DBA / alpha-DBA: every database vector expanded with its top-k other database vectors."""
    return expand(database, None, k=k, alpha=alpha)
