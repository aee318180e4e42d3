"""Descriptor whitening learned on a separate set (cirtorch ``utils/whiten.py``, row vectors).

- :func:`pca_whiten_learn`: PCA-whitening ``P = diag(lambda^-1/2) V^T`` on centred vectors
  (``power`` 0.5; dirtorch's "whitening power" 0.25 is ``power=0.25``).
- :func:`learned_whiten_learn`: Radenovic et al.'s learned whitening Lw from matching pairs.
- :func:`whiten_apply`: ``L2(P[:dims] (x - m))``; :func:`whitening_linear`: the same projection
  as an ``nn.Linear`` (weight ``P[:dims]``, bias ``-P[:dims] m``) to put on a network.

Vectors are rows: ``X`` is ``(N, D)``. Learn on another dataset than the one evaluated.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected vectors (N, D), got shape {x.shape}")
    return x


def pca_whiten_learn(vectors, power: float = 0.5, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening: ``m`` = mean, ``P = diag(lambda^-power) V^T``, rows sorted by decreasing variance.

    Returns:
        ``(m (D,), P (D, D))``; ``P @ (x - m)`` has identity covariance on the training set
        (for ``power=0.5`` and full-rank data). Directions with ``lambda < eps`` are dropped.
    """
    x = _as_numpy(vectors)
    mean = x.mean(axis=0)
    centred = x - mean
    covariance = centred.T @ centred / len(x)
    eigvals, eigvecs = np.linalg.eigh(covariance)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    keep = eigvals > eps
    projection = np.diag(eigvals[keep] ** -power) @ eigvecs[:, keep].T
    return mean, projection


def cholesky_with_jitter(matrix: np.ndarray) -> np.ndarray:
    """Cholesky factor, adding ``1e-10 * 10^k`` to the diagonal until positive definite (cirtorch)."""
    k = 0
    while True:
        try:
            return np.linalg.cholesky(matrix + (0.0 if k == 0 else 1e-10 * 10 ** (k - 1)) * np.eye(len(matrix)))
        except np.linalg.LinAlgError:
            k += 1
            if k > 30:
                raise


def learned_whiten_learn(vectors, query_indices, positive_indices) -> tuple[np.ndarray, np.ndarray]:
    """Learned whitening Lw (Radenovic et al., TPAMI 2018, section 3.4; cirtorch ``whitenlearn``).

    ``m`` = mean of the query vectors; ``S`` = covariance of the query - positive differences;
    ``P1 = inv(chol(S))`` (diagonal jitter until positive definite); ``V`` = eigenvectors of
    ``P1 (X - m)(X - m)^T P1^T`` by decreasing eigenvalue; ``P = V^T P1``.

    Args:
        vectors: ``(N, D)`` descriptors; query_indices, positive_indices: matching pairs.

    Returns:
        ``(m (D,), P (D, D))``.
    """
    x = _as_numpy(vectors)
    queries = x[np.asarray(query_indices)]
    positives = x[np.asarray(positive_indices)]
    mean = queries.mean(axis=0)
    diffs = queries - positives
    scatter = diffs.T @ diffs / len(diffs)
    p1 = np.linalg.inv(cholesky_with_jitter(scatter))
    centred = (x - mean) @ p1.T  # rows = P1 (x - m) over all vectors, as cirtorch
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigvals)[::-1]
    projection = eigvecs[:, order].T @ p1
    return mean, projection


def whiten_apply(vectors, mean, projection, dims: int | None = None, eps: float = 1e-6):
    """``L2(P[:dims] (x - m))`` per row; returns the input's type (tensor or array).

    Shape:
        (N, D) -> (N, dims)
    """
    is_tensor = isinstance(vectors, torch.Tensor)
    x = _as_numpy(vectors)
    projection = np.asarray(projection)[: dims or len(projection)]
    out = (x - np.asarray(mean)) @ projection.T
    out = out / (np.linalg.norm(out, axis=1, keepdims=True) + eps)
    if is_tensor:
        return torch.as_tensor(out, dtype=vectors.dtype, device=vectors.device)
    return out.astype(np.float32)


def whitening_linear(mean, projection, dims: int | None = None) -> nn.Linear:
    """The whitening as a layer: ``weight = P[:dims]``, ``bias = -P[:dims] m`` (cirtorch issue #8)."""
    projection = np.asarray(projection, dtype=np.float64)[: dims or len(projection)]
    linear = nn.Linear(projection.shape[1], projection.shape[0], bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(projection))
        linear.bias.copy_(torch.from_numpy(-projection @ np.asarray(mean, dtype=np.float64)))
    return linear


def reduce_dimension(vectors, mean, projection, dims: int):
    """Dimension reduction: the first ``dims`` whitened components (= :func:`whiten_apply`)."""
    return whiten_apply(vectors, mean, projection, dims)
