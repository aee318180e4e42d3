"""The patch-evaluation benchmark: HPatches' three tasks for SIFT on real patches, computed by
our vectorised evaluator and by the straight port of hpatches-benchmark's logic, side by side.

The patch set is generated from the real sequences of the data root (``v_churchill``,
``graf``) plus scikit-image photos under random homographies, in the HPatches layout with
easy / hard / tough frame jitter (``descriptors.data.real.portable.build_real_hpatches``); with
``hpatches_root`` set, the official release is used instead. Writes ``patch_eval.json``
(rows), ``patch_eval.md`` and plots (verification ROC, matching AP per image pair) under the
run's output dir, and copies them to ``publish_dir`` when set.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.suite import prepare_suite, publish_files
from core.timing import device_name
from descriptors import evaluate as E
from descriptors.data import hpatches as H
from descriptors.data.brown import load_subset
from descriptors.data.real.portable import build_real_brown, build_real_hpatches
from descriptors.evaluate import fpr_at_recall
from descriptors.plots import plot_roc
from descriptors.sift import sift_describe

log = logging.getLogger(__name__)

DESCRIPTORS = {
    "sift": lambda patches: sift_describe(patches),
    "rootsift": lambda patches: sift_describe(patches, root=True),
}
HEADLINE = ("verification_map", "verification_auc", "matching_map_iv_mean", "matching_map_all_sequences", "retrieval_map")


def run_suite(
    output_dir: str,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    quick: bool = False,
    descriptors: tuple[str, ...] = ("sift",),
    sequences: tuple[str, ...] = ("v_churchill", "graf"),
    n_synthetic: int = 6,
    hpatches_root: str | None = None,
    tasks_dir: str | None = None,
    split: str = "full",
    list_sizes: dict | None = None,
    quick_list_sizes: dict | None = None,
    quick_synthetic: int = 2,
    run_official: bool = True,
    brown_real: dict | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    publish_dir: str | None = None,
) -> list[dict]:
    output, torch_device = prepare_suite(output_dir, device, num_threads)
    cache = Path(cache_dir) if cache_dir else output / "cache"
    if hpatches_root:
        release, source = Path(hpatches_root), "official HPatches release"
    else:
        release = build_real_hpatches(data_dir, cache, sequences=tuple(sequences), n_synthetic=quick_synthetic if quick else n_synthetic)
        source = "generated from real sequences (" + ", ".join(sequences) + f") + {quick_synthetic if quick else n_synthetic} photos under random homographies"
    patch_sets = H.load_hpatches(release, split)
    sizes = dict((quick_list_sizes if quick else list_sizes) or {})
    log.info("patch set: %d sequences, %d reference patches (%s)", len(patch_sets), sum(len(s["ref"]) for s in patch_sets.values()), source)
    start = time.perf_counter()
    verification_pairs, retrieval_lists = H.task_lists(patch_sets, split, tasks_dir, cache, **sizes)
    lists_seconds = time.perf_counter() - start
    lists_dir = Path(tasks_dir) if tasks_dir else H.task_lists_cache_dir(patch_sets, split, cache, **sizes)
    reader_times = time_list_readers(lists_dir, split)

    rows: list[dict] = []
    roc_curves, per_pair = {}, {}
    device_label = device_name(torch_device)
    for name in descriptors:
        start = time.perf_counter()
        descr = E.describe_sequences(patch_sets, DESCRIPTORS[name])
        describe_seconds = time.perf_counter() - start
        runs = {}
        for implementation in ("fast", "official") if run_official else ("fast",):
            summary, raw = E.evaluate_hpatches(
                descr, sequences=patch_sets, split=split, tasks_dir=tasks_dir, cache_dir=cache, implementation=implementation,
                device=torch_device if implementation == "fast" else "cpu", lists=(verification_pairs, retrieval_lists),
            )
            runs[implementation] = (summary, raw)
            rows.append({
                "descriptor": name,
                "implementation": implementation,
                **{k: round(v, 6) for k, v in summary.items()},
                **{f"seconds_{task}": round(s, 4) for task, s in raw.seconds.items()},
                "seconds_total": round(sum(raw.seconds.values()), 4),
                "device": device_label if implementation == "fast" else "CPU (numpy/scipy loops)",
                "describe_seconds": round(describe_seconds, 3),
            })
            log.info("%s %s: %s", name, implementation, {k: rows[-1][k] for k in (*HEADLINE, "seconds_total")})
        if "official" in runs:
            fast_summary, fast_raw = runs["fast"]
            slow_summary, slow_raw = runs["official"]
            diff = max(abs(fast_summary[k] - slow_summary[k]) for k in fast_summary)
            diff = max(diff, float(np.abs(fast_raw.retrieval - slow_raw.retrieval).max()))
            speedups = {task: slow_raw.seconds[task] / max(fast_raw.seconds[task], 1e-9) for task in fast_raw.seconds}
            rows[-2]["max_abs_difference_vs_official"] = diff
            rows[-2].update({f"speedup_{task}": round(s, 1) for task, s in speedups.items()})
            rows[-2]["speedup_total"] = round(rows[-1]["seconds_total"] / max(rows[-2]["seconds_total"], 1e-9), 1)
        raw = runs["fast"][1]
        per_pair[name] = {seq: {t: [raw.matching[(seq, t, i)] for i in range(1, 6)] for t in H.LEVELS} for seq in patch_sets}
        for level in H.LEVELS:
            roc_curves[f"{name} {level} intra"] = E.verification_distances(descr, verification_pairs, level, "intra")

    counts = {
        "sequences": len(patch_sets),
        "reference_patches": int(sum(len(s["ref"]) for s in patch_sets.values())),
        "verification_pairs": len(verification_pairs.positives),
        "retrieval_queries": len(retrieval_lists.queries),
        "retrieval_distractors": len(retrieval_lists.distractors),
        "lists_seconds": round(lists_seconds, 2),
        **reader_times,
    }
    brown_rows = _brown_fpr95(data_dir, cache, descriptors, brown_real, output) if brown_real is not None else []
    report_path = release.parent / "report.json"
    generation = json.loads(report_path.read_text()) if report_path.is_file() else None
    result = {"source": source, "split": split, "quick": quick, "counts": counts, "rows": rows, "brown_fpr95": brown_rows, "matching_per_image_pair": per_pair, "generation": generation}
    (output / "patch_eval.json").write_text(json.dumps(result, indent=2))
    (output / "patch_eval.md").write_text(markdown(result))
    _plot_roc(roc_curves, output / "patch_eval_roc.png")
    _plot_per_pair(per_pair, output / "patch_eval_matching_per_pair.png")
    names = ["patch_eval.json", "patch_eval.md", "patch_eval_roc.png", "patch_eval_matching_per_pair.png"]
    publish_files(output, publish_dir, names + (["patch_eval_brown_roc.png"] if brown_rows else []))
    print((output / "patch_eval.md").read_text())
    return rows


def time_list_readers(folder: Path, split: str, repeats: int = 5) -> dict:
    """Seconds to read the five official task lists of ``folder`` with our reader and with
    ``pandas.read_csv`` (what the official code calls, when pandas is importable; it is not a
    dependency of this project): wall clock and process CPU time, each the best of
    ``repeats``, the two readers taking turns so that both see the same load."""
    names = [f"verif_{kind}_split-{split}.csv" for kind in ("pos", "neg_intra", "neg_inter")] + [f"retr_{kind}_split-{split}.csv" for kind in ("queries", "distractors")]
    readers = {"list_reader": lambda: (H.read_verification_pairs(folder, split), H.read_retrieval_lists(folder, split))}
    try:
        import pandas
    except ImportError:
        pandas = None
    else:
        readers["pandas_read_csv"] = lambda: [pandas.read_csv(folder / name) for name in names]
    wall = {name: [] for name in readers}
    cpu = {name: [] for name in readers}
    for _ in range(repeats):
        for name, read in readers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            read()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    out = {}
    for name in readers:
        out[f"{name}_seconds"] = round(min(wall[name]), 3)
        out[f"{name}_cpu_seconds"] = round(min(cpu[name]), 3)
    if pandas is None:
        out["pandas_read_csv_seconds"] = "pandas not installed"
    return out


def _brown_fpr95(data_dir, cache: Path, descriptors, settings: dict, output: Path) -> list[dict]:
    """FPR95 (HardNet's definition) of each descriptor on the m50 pairs of the held-out
    sequence of the real-data Brown set (descriptors.data.real.portable.build_real_brown)."""
    import matplotlib.pyplot as plt

    settings = dict(settings)
    root = build_real_brown(data_dir, cache, **settings)
    test_name = settings.get("test_sequence", "v_churchill")
    n_pairs = settings.get("n_test_pairs", 10000)
    subset = load_subset(root, test_name, cache)
    matches = subset.matches(f"m50_{n_pairs}_{n_pairs}_0.txt")
    rows, curves = [], {}
    for name in descriptors:
        start = time.perf_counter()
        descr = DESCRIPTORS[name](np.asarray(subset.patches))
        seconds = time.perf_counter() - start
        distances = np.linalg.norm(descr[matches[:, 0]] - descr[matches[:, 1]], axis=1)
        curves[name] = (distances, matches[:, 2])
        rows.append({"descriptor": name, "test": test_name, "pairs": int(len(matches)), "patches": int(len(subset)), "fpr95": round(fpr_at_recall(distances, matches[:, 2]), 6), "describe_seconds": round(seconds, 3)})
    fig = plot_roc(curves, title=f"Real Brown-layout pairs ({test_name}, held out)")
    fig.savefig(output / "patch_eval_brown_roc.png", dpi=90)
    plt.close(fig)
    return rows


def _reader_seconds(counts: dict, reader: str) -> str:
    wall, cpu = counts.get(f"{reader}_seconds", float("nan")), counts.get(f"{reader}_cpu_seconds")
    return f"{wall} s" if cpu is None else f"{wall} s / {cpu} s CPU"


def markdown(result: dict) -> str:
    rows, counts = result["rows"], result["counts"]
    lines = [
        f"# HPatches tasks on real patches{' (QUICK smoke run: small lists)' if result['quick'] else ''}",
        "",
        f"Patch set: {result['source']}; split {result['split']}: {counts['sequences']} sequences, "
        f"{counts['reference_patches']} reference patches, {counts['verification_pairs']} verification pairs per list, "
        f"{counts['retrieval_queries']} retrieval queries, {counts['retrieval_distractors']} distractors.",
        "mAP in % (verification: imbalanced AP and balanced AUC over e/h/t x intra/inter; matching: the mean of the",
        "i_/v_ averages (i/v mean, the article's grouping) and the mean over all sequences (results.py on master);",
        "retrieval: mean over pool sizes and e/h/t), as hpatches-benchmark's Python code.",
        f"Reading the task lists: {_reader_seconds(counts, 'list_reader')} with our reader, "
        + (f"{_reader_seconds(counts, 'pandas_read_csv')} with pandas.read_csv" if isinstance(pandas_seconds := counts.get("pandas_read_csv_seconds"), (int, float)) else f"pandas.read_csv: {pandas_seconds or 'not measured'}")
        + " (wall clock / CPU time, best of 5, the readers taking turns).",
        "",
        "| descriptor | implementation | verification mAP | verification AUC | matching mAP (i/v mean) | matching mAP (all sequences) | retrieval mAP | seconds (verif / match / retr) | total s | speed-up | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seconds = " / ".join(f"{r.get(f'seconds_{t}', float('nan')):.3g}" for t in ("verification", "matching", "retrieval"))
        speedup = f"{r['speedup_total']}x" if "speedup_total" in r else ""
        lines.append(
            f"| {r['descriptor']} | {r['implementation']} | {100 * r['verification_map']:.2f} | {100 * r['verification_auc']:.2f} | "
            f"{100 * r['matching_map_iv_mean']:.2f} | {100 * r['matching_map_all_sequences']:.2f} | {100 * r['retrieval_map']:.2f} | {seconds} | {r['seconds_total']:.3g} | {speedup} | {r['device']} |"
        )
    fast = [r for r in rows if "max_abs_difference_vs_official" in r]
    for r in fast:
        lines += ["", f"{r['descriptor']}: largest difference fast vs official over all numbers: {r['max_abs_difference_vs_official']:.2e}; "
                  f"speed-up per task: verification {r.get('speedup_verification')}x, matching {r.get('speedup_matching')}x, retrieval {r.get('speedup_retrieval')}x."]
    if result.get("brown_fpr95"):
        lines += ["", "FPR95 (%) on the real Brown-layout test pairs (m50 file of the held-out sequence, half matching):", "",
                  "| descriptor | test sequence | pairs | patches | FPR95 |", "|---|---|---|---|---|"]
        for r in result["brown_fpr95"]:
            lines.append(f"| {r['descriptor']} | {r['test']} | {r['pairs']} | {r['patches']} | {100 * r['fpr95']:.2f} |")
    lines += ["", "Matching AP (%) per image pair (ref vs image i+1), fast evaluator:", ""]
    for name, per_seq in result["matching_per_image_pair"].items():
        lines += [f"| {name} | level | 1-2 | 1-3 | 1-4 | 1-5 | 1-6 |", "|---|---|---|---|---|---|---|"]
        for seq, levels in per_seq.items():
            for level, values in levels.items():
                lines.append(f"| {seq} | {level} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")
        lines.append("")
    generation = result.get("generation")
    if generation:
        lines += ["Generation (per image pair: keypoints of image 1 inside image n, kept after the NCC check, median NCC; median frame overlap per noise level):", ""]
        lines += ["| sequence | patches | overlap e / h / t | pairs (inside / kept / median NCC) |", "|---|---|---|---|"]
        for seq, info in generation["sequences"].items():
            overlap = " / ".join(f"{info['median_overlap'][t]:.2f}" for t in H.LEVELS)
            pairs = "; ".join(f"{p['pair']}: {p['inside']}/{p['kept']}/{p['median_ncc']:.2f}" for p in info["pairs"])
            lines.append(f"| {seq} | {info['patches']} | {overlap} | {pairs} |")
    return "\n".join(lines) + "\n"


def _plot_roc(curves: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = plot_roc(curves, title="HPatches verification (intra-sequence negatives)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_per_pair(per_pair: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"e": "-", "h": "--", "t": ":"}
    for name, per_seq in per_pair.items():
        for seq, levels in per_seq.items():
            if "synth" in seq:
                continue
            for level, values in levels.items():
                ax.plot(range(2, 7), values, styles[level], marker="o", label=f"{name} {seq} {level}")
    ax.set_xlabel("image n (matched against image 1)")
    ax.set_ylabel("matching AP")
    ax.set_xticks(range(2, 7))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Matching AP per image pair (real sequences)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
