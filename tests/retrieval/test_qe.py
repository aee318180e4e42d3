"""Average / alpha query expansion and database-side augmentation on a hand case."""

from __future__ import annotations

import math

import pytest
import torch

from retrieval.qe import (
    alpha_query_expansion,
    average_query_expansion,
    database_augmentation,
    expand,
)

QUERY = torch.tensor([[1.0, 0.0]])
DATABASE = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])


def unit(x, y):
    return torch.tensor([x, y]) / math.hypot(x, y)


def test_average_query_expansion_top1():
    # top-1 is (0.8, 0.6): mean with the query = (0.9, 0.3)
    assert torch.allclose(average_query_expansion(QUERY, DATABASE, k=1)[0], unit(0.9, 0.3), atol=1e-6)
    # top-2 adds (0.6, 0.8): (1 + 0.8 + 0.6, 0.6 + 0.8) / 3
    assert torch.allclose(average_query_expansion(QUERY, DATABASE, k=2)[0], unit(2.4, 1.4), atol=1e-6)


def test_alpha_query_expansion_weights_by_similarity_power():
    # similarities 0.8 and 0.6 -> weights 0.512 and 0.216
    x = 1 + 0.512 * 0.8 + 0.216 * 0.6
    y = 0.512 * 0.6 + 0.216 * 0.8
    assert torch.allclose(alpha_query_expansion(QUERY, DATABASE, k=2, alpha=3.0)[0], unit(x, y), atol=1e-6)


def test_database_augmentation_excludes_self():
    out = database_augmentation(DATABASE, k=1)
    # (0.8, 0.6) and (0.6, 0.8) are each other's neighbour (0.96); (0, 1)'s is (0.6, 0.8)
    assert torch.allclose(out[0], unit(1.4, 1.4), atol=1e-6)
    assert torch.allclose(out[1], unit(1.4, 1.4), atol=1e-6)
    assert torch.allclose(out[2], unit(0.6, 1.8), atol=1e-6)


def test_expand_edge_cases():
    assert torch.equal(expand(QUERY, DATABASE, k=0), QUERY)
    with pytest.raises(ValueError, match="non-negative"):
        expand(QUERY, DATABASE, k=-1)
    with pytest.raises(ValueError, match="larger than the database"):
        expand(QUERY, DATABASE, k=4)
    negative = torch.tensor([[-1.0, 0.0]])
    out = alpha_query_expansion(negative, DATABASE, k=1, alpha=0.5)  # sim -0.6 clamped to 0
    assert torch.isfinite(out).all() and torch.allclose(out, negative)
