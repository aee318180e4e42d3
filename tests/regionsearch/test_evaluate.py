"""The official protocol: IoU, the strict success rule, the success curve and its AUC, and
how matchers are scored pair by pair."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from regionsearch.baselines import MatchResult
from regionsearch.evaluate import (
    box_iou,
    evaluate_matcher,
    prior_box_ious,
    success_auc,
    success_curve,
    summarize_ious,
)


def test_iou_hand_cases():
    a = torch.tensor([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, torch.tensor([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, torch.tensor([10.0, 10.0, 20.0, 20.0])) == 0.0  # touching corners
    assert box_iou(a, torch.tensor([2.0, 2.0, 4.0, 4.0])) == pytest.approx(4 / 100)
    assert np.isclose(box_iou(np.array([0, 0, 28, 28.0]), np.array([9, 0, 37, 28.0])), 19 * 28 / (2 * 784 - 19 * 28))


def test_success_threshold_is_strict_and_28px_geometry():
    truth = torch.tensor([0.0, 0.0, 28.0, 28.0])
    # a one-axis shift of 9 px keeps IoU > 0.5; 10 px does not (the lenient metric of the paper)
    assert box_iou(truth, truth + torch.tensor([9.0, 0, 9, 0])) > 0.5
    assert box_iou(truth, truth + torch.tensor([10.0, 0, 10, 0])) < 0.5


def test_success_curve_and_auc_hand_case():
    ious = np.array([0.0, 0.3, 0.6, 1.0])
    curve = success_curve(ious, thresholds=np.array([0.0, 0.5, 1.0]))
    assert curve.tolist() == [0.75, 0.5, 0.0]
    # DDIS convention: mean over thresholds 0, 0.05, ..., 0.95
    expected = np.mean([(ious > t).mean() for t in np.round(np.arange(0, 1.0, 0.05), 2)])
    assert success_auc(ious) == pytest.approx(expected)


def test_summarize_ious_reads_the_last_column_as_the_answer():
    path_ious = np.array([[0.0, 0.2, 0.6], [0.0, 0.7, 0.4]])
    results = summarize_ious(path_ious)
    assert results["success_rate"] == 0.5 and results["mean_iou"] == pytest.approx(0.5) and results["n_pairs"] == 2
    assert results["success_per_step"].tolist() == [0.0, 0.5, 0.5]
    assert results["auc"] == pytest.approx(success_auc(path_ious[:, -1]))


def test_prior_box_is_the_median_training_box():
    train = torch.tensor([[0.0, 0, 10, 10], [2, 2, 12, 12], [100, 100, 110, 110]])
    ious = prior_box_ious(train, torch.tensor([[2.0, 2, 12, 12], [50, 50, 60, 60]]))
    assert ious.tolist() == [1.0, 0.0]


def test_evaluate_matcher_scores_each_pair_in_hwc():
    pairs = SimpleNamespace(
        queries=torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
        references=torch.zeros(3, 3, 8, 8, dtype=torch.uint8),
        boxes=torch.tensor([[0.0, 0, 4, 4], [4, 4, 8, 8], [0, 0, 4, 4]]),
    )
    shapes = []

    def matcher(query, reference, offset=0):
        shapes.append((query.shape, reference.shape))
        return MatchResult(np.array([offset, offset, offset + 4, offset + 4.0]), score=1.0, windows=25)

    result = evaluate_matcher("fake", matcher, pairs, np.arange(2), offset=4)
    assert result["ious"].tolist() == [0.0, 1.0] and result["windows_per_query"] == 25.0 and result["ms_per_query"] >= 0
    assert shapes == [((4, 4), (8, 8, 3))] * 2
