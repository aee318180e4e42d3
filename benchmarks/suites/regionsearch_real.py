"""Region search on real photos: BBS105 (Dekel et al., CVPR 2015) under the peers' protocol.

Every template-matching method of :mod:`regionsearch.template_baselines` on the same pairs
(zero-shot: BBS105 is a test set, nothing is tuned on it). Writes ``regionsearch_real.json``
(rows), ``regionsearch_real.md`` (our AUCs beside the published ones) and three plots: success
curves, ms per query against AUC, ms per query against the reference size. ``quick`` runs the
first ``quick_pairs`` pairs downscaled to ``quick_max_side`` px.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from copy import deepcopy
from pathlib import Path

import cv2
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmarks.suite import merge_published, prepare_suite, software_versions
from core.timing import device_name
from regionsearch.data.bbs import BBSPair, load_bbs_pairs
from regionsearch.data.real_pairs import validation_pairs
from regionsearch.evaluate import real_pair_ious, run_methods, summarize_real
from regionsearch.plots import (
    plot_real_search_paths,
    plot_real_success_curves,
    plot_time_vs_auc,
    plot_time_vs_size,
)
from regionsearch.search_path_method import SearchPathMethod
from regionsearch.template_baselines import build_template_methods

log = logging.getLogger(__name__)

DATASET = "bbs105"
# Published AUCs on the 105 pairs (data README: Gao & Spratling, arXiv 2007.15817, and the
# official QATM repository): method -> (AUC, what was published)
PUBLISHED = {
    "ssd": (0.46, "SSD, colour"),
    "ncc": (0.48, "NCC, colour"),
    "zncc": (0.54, "ZNCC, colour"),
    "bbs": (0.55, "BBS, colour"),
    "ddis": (0.64, "DDIS, colour"),
    "deep_zncc": (0.67, "NCC on VGG features"),
    "deep_qatm": (0.62, "QATM on VGG features, template-sized box"),
}
PUBLISHED_ONLY = [("CoTM, colour", 0.54), ("DIM, colour", 0.69), ("DIM, VGG features", 0.73)]
# OpenCV on these pairs as measured in the data README (colour, template-sized box): AUC
OPENCV_README = {"ssd": 0.478, "ncc": 0.417, "zncc": 0.469}
GAP = 0.03  # a published method further than this from its published AUC is flagged
# what differs from the published implementation, said beside a flagged row
DIFFERENCES = {
    "ssd": "OpenCV colour scores, not the peers' code; the AUC also moves with the pairs in a subset and with the template's rounding",
    "ncc": "OpenCV's TM_CCORR_NORMED normalises over all three channels together; the published NCC is the peers' own implementation",
    "zncc": "OpenCV's TM_CCOEFF_NORMED (per-channel means); the published ZNCC is the peers' own implementation",
    "bbs": "template shrunk to at most 144 patches, windows every 3 px of that resolution (cost)",
    "ddis": "template shrunk to at most 1024 px (the authors' code works at full resolution); exact NN instead of TreeCANN",
    "deep_zncc": "EfficientNet-Lite0 features (blocks 4 + 10, stride 4) instead of VGG; the template's features computed on it alone",
    "deep_qatm": "EfficientNet-Lite0 features (blocks 4 + 10, stride 4) instead of VGG19 conv1_2 + conv3_4",
}


def rescale_pairs(pairs: list[BBSPair], max_side: int | None) -> list[BBSPair]:
    """Each pair shrunk so that image B's long side is at most ``max_side`` (None: unchanged)."""
    if not max_side:
        return pairs
    return [p.rescaled(min(1.0, max_side / max(p.image_b.shape[:2]))) for p in pairs]


