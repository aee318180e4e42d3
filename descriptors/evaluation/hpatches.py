"""The three HPatches tasks (verification, matching, retrieval), vectorised on torch.

The tasks follow hpatches-benchmark's Python code (``python/utils/tasks.py`` and
``metrics.py``) exactly; :mod:`descriptors.evaluation.hpatches_official` is a straight
loop-by-loop port of that logic, used as the reference in tests and in the patch_eval suite.
Both produce the same raw per-item numbers (:class:`HPatchesResults`), summarised the way
``utils/results.py`` does by :func:`summarize`. All APs are fractions in [0, 1]. The release,
its splits and the task lists: :mod:`descriptors.data.hpatches`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..data.hpatches import (
    LEVELS,
    NEG_TYPES,
    POOL_SIZES,
    PairList,
    RetrievalLists,
    VerificationPairs,
    image_name,
    task_lists,
)
from . import hpatches_official as official


def describe_sequences(
    sequences: Mapping[str, Mapping[str, np.ndarray]],
    describe: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    batch_size: int = 4096,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``describe(uint8 (B, 65, 65)) -> (B, D)`` on every image of every sequence."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for seq, images in tqdm(sequences.items(), desc="describing", disable=not progress, mininterval=2):
        out[seq] = {}
        for name, patches in images.items():
            parts = []
            for i in range(0, len(patches), batch_size):
                d = describe(np.ascontiguousarray(patches[i : i + batch_size]))
                parts.append(d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d))
            out[seq][name] = np.concatenate(parts).astype(np.float64, copy=False)
    return out


@dataclass
class HPatchesResults:
    """Raw per-item numbers, identical in layout for the fast code and the official port.

    ``verification[(level, neg_type)] = {"auc": balanced ROC AUC, "ap": imbalanced AP}``;
    ``matching[(seq, level, i)] = AP`` (i = 1..5); ``retrieval`` = float array
    ``(n_queries, 3 levels, len(pool_sizes))`` of APs.
    """

    verification: dict = field(default_factory=dict)
    matching: dict = field(default_factory=dict)
    retrieval: np.ndarray | None = None
    pool_sizes: tuple[int, ...] = POOL_SIZES
    seconds: dict = field(default_factory=dict)


def summarize(results: HPatchesResults) -> dict[str, float]:
    """The summary numbers of hpatches-benchmark's ``utils/results.py`` (fractions, not percent).

    verification: mean over e/h/t x intra/inter of the imbalanced AP (``verification_map``)
    and of the balanced AUC (``verification_auc``). retrieval: per level the mean over pool
    sizes of the mean AP over queries; ``retrieval_map`` = mean of e/h/t.

    matching: the two official groupings differ, so both are reported, named:
    ``matching_map_all_sequences`` = mean over e/h/t of the mean AP over all sequences and
    images (``results_matching`` of results.py on master); ``matching_map_iv_mean`` = mean of
    the i_ and v_ averages (each the mean over e/h/t of the mean over that type's sequences
    of the mean over images 1..5: ``DescriptorMatchingResult.avg`` of the ench/matplotlib-fig
    branch, the article's figure grouping; with one type present, that type's average).
    ``matching_map`` (the headline of the tables) is ``matching_map_iv_mean``. They differ
    when the set has unequal numbers of i_ and v_ sequences.
    """
    out: dict[str, float] = {}
    if results.verification:
        for balance, key in (("verification_auc", "auc"), ("verification_map", "ap")):
            values = [results.verification[(t, n)][key] for t in LEVELS for n in NEG_TYPES]
            out[balance] = float(np.mean(values))
        for t in LEVELS:
            for n in NEG_TYPES:
                out[f"verification_ap_{t}_{n}"] = float(results.verification[(t, n)]["ap"])
    if results.matching:
        type_means = {}
        for kind in ("i", "v"):
            seqs = sorted({s for s, _, _ in results.matching if s.split("_")[0] == kind})
            if not seqs:
                continue
            level_means = []
            for t in LEVELS:
                per_seq = [np.mean([results.matching[(s, t, i)] for i in range(1, 6)]) for s in seqs]
                level_means.append(float(np.mean(per_seq)))
                out[f"matching_map_{t}_{kind}"] = level_means[-1]
            type_means[kind] = float(np.mean(level_means))
            out[f"matching_map_{kind}"] = type_means[kind]
        other = sorted({s for s, _, _ in results.matching if s.split("_")[0] not in ("i", "v")})
        if other:  # sequences without an i_/v_ prefix count as one more type
            level_means = [float(np.mean([np.mean([results.matching[(s, t, i)] for i in range(1, 6)]) for s in other])) for t in LEVELS]
            type_means["other"] = float(np.mean(level_means))
        out["matching_map_iv_mean"] = float(np.mean(list(type_means.values())))
        out["matching_map"] = out["matching_map_iv_mean"]
        for t in LEVELS:
            out[f"matching_map_{t}"] = float(np.mean([results.matching[k] for k in results.matching if k[1] == t]))
        out["matching_map_all_sequences"] = float(np.mean([out[f"matching_map_{t}"] for t in LEVELS]))
    if results.retrieval is not None and len(results.retrieval):
        per_level = results.retrieval.mean(axis=0).mean(axis=-1)  # (3,)
        for t, value in zip(LEVELS, per_level):
            out[f"retrieval_map_{t}"] = float(value)
        out["retrieval_map"] = float(per_level.mean())
    return out


def matching_map_by_sequence(results: HPatchesResults) -> dict[str, float]:
    """Matching mAP of each sequence alone: the mean over e/h/t of the mean AP over images
    1..5 (the per-sequence term both official groupings of :func:`summarize` average), e.g.
    to select on a validation sequence of a set whose other sequences are test data."""
    sequences = sorted({s for s, _, _ in results.matching or {}})
    return {s: float(np.mean([np.mean([results.matching[(s, t, i)] for i in range(1, 6)]) for t in LEVELS])) for s in sequences}


# --------------------------------------------------------------------------- fast tasks (torch)


def _ap_from_sorted(labels: torch.Tensor, numpos: torch.Tensor | float) -> torch.Tensor:
    """hpatches ``metrics.pr`` AP from labels already in ranked order ``(..., L)``: the PR curve
    starts at (recall 0, precision 1), one point per ranked item, AP = trapezoid rule."""
    small = 1e-10
    tp = labels.to(torch.float64).cumsum(-1)
    ranks = torch.arange(1, labels.shape[-1] + 1, dtype=torch.float64, device=labels.device)
    numpos = torch.as_tensor(numpos, dtype=torch.float64, device=labels.device)
    zero = torch.zeros(labels.shape[:-1] + (1,), dtype=torch.float64, device=labels.device)
    tp = torch.cat([zero, tp], -1)
    total = torch.cat([zero, ranks.expand(labels.shape[:-1] + ranks.shape)], -1)
    recall = tp / numpos.clamp_min(small).unsqueeze(-1)
    precision = tp.clamp_min(small) / total.clamp_min(small)
    return ((recall[..., 1:] - recall[..., :-1]) * (precision[..., 1:] + precision[..., :-1]) / 2).sum(-1)


class _DescriptorTable:
    """All descriptors of a level in one tensor; a row per (sequence, image index, patch)."""

    def __init__(self, descriptors: Mapping[str, Mapping[str, np.ndarray]], level: str, device, dtype=torch.float64) -> None:
        self.offsets: dict[str, int] = {}
        self.lengths: dict[str, int] = {}
        blocks, offset = [], 0
        for seq, images in descriptors.items():
            n = len(images["ref"])
            self.offsets[seq], self.lengths[seq] = offset, n
            blocks.extend(np.asarray(images[image_name(t, level)]) for t in range(6))
            offset += 6 * n
        self.table = torch.as_tensor(np.concatenate(blocks), dtype=dtype, device=device)

    def rows(self, seqs: Sequence[str], images: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        offsets = np.array([self.offsets[s] for s in seqs], dtype=np.int64)
        lengths = np.array([self.lengths[s] for s in seqs], dtype=np.int64)
        if len(indices) and ((indices < 0) | (indices >= lengths)).any():
            bad = int(np.flatnonzero((indices < 0) | (indices >= lengths))[0])
            raise IndexError(f"patch index {indices[bad]} out of range for sequence {seqs[bad]} ({lengths[bad]} patches)")
        return torch.as_tensor(offsets + images * lengths + indices, device=self.table.device)


def _pair_rows(table: _DescriptorTable, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """Table rows of both sides of every pair (the same for every level: one layout)."""
    missing = [name for name in pairs.names.tolist() if name not in table.offsets]
    if missing:
        raise KeyError(f"pairs refer to sequences without descriptors: {missing[:5]}")
    name_offsets = np.array([table.offsets[name] for name in pairs.names.tolist()], dtype=np.int64)
    name_lengths = np.array([table.lengths[name] for name in pairs.names.tolist()], dtype=np.int64)

    def side(codes, images, indices) -> np.ndarray:
        lengths = name_lengths[codes]
        bad = (indices < 0) | (indices >= lengths) | (images < 0) | (images > 5)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise IndexError(f"pair {k}: image {images[k]} / patch {indices[k]} out of range for sequence {pairs.names[codes[k]]} ({lengths[k]} patches)")
        return name_offsets[codes] + images * lengths + indices

    return side(pairs.codes1, pairs.t1, pairs.idx1), side(pairs.codes2, pairs.t2, pairs.idx2)


def _distance_plan(a: np.ndarray, b: np.ndarray, n_rows: int) -> tuple[np.ndarray, ...]:
    """Distinct (a, b) row pairs in sorted order and the map back to every pair (level-independent)."""
    keys = a * n_rows + b
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(keys) else np.zeros(0, bool)
    return a[order[first]], b[order[first]], order, np.cumsum(first) - 1


def _gathered_distances(table: _DescriptorTable, a: np.ndarray, b: np.ndarray, distance: str, chunk: int = 1024, plan=None) -> torch.Tensor:
    """Distances of table rows ``a[k]``, ``b[k]`` in float64. Pairs are sorted by (a, b) and
    each distinct pair is computed once, in small chunks: within-sequence pairs then read a
    small block of the table and the gathered rows stay in cache."""
    if not len(a):
        return torch.zeros(0, dtype=torch.float64)
    unique_a, unique_b, order, inverse = plan if plan is not None else _distance_plan(a, b, len(table.table))
    unique = np.empty(len(unique_a))
    if table.table.device.type == "cpu":
        values = table.table.numpy()
        for start in range(0, len(unique_a), chunk):
            diff = values[unique_a[start : start + chunk]]
            diff -= values[unique_b[start : start + chunk]]
            unique[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff)) if distance == "L2" else np.abs(diff).sum(1)
    else:
        a_t, b_t = torch.as_tensor(unique_a, device=table.table.device), torch.as_tensor(unique_b, device=table.table.device)
        for start in range(0, len(unique_a), chunk * 256):
            diff = table.table[a_t[start : start + chunk * 256]] - table.table[b_t[start : start + chunk * 256]]
            unique[start : start + chunk * 256] = (diff.pow(2).sum(-1).sqrt() if distance == "L2" else diff.abs().sum(-1)).cpu().numpy()
    out = np.empty(len(a))
    out[order] = unique[inverse]
    return torch.from_numpy(out)


def _pair_distances(table: _DescriptorTable, rows: PairList, distance: str) -> torch.Tensor:
    return _gathered_distances(table, *_pair_rows(table, rows), distance)


def verification_distances(descriptors, pairs: VerificationPairs, level: str, neg_type: str = "intra", distance: str = "L2") -> tuple[np.ndarray, np.ndarray]:
    """Distances and labels ``[negatives; positives]`` of one level and negative type (for ROC plots)."""
    table = _DescriptorTable(descriptors, level, "cpu")
    d_pos = _pair_distances(table, pairs.positives, distance)
    d_neg = _pair_distances(table, pairs.negatives_intra if neg_type == "intra" else pairs.negatives_inter, distance)
    return torch.cat([d_neg, d_pos]).numpy(), np.r_[np.zeros(len(d_neg)), np.ones(len(d_pos))]


def _balanced_auc(d_neg: np.ndarray, d_pos: np.ndarray) -> float:
    """``metrics.roc`` AUC of ``-[d_neg; d_pos]``: the trapezoids have width only at negatives,
    where the curve's height is the share of positives ranked before; with the stable sort
    (negatives first on ties) that is the share of positives strictly closer."""
    if not len(d_neg) or not len(d_pos):
        return 0.0
    before = np.searchsorted(np.sort(d_pos), np.sort(d_neg), side="left")  # sorted: cache friendly
    return float(before.sum(dtype=np.float64) / (len(d_neg) * len(d_pos)))


def _imbalanced_ap(d_neg: np.ndarray, d_pos: np.ndarray) -> float:
    """``metrics.pr`` AP of ``-[d_neg; d_pos]``: recall steps of 1/P at each positive, from
    precision at the rank before (1 at rank 0) to precision at the positive's rank."""
    if not len(d_pos):
        return 0.0
    small = 1e-10
    c = np.arange(1, len(d_pos) + 1, dtype=np.float64)
    rank = c + np.searchsorted(np.sort(d_neg), np.sort(d_pos), side="right")  # negatives win ties
    previous = np.maximum(c - 1, small) / np.maximum(rank - 1, small)
    return float(np.sum((previous + c / rank) / 2) / len(d_pos))


