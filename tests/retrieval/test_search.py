"""Chunked torch ranking and faiss backends agree with the one-shot exact ranking."""

from __future__ import annotations

import sys

import pytest
import torch

from retrieval.search import Searcher, import_faiss, rank


def unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def test_chunked_topk_equals_one_shot():
    queries, database = unit(13, 16, 0), unit(101, 16, 1)
    full = queries @ database.T
    expected_scores, expected_indices = torch.topk(full, 10, dim=1)
    for chunk in (7, 10, 64, 1000):
        indices, scores = rank(queries, database, topk=10, chunk_size=chunk)
        assert torch.equal(indices, expected_indices), chunk
        assert torch.allclose(scores, expected_scores)


def test_chunked_full_ranking_equals_argsort():
    queries, database = unit(5, 8, 2), unit(50, 8, 3)
    indices, scores = rank(queries, database, chunk_size=9)
    assert indices.shape == (5, 50)
    assert torch.equal(indices, torch.argsort(queries @ database.T, dim=1, descending=True))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_faiss_exact_equals_brute_force():
    queries, database = unit(20, 32, 4), unit(500, 32, 5)
    brute_indices, brute_scores = rank(queries, database, topk=25)
    faiss_indices, faiss_scores = rank(queries, database, topk=25, backend="faiss")
    assert torch.equal(faiss_indices, brute_indices)
    assert torch.allclose(faiss_scores, brute_scores, atol=1e-5)


def test_ivfpq_finds_the_database_items_themselves():
    database = unit(2000, 32, 6)
    searcher = Searcher(database, backend="faiss_ivfpq", nlist=16, m=8, nbits=6, nprobe=16)
    indices, scores = searcher.search(database[:200], topk=5)
    assert indices.shape == (200, 5) and scores.shape == (200, 5)
    hits = (indices[:, 0] == torch.arange(200)).float().mean()
    assert hits > 0.8  # PQ codes are approximate, but an item is nearly always its own nearest
    assert ((indices >= 0) & (indices < 2000)).all()


def test_bad_inputs_and_missing_faiss(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        rank(unit(2, 4, 0), unit(3, 4, 0), backend="annoy")
    with pytest.raises(ValueError, match="dimension"):
        rank(unit(2, 5, 0), unit(3, 4, 0))
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        import_faiss()
