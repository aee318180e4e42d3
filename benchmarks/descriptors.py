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
``descriptors_val_vs_test.png`` (selection set against test, :func:`selection_agreement`) under
the run's output dir; copies them to ``publish_dir`` when set (re-running some methods keeps
the published rows of the others; the ROC plot of a partial run is published beside the others
as ``descriptors_roc_<methods>.png``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from benchmarks.suite import merge_published, prepare_suite, software_versions
from core.timing import device_name

log = logging.getLogger(__name__)

#: The seed's FPR95 table (%), columns train -> test; SIFT and DeepDesc give one number per
#: test set (LIB, ND, YOS), placed in the first column of each test set. HardNet(+): the
#: post-NIPS numbers (reference notes, not in the seed).
PAPER_COLUMNS = ("ND→LIB", "YOS→LIB", "LIB→ND", "YOS→ND", "LIB→YOS", "ND→YOS", "mean")
PAPER = {
    "sift": ("SIFT", 128, (29.84, None, 22.53, None, 27.29, None, 26.55)),
    "rootsift": ("RootSIFT", 128, (None,) * 7),
    "matchnet": ("MatchNet", 4096, (6.9, 10.77, 3.87, 5.67, 10.88, 8.39, 7.74)),
    "deepcompare_2ch2stream": ("DeepCompare 2ch-2stream +", 256, (4.85, 7.20, 1.90, 2.11, 5.00, 4.10, 4.19)),
    "deepcompare_2chdeep": ("DeepCompare 2ch-deep +", 256, (4.55, 7.40, 2.01, 2.52, 4.75, 4.38, 4.26)),
    "gloss_snet": ("SNet-GLoss +", 256, (6.39, 8.43, 1.84, 2.83, 6.61, 5.57, 5.27)),
    "gloss_cs_snet": ("CS SNet-GLoss +", 384, (3.69, 4.91, 0.77, 1.14, 3.09, 2.67, 2.71)),
    "tnet_tgloss": ("TNet-TGLoss +", 256, (9.91, 13.45, 3.91, 5.43, 10.65, 9.47, 8.8)),
    "tnet_tloss": ("TNet-TLoss +", 256, (10.77, 13.90, 4.47, 5.58, 11.82, 10.96, 9.58)),
    "tfeat": ("TFeat", 256, (8.13, 9.65, 3.71, 4.23, 8.99, 7.21, 6.98)),
    "deepdesc": ("DeepDesc", 128, (10.9, None, 4.40, None, 5.69, None, 6.99)),
    "l2net": ("L2-Net", 128, (3.64, 5.29, 1.15, 1.62, 4.43, 3.30, 3.23)),
    "l2net_plus": ("L2-Net +", 128, (2.36, 4.7, 0.72, 1.29, 2.57, 1.71, 2.22)),
    "cs_l2net": ("CS L2-Net", 256, (2.55, 4.24, 0.87, 1.39, 3.81, 2.84, 2.61)),
    "cs_l2net_plus": ("CS L2-Net +", 256, (1.71, 3.87, 0.56, 1.09, 2.07, 1.3, 1.76)),
    "l2net_binary": ("Binary L2-Net", 128, (10.3, 11.71, 6.37, 6.76, 13.5, 11.57, 10.03)),
    "l2net_binary_plus": ("Binary L2-Net +", 128, (7.44, 10.29, 3.81, 4.31, 8.81, 7.45, 7.01)),
    "cs_l2net_binary": ("Binary CS L2-Net", 256, (5.25, 7.83, 3.07, 3.52, 8.49, 6.92, 5.84)),
    "cs_l2net_binary_plus": ("Binary CS L2-Net +", 256, (4.01, 6.65, 1.9, 2.51, 5.61, 4.04, 4.12)),
    "hardnet": ("HardNet", 128, (1.47, 2.67, 0.62, 0.88, 2.14, 1.65, 1.57)),
    "hardnet_plus": ("HardNet +", 128, (1.49, 2.51, 0.53, 0.78, 1.96, 1.84, 1.51)),
}
#: binary rows derived from a trained float method: sign() of its descriptors, Hamming distance
BINARY_OF = {"l2net": "l2net_binary", "l2net_plus": "l2net_binary_plus", "cs_l2net": "cs_l2net_binary", "cs_l2net_plus": "cs_l2net_binary_plus"}
FLOAT_OF = {binary: float_ for float_, binary in BINARY_OF.items()}


