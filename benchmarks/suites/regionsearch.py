"""The region-search benchmark: the paper's table, measured.

For each dataset: train the search-path matcher (or load ``checkpoints[dataset]``),
then evaluate it and every exhaustive baseline on the same test pairs. Writes
``regionsearch.json`` (a list of rows), ``regionsearch.md`` and plots under the run's
output dir, and copies the tables to ``publish_dir`` when set.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import cv2
import hydra
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra import compose

from benchmarks.suite import merge_published, prepare_suite, publish_files
from benchmarks.train import train
from core.timing import device_name, timed_median
from regionsearch.api import RegionSearcher, evaluate_search_path
from regionsearch.baselines import aspect_template_sizes, get_baseline
from regionsearch.data.logos import query_aspects_in_reference
from regionsearch.evaluate import (
    IOU_THRESHOLDS,
    evaluate_matcher,
    prior_box_ious,
    success_auc,
    success_curve,
)
from regionsearch.nets.exhaustive import ExhaustiveCNNMatcher
from regionsearch.plots import (
    plot_search_paths,
    plot_speed,
    plot_success_curves,
    plot_success_per_step,
)

log = logging.getLogger(__name__)

# The poster's table: success rate (ms per query).
PAPER = {
    "translated": {"search_path": (0.95, 1), "mtm": (0.68, 2), "bbs": (0.70, 132)},
    "cluttered": {"search_path": (0.91, 3), "mtm": (0.20, 3), "bbs": (0.11, 141)},
    "mixed": {"search_path": (0.88, 4), "mtm": (0.15, 5), "bbs": (0.08, 148)},
    "flickrlogos": {"search_path": (0.39, 6), "mtm": (0.28, 230), "bbs": (0.36, 2390)},
}
DATASET_TITLES = {
    "translated": "Translated MNIST",
    "cluttered": "Cluttered MNIST",
    "mixed": "Cluttered and Mixed MNIST",
    "flickrlogos": "FlickrLogos (27 here; 32 in the paper)",
}


def time_search_path(searcher: RegionSearcher, queries: torch.Tensor, references: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Median ms per query over ``repeats`` timed passes (after a warm-up, which also compiles
    a compiled searcher for this batch size), at the given batch size."""
    device = searcher.device
    n = min(len(queries), 64 if batch_size == 1 else batch_size)
    q, r = queries[:n].to(device), references[:n].to(device)

    def one_pass() -> None:
        for i in range(0, n, batch_size):
            searcher.windows(q[i : i + batch_size], r[i : i + batch_size])

    with torch.inference_mode():
        for _ in range(2):  # warm-up (the first call of a compiled searcher builds its library)
            searcher.windows(q[:batch_size], r[:batch_size])
        seconds, _ = timed_median(one_pass, repeats, device)
    return seconds * 1000 / n


def search_path_timings(net, device: torch.device, queries: torch.Tensor, references: torch.Tensor, batch_sizes, repeats: int, compile: bool) -> dict:
    """ms per query of the search path at each batch size, eager and (with ``compile``) compiled
    ahead of time (``RegionSearcher(compile=True)``: torch.export + AOTInductor, one library per
    batch size; ``compile_s`` = the batch-1 build); ``ms_per_query`` / ``ms_per_query_batched`` are the compiled times when
    compiling worked, else the eager ones. ``queries`` / ``references`` are float in [0, 1]."""
    eager = RegionSearcher(net, device)
    times = {f"ms_per_query_eager_batch{b}": round(time_search_path(eager, queries, references, b, repeats), 4) for b in batch_sizes}
    best = "eager"
    if compile:
        compiled = RegionSearcher(net, device, compile=True)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled.windows(queries[:1].to(device), references[:1].to(device))
        compile_s = time.perf_counter() - start
        compiled_times = {b: time_search_path(compiled, queries, references, b, repeats) for b in batch_sizes}
        if compiled.compiled:  # else it fell back to eager (warned)
            times.update({f"ms_per_query_compiled_batch{b}": round(t, 4) for b, t in compiled_times.items()})
            times["compile_s"] = round(compile_s, 1)
            best = "compiled"
    first, last = batch_sizes[0], batch_sizes[-1]
    times["ms_per_query_eager"] = times[f"ms_per_query_eager_batch{first}"]
    times["ms_per_query_eager_batched"] = times[f"ms_per_query_eager_batch{last}"]
    times["ms_per_query"] = times[f"ms_per_query_{best}_batch{first}"]
    times["ms_per_query_batched"] = times[f"ms_per_query_{best}_batch{last}"]
    times["compiled"] = best == "compiled"
    return times


