"""Nearest-neighbour search by inner product: chunked torch matmul or faiss.

:func:`rank` ranks a query set against a database and returns ``(indices, scores)``, both
``(Q, k)``, sorted by decreasing inner product. Backends:

* ``torch``: a batched matmul on the database's device (CPU or GPU), chunked over the
  database so at most ``Q x chunk_size`` scores exist at once; with ``topk`` the per-chunk
  top-k is merged into a running top-k, so memory stays ``O(Q (k + chunk_size))``.
* ``faiss``: exact search with ``IndexFlatIP``.
* ``faiss_ivfpq``: approximate search with ``IndexIVFPQ`` (inner-product metric), for
  databases too large for exact search.

faiss is imported only when a faiss backend is asked for (``pip install faiss-cpu``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["BACKENDS", "Searcher", "import_faiss", "rank"]

BACKENDS = ("torch", "faiss", "faiss_ivfpq")


def import_faiss():
    """The faiss module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "the faiss search backends need faiss: pip install faiss-cpu (or faiss-gpu), "
            "or use backend='torch'"
        ) from exc
    return faiss


def _as_tensor(x) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if tensor.dim() != 2:
        raise ValueError(f"expected a (n, D) matrix, got shape {tuple(tensor.shape)}")
    return tensor.float() if not tensor.is_floating_point() else tensor


def _as_numpy(x) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"expected a (n, D) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _torch_rank(queries: torch.Tensor, database: torch.Tensor, topk: int | None, chunk_size: int):
    n = database.shape[0]
    # compute where the database lives (a GPU database is never copied back per search)
    queries = queries.to(device=database.device, dtype=database.dtype)
    if topk is None or topk >= n:
        # full ranking: fill the score matrix chunk by chunk, then one stable sort
        scores = torch.empty(queries.shape[0], n, dtype=queries.dtype, device=queries.device)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            scores[:, start:stop] = queries @ database[start:stop].T
        scores, indices = torch.sort(scores, dim=1, descending=True, stable=True)
        return indices, scores
    best_scores = torch.empty(queries.shape[0], 0, dtype=queries.dtype, device=queries.device)
    best_indices = torch.empty(queries.shape[0], 0, dtype=torch.long, device=queries.device)
    for start in range(0, n, chunk_size):
        chunk = queries @ database[start : start + chunk_size].T
        k = min(topk, chunk.shape[1])
        chunk_scores, chunk_indices = torch.topk(chunk, k, dim=1)
        merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
        merged_indices = torch.cat([best_indices, chunk_indices + start], dim=1)
        best_scores, order = torch.topk(merged_scores, min(topk, merged_scores.shape[1]), dim=1)
        best_indices = torch.gather(merged_indices, 1, order)
    return best_indices, best_scores


class Searcher:
    """An index over ``database`` (N, D) that answers inner-product top-k queries.

    Building is separate from searching so that benchmarks can time both. For
    ``faiss_ivfpq``: ``nlist`` inverted lists (default ``4 sqrt(N)``, at most N/39 so that
    k-means has 39 points per centroid), ``m`` sub-quantizers of ``nbits`` bits (default:
    the largest divisor of D up to D/16; 16-d sub-vectors train much faster than 8-d),
    ``nprobe`` lists visited per query, trained on at most ``train_size`` database vectors.
    """

    def __init__(
        self,
        database,
        backend: str = "torch",
        chunk_size: int = 65536,
        nlist: int | None = None,
        m: int | None = None,
        nbits: int = 8,
        nprobe: int = 16,
        train_size: int = 100_000,
        seed: int = 0,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.backend = backend
        self.chunk_size = chunk_size
        if backend == "torch":
            self.database = _as_tensor(database)
            self.size, self.dim = self.database.shape
            return
        faiss = import_faiss()
        vectors = _as_numpy(database)
        self.size, self.dim = vectors.shape
        if backend == "faiss":
            self.index = faiss.IndexFlatIP(self.dim)
        else:
            nlist = nlist or max(1, int(4 * math.sqrt(self.size)))
            nlist = max(1, min(nlist, self.size // 39))
            if m is None:
                m = max(d for d in range(1, max(1, self.dim // 16) + 1) if self.dim % d == 0)
            if self.dim % m:
                raise ValueError(f"m={m} must divide the dimension {self.dim}")
            quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFPQ(
                quantizer, self.dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(seed)
            n_train = min(self.size, max(train_size, 39 * nlist))
            sample = vectors if n_train == self.size else vectors[np.sort(rng.choice(self.size, n_train, replace=False))]
            self.index.train(sample)
            self.index.nprobe = min(nprobe, nlist)
        for start in range(0, self.size, self.chunk_size):
            self.index.add(vectors[start : start + self.chunk_size])

    def search(self, queries, topk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices long (Q, k), scores float (Q, k))``, best first; ``k = topk or N``.

        faiss pads missing results (an IVF probe with fewer than k vectors) with index -1.
        """
        if topk is not None and topk <= 0:
            raise ValueError(f"topk must be positive, got {topk}")
        if self.backend == "torch":
            q = _as_tensor(queries)
            if q.shape[1] != self.dim:
                raise ValueError(f"queries have dimension {q.shape[1]}, the database {self.dim}")
            with torch.no_grad():
                return _torch_rank(q, self.database, topk, self.chunk_size)
        q = _as_numpy(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the database {self.dim}")
        k = self.size if topk is None else min(topk, self.size)
        scores, indices = self.index.search(q, k)
        return torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(scores)


def rank(
    queries,
    database,
    topk: int | None = None,
    chunk_size: int = 65536,
    backend: str = "torch",
    **index_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``database`` (N, D) for every query (Q, D) by inner product.

    Returns ``(indices long (Q, k), scores (Q, k))`` sorted by decreasing score, with
    ``k = topk`` (all N when None). ``index_kwargs`` go to :class:`Searcher` (faiss IVF-PQ
    settings). For L2-normalised vectors the inner product is the cosine similarity.
    """
    return Searcher(database, backend=backend, chunk_size=chunk_size, **index_kwargs).search(
        queries, topk
    )
