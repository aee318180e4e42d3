"""HPatches reader, splits, task lists, the three tasks on hand-made sets with known
answers, and the fast code == the official-logic port on random descriptors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core.errors import CorruptDatasetError, DatasetNotFoundError
from descriptors.data import hpatches as H
from descriptors.evaluation import hpatches as E
from descriptors.evaluation import hpatches_official as official
from tests.conftest import SHARED_DATA

REF_SAMPLE = SHARED_DATA / "hpatches_ref_sample" / "ref.png"


@pytest.mark.skipif(not REF_SAMPLE.is_file(), reason="real ref.png sample not available")
def test_reader_on_real_ref_sample():
    patches = H.read_patch_file(REF_SAMPLE)
    assert patches.shape == (1123, 65, 65) and patches.dtype == np.uint8
    image = cv2.imread(str(REF_SAMPLE), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(patches[7], image[7 * 65 : 8 * 65])
    np.testing.assert_array_equal(patches[-1], image[-65:])


def random_sequence(rng, n: int) -> dict[str, np.ndarray]:
    return {name: rng.integers(0, 256, (n, 65, 65), dtype=np.uint8) for name in H.IMAGES}


def test_write_read_sequence_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    seq = random_sequence(rng, 7)
    H.write_sequence(tmp_path / "hpatches-release" / "v_x", seq)
    H.write_sequence(tmp_path / "hpatches-release" / "i_y", random_sequence(rng, 3))
    loaded = H.load_hpatches(tmp_path, "full")
    assert sorted(loaded) == ["i_y", "v_x"]
    for name in H.IMAGES:
        np.testing.assert_array_equal(loaded["v_x"][name], seq[name])
    assert list(H.load_hpatches(tmp_path, "view")) == ["v_x"]
    assert list(H.load_hpatches(tmp_path, "illum")) == ["i_y"]


def test_missing_and_corrupt_sequence_files(tmp_path):
    folder = H.write_sequence(tmp_path / "v_x", random_sequence(np.random.default_rng(0), 2))
    (folder / "h3.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="h3.png"):
        H.read_sequence(folder)
    cv2.imwrite(str(folder / "h3.png"), np.zeros((130, 64), np.uint8))
    with pytest.raises(CorruptDatasetError, match="h3.png"):
        H.read_sequence(folder)
    cv2.imwrite(str(folder / "h3.png"), np.zeros((195, 65), np.uint8))
    with pytest.raises(CorruptDatasetError, match="h3.png has 3 patches"):
        H.read_sequence(folder)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nothing")):
        H.load_hpatches(tmp_path / "nothing")


def test_official_splits():
    splits = H.load_splits()
    for name in "abc":
        assert len(splits[name]["test"]) == 40 and len(splits[name]["train"]) == 76
        assert not set(splits[name]["test"]) & set(splits[name]["train"])
    assert len(splits["full"]["test"]) == 116
    assert len(splits["illum"]["test"]) == 57 and len(splits["view"]["test"]) == 59
    assert "v_churchill" in splits["b"]["test"] and "v_churchill" in splits["a"]["train"]
    with pytest.raises(DatasetNotFoundError, match="missing"):
        H.split_sequences("a", ["v_churchill"])


def test_user_splits_file(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"mine": {"test": ["v_b"], "train": ["v_a"]}}))
    assert H.split_sequences("mine", ["v_a", "v_b"], path) == ["v_b"]
    path.write_text("{not json")
    with pytest.raises(CorruptDatasetError, match="splits.json"):
        H.load_splits(path)


def test_generated_lists_follow_gen_verif(tmp_path):
    lengths = {"v_a": 30, "i_b": 20, "v_c": 25}
    pairs = H.generate_verification_pairs(lengths, list(lengths), n_pos=300, n_neg=300)
    assert pairs == H.generate_verification_pairs(lengths, list(lengths), n_pos=300, n_neg=300)
    for (s1, t1, i1, s2, t2, i2), (_, _, j1, _, _, j2) in zip(pairs.positives, pairs.negatives_intra):
        assert s1 == s2 and i1 == i2 == j1 and j2 != j1 and t1 != t2 and 0 <= t1 <= 4 and 0 <= t2 <= 4
        assert i1 < lengths[s1] and j2 < lengths[s1]
    assert all(row[:3] == pos[:3] for row, pos in zip(pairs.negatives_inter, pairs.positives))
    H.write_verification_pairs(tmp_path, "x", pairs)
    assert H.read_verification_pairs(tmp_path, "x") == pairs


def test_generated_retrieval_lists_filter_flat_patches():
    rng = np.random.default_rng(0)
    seqs = {"v_a": random_sequence(rng, 40), "v_b": random_sequence(rng, 40)}
    seqs["v_a"]["ref"][:20] = 128  # flat patches are never queries or distractors
    lists = H.generate_retrieval_lists(seqs, list(seqs), n_queries=15, n_distractors=30)
    assert len(lists.queries) == 15 and len(lists.distractors) == 30
    assert not set(lists.queries) & set(lists.distractors)
    assert len(set(lists.queries)) == 15
    assert all(not (s == "v_a" and i < 20) for s, i in lists.queries + lists.distractors)


def test_task_list_with_wrong_columns(tmp_path):
    (tmp_path / "retr_queries_split-full.csv").write_text("s,idx,extra\nv_a,1,2\n")
    (tmp_path / "retr_distractors_split-full.csv").write_text("s,idx\nv_a,1\n")
    with pytest.raises(CorruptDatasetError, match="retr_queries_split-full.csv"):
        H.read_retrieval_lists(tmp_path, "full")


# --------------------------------------------------------------------------- hand cases


def constant_descriptors(values: dict[str, dict[str, np.ndarray]]) -> dict:
    return {s: {name: np.asarray(v, dtype=np.float64) for name, v in images.items()} for s, images in values.items()}


def test_matching_hand_case():
    # patch 0 finds itself at distance 0.1, patch 1's nearest neighbour is patch 0 (wrong):
    # ranked [correct, wrong] -> recall 0, .5, .5; precision 1, 1, .5 -> AP = trapz = 0.5
    ref = np.array([[0.0], [1.0]])
    other = np.array([[0.1], [5.0]])
    descr = {"v_a": {name: (ref if name == "ref" else other) for name in H.IMAGES}}
    fast = E.evaluate_matching(descr)
    slow = official.eval_matching(descr, ["v_a"])
    assert all(v == pytest.approx(0.5) for v in fast.values())
    assert fast == pytest.approx(slow)
    perfect = {"v_a": {name: ref for name in H.IMAGES}}
    assert set(E.evaluate_matching(perfect).values()) == {1.0}


def test_verification_hand_case():
    # one sequence of 1-D descriptors, every image = ref: pair (0, k) has distance x[k].
    # positives at 3, 1, 2, 4, 5 and negatives at 2.5, 6, 7, 8, 9: balanced AUC = the share of
    # (positive, negative) pairs ordered right = 22/25. Imbalanced: the first 5 + 1 rows of
    # [negatives; positives] = the 5 negatives and the positive at 3, which ranks 2nd:
    # AP = recall step 1 x (precision 1e-10/1 + 1/2) / 2
    x = np.array([0, 3, 1, 2, 4, 5, 2.5, 6, 7, 8, 9], dtype=np.float64)[:, None]
    descr = {"v_a": {name: x for name in H.IMAGES}}
    positives = [("v_a", 0, 0, "v_a", 1, k) for k in range(1, 6)]
    negatives = [("v_a", 0, 0, "v_a", 2, k) for k in range(6, 11)]
    pairs = H.VerificationPairs(positives, negatives, negatives)
    fast = E.evaluate_verification(descr, pairs)
    slow = official.eval_verification(descr, pairs)
    for key in fast:
        assert fast[key]["auc"] == pytest.approx(22 / 25)
        assert fast[key]["ap"] == pytest.approx((1e-10 + 0.5) / 2)
        assert fast[key] == pytest.approx(slow[key])


def test_retrieval_hand_case():
    # query 0 of v_a: its 5 positives at distance 1; one distractor (of v_b) at 0.5, the
    # others at 10: the positives rank 2..6. hpatches' PR curve starts at precision 1, so
    # AP = mean_c ((c-1)/(m_c-1) + c/m_c) / 2 with m_c = c + 1 (and 1e-10 / 1 for c = 1)
    descr = {
        "v_a": {name: np.array([[0.0, 0.0]] if name == "ref" else [[1.0, 0.0]]) for name in H.IMAGES},
        "v_b": {name: np.array([[0.5, 0.0], [10.0, 0.0], [0.0, 10.0]]) for name in H.IMAGES},
    }
    lists = H.RetrievalLists([("v_a", 0)], [("v_b", 0), ("v_b", 1), ("v_b", 2)])
    expected = np.mean([(1e-10 + 1 / 2) / 2] + [((c - 1) / c + c / (c + 1)) / 2 for c in range(2, 6)])
    fast = E.evaluate_retrieval(descr, lists, pool_sizes=(6, 100))
    slow = official.eval_retrieval(descr, lists, ["v_a", "v_b"], at_ranks=(6, 100))
    np.testing.assert_allclose(fast, expected)
    np.testing.assert_allclose(fast, slow)
    # a pool of 5 holds only the positives: perfect
    np.testing.assert_allclose(E.evaluate_retrieval(descr, lists, pool_sizes=(5,)), 1.0)
    # distractors of the query's own sequence are masked out
    lists_same = H.RetrievalLists([("v_b", 1)], [("v_b", 0), ("v_a", 0)])
    np.testing.assert_allclose(E.evaluate_retrieval(descr, lists_same, pool_sizes=(10,)), official.eval_retrieval(descr, lists_same, ["v_a", "v_b"], at_ranks=(10,)))


def test_official_metric_port_hand_values():
    precision, recall, ap = official.pr(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]))
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1])
    np.testing.assert_allclose(precision, [1, 1, 0.5, 2 / 3])
    assert ap == pytest.approx(0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2)
    _, _, auc = official.roc(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]))
    assert auc == pytest.approx(0.5)


# --------------------------------------------------------------------------- fast == official


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_official_port_on_random_descriptors(seed, tmp_path):
    rng = np.random.default_rng(seed)
    sizes = {"i_a": 25, "v_b": 40, "v_c": 18, "i_d": 30}
    sequences = {s: random_sequence(rng, n) for s, n in sizes.items()}
    base = {s: rng.normal(size=(n, 6)) for s, n in sizes.items()}
    noise = {"r": 0.0, "e": 0.3, "h": 0.6, "t": 1.0}
    descriptors = {
        s: {name: (base[s] + noise[name[0]] * rng.normal(size=base[s].shape)).astype(np.float32) for name in H.IMAGES} for s in sizes
    }
    descriptors["v_c"]["e2"][3] = descriptors["v_c"]["ref"][3]  # an exact tie at distance 0
    kwargs = {"sequences": sequences, "list_sizes": {"n_pos": 400, "n_neg": 400, "n_queries": 30, "n_distractors": 60}, "pool_sizes": (10, 40, 100), "cache_dir": tmp_path}
    fast_summary, fast = E.evaluate_hpatches(descriptors, **kwargs)
    slow_summary, slow = E.evaluate_hpatches(descriptors, implementation="official", **kwargs)
    assert fast_summary.keys() == slow_summary.keys()
    for key in fast_summary:
        assert fast_summary[key] == pytest.approx(slow_summary[key], abs=1e-12), key
    for key in fast.verification:
        assert fast.verification[key] == pytest.approx(slow.verification[key], abs=1e-12)
    assert fast.matching == pytest.approx(slow.matching, abs=1e-12)
    np.testing.assert_allclose(fast.retrieval, slow.retrieval, atol=1e-12)
    assert 0 < fast_summary["matching_map_t"] < fast_summary["matching_map_e"] <= 1
    # the lists were cached as the official CSVs and read back: same numbers
    (folder,) = (tmp_path / "hpatches_tasks").iterdir()
    assert (folder / "verif_neg_inter_split-full.csv").is_file()
    again, _ = E.evaluate_hpatches(descriptors, tasks_dir=folder, sequences=sequences, pool_sizes=(10, 40, 100))
    assert again == pytest.approx(fast_summary)


def test_describe_function_entry_point():
    rng = np.random.default_rng(0)
    sequences = {"v_a": random_sequence(rng, 12), "v_b": random_sequence(rng, 9)}

    def mean_std(patches):
        flat = patches.reshape(len(patches), -1).astype(np.float64)
        return np.stack([flat.mean(1), flat.std(1)], 1)

    summary, raw = E.evaluate_hpatches(sequences=sequences, describe=mean_std, tasks=("matching",))
    assert set(raw.seconds) == {"matching"} and 0 <= summary["matching_map"] <= 1


# --------------------------------------------------------------------------- the task-list reader


def _reference_parse(path, columns):
    """The straightforward parse: the csv module, one row at a time."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [tuple(v if c.startswith("s") else int(v) for c, v in zip(columns, row)) for row in rows]