def _row(dataset, method, ious, ms, windows, device, **extra) -> dict:
    return {
        "dataset": dataset,
        "method": method,
        "success_rate": round(float((ious > 0.5).mean()), 4),
        "mean_iou": round(float(ious.mean()), 4),
        "auc": round(success_auc(ious), 4),
        "ms_per_query": round(float(ms), 4),
        "windows_per_query": round(float(windows), 1),
        "n_pairs": int(len(ious)),
        "device": device,
        **extra,
    }


def train_matcher(dataset: str, output_dir: Path, overrides: list[str]) -> Path:
    """Train through the same entry point users run (``benchmarks.train``); returns the best checkpoint."""
    cfg = compose(config_name="train", overrides=[f"experiment=regionsearch/{dataset}", f"paths.output_dir={output_dir}", *overrides])
    train(cfg)
    return Path((output_dir / "checkpoint.txt").read_text().strip())


def load_splits(dataset: str, overrides: list[str]) -> dict:
    """The dataset's splits; every method is evaluated on the same ``test`` pairs."""
    cfg = compose(config_name="train", overrides=[f"experiment=regionsearch/{dataset}", *overrides])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    return datamodule.splits


def dataset_overrides(dataset: str, n_test: int, base_overrides, train_overrides, quick: bool, quick_overrides) -> list[str]:
    """The config overrides of one dataset's run: test size, the suite's base, the dataset's own, QUICK's."""
    overrides = [f"data.n_test={n_test}", *(base_overrides or []), *(train_overrides or {}).get(dataset, [])]
    return overrides + list(quick_overrides or []) if quick else overrides


def baseline_settings(settings: dict | None, n_pairs: int, quick: bool, cap: int | None = None) -> tuple[dict, int]:
    """A baseline's keyword arguments and how many pairs it runs on (its ``max_pairs``, QUICK's
    ``quick_pairs``, ``cap``); ``scales`` as a tuple."""
    settings = dict(settings or {})
    n = min(settings.pop("max_pairs", None) or n_pairs, n_pairs, cap or n_pairs)
    quick_pairs = settings.pop("quick_pairs", 50)
    if quick:
        n = min(n, quick_pairs)
    if "scales" in settings:
        settings["scales"] = tuple(settings["scales"])
    return settings, n


TEMPLATES = ("query", "query_aspect", "box_size")


