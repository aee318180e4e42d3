"""The descriptors suite's tables and figures: the seed's paper numbers, the markdown table
with its notes, the installation groups, the selection-set agreement and the plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

#: The seed's FPR95 table (%), columns train -> test; SIFT and DeepDesc give one number per
#: test set (LIB, ND, YOS), placed in the first column of each test set. HardNet(+): the
#: post-NIPS numbers (reference notes, not in the seed).
PAPER_COLUMNS = ("ND→LIB", "YOS→LIB", "LIB→ND", "YOS→ND", "LIB→YOS", "ND→YOS", "mean")
PAPER = {
    "sift": ("SIFT", 128, (29.84, None, 22.53, None, 27.29, None, 26.55)),
    "rootsift": ("RootSIFT", 128, (None,) * 7),
    # published weights, evaluated as released (no numbers of the seed's table)
    "mkd": ("MKD concat pcawt (published, liberty)", 128, (None,) * 7),
    "tfeat_liberty": ("TFeat (published, liberty)", 128, (None,) * 7),
    "tfeat_notredame": ("TFeat (published, notredame)", 128, (None,) * 7),
    "tfeat_yosemite": ("TFeat (published, yosemite)", 128, (None,) * 7),
    "hardtfeat": ("HardTFeat (published)", 128, (None,) * 7),
    "matchnet": ("MatchNet", 4096, (6.9, 10.77, 3.87, 5.67, 10.88, 8.39, 7.74)),
    "deepcompare_2ch2stream": ("DeepCompare 2ch-2stream +", 256, (4.85, 7.20, 1.90, 2.11, 5.00, 4.10, 4.19)),
    "deepcompare_2chdeep": ("DeepCompare 2ch-deep +", 256, (4.55, 7.40, 2.01, 2.52, 4.75, 4.38, 4.26)),
    "gloss_snet": ("SNet-GLoss +", 256, (6.39, 8.43, 1.84, 2.83, 6.61, 5.57, 5.27)),
    "gloss_cs_snet": ("CS SNet-GLoss +", 384, (3.69, 4.91, 0.77, 1.14, 3.09, 2.67, 2.71)),
    "tnet_tgloss": ("TNet-TGLoss +", 256, (9.91, 13.45, 3.91, 5.43, 10.65, 9.47, 8.8)),
    "tnet_tloss": ("TNet-TLoss +", 256, (10.77, 13.90, 4.47, 5.58, 11.82, 10.96, 9.58)),
    "tfeat": ("TFeat", 256, (8.13, 9.65, 3.71, 4.23, 8.99, 7.21, 6.98)),
    # fine-tuned here from published weights (experiment=descriptors/tfeat_liberty_finetune)
    "tfeat_liberty_finetune": ("TFeat, fine-tuned from TFeat-liberty", 128, (None,) * 7),
    "deepdesc": ("DeepDesc", 128, (10.9, None, 4.40, None, 5.69, None, 6.99)),
    "l2net": ("L2-Net", 128, (3.64, 5.29, 1.15, 1.62, 4.43, 3.30, 3.23)),
    "l2net_jittered": ("L2-Net, jittered frames (h)", 128, (None,) * 7),  # experiment=descriptors/l2net_jittered
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
#: the hand-crafted rows (not trained)
BASELINES = ("sift", "rootsift")
#: rows of published weights (not trained here: neither learned rows of this run nor selected on graf)
PUBLISHED_METHODS = ("mkd", "tfeat_liberty", "tfeat_notredame", "tfeat_yosemite", "hardtfeat")


#: row entries averaged over seeds (the others are the first seed's)
SEED_MEANS = ("fpr95", "val_fpr95", "val_lookalike_fpr95", "train_fpr95", "hpatches_verification", "hpatches_matching", "hpatches_retrieval",
              "patches_per_s", "kornia_patches_per_s", "speed_ratio_vs_kornia", "seconds_per_epoch", "train_seconds_total")
#: training times: means over the seeds that have them
SEED_TIMES = ("seconds_per_epoch", "train_seconds_total")


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
        by_sequence = [r.get("hpatches_matching_by_sequence") for r in runs]
        if all(by_sequence):
            merged["hpatches_matching_by_sequence"] = {s: round(statistics.mean(d[s] for d in by_sequence), 6) for s in by_sequence[0]}
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


def _trained_here(row: dict) -> bool:
    return row["method"] not in BASELINES and row["method"] not in PUBLISHED_METHODS and not row.get("published")


def table_order(row: dict) -> tuple[int, bool]:
    """A full run's row order: the seed's (:data:`PAPER`), each binary row right after its float
    method, unknown methods last (a partial re-run's published rows keep it)."""
    method = row["method"]
    base = FLOAT_OF.get(method, method)
    return (list(PAPER).index(base) if base in PAPER else len(PAPER), base != method)


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
    """The seed's table (paper FPR95 per split) with our measured columns beside it; with
    ``info["loo_means"]`` (:func:`loo_means`) a column of the leave-one-out protocol's means."""
    loo = info.get("loo_means") or {}
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
        "| method | dim | " + " | ".join(f"paper {c}" for c in PAPER_COLUMNS) + " | **ours FPR95** | " + ("leave-one-out mean | " if loo else "")
        + "val FPR95 | val look-alike FPR95 | train-pairs FPR95 | HPatches verif / match / retr | patches/s | kornia patches/s (ratio) | s / epoch (items) |",
        "|---|---|" + "---|" * len(PAPER_COLUMNS) + "---|" * (8 + bool(loo)),
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
        if loo:
            mean, folds = loo.get(r["method"], (None, 0))
            ours += f" | {_pct(mean)}{f' ({folds} folds)' if mean is not None and folds < info.get('loo_folds', folds) else ''}"
        lines.append(f"| {title} | {dim} | " + " | ".join(cells) + f" | {ours} | {_pct(r.get('val_fpr95'))} | {_pct(r.get('val_lookalike_fpr95'))} | {_pct(r.get('train_fpr95'))} | {hp} | {speed} | {kornia} | {epoch} |")
    learned = [r for r in rows if _trained_here(r)]
    sift = next((r for r in rows if r["method"] == "sift"), None)
    published = [r for r in rows if r["method"] in PUBLISHED_METHODS or r.get("published")]
    if sift and published:
        beat = [r["method"] for r in published if r["fpr95"] < sift["fpr95"]]
        lines += ["", f"Published weights (evaluated as released, not trained here) below SIFT's FPR95: {len(beat)} of {len(published)}"
                  + (f" ({', '.join(beat)})." if beat else ".")]
    if sift and learned:
        beat = [r["method"] for r in learned if r["fpr95"] < sift["fpr95"]]
        lines += ["", f"Learned methods below SIFT's FPR95 ({_pct(sift['fpr95'])}%): {len(beat)} of {len(learned)}"
                  + (f" ({', '.join(beat)})." if beat else ".")]
        fit = selection_agreement(rows, "train_fpr95")
        if fit and "below_sift_val" in fit:
            lines += ["", f"On pairs of the training set `{info['train']}` (`train-pairs FPR95`: {sift.get('train_pairs')} pairs, half matching, "
                      f"negatives within one photo; `descriptors.data.samplers.training_pairs`), {fit['below_sift_val']} of the {fit['rows']} "
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
    lines += matching_by_sequence_table(rows, val)
    if any(r.get("val_lookalike_fpr95") is not None for r in rows):
        lines += ["", f"`val look-alike FPR95`: the `{val}` val pairs with every negative's second patch replaced by a patch "
                  "of one of the first patch's point's look-alike points (descriptors.data.samplers.lookalike_match_pairs: the 8 "
                  "nearest other points by NCC of the 16x16 reference patches, overlapping keypoints skipped), the same positives."]
    return "\n".join(lines) + "\n"


def loo_means(path: str | None) -> tuple[dict[str, tuple[float, int]], int]:
    """``({method: (mean FPR95, folds)}, number of folds)`` of a published ``descriptors_loo.json``
    (the leave-one-out protocol's table), or ``({}, 0)`` without one."""
    if not path or not Path(path).is_file():
        return {}, 0
    table = json.loads(Path(path).read_text())
    return {r["method"]: (r["mean_fpr95"], r["folds"]) for r in table["rows"] if r.get("mean_fpr95") is not None}, len(table["folds"])


def matching_by_sequence_table(rows: list[dict], val: str) -> list[str]:
    """HPatches-layout matching mAP (%) per sequence of the rows that record it, and their mean
    without the validation sequence (``v_<val>``: what a choice made on it cannot have fitted)."""
    measured = [r for r in rows if r.get("hpatches_matching_by_sequence")]
    if not measured:
        return []
    sequences = sorted({s for r in measured for s in r["hpatches_matching_by_sequence"]})
    held = f"v_{val}"
    others = [s for s in sequences if s != held]
    with_mean = held in sequences and bool(others)
    header = [*(f"{s} (validation)" if s == held else s for s in sequences), *([f"mean without {held}"] if with_mean else [])]
    lines = ["", "HPatches-layout matching mAP (%) per sequence (rows measured since it is recorded):", "",
             "| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for r in measured:
        by_sequence = r["hpatches_matching_by_sequence"]
        cells = [_pct(by_sequence.get(s)) for s in sequences]
        if with_mean:
            cells.append(_pct(statistics.mean(by_sequence[s] for s in others)) if all(s in by_sequence for s in others) else "")
        lines.append(f"| {PAPER.get(r['method'], (r['method'],))[0]} | " + " | ".join(cells) + " |")
    return lines


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
    learned = [r for r in rows if _trained_here(r) and r.get(key) is not None]
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
    shown = [r for r in rows if r.get(key) is not None]
    if not shown:
        return
    figure, axis = plt.subplots(figsize=(7, 5.5))
    for r in shown:
        x, y = 100 * r[key], 100 * r["fpr95"]
        baseline = not _trained_here(r)
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
