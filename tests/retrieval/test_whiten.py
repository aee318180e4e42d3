"""PCA-whitening and learned whitening Lw (cirtorch semantics, row vectors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.whiten import (
    cholesky_with_jitter,
    learned_whiten_learn,
    pca_whiten_learn,
    reduce_dimension,
    whiten_apply,
    whitening_linear,
)


def correlated(n=500, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def test_pca_whitening_gives_identity_covariance_on_its_training_set():
    x = correlated()
    mean, projection = pca_whiten_learn(x)
    whitened = (x - mean) @ projection.T
    assert np.allclose(whitened.mean(axis=0), 0, atol=1e-10)
    assert np.allclose(whitened.T @ whitened / len(x), np.eye(6), atol=1e-8)
    variances = np.var((x - mean) @ (projection / np.linalg.norm(projection, axis=1, keepdims=True)).T, axis=0)
    assert (np.diff(variances) <= 1e-9).all()  # components by decreasing variance


def test_pca_whitening_power():
    x = correlated()
    mean, half = pca_whiten_learn(x, power=0.5)
    _, quarter = pca_whiten_learn(x, power=0.25)
    assert np.allclose(np.linalg.norm(quarter, axis=1) ** 2, np.linalg.norm(half, axis=1))  # lambda^-1/4 = sqrt(lambda^-1/2)


def test_whiten_apply_and_linear_agree():
    x = correlated()
    mean, projection = pca_whiten_learn(x)
    applied = whiten_apply(torch.tensor(x, dtype=torch.float32), mean, projection, dims=4)
    linear = whitening_linear(mean, projection, dims=4)
    assert linear.weight.shape == (4, 6)
    with torch.no_grad():
        out = linear(torch.tensor(x, dtype=torch.float32))
    out = out / out.norm(dim=1, keepdim=True)
    assert torch.allclose(applied, out, atol=1e-4)
    assert np.allclose(reduce_dimension(x, mean, projection, 4), applied.numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(whiten_apply(x, mean, projection), axis=1), 1, atol=1e-5)


def test_learned_whitening_hand_case():
    # queries (1, 1), (-1, -1); positives (-1, 1), (-1, -2): differences (2, 0), (0, 1)
    x = np.array([[1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0], [-1.0, -2.0]])
    mean, projection = learned_whiten_learn(x, [0, 1], [2, 3])
    assert np.allclose(mean, [0, 0])
    # S = diag(2, 1/2) -> P1 = inv(chol(S)) = diag(1/sqrt2, sqrt2)
    p1 = np.diag([1 / math.sqrt(2), math.sqrt(2)])
    # P1 X^T X P1^T = [[2, 3], [3, 14]]: eigenvalues 8 +- sqrt(45), eigenvectors (3, lambda - 2)
    rows = []
    for lam in (8 + math.sqrt(45), 8 - math.sqrt(45)):
        v = np.array([3.0, lam - 2.0])
        rows.append(v / np.linalg.norm(v) @ p1)
    expected = np.stack(rows)
    signs = np.sign((projection * expected).sum(axis=1, keepdims=True))  # eigenvectors up to sign
    assert np.allclose(projection, signs * expected, atol=1e-10)
    # the differences of matching pairs are whitened: identity covariance
    diffs = (x[[0, 1]] - x[[2, 3]]) @ projection.T
    assert np.allclose(diffs.T @ diffs / 2, np.eye(2), atol=1e-10)


def test_cholesky_jitter_makes_a_singular_scatter_positive_definite():
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])
    factor = cholesky_with_jitter(singular)
    assert np.isfinite(factor).all()
    assert np.allclose(factor @ factor.T, singular, atol=1e-6)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(singular)  # the jitter was needed


def test_learned_whitening_with_a_single_pair_still_works():
    x = correlated(n=10, d=3)
    mean, projection = learned_whiten_learn(x, [0], [1])  # rank-1 scatter: needs the jitter
    assert np.isfinite(projection).all() and projection.shape == (3, 3)


def test_per_region_pca_whitening_plugs_into_rmac():
    from retrieval.pooling import RMAC, l2n, rmac_region_vectors

    generator = torch.Generator().manual_seed(0)
    other_set = torch.rand(20, 8, 6, 8, generator=generator)  # "learned on the other dataset"
    regions = rmac_region_vectors(other_set).flatten(0, 1).numpy()
    mean, projection = pca_whiten_learn(regions)
    linear = whitening_linear(mean, projection, dims=5)
    x = torch.rand(2, 8, 6, 8, generator=generator)
    with torch.no_grad():
        out = RMAC(region_whiten=linear)(x)
        expected = l2n(l2n(linear(rmac_region_vectors(x))).sum(dim=1))
    assert out.shape == (2, 5) and torch.allclose(out, expected, atol=1e-6)
