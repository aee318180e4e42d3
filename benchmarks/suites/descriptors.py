"""The patch-descriptor benchmark: the seed's FPR95 table, measured on real patches.

Every method is trained through the users' entry point (``benchmarks.train`` with
``experiment=descriptors/<method>``) on the real-data Brown-layout training set
(``data=brown_real``: photos under random homographies) for a fixed budget, validated on the
held-out real graf sequence (the selection set: the budgets and data settings are chosen on it),
then tested on the held-out real sequence (v_churchill) next to SIFT and RootSIFT: FPR95 (HardNet's
definition) on the same test pairs, the HPatches-layout three-task mAP of the descriptor
networks, extraction throughput (patches per second; HardNet and TFeat next to kornia's
implementation with the same weights and batch), seconds per training epoch, ROC curves.
Binary L2-Net rows are the sign of the trained (CS) L2-Net, as in the paper.

With ``seeds`` every method trains once per seed and its row reports the mean FPR95 with the
per-seed values and their standard deviation (:func:`combine_seeds`).

Writes ``descriptors.json`` (rows), ``descriptors.md``, ``descriptors_roc.png`` and
``descriptors_val_vs_test.png`` (selection set against test, :func:`~benchmarks.suites.descriptors_tables.selection_agreement`) under
the run's output dir; copies them to ``publish_dir`` when set (re-running some methods keeps
the published rows of the others; the ROC plot of a partial run is published beside the others
as ``descriptors_roc_<methods>.png``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning.pytorch as pl
import numpy as np
import torch
from hydra import compose

from benchmarks.suite import merge_published, prepare_suite, software_versions
from benchmarks.suites.descriptors_speed import (
    KORNIA_PEERS,
    _throughput,
    kornia_peer,
    with_kornia_input_eps,
)
from benchmarks.suites.descriptors_tables import (
    BINARY_OF,
    _plot_fit_vs_test,
    _plot_roc,
    _plot_val_vs_test,
    combine_seeds,
    loo_means,
    markdown,
    table_order,
)
from benchmarks.train import train
from core.errors import DatasetNotFoundError
from core.timing import device_name
from descriptors.api import PatchDescriptor, PatchMatcher, as_patch_tensor
from descriptors.data.brown import subset_digest
from descriptors.data.hpatches import load_hpatches, task_lists
from descriptors.data.real.portable import build_real_hpatches
from descriptors.data.samplers import lookalike_match_pairs, training_pairs
from descriptors.evaluate import (
    describe_sequences,
    evaluate_hpatches,
    fpr_at_recall,
    indexed_pair_distances,
    matching_map_by_sequence,
    roc_points,
    used_patches,
)
from descriptors.evaluate import pairs_fpr95 as raw_pairs_fpr95
from descriptors.nets import TFeat
from descriptors.nets.published import PUBLISHED, load_published
from descriptors.sift import sift_describe

log = logging.getLogger(__name__)

#: kornia's implementation of the same network (loaded with our weights) for the speed ratio
#: rows of published weights (evaluated, never trained): suite method -> published name
#: (:func:`descriptors.nets.published.load_published`) and the set it was trained on
PUBLISHED_ROWS = {
    "mkd": ("mkd-concat-pcawt-liberty", "liberty"),
    "tfeat_liberty": ("tfeat-liberty", "liberty"),
    "tfeat_notredame": ("tfeat-notredame", "notredame"),
    "tfeat_yosemite": ("tfeat-yosemite", "yosemite"),
    "hardtfeat": ("hardtfeat", "not documented"),
}


class EpochTimer(pl.Callback):
    """Wall seconds of every training epoch (validation excluded), appended to a JSON file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"seconds": self.seconds, "batches": trainer.num_training_batches}))


def _compose(method: str, overrides: list[str]):
    return compose(config_name="train", overrides=[f"experiment=descriptors/{method}", *overrides])


def train_method(method: str, output_dir: Path, overrides: list[str]) -> tuple[Path, dict]:
    """Train through ``benchmarks.train``; returns the best checkpoint and the epoch timings."""
    timer_file = output_dir / "epoch_seconds.json"
    cfg = _compose(method, [
        f"paths.output_dir={output_dir}", "test=false",
        "+callbacks.epoch_timer._target_=benchmarks.suites.descriptors.EpochTimer", f"+callbacks.epoch_timer.path={timer_file}",
        *overrides,
    ])
    train(cfg)
    best = sorted((output_dir / "checkpoints").glob("epoch_*.ckpt"))
    checkpoint = best[-1] if best else output_dir / "checkpoints" / "last.ckpt"
    return checkpoint, json.loads(timer_file.read_text())