def test_list_reader_equals_a_reference_parse(tmp_path):
    # the official format (header, no index column, LF), names of 3..16 bytes, numbers 0..8 digits
    rng = np.random.default_rng(0)
    names = ["v_a", "i_ajuntament", "v_birdwoman", "i_dc", "v_underground", "v_abcdefghijklmn", "i_12345678"]
    n = 3000
    columns = ["s1", "t1", "idx1", "s2", "t2", "idx2"]
    values = [rng.choice(names, n), rng.integers(0, 6, n), rng.integers(0, 10**rng.integers(1, 9, n)), rng.choice(names, n), rng.integers(0, 6, n), rng.integers(0, 4000, n)]
    values[2][:3] = [0, 99999999, 10]
    path = tmp_path / "verif_pos_split-x.csv"
    path.write_text("s1,t1,idx1,s2,t2,idx2\n" + "".join(",".join(str(v) for v in row) + "\n" for row in zip(*(col.tolist() for col in values))))
    expected = _reference_parse(path, columns)
    names_read, columns_read = H.read_task_columns(path, columns)
    rows = list(zip(*(names_read[columns_read[c]].tolist() if c.startswith("s") else columns_read[c].tolist() for c in columns)))
    assert rows == expected
    for kind in ("neg_intra", "neg_inter"):
        (tmp_path / f"verif_{kind}_split-x.csv").write_bytes(path.read_bytes())
    pairs = H.read_verification_pairs(tmp_path, "x").positives
    reference = H.PairList.from_rows(expected)
    assert pairs == reference and list(pairs) == list(reference)
    np.testing.assert_array_equal(pairs.names, reference.names)
    np.testing.assert_array_equal(pairs.codes1, reference.codes1)
    np.testing.assert_array_equal(pairs.codes2, reference.codes2)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_list_reader_in_parts_equals_a_reference_parse(tmp_path, monkeypatch, workers):
    # large lists are parsed in parts of ~_PART_BYTES (in threads) whose name tables are merged:
    # with tiny parts, names found in one part only and a quoted row in the last part (-> the csv
    # module for the whole file) must give the one-part result
    from descriptors.data import plain_csv

    monkeypatch.setattr(plain_csv, "_PART_BYTES", 512)
    rng = np.random.default_rng(1)
    columns = ["s1", "t1", "idx1", "s2", "t2", "idx2"]
    names = [f"v_seq{i}" for i in range(40)] + ["v_synth_" + "m" * 20, "i_only_in_the_first_part"]
    rows = [(rng.choice(names[:41]), int(rng.integers(0, 6)), int(rng.integers(0, 10**6)), rng.choice(names[:41]), int(rng.integers(0, 6)), int(rng.integers(0, 4000))) for _ in range(2000)]
    rows[3] = (names[-1],) + rows[3][1:]
    path = tmp_path / "verif_pos_split-x.csv"
    fallback = H._read_csv_rows
    for last_row in ("", '"v_seq1",1,2,v_seq2,3,4\n'):
        path.write_text("s1,t1,idx1,s2,t2,idx2\n" + "".join(",".join(map(str, row)) + "\n" for row in rows) + last_row)
        parsed = plain_csv.parse_plain_csv
        monkeypatch.setattr(H, "parse_plain_csv", lambda *args, parsed=parsed: parsed(*args, workers=workers))
        monkeypatch.setattr(H, "_read_csv_rows", (lambda *args: pytest.fail("fell back to the csv module")) if not last_row else fallback)
        names_read, columns_read = H.read_task_columns(path, columns)
        assert list(names_read) == sorted(set(names_read.tolist())) and len(names_read) == len({r[0] for r in rows} | {r[3] for r in rows} | ({"v_seq1", "v_seq2"} if last_row else set()))
        read = list(zip(*(names_read[columns_read[c]].tolist() if c.startswith("s") else columns_read[c].tolist() for c in columns)))
        assert read == _reference_parse(path, columns)
        assert all(columns_read[c].dtype == np.int64 for c in columns)


