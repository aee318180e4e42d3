"""A straight port of hpatches-benchmark's Python evaluation logic (``python/utils/tasks.py``
and ``metrics.py``): the same loops, numpy / scipy calls, sort and ties, written from the
described semantics. It is slow on purpose: it is the reference that the vectorised code
in :mod:`descriptors.evaluation.hpatches` is tested and benchmarked against.

Differences from the original are only in plumbing: descriptors come as a dict
``{seq: {image: (N, D) array}}`` instead of objects with one attribute per image, lists come
as :class:`~descriptors.data.hpatches.VerificationPairs` / ``RetrievalLists`` instead of pandas
frames, and the results are the raw layout of :class:`~descriptors.evaluation.hpatches.HPatchesResults`.
Arithmetic follows the dtype given: float32 descriptors (what the official ``load_descrs``
yields) give float32 verification distances, as the original; float64 ones give float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import distance as spatial_distance
from tqdm import tqdm

LEVELS = ("e", "h", "t")
ID2T = {0: {t: "ref" for t in LEVELS}, **{i: {t: f"{t}{i}" for t in LEVELS} for i in range(1, 6)}}


def tpfp(scores: np.ndarray, labels: np.ndarray, numpos: int | None = None):
    """Cumulative true / false positives in descending score order, from a (0, 0) start."""
    p = int(np.sum(labels))
    n = len(labels) - p
    if numpos is not None:
        if numpos < p:
            raise ValueError("numpos smaller than the number of positives in labels")
        extra = numpos - p
        p = numpos
        scores = np.hstack((scores, np.repeat(-np.inf, extra)))
        labels = np.hstack((labels, np.repeat(1, extra)))
    perm = np.argsort(-scores, kind="mergesort", axis=0)
    scores = scores[perm]
    stop = np.max(np.where(scores > -np.inf))  # items scored -inf are never retrieved
    perm = perm[: stop + 1]
    labels = labels[perm]
    tp = np.hstack((0, np.cumsum(labels == 1)))
    fp = np.hstack((0, np.cumsum(labels == 0)))
    return tp, fp, p, n, perm


def pr(scores, labels, numpos=None):
    tp, fp, p, n, _ = tpfp(scores, labels, numpos)
    small = 1e-10
    recall = tp / float(np.maximum(p, small))
    precision = np.maximum(tp, small) / np.maximum(tp + fp, small)
    return precision, recall, np.trapezoid(precision, recall) if hasattr(np, "trapezoid") else np.trapz(precision, recall)


def roc(scores, labels, numpos=None):
    tp, fp, p, n, _ = tpfp(scores, labels, numpos)
    small = 1e-10
    tpr = tp / float(np.maximum(p, small))
    fpr = fp / float(np.maximum(n, small))
    return fpr, tpr, np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr)


def dist_matrix(d1: np.ndarray, d2: np.ndarray, distance: str) -> np.ndarray:
    if distance == "L2":
        return spatial_distance.cdist(d1, d2, "euclidean")
    if distance == "L1":
        return spatial_distance.cdist(d1, d2, "cityblock")
    raise ValueError(f"unknown distance {distance!r}; expected L2 or L1")


def get_verif_dists(descr, pairs, op: int, distance: str) -> dict:
    d = {t: np.empty((len(pairs), 1)) for t in LEVELS}
    for idx, p in enumerate(tqdm(pairs, desc=f"verification (official) {op}/3", mininterval=2)):
        t1, t2 = ID2T[p[1]], ID2T[p[4]]
        for t in LEVELS:
            d1 = descr[p[0]][t1[t]][p[2]]
            d2 = descr[p[3]][t2[t]][p[5]]
            if distance == "L2":
                dist = spatial_distance.euclidean(d1, d2)
            else:
                dist = spatial_distance.cityblock(d1, d2)
            d[t][idx] = dist
    return d


def eval_verification(descr, pairs, distance: str = "L2") -> dict:
    d_pos = get_verif_dists(descr, pairs.positives, 1, distance)
    d_neg_intra = get_verif_dists(descr, pairs.negatives_intra, 2, distance)
    d_neg_inter = get_verif_dists(descr, pairs.negatives_inter, 3, distance)
    results = {}
    for t in LEVELS:
        labels = np.vstack((np.zeros_like(d_pos[t]), np.ones_like(d_pos[t])))
        d_intra = np.vstack((d_neg_intra[t], d_pos[t]))
        d_inter = np.vstack((d_neg_inter[t], d_pos[t]))
        n_imbalanced = d_pos[t].shape[0] + int(d_pos[t].shape[0] * 0.2)
        for neg_type, dists in (("intra", d_intra), ("inter", d_inter)):
            _, _, auc = roc(-dists, labels)
            _, _, ap = pr(-dists[0:n_imbalanced], labels[0:n_imbalanced])
            results[(t, neg_type)] = {"auc": float(auc), "ap": float(ap)}
    return results


def eval_matching(descr, test: Sequence[str], distance: str = "L2") -> dict:
    results = {}
    for seq in tqdm(test, desc="matching (official)", mininterval=2):
        d_ref = descr[seq]["ref"]
        gt_l = np.arange(d_ref.shape[0])
        for t in LEVELS:
            for i in range(1, 6):
                d = descr[seq][t + str(i)]
                D = dist_matrix(d_ref, d, distance)
                idx = np.argmin(D, axis=1)
                m_l = np.equal(idx, gt_l)
                m_d = D[gt_l, idx]
                _, _, ap = pr(-m_d, m_l, numpos=m_l.shape[0])
                results[(seq, t, i)] = float(ap)
    return results


def descr_from_idx(descr, idxs) -> np.ndarray:
    dim = len(next(iter(descr.values()))["ref"][0])
    d = np.empty((len(idxs), dim))
    for i, (seq, idx) in enumerate(idxs):
        d[i] = descr[seq]["ref"][idx]
    return d


def get_query_intra_dists(descr, d, query, t: str, distance: str) -> np.ndarray:
    seq, idx = query
    D = np.empty(5)
    d = np.expand_dims(d, axis=0)
    for i in range(1, 6):
        d_ = np.expand_dims(descr[seq][t + str(i)][idx], axis=0)
        D[i - 1] = dist_matrix(d, d_, distance)[0, 0]  # the original assigns the (1,) row: old numpy
    return D


def eval_retrieval(descr, lists, test: Sequence[str], distance: str = "L2", at_ranks: Sequence[int] = (100, 500, 1000, 5000, 10000, 15000, 20000)) -> np.ndarray:
    q = lists.queries
    d = lists.distractors
    desc_q = descr_from_idx(descr, q).astype(np.float32)
    desc_d = descr_from_idx(descr, d).astype(np.float32)
    d_seqs = np.array([s for s, _ in d], dtype=object)
    masks = {seq: d_seqs != seq for seq in test}
    D = dist_matrix(desc_q, desc_d, distance)
    aps = np.zeros((len(q), len(LEVELS), len(at_ranks)))
    for i in tqdm(range(desc_q.shape[0]), desc="retrieval (official)", mininterval=2):
        for li, t in enumerate(LEVELS):
            D_intra = get_query_intra_dists(descr, desc_q[i], q[i], t, distance)
            D_ = D[i, :][masks[q[i][0]]]
            gt = np.zeros_like(D_)
            D_ = np.hstack((D_intra, D_))
            gt = np.hstack((np.array([1, 1, 1, 1, 1]), gt))
            for ki, k in enumerate(at_ranks):
                _, _, ap = pr(-D_[0:k], gt[0:k])
                aps[i, li, ki] = ap
    return aps