def table_order(row: dict) -> tuple[int, bool]:
    """A full run's row order: the seed's (:data:`PAPER`), each binary row right after its float
    method, unknown methods last (a partial re-run's published rows keep it)."""
    method = row["method"]
    base = FLOAT_OF.get(method, method)
    return (list(PAPER).index(base) if base in PAPER else len(PAPER), base != method)


#: kornia's implementation of the same network (loaded with our weights) for the speed ratio
KORNIA_PEERS = {"hardnet": "HardNet", "hardnet_plus": "HardNet", "tfeat": "TFeat"}



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
    from hydra import compose

    return compose(config_name="train", overrides=[f"experiment=descriptors/{method}", *overrides])


def train_method(method: str, output_dir: Path, overrides: list[str]) -> tuple[Path, dict]:
    """Train through ``benchmarks.train``; returns the best checkpoint and the epoch timings."""
    from benchmarks.train import train

    timer_file = output_dir / "epoch_seconds.json"
    cfg = _compose(method, [
        f"paths.output_dir={output_dir}", "test=false",
        "+callbacks.epoch_timer._target_=benchmarks.descriptors.EpochTimer", f"+callbacks.epoch_timer.path={timer_file}",
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
    those pairs with look-alike negatives (:func:`descriptors.brown.lookalike_match_pairs`,
    seed 0; else None), the first 12 hex digits of the train / val / test subsets' digests
    (:func:`descriptors.brown.subset_digest`) and, with ``train_pairs``, the training subset's
    patches and that many ``[i, j, label]`` pairs drawn from it (:func:`training_pairs`; else
    None, None)."""
    import hydra

    from descriptors.brown import lookalike_match_pairs, subset_digest

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


def training_pairs(subset, n_pairs: int, seed: int = 0) -> np.ndarray:
    """``[i, j, label]`` rows of ``n_pairs`` pairs of a training subset, half matching, negatives
    within one scene (:func:`descriptors.brown.sample_match_pairs` with its scenes): how well a
    network fits the distribution it was trained on, next to the held-out sets (a gap between
    the two is transfer, not too little training)."""
    from descriptors.brown import sample_match_pairs, scene_ids

    index = sample_match_pairs(subset.point_ids, int(n_pairs), seed=seed, scenes=scene_ids(subset.point_ids, subset.interest))
    labels = (subset.point_ids[index[:, 0]] == subset.point_ids[index[:, 1]]).astype(np.int64)
    return np.column_stack([index, labels])


def pairs_fpr95(describe, patches: np.ndarray, pairs: np.ndarray, binary: bool = False) -> float:
    """FPR95 of ``[i, j, label]`` pairs into ``patches``, each patch a pair uses described once
    by ``describe`` (uint8 patches -> ``(n, D)`` array or tensor)."""
    pool, index = used_patches(patches, pairs)
    described = torch.as_tensor(np.asarray(describe(pool), dtype=np.float32))
    return _fpr95(_distances(described, index, binary), pairs[:, 2])


def used_patches(patches: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The patches ``[i, j, label]`` pairs use, each once, and the pairs as ``(M, 2)`` indices into
    them (a training pool holds hundreds of thousands of patches; the pairs use a few thousand)."""
    used, index = np.unique(pairs[:, :2], return_inverse=True)
    return patches[used], index.reshape(-1, 2)


def _fpr95(distances: np.ndarray, labels: np.ndarray) -> float:
    from descriptors.metrics import fpr_at_recall

    return round(float(fpr_at_recall(distances, labels)), 6)


def _distances(descriptors: torch.Tensor, pairs: np.ndarray, binary: bool) -> np.ndarray:
    a, b = descriptors[pairs[:, 0]].float(), descriptors[pairs[:, 1]].float()
    if binary:
        return ((a.shape[1] - (a * b).sum(1)) / 2).numpy()
    return (a - b).norm(dim=1).numpy()


def _throughput(fns, patches: torch.Tensor, batch_size: int, repeats: int) -> list[float]:
    """Median patches per second of each function over batches of ``patches`` (one warm-up
    pass each); the functions take turns in every repeat, so a change of machine load hits
    them alike."""
    rates: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            fn(patches[:batch_size])
        for _ in range(repeats):
            for fn, fn_rates in zip(fns, rates):
                start = time.perf_counter()
                for i in range(0, len(patches), batch_size):
                    fn(patches[i : i + batch_size])
                fn_rates.append(len(patches) / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def kornia_peer(name: str, net: torch.nn.Module) -> torch.nn.Module:
    """kornia.feature.<name> with ``net``'s weights (pretrained=False: nothing downloaded)."""
    import kornia.feature as KF

    peer = getattr(KF, name)(pretrained=False)
    peer.load_state_dict(net.state_dict())
    return peer.to(next(net.parameters()).device).eval()


#: kornia.feature.HardNet standardises each patch with eps 1e-6
KORNIA_INPUT_EPS = 1e-6


def with_kornia_input_eps(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose per-patch standardisation uses kornia's eps: the reference for
    checking that kornia's network is ours when ours was trained with a contrast floor
    (``input_eps``), which kornia's does not have (the computation is the same either way)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if hasattr(module, "input_eps"):
            module.input_eps = KORNIA_INPUT_EPS
    return net


def _hpatches_set(hpatches_root, data_dir, cache: Path, settings: dict, split: str, list_sizes: dict):
    from descriptors import hpatches as H
    from descriptors.writer import build_real_hpatches

    release = Path(hpatches_root) if hpatches_root else build_real_hpatches(data_dir, cache, **settings)
    patch_sets = H.load_hpatches(release, split)
    lists = H.task_lists(patch_sets, split, None, cache, **list_sizes)
    return patch_sets, lists


def _hpatches_scores(patch_sets, lists, describe, split: str, cache: Path, device) -> dict:
    from descriptors import hpatches as H

    descriptors = H.describe_sequences(patch_sets, describe)
    summary, _ = H.evaluate_hpatches(descriptors, sequences=patch_sets, split=split, cache_dir=cache, device=device, lists=lists)
    return {f"hpatches_{task}": round(summary[f"{task}_map"], 6) for task in ("verification", "matching", "retrieval")}


def scaled_items(data_cfg, scale: float) -> int:
    """``scale`` times a method's training items per epoch, in whole batches (at least one)."""
    batch_size = int(data_cfg.batch_size)
    return max(1, round(int(data_cfg.n_train) * scale / batch_size)) * batch_size


#: the hand-crafted rows (not trained)
BASELINES = ("sift", "rootsift")

#: row entries averaged over seeds (the others are the first seed's)
SEED_MEANS = ("fpr95", "val_fpr95", "val_lookalike_fpr95", "train_fpr95", "hpatches_verification", "hpatches_matching", "hpatches_retrieval",
              "patches_per_s", "kornia_patches_per_s", "speed_ratio_vs_kornia", "seconds_per_epoch", "train_seconds_total")
#: training times: means over the seeds that have them
SEED_TIMES = ("seconds_per_epoch", "train_seconds_total")


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


def combine_seeds(per_seed: list[list[dict]], seeds: list[int | None]) -> list[dict]:
    """One row per method from the rows of several training seeds (one list per seed, the same
    methods in each): the entries of :data:`SEED_MEANS` averaged, the largest difference from
    kornia kept, FPR95's per-seed values, sample standard deviation and the seeds added. A single seed's rows only gain ``seeds`` (when given)."""
    if len(per_seed) == 1:
        return [{**row, "seeds": list(seeds)} if seeds[0] is not None else row for row in per_seed[0]]
    combined = []
    for index, row in enumerate(per_seed[0]):
        runs = [rows[index] for rows in per_seed]
        if any(r["method"] != row["method"] for r in runs):
            raise ValueError(f"the seeds' rows differ: {[r['method'] for r in runs]}")
        merged = dict(row)
        for key in SEED_MEANS:
            values = [r.get(key) for r in runs]
            if all(v is not None for v in values):
                merged[key] = round(statistics.mean(values), 6)
            elif key in SEED_TIMES and any(v is not None for v in values):  # seeds evaluated from given checkpoints have no times
                merged[key] = round(statistics.mean(v for v in values if v is not None), 6)
        if all(r.get("max_abs_difference_vs_kornia") is not None for r in runs):
            merged["max_abs_difference_vs_kornia"] = max(r["max_abs_difference_vs_kornia"] for r in runs)
        merged["seeds"] = list(seeds)
        merged["fpr95_seeds"] = [r["fpr95"] for r in runs]
        for key in ("val_fpr95", "val_lookalike_fpr95", "train_fpr95"):
            if all(r.get(key) is not None for r in runs):
                merged[f"{key}_seeds"] = [r[key] for r in runs]
        merged["fpr95_std"] = round(statistics.stdev(merged["fpr95_seeds"]), 6)
        merged["checkpoints"] = [r.get("checkpoint") for r in runs]
        combined.append(merged)
    return combined


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
    budget_scale: float = 1.0,
    seeds: list[int] | None = None,
    lookalike_val_k: int | None = 8,
    train_pairs: int | None = 4000,
) -> list[dict]:
    from descriptors.api import PatchDescriptor, PatchMatcher, as_patch_tensor
    from descriptors.metrics import fpr_at_recall, roc_points
    from descriptors.sift import sift_describe

    load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    device_label = device_name(torch_device)
    versions = software_versions()
    cache = Path(cache_dir) if cache_dir else output / "cache"
    data = list(data_overrides or [])
    common = [*(base_overrides or []), *data]
    test_pairs = quick_test_pairs if quick else n_test_pairs

    # (QUICK's overrides too: SIFT's val pairs are then the trained methods' smaller val set)
    loaded = load_eval_splits(methods[0] if methods else "hardnet", [*common, *(quick_overrides or [])] if quick else common, test_pairs, lookalike_val_k, train_pairs)
    patches, matches, train_name, test_name, val_name, val_patches, val_matches, lookalike_matches, data_digests, train_patches, train_matches = loaded
    labels = matches[:, 2]
    patch_sets, lists = _hpatches_set(hpatches_root, data_dir, cache, dict((quick_hpatches if quick else hpatches) or {}), hpatches_split, dict(hpatches_lists or {}))
    timing_input = torch.rand(timing_patches, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    rows: list[dict] = []
    curves: dict[str, tuple] = {}

    def add_row(method: str, distances: np.ndarray, **extra) -> dict:
        fpr, tpr = roc_points(distances, labels)
        fpr95 = fpr_at_recall(distances, labels)
        curves.setdefault(method, (fpr, tpr, fpr95))  # with several seeds: the first seed's curve
        row = {
            "method": method, "train": extra.pop("train", train_name), "test": test_name,
            "fpr95": round(float(fpr95), 6),
            "hpatches_verification": None, "hpatches_matching": None, "hpatches_retrieval": None,
            "patches_per_s": None, "device": device_label, "test_pairs": int(len(labels)), **extra,
            "software": versions, "data_md5": data_digests,
        }
        rows.append(row)
        log.info("%s: %s", method, row)
        return row

    for name in baselines:
        root = name == "rootsift"
        start = time.perf_counter()
        descriptors = torch.from_numpy(sift_describe(patches, root=root))
        seconds = time.perf_counter() - start
        # on the selection sets too, the reference the trained networks' val FPR95 was chosen against
        describe = lambda p, r=root: sift_describe(p, root=r)  # noqa: E731
        selection = {"val_fpr95": pairs_fpr95(describe, val_patches, val_matches), "val_pairs": int(len(val_matches))}
        if lookalike_matches is not None:
            selection["val_lookalike_fpr95"] = pairs_fpr95(describe, val_patches, lookalike_matches)
        if train_matches is not None:
            selection["train_fpr95"] = pairs_fpr95(describe, train_patches, train_matches)
            selection["train_pairs"] = int(len(train_matches))
        row = add_row(name, _distances(descriptors, matches, False), train=None, **selection)
        row.update(_hpatches_scores(patch_sets, lists, describe, hpatches_split, cache, torch_device))
        row["patches_per_s"] = round(len(patches) / seconds, 1)
        row["device"] = "CPU (OpenCV SIFT, one patch at a time)"

    for method in methods:
        given = given_checkpoints(method, (checkpoints or {}).get(method), seeds)
        method_seeds = list(given) if None in given or (given and not seeds) else list(seeds or [None])
        method_overrides = [*common, *((budget or {}).get(method, []))]
        if quick:
            method_overrides += list(quick_overrides or [])
        elif budget_scale != 1.0:
            method_overrides.append(f"data.n_train={scaled_items(_compose(method, method_overrides).data, budget_scale)}")
        per_seed: list[list[dict]] = []
        for run_seed in method_seeds:
            first = len(rows)
            overrides, train_dir = list(method_overrides), output / "train" / method
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
                train_seconds = None
            else:
                checkpoint, epoch = train_method(method, train_dir, overrides)
                run_dir, train_seconds = train_dir, round(time.perf_counter() - start, 1)
            cfg = _compose(method, overrides)
            batch_size, n_items = int(cfg.data.batch_size), cfg.data.n_train
            metrics_file = run_dir / "metrics.json" if run_dir else None
            val = json.loads(metrics_file.read_text()).get("val/fpr95") if metrics_file and metrics_file.is_file() else None
            training = {
                "val_fpr95": None if val is None else round(val, 6),
                "seconds_per_epoch": round(statistics.mean(epoch["seconds"]), 2) if epoch["seconds"] else None,
                "epochs": len(epoch["seconds"]), "train_items_per_epoch": n_items, "train_batch_size": batch_size,
                "train_seconds_total": train_seconds, "checkpoint": str(checkpoint),
            }
            is_descriptor = cfg.model._target_.endswith("DescriptorModule")
            if is_descriptor:
                model = PatchDescriptor.from_checkpoint(checkpoint, torch_device, batch_size=timing_batch_size)
                described = torch.zeros(len(patches), model.descriptor_dim)
                used = np.unique(matches[:, :2])
                described[used] = model.describe(patches[used])
                lookalike = {} if lookalike_matches is None else {"val_lookalike_fpr95": pairs_fpr95(model.describe, val_patches, lookalike_matches, model.binary)}
                if train_matches is not None:  # described once, for the float row and its binary one
                    train_pool, train_index = used_patches(train_patches, train_matches)
                    train_described = model.describe(train_pool)
                    lookalike["train_fpr95"] = _fpr95(_distances(train_described, train_index, model.binary), train_matches[:, 2])
                row = add_row(method, _distances(described, matches, model.binary), dim=model.descriptor_dim, **training, **lookalike)
                row.update(_hpatches_scores(patch_sets, lists, lambda p, m=model: m.describe(p).numpy(), hpatches_split, cache, torch_device))
                sized = as_patch_tensor(timing_input, model.patch_size)
                if method in KORNIA_PEERS:
                    peer = kornia_peer(KORNIA_PEERS[method], model.net)
                    # ours at kornia's eps is kornia's network whatever our contrast floor
                    same = PatchDescriptor(with_kornia_input_eps(model.net), torch_device)
                    if hasattr(model.net, "input_eps"):
                        row["input_eps"] = model.net.input_eps
                    with torch.inference_mode():
                        row["max_abs_difference_vs_kornia"] = float((peer(sized[:64].to(torch_device)).cpu() - same.describe(sized[:64])).abs().max())
                    # the same input batches for both (kornia's on the device: ours moves them itself)
                    ours, theirs = _throughput([model.describe, lambda x, p=peer: p(x.to(torch_device)).cpu()], sized, timing_batch_size, timing_repeats)
                    row["patches_per_s"], row["kornia_patches_per_s"] = round(ours, 1), round(theirs, 1)
                    row["speed_ratio_vs_kornia"] = round(ours / theirs, 3)
                else:
                    row["patches_per_s"] = round(_throughput([model.describe], sized, timing_batch_size, timing_repeats)[0], 1)
                if binary_rows and method in BINARY_OF and not model.binary:
                    codes = torch.where(described >= 0, 1.0, -1.0)
                    fit = {} if train_matches is None else {"train_fpr95": _fpr95(_distances(torch.where(train_described >= 0, 1.0, -1.0), train_index, True), train_matches[:, 2])}
                    binary = add_row(BINARY_OF[method], _distances(codes, matches, True), derived_from=method, dim=model.descriptor_dim, **{**training, "val_fpr95": None}, **fit)
                    binary.update(_hpatches_scores(patch_sets, lists, lambda p, m=model: np.where(m.describe(p).numpy() >= 0, 1.0, -1.0), hpatches_split, cache, torch_device))
            else:
                model = PatchMatcher.from_checkpoint(checkpoint, torch_device, batch_size=timing_batch_size)
                lookalike = {}
                for key, (pool, pairs) in {"val_lookalike_fpr95": (val_patches, lookalike_matches), "train_fpr95": (train_patches, train_matches)}.items():
                    if pairs is not None:
                        lookalike[key] = _fpr95(-model.score_index_pairs(*used_patches(pool, pairs)).numpy(), pairs[:, 2])
                row = add_row(method, -model.score_index_pairs(patches, matches[:, :2]).numpy(), dim=getattr(model.net, "feature_dim", None), **training, **lookalike)
                sized = as_patch_tensor(timing_input[: timing_patches // 2], model.patch_size)
                # patches through the network while scoring pairs (two per pair)
                pair_rate = _throughput([lambda x, m=model: m.score(x, x.flip(0))], sized, timing_batch_size, timing_repeats)[0]
                row["patches_per_s"] = round(2 * pair_rate, 1)
            row["timing_batch_size"] = timing_batch_size
            row["inference"] = {"fold_batchnorm": True, "channels_last": model.channels_last}
            del model
            per_seed.append(rows[first:])
            del rows[first:]
        rows.extend(combine_seeds(per_seed, method_seeds))

    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    result = {"quick": quick, "device": device_label, "software": versions, "data_md5": data_digests, "load_start": load_start, "load_end": load, "cores": os.cpu_count(), "train": train_name, "test": test_name, "val": val_name, "test_pairs": int(len(labels)),
              "notes": list(notes or []),
              "hpatches_sequences": sorted(patch_sets), "rows": rows}
    (output / "descriptors.json").write_text(json.dumps(rows, indent=2))
    (output / "descriptors.md").write_text(markdown(rows, result))
    _plot_roc(curves, output / "descriptors_roc.png", f"{train_name} → {test_name} (held out)")
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
    return rows


def _pct(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _val_sentence(info: dict) -> str:
    val = info.get("val")
    if val is None or val == info["train"]:
        return "`val FPR95` is measured on pairs of the training set (seen distribution)."
    return (f"`val FPR95` is measured on the `{val}` pairs, a real sequence held out of training and of the test: "
            "the selection set the training settings were chosen on.")


def _speed_predates_inference_copy(row: dict) -> bool:
    """A trained row whose patches/s was measured on the network itself (an earlier version)."""
    return bool(row.get("patches_per_s")) and row["method"] not in BASELINES and not row.get("derived_from") and "inference" not in row


def _named(values: dict | None) -> str:
    """``{"torch": "2.14.1", ...}`` as ``torch 2.14.1, ...`` (software versions, data digests)."""
    return ", ".join(f"{k} {v}" for k, v in (values or {}).items())


def markdown(rows: list[dict], info: dict) -> str:
    """The seed's table (paper FPR95 per split) with our measured columns beside it."""
    lines = [
        f"# Patch descriptors and metric networks{' (QUICK smoke run: a few training steps)' if info['quick'] else ''}",
        "",
        f"Ours: trained on `{info['train']}` (real-data Brown layout), tested on the held-out `{info['test']}` pairs "
        f"({info['test_pairs']} pairs, half matching); FPR95 in % (HardNet's definition, lower is better). "
        f"HPatches-layout mAP (%) on {', '.join(info['hpatches_sequences'])}. Device: {info['device']}.",
        "Paper: the seed's Brown FPR95 (%), columns train→test; SIFT and DeepDesc give one number per test set.",
        *([f"Software of this run: {_named(info['software'])}; data (MD5, first 12 hex "
           f"digits): {_named(info.get('data_md5'))} (every row's own in descriptors.json "
           "`software` / `data_md5`; rows of earlier runs without them predate the record)."] if info.get("software") else []),
        f"Machine: {info.get('cores')} CPU cores shared with other processes (load average {info.get('load_start')} at the "
        f"start, {info.get('load_end')} at the end). Training budget: one epoch of the items in the last column per method "
        "(conf/benchmark/descriptors.yaml `budget`), minutes instead of the papers' hours to days on a GPU.",
        _val_sentence(info) + " patches/s = extraction in eval mode through descriptors.api, i.e. an inference copy of "
        "the trained network (BatchNorm folded into the convolutions, channels-last on the CPU; the same outputs up to "
        "float rounding); kornia's network runs as kornia ships it (metric networks: patches through the network while "
        "scoring pairs).",
        *(["", "† patches/s measured by an earlier version, on the trained network itself (no inference copy)."]
          if any(_speed_predates_inference_copy(r) for r in rows) else []),
        *[line for note in info.get("notes", []) for line in ("", note)],
        *(["", "Rows with ± are the mean ± sample standard deviation over training seeds (val FPR95, HPatches "
           "and speed: means; per-seed FPR95 in descriptors.json); the ROC plot shows the first seed's curve."]
          if any(r.get("fpr95_std") is not None for r in rows) else []),
        "",
        "| method | dim | " + " | ".join(f"paper {c}" for c in PAPER_COLUMNS) + " | **ours FPR95** | val FPR95 | val look-alike FPR95 | train-pairs FPR95 | HPatches verif / match / retr | patches/s | kornia patches/s (ratio) | s / epoch (items) |",
        "|---|---|" + "---|" * len(PAPER_COLUMNS) + "---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        title, dim, paper = PAPER.get(r["method"], (r["method"], "", (None,) * 7))
        if r.get("dim") and r["dim"] != dim:  # our network's dimension where it is not the paper's
            dim = f"{r['dim']} (paper {dim})" if dim else r["dim"]
        hp = " / ".join(_pct(r.get(f"hpatches_{t}")) for t in ("verification", "matching", "retrieval"))
        kornia = f"{r['kornia_patches_per_s']:.0f} ({r['speed_ratio_vs_kornia']:.2f}x)" if r.get("kornia_patches_per_s") else ""
        epoch = f"{r['seconds_per_epoch']:.0f} ({r['train_items_per_epoch']})" if r.get("seconds_per_epoch") else ""
        speed = f"{r['patches_per_s']:.0f}{' †' if _speed_predates_inference_copy(r) else ''}" if r.get("patches_per_s") else ""
        if r.get("derived_from"):
            speed, epoch = f"= {r['derived_from']}", f"= {r['derived_from']}"
        cells = ["" if v is None else f"{v:g}" for v in paper]
        ours = f"**{_pct(r['fpr95'])}**"
        if r.get("fpr95_std") is not None:
            ours += f" ± {_pct(r['fpr95_std'])} ({len(r['seeds'])} seeds)"
        lines.append(f"| {title} | {dim} | " + " | ".join(cells) + f" | {ours} | {_pct(r.get('val_fpr95'))} | {_pct(r.get('val_lookalike_fpr95'))} | {_pct(r.get('train_fpr95'))} | {hp} | {speed} | {kornia} | {epoch} |")
    learned = [r for r in rows if r["method"] not in BASELINES]
    sift = next((r for r in rows if r["method"] == "sift"), None)
    if sift and learned:
        beat = [r["method"] for r in learned if r["fpr95"] < sift["fpr95"]]
        lines += ["", f"Learned methods below SIFT's FPR95 ({_pct(sift['fpr95'])}%): {len(beat)} of {len(learned)}"
                  + (f" ({', '.join(beat)})." if beat else ".")]
        fit = selection_agreement(rows, "train_fpr95")
        if fit and "below_sift_val" in fit:
            lines += ["", f"On pairs of the training set `{info['train']}` (`train-pairs FPR95`: {sift.get('train_pairs')} pairs, half matching, "
                      f"negatives within one photo; `benchmarks.descriptors.training_pairs`), {fit['below_sift_val']} of the {fit['rows']} "
                      f"learned rows with that number are below SIFT's {_pct(fit['sift_val'])}%, {fit['below_sift_both']} of them also on "
                      f"`{info['test']}` (plot: descriptors_fit_vs_test.png): a row that fits its training distribution but loses on the "
                      "test has a transfer gap, not too little training."]
    installs = installation_groups(rows)
    if installs:
        lines += ["", installs]
    val = info.get("val") or "val"
    for key, name, plot in (("val_fpr95", f"`{val}` val FPR95", "descriptors_val_vs_test.png"),
                            ("val_lookalike_fpr95", f"`{val}` look-alike val FPR95", "descriptors_lookalike_val_vs_test.png")):
        agreement = selection_agreement(rows, key)
        if not agreement:
            continue
        line = (f"Selection set against the test: Spearman's rank correlation of {name} and `{info['test']}` FPR95 "
                f"over the {agreement['rows']} learned rows with that number: {agreement['spearman']:.2f}")
        if "below_sift_val" in agreement:
            line += (f"; below SIFT on it ({_pct(agreement['sift_val'])}%): {agreement['below_sift_val']} of them, "
                     f"of which {agreement['below_sift_both']} also on `{info['test']}`")
        lines += ["", line + f" (plot: {plot})."]
    if any(r.get("val_lookalike_fpr95") is not None for r in rows):
        lines += ["", f"`val look-alike FPR95`: the `{val}` val pairs with every negative's second patch replaced by a patch "
                  "of one of the first patch's point's look-alike points (descriptors.brown.lookalike_match_pairs: the 8 "
                  "nearest other points by NCC of the 16x16 reference patches, overlapping keypoints skipped), the same positives."]
    return "\n".join(lines) + "\n"


def installation_groups(rows: list[dict]) -> str:
    """Which installation measured which rows: rows are grouped by their recorded ``software``
    and ``data_md5`` (a partial publish keeps earlier rows, so one table can mix installations);
    rows without a record predate it. Empty when every row shares one record."""
    groups: dict[str, list[str]] = {}
    unrecorded = []
    for r in rows:
        if not r.get("software"):
            unrecorded.append(r["method"])
            continue
        groups.setdefault(f"{_named(r['software'])}; data {_named(r.get('data_md5')) or 'not recorded'}", []).append(r["method"])
    if len(groups) <= 1 and not unrecorded:
        return ""
    parts = [f"{len(methods)} under {label} ({', '.join(methods)})" for label, methods in groups.items()]
    if unrecorded:
        parts.append(f"{len(unrecorded)} without a record (an earlier, unrecorded installation: {', '.join(unrecorded)})")
    return f"Installations behind the rows: {len(rows)} rows, " + "; ".join(parts) + "."


def selection_agreement(rows: list[dict], key: str = "val_fpr95") -> dict | None:
    """How well a selection set (the rows' ``key``: ``val_fpr95`` or ``val_lookalike_fpr95``)
    ranks the learned rows as the test does: Spearman's rank correlation of their selection
    and test FPR95 (rows with a ``key`` number, at least three), and how many beat SIFT on the
    selection set and how many of those also on the test."""
    from scipy.stats import spearmanr

    learned = [r for r in rows if r["method"] not in BASELINES and r.get(key) is not None]
    if len(learned) < 3:
        return None
    agreement = {"rows": len(learned), "spearman": float(spearmanr([r[key] for r in learned], [r["fpr95"] for r in learned]).statistic)}
    sift = next((r for r in rows if r["method"] == "sift" and r.get(key) is not None), None)
    if sift:
        below = [r for r in learned if r[key] < sift[key]]
        agreement.update(sift_val=sift[key], below_sift_val=len(below), below_sift_both=sum(r["fpr95"] < sift["fpr95"] for r in below))
    return agreement


def _plot_val_vs_test(rows: list[dict], path: Path, val_name: str, test_name: str, key: str = "val_fpr95",
                      x_label: str | None = None, title: str = "Selection set against test") -> None:
    """Selection-set (the rows' ``key``; ``x_label`` names it) against test FPR95 per row (bars:
    the seeds' range), with SIFT's two numbers as the lines that split the plane: lower left
    beats SIFT on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shown = [r for r in rows if r.get(key) is not None]
    if not shown:
        return
    figure, axis = plt.subplots(figsize=(7, 5.5))
    for r in shown:
        x, y = 100 * r[key], 100 * r["fpr95"]
        baseline = r["method"] in BASELINES
        xs, ys = r.get(f"{key}_seeds") or [r[key]], r.get("fpr95_seeds") or [r["fpr95"]]
        if len(xs) > 1 or len(ys) > 1:
            axis.errorbar(x, y, xerr=[[x - 100 * min(xs)], [100 * max(xs) - x]], yerr=[[y - 100 * min(ys)], [100 * max(ys) - y]],
                          color="grey", linewidth=0.6, capsize=2, zorder=1)
        axis.scatter(x, y, marker="s" if baseline else "o", color="black" if baseline else "tab:blue", s=22, zorder=2)
        axis.annotate(r["method"], (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
        if r["method"] == "sift":
            axis.axvline(x, color="black", linestyle=":", linewidth=0.8)
            axis.axhline(y, color="black", linestyle=":", linewidth=0.8)
    axis.set_xlabel(x_label or f"{val_name}{' look-alike' if key == 'val_lookalike_fpr95' else ''} val FPR95 (%) (selection set)")
    axis.set_ylabel(f"{test_name} FPR95 (%) (held-out test)")
    axis.set_title(f"{title} (dotted: SIFT; bars: range over seeds)")
    # log axes spread the good rows apart; a perfect 0 (toy runs) needs linear ones
    if all(min(r[key], r["fpr95"], *(r.get(f"{key}_seeds") or []), *(r.get("fpr95_seeds") or [])) > 0 for r in shown):
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        for scale in (axis.xaxis, axis.yaxis):
            scale.set_major_formatter(plain)
            scale.set_minor_formatter(plain)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_fit_vs_test(rows: list[dict], path: Path, train_name: str, test_name: str) -> None:
    """Training-pairs FPR95 against test FPR95 per row: how well a row fits what it was trained on
    against how well that carries over (lower right of SIFT's lines: a transfer gap)."""
    _plot_val_vs_test(rows, path, train_name, test_name, "train_fpr95", x_label=f"{train_name} pairs FPR95 (%) (training distribution)",
                      title="Fit to the training set against test")


def _plot_roc(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5.5))
    for index, (name, (fpr, tpr, fpr95)) in enumerate(sorted(curves.items(), key=lambda item: item[1][2])):
        style = "--" if name in BASELINES else "-"
        axis.plot(fpr, tpr, style, linewidth=1.0, color=plt.cm.tab20(index % 20), label=f"{name} ({100 * fpr95:.1f}%)")
    axis.axhline(0.95, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(f"ROC, {title} (FPR95 in the legend)")
    axis.legend(fontsize=6.5, loc="lower right", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