def evaluate_methods(methods: dict, pairs: list[BBSPair], device: str, dataset: str = DATASET) -> list[dict]:
    """One row per method: the protocol's numbers, time and windows per query (batch 1) and the
    windows' share of an exhaustive scan. The methods take turns on every pair
    (:func:`~regionsearch.evaluate.run_methods`): their time ratios hold on a machine whose load
    changes during the run."""
    for method in methods.values():
        method(pairs[0].template(), pairs[0].image_b)  # warm-up (first-call allocations, the backbone)
    outcomes = run_methods(methods, pairs) if methods else {}
    rows = []
    for name in methods:
        summary = summarize_real([o.iou for o in outcomes[name]])
        rows.append(
            {
                "dataset": dataset,
                "method": name,
                "auc": round(summary["auc"], 4),
                "success_rate": round(summary["success_rate"], 4),
                "mean_iou": round(summary["mean_iou"], 4),
                "ms_per_query": round(1000 * statistics.fmean(o.seconds for o in outcomes[name]), 3),
                "ms_per_query_batched": None,  # one pair at a time: no batched path
                "windows_per_query": round(statistics.fmean(o.windows for o in outcomes[name]), 1),
                "windows_share_of_exhaustive": round(statistics.fmean(o.windows / exhaustive_windows(p) for o, p in zip(outcomes[name], pairs)), 5),
                # a budget that must hold for every pair, not on average
                "windows_share_max": round(max(o.windows / exhaustive_windows(p) for o, p in zip(outcomes[name], pairs)), 5),
                "n_pairs": len(pairs),
                "device": device,
                "success_curve": [round(v, 4) for v in summary["curve"]],
                "thresholds": summary["thresholds"],
            }
        )
        log.info("%s: AUC %.3f, success %.3f, %.1f ms/query", name, rows[-1]["auc"], rows[-1]["success_rate"], rows[-1]["ms_per_query"])
    return rows


def exhaustive_windows(pair: BBSPair) -> int:
    """Placements of the template in image B at every pixel: what an exhaustive scan evaluates."""
    (h, w), (height, width) = pair.template().shape[:2], pair.image_b.shape[:2]
    return max(1, height - h + 1) * max(1, width - w + 1)


def look_name(look: int | dict | None, view: int) -> str:
    """Row name of one search-path setting: ``at_<view>px`` (or ``within_<share>pct`` for a first
    look sized per pair, ``_t<px>`` with a template size) and, with a second look,
    ``_then_<view>px_k<candidates>_r<radius>``."""
    name = f"at_{view}px"
    if isinstance(look, dict) and look.get("windows_share"):
        name = f"within_{100 * look['windows_share']:g}pct".replace(".", "p") + (f"_t{look['template_px']}" if look.get("template_px") else "")
    if isinstance(look, dict) and look.get("second_view"):
        # a first look sized per pair keeps the second look's ratio to it
        finer = f"{look['second_view'] / view:g}x" if look.get("windows_share") else f"{look['second_view']}px"
        name += f"_then_{finer}_k{look.get('candidates', 2)}_r{look.get('radius', 2)}"
    if isinstance(look, dict) and look.get("rerank"):
        rerank = look["rerank"]
        name += f"_rerank_w{rerank['weight']:g}_a{rerank['radius']:g}_t{rerank['template_px']}".replace(".", "p")
    if isinstance(look, dict) and look.get("refine"):
        name += f"_zncc_a{look['refine']['radius']:g}_t{look['refine']['template_px']}".replace(".", "p")
    return name


def search_path_matchers(net, looks: list[int | dict | None], torch_device) -> dict[str, SearchPathMethod]:
    """The search path as protocol methods, per test-time setting: a first-look view (int; None:
    the checkpoint's) or ``{view, second_view, candidates, radius, windows_share, template_px, max_view}``
    (a second, finer look around the first look's ``candidates`` best cells,
    :mod:`regionsearch.nets.second_look`; a first look sized per pair within ``windows_share`` of an
    exhaustive scan, :meth:`~regionsearch.search_path_method.SearchPathMethod.budget_view`; ``refine``:
    ``{radius, template_px}`` of :func:`~regionsearch.search_path_method.zncc_refine`; ``rerank``:
    ``{weight, radius, template_px}``, the second look's candidates re-ranked by net score + weight *
    ZNCC, :class:`~regionsearch.search_path_method.SearchPathMethod`). Each gives
    the free box (width and height predicted) and a template-sized box at its centre. The first
    setting is named ``search_path``; the others ``search_path_<look_name>``."""
    matchers = {}
    for index, look in enumerate(looks):
        copy = deepcopy(net)
        view = look.get("view") if isinstance(look, dict) else look
        if view:
            copy.first_glimpse_size = int(view)
        if isinstance(look, dict) and look.get("second_view"):
            copy.second_look_view = int(look["second_view"])
            copy.second_look_candidates = int(look.get("candidates", 2))
            copy.second_look_radius = int(look.get("radius", 2))
        name = "search_path" if index == 0 else f"search_path_{look_name(look, copy.first_glimpse_size)}"
        budget = {k: look[k] for k in ("windows_share", "template_px", "max_view", "refine", "rerank") if isinstance(look, dict) and look.get(k)}
        matchers[name] = SearchPathMethod(copy, box="free", device=torch_device, **budget)
        matchers[f"{name}_template_box"] = SearchPathMethod(copy, box="template", device=torch_device, **budget)
    return matchers


