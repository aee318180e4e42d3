"""Retrieval metrics exactly as the official evaluation code computes them.

* :func:`compute_ap` is Oxford's ``compute_ap.cpp`` / revisitop's ``compute_ap`` / Holidays'
  ``score_ap_from_ranks_1``: the trapezoid rule over the precision-recall curve with
  ``precision_0 = 1`` at rank 0. It differs from the non-interpolated AP of sklearn or
  torchmetrics (positives at ranks 0 and 2 of 3 give 0.7917 here, 0.8333 there).
* :func:`compute_map` is revisitop's ``compute_map``: junk images are removed from the
  ranking (each positive's rank drops by the number of junk images above it), queries
  without positives are NaN and excluded from the mean, and mP@k uses revisitop's
  ``kq = min(max(pos), k)`` denominator.
* :func:`revisited_gnd` builds the Easy / Medium / Hard ground truth of the revisited
  Oxford/Paris protocol, as ``revisitop/python/example_evaluate.py`` does.
* :func:`ukbench_score` is the UKBench N-S score and :func:`holidays_map` the Holidays mAP
  (the query is excluded from its own results).

Layouts follow revisitop: ``ranks`` is ``(n_db, n_q)``, column ``i`` holds database indices
sorted by decreasing similarity to query ``i`` (it may be truncated to the top ``k`` rows:
positives missing from it contribute 0); ``gnd`` is a list of dicts with ``ok`` and
``junk`` index arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "PROTOCOL_SETUPS",
    "compute_ap",
    "compute_map",
    "evaluate_protocol",
    "holidays_map",
    "mean_precision_at_k",
    "ranks_from_indices",
    "revisited_gnd",
    "ukbench_score",
]

#: Revisited protocol: which index lists are positives (ok) and which are ignored (junk).
PROTOCOL_SETUPS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def compute_ap(ranks: Sequence[int] | np.ndarray, nres: int) -> float:
    """Average precision by the trapezoid rule, as Oxford's ``compute_ap.cpp``.

    Args:
        ranks: 0-based, increasing positions of the positives in the ranking (junk already
            removed). Positives absent from the ranking are simply not listed.
        nres: the total number of positives (the recall denominator).
    """
    if nres <= 0:
        raise ValueError(f"nres must be positive, got {nres}")
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(np.asarray(ranks, dtype=np.int64).tolist()):
        precision_0 = 1.0 if rank == 0 else j / rank
        precision_1 = (j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def _positions(column: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Positions in ``column`` (a ranking) of the database indices in ``indices``."""
    return np.flatnonzero(np.isin(column, indices))


def compute_map(
    ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], kappas: Sequence[int] = ()
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """mAP and mP@k over queries, as revisitop's ``compute_map``.

    Args:
        ranks: ``(n_db or top-k, n_q)`` database indices sorted by decreasing similarity.
        gnd: per query a mapping with ``ok`` (positives) and optionally ``junk`` indices.
        kappas: the ``k`` of mP@k.

    Returns:
        ``(map, aps (n_q,), pr (len(kappas),), prs (n_q, len(kappas)))``; queries with no
        positives are NaN in ``aps``/``prs`` and left out of ``map``/``pr`` (``map`` is NaN
        when no query has positives).
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must be (n_db, n_q={len(gnd)}), got {ranks.shape}")
    kappas = [int(k) for k in kappas]
    nq = len(gnd)
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in range(nq):
        positives = np.asarray(gnd[i]["ok"], dtype=np.int64)
        if positives.size == 0:
            aps[i] = np.nan
            prs[i, :] = np.nan
            nempty += 1
            continue
        junk_indices = np.asarray(gnd[i].get("junk", ()), dtype=np.int64)
        pos = _positions(ranks[:, i], positives)
        junk = _positions(ranks[:, i], junk_indices)
        # every junk image ranked above a positive moves that positive up by one
        pos = pos - np.searchsorted(junk, pos)
        aps[i] = compute_ap(pos, len(positives))
        pos_1based = pos + 1
        for j, kappa in enumerate(kappas):
            if pos_1based.size == 0:  # no positive in a truncated ranking
                prs[i, j] = 0.0
                continue
            kq = min(int(pos_1based.max()), kappa)  # revisitop's quirk
            prs[i, j] = (pos_1based <= kq).sum() / kq
    valid = nq - nempty
    if valid == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(np.nansum(aps) / valid), aps, np.nansum(prs, axis=0) / valid, prs


def revisited_gnd(gnd: Sequence[Mapping[str, Sequence[int]]], setup: str) -> list[dict[str, np.ndarray]]:
    """Easy / Medium / Hard ground truth from revisited ``easy``/``hard``/``junk`` lists.

    Easy: ok = easy, junk = junk + hard. Medium: ok = easy + hard, junk = junk.
    Hard: ok = hard, junk = junk + easy.
    """
    if setup not in PROTOCOL_SETUPS:
        raise ValueError(f"setup must be one of {sorted(PROTOCOL_SETUPS)}, got {setup!r}")
    ok_keys, junk_keys = PROTOCOL_SETUPS[setup]
    out = []
    for entry in gnd:
        ok = np.concatenate([np.asarray(entry[k], dtype=np.int64) for k in ok_keys])
        junk = np.concatenate([np.asarray(entry[k], dtype=np.int64) for k in junk_keys])
        out.append({"ok": ok, "junk": junk})
    return out


def mean_precision_at_k(
    ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], kappas: Sequence[int]
) -> dict[int, float]:
    """``{k: mP@k}`` with revisitop's definition (see :func:`compute_map`)."""
    _, _, pr, _ = compute_map(ranks, gnd, kappas)
    return {int(k): float(p) for k, p in zip(kappas, pr)}