def template_sizes(pairs, template: str, scales=(1.0,)):
    """Per-pair template sizes of a baseline row, as ``pair_kwargs`` for ``evaluate_matcher``:
    ``query`` (None: the square query scaled by ``scales``), ``query_aspect`` (the query at its
    true aspect in reference pixels, ``scales`` relative to the reference; logo pairs only) or
    ``box_size`` (the true box's width and height: the scale given, only the position searched)."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "query":
        return None
    shape = tuple(pairs.references.shape[-2:])
    if template == "box_size":
        boxes = pairs.boxes.double().numpy()
        sides = np.maximum(1, np.round(boxes[:, 2:] - boxes[:, :2])).astype(int)
        return lambda i: {"sizes": [tuple(sides[i])]}
    sources = getattr(pairs, "sources", {})
    if "query_boxes" not in sources or "reference_images" not in sources:
        raise ValueError("template=query_aspect needs logo pairs (their query boxes and reference images)")
    aspects = query_aspects_in_reference(sources["query_boxes"], sources["reference_images"], shape)
    return lambda i: {"sizes": aspect_template_sizes(shape, aspects[i], scales) or [(3, 3)]}


def run_baseline(name: str, settings: dict, pairs, n_pairs: int, searcher, torch_device) -> dict:
    """One baseline row's results on the first ``n_pairs`` pairs. ``settings`` may name the
    ``matcher`` (default: the row's name) and its ``template`` (see :func:`template_sizes`)."""
    settings = dict(settings)
    matcher_name = settings.pop("matcher", name)
    template = settings.pop("template", "query")
    # with the query's aspect the scales are relative to the reference and set the sizes
    pair_kwargs = template_sizes(pairs, template, settings.pop("scales", (1.0,)) if template == "query_aspect" else (1.0,))
    indices = np.arange(n_pairs)
    if matcher_name == "exhaustive_cnn":
        matcher = ExhaustiveCNNMatcher(searcher.net, stride=settings.pop("stride", 2), device=torch_device, scales=settings.pop("scales", (1.0,)))
        return evaluate_matcher(name, matcher, pairs, indices, **settings)
    return evaluate_matcher(name, get_baseline(matcher_name), pairs, indices, pair_kwargs=pair_kwargs, **settings)


def run_suite(
    output_dir: str,
    datasets: list[str],
    quick: bool = False,
    n_test: int = 1000,
    baselines: dict | None = None,
    checkpoints: dict | None = None,
    base_overrides: list[str] | None = None,
    train_overrides: dict | None = None,
    quick_overrides: list[str] | None = None,
    batch_sizes: tuple[int, ...] = (1, 256),
    timing_repeats: int = 5,
    device: str = "auto",
    publish_dir: str | None = None,
    num_threads: int | None = None,
    compile: bool = True,
    baselines_only: bool = False,
    eval_split: str = "test",
) -> list[dict]:
    """``baselines_only``: run only the listed baselines (no training, no search path, no prior
    box; ``exhaustive_cnn`` needs ``checkpoints[dataset]``) and, when publishing, keep every other
    published row. ``eval_split="val"`` scores on the validation pairs, to choose a baseline's
    settings there (never publish such a run)."""
    if publish_dir and eval_split != "test":
        raise ValueError(f"only test-split runs are published, got eval_split={eval_split!r}")
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    if num_threads:
        cv2.setNumThreads(num_threads)  # the OpenCV baselines (NCC, MTM) run on as many threads
    device_label = device_name(torch_device)
    rows: list[dict] = []
    per_step: dict[str, np.ndarray] = {}
    for dataset in datasets:
        log.info("== %s", dataset)
        overrides = dataset_overrides(dataset, n_test, base_overrides, train_overrides, quick, quick_overrides)
        checkpoint = (checkpoints or {}).get(dataset)
        splits = load_splits(dataset, overrides)
        pairs = splits[eval_split]
        curves = {}
        searcher = None
        if checkpoint:
            searcher = RegionSearcher.from_checkpoint(Path(checkpoint), device=torch_device)
        elif not baselines_only:
            start = time.perf_counter()
            checkpoint = train_matcher(dataset, output / "train" / dataset, overrides)
            log.info("trained %s in %.0f s", dataset, time.perf_counter() - start)
            searcher = RegionSearcher.from_checkpoint(checkpoint, device=torch_device)
        if not baselines_only:
            path_ious, answers = evaluate_search_path(searcher, pairs)
            per_step[DATASET_TITLES[dataset]] = (path_ious > 0.5).mean(axis=0)
            final = path_ious[:, -1]
            curves["search path (ours)"] = success_curve(final)
            timings = search_path_timings(searcher.net, torch_device, pairs.queries.float() / 255, pairs.references.float() / 255, batch_sizes, timing_repeats, compile)
            # ms_per_query is the batch-1 time: the baselines also answer one query at a time.
            ours = _row(dataset, "search_path", final, timings.pop("ms_per_query"), searcher.net.steps, device_label, checkpoint=str(checkpoint))
            ours.update(timings)
            rows.append(ours)
            _plot_paths(searcher, pairs, output / f"search_paths_{dataset}.png")
            prior = prior_box_ious(splits["train"].boxes, pairs.boxes)
            rows.append(_row(dataset, "prior_box", prior, 0.0, 1, "-"))
            curves["prior box (no matching)"] = success_curve(prior)

        for name, settings in (baselines or {}).get(dataset, {}).items():
            settings, n_pairs = baseline_settings(settings, len(pairs), quick)
            if searcher is None and settings.get("matcher", name) == "exhaustive_cnn":
                log.warning("%s %s skipped: it needs checkpoints.%s", dataset, name, dataset)
                continue
            result = run_baseline(name, settings, pairs, n_pairs, searcher, torch_device)
            row = _row(dataset, name, result["ious"], result["ms_per_query"], result["windows_per_query"], "CPU" if name != "exhaustive_cnn" else device_label)
            if baselines_only or eval_split != "test":
                row.update(threads=torch.get_num_threads(), split=eval_split)
            rows.append(row)
            curves[name] = success_curve(result["ious"])
            log.info("%s %s: %s", dataset, name, rows[-1])
        _save_success_curves(curves, output / f"success_curves_{dataset}.png", DATASET_TITLES[dataset])

    if per_step:
        _save_success_per_step(per_step, output / "success_vs_steps.png")
    add_ratios(rows)
    (output / "regionsearch.json").write_text(json.dumps(rows, indent=2))
    (output / "regionsearch.md").write_text(markdown_table(rows, device_label, quick))
    if publish_dir:
        # Re-running some datasets (or some baselines of them) keeps the other published rows.
        rerun = {(r["dataset"], r["method"]) for r in rows}
        publish, merged = merge_published(publish_dir, "regionsearch", rows, lambda r: (r["dataset"], r["method"]) in rerun if baselines_only else r["dataset"] in datasets)
        merged = in_dataset_order(merged)
        add_ratios(merged)  # against the published search path when it was not re-run
        (publish / "regionsearch.json").write_text(json.dumps(merged, indent=2))
        (publish / "regionsearch.md").write_text(markdown_table(merged, device_summary(merged, device_label), quick))
        if per_step:
            shutil.copy(output / "success_vs_steps.png", publish / f"success_vs_steps_{'_'.join(datasets)}.png")
            for dataset in datasets:
                shutil.copy(output / f"search_paths_{dataset}.png", publish / f"search_paths_{dataset}.png")
    print((output / "regionsearch.md").read_text())
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Speed-up of the search path over each baseline on the same dataset: baseline ms / ours,
    with ours at batch 1 (like for like) and batched (the search path's throughput)."""
    ours = {r["dataset"]: r for r in rows if r["method"] == "search_path"}
    for row in rows:
        mine = ours.get(row["dataset"])
        if mine and row is not mine and mine["ms_per_query"] > 0 and row["ms_per_query"] > 0:
            row["speedup_of_search_path"] = round(row["ms_per_query"] / mine["ms_per_query"], 2)
            if mine.get("ms_per_query_batched"):
                row["speedup_of_search_path_batched"] = round(row["ms_per_query"] / mine["ms_per_query_batched"], 2)


def in_dataset_order(rows: list[dict]) -> list[dict]:
    """Rows sorted (stably) by the suite's dataset order, so a re-run dataset keeps its place."""
    order = list(DATASET_TITLES)
    return sorted(rows, key=lambda r: order.index(r["dataset"]) if r["dataset"] in order else len(order))


def device_summary(rows: list[dict], default: str) -> str:
    """The device of the search-path rows; when merged runs differ, each device with its datasets."""
    datasets_of: dict[str, list[str]] = {}
    for row in rows:
        if row["method"] == "search_path":
            datasets_of.setdefault(row["device"], []).append(row["dataset"])
    if len(datasets_of) <= 1:
        return next(iter(datasets_of), default)
    return "; ".join(f"{device} for {', '.join(datasets)}" for device, datasets in datasets_of.items())


def markdown_table(rows: list[dict], device: str, quick: bool) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lookup = {(r["dataset"], r["method"]): r for r in rows}
    lines = [
        f"# Region search{' (QUICK smoke run: small training, few pairs)' if quick else ''}",
        "",
        f"Device: {device}. Success rate at IoU > 0.5 (ms per query); the paper's value in brackets.",
        "All times are per query at batch 1 (the search path's batched time and speed-ups are in the detail table); the search path's",
        "time is compiled ahead of time (torch.export + AOTInductor) where its JSON row has `compiled: true` (eager times beside it; `make benchmark-regionsearch-speed`",
        "times every dataset's search path eager and compiled against NCC / MTM / BBS in one run).",
    ]
    for dataset in datasets:
        alone = [r for r in rows if r["dataset"] == dataset and "threads" in r]
        if alone:
            lines.append(
                f"{DATASET_TITLES.get(dataset, dataset)}: {', '.join(r['method'] for r in alone)} re-run on their own (`benchmark.baselines_only`) "
                f"at {alone[0]['threads']} torch / OpenCV thread(s), beside the published search-path row (timed at its own thread count)."
            )
    lines += [
        "",
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for dataset in datasets:
        cells = []
        for method in methods:
            row = lookup.get((dataset, method))
            if row is None:
                cells.append("")
                continue
            paper = PAPER.get(dataset, {}).get(method)
            cell = f"{row['success_rate']:.2f} ({row['ms_per_query']:.3g})"
            if paper:
                cell += f" [{paper[0]:.2f} ({paper[1]})]"
            cells.append(cell)
        lines.append(f"| {DATASET_TITLES.get(dataset, dataset)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| dataset | method | success | mean IoU | AUC | ms/query (batch 1) | ms/query batched | windows/query | n pairs | search path speed-up (batch 1 / batched) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{r['speedup_of_search_path']}x / {r.get('speedup_of_search_path_batched', '')}x" if "speedup_of_search_path" in r else ""
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['success_rate']:.3f} | {r['mean_iou']:.3f} | {r['auc']:.3f} | {r['ms_per_query']:.4g} | "
            f"{r.get('ms_per_query_batched', '')} | {r['windows_per_query']:g} | {r['n_pairs']} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def _plot_paths(searcher: RegionSearcher, pairs, path: Path) -> None:
    q = pairs.queries[:8].float() / 255
    r = pairs.references[:8].float() / 255
    with torch.inference_mode():
        windows = searcher.net(q.to(searcher.device), r.to(searcher.device)).windows.cpu()
    fig = plot_search_paths(q, r, pairs.boxes[:8], windows)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _save_success_curves(curves, path: Path, title: str) -> None:
    fig = plot_success_curves(curves, IOU_THRESHOLDS, title=title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _save_success_per_step(per_step, path: Path) -> None:
    fig = plot_success_per_step(per_step)
    fig.savefig(path, dpi=90)
    plt.close(fig)


SPEED_TARGETS = {"mtm": 40.0, "bbs": 40.0}  # the search path at least this many times faster
NCC_WITHIN = 20.0  # ... and at most this many times slower than NCC


def _untrained_net(dataset: str, overrides: list[str], seed: int):
    """The dataset's experiment network with fresh weights: the search's cost does not depend on
    the weights (fixed steps, fixed shapes, no data-dependent branches)."""
    cfg = compose(config_name="train", overrides=[f"experiment=regionsearch/{dataset}", *overrides])
    torch.manual_seed(seed)
    return hydra.utils.instantiate(cfg.model.net)


def speed_ratios(rows: list[dict]) -> list[dict]:
    """Per dataset: how many times faster the search path is than MTM / BBS and how many times
    slower than NCC, at batch 1 (like for like) and batched, against the issue's targets."""
    verdicts = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        of = {r["method"]: r for r in rows if r["dataset"] == dataset}
        ours = of.get("search_path")
        if ours is None:
            continue
        verdict = {"dataset": dataset}
        for mode, ms in (("batch1", ours["ms_per_query"]), ("batched", ours["ms_per_query_batched"])):
            for method, target in SPEED_TARGETS.items():
                if method in of:
                    ratio = of[method]["ms_per_query"] / ms
                    verdict[f"{method}_speedup_{mode}"] = round(ratio, 2)
                    verdict[f"{method}_target_met_{mode}"] = bool(ratio >= target)
            if "ncc" in of:
                ratio = ms / of["ncc"]["ms_per_query"]
                verdict[f"ncc_slowdown_{mode}"] = round(ratio, 2)
                verdict[f"ncc_target_met_{mode}"] = bool(ratio <= NCC_WITHIN)
        verdicts.append(verdict)
    return verdicts


def speed_markdown(rows: list[dict], verdicts: list[dict], device: str) -> str:
    of = {(r["dataset"], r["method"]): r for r in rows}
    lines = [
        "# Region search: speed",
        "",
        f"Device: {device}. ms per query on the same test pairs: the search path at batch 1 eager and compiled ahead of time",
        "(torch.export + AOTInductor), and batched (compiled where compiling worked); the exhaustive baselines answer one query at a time.",
        "Targets: >= 40x faster than MTM and BBS, within 20x of NCC (ratios use the compiled times, eager when compiling failed).",
        "",
        "| dataset | weights | search path eager (b1) | compiled (b1) | batched | NCC | MTM | BBS | vs MTM (b1 / batched) | vs BBS (b1 / batched) | ours / NCC (b1 / batched) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(dataset, method):
        value = of.get((dataset, method), {}).get("ms_per_query")
        return "" if value is None else f"{value:.3g}"

    def ratio(verdict, method, mode):
        kind = "slowdown" if method == "ncc" else "speedup"
        if f"{method}_{kind}_{mode}" not in verdict:
            return ""
        return f"{verdict[f'{method}_{kind}_{mode}']}x {'✓' if verdict[f'{method}_target_met_{mode}'] else '✗'}"

    for verdict in verdicts:
        dataset = verdict["dataset"]
        ours = of[(dataset, "search_path")]
        compiled = f"{ours['ms_per_query']:.3g}" if ours.get("compiled") else ""
        cells = [f"{ratio(verdict, method, 'batch1')} / {ratio(verdict, method, 'batched')}" for method in ("mtm", "bbs", "ncc")]
        lines.append(
            f"| {DATASET_TITLES.get(dataset, dataset)} | {'untrained' if ours.get('weights') == 'untrained' else 'trained'} | {ours['ms_per_query_eager']:.3g} | {compiled} | "
            f"{ours['ms_per_query_batched']:.3g} | {ms(dataset, 'ncc')} | {ms(dataset, 'mtm')} | {ms(dataset, 'bbs')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _plot_speed(rows: list[dict], path: Path) -> None:
    fig = plot_speed(rows, DATASET_TITLES)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_speed_suite(
    output_dir: str,
    datasets: list[str],
    quick: bool = False,
    n_test: int = 1000,
    baselines: dict | None = None,
    checkpoints: dict | None = None,
    base_overrides: list[str] | None = None,
    train_overrides: dict | None = None,
    quick_overrides: list[str] | None = None,
    batch_sizes: tuple[int, ...] = (1, 256),
    timing_repeats: int = 5,
    device: str = "auto",
    publish_dir: str | None = None,
    num_threads: int | None = None,
    compile: bool = True,
    speed_baselines: tuple[str, ...] = ("ncc", "mtm", "bbs"),
    timing_pairs: int = 200,
    seed: int = 12345,
) -> list[dict]:
    """The speed half of the region-search table on its own, in minutes: the search path (a
    trained checkpoint when ``checkpoints[dataset]`` is given, else the experiment's network with
    fresh weights, which costs the same) eager and compiled, and the exhaustive baselines, on the
    same test pairs in one run. Writes ``regionsearch_speed.{json,md}`` and a bar plot; success
    rates come from the main suite."""
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    device_label = device_name(torch_device)
    rows: list[dict] = []
    for dataset in datasets:
        log.info("== %s (speed)", dataset)
        overrides = dataset_overrides(dataset, n_test, base_overrides, train_overrides, quick, quick_overrides)
        checkpoint = (checkpoints or {}).get(dataset)
        net = RegionSearcher.from_checkpoint(checkpoint).net if checkpoint else _untrained_net(dataset, overrides, seed)
        pairs = load_splits(dataset, overrides)["test"]
        timings = search_path_timings(net, torch_device, pairs.queries.float() / 255, pairs.references.float() / 255, batch_sizes, timing_repeats, compile)
        ours = {"dataset": dataset, "method": "search_path", "windows_per_query": net.steps, "device": device_label, "weights": str(checkpoint) if checkpoint else "untrained", **timings}
        rows.append(ours)
        for name in speed_baselines:
            settings, cap = baseline_settings(((baselines or {}).get(dataset) or {}).get(name), len(pairs), quick, timing_pairs)
            result = evaluate_matcher(name, get_baseline(name), pairs, np.arange(cap), **settings)
            rows.append({"dataset": dataset, "method": name, "ms_per_query": round(result["ms_per_query"], 4), "windows_per_query": result["windows_per_query"], "n_pairs": int(cap), "device": "CPU"})
            log.info("%s %s: %.4g ms", dataset, name, result["ms_per_query"])
    verdicts = speed_ratios(rows)
    result = {"rows": rows, "verdicts": verdicts}
    (output / "regionsearch_speed.json").write_text(json.dumps(result, indent=2))
    (output / "regionsearch_speed.md").write_text(speed_markdown(rows, verdicts, device_label))
    _plot_speed(rows, output / "regionsearch_speed.png")
    publish_files(output, publish_dir, ["regionsearch_speed.json", "regionsearch_speed.md", "regionsearch_speed.png"])
    print((output / "regionsearch_speed.md").read_text())
    return rows