def load_eval_splits(method: str, overrides: list[str], n_pairs: int | None, lookalike_k: int | None = None,
                     train_pairs: int | None = None) -> tuple:
    """The configured test split's patches (uint8 (N, 64, 64)) and ``[i, j, label]`` pairs, the
    names of the training, test and validation subsets, the validation split's patches and
    pairs (the ones the trained networks' val FPR95 is measured on) and, with ``lookalike_k``,
    those pairs with look-alike negatives (:func:`descriptors.data.samplers.lookalike_match_pairs`,
    seed 0; else None), the first 12 hex digits of the train / val / test subsets' digests
    (:func:`descriptors.data.brown.subset_digest`) and, with ``train_pairs``, the training subset's
    patches and that many ``[i, j, label]`` pairs drawn from it (:func:`descriptors.data.samplers.training_pairs`; else
    None, None)."""
    cfg = _compose(method, overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    datamodule.setup("validate")
    matches = datamodule.splits["test"].matches[:n_pairs]
    subset, val = datamodule.subsets[datamodule.test_subset], datamodule.subsets[datamodule.val_subset]
    val_matches = np.asarray(datamodule.splits["val"].matches)
    lookalike = None if lookalike_k is None else lookalike_match_pairs(val, val_matches, int(lookalike_k), seed=0)
    names = {"train": datamodule.train_subset, "val": datamodule.val_subset, "test": datamodule.test_subset}
    digests = {split: subset_digest(datamodule.subset(name))[:12] for split, name in names.items()}
    train = datamodule.subset(datamodule.train_subset) if train_pairs else None
    return (np.asarray(subset.patches), matches, datamodule.train_subset, datamodule.test_subset, datamodule.val_subset,
            np.asarray(val.patches), val_matches, lookalike, digests,
            None if train is None else np.asarray(train.patches), None if train is None else training_pairs(train, train_pairs))


def pairs_fpr95(describe, patches: np.ndarray, pairs: np.ndarray, binary: bool = False) -> float:
    """:func:`descriptors.evaluate.pairs_fpr95`, rounded as the table's FPR95 values are."""
    return round(raw_pairs_fpr95(describe, patches, pairs, binary), 6)


def _fpr95(distances: np.ndarray, labels: np.ndarray) -> float:
    return round(float(fpr_at_recall(distances, labels)), 6)


def _hpatches_set(hpatches_root, data_dir, cache: Path, settings: dict, split: str, list_sizes: dict):
    release = Path(hpatches_root) if hpatches_root else build_real_hpatches(data_dir, cache, **settings)
    patch_sets = load_hpatches(release, split)
    lists = task_lists(patch_sets, split, None, cache, **list_sizes)
    return patch_sets, lists


def _hpatches_scores(patch_sets, lists, describe, split: str, cache: Path, device) -> dict:
    descriptors = describe_sequences(patch_sets, describe)
    summary, results = evaluate_hpatches(descriptors, sequences=patch_sets, split=split, cache_dir=cache, device=device, lists=lists)
    scores = {f"hpatches_{task}": round(summary[f"{task}_map"], 6) for task in ("verification", "matching", "retrieval")}
    return {**scores, "hpatches_matching_by_sequence": {seq: round(v, 6) for seq, v in matching_map_by_sequence(results).items()}}


def scaled_items(data_cfg, scale: float) -> int:
    """``scale`` times a method's training items per epoch, in whole batches (at least one)."""
    batch_size = int(data_cfg.batch_size)
    return max(1, round(int(data_cfg.n_train) * scale / batch_size)) * batch_size


def given_checkpoints(method: str, entry, seeds: list[int] | None) -> dict:
    """``benchmark.checkpoints.<method>`` as ``{seed: path}``: a path (evaluated instead of
    training, one run: ``{None: path}``) or a mapping seed -> path (those seeds are evaluated from
    their checkpoints, the suite's other seeds are trained; without ``seeds``, the mapping's seeds
    are the runs). A missing file is refused here, before any training."""
    if entry is None or entry == {}:
        return {}
    given = {None: str(entry)} if isinstance(entry, (str, Path)) else {int(seed): str(path) for seed, path in entry.items()}
    extra = [seed for seed in given if seed is not None and seeds and seed not in seeds]
    if extra:
        raise ValueError(f"benchmark.checkpoints.{method} has checkpoints for seeds {extra}, which are not in benchmark.seeds={list(seeds)}")
    for path in given.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"benchmark.checkpoints.{method}: no checkpoint at {path} (a .ckpt written by make train / the suite)")
    return given