def add_search_path_columns(rows: list[dict], matchers: dict[str, SearchPathMethod], pairs: list[BBSPair], batch_size: int = 16) -> None:
    """The search path's own columns: ms per query batched (pairs whose image B share a size,
    padded templates) and its first look's size."""
    groups: dict[tuple, list[BBSPair]] = {}
    for pair in pairs:
        groups.setdefault(pair.image_b.shape, []).append(pair)
    for row in rows:
        method = matchers.get(row["method"])
        if method is None:
            continue
        start = time.perf_counter()
        for group in groups.values():
            for first in range(0, len(group), batch_size):
                chunk = group[first : first + batch_size]
                method.batch([p.template() for p in chunk], [p.image_b for p in chunk])
        row["ms_per_query_batched"] = round(1000 * (time.perf_counter() - start) / len(pairs), 3)
        row["first_look_view"] = None if method.windows_share else method.net.first_glimpse_size
        if method.windows_share:
            row["first_look_budget"] = {"windows_share": method.windows_share, "template_px": method.template_px, "max_view": method.max_view}
        if method.net.second_look_view:
            view = f"{method.second_look_ratio:g}x" if method.windows_share else method.net.second_look_view
            row["second_look"] = {"view": view, "candidates": method.net.second_look_candidates, "radius": method.net.second_look_radius}
        if method.refine:
            row["refine"] = dict(method.refine)
        if method.rerank:
            row["rerank"] = dict(method.rerank)
        log.info("%s: AUC %.3f, %.1f ms/query (batched %.1f), %.2f %% of the exhaustive windows", row["method"], row["auc"], row["ms_per_query"], row["ms_per_query_batched"], 100 * row["windows_share_of_exhaustive"])


def time_versus_size(methods: dict, pairs: list[BBSPair], sizes: list[int]) -> list[dict]:
    """ms per query when image B is resized so that its long side is each of ``sizes`` while the
    template keeps its own size (shrunk only where it would exceed half of B's side); the
    median over ``pairs``. Cost then grows with the reference area, the template fixed."""
    rows = []
    for name, method in methods.items():
        for size in sizes:
            times, windows = [], []
            for pair in pairs:
                image = pair.rescaled(size / max(pair.image_b.shape[:2])).image_b
                template = pair.template()
                fit = min(1.0, 0.5 * image.shape[0] / template.shape[0], 0.5 * image.shape[1] / template.shape[1])
                if fit < 1.0:
                    height, width = max(3, round(template.shape[0] * fit)), max(3, round(template.shape[1] * fit))
                    template = cv2.resize(template, (width, height), interpolation=cv2.INTER_AREA)
                start = time.perf_counter()
                result = method(template, image)
                times.append(time.perf_counter() - start)
                windows.append(result.windows)
            rows.append({"method": name, "long_side": size, "ms_per_query": round(1000 * statistics.median(times), 3), "windows_per_query": round(statistics.fmean(windows), 1), "n_pairs": len(pairs)})
            log.info("%s at %d px: %.1f ms/query", name, size, rows[-1]["ms_per_query"])
    return rows


