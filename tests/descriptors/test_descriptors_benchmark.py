"""The descriptors benchmark suite end to end at toy sizes (Brown and HPatches fixtures in the
official layouts), and its table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from benchmarks.suites.descriptors import combine_seeds, run_suite, scaled_items
from benchmarks.suites.descriptors_tables import (
    PAPER,
    installation_groups,
    markdown,
    selection_agreement,
)
from descriptors.data import hpatches as H
from descriptors.data.brown import BrownSubset
from descriptors.data.samplers import training_pairs
from tests.descriptors.test_experiments import write_brown_fixture

ROW_KEYS = {"method", "train", "test", "fpr95", "hpatches_verification", "hpatches_matching", "hpatches_retrieval", "patches_per_s", "device"}


def _hpatches_release(root, n_sequences: int = 2, n_patches: int = 12):
    rng = np.random.default_rng(0)
    for k in range(n_sequences):
        ref = rng.integers(0, 256, (n_patches, 65, 65), dtype=np.uint8)
        images = {name: np.clip(ref.astype(int) + rng.integers(-20, 21, ref.shape), 0, 255).astype(np.uint8) for name in H.IMAGES}
        images["ref"] = ref
        H.write_sequence(root / "hpatches-release" / f"v_fixture{k}", images)
    return root / "hpatches-release"


def test_suite_writes_rows_tables_and_plots(tmp_path):
    data = write_brown_fixture(tmp_path / "data", n_points=40)
    release = _hpatches_release(tmp_path / "hp")
    publish = tmp_path / "published"
    publish.mkdir()
    # a row of another method already published must survive a partial re-run
    (publish / "descriptors.json").write_text(json.dumps([{**dict.fromkeys(ROW_KEYS), "method": "tfeat", "fpr95": 0.5}]))
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_suite(
            output_dir=str(tmp_path / "run"),
            methods=["hardnet", "l2net", "deepcompare_siam"],
            data_dir=str(data),
            cache_dir=str(tmp_path / "cache"),
            baselines=("sift",),
            data_overrides=["data=brown", "data.val_subset=liberty"],
            base_overrides=[
                f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", "extras.print_config=false",
                "trainer=cpu", "trainer.max_epochs=1", "++trainer.num_sanity_val_steps=0", "~callbacks.rich_progress_bar",
                "data.n_train=16", "data.batch_size=8", "data.n_val=32", "data.eval_batch_size=32",
            ],
            # HardNet with a contrast floor: still checked against kornia's HardNet (at its eps)
            budget={"l2net": ["model.loss_kwargs.e3_weight=0"], "hardnet": ["model.net.input_eps=0.05"]},
            n_test_pairs=100,
            hpatches_root=str(release),
            hpatches_lists={"n_pos": 200, "n_neg": 200, "n_queries": 10, "n_distractors": 20},
            timing_batch_size=16,
            timing_patches=32,
            timing_repeats=1,
            publish_dir=str(publish),
            budget_scale=2.0,
        )
    GlobalHydra.instance().clear()
    assert [r["method"] for r in rows] == ["sift", "hardnet", "l2net", "l2net_binary", "deepcompare_siam"]
    for row in rows:
        assert ROW_KEYS <= set(row), row["method"]
        assert 0.0 <= row["fpr95"] <= 1.0 and row["test"] == "notredame" and row["test_pairs"] == 100
    by_name = {r["method"]: r for r in rows}
    for name in ("sift", "hardnet", "l2net", "l2net_binary"):
        assert all(0.0 <= by_name[name][f"hpatches_{t}"] <= 1.0 for t in ("verification", "matching", "retrieval")), name
        by_sequence = by_name[name]["hpatches_matching_by_sequence"]  # one set per sequence of the release
        assert set(by_sequence) == {f"v_fixture{k}" for k in range(2)} and all(0.0 <= v <= 1.0 for v in by_sequence.values()), name
    assert by_name["deepcompare_siam"]["hpatches_matching"] is None  # a metric network: no descriptors
    hardnet = by_name["hardnet"]
    assert hardnet["patches_per_s"] > 0 and hardnet["kornia_patches_per_s"] > 0
    assert hardnet["max_abs_difference_vs_kornia"] < 1e-4  # kornia's HardNet with our weights
    assert hardnet["input_eps"] == 0.05 and "input_eps" not in by_name["l2net"]
    # extraction through the inference copy (folded BN, channels-last on the CPU), still kornia's function
    assert all(by_name[m]["inference"] == {"fold_batchnorm": True, "channels_last": True} for m in ("hardnet", "l2net", "deepcompare_siam"))
    assert "`val FPR95` is measured on pairs of the training set" in (tmp_path / "run" / "descriptors.md").read_text()
    assert hardnet["train"] == "liberty" and hardnet["epochs"] == 1 and hardnet["seconds_per_epoch"] > 0
    # budget_scale=2: twice the 16 items of every method, in whole batches of 8
    assert all(r["train_items_per_epoch"] == 32 and r["train_batch_size"] == 8 for r in rows if r["method"] in ("hardnet", "l2net", "deepcompare_siam"))
    assert by_name["l2net_binary"]["derived_from"] == "l2net"
    # our networks' dimensions (a metric network: its tower's features)
    assert [by_name[m]["dim"] for m in ("hardnet", "l2net", "l2net_binary", "deepcompare_siam")] == [128, 128, 128, 256]
    run = tmp_path / "run"
    assert json.loads((run / "descriptors.json").read_text()) == rows
    table = (run / "descriptors.md").read_text()
    assert "| HardNet | 128 | 1.47 |" in table and f"**{100 * hardnet['fpr95']:.2f}**" in table
    assert (run / "descriptors_roc.png").stat().st_size > 0
    # SIFT on the selection set as well (the pairs the trained networks' val FPR95 is measured on)
    assert 0.0 <= by_name["sift"]["val_fpr95"] <= 1.0 and by_name["l2net_binary"]["val_fpr95"] is None
    assert (run / "descriptors_val_vs_test.png").stat().st_size > 0 and (publish / "descriptors_val_vs_test.png").stat().st_size > 0
    assert "Spearman's rank correlation of `liberty` val FPR95 and `notredame` FPR95 over the 3 learned rows" in table
    # the second selection set: the same val pairs with look-alike negatives, for every row with a val number
    for name in ("sift", "hardnet", "l2net", "deepcompare_siam"):
        assert 0.0 <= by_name[name]["val_lookalike_fpr95"] <= 1.0, name
    assert "val_lookalike_fpr95" not in by_name["l2net_binary"]
    assert "`liberty` look-alike val FPR95 and `notredame` FPR95 over the 3 learned rows" in table and "val look-alike FPR95" in table
    assert (run / "descriptors_lookalike_val_vs_test.png").stat().st_size > 0
    # the fit to the training distribution: pairs of the training subset, for every row (binary ones too)
    for name in ("sift", "hardnet", "l2net", "l2net_binary", "deepcompare_siam"):
        assert 0.0 <= by_name[name]["train_fpr95"] <= 1.0, name
    assert by_name["sift"]["train_pairs"] == 4000
    assert "train-pairs FPR95" in table and "On pairs of the training set `liberty` (`train-pairs FPR95`: 4000 pairs" in table
    assert (run / "descriptors_fit_vs_test.png").stat().st_size > 0 and (publish / "descriptors_fit_vs_test.png").stat().st_size > 0
    # which installation produced the rows
    assert all(r["software"]["torch"] == torch.__version__ for r in rows) and "Software of this run: python" in table
    # and which data: the train / val / test subsets' digests, the same for every row of the run
    assert rows[0]["data_md5"].keys() == {"train", "val", "test"} and all(len(v) == 12 for v in rows[0]["data_md5"].values())
    assert all(r["data_md5"] == rows[0]["data_md5"] for r in rows) and f"test {rows[0]['data_md5']['test']}" in table
    published = json.loads((publish / "descriptors.json").read_text())
    # the kept row and the new ones in a full run's order (binary after its float method)
    assert [r["method"] for r in published] == ["sift", "tfeat", "l2net", "l2net_binary", "hardnet", "deepcompare_siam"]


def test_suite_trains_every_seed_and_reports_the_mean(tmp_path):
    data = write_brown_fixture(tmp_path / "data", n_points=40)
    release = _hpatches_release(tmp_path / "hp")

    def suite(output, **kwargs):
        return run_suite(
            output_dir=str(tmp_path / output), methods=["l2net"], data_dir=str(data), cache_dir=str(tmp_path / "cache"),
            baselines=("sift",), data_overrides=["data=brown", "data.val_subset=liberty"],
            base_overrides=[
                f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", "extras.print_config=false",
                "trainer=cpu", "trainer.max_epochs=1", "++trainer.num_sanity_val_steps=0", "~callbacks.rich_progress_bar",
                "data.n_train=16", "data.batch_size=8", "data.n_val=32", "data.eval_batch_size=32", "model.loss_kwargs.e3_weight=0",
            ],
            n_test_pairs=100, hpatches_root=str(release),
            hpatches_lists={"n_pos": 200, "n_neg": 200, "n_queries": 10, "n_distractors": 20},
            timing_batch_size=16, timing_patches=32, timing_repeats=1, **kwargs,
        )

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = suite("run", seeds=[3, 4])
        # seed 3 from the first run's checkpoint (a string key, as from the command line), seed 4 trained again
        again = suite("again", seeds=[3, 4], checkpoints={"l2net": {"3": rows[1]["checkpoints"][0]}})
        with pytest.raises(ValueError, match=r"seeds \[5\], which are not in benchmark.seeds"):
            suite("refused", seeds=[3, 4], checkpoints={"l2net": {5: rows[1]["checkpoints"][0]}})
        with pytest.raises(FileNotFoundError, match="no checkpoint at"):
            suite("missing", checkpoints={"l2net": str(tmp_path / "nothing.ckpt")})
        # QUICK: SIFT on the same smaller val set as the trained methods
        quick = suite("quick", quick=True, quick_overrides=["data.n_train=8", "data.n_val=16"])
    GlobalHydra.instance().clear()
    # the same numbers (training is deterministic), the given seed not trained again
    assert [r["fpr95_seeds"] for r in again[1:]] == [r["fpr95_seeds"] for r in rows[1:]]
    assert again[1]["checkpoints"][0] == rows[1]["checkpoints"][0] and "again" in again[1]["checkpoints"][1]
    assert not (tmp_path / "again" / "train" / "l2net" / "seed_3").exists()
    # the given seed's val FPR95 and epoch time come from the run beside its checkpoint
    assert again[1]["val_fpr95"] == rows[1]["val_fpr95"] and again[1]["seconds_per_epoch"] > 0
    assert [r["method"] for r in rows] == ["sift", "l2net", "l2net_binary"]
    assert "seeds" not in rows[0]  # SIFT is not trained
    assert rows[0]["val_pairs"] == 32 and quick[0]["val_pairs"] == 16
    for row in rows[1:]:
        assert row["seeds"] == [3, 4] and len(row["fpr95_seeds"]) == 2 and len(row["train_fpr95_seeds"]) == 2
        assert row["fpr95"] == round((row["fpr95_seeds"][0] + row["fpr95_seeds"][1]) / 2, 6)
    first, second = (torch.load(c, map_location="cpu", weights_only=False)["state_dict"] for c in rows[1]["checkpoints"])
    assert rows[1]["checkpoints"][0].endswith(".ckpt") and "seed_3" in rows[1]["checkpoints"][0] and "seed_4" in rows[1]["checkpoints"][1]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # two different trainings
    assert "(2 seeds)" in (tmp_path / "run" / "descriptors.md").read_text()


def test_seed_rows_combine_to_means_and_sample_deviation():
    def row(method, fpr95, val, speed):
        return {"method": method, "fpr95": fpr95, "val_fpr95": val, "patches_per_s": speed, "hpatches_matching": None, "checkpoint": f"{method}{fpr95}", "dim": 128,
                "max_abs_difference_vs_kornia": fpr95 / 1000}

    per_seed = [[row("l2net", 0.10, 0.04, 100.0), row("l2net_binary", 0.20, None, 100.0)],
                [row("l2net", 0.14, 0.06, 300.0), row("l2net_binary", 0.30, None, 300.0)]]
    per_seed[0][0]["hpatches_matching_by_sequence"] = {"v_a": 0.5, "v_b": 0.2}
    per_seed[1][0]["hpatches_matching_by_sequence"] = {"v_a": 0.7, "v_b": 0.4}
    net, binary = combine_seeds(per_seed, [1, 2])
    assert net["hpatches_matching_by_sequence"] == {"v_a": 0.6, "v_b": 0.3} and "hpatches_matching_by_sequence" not in binary
    assert net["fpr95"] == 0.12 and net["val_fpr95"] == 0.05 and net["patches_per_s"] == 200.0 and net["dim"] == 128
    assert net["fpr95_seeds"] == [0.10, 0.14] and net["fpr95_std"] == round(0.04 / 2**0.5, 6) and net["seeds"] == [1, 2]
    assert binary["fpr95"] == 0.25 and binary["val_fpr95"] is None and binary["hpatches_matching"] is None
    assert net["checkpoints"] == ["l2net0.1", "l2net0.14"] and net["max_abs_difference_vs_kornia"] == 0.14 / 1000
    assert combine_seeds(per_seed[:1], [None]) == per_seed[0]  # one run at the config's seed: as before
    assert combine_seeds(per_seed[:1], [7])[0]["seeds"] == [7]
    with pytest.raises(ValueError, match="differ"):
        combine_seeds([per_seed[0], per_seed[1][::-1]], [1, 2])
    info = {"quick": False, "train": "tr", "test": "t", "test_pairs": 10, "hpatches_sequences": ["v_a"], "device": "cpu"}
    table = markdown([net], info)
    assert "| **12.00** ± 2.83 (2 seeds) | 5.00 |  |" in table and "mean ± sample standard deviation over training seeds" in table
    assert "standard deviation" not in markdown(per_seed[0], info)


def test_the_leave_one_out_means_column_comes_from_the_published_loo_table(tmp_path):
    from benchmarks.suites.descriptors_tables import loo_means, markdown

    path = tmp_path / "descriptors_loo.json"
    path.write_text(json.dumps({"folds": [{"test": t} for t in ("graf", "wall", "bark")],
                                "rows": [{"method": "sift", "mean_fpr95": 0.2, "folds": 3}, {"method": "l2net", "mean_fpr95": 0.1, "folds": 2},
                                         {"method": "odd", "mean_fpr95": None, "folds": 0}]}))
    means, folds = loo_means(str(path))
    assert means == {"sift": (0.2, 3), "l2net": (0.1, 2)} and folds == 3
    assert loo_means(str(tmp_path / "missing.json")) == ({}, 0) and loo_means(None) == ({}, 0)
    info = {"quick": False, "train": "tr", "test": "t", "test_pairs": 10, "hpatches_sequences": [], "device": "cpu",
            "loo_means": means, "loo_folds": folds}
    rows = [{"method": "sift", "fpr95": 0.3}, {"method": "l2net", "fpr95": 0.05}, {"method": "tfeat", "fpr95": 0.4}]
    table = markdown(rows, info).splitlines()
    header = next(line for line in table if line.startswith("| method |"))
    assert "| **ours FPR95** | leave-one-out mean | val FPR95 |" in header
    assert table[table.index(header) + 1].count("|") == header.count("|")
    body = {line.split(" | ")[0]: line for line in table if line.startswith("| ") and line.count("|") == header.count("|")}
    assert "| **30.00** | 20.00 |" in body["| SIFT"] and "| **5.00** | 10.00 (2 folds) |" in body["| L2-Net"]
    assert "| **40.00** |  |" in body["| TFeat"]  # no leave-one-out row
    assert "leave-one-out mean" not in markdown(rows, {**info, "loo_means": {}})

def test_matching_by_sequence_table_marks_the_validation_sequence_and_leaves_it_out_of_the_mean():
    from benchmarks.suites.descriptors_tables import matching_by_sequence_table

    rows = [{"method": "rootsift", "hpatches_matching_by_sequence": {"v_graf": 0.5, "v_churchill": 0.6, "v_synth_a": 0.8}},
            {"method": "l2net", "hpatches_matching_by_sequence": None}, {"method": "sift"}]
    lines = matching_by_sequence_table(rows, "graf")
    assert lines[3] == "| method | v_churchill | v_graf (validation) | v_synth_a | mean without v_graf |"
    assert lines[-1] == "| RootSIFT | 60.00 | 50.00 | 80.00 | 70.00 |" and len(lines) == 6  # rows without the record are left out
    assert matching_by_sequence_table(rows[1:], "graf") == []
    assert matching_by_sequence_table(rows[:1], "liberty")[3].endswith("| v_synth_a |")  # no validation sequence among them

def test_val_vs_test_plot_with_a_perfect_row_and_without_val_numbers(tmp_path):
    from benchmarks.suites.descriptors_tables import _plot_val_vs_test

    rows = [{"method": "sift", "val_fpr95": 0.1, "fpr95": 0.2}, {"method": "a", "val_fpr95": 0.0, "fpr95": 0.05, "fpr95_seeds": [0.0, 0.1], "val_fpr95_seeds": [0.0, 0.0]}]
    _plot_val_vs_test(rows, tmp_path / "plot.png", "graf", "test")  # linear axes: log ones cannot show 0
    assert (tmp_path / "plot.png").stat().st_size > 0
    _plot_val_vs_test([{"method": "a", "val_fpr95": None, "fpr95": 0.1}], tmp_path / "none.png", "graf", "test")
    assert not (tmp_path / "none.png").exists()


def test_selection_agreement_by_hand():
    def row(method, val, test):
        return {"method": method, "val_fpr95": val, "fpr95": test}

    # val order a < b < c < d, test order b < a < d < c: d = (1, 1, 1, 1), rho = 1 - 6 * 4 / (4 * 15) = 0.6
    rows = [row("sift", 0.30, 0.20), row("a", 0.10, 0.25), row("b", 0.20, 0.15), row("c", 0.25, 0.40), row("d", 0.35, 0.30),
            row("l2net_binary", None, 0.5)]
    agreement = selection_agreement(rows)
    assert agreement["rows"] == 4 and abs(agreement["spearman"] - 0.6) < 1e-12
    # below SIFT's 0.30 on val: a, b, c; of those below its 0.20 on the test: b
    assert agreement["sift_val"] == 0.30 and agreement["below_sift_val"] == 3 and agreement["below_sift_both"] == 1
    reversed_order = selection_agreement([row("a", 0.1, 0.3), row("b", 0.2, 0.2), row("c", 0.3, 0.1)])
    assert abs(reversed_order["spearman"] + 1.0) < 1e-12 and "below_sift_val" not in reversed_order
    assert selection_agreement(rows[:3]) is None  # two learned rows: no correlation worth a line
    # the look-alike selection set the same way, by its own key
    moved = [{**r, "val_lookalike_fpr95": r["val_fpr95"], "val_fpr95": None} for r in rows]
    assert selection_agreement(moved, "val_lookalike_fpr95") == agreement and selection_agreement(moved) is None
    info = {"quick": False, "train": "tr", "test": "t", "val": "graf", "test_pairs": 10, "hpatches_sequences": [], "device": "cpu"}
    assert ("`graf` val FPR95 and `t` FPR95 over the 4 learned rows with that number: 0.60; below SIFT on it (30.00%): 3 of them, of which 1 also on `t`"
            in markdown(rows, info))


def test_table_lists_paper_numbers_beside_ours():
    rows = [
        {"method": "sift", "fpr95": 0.2, "train": None, "test": "t", "patches_per_s": 900.0},  # no inference copy: never marked
        {"method": "l2net", "fpr95": 0.1, "val_fpr95": 0.05, "hpatches_verification": 0.8, "hpatches_matching": 0.4, "hpatches_retrieval": 0.6,
         "patches_per_s": 500.0, "seconds_per_epoch": 12.0, "train_items_per_epoch": 1024},
    ]
    info = {"quick": False, "train": "tr", "test": "t", "test_pairs": 10, "hpatches_sequences": ["v_a"], "device": "cpu"}
    table = markdown(rows, info)
    assert "| SIFT | 128 | 29.84 |  | 22.53 |  | 27.29 |  | 26.55 | **20.00** |  |  |  |  /  /  | 900 |  |  |" in table
    # a speed measured before the inference copy existed is marked
    assert "| L2-Net | 128 | 3.64 | 5.29 | 1.15 | 1.62 | 4.43 | 3.3 | 3.23 | **10.00** | 5.00 |  |  | 80.00 / 40.00 / 60.00 | 500 † |  | 12 (1024) |" in table
    assert "On pairs of the training set" not in table  # no row has the fit column
    assert "† patches/s measured by an earlier version" in table
    rows[1]["inference"] = {"fold_batchnorm": True, "channels_last": True}
    table = markdown(rows, info)
    assert "| 500 |  | 12 (1024) |" in table and "†" not in table
    assert "below SIFT's FPR95 (20.00%): 1 of 1 (l2net)" in table
    # the fit to the training distribution, and how many rows that fit it also beat SIFT on the test
    fitted = [{**rows[0], "train_fpr95": 0.3, "train_pairs": 4000}, {**rows[1], "train_fpr95": 0.05},
              {"method": "hardnet", "fpr95": 0.25, "train_fpr95": 0.04}, {"method": "tfeat", "fpr95": 0.15, "train_fpr95": 0.35}]
    table = markdown(fitted, info)
    assert "| **10.00** | 5.00 |  | 5.00 |" in table
    assert ("On pairs of the training set `tr` (`train-pairs FPR95`: 4000 pairs, half matching, negatives within one photo; "
            "`descriptors.data.samplers.training_pairs`), 2 of the 3 learned rows with that number are below SIFT's 30.00%, 1 of them also on `t` "
            "(plot: descriptors_fit_vs_test.png)") in table
    # our dimension is shown where it is not the paper's (MatchNet with a bottleneck)
    bottleneck = markdown([{"method": "matchnet", "fpr95": 0.3, "dim": 256}, {"method": "hardnet", "fpr95": 0.1, "dim": 128}], info)
    assert "| MatchNet | 256 (paper 4096) | 6.9 |" in bottleneck and "| HardNet | 128 | 1.47 |" in bottleneck
    assert {"matchnet", "tfeat", "deepdesc", "cs_l2net_plus", "hardnet_plus"} <= set(PAPER)


def test_table_names_the_selection_set_and_prints_the_notes():
    rows = [{"method": "sift", "fpr95": 0.2, "train": None, "test": "t"}]
    info = {"quick": False, "train": "tr", "test": "t", "test_pairs": 10, "hpatches_sequences": ["v_a"], "device": "cpu"}
    assert "pairs of the training set" in markdown(rows, {**info, "val": "tr"})
    held_out = markdown(rows, {**info, "val": "graf", "notes": ["Selection: chosen on graf."]})
    assert "measured on the `graf` pairs, a real sequence held out of training and of the test" in held_out
    assert "pairs of the training set" not in held_out and "\nSelection: chosen on graf.\n" in held_out


def test_budget_scale_counts_whole_batches():
    from omegaconf import OmegaConf

    data = OmegaConf.create({"n_train": 16896, "batch_size": 128})
    assert scaled_items(data, 4.0) == 4 * 16896 and scaled_items(data, 1.0) == 16896
    assert scaled_items(OmegaConf.create({"n_train": 100, "batch_size": 64}), 1.5) == 128  # 2.3 batches -> 2
    assert scaled_items(OmegaConf.create({"n_train": 10, "batch_size": 64}), 0.1) == 64  # at least one batch


def test_kornia_reference_of_a_net_with_a_contrast_floor():
    from benchmarks.suites.descriptors_speed import kornia_peer, with_kornia_input_eps
    from descriptors.nets import HardNet

    torch.manual_seed(0)
    net = HardNet(input_eps=0.05)
    with torch.no_grad():  # running statistics that are not 0 / 1 (else the net is scale-free)
        net.train()(torch.rand(64, 1, 32, 32))
    net.eval()
    peer = kornia_peer("HardNet", net)
    faint = 0.5 + 0.02 * torch.randn(8, 1, 32, 32)  # std 0.02, below the floor
    with torch.no_grad():
        assert (peer(faint) - net(faint)).abs().max() > 1e-2  # the floor changes the descriptors
        torch.testing.assert_close(peer(faint), with_kornia_input_eps(net)(faint), rtol=1e-5, atol=1e-5)
    assert net.input_eps == 0.05  # a copy was changed, not the net


def test_pairs_fpr95_by_hand():
    from benchmarks.suites.descriptors import pairs_fpr95

    # 1-pixel patches: distance = |difference|; positives at 1 and 3, negatives at 2 and 4 (and 5,
    # patch 0 reused): 95 % recall needs the threshold at 3, where 1 of the 3 negatives is closer
    patches = np.array([0, 1, 0, 3, 10, 12, 0, 4, 5], dtype=np.uint8).reshape(-1, 1, 1)
    pairs = np.array([[0, 1, 1], [2, 3, 1], [4, 5, 0], [6, 7, 0], [0, 8, 0]])
    seen = []

    def describe(batch):
        seen.append(len(batch))
        return batch.reshape(len(batch), -1).astype(np.float32)

    assert pairs_fpr95(describe, patches, pairs) == round(1 / 3, 6)
    assert seen == [9]  # every patch a pair uses, once
    # binary codes: Hamming distance (dimension - dot) / 2
    codes = np.array([[1, 1], [1, -1], [-1, -1], [1, 1]], dtype=np.float32)
    binary_pairs = np.array([[0, 1, 1], [0, 2, 0], [0, 3, 0]])  # Hamming 1, 2, 0
    assert pairs_fpr95(lambda b: codes[b[:, 0, 0]], np.arange(4, dtype=np.uint8).reshape(-1, 1, 1), binary_pairs, binary=True) == 0.5


def test_software_versions_name_the_installed_packages():
    import lightning
    import numpy

    from benchmarks.suite import software_versions

    found = software_versions(("torch", "lightning", "numpy", "no-such-package-xyz"))
    assert found["torch"] == torch.__version__ and found["lightning"] == lightning.__version__ and found["numpy"] == numpy.__version__
    assert "no-such-package-xyz" not in found and found["python"].count(".") == 2
    assert found["torch_cpu"] == torch.backends.cpu.get_cpu_capability()


def test_installation_groups_name_the_rows_of_each_install():
    new = {"software": {"torch": "2.14.1"}, "data_md5": {"train": "aa"}}
    old = {"software": {"torch": "2.9.0"}, "data_md5": {"train": "aa"}}
    rows = [{"method": "sift", "fpr95": 0.2, **new}, {"method": "l2net", "fpr95": 0.1, **new}]
    assert installation_groups(rows) == ""  # one installation: nothing to say
    info = {"quick": False, "train": "tr", "test": "t", "test_pairs": 10, "hpatches_sequences": [], "device": "cpu"}
    assert "Installations behind" not in markdown(rows, info)
    rows += [{"method": "tfeat", "fpr95": 0.1, **old}, {"method": "hardnet", "fpr95": 0.1}]
    line = installation_groups(rows)
    assert line == ("Installations behind the rows: 4 rows, 2 under torch 2.14.1; data train aa (sift, l2net); "
                    "1 under torch 2.9.0; data train aa (tfeat); 1 without a record (an earlier, unrecorded installation: hardnet).")
    assert "\n" + line + "\n" in markdown(rows, info)
    # the same software on other data is another installation of the table
    other_data = [{"method": "a", "fpr95": 0.1, **new}, {"method": "b", "fpr95": 0.1, **new, "data_md5": {"train": "bb"}}]
    assert installation_groups(other_data).startswith("Installations behind the rows: 2 rows, 1 under torch 2.14.1; data train aa (a); 1 under")


def test_training_pairs_are_half_matching_with_negatives_within_one_photo(tmp_path):
    # two photos (images 0-1 and 2-3, linked by their points), three points each, two views per point
    point_ids = np.array([0, 0, 1, 1, 2, 2, 10, 10, 11, 11, 12, 12])
    images = np.array([0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3])
    interest = np.column_stack([images, np.zeros((12, 4))]).astype(float)
    subset = BrownSubset("fixture", np.zeros((12, 64, 64), np.uint8), point_ids, interest, tmp_path)
    pairs = training_pairs(subset, 200)
    assert pairs.shape == (200, 3) and pairs[:, 2].sum() == 100
    same_point = point_ids[pairs[:, 0]] == point_ids[pairs[:, 1]]
    assert np.array_equal(pairs[:, 2] == 1, same_point) and np.all(pairs[:, 0] != pairs[:, 1])
    photo = point_ids // 10
    assert np.all(photo[pairs[:, 0]] == photo[pairs[:, 1]])  # a negative never spans two photos
    assert np.array_equal(training_pairs(subset, 200), pairs)  # seeded
