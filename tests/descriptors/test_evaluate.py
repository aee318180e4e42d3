"""FPR95 (HardNet's definition) on hand cases and against sklearn's ROC; curves; Hamming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve as sk_roc_curve

from descriptors.evaluate import (
    fpr_at_recall,
    hamming_cdist,
    hamming_pair_distances,
    pair_distances,
    roc_auc,
    roc_curve,
    to_bits,
)
from descriptors.plots import plot_pr, plot_roc


def test_fpr95_hand_case():
    # ascending distances: P P N P N N P N N N with 4 positives; 95% recall needs all 4,
    # reached at index 6; negatives before it: indices 2, 4, 5 -> FP 3, TN 3 -> 0.5
    distances = np.arange(10) / 10.0
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    assert fpr_at_recall(distances, labels) == pytest.approx(0.5)
    # at 50% recall the threshold is index 1: no negative before it
    assert fpr_at_recall(distances, labels, recall=0.5) == 0.0
    # shuffling the input does not change anything
    perm = np.random.default_rng(0).permutation(10)
    assert fpr_at_recall(distances[perm], labels[perm]) == pytest.approx(0.5)


def test_fpr95_perfect_and_worst():
    labels = np.array([1] * 20 + [0] * 20)
    assert fpr_at_recall(np.arange(40.0), labels) == 0.0
    # positives all farther than negatives: every negative is a false positive
    assert fpr_at_recall(-np.arange(40.0), labels) == 1.0


def test_fpr95_matches_sklearn_roc():
    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = rng.integers(0, 2, 2000)
        distances = rng.normal(size=2000) - 1.5 * labels
        fpr, tpr, _ = sk_roc_curve(labels, -distances, drop_intermediate=False)
        expected = fpr[np.argmax(tpr >= 0.95)]
        assert fpr_at_recall(torch.as_tensor(distances), torch.as_tensor(labels)) == pytest.approx(expected)


def test_fpr95_rejects_bad_input():
    with pytest.raises(ValueError):
        fpr_at_recall([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        fpr_at_recall([0.1, 0.2, 0.3], [1, 0])


def test_roc_curve_and_auc():
    distances = np.array([0.1, 0.2, 0.3, 0.4])
    labels = np.array([1, 0, 1, 0])
    fpr, tpr, thresholds = roc_curve(distances, labels)
    assert tpr[-1] == 1 and fpr[-1] == 1
    assert roc_auc(distances, labels) == pytest.approx(0.75)
    assert np.all(np.diff(thresholds[1:]) >= 0)  # thresholds are distances, increasing


def test_plots_return_figures():
    import matplotlib.figure

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    distances = rng.normal(size=200) - labels
    assert isinstance(plot_roc({"a": (distances, labels)}), matplotlib.figure.Figure)
    assert isinstance(plot_pr({"a": (distances, labels)}), matplotlib.figure.Figure)


def test_hamming_formats_agree():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (6, 64)).astype(bool)
    signs = torch.as_tensor(np.where(bits, 1.0, -1.0))
    packed = torch.as_tensor(np.packbits(bits, axis=1))
    assert torch.equal(to_bits(signs), torch.as_tensor(bits))
    assert torch.equal(to_bits(packed), torch.as_tensor(bits))
    expected = (bits[:3] != bits[3:]).sum(1)
    np.testing.assert_array_equal(hamming_pair_distances(signs[:3], signs[3:]).numpy(), expected)
    np.testing.assert_array_equal(hamming_pair_distances(packed[:3], packed[3:]).numpy(), expected)
    full = hamming_cdist(signs, packed)
    np.testing.assert_array_equal(full.numpy(), (bits[:, None] != bits[None]).sum(-1))
    assert torch.equal(pair_distances(signs[:3], signs[3:], "hamming"), hamming_pair_distances(signs[:3], signs[3:]))


def test_pair_distances():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert torch.allclose(pair_distances(a, b), torch.tensor([5.0, 1.0]))
    assert torch.allclose(pair_distances(a, b, "l1"), torch.tensor([7.0, 1.0]))