@dataclass
class EvalSets:
    """What every row is measured on (:func:`load_eval_splits`): the held-out test pairs, the
    validation (selection) pairs, optionally with look-alike negatives, and training pairs."""

    patches: np.ndarray
    matches: np.ndarray
    train_name: str
    test_name: str
    val_name: str
    val_patches: np.ndarray
    val_matches: np.ndarray
    lookalike_matches: np.ndarray | None
    data_digests: dict
    train_patches: np.ndarray | None
    train_matches: np.ndarray | None

    @property
    def labels(self) -> np.ndarray:
        return self.matches[:, 2]


@dataclass
class HPatchesScorer:
    """The HPatches-layout set every describing row is scored on."""

    patch_sets: dict
    lists: tuple
    split: str
    cache: Path
    device: torch.device

    def scores(self, describe) -> dict:
        return _hpatches_scores(self.patch_sets, self.lists, describe, self.split, self.cache, self.device)


class NoHPatches:
    """The scorer of a run without the HPatches columns (``score_hpatches=False``)."""

    def scores(self, describe) -> dict:
        return {}


@dataclass
class Timing:
    """Extraction-speed settings: a fixed random input, batch size and repeats."""

    patches: torch.Tensor
    batch_size: int
    repeats: int

    def rates(self, fns, patches: torch.Tensor) -> list[float]:
        return _throughput(fns, patches, self.batch_size, self.repeats)


class ResultTable:
    """The rows of one run and the ROC curve of each method's test pairs."""

    def __init__(self, sets: EvalSets, device_label: str, versions: dict) -> None:
        self.sets, self.device_label, self.versions = sets, device_label, versions
        self.rows: list[dict] = []
        self.curves: dict[str, tuple] = {}

    def add_row(self, method: str, distances: np.ndarray, **extra) -> dict:
        labels = self.sets.labels
        fpr, tpr = roc_points(distances, labels)
        fpr95 = fpr_at_recall(distances, labels)
        self.curves.setdefault(method, (fpr, tpr, fpr95))  # with several seeds: the first seed's curve
        row = {
            "method": method, "train": extra.pop("train", self.sets.train_name), "test": self.sets.test_name,
            "fpr95": round(float(fpr95), 6),
            "hpatches_verification": None, "hpatches_matching": None, "hpatches_retrieval": None,
            "patches_per_s": None, "device": self.device_label, "test_pairs": int(len(labels)), **extra,
            "software": self.versions, "data_md5": self.sets.data_digests,
        }
        self.rows.append(row)
        log.info("%s: %s", method, row)
        return row


def add_baseline_row(table: ResultTable, name: str, hpatches: HPatchesScorer) -> None:
    """SIFT or RootSIFT on the test pairs, on the selection sets (the reference the trained
    networks' val FPR95 was chosen against) and on HPatches."""
    sets = table.sets
    root = name == "rootsift"
    start = time.perf_counter()
    descriptors = torch.from_numpy(sift_describe(sets.patches, root=root))
    seconds = time.perf_counter() - start
    describe = lambda p, r=root: sift_describe(p, root=r)  # noqa: E731
    selection = {"val_fpr95": pairs_fpr95(describe, sets.val_patches, sets.val_matches), "val_pairs": int(len(sets.val_matches))}
    if sets.lookalike_matches is not None:
        selection["val_lookalike_fpr95"] = pairs_fpr95(describe, sets.val_patches, sets.lookalike_matches)
    if sets.train_matches is not None:
        selection["train_fpr95"] = pairs_fpr95(describe, sets.train_patches, sets.train_matches)
        selection["train_pairs"] = int(len(sets.train_matches))
    row = table.add_row(name, indexed_pair_distances(descriptors, sets.matches, False), train=None, **selection)
    row.update(hpatches.scores(describe))
    row["patches_per_s"] = round(len(sets.patches) / seconds, 1)
    row["device"] = "CPU (OpenCV SIFT, one patch at a time)"


