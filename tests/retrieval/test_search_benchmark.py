"""The search benchmark suite end to end at toy sizes: rows, tables, plot, publishing."""

from __future__ import annotations

import json

import torch

from benchmarks.suites.search import markdown_table, random_unit_vectors, recall_at_k, run_suite


def test_suite_writes_rows_tables_and_plot(tmp_path):
    publish = tmp_path / "published"
    rows = run_suite(
        output_dir=str(tmp_path / "run"),
        quick=True,
        quick_sizes=[1500, 3000],
        dim=32,
        quick_queries=12,
        n_single=3,
        topk=10,
        chunk_size=1000,
        ivfpq={"nlist": 8, "m": 8, "nbits": 6, "train_size": 1500},
        nprobes=[1, 8],
        publish_dir=str(publish),
    )
    assert [(r["size"], r["method"], r["nprobe"]) for r in rows[:4]] == [
        (1500, "torch", None), (1500, "faiss", None), (1500, "faiss_ivfpq", 1), (1500, "faiss_ivfpq", 8)
    ]
    assert len(rows) == 8
    for row in rows:
        assert row["ms_per_query_batched"] > 0 and row["ms_per_query_single"] > 0
        assert 0 <= row["recall_at_10"] <= 1
    assert all(r["recall_at_10"] == 1.0 for r in rows if r["method"] in ("torch", "faiss"))
    ivf = [r for r in rows if r["method"] == "faiss_ivfpq" and r["size"] == 3000]
    assert ivf[0]["recall_at_10"] <= ivf[1]["recall_at_10"]  # probing more lists finds more
    assert json.loads((tmp_path / "run" / "search.json").read_text()) == rows
    for name in ("search.json", "search.md", "search.png"):
        assert (tmp_path / "run" / name).is_file() and (publish / name).is_file()


def test_helpers():
    vectors = random_unit_vectors(100, 8, seed=0, chunk=30)
    assert vectors.shape == (100, 8) and abs(float((vectors**2).sum(1).mean()) - 1) < 1e-5
    assert recall_at_k(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[3, 2, 9], [7, 8, 9]])) == (2 / 3 + 0) / 2
    row = {"size": 1000, "dim": 8, "method": "faiss_ivfpq", "nprobe": 4, "build_s": 1.0, "ms_per_query_batched": 0.5,
           "ms_per_query_single": 1.0, "recall_at_10": 0.5, "n_queries": 3, "device": "cpu"}
    assert "| 1,000 | faiss IVF-PQ (nprobe 4) | 1.00 | 0.5 | 1 | 0.500 |  |" in markdown_table([row], "cpu", 10, False)