def search_path_notes(rows: list[dict]) -> list[str]:
    """The search path against the issue's targets: AUC >= 0.64 (DDIS), at most 1 % of an
    exhaustive scan's windows, >= 40x faster per query than our BBS and DDIS."""
    by_method = {r["method"]: r for r in rows}
    lines = []
    for row in rows:
        name = row["method"]
        if not name.startswith("search_path"):
            continue
        speed = ", ".join(f"{by_method[b]['ms_per_query'] / row['ms_per_query']:.0f}x faster than {b}" for b in ("bbs", "ddis") if b in by_method)
        share = row.get("windows_share_of_exhaustive")
        lines.append(
            f"- {name} ({'template-sized box at the final window centre' if name.endswith('_template_box') else 'free box: width and height predicted'}"
            + (f"; first look {row['first_look_view']} px" if row.get("first_look_view") else "")
            + (f"; first look sized per pair within {100 * row['first_look_budget']['windows_share']:g} % of an exhaustive scan" if row.get("first_look_budget") else "")
            + (f", then {row['second_look']['view']}{'' if isinstance(row['second_look']['view'], str) else ' px'} around its {row['second_look']['candidates']} best cells (radius {row['second_look']['radius']})" if row.get("second_look") else "")
            + (
                f", candidates re-ranked by net score + {row['rerank']['weight']:g} x colour ZNCC within {row['rerank']['radius']:g} of the template's size"
                if row.get("rerank")
                else ""
            )
            + (f", then colour ZNCC within {row['refine']['radius']:g} of the template's size, template at {row['refine']['template_px']} px" if row.get("refine") else "")
            + "): "
            f"AUC {row['auc']:.3f} (target >= 0.64), {row['windows_per_query']:.0f} windows per query"
            + (f" = {100 * share:.2f} % of an exhaustive scan (target <= 1 %)" if share is not None else "")
            + (f", at most {100 * row['windows_share_max']:.2f} % on one pair" if row.get("windows_share_max") is not None else "")
            + f", {row['ms_per_query']:.1f} ms per query at batch 1"
            + (f" ({row['ms_per_query_batched']:.1f} batched)" if row.get("ms_per_query_batched") else "")
            + (f": {speed} (target >= 40x; timings of one run, same CPU)" if speed else "")
            + "."
        )
    if lines:
        lines = [
            "",
            "## The search path (trained on real_pairs only, zero-shot here; its first look's placements count as windows)",
            "",
            *lines,
        ]
    return lines


