"""The nearest-neighbour search benchmark: brute-force matmul vs faiss (flat, IVF-PQ).

For each database size (random unit vectors, ``dim``-d, generated in chunks), measure
the build time, the latency per query (all queries in one batch, and one query at a
time) and recall@k of every method against the exact top-k of the brute-force ranking.
Writes ``search.json`` (rows), ``search.md`` and ``search.png`` under ``output_dir`` and
copies them to ``publish_dir`` when it is set.

Uniform random vectors have no cluster structure, which makes them a hard case for IVF-PQ
(real descriptors are not measured here), and the easiest to reproduce anywhere.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.timing import timed_median
from retrieval.search import Searcher, import_faiss

log = logging.getLogger(__name__)

METHODS = ("torch", "faiss", "faiss_ivfpq")
TITLES = {"torch": "brute force (torch matmul)", "faiss": "faiss IndexFlatIP (exact)", "faiss_ivfpq": "faiss IVF-PQ"}


def random_unit_vectors(n: int, dim: int, seed: int, chunk: int = 65536) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors, generated chunk by chunk (no float64 copy of the whole)."""
    out = np.empty((n, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for start in tqdm(range(0, n, chunk), desc=f"  vectors {n}", leave=False, mininterval=2):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of each query's exact top-k that the method returned in its top-k."""
    hits = [len(set(f.tolist()) & set(e.tolist())) / exact.shape[1] for f, e in zip(found, exact)]
    return float(np.mean(hits))



def measure(
    searcher: Searcher, queries: np.ndarray, topk: int, n_single: int, repeats: int
) -> tuple[float, float, torch.Tensor]:
    """(ms per query batched, ms per query one at a time, batched results)."""
    device = searcher.database.device if searcher.backend == "torch" else torch.device("cpu")
    searcher.search(queries[:2], topk)  # warm-up
    batched, (indices, _) = timed_median(lambda: searcher.search(queries, topk), repeats, device)
    single, _ = timed_median(lambda: [searcher.search(queries[i : i + 1], topk) for i in range(n_single)], repeats, device)
    return batched * 1000 / len(queries), single * 1000 / n_single, indices.cpu()


def run_suite(
    output_dir: str,
    quick: bool = False,
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    quick_sizes: Sequence[int] = (10_000, 25_000),
    dim: int = 512,
    n_queries: int = 100,
    quick_queries: int = 50,
    n_single: int = 10,
    topk: int = 100,
    methods: Sequence[str] = METHODS,
    chunk_size: int = 65536,
    ivfpq: dict | None = None,
    nprobes: Sequence[int] = (16, 64),
    repeats: int = 3,
    num_threads: int | None = None,
    seed: int = 0,
    torch_device: str = "cpu",
    publish_dir: str | None = None,
) -> list[dict]:
    """Measure every method at every size; returns the rows written to ``search.json``."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if num_threads:
        torch.set_num_threads(num_threads)
    if any(m.startswith("faiss") for m in methods):
        faiss = import_faiss()
        if num_threads:
            faiss.omp_set_num_threads(num_threads)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = list(quick_sizes if quick else sizes)
    n_queries = quick_queries if quick else n_queries
    repeats = 1 if quick else repeats
    ivfpq = dict(ivfpq or {})
    gpu = torch.device(torch_device)
    if gpu.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"torch_device={torch_device} but CUDA is not available")
    device = machine() + (f"; torch brute force on {torch.cuda.get_device_name(gpu)}" if gpu.type == "cuda" else "")
    queries = random_unit_vectors(n_queries, dim, seed + 1)
    rows: list[dict] = []
    for size in sizes:
        log.info("database of %d x %d", size, dim)
        database = random_unit_vectors(size, dim, seed + 2)
        exact = None
        for method in ["torch", *[m for m in methods if m != "torch"]]:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            start = time.perf_counter()
            kwargs = {}
            if method == "faiss_ivfpq":  # nlist null: sqrt(N) lists
                kwargs = {**ivfpq, "nlist": ivfpq.get("nlist") or max(1, int(np.sqrt(size)))}
            vectors = torch.from_numpy(database).to(gpu) if method == "torch" else database
            searcher = Searcher(vectors, backend=method, chunk_size=chunk_size, seed=seed, **kwargs)
            build_s = time.perf_counter() - start
            for nprobe in nprobes if method == "faiss_ivfpq" else [None]:
                if nprobe is not None:
                    searcher.index.nprobe = min(nprobe, searcher.index.nlist)
                batched, single, indices = measure(searcher, queries, topk, min(n_single, n_queries), repeats)
                if method == "torch":
                    exact = indices
                if method not in methods:
                    continue  # torch only served as the exact reference
                row = {
                    "size": size,
                    "dim": dim,
                    "method": method,
                    "nprobe": nprobe,
                    "build_s": round(build_s, 3),
                    "ms_per_query_batched": round(batched, 4),
                    "ms_per_query_single": round(single, 4),
                    f"recall_at_{topk}": round(recall_at_k(indices, exact), 4),
                    "n_queries": n_queries,
                    "device": device,
                    "load_1min": round(load, 2),  # other work on the machine skews timings
                }
                if method == "faiss_ivfpq":
                    row["nlist"] = int(searcher.index.nlist)
                    row["m"] = int(searcher.index.pq.M)
                rows.append(row)
                log.info("%s", row)
            del searcher, vectors
            gc.collect()
        del database
        gc.collect()
    (out_dir / "search.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "search.md").write_text(markdown_table(rows, device, topk, quick))
    plot_rows(rows, out_dir / "search.png", topk)
    if publish_dir:
        publish = Path(publish_dir)
        publish.mkdir(parents=True, exist_ok=True)
        for name in ("search.json", "search.md", "search.png"):
            shutil.copy2(out_dir / name, publish / name)
    return rows


def _label(row: dict) -> str:
    title = TITLES[row["method"]]
    return f"{title} (nprobe {row['nprobe']})" if row.get("nprobe") is not None else title


def markdown_table(rows: list[dict], device: str, topk: int, quick: bool) -> str:
    lines = [
        f"# Nearest-neighbour search{' (QUICK smoke run)' if quick else ''}",
        "",
        f"Machine: {device}. Database: random unit vectors, {rows[0]['dim'] if rows else '?'}-d; "
        f"{rows[0]['n_queries'] if rows else '?'} random unit queries; recall@{topk} against the exact brute-force top-{topk}.",
        "Latency: ms per query with all queries in one batch / one query at a time (median of repeats);",
        "load = the machine's 1-minute load average when the method started (a shared machine skews timings).",
        "Uniform random vectors are a hard case for IVF-PQ: true neighbours are barely more similar than",
        "the rest, so quantisation error reorders them (real descriptors have structure; not measured here).",
        "",
        f"| database size | method | build (s) | ms/query batched | ms/query single | recall@{topk} | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {_label(r)} | {r['build_s']:.2f} | {r['ms_per_query_batched']:.4g} | "
            f"{r['ms_per_query_single']:.4g} | {r[f'recall_at_{topk}']:.3f} | {r.get('load_1min', '')} |"
        )
    return "\n".join(lines) + "\n"


def plot_rows(rows: list[dict], path: Path, topk: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_recall) = plt.subplots(1, 2, figsize=(11, 5.2))
    for label in dict.fromkeys(_label(r) for r in rows):
        series = [r for r in rows if _label(r) == label]
        sizes = [r["size"] for r in series]
        (line,) = ax_time.plot(sizes, [r["ms_per_query_batched"] for r in series], marker="o", label=f"{label}, batched")
        colour = line.get_color()  # one colour per method: solid = batched, dashed = one query at a time
        ax_time.plot(sizes, [r["ms_per_query_single"] for r in series], marker="x", linestyle="--", color=colour, label=f"{label}, single")
        ax_recall.plot(sizes, [r[f"recall_at_{topk}"] for r in series], marker="o", color=colour, label=label)
    ax_time.set(xscale="log", yscale="log", xlabel="database size", ylabel="ms per query", title="latency")
    ax_recall.set(xscale="log", xlabel="database size", ylabel=f"recall@{topk}", ylim=(0, 1.05), title=f"recall@{topk} vs exact")
    ax_time.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)  # below: no data hidden
    ax_recall.legend(fontsize=7, loc="center right")
    for ax in (ax_time, ax_recall):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