def published_row_name(method: str) -> tuple[str, str | None]:
    """A published row's weights (:data:`PUBLISHED_ROWS`, else the published name with ``_`` for
    ``-``) and its training set; HPatches-trained weights are refused (HPatches holds graf and
    v_churchill)."""
    name, trained_on = PUBLISHED_ROWS.get(method, (method.replace("_", "-"), None))
    if name not in PUBLISHED:
        raise ValueError(f"benchmark.published: unknown {method!r}; choose from {sorted(PUBLISHED_ROWS)} or a published name")
    if PUBLISHED[name].hpatches_trained:
        raise ValueError(f"benchmark.published: {method} ({name}) was trained on HPatches, which holds the validation and test sequences")
    return name, trained_on


def add_published_row(table: ResultTable, method: str, weights_dir: str | None, hpatches: HPatchesScorer, timing: Timing,
                      torch_device) -> str | None:
    """A published network's row (:data:`PUBLISHED_ROWS`, or any published name with ``-`` written
    ``_``): evaluated like SIFT (test, selection sets, training pairs, HPatches, patches/s),
    never trained. Returns a note instead when its file is absent."""
    name, trained_on = published_row_name(method)
    try:
        net = load_published(name, weights_dir)
    except DatasetNotFoundError as error:
        log.warning("published row %s skipped: %s", method, error)
        return f"Published row {method} skipped: {error}"
    model = PatchDescriptor(net, torch_device, batch_size=timing.batch_size)
    sets = table.sets
    described = torch.zeros(len(sets.patches), model.descriptor_dim)
    used = np.unique(sets.matches[:, :2])
    described[used] = model.describe(sets.patches[used])
    selection = {"val_fpr95": pairs_fpr95(model.describe, sets.val_patches, sets.val_matches), "val_pairs": int(len(sets.val_matches))}
    if sets.lookalike_matches is not None:
        selection["val_lookalike_fpr95"] = pairs_fpr95(model.describe, sets.val_patches, sets.lookalike_matches)
    if sets.train_matches is not None:
        selection["train_fpr95"] = pairs_fpr95(model.describe, sets.train_patches, sets.train_matches)
        selection["train_pairs"] = int(len(sets.train_matches))
    row = table.add_row(method, indexed_pair_distances(described, sets.matches, False), train=trained_on, dim=model.descriptor_dim,
                        published={k: v for k, v in net.published.items() if k != "path"}, **selection)
    row.update(hpatches.scores(lambda p, m=model: m.describe(p).numpy()))
    sized = as_patch_tensor(timing.patches, model.patch_size)
    if isinstance(net, TFeat):  # the published TFeat through kornia's TFeat as well
        peer = kornia_peer("TFeat", net)
        with torch.inference_mode():
            row["max_abs_difference_vs_kornia"] = float((peer(sized[:64].to(torch_device)).cpu() - model.describe(sized[:64])).abs().max())
        ours, theirs = timing.rates([model.describe, lambda x, p=peer: p(x.to(torch_device)).cpu()], sized)
        row["patches_per_s"], row["kornia_patches_per_s"] = round(ours, 1), round(theirs, 1)
        row["speed_ratio_vs_kornia"] = round(ours / theirs, 3)
    else:
        row["patches_per_s"] = round(timing.rates([model.describe], sized)[0], 1)
    row["timing_batch_size"] = timing.batch_size
    row["inference"] = {"fold_batchnorm": True, "channels_last": model.channels_last}
    return None


def method_overrides(method: str, common: list[str], budget: dict | None, quick: bool, quick_overrides: list[str] | None,
                     budget_scale: float) -> list[str]:
    """A method's training overrides: the common ones, its budget, QUICK's or the budget scale."""
    overrides = [*common, *((budget or {}).get(method, []))]
    if quick:
        overrides += list(quick_overrides or [])
    elif budget_scale != 1.0:
        overrides.append(f"data.n_train={scaled_items(_compose(method, overrides).data, budget_scale)}")
    return overrides