def evaluate_verification(descriptors, pairs: VerificationPairs, distance: str = "L2", device: str | torch.device = "cpu") -> dict:
    """Balanced ROC AUC and imbalanced AP (first n_pos + 0.2 n_pos of [negatives; positives])
    per noise level and negative type, as ``eval_verification``; ranks are counted with
    sorted searches instead of sorting the 2M pooled distances.

    Precision: distances in float64, from the descriptors as given. The official code reads
    descriptors as float32 and scipy's ``euclidean`` then computes each distance in float32
    (BLAS ``snrm2``, whose rounding a vectorised sum cannot reproduce bit for bit). AUC and AP
    depend on the ranks only, so the two agree exactly unless a positive and a negative
    distance are within one float32 rounding step (~6e-8 relative) of each other: each such
    pair moves the AUC by at most 1 / (n_pos n_neg) and the AP by at most 1 / n_pos (tests:
    learned float32 descriptors agree to 1e-12; a constructed float32 tie is the exception).
    float64 keeps ties that are real and breaks none that are rounding.
    """
    results = {}
    rows = plans = None
    for level in LEVELS:
        table = _DescriptorTable(descriptors, level, device)
        if rows is None:
            rows = [_pair_rows(table, r) for r in (pairs.positives, pairs.negatives_intra, pairs.negatives_inter)]
            plans = [_distance_plan(a, b, len(table.table)) for a, b in rows]
        d_pos = _gathered_distances(table, *rows[0], distance, plan=plans[0]).numpy()
        n_imbalanced = len(d_pos) + int(len(d_pos) * 0.2)
        for neg_type, neg_rows, plan in zip(NEG_TYPES, rows[1:], plans[1:]):
            d_neg = _gathered_distances(table, *neg_rows, distance, plan=plan).numpy()
            k_neg = min(len(d_neg), n_imbalanced)
            results[(level, neg_type)] = {
                "auc": _balanced_auc(d_neg, d_pos),
                "ap": _imbalanced_ap(d_neg[:k_neg], d_pos[: n_imbalanced - k_neg]),
            }
    return results


