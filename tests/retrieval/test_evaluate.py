"""Official-protocol metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluate import (
    compute_ap,
    compute_map,
    evaluate_protocol,
    holidays_map,
    mean_precision_at_k,
    revisited_gnd,
    ukbench_score,
)


def column(*indices):
    return np.array(indices, dtype=np.int64)[:, None]


def test_trapezoid_ap_differs_from_plain_ap():
    # positives at ranks 0 and 2 of 3: (1+1)/2*1/2 + (1/2+2/3)/2*1/2
    assert compute_ap([0, 2], 2) == pytest.approx(0.7916667, abs=1e-6)
    plain = (1 / 1 + 2 / 3) / 2
    assert plain == pytest.approx(0.8333333, abs=1e-6)
    assert compute_ap([0], 1) == 1.0
    assert compute_ap([1], 1) == pytest.approx(0.25)  # (0/1 + 1/2) / 2
    assert compute_ap([0, 1], 3) == pytest.approx(2 / 3)  # a positive missing from the list adds 0


def test_junk_is_removed_from_the_ranking():
    ranks = column(5, 9, 7)  # database images 5 (ok), 9 (junk), 7 (ok)
    mean_ap, aps, _, _ = compute_map(ranks, [{"ok": [5, 7], "junk": [9]}])
    assert mean_ap == pytest.approx(1.0) and aps[0] == pytest.approx(1.0)
    mean_ap, _, _, _ = compute_map(ranks, [{"ok": [5, 7], "junk": []}])
    assert mean_ap == pytest.approx(0.7916667, abs=1e-6)
    ranks = column(9, 5, 7)  # junk first: both positives move up by one
    assert compute_map(ranks, [{"ok": [5, 7], "junk": [9]}])[0] == pytest.approx(1.0)


def test_queries_without_positives_are_excluded():
    ranks = np.stack([np.array([0, 1, 2]), np.array([2, 1, 0])], axis=1)
    mean_ap, aps, pr, prs = compute_map(ranks, [{"ok": [2], "junk": []}, {"ok": [], "junk": [0]}], kappas=[1])
    assert np.isnan(aps[1]) and np.isnan(prs[1, 0])
    assert mean_ap == pytest.approx(compute_ap([2], 1))
    assert pr[0] == 0.0  # the only positive is 3rd: P@1 = 0, averaged over the one valid query


def test_mp_at_k_uses_revisitop_denominator():
    # positives at 1-based positions 1 and 3; mP@5: kq = min(3, 5) = 3 -> 2/3, not 2/5
    ranks = column(4, 0, 6, 1, 2, 3)
    result = mean_precision_at_k(ranks, [{"ok": [4, 6], "junk": []}], kappas=[1, 2, 5])
    assert result[1] == pytest.approx(1.0)
    assert result[2] == pytest.approx(0.5)
    assert result[5] == pytest.approx(2 / 3)


def test_revisited_setups_and_their_maps():
    gnd = [{"easy": [0], "hard": [1], "junk": [2]}]
    easy, medium, hard = (revisited_gnd(gnd, s)[0] for s in ("easy", "medium", "hard"))
    assert easy["ok"].tolist() == [0] and sorted(easy["junk"].tolist()) == [1, 2]
    assert sorted(medium["ok"].tolist()) == [0, 1] and medium["junk"].tolist() == [2]
    assert hard["ok"].tolist() == [1] and sorted(hard["junk"].tolist()) == [0, 2]
    ranks = column(3, 0, 2, 1)
    metrics = evaluate_protocol("revisited", ranks, gnd, kappas=[1])
    assert metrics["map_easy"] == pytest.approx(0.25)  # 0 at 1; junk 2, 1 below it
    assert metrics["map_medium"] == pytest.approx(0.125 + 0.2916667, abs=1e-6)  # 0 at 1, 1 at 3-1
    assert metrics["map_hard"] == pytest.approx(0.25)  # 1 at 3 - 2 junk above
    assert metrics["map"] == metrics["map_medium"]
    with pytest.raises(ValueError, match="setup"):
        revisited_gnd(gnd, "extreme")


def test_ukbench_ns_score_counts_self():
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    ranks = np.stack([np.array([0, 1, 2, 3, 4, 5, 6, 7]), np.array([4, 0, 5, 6, 1, 2, 3, 7])], axis=1)
    # query 0 (group 0): top 4 all group 0 -> 4; query 4 (group 1): 4, 5, 6 of group 1 -> 3
    assert ukbench_score(ranks, [0, 1], groups) == pytest.approx(3.5)


def test_holidays_excludes_the_query():
    groups = np.array([10, 10, 10, 11, 11])
    ranks = column(0, 3, 2, 1, 4)  # query image 0 first; positives 1, 2 at positions 3, 2
    # without the query: [3, 2, 1, 4] -> positives at 1 and 2
    expected = compute_ap([1, 2], 2)
    assert holidays_map(ranks, [0], groups) == pytest.approx(expected)
    assert expected == pytest.approx((0 + 0.5) / 4 + (0.5 + 2 / 3) / 4)