def trained_checkpoint(method: str, run_seed: int | None, given: dict, overrides: list[str], output: Path) -> tuple:
    """The checkpoint of one seed (given, or trained now) with its run folder, epoch timings and
    training seconds (None for a given checkpoint), and the seed's overrides."""
    overrides, train_dir = list(overrides), output / "train" / method
    if run_seed is not None:
        overrides.append(f"seed={run_seed}")
        train_dir = train_dir / f"seed_{run_seed}"
    start = time.perf_counter()
    if run_seed in given:
        checkpoint = Path(given[run_seed])
        # the run that wrote it (<run>/checkpoints/<name>.ckpt), if it is beside it
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
        timer_file = run_dir / "epoch_seconds.json" if run_dir else None
        epoch = json.loads(timer_file.read_text()) if timer_file and timer_file.is_file() else {"seconds": []}
        return checkpoint, run_dir, epoch, None, overrides
    checkpoint, epoch = train_method(method, train_dir, overrides)
    return checkpoint, train_dir, epoch, round(time.perf_counter() - start, 1), overrides


def training_record(cfg, checkpoint: Path, run_dir: Path | None, epoch: dict, train_seconds: float | None) -> dict:
    """A trained row's training entries: its val FPR95 (from the run's metrics), epoch times and budget."""
    metrics_file = run_dir / "metrics.json" if run_dir else None
    val = json.loads(metrics_file.read_text()).get("val/fpr95") if metrics_file and metrics_file.is_file() else None
    return {
        "val_fpr95": None if val is None else round(val, 6),
        "seconds_per_epoch": round(statistics.mean(epoch["seconds"]), 2) if epoch["seconds"] else None,
        "epochs": len(epoch["seconds"]), "train_items_per_epoch": cfg.data.n_train, "train_batch_size": int(cfg.data.batch_size),
        "train_seconds_total": train_seconds, "checkpoint": str(checkpoint),
    }


def add_descriptor_rows(table: ResultTable, method: str, model: PatchDescriptor, training: dict, hpatches: HPatchesScorer,
                        timing: Timing, torch_device, binary_rows: bool) -> None:
    """A descriptor network's row (and the row of its sign when it has a binary variant)."""
    sets = table.sets
    described = torch.zeros(len(sets.patches), model.descriptor_dim)
    used = np.unique(sets.matches[:, :2])
    described[used] = model.describe(sets.patches[used])
    lookalike = {} if sets.lookalike_matches is None else {"val_lookalike_fpr95": pairs_fpr95(model.describe, sets.val_patches, sets.lookalike_matches, model.binary)}
    if sets.train_matches is not None:  # described once, for the float row and its binary one
        train_pool, train_index = used_patches(sets.train_patches, sets.train_matches)
        train_described = model.describe(train_pool)
        lookalike["train_fpr95"] = _fpr95(indexed_pair_distances(train_described, train_index, model.binary), sets.train_matches[:, 2])
    row = table.add_row(method, indexed_pair_distances(described, sets.matches, model.binary), dim=model.descriptor_dim, **training, **lookalike)
    row.update(hpatches.scores(lambda p, m=model: m.describe(p).numpy()))
    sized = as_patch_tensor(timing.patches, model.patch_size)
    if method in KORNIA_PEERS:
        peer = kornia_peer(KORNIA_PEERS[method], model.net)
        # ours at kornia's eps is kornia's network whatever our contrast floor
        same = PatchDescriptor(with_kornia_input_eps(model.net), torch_device)
        if hasattr(model.net, "input_eps"):
            row["input_eps"] = model.net.input_eps
        with torch.inference_mode():
            row["max_abs_difference_vs_kornia"] = float((peer(sized[:64].to(torch_device)).cpu() - same.describe(sized[:64])).abs().max())
        # the same input batches for both (kornia's on the device: ours moves them itself)
        ours, theirs = timing.rates([model.describe, lambda x, p=peer: p(x.to(torch_device)).cpu()], sized)
        row["patches_per_s"], row["kornia_patches_per_s"] = round(ours, 1), round(theirs, 1)
        row["speed_ratio_vs_kornia"] = round(ours / theirs, 3)
    else:
        row["patches_per_s"] = round(timing.rates([model.describe], sized)[0], 1)
    if binary_rows and method in BINARY_OF and not model.binary:
        codes = torch.where(described >= 0, 1.0, -1.0)
        fit = {} if sets.train_matches is None else {"train_fpr95": _fpr95(indexed_pair_distances(torch.where(train_described >= 0, 1.0, -1.0), train_index, True), sets.train_matches[:, 2])}
        binary = table.add_row(BINARY_OF[method], indexed_pair_distances(codes, sets.matches, True), derived_from=method, dim=model.descriptor_dim,
                               **{**training, "val_fpr95": None}, **fit)
        binary.update(hpatches.scores(lambda p, m=model: np.where(m.describe(p).numpy() >= 0, 1.0, -1.0)))