def ukbench_score(ranks: np.ndarray, query_groups: Sequence[int], database_groups: Sequence[int]) -> float:
    """UKBench N-S score: mean number of same-group images in each query's top 4.

    The query itself (it is in the database) counts, so the score ranges 0..4.
    """
    ranks = np.asarray(ranks)
    if ranks.shape[0] < 4:
        raise ValueError(f"the N-S score needs the top 4 of every ranking, got {ranks.shape[0]} rows")
    query_groups = np.asarray(query_groups)
    database_groups = np.asarray(database_groups)
    if ranks.shape[1] != len(query_groups):
        raise ValueError(f"ranks has {ranks.shape[1]} queries, query_groups {len(query_groups)}")
    top4 = database_groups[ranks[:4]]  # (4, n_q)
    return float((top4 == query_groups[None, :]).sum(axis=0).mean())


def holidays_map(ranks: np.ndarray, query_images: Sequence[int], database_groups: Sequence[int]) -> float:
    """Holidays mAP: positives = the other images of the query's group, query excluded.

    Args:
        ranks: ``(n_db, n_q)`` rankings of the whole database (queries included).
        query_images: database index of each query image.
        database_groups: group of each database image (``image number // 100``).
    """
    database_groups = np.asarray(database_groups)
    gnd = []
    for index in np.asarray(query_images, dtype=np.int64).tolist():
        same = np.flatnonzero(database_groups == database_groups[index])
        gnd.append({"ok": same[same != index], "junk": np.array([index])})
    return compute_map(ranks, gnd)[0]


def ranks_from_indices(indices) -> np.ndarray:
    """``(n_q, k)`` search results (as :func:`retrieval.search.rank` returns) -> ``(k, n_q)`` ranks."""
    array = indices.detach().cpu().numpy() if hasattr(indices, "detach") else np.asarray(indices)
    return np.ascontiguousarray(array.T)


def evaluate_protocol(
    protocol: str,
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    kappas: Sequence[int] = (1, 5, 10),
    query_groups: Sequence[int] | None = None,
    database_groups: Sequence[int] | None = None,
) -> dict[str, float]:
    """All metrics of one protocol, named without a split prefix.

    * ``oxford``, ``holidays``, ``groups``: ``map`` and ``mp@k``.
    * ``revisited``: ``map_easy``/``map_medium``/``map_hard``, ``mp@k_<setup>`` and
      ``map`` = ``map_medium`` (the usual headline number).
    * ``ukbench``: ``ns`` (N-S score, needs the groups), ``map`` and ``mp@k``.
    """
    out: dict[str, float] = {}
    if protocol == "revisited":
        for setup in PROTOCOL_SETUPS:
            mean_ap, _, pr, _ = compute_map(ranks, revisited_gnd(gnd, setup), kappas)
            out[f"map_{setup}"] = mean_ap
            out.update({f"mp@{k}_{setup}": float(p) for k, p in zip(kappas, pr)})
        out["map"] = out["map_medium"]
        return out
    if protocol not in ("oxford", "holidays", "groups", "ukbench"):
        raise ValueError(f"unknown protocol {protocol!r}")
    mean_ap, _, pr, _ = compute_map(ranks, gnd, kappas)
    out["map"] = mean_ap
    out.update({f"mp@{k}": float(p) for k, p in zip(kappas, pr)})
    if protocol == "ukbench":
        if query_groups is None or database_groups is None:
            raise ValueError("the ukbench protocol needs query_groups and database_groups")
        out["ns"] = ukbench_score(ranks, query_groups, database_groups)
    return out
