"""Hard-negative mining: never the query's group, at most one per group, hardest first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.data.mining import draw_query_pairs, mine_tuples, random_tuples, select_negatives


def test_select_negatives_hand_case():
    pool_groups = np.array([0, 1, 1, 2, 0, 3])
    ranked = [4, 1, 2, 0, 3, 5]  # best first
    # 4 and 0 are the query's group; 2 repeats group 1
    assert select_negatives(ranked, pool_groups, query_group=0, nnum=2) == [1, 3]
    assert select_negatives(ranked, pool_groups, query_group=0, nnum=5) == [1, 3, 5]


def test_mined_tuples_respect_groups_and_pick_the_hardest():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 4)
    # group centres on a circle: neighbouring groups are the most similar
    angles = groups * (2 * np.pi / 12) + rng.normal(0, 0.02, len(groups))
    vectors = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    calls = []

    def embed(indices):
        calls.append(len(indices))
        return vectors[torch.as_tensor(indices)]

    tuples, stats = mine_tuples(groups, embed, qsize=30, poolsize=48, nnum=3, rng=rng)
    assert tuples.shape == (30, 5) and calls == [48]
    for q, p, *negatives in tuples:
        assert groups[p] == groups[q] and p != q
        negative_groups = groups[negatives]
        assert groups[q] not in negative_groups
        assert len(set(negative_groups.tolist())) == 3
        # with the whole set as pool, the two neighbouring groups are the two hardest
        assert {(groups[q] + 1) % 12, (groups[q] - 1) % 12} <= set(negative_groups.tolist())
    assert stats["mean_positive_similarity"] > stats["mean_negative_similarity"]


def test_small_pool_is_topped_up_and_random_tuples_are_valid():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(8), 3)
    vectors = torch.nn.functional.normalize(torch.randn(len(groups), 4), dim=1)
    tuples, _ = mine_tuples(groups, lambda idx: vectors[torch.as_tensor(idx)], qsize=10, poolsize=2, nnum=4, rng=rng)
    for row in [*tuples, *random_tuples(groups, 10, 4, rng)]:
        assert groups[row[0]] == groups[row[1]] and row[0] != row[1]
        assert len(set(groups[row[2:]].tolist()) | {groups[row[0]]}) == 5  # 4 distinct other groups


def test_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two items"):
        draw_query_pairs(np.arange(5), 3, rng)
    with pytest.raises(ValueError, match="negatives"):
        mine_tuples(np.repeat(np.arange(3), 2), lambda i: torch.zeros(len(i), 2), 2, 4, nnum=3, rng=rng)


def test_positive_comes_from_another_source_when_possible():
    groups = np.array([0, 0, 0, 1, 1, 1])
    sources = np.array([7, 7, 8, 9, 9, 9])  # group 1 has a single source: any other item will do
    queries, positives = draw_query_pairs(groups, 60, np.random.default_rng(0), sources)
    for q, p in zip(queries, positives):
        assert groups[p] == groups[q] and p != q
        if groups[q] == 0:
            assert sources[p] != sources[q]