def add_matcher_row(table: ResultTable, method: str, model: PatchMatcher, training: dict, timing: Timing) -> dict:
    """A metric network's row (it scores pairs: no HPatches descriptors)."""
    sets = table.sets
    lookalike = {}
    for key, (pool, pairs) in {"val_lookalike_fpr95": (sets.val_patches, sets.lookalike_matches), "train_fpr95": (sets.train_patches, sets.train_matches)}.items():
        if pairs is not None:
            lookalike[key] = _fpr95(-model.score_index_pairs(*used_patches(pool, pairs)).numpy(), pairs[:, 2])
    row = table.add_row(method, -model.score_index_pairs(sets.patches, sets.matches[:, :2]).numpy(), dim=getattr(model.net, "feature_dim", None), **training, **lookalike)
    sized = as_patch_tensor(timing.patches[: len(timing.patches) // 2], model.patch_size)
    # patches through the network while scoring pairs (two per pair)
    pair_rate = timing.rates([lambda x, m=model: m.score(x, x.flip(0))], sized)[0]
    row["patches_per_s"] = round(2 * pair_rate, 1)
    return row


def run_suite(
    output_dir: str,
    methods: list[str],
    data_dir: str | None = None,
    cache_dir: str | None = None,
    quick: bool = False,
    baselines: tuple[str, ...] = ("sift", "rootsift"),
    data_overrides: list[str] | None = None,
    base_overrides: list[str] | None = None,
    budget: dict | None = None,
    quick_overrides: list[str] | None = None,
    checkpoints: dict | None = None,
    n_test_pairs: int | None = None,
    quick_test_pairs: int = 1000,
    binary_rows: bool = True,
    hpatches_root: str | None = None,
    hpatches: dict | None = None,
    quick_hpatches: dict | None = None,
    hpatches_split: str = "full",
    hpatches_lists: dict | None = None,
    timing_batch_size: int = 256,
    timing_patches: int = 2048,
    timing_repeats: int = 3,
    device: str = "auto",
    num_threads: int | None = None,
    publish_dir: str | None = None,
    notes: list[str] | None = None,
    loo_table: str | None = None,
    budget_scale: float = 1.0,
    seeds: list[int] | None = None,
    lookalike_val_k: int | None = 8,
    train_pairs: int | None = 4000,
    published: list[str] | None = None,
    weights_dir: str | None = None,
    score_hpatches: bool = True,
) -> list[dict]:
    load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    for method in published or []:  # refused before anything runs
        published_row_name(method)
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    device_label, versions = device_name(torch_device), software_versions()
    cache = Path(cache_dir) if cache_dir else output / "cache"
    common = [*(base_overrides or []), *(data_overrides or [])]
    test_pairs = quick_test_pairs if quick else n_test_pairs
    # (QUICK's overrides too: SIFT's val pairs are then the trained methods' smaller val set)
    sets = EvalSets(*load_eval_splits(methods[0] if methods else "hardnet", [*common, *(quick_overrides or [])] if quick else common,
                                      test_pairs, lookalike_val_k, train_pairs))
    if score_hpatches:
        patch_sets, lists = _hpatches_set(hpatches_root, data_dir, cache, dict((quick_hpatches if quick else hpatches) or {}), hpatches_split, dict(hpatches_lists or {}))
        scorer = HPatchesScorer(patch_sets, lists, hpatches_split, cache, torch_device)
    else:  # rows keep None in the HPatches columns
        patch_sets, scorer = {}, NoHPatches()
    timing = Timing(torch.rand(timing_patches, 1, 32, 32, generator=torch.Generator().manual_seed(0)), timing_batch_size, timing_repeats)
    table = ResultTable(sets, device_label, versions)

    for name in baselines:
        add_baseline_row(table, name, scorer)
    notes = list(notes or [])
    for method in published or []:
        note = add_published_row(table, method, weights_dir, scorer, timing, torch_device)
        if note:
            notes.append(note)
    for method in methods:
        given = given_checkpoints(method, (checkpoints or {}).get(method), seeds)
        method_seeds = list(given) if None in given or (given and not seeds) else list(seeds or [None])
        overrides = method_overrides(method, common, budget, quick, quick_overrides, budget_scale)
        per_seed: list[list[dict]] = []
        for run_seed in method_seeds:
            first = len(table.rows)
            checkpoint, run_dir, epoch, train_seconds, seed_overrides = trained_checkpoint(method, run_seed, given, overrides, output)
            cfg = _compose(method, seed_overrides)
            training = training_record(cfg, checkpoint, run_dir, epoch, train_seconds)
            if cfg.model._target_.endswith("DescriptorModule"):
                model = PatchDescriptor.from_checkpoint(checkpoint, torch_device, batch_size=timing_batch_size)
                add_descriptor_rows(table, method, model, training, scorer, timing, torch_device, binary_rows)
            else:
                model = PatchMatcher.from_checkpoint(checkpoint, torch_device, batch_size=timing_batch_size)
                add_matcher_row(table, method, model, training, timing)
            # the float or metric row of this seed (its binary row has none of these)
            row = table.rows[first]
            row["timing_batch_size"] = timing_batch_size
            row["inference"] = {"fold_batchnorm": True, "channels_last": model.channels_last}
            del model
            per_seed.append(table.rows[first:])
            del table.rows[first:]
        table.rows.extend(combine_seeds(per_seed, method_seeds))

    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    loo, loo_folds = loo_means(loo_table)
    result = {"quick": quick, "device": device_label, "software": versions, "data_md5": sets.data_digests, "load_start": load_start, "load_end": load,
              "cores": os.cpu_count(), "train": sets.train_name, "test": sets.test_name, "val": sets.val_name, "test_pairs": int(len(sets.labels)),
              "notes": notes, "loo_means": loo, "loo_folds": loo_folds,
              "hpatches_sequences": sorted(patch_sets), "rows": table.rows}
    write_outputs(output, publish_dir, [*(published or []), *methods], table, result)
    return table.rows


def write_outputs(output: Path, publish_dir: str | None, methods: list[str], table: ResultTable, result: dict) -> None:
    """descriptors.json / .md and the plots in the run's folder; with ``publish_dir`` the merged
    published table and plots there too. Prints the table."""
    rows, sets = table.rows, table.sets
    train_name, test_name, val_name = sets.train_name, sets.test_name, sets.val_name
    (output / "descriptors.json").write_text(json.dumps(rows, indent=2))
    (output / "descriptors.md").write_text(markdown(rows, result))
    _plot_roc(table.curves, output / "descriptors_roc.png", f"{train_name} → {test_name} (held out)")
    _plot_val_vs_test(rows, output / "descriptors_val_vs_test.png", val_name, test_name)
    _plot_val_vs_test(rows, output / "descriptors_lookalike_val_vs_test.png", val_name, test_name, "val_lookalike_fpr95")
    _plot_fit_vs_test(rows, output / "descriptors_fit_vs_test.png", train_name, test_name)
    if publish_dir:
        done = {r["method"] for r in rows}
        publish, merged = merge_published(publish_dir, "descriptors", rows, lambda r: r["method"] in done, table_order)
        (publish / "descriptors.md").write_text(markdown(merged, result))
        # a partial re-run keeps the full run's ROC plot and adds its own beside it
        if methods or len(merged) == len(rows):  # a baselines-only re-run keeps the published ROC plots
            roc_name = f"descriptors_roc_{'_'.join(methods)}.png" if len(merged) > len(rows) else "descriptors_roc.png"
            shutil.copy(output / "descriptors_roc.png", publish / roc_name)
        _plot_val_vs_test(merged, publish / "descriptors_val_vs_test.png", val_name, test_name)
        _plot_val_vs_test(merged, publish / "descriptors_lookalike_val_vs_test.png", val_name, test_name, "val_lookalike_fpr95")
        _plot_fit_vs_test(merged, publish / "descriptors_fit_vs_test.png", train_name, test_name)
    print((output / "descriptors.md").read_text())