def _cdist(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "L2":
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    if distance == "L1":
        return torch.cdist(a, b, p=1)
    raise ValueError(f"unknown distance {distance!r}; expected L2 or L1")


def _nearest(queries: torch.Tensor, databases: list[torch.Tensor], distance: str) -> list[torch.Tensor]:
    """Exact nearest neighbour (first index on ties) of every query in each database.

    L2: a float32 matmul over all databases at once screens the candidates, within a bound
    of float32's rounding error of the minimum; only those are compared with exact float64
    differences. The result is the argmin of the exact distances, as scipy's cdist gives.
    """
    if distance != "L2":
        return [_cdist(queries, d, distance).argmin(dim=1) for d in databases]
    q32 = queries.float()
    stacked = torch.cat(databases).float()
    sizes = [len(d) for d in databases]
    database_norms = stacked.pow(2).sum(-1)
    approx = database_norms.unsqueeze(0) - 2 * q32 @ stacked.T  # |q - d|^2 - |q|^2
    # float32 error of |d|^2 - 2 q.d is below ~D * eps * (|q|^2 + |d|^2): screen generously
    tolerance = 1e-4 * (q32.pow(2).sum(-1, keepdim=True) + database_norms.max()) + 1e-30
    out, start = [], 0
    for size, database in zip(sizes, databases):
        block = approx[:, start : start + size]
        start += size
        candidates = block <= block.min(dim=1, keepdim=True).values + tolerance
        rows, cols = candidates.nonzero(as_tuple=True)
        exact = (queries[rows] - database[cols]).pow(2).sum(-1)
        # per row: smallest exact distance, then smallest index
        order = np.lexsort((cols.cpu().numpy(), exact.cpu().numpy(), rows.cpu().numpy()))
        rows_sorted = rows.cpu().numpy()[order]
        first = np.r_[True, rows_sorted[1:] != rows_sorted[:-1]]
        nearest = torch.empty(len(queries), dtype=torch.long)
        nearest[torch.from_numpy(rows_sorted[first])] = cols.cpu()[torch.from_numpy(order[first])]
        out.append(nearest.to(queries.device))
    return out


def evaluate_matching(descriptors, sequences: Sequence[str] | None = None, distance: str = "L2", device: str | torch.device = "cpu") -> dict:
    """Nearest-neighbour matching ref -> image i of each level: AP of the NN distances with
    recall over all N reference patches, as ``eval_matching``."""
    results = {}
    names = [f"{level}{i}" for level in LEVELS for i in range(1, 6)]
    for seq in sequences or list(descriptors):
        ref = torch.as_tensor(np.asarray(descriptors[seq]["ref"]), dtype=torch.float64, device=device)
        truth = torch.arange(len(ref), device=device)
        others = [torch.as_tensor(np.asarray(descriptors[seq][name]), dtype=torch.float64, device=device) for name in names]
        # a float32 (N, 15 N) screen per group of images, kept under ~256 MB
        group = max(1, min(len(names), (64 << 20) // max(len(ref) ** 2, 1)))
        nearest_all = []
        for g in range(0, len(names), group):
            nearest_all += _nearest(ref, others[g : g + group], distance)
        for name, other, nearest in zip(names, others, nearest_all):
            diff = ref - other[nearest]
            nearest_distance = diff.pow(2).sum(-1).sqrt() if distance == "L2" else diff.abs().sum(-1)
            correct = nearest == truth
            order = torch.sort(nearest_distance, stable=True).indices
            results[(seq, name[0], int(name[1]))] = float(_ap_from_sorted(correct[order], len(ref)))
    return results


def evaluate_retrieval(
    descriptors, lists: RetrievalLists, distance: str = "L2", pool_sizes: Sequence[int] = POOL_SIZES, device: str | torch.device = "cpu", chunk: int = 128
) -> np.ndarray:
    """AP of the 5 corresponding patches of each query among [5 positives + the first k - 5
    distractors of other sequences], per level and pool size k, as ``eval_retrieval``.

    Instead of sorting each pool, the rank of every positive is counted: positives come first
    in the candidate list, so with the stable sort a distractor ranks before a positive only
    when strictly closer; one matmul per chunk of queries counts, per pool, the distractors
    closer than each positive.
    """
    q_seqs = [s for s, _ in lists.queries]
    q_idx = np.array([i for _, i in lists.queries], dtype=np.int64)
    d_seqs = [s for s, _ in lists.distractors]
    d_idx = np.array([i for _, i in lists.distractors], dtype=np.int64)
    ref_table = _DescriptorTable(descriptors, "e", device)  # image 0 = ref, whatever the level
    # official: query and distractor descriptors go through float32 (descr_from_idx(...).astype(float32))
    queries32 = ref_table.table[ref_table.rows(q_seqs, np.zeros_like(q_idx), q_idx)].float().double()
    distractors = ref_table.table[ref_table.rows(d_seqs, np.zeros_like(d_idx), d_idx)].float().double()
    seq_code = {s: k for k, s in enumerate(descriptors)}
    d_code = torch.as_tensor([seq_code[s] for s in d_seqs], device=device)
    q_code = torch.as_tensor([seq_code[s] for s in q_seqs], device=device)
    pools = torch.as_tensor(list(pool_sizes), device=device)
    n_pools = len(pool_sizes)
    aps = np.zeros((len(q_seqs), len(LEVELS), n_pools))
    positives = []
    for level in LEVELS:
        table = _DescriptorTable(descriptors, level, device)
        rows = torch.stack([table.rows(q_seqs, np.full_like(q_idx, i), q_idx) for i in range(1, 6)], 1)
        positives.append(table.table[rows])  # (Q, 5, D)
    for start in range(0, len(q_seqs), chunk):
        stop = min(start + chunk, len(q_seqs))
        dist_d = _cdist(queries32[start:stop], distractors, distance)  # (q, Nd)
        valid = d_code.unsqueeze(0) != q_code[start:stop].unsqueeze(1)  # other sequences only
        position = valid.cumsum(1)  # 1-based position among this query's distractors
        # pool bin of each distractor: the first pool k whose first k - 5 distractors hold it
        bins = torch.searchsorted(pools - 5, position.contiguous(), right=False)
        bins = torch.where(valid, bins, torch.full_like(bins, n_pools))
        # counts by float32 matmul: exact for counts below 2^24
        onehot = torch.nn.functional.one_hot(bins, n_pools + 1)[..., :n_pools].float()  # (q, Nd, P)
        for li in range(len(LEVELS)):
            query = queries32[start:stop].unsqueeze(1)  # (q, 1, D)
            dist_p = _cdist(query, positives[li][start:stop], distance).squeeze(1)  # (q, 5)
            dist_p = torch.sort(dist_p, dim=1, stable=True).values
            closer = (dist_d.unsqueeze(1) < dist_p.unsqueeze(2)).float()  # (q, 5, Nd)
            before = torch.bmm(closer, onehot).double().cumsum(-1)  # (q, 5, P) distractors ranked before
            c = torch.arange(1, 6, dtype=torch.float64, device=device).view(1, 5, 1)
            rank = c + before  # 1-based rank of the c-th positive
            previous = torch.where(rank > 1, (c - 1).clamp_min(1e-10) / (rank - 1).clamp_min(1e-10), torch.ones_like(rank))
            ap = ((previous + c / rank) / 2).sum(1) / 5  # recall steps of 1/5
            aps[start:stop, li] = ap.cpu().numpy()
    return aps


def evaluate_hpatches(
    descriptors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    *,
    sequences: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    describe: Callable[[np.ndarray], np.ndarray | torch.Tensor] | None = None,
    split: str = "full",
    tasks: Sequence[str] = ("verification", "matching", "retrieval"),
    tasks_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    distance: str = "L2",
    implementation: str = "fast",
    device: str | torch.device = "cpu",
    list_sizes: Mapping[str, int] | None = None,
    pool_sizes: Sequence[int] = POOL_SIZES,
    lists: tuple[VerificationPairs, RetrievalLists] | None = None,
) -> tuple[dict[str, float], HPatchesResults]:
    """Evaluate descriptors on HPatches; returns ``(summary, raw results)``.

    Give either precomputed ``descriptors`` ``{seq: {image: (N, D)}}`` or ``sequences`` of
    uint8 patches plus ``describe(uint8 (B, 65, 65)) -> (B, D)``. ``sequences`` are also
    needed to generate the retrieval lists (std filter) when ``tasks_dir`` is not given.
    ``implementation``: ``fast`` (this module) or ``official`` (the straight port).
    ``list_sizes``: n_pos / n_neg / n_queries / n_distractors of generated lists;
    ``lists``: already loaded ``(verification pairs, retrieval lists)`` (then neither is read).
    """
    if descriptors is None:
        if sequences is None or describe is None:
            raise ValueError("pass descriptors, or sequences and a describe function")
        descriptors = describe_sequences(sequences, describe)
    if sequences is None and tasks_dir is None and lists is None and "retrieval" in tasks:
        raise ValueError("generating the retrieval lists needs the patches (sequences=...)")
    source = sequences if sequences is not None else {k: {"ref": v["ref"]} for k, v in descriptors.items()}
    verification_pairs, retrieval_lists = lists if lists is not None else (None, None)
    if lists is None and {"verification", "retrieval"} & set(tasks):
        verification_pairs, retrieval_lists = task_lists(source, split, tasks_dir, cache_dir, **dict(list_sizes or {}))
    results = HPatchesResults(pool_sizes=tuple(pool_sizes))
    if implementation == "fast":
        run = {
            "verification": lambda: evaluate_verification(descriptors, verification_pairs, distance, device),
            "matching": lambda: evaluate_matching(descriptors, None, distance, device),
            "retrieval": lambda: evaluate_retrieval(descriptors, retrieval_lists, distance, pool_sizes, device),
        }
    elif implementation == "official":
        run = {
            "verification": lambda: official.eval_verification(descriptors, verification_pairs, distance),
            "matching": lambda: official.eval_matching(descriptors, list(descriptors), distance),
            "retrieval": lambda: official.eval_retrieval(descriptors, retrieval_lists, list(descriptors), distance, pool_sizes),
        }
    else:
        raise ValueError(f"implementation must be fast or official, got {implementation!r}")
    for task in tasks:
        if task not in run:
            raise ValueError(f"unknown task {task!r}; expected verification, matching or retrieval")
        start = time.perf_counter()
        setattr(results, task, run[task]())
        results.seconds[task] = time.perf_counter() - start
    return summarize(results), results