def markdown_table(rows: list[dict], size_rows: list[dict], quick: bool, versions: dict, subset: str = "") -> str:
    """Our rows beside the published AUCs; rows off their published AUC by more than GAP say so."""
    n = rows[0]["n_pairs"] if rows else 0
    note = ", QUICK: downscaled subset, not comparable" if quick else (f", a subset: {subset}" if subset else "")
    lines = [
        f"# Region search on real photos: BBS105 ({n} pairs{note})",
        "",
        "Peers' protocol: template = image A cut at the rounded box; one template-sized box per pair in image B; "
        "success(t) = share of pairs with IoU > t, t = 0, 0.05, ..., 1; AUC = mean of the first 20 values. "
        "Every method zero-shot (BBS105 is a test set). ms per query: wall clock, batch 1 (only the search path has a batched path), "
        f"on {rows[0]['device'] if rows else '?'}; the methods of one run take turns on every pair, so their time ratios hold "
        "under a changing load (a partial re-run's rows replace only the methods it ran).",
        "",
        "| method | AUC | published AUC | ours - published | success (IoU > 0.5) | mean IoU | ms / query | windows / query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    flagged = []
    for row in rows:
        published = PUBLISHED.get(row["method"])
        pub, delta = ("", "")
        if published:
            pub = f"{published[0]:.2f} ({published[1]})"
            gap = row["auc"] - published[0]
            delta = f"{gap:+.3f}" + (" **>0.03**" if abs(gap) > GAP else "")
            if abs(gap) > GAP:
                flagged.append(row["method"])
        lines.append(f"| {row['method']} | {row['auc']:.3f} | {pub} | {delta} | {row['success_rate']:.3f} | {row['mean_iou']:.3f} | {row['ms_per_query']:.1f} | {row['windows_per_query']:.0f} |")
    for name, auc in PUBLISHED_ONLY:
        lines.append(f"| {name} (published only) |  | {auc:.2f} |  |  |  |  |  |")
    lines += ["", "OpenCV on these pairs as measured in the data README (colour, template-sized box): " + ", ".join(f"{k} AUC {v:.3f}" for k, v in OPENCV_README.items()) + "."]
    if flagged:
        lines += [
            "",
            f"More than {GAP} AUC from the published number: {', '.join(flagged)}. What differs from the published implementation:",
            "",
        ]
        lines += [f"- {name}: {DIFFERENCES[name]}." for name in flagged if name in DIFFERENCES]
    lines += [
        "",
        "Implementations (regionsearch.template_baselines): SSD / NCC / ZNCC = OpenCV matchTemplate on RGB "
        "(TM_SQDIFF / TM_CCORR_NORMED / TM_CCOEFF_NORMED). BBS = non-overlapping 3x3 RGB patches + xy (gamma 2), "
        "template shrunk to at most 144 patches, windows every 3 px of that resolution. DDIS = every overlapping 3x3 "
        "RGB patch, template shrunk to at most 1024 px, exact NN field, exp(1 - kappa) / (1 + r), every window, the authors' localisation (map box-filtered over a third of the template, centre of mass). "
        "Deep = EfficientNet-Lite0 ImageNet blocks 4 + 10 at stride 4: ZNCC, and QATM (alpha 25).",
    ]
    lines += search_path_notes(rows)
    if size_rows:
        sizes = sorted({r["long_side"] for r in size_rows})
        lines += ["", "## ms per query against the reference's long side (template at its own size, shrunk only where it exceeds half of B's side)", "", "| method | " + " | ".join(f"{s} px" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
        for method in dict.fromkeys(r["method"] for r in size_rows):
            by_size = {r["long_side"]: r["ms_per_query"] for r in size_rows if r["method"] == method}
            lines.append(f"| {method} | " + " | ".join(f"{by_size[s]:.1f}" if s in by_size else "" for s in sizes) + " |")
    lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def search_path_panels(method: SearchPathMethod, pairs: list[BBSPair], count: int = 8) -> list[dict]:
    """Panels of :func:`~regionsearch.plots.plot_real_search_paths`: ``count`` pairs spread evenly over
    ``pairs`` (the first and the last included; not chosen by their outcome), each searched once."""
    picks = sorted({round(i * (len(pairs) - 1) / max(1, count - 1)) for i in range(count)}) if pairs else []
    panels = []
    for pair in (pairs[i] for i in picks):
        template = pair.template()
        trace = method.trace(template, pair.image_b)
        iou = float(real_pair_ious(trace.result.box[None], pair.box_b[None])[0])
        label = f"pair {pair.number} ({pair.video}): IoU {iou:.2f}"
        panels.append(dict(template=template, image=pair.image_b, truth=pair.box_b, answer=trace.result.box, windows=trace.windows, candidates=trace.candidates, label=label))
    return panels


def run_suite(
    output_dir: str,
    data_dir: str,
    dataset_dir: str = "template_matching/bbs",
    methods: dict | None = None,
    quick: bool = False,
    n_pairs: int | None = None,
    pair_step: int = 1,
    max_side: int | None = None,
    quick_pairs: int = 20,
    quick_max_side: int = 240,
    size_methods: tuple[str, ...] = ("ncc", "bbs", "ddis"),
    sizes: tuple[int, ...] = (100, 200, 400, 700, 1024),
    size_pairs: int = 5,
    quick_sizes: tuple[int, ...] = (100, 240),
    quick_size_pairs: int = 2,
    device: str = "cpu",
    num_threads: int | None = None,
    publish_dir: str | None = None,
    search_path_checkpoint: str | None = None,
    search_path_view: int | dict | list[int | dict] | None = None,
    validation: dict | None = None,
    cache_dir: str | None = None,
) -> list[dict]:
    """Evaluate every method on BBS105 (or its quick subset) and write the tables and plots.
    ``validation`` (keyword arguments of :func:`regionsearch.data.real_pairs.validation_pairs`)
    scores the training pairs' val split instead, to choose settings; it never publishes."""
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    label = device_name(torch_device)
    if methods is None:
        methods = {name: {} for name in ("ssd", "ncc", "zncc", "bbs", "ddis", "deep_zncc", "deep_qatm")}
    limit, side = (quick_pairs, quick_max_side) if quick else (n_pairs, max_side)
    if validation:
        if publish_dir:
            raise ValueError("benchmark.validation scores the val split: it is not published (drop publish_dir)")
        pairs = validation_pairs(data_dir, cache_dir or Path(output_dir) / "cache", **dict(validation))
        log.info("validation: %d real_pairs val pairs", len(pairs))
    else:
        pairs = rescale_pairs(load_bbs_pairs(Path(data_dir) / dataset_dir, limit)[::pair_step], side)
        log.info("BBS105: %d pairs%s", len(pairs), f", long side <= {side} px" if side else "")
    matchers = build_template_methods(methods, device=torch_device) if methods else {}
    searchers = {}
    if search_path_checkpoint:
        from regionsearch.api import RegionSearcher

        # the first look's long side at test time (picked on the training pairs' val split); a list
        # gives one pair of rows per view, the first named search_path
        looks = list(search_path_view) if isinstance(search_path_view, (list, tuple, ListConfig)) else [search_path_view]
        looks = [OmegaConf.to_container(look) if isinstance(look, DictConfig) else look for look in looks]
        searchers = search_path_matchers(RegionSearcher.from_checkpoint(search_path_checkpoint).net, looks, torch_device)
        size_methods = (*size_methods, *(name for name in searchers if not name.endswith("_template_box")))
    # every method (baselines and search path) takes its turn on each pair: one run's time ratios
    rows = evaluate_methods({**matchers, **searchers}, pairs, label, "real_pairs_val" if validation else DATASET)
    add_search_path_columns(rows, searchers, pairs)
    matchers.update(searchers)

    # validation chooses settings by accuracy and windows: no timing against the reference size
    size_matchers = {} if validation else {name: matchers[name] for name in size_methods if name in matchers}
    size_pairs_used = pairs[: quick_size_pairs if quick else size_pairs]
    size_rows = time_versus_size(size_matchers, size_pairs_used, list(quick_sizes if quick else sizes)) if size_matchers else []
    for row in size_rows:
        row["device"] = label

    versions = software_versions()
    (output / "regionsearch_real.json").write_text(json.dumps(rows, indent=2))
    (output / "regionsearch_real_sizes.json").write_text(json.dumps(size_rows, indent=2))
    subset = "the real_pairs val split, not BBS105" if validation else f"pairs {', '.join(str(p.number) for p in pairs[:3])}, ..., {pairs[-1].number} (every {pair_step} pairs)" if pair_step > 1 else ""
    (output / "regionsearch_real.md").write_text(markdown_table(rows, size_rows, quick, versions, subset))
    title = f"BBS105 ({len(pairs)} pairs{', quick' if quick else ''})"
    plot_real_success_curves(rows, output / "regionsearch_real_success.png", title)
    plot_time_vs_auc(rows, output / "regionsearch_real_time_vs_auc.png", title)
    if size_rows:
        plot_time_vs_size(size_rows, output / "regionsearch_real_time_vs_size.png", f"time per query vs reference size ({label})")
    if searchers:
        paths_title = f"search_path on {'the val split' if validation else 'BBS105'}: truth (green), windows 1..T (dashed), candidates (x), answer (cyan)"
        plot_real_search_paths(search_path_panels(searchers["search_path"], pairs), output / "regionsearch_real_search_paths.jpg", paths_title)
    if publish_dir:
        # a partial run (e.g. methods={} + a search-path checkpoint) replaces only the methods it
        # measured: the other published rows stay, and the tables are rebuilt from the merge
        measured = {r["method"] for r in rows}
        publish, merged = merge_published(publish_dir, "regionsearch_real", rows, lambda r: r.get("dataset") == DATASET and r.get("method") in measured)
        sizes_path = publish / "regionsearch_real_sizes.json"
        timed = {r["method"] for r in size_rows}
        published_sizes = json.loads(sizes_path.read_text()) if sizes_path.is_file() else []
        merged_sizes = [r for r in published_sizes if r.get("method") not in timed] + size_rows
        sizes_path.write_text(json.dumps(merged_sizes, indent=2))
        merged = [r for r in merged if r.get("dataset") == DATASET]
        (publish / "regionsearch_real.md").write_text(markdown_table(merged, merged_sizes, quick, versions, subset))
        plot_real_success_curves(merged, publish / "regionsearch_real_success.png", title)
        plot_time_vs_auc(merged, publish / "regionsearch_real_time_vs_auc.png", title)
        if merged_sizes:
            plot_time_vs_size(merged_sizes, publish / "regionsearch_real_time_vs_size.png", f"time per query vs reference size ({label})")
        if searchers and publish.resolve() != output.resolve():
            shutil.copy(output / "regionsearch_real_search_paths.jpg", publish / "regionsearch_real_search_paths.jpg")
    return rows

