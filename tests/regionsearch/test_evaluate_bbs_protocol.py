"""The peers' protocol (success curve, AUC, success at 0.5, mean IoU) on hand-computed IoU lists."""

from __future__ import annotations

import numpy as np
import pytest

from regionsearch.data.bbs import BBSPair
from regionsearch.evaluate import MethodResult, run_method, run_methods, summarize_real


def test_summary_of_a_hand_computed_iou_list():
    # IoU > t: 3 of 4 for t = 0 .. 0.25 (6 thresholds), 2 of 4 for t = 0.3 .. 0.5 (5; 0.3 is not
    # > 0.3), 1 of 4 for t = 0.55 .. 0.95 (9) and 0 at t = 1 (left out of the AUC)
    summary = summarize_real([0.0, 0.3, 0.55, 1.0])
    expected_curve = [0.75] * 6 + [0.5] * 5 + [0.25] * 9 + [0.0]
    np.testing.assert_allclose(summary["curve"], expected_curve)
    assert summary["auc"] == pytest.approx((6 * 0.75 + 5 * 0.5 + 9 * 0.25) / 20)  # 0.4625
    assert summary["success_rate"] == 0.5
    assert summary["mean_iou"] == pytest.approx(0.4625)
    assert len(summary["thresholds"]) == 21 and summary["thresholds"][-1] == 1.0


def test_perfect_and_failed_lists():
    perfect = summarize_real([1.0, 1.0])
    assert perfect["auc"] == 1.0 and perfect["curve"][-1] == 0.0 and perfect["success_rate"] == 1.0
    failed = summarize_real([0.0, 0.0, 0.0])
    assert failed["auc"] == 0.0 and failed["mean_iou"] == 0.0
    assert summarize_real([0.5])["success_rate"] == 0.0  # strictly greater than 0.5
    assert summarize_real([0.52])["auc"] == pytest.approx(11 / 20)  # t = 0 .. 0.5


def test_empty_list_is_an_error():
    with pytest.raises(ValueError, match="no IoU"):
        summarize_real([])


def test_run_method_cuts_the_template_and_scores_the_box_against_b():
    image = np.zeros((20, 30, 3), np.uint8)
    pair = BBSPair(1, "v", 1, 21, image, np.array([2.4, 3.6, 12.4, 8.6]), image, np.array([5.0, 5.0, 15.0, 10.0]))
    seen = {}

    def method(template, search):
        seen["shape"] = template.shape
        return MethodResult(np.array([10.0, 5.0, 20.0, 10.0]), windows=7)

    (outcome,) = run_method(method, [pair])
    assert seen["shape"] == (5, 10, 3)  # rounded box: x 2..12, y 4..9
    assert outcome.iou == pytest.approx(50 / 150)  # overlap 5 x 10, union 150
    assert outcome.windows == 7 and outcome.seconds >= 0


def test_methods_take_turns_on_every_pair():
    # timing on a shared machine: every pair runs through each method before the next pair
    image = np.zeros((20, 30, 3), np.uint8)
    pairs = [BBSPair(n, "v", 1, 21, image, np.array([2.0, 2.0, 12.0, 8.0]), image, np.array([5.0, 5.0, 15.0, 10.0])) for n in (1, 2)]
    calls = []

    def method(name, box):
        return lambda template, search: calls.append(name) or MethodResult(np.array(box), windows=1)

    outcomes = run_methods({"a": method("a", [5.0, 5.0, 15.0, 10.0]), "b": method("b", [0.0, 0.0, 1.0, 1.0])}, pairs)
    assert calls == ["a", "b", "a", "b"]
    assert [o.iou for o in outcomes["a"]] == [1.0, 1.0] and [o.iou for o in outcomes["b"]] == [0.0, 0.0]
