"""The leave-one-sequence-out suite: its folds' overrides, the per-fold table, the wiring."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from benchmarks.suites import descriptors as descriptor_suite
from benchmarks.suites import descriptors_loo as loo
from descriptors.data.real.protocols import leave_one_out_folds

SEVEN = ["graf", "wall", "bark", "bikes", "leuven", "v_churchill", "vgg_dinosaur"]


def test_fold_overrides_put_tracks_apart_and_hold_the_test_out():
    folds = {fold.test: fold for fold in leave_one_out_folds(SEVEN, ["graf", "wall"])}
    overrides = loo.fold_overrides(folds["bark"], {"vgg_dinosaur"})
    assert overrides == [
        "data.real_data.train_sequences=[wall,bikes,leuven,v_churchill]",
        "++data.real_data.track_sets=[vgg_dinosaur]",
        "data.real_data.val_sequences=[graf]",
        "data.real_data.test_sequence=bark",
        "data.val_subset=graf",
        "data.test_subset=bark",
    ]
    graf = loo.fold_overrides(folds["graf"], {"vgg_dinosaur"})
    assert "data.val_subset=wall" in graf and "graf" not in graf[0] + graf[1] + graf[2]
    dinosaur = loo.fold_overrides(folds["vgg_dinosaur"], {"vgg_dinosaur"})
    assert dinosaur[1] == "++data.real_data.track_sets=[]" and dinosaur[3] == "data.real_data.test_sequence=vgg_dinosaur"


def _rows(test: str, values: dict) -> list[dict]:
    published = {"tfeat_liberty"}
    return [{"method": m, "fpr95": v, "val_fpr95": v / 2, "train": "liberty" if m in published else (None if m == "sift" else "real_train"),
             "device": "CPU", **({"published": {"name": m}} if m in published else {})} for m, v in values.items()]


def test_combine_folds_means_and_counts_by_hand():
    folds = leave_one_out_folds(["graf", "wall", "bark"], ["graf", "wall"])
    fold_rows = {
        "graf": _rows("graf", {"sift": 0.10, "hardnet": 0.05, "tfeat_liberty": 0.20}),
        "wall": _rows("wall", {"sift": 0.20, "hardnet": 0.30, "tfeat_liberty": 0.10}),
        "bark": _rows("bark", {"sift": 0.30, "hardnet": 0.10}),  # a row missing in one fold
    }
    rows = {r["method"]: r for r in loo.combine_folds(folds, fold_rows)}
    assert rows["sift"]["mean_fpr95"] == pytest.approx(0.2) and rows["sift"]["beats_sift"] == 0
    assert rows["hardnet"]["mean_fpr95"] == pytest.approx(0.15) and rows["hardnet"]["beats_sift"] == 2
    assert rows["tfeat_liberty"]["folds"] == 2 and rows["tfeat_liberty"]["mean_fpr95"] == pytest.approx(0.15)
    order = [r["method"] for r in loo.combine_folds(folds, fold_rows)]
    assert order == ["hardnet", "sift", "tfeat_liberty"]  # complete rows first, by mean
    text = loo.markdown(loo.combine_folds(folds, fold_rows), folds, {"quick": False, "device": "CPU", "seeds": None})
    assert "| hardnet | the fold's training sequences | 5.00 | 30.00 | 10.00 | 15.00 | 2/3 |  |" in text
    assert "| tfeat_liberty | liberty | 20.00 | 10.00 |  | 15.00 (2 folds) | 1/2 |  |" in text


def test_run_suite_runs_every_fold_with_its_overrides(tmp_path, monkeypatch):
    calls = []

    def fake_suite(output_dir, quick, publish_dir, score_hpatches, data_overrides, **arguments):
        calls.append({"output_dir": output_dir, "data_overrides": data_overrides, "score_hpatches": score_hpatches, **arguments})
        test = next(o.split("=")[1] for o in data_overrides if o.startswith("data.test_subset="))
        return _rows(test, {"sift": 0.2, "l2net": 0.1 if test != "wall" else 0.3})

    monkeypatch.setattr(descriptor_suite, "run_suite", fake_suite)
    publish = tmp_path / "published"
    publish.mkdir()
    (publish / "descriptors.json").write_text(json.dumps([{"method": "l2net", "fpr95": 0.1388}, {"method": "sift", "fpr95": 0.154}]))
    rows = loo.run_suite(str(tmp_path / "run"), sequences=["graf", "wall", "bark", "vgg_dinosaur"], val_preference=["graf", "wall"],
                         data_overrides=["data=brown_real"], publish_dir=str(publish), methods=["l2net"], seeds=[1, 2])
    assert len(calls) == 4 and all(not c["score_hpatches"] and c["methods"] == ["l2net"] and c["seeds"] == [1, 2] for c in calls)
    for call in calls:
        test = next(o.split("=")[1] for o in call["data_overrides"] if o.startswith("data.test_subset="))
        training = [o for o in call["data_overrides"] if o.startswith(("data.real_data.train_sequences=", "++data.real_data.track_sets="))]
        assert call["data_overrides"][0] == "data=brown_real" and all(test not in o.split("=")[1] for o in training)
        assert call["output_dir"].endswith(f"fold_{test}")
    l2net = next(r for r in rows if r["method"] == "l2net")
    assert l2net["mean_fpr95"] == pytest.approx(0.15) and l2net["beats_sift"] == 3
    saved = json.loads((publish / "descriptors_loo.json").read_text())
    assert [f["test"] for f in saved["folds"]] == ["graf", "wall", "bark", "vgg_dinosaur"]
    text = (publish / "descriptors_loo.md").read_text()
    assert "| 15.00 | 3/4 | 13.88 |" in text and "| 20.00 | 0/4 | 15.40 |" in text  # beside the main protocol's FPR95
    assert (publish / "descriptors_loo.md").is_file() and (publish / "descriptors_loo.png").stat().st_size > 0


def test_config_keys_are_the_suites_arguments(make_cfg):
    cfg = make_cfg(["benchmark=descriptors_loo"], config_name="benchmark", fast=False)
    accepted = set(inspect.signature(loo.run_suite).parameters) | set(inspect.signature(descriptor_suite.run_suite).parameters)
    unknown = [key for key in cfg.benchmark if key != "_target_" and key not in accepted]
    assert not unknown, f"benchmark=descriptors_loo keys no suite takes: {unknown}"
    assert list(cfg.benchmark.sequences) == SEVEN and "data.real_data.n_coil=0" in cfg.benchmark.data_overrides
    main = make_cfg(["benchmark=descriptors"], config_name="benchmark", fast=False).benchmark.methods
    assert list(cfg.benchmark.methods) == [*main, "tfeat_liberty_finetune"]  # every main-protocol method, plus the fine-tuned TFeat


def test_only_folds_runs_those_folds_as_defined_by_all_sequences(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(descriptor_suite, "run_suite", lambda data_overrides, **kw: calls.append(data_overrides) or _rows("x", {"sift": 0.2}))
    loo.run_suite(str(tmp_path), sequences=SEVEN, only_folds=["v_churchill"], data_overrides=[])
    assert len(calls) == 1 and "data.test_subset=v_churchill" in calls[0]
    assert "data.real_data.train_sequences=[wall,bark,bikes,leuven]" in calls[0]  # graf validates, the rest trains
    with pytest.raises(ValueError, match="only_folds"):
        loo.run_suite(str(tmp_path), sequences=SEVEN, only_folds=["nowhere"], data_overrides=[])


def test_merge_fold_rows_keeps_what_did_not_run_and_replaces_what_did():
    published = {
        "graf": [*_rows("graf", {"sift": 0.10, "tfeat": 0.20, "deepdesc": 0.40}), {"method": "l2net_binary", "fpr95": 0.3}],
        "wall": _rows("wall", {"sift": 0.20, "tfeat": 0.30, "deepdesc": 0.80}),
    }
    new = {"wall": [*_rows("wall", {"deepdesc": 0.25, "cs_l2net": 0.15}), {"method": "cs_l2net_binary", "fpr95": 0.2}]}
    merged = loo.merge_fold_rows(published, new)
    assert [r["method"] for r in merged["graf"]] == ["sift", "tfeat", "l2net_binary"]  # deepdesc ran again: no stale graf row
    assert [r["method"] for r in merged["wall"]] == ["sift", "tfeat", "deepdesc", "cs_l2net", "cs_l2net_binary"]
    assert next(r for r in merged["wall"] if r["method"] == "deepdesc")["fpr95"] == 0.25
    assert loo.merge_fold_rows({}, new) == new and loo.merge_fold_rows(published, {}) == published


def _tagged(test: str, values: dict, run: str) -> list[dict]:
    return [{**r, "run": run} for r in _rows(test, values)]


def test_run_suite_merges_into_the_published_table_and_names_each_rows_run(tmp_path, monkeypatch):
    sequences = ["graf", "wall", "bark"]
    folds = leave_one_out_folds(sequences, ["graf", "wall"])
    publish = tmp_path / "published"
    publish.mkdir()
    old_rows = {f.test: _tagged(f.test, {"sift": 0.2, "tfeat": 0.1, "deepdesc": 0.8}, "old_run") for f in folds}
    (publish / "descriptors_loo.json").write_text(json.dumps({
        "quick": False, "device": "CPU (1 threads)", "seeds": None, "runs": {"old_run": {"seed": 7, "seeds": None, "device": "CPU (1 threads)"}},
        "folds": [{"test": f.test, "val": f.val, "train": list(f.train)} for f in folds], "rows": [], "fold_rows": old_rows}))

    def fake_suite(data_overrides, **arguments):
        test = next(o.split("=")[1] for o in data_overrides if o.startswith("data.test_subset="))
        return [{**r, "device": "GPU"} for r in _rows(test, {"deepdesc": 0.15, "hardnet": 0.05})]

    monkeypatch.setattr(descriptor_suite, "run_suite", fake_suite)
    rows = {r["method"]: r for r in loo.run_suite(str(tmp_path / "new_run"), sequences=sequences, data_overrides=[], publish_dir=str(publish),
                                                  merge_published=True, seed=12345, baselines=[], only_folds=["graf", "wall"])}
    assert rows["tfeat"]["folds"] == 3 and rows["tfeat"]["run"] == "old_run" and rows["sift"]["beats_sift"] == 0
    assert rows["deepdesc"]["folds"] == 2 and rows["deepdesc"]["mean_fpr95"] == pytest.approx(0.15) and rows["deepdesc"]["run"] == "new_run"
    assert rows["hardnet"]["beats_sift"] == 2
    saved = json.loads((publish / "descriptors_loo.json").read_text())
    assert saved["runs"] == {"old_run": {"seed": 7, "seeds": None, "device": "CPU (1 threads)"},
                             "new_run": {"seed": 12345, "seeds": None, "device": "GPU"}}
    assert [f["test"] for f in saved["folds"]] == ["graf", "wall", "bark"]
    text = (publish / "descriptors_loo.md").read_text()
    assert "| hardnet | the fold's training sequences | 5.00 | 5.00 |  | 5.00 (2 folds) | 2/2 |  | B |" in text
    assert "- A: `old_run`, seed 7, CPU: tfeat, sift." in text and "- B: `new_run`, seed 12345, GPU: hardnet, deepdesc." in text
    # a table whose folds are defined otherwise is refused, so is a merge with nowhere to read from
    (publish / "descriptors_loo.json").write_text(json.dumps({**saved, "folds": [{"test": "graf", "val": "bark", "train": []}]}))
    with pytest.raises(ValueError, match="defined otherwise"):
        loo.run_suite(str(tmp_path / "again"), sequences=sequences, data_overrides=[], publish_dir=str(publish), merge_published=True)
    with pytest.raises(ValueError, match="publish_dir"):
        loo.run_suite(str(tmp_path / "again"), sequences=sequences, data_overrides=[], merge_published=True)


def test_a_merge_keeps_what_another_run_published_while_this_one_trained(tmp_path, monkeypatch):
    sequences = ["graf", "wall", "bark"]
    folds = leave_one_out_folds(sequences, ["graf", "wall"])
    publish = tmp_path / "published"
    publish.mkdir()

    def table(rows_per_fold: dict, runs: dict) -> str:
        return json.dumps({"quick": False, "device": "CPU", "seeds": None, "runs": runs, "rows": [],
                           "folds": [{"test": f.test, "val": f.val, "train": list(f.train)} for f in folds], "fold_rows": rows_per_fold})

    (publish / "descriptors_loo.json").write_text(table({f.test: _tagged(f.test, {"sift": 0.2}, "old_run") for f in folds},
                                                        {"old_run": {"seed": 7, "seeds": None, "device": "CPU"}}))

    def fake_suite(data_overrides, **arguments):
        test = next(o.split("=")[1] for o in data_overrides if o.startswith("data.test_subset="))
        # another run (TNet) publishes its rows while this one (HardNet) is still training
        other = {f.test: _tagged(f.test, {"sift": 0.2, "tnet_tloss": 0.3}, "other_run") for f in folds}
        (publish / "descriptors_loo.json").write_text(table(other, {"other_run": {"seed": 1, "seeds": None, "device": "CPU"}}))
        return _rows(test, {"hardnet": 0.05})

    monkeypatch.setattr(descriptor_suite, "run_suite", fake_suite)
    loo.run_suite(str(tmp_path / "new_run"), sequences=sequences, data_overrides=[], publish_dir=str(publish), merge_published=True, baselines=[])
    saved = json.loads((publish / "descriptors_loo.json").read_text())
    assert {r["method"] for r in saved["rows"]} == {"sift", "tnet_tloss", "hardnet"}
    assert set(saved["runs"]) == {"other_run", "new_run"}

def test_folds_of_earlier_runs_are_read_instead_of_run(tmp_path, monkeypatch):
    sequences = ["graf", "wall", "bark"]
    calls = []

    def fake_suite(data_overrides, output_dir, **arguments):
        test = next(o.split("=")[1] for o in data_overrides if o.startswith("data.test_subset="))
        calls.append(test)
        rows = [{**r, "test": test} for r in _rows(test, {"tnet_tloss": 0.1 * len(calls)})]
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "descriptors.json").write_text(json.dumps(rows))
        return rows

    monkeypatch.setattr(descriptor_suite, "run_suite", fake_suite)
    common = {"sequences": sequences, "data_overrides": [], "methods": ["tnet_tloss"], "baselines": [], "published": [], "seed": 12345}
    first = tmp_path / "interrupted"
    loo.run_suite(str(first), only_folds=["graf", "wall"], **common)
    assert calls == ["graf", "wall"]
    rows = loo.run_suite(str(tmp_path / "resumed"), reuse_folds_from=[str(tmp_path / "missing"), str(first)], **common)
    assert calls == ["graf", "wall", "bark"]  # only the fold nobody had finished ran again
    assert rows[0]["fpr95"] == {"graf": pytest.approx(0.1), "wall": pytest.approx(0.2), "bark": pytest.approx(0.3)} and rows[0]["folds"] == 3
    saved = json.loads((tmp_path / "resumed" / "descriptors_loo.json").read_text())
    assert saved["runs"]["resumed"]["reused_folds"] == {"graf": str(first), "wall": str(first)}
    assert all(r["run"] == "resumed" for rows in saved["fold_rows"].values() for r in rows)  # the legend names the combining run
    # a fold table of other methods is refused, naming the file
    (first / "fold_bark").mkdir()
    (first / "fold_bark" / "descriptors.json").write_text(json.dumps([{**r, "test": "bark"} for r in _rows("bark", {"hardnet": 0.1})]))
    with pytest.raises(ValueError, match="fold_bark/descriptors.json holds 'hardnet'"):
        loo.run_suite(str(tmp_path / "again"), reuse_folds_from=[str(first)], **common)

def test_a_table_from_before_runs_were_recorded_names_its_run_by_its_checkpoints():
    table = {"fold_rows": {"graf": [{"method": "sift"}, {"method": "l2net", "checkpoint": "/x/logs/benchmark/runs/2026-12-07_03-04-01_1/fold_graf/a.ckpt"}]}}
    assert loo._legacy_run_id(table) == "2026-12-07_03-04-01_1"
    assert loo._legacy_run_id({"fold_rows": {}}) == "earlier run"


def test_heldout_protocol_is_the_loo_fold_that_tests_v_churchill(make_cfg):
    # benchmark=descriptors_heldout spells out one fold's overrides: they must stay the LOO suite's
    heldout = make_cfg(["benchmark=descriptors_heldout"], config_name="benchmark", fast=False).benchmark
    folds = make_cfg(["benchmark=descriptors_loo"], config_name="benchmark", fast=False).benchmark
    fold = next(f for f in leave_one_out_folds(list(folds.sequences), list(folds.val_preference)) if f.test == "v_churchill")
    assert list(heldout.data_overrides) == [*folds.data_overrides, *loo.fold_overrides(fold, set(folds.track_sets))]
    assert heldout._target_ == "benchmarks.suites.descriptors.run_suite" and len(heldout.seeds) == 3
    unknown = [key for key in heldout if key != "_target_" and key not in inspect.signature(descriptor_suite.run_suite).parameters]
    assert not unknown, f"benchmark=descriptors_heldout keys the suite does not take: {unknown}"


def test_the_loo_budget_composes_and_gives_deepdesc_tnet_and_deepcompare_their_per_patch_input(make_cfg):
    import hydra

    cfg = make_cfg(["benchmark=descriptors_loo"], config_name="benchmark", fast=False)
    main = make_cfg(["benchmark=descriptors"], config_name="benchmark", fast=False).benchmark.budget
    assert list(cfg.benchmark.budget.l2net) == list(main.l2net)
    for method in ("deepdesc", "tnet_tloss", "tnet_tgloss", "deepcompare_2ch2stream", "deepcompare_2chdeep"):
        budget = list(cfg.benchmark.budget[method])
        # the main protocol's budget plus the per-patch input, nothing else
        assert budget == [*main[method], "+model.net.input_eps=0.001"], method
        train = make_cfg([f"experiment=descriptors/{method}", *cfg.benchmark.data_overrides, *budget])
        assert hydra.utils.instantiate(train.model.net).input_eps == pytest.approx(0.001), method