def test_list_reader_reads_long_names_word_wise(tmp_path, monkeypatch):
    # the generated sets name sequences like v_synth_astronaut (17 bytes): the word-wise parse reads
    # names up to 32 bytes; the csv module (20-40x slower on 1M rows) must not be asked
    names = ["v_synth_astronaut", "v_synth_astronauts", "v_synth_astronaut1", "i_x", "v_" + "n" * 30]
    rows = [(names[i % 5], i % 6, i * 7, names[(i * 3) % 5], 0, i) for i in range(50)]
    path = tmp_path / "verif_pos_split-x.csv"
    path.write_text("s1,t1,idx1,s2,t2,idx2\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    monkeypatch.setattr(H, "_read_csv_rows", lambda *args: pytest.fail("fell back to the csv module"))
    names_read, columns = H.read_task_columns(path, ["s1", "t1", "idx1", "s2", "t2", "idx2"])
    assert list(names_read) == sorted(names)
    assert [(names_read[a], int(b), int(c)) for a, b, c in zip(columns["s1"], columns["t1"], columns["idx1"])] == [r[:3] for r in rows]
    assert names_read[columns["s2"]].tolist() == [r[3] for r in rows]


def test_list_reader_tells_long_names_apart_by_their_middle(tmp_path, monkeypatch):
    # names of over 16 bytes with the same length, first and last 8 bytes: only the bytes between
    # tell them apart (the key hashes them too, so the word-wise parse still reads them)
    names = ["v_synth_" + middle + "_astronaut" for middle in ("aaaa", "aaab", "baaa")] + ["v_" + "x" * 30, "v_" + "x" * 29 + "y", "i_dc"]
    rows = [(names[i % 6], i % 6, i, names[(i * 5) % 6], 3, 2 * i) for i in range(60)]
    path = tmp_path / "verif_pos_split-x.csv"
    path.write_text("s1,t1,idx1,s2,t2,idx2\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    monkeypatch.setattr(H, "_read_csv_rows", lambda *args: pytest.fail("fell back to the csv module"))
    names_read, columns = H.read_task_columns(path, ["s1", "t1", "idx1", "s2", "t2", "idx2"])
    assert list(names_read) == sorted(names)
    assert names_read[columns["s1"]].tolist() == [r[0] for r in rows]
    assert names_read[columns["s2"]].tolist() == [r[3] for r in rows]
    assert columns["t2"].tolist() == [3] * 60 and columns["idx2"].tolist() == [2 * i for i in range(60)]


@pytest.mark.parametrize(
    "text",
    [
        "s,idx\nv_a,1\nv_b,22",  # no final newline
        "s,idx\r\nv_a,1\r\nv_b,22\r\n",  # CRLF
        's,idx\n"v_a",1\nv_b,+22\n',  # quotes, a sign: the csv module's way
        "s,idx\nv_a, 3\nv_a_name_longer_than_thirty_two_bytes_x,123456789012\n",  # spaces, long fields
        "s,idx\n",  # no rows
    ],
)
def test_list_reader_on_odd_but_valid_files(tmp_path, text):
    path = tmp_path / "retr_queries_split-x.csv"
    path.write_bytes(text.encode())
    names, columns = H.read_task_columns(path, ["s", "idx"])
    assert list(zip(names[columns["s"]].tolist(), columns["idx"].tolist())) == _reference_parse(path, ["s", "idx"])


@pytest.mark.parametrize("text, message", [("s,idx\nv_a,1,2\n", "line 2 has 3 columns"), ("s,idx\nv_a,x1\n", "line 2"), ("s,idx\nv_a,1\nv_b,x\n", "line 3"), ("s,idx\nv_a,1\n,\n", "line 3"), ("", "header")])
def test_list_reader_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "retr_queries_split-x.csv"
    path.write_text(text)
    with pytest.raises(CorruptDatasetError, match=message):
        H.read_task_columns(path, ["s", "idx"])


# --------------------------------------------------------------------------- summary and precision


def test_matching_summary_reports_both_groupings():
    # i_a: AP 0.2 everywhere; v_b 0.4, v_c 0.6. i/v mean = (0.2 + 0.5) / 2 = 0.35;
    # all sequences = (0.2 + 0.4 + 0.6) / 3 = 0.4
    ap = {"i_a": 0.2, "v_b": 0.4, "v_c": 0.6}
    results = E.HPatchesResults(matching={(s, t, i): value for s, value in ap.items() for t in H.LEVELS for i in range(1, 6)})
    summary = E.summarize(results)
    assert summary["matching_map_iv_mean"] == pytest.approx(0.35)
    assert summary["matching_map_all_sequences"] == pytest.approx(0.4)
    assert summary["matching_map"] == summary["matching_map_iv_mean"]
    assert summary["matching_map_i"] == pytest.approx(0.2) and summary["matching_map_v"] == pytest.approx(0.5)


def test_matching_map_by_sequence_hand_case():
    # v_a: AP 0.1 / 0.2 / 0.3 on the easy / hard / tough images -> 0.2; v_b: image i has AP i / 10
    # on every level -> 0.3; the sequences' mean is the set's all-sequences number
    level_ap = dict(zip(H.LEVELS, (0.1, 0.2, 0.3)))
    matching = {("v_a", t, i): level_ap[t] for t in H.LEVELS for i in range(1, 6)}
    matching.update({("v_b", t, i): i / 10 for t in H.LEVELS for i in range(1, 6)})
    results = E.HPatchesResults(matching=matching)
    by_sequence = E.matching_map_by_sequence(results)
    assert by_sequence == pytest.approx({"v_a": 0.2, "v_b": 0.3})
    assert np.mean(list(by_sequence.values())) == pytest.approx(E.summarize(results)["matching_map_all_sequences"])
    assert E.matching_map_by_sequence(E.HPatchesResults()) == {}

def test_verification_of_learned_float_descriptors_equals_the_float32_official_logic():
    # learned-like descriptors: unit-norm float32, 64-d. The official code computes each pair's
    # distance in float32 (scipy euclidean on float32 rows), ours in float64: the ranks, hence
    # AUC and AP, agree unless a positive and a negative distance fall in one float32 rounding step
    rng = np.random.default_rng(3)
    sizes = {"i_a": 60, "v_b": 80, "v_c": 50}
    base = {s: rng.normal(size=(n, 64)) for s, n in sizes.items()}
    noise = {"r": 0.0, "e": 0.4, "h": 0.7, "t": 1.0}

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    descriptors = {s: {name: unit(base[s] + noise[name[0]] * rng.normal(size=base[s].shape)) for name in H.IMAGES} for s in sizes}
    pairs = H.generate_verification_pairs(sizes, list(sizes), n_pos=2000, n_neg=2000)
    fast = E.evaluate_verification(descriptors, pairs)
    slow = official.eval_verification(descriptors, pairs)  # float32 rows: float32 distances
    for key in fast:
        assert fast[key]["auc"] == pytest.approx(slow[key]["auc"], abs=1e-12), key
        assert fast[key]["ap"] == pytest.approx(slow[key]["ap"], abs=1e-12), key


def test_verification_where_float32_rounding_makes_a_tie():
    # positive distance 1; negative distance sqrt(1 + 2**-26): 1 in float32 (a tie, which the
    # official stable sort breaks for the negative) but above 1 in float64 (the positive first).
    # One pair of 1 x 1 flips: AUC moves by 1 / (P N) = 1, the most it can.
    x = np.array([[0, 0], [1, 0], [1, 2**-13]], dtype=np.float32)
    descr = {"v_a": {name: x for name in H.IMAGES}}
    pairs = H.VerificationPairs([("v_a", 0, 0, "v_a", 1, 1)], [("v_a", 0, 0, "v_a", 2, 2)], [("v_a", 0, 0, "v_a", 2, 2)])
    fast = E.evaluate_verification(descr, pairs)
    slow = official.eval_verification(descr, pairs)
    assert fast[("e", "intra")]["auc"] == 1.0 and slow[("e", "intra")]["auc"] == 0.0
    # the same descriptors in float64 in the official logic: our numbers
    descr64 = {"v_a": {name: x.astype(np.float64) for name in H.IMAGES}}
    assert official.eval_verification(descr64, pairs) == fast
