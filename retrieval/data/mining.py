"""Training tuples with hard negatives mined by the current model (cirtorch semantics).

cirtorch's ``TuplesDataset.create_epoch_tuples``: every epoch draw ``qsize`` random
(query, positive) pairs and a random pool of ``poolsize`` images, embed both with the
current network, rank the pool by dot product with each query and keep the first
``nnum`` pool images that are not in the query's cluster, at most one per cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["draw_query_pairs", "mine_tuples", "random_tuples", "select_negatives"]


def select_negatives(ranked_pool: Sequence[int], pool_groups: Sequence[int], query_group: int, nnum: int) -> list[int]:
    """The first ``nnum`` entries of ``ranked_pool`` (positions into the pool, best first)
    whose group is not ``query_group``, at most one per group."""
    chosen: list[int] = []
    used: set[int] = set()
    for position in ranked_pool:
        group = int(pool_groups[position])
        if group == query_group or group in used:
            continue
        chosen.append(int(position))
        used.add(group)
        if len(chosen) == nnum:
            break
    return chosen


def draw_query_pairs(
    groups: np.ndarray, qsize: int, rng: np.random.Generator, sources: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``qsize`` random (query, positive) item pairs of the same group (distinct items).

    Queries are drawn without replacement while there are enough items in groups of at
    least two, then with replacement. ``sources`` (e.g. the photo each logo crop comes
    from): the positive comes from another source whenever the group has one.
    """
    groups = np.asarray(groups)
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    eligible = np.concatenate([m for m in members.values() if len(m) >= 2] or [np.array([], dtype=np.int64)])
    if not len(eligible):
        raise ValueError("no group has two items: cannot build (query, positive) pairs")
    queries = rng.choice(eligible, size=qsize, replace=qsize > len(eligible))
    positives = np.empty_like(queries)
    for i, q in enumerate(queries):
        others = members[groups[q]]
        others = others[others != q]
        if sources is not None and (sources[others] != sources[q]).any():
            others = others[sources[others] != sources[q]]
        positives[i] = others[rng.integers(len(others))]
    return queries.astype(np.int64), positives.astype(np.int64)


def _fill_random(chosen: list[int], groups: np.ndarray, query_group: int, nnum: int, rng: np.random.Generator) -> list[int]:
    """Top up ``chosen`` (item indices) with random items of unused other groups."""
    used = {int(groups[i]) for i in chosen} | {int(query_group)}
    candidates = [g for g in np.unique(groups).tolist() if g not in used]
    rng.shuffle(candidates)
    for g in candidates[: nnum - len(chosen)]:
        members = np.flatnonzero(groups == g)
        chosen.append(int(members[rng.integers(len(members))]))
    return chosen


def random_tuples(
    groups: np.ndarray, qsize: int, nnum: int, rng: np.random.Generator, sources: np.ndarray | None = None
) -> np.ndarray:
    """``(qsize, 2 + nnum)`` item indices with random negatives (one per other group)."""
    groups = np.asarray(groups)
    queries, positives = draw_query_pairs(groups, qsize, rng, sources)
    tuples = np.empty((qsize, 2 + nnum), dtype=np.int64)
    for i, (q, p) in enumerate(zip(queries, positives)):
        tuples[i, :2] = (q, p)
        tuples[i, 2:] = _fill_random([], groups, groups[q], nnum, rng)
    return tuples


@torch.no_grad()
def mine_tuples(
    groups: np.ndarray,
    embed_items: Callable[[np.ndarray], torch.Tensor],
    qsize: int,
    poolsize: int,
    nnum: int,
    rng: np.random.Generator,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """One epoch of tuples ``(qsize, 2 + nnum)``: query, positive, ``nnum`` hard negatives.

    ``embed_items(item_indices) -> (n, D)`` L2-normalised descriptors; ``sources``: see
    :func:`draw_query_pairs`. The pool is
    ``poolsize`` random items (all when fewer); when the pool has fewer than ``nnum``
    other groups the remaining negatives are random items of unused groups.
    Returns the tuples and statistics: mean query-negative and query-positive similarity.
    """
    groups = np.asarray(groups)
    if len(np.unique(groups)) <= nnum:
        raise ValueError(f"{len(np.unique(groups))} groups cannot give {nnum} negatives from other groups")
    queries, positives = draw_query_pairs(groups, qsize, rng, sources)
    pool = rng.choice(len(groups), size=min(poolsize, len(groups)), replace=False)
    needed = np.unique(np.concatenate([queries, positives, pool]))
    vectors = embed_items(needed).float()
    row_of = {int(item): row for row, item in enumerate(needed.tolist())}
    query_vectors = vectors[[row_of[int(q)] for q in queries]]
    positive_vectors = vectors[[row_of[int(p)] for p in positives]]
    pool_vectors = vectors[[row_of[int(i)] for i in pool]]
    scores = query_vectors @ pool_vectors.T  # (qsize, poolsize)
    ranked = torch.argsort(scores, dim=1, descending=True).cpu().numpy()
    pool_groups = groups[pool]
    tuples = np.empty((qsize, 2 + nnum), dtype=np.int64)
    negative_scores = []
    for i, (q, p) in enumerate(zip(queries, positives)):
        chosen_positions = select_negatives(ranked[i], pool_groups, int(groups[q]), nnum)
        negative_scores += scores[i, chosen_positions].tolist()
        chosen = _fill_random([int(pool[j]) for j in chosen_positions], groups, groups[q], nnum, rng)
        tuples[i] = [q, p, *chosen]
    stats = {
        "mean_negative_similarity": float(np.mean(negative_scores)) if negative_scores else float("nan"),
        "mean_positive_similarity": float((query_vectors * positive_vectors).sum(1).mean()),
    }
    return tuples, stats
