"""The leave-one-sequence-out protocol of the patch-descriptor benchmark.

Over the seven real "sequences" of the data root (graf, wall, bark, bikes, leuven, v_churchill
and the Dinosaur's point tracks; :mod:`descriptors.data.real.protocols`): one fold per sequence,
trained on the others but its validation sequence (graf, or wall in graf's fold), validated on
that one, tested on the one left out. Each fold is one run of the descriptor suite
(:func:`benchmarks.suites.descriptors.run_suite`: SIFT, RootSIFT, the published weights and every
method trained with its budget) on that fold's real Brown-layout set, without the HPatches columns;
this suite keeps every fold's FPR95 and reports their mean.

Writes ``descriptors_loo.json``, ``descriptors_loo.md`` and ``descriptors_loo.png`` (FPR95 per
fold) under the run's output dir (each fold's own tables under ``fold_<test>/``); copies them to
``publish_dir`` when set. ``merge_published``: the rows of the published ``descriptors_loo.json``
whose methods this run did not run are kept beside the new ones (e.g. methods added one run at a
time); each row names the run it comes from (its id, seed and device).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

from benchmarks.suite import publish_files
from benchmarks.suites import descriptors as descriptor_suite
from descriptors.data.real.protocols import (
    REAL_SEQUENCES,
    VAL_PREFERENCE,
    Fold,
    leave_one_out_folds,
)

log = logging.getLogger(__name__)


def _listed(values) -> str:
    return "[" + ",".join(values) + "]"


def fold_overrides(fold: Fold, track_sets: set[str]) -> list[str]:
    """The ``data=brown_real`` overrides of one fold: its training sequences and track sets,
    its validation and test subsets."""
    return [
        f"data.real_data.train_sequences={_listed(n for n in fold.train if n not in track_sets)}",
        f"++data.real_data.track_sets={_listed(n for n in fold.train if n in track_sets)}",
        f"data.real_data.val_sequences=[{fold.val}]",
        f"data.real_data.test_sequence={fold.test}",
        f"data.val_subset={fold.val}",
        f"data.test_subset={fold.test}",
    ]


def combine_folds(folds: list[Fold], fold_rows: dict[str, list[dict]]) -> list[dict]:
    """One row per method: FPR95 (and graf / wall validation FPR95) per fold, the mean over the
    folds the method has, and how many folds it beats SIFT on; the seed spread of each fold when
    the folds were run with several seeds."""
    methods: list[str] = []
    for rows in fold_rows.values():
        methods += [r["method"] for r in rows if r["method"] not in methods]
    sift = {test: next((r["fpr95"] for r in rows if r["method"] == "sift"), None) for test, rows in fold_rows.items()}
    combined = []
    for method in methods:
        row: dict = {"method": method, "fpr95": {}, "val_fpr95": {}, "fpr95_std": {}, "train": None, "published": False}
        for fold in folds:
            found = next((r for r in fold_rows.get(fold.test, []) if r["method"] == method), None)
            if found is None:
                continue
            row["train"], row["published"] = found.get("train"), "published" in found
            row["run"], row["device"] = found.get("run"), found.get("device")
            row["fpr95"][fold.test] = found["fpr95"]
            row["val_fpr95"][fold.test] = found.get("val_fpr95")
            if "fpr95_std" in found:
                row["fpr95_std"][fold.test] = found["fpr95_std"]
        values = list(row["fpr95"].values())
        row["folds"] = len(values)
        row["mean_fpr95"] = round(statistics.mean(values), 6) if values else None
        row["beats_sift"] = sum(1 for test, v in row["fpr95"].items() if sift.get(test) is not None and v < sift[test])
        combined.append(row)
    return sorted(combined, key=lambda r: (r["folds"] < len(folds), r["mean_fpr95"] if r["mean_fpr95"] is not None else float("inf")))


def merge_fold_rows(published: dict[str, list[dict]], new: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per fold: the published rows of the methods that ``new`` has in none of its folds, then
    ``new``'s rows. A method that ran again loses every published row, also in the folds it did not
    run this time (one row never mixes two runs)."""
    rerun = {r["method"] for rows in new.values() for r in rows}
    merged = {test: [r for r in rows if r["method"] not in rerun] for test, rows in published.items()}
    for test, rows in new.items():
        merged[test] = [*merged.get(test, []), *rows]
    return {test: rows for test, rows in merged.items() if rows}


def published_loo(publish_dir: str | None, folds: list[Fold], quick: bool) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The fold rows and runs of ``<publish_dir>/descriptors_loo.json``, each row tagged with its run
    (({}, {}) when there is none). Refused when its folds are defined otherwise or its quick flag differs."""
    path = Path(publish_dir) / "descriptors_loo.json" if publish_dir else None
    if path is None:
        raise ValueError("benchmark.merge_published needs benchmark.publish_dir")
    if not path.is_file():
        log.warning("merge_published: no %s, nothing to merge", path)
        return {}, {}
    old = json.loads(path.read_text())
    defined = {f.test: {"val": f.val, "train": list(f.train)} for f in folds}
    for fold in old["folds"]:
        if defined.get(fold["test"], {"val": fold["val"], "train": fold["train"]}) != {"val": fold["val"], "train": fold["train"]}:
            raise ValueError(f"merge_published: the published fold {fold['test']} is defined otherwise: {fold}")
    if bool(old.get("quick")) != bool(quick):
        raise ValueError(f"merge_published: the published table has quick={old.get('quick')}, this run quick={quick}")
    runs = old.get("runs") or {_legacy_run_id(old): {"seed": old.get("seed"), "seeds": old.get("seeds"), "device": old.get("device")}}
    only = next(iter(runs)) if len(runs) == 1 else None
    fold_rows = {test: [{**r, "run": r.get("run") or only} for r in rows] for test, rows in old["fold_rows"].items()}
    return fold_rows, runs


def _legacy_run_id(table: dict) -> str:
    """The run dir of a table written before runs were recorded, read off its checkpoint paths."""
    for rows in table.get("fold_rows", {}).values():
        for r in rows:
            parts = Path(r.get("checkpoint") or "").parts
            if "runs" in parts[:-1]:
                return parts[parts.index("runs") + 1]
    return "earlier run"


def markdown(rows: list[dict], folds: list[Fold], info: dict) -> str:
    tests = [fold.test for fold in folds]
    runs = info.get("runs") or {}
    labels = {run: chr(ord("A") + i) for i, run in enumerate(runs)}
    lines = [
        f"# Leave-one-sequence-out FPR95 (%){' (QUICK smoke run)' if info['quick'] else ''}",
        "",
        "One fold per real sequence: trained on the others except the fold's validation sequence, "
        "validated there (every choice), tested on the one left out; m50 pairs of the held-out sequence, half matching. "
        "Folds (test / validation): " + ", ".join(f"{f.test} / {f.val}" for f in folds) + ". "
        + (f"Device: {info['device']}. Seeds: {info['seeds'] or 'one run'}. " if not runs else "Each row's run (seed, device): column `run`, legend below. ")
        + "Lower is better; published rows are evaluated, never trained; `beats SIFT` counts the folds.",
        "",
        "| method | trained on | " + " | ".join(tests) + " | mean | beats SIFT | main protocol (photos → v_churchill) | run |",
        "|---|---|" + "---|" * len(tests) + "---|---|---|---|",
    ]
    main = info.get("main_protocol") or {}
    for r in rows:
        cells = []
        for test in tests:
            value = r["fpr95"].get(test)
            spread = r["fpr95_std"].get(test)
            cells.append("" if value is None else f"{100 * value:.2f}" + (f" ± {100 * spread:.2f}" if spread is not None else ""))
        mean = "" if r["mean_fpr95"] is None else f"{100 * r['mean_fpr95']:.2f}" + ("" if r["folds"] == len(tests) else f" ({r['folds']} folds)")
        trained_on = r["train"] if r["published"] else ("" if r["train"] is None else "the fold's training sequences")
        lines.append(f"| {r['method']} | {trained_on} | " + " | ".join(cells) + f" | {mean} | {r['beats_sift']}/{r['folds']} | {_pct(main.get(r['method']))} | {labels.get(r.get('run'), '')} |")
    order = [r["method"] for r in rows if r["mean_fpr95"] is not None]
    lines += ["", "Order by mean FPR95 (best first): " + " < ".join(order) + "."]
    if runs:
        lines += ["", "Runs:"]
        for run, label in labels.items():
            members = [r for r in rows if r.get("run") == run]
            devices = sorted({r["device"] for r in members if r.get("device")})
            seed = runs[run].get("seeds") or runs[run].get("seed")
            lines.append(f"- {label}: `{run}`, seed {seed if seed is not None else 'not recorded (the config default)'}, "
                         f"{'; '.join(devices) or runs[run].get('device')}: {', '.join(r['method'] for r in members)}.")
    if main:
        lines += ["", "Main protocol column: the published `descriptors.json` of `make benchmark-descriptors` (trained on photos, "
                  "graf validation, v_churchill test; other runs, other budgets' seeds), for comparison."]
    return "\n".join(lines) + "\n"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def main_protocol_fpr95(publish_dir: str | None) -> dict[str, float]:
    """FPR95 per method of the published main-protocol table (``descriptors.json`` in
    ``publish_dir``), or {} when there is none."""
    path = Path(publish_dir) / "descriptors.json" if publish_dir else None
    if path is None or not path.is_file():
        return {}
    return {r["method"]: r["fpr95"] for r in json.loads(path.read_text()) if r.get("fpr95") is not None}


def _plot(rows: list[dict], folds: list[Fold], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = [fold.test for fold in folds]
    fig, ax = plt.subplots(figsize=(1.2 * len(tests) + 4, 4.5))
    for r in rows:
        xs = [i for i, t in enumerate(tests) if t in r["fpr95"]]
        ax.plot(xs, [100 * r["fpr95"][tests[i]] for i in xs], marker="o", label=r["method"],
                linestyle="--" if r["method"] in ("sift", "rootsift") else "-")
    ax.set_xticks(range(len(tests)), tests)
    ax.set_ylabel("FPR95 (%) on the held-out sequence")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reused_fold_rows(path: Path, fold: Fold, suite_arguments: dict) -> list[dict]:
    """The rows of an earlier run's fold table, refused (one line naming the file) when they test
    another sequence or hold methods this run does not run."""
    rows = json.loads(path.read_text())
    expected = {*suite_arguments.get("methods", []), *suite_arguments.get("baselines", []), *suite_arguments.get("published", [])}
    for row in rows:
        if row.get("test") != fold.test or (row["method"] not in expected and row.get("derived_from") not in expected):
            raise ValueError(f"benchmark.reuse_folds_from: {path} holds {row['method']!r} tested on {row.get('test')!r}, "
                             f"not a row of this run (methods {sorted(expected)}, fold {fold.test})")
    return rows


def run_suite(
    output_dir: str,
    sequences: list[str] = REAL_SEQUENCES,
    val_preference: list[str] = VAL_PREFERENCE,
    track_sets: list[str] = ("vgg_dinosaur",),
    quick: bool = False,
    quick_sequences: list[str] | None = None,
    quick_methods: list[str] | None = None,
    only_folds: list[str] | None = None,
    data_overrides: list[str] | None = None,
    publish_dir: str | None = None,
    merge_published: bool = False,
    seed: int | None = None,
    reuse_folds_from: list[str] | None = None,
    **suite_arguments,
) -> list[dict]:
    """Every fold through :func:`benchmarks.suites.descriptors.run_suite` (``suite_arguments``:
    its methods, baselines, published rows, budgets, seeds ...; the fold's data overrides are
    added to ``data_overrides``), then the per-fold table. ``quick``: the folds of
    ``quick_sequences`` only, training ``quick_methods``. ``only_folds``: run only the folds
    that test these sequences (the folds themselves still come from all of ``sequences``), e.g.
    more seeds for one fold. ``merge_published``: keep the published rows of every method this run
    does not run (:func:`merge_fold_rows`); ``seed``: the config's seed, recorded with the run.
    ``reuse_folds_from``: output folders of earlier runs of this suite with the same settings (one
    that was interrupted, or folds split over processes with ``only_folds``): a fold whose
    ``fold_<test>/descriptors.json`` one of them holds is read from there instead of run."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if quick and quick_methods is not None:
        suite_arguments["methods"] = list(quick_methods)
    folds = leave_one_out_folds(quick_sequences if quick and quick_sequences else sequences, val_preference)
    if only_folds is not None:
        unknown = sorted(set(only_folds) - {fold.test for fold in folds})
        if unknown:
            raise ValueError(f"benchmark.only_folds: {unknown} are not among the folds' test sequences {[f.test for f in folds]}")
        all_folds, folds = folds, [fold for fold in folds if fold.test in only_folds]
    else:
        all_folds = folds
    if merge_published:  # refuse a table of other folds before any training; read again at the end
        published_loo(publish_dir, all_folds, quick)
    kept, runs = {}, {}
    tracks = set(track_sets)
    fold_rows: dict[str, list[dict]] = {}
    reused: dict[str, str] = {}
    for number, fold in enumerate(folds, start=1):
        log.info("fold %d/%d: test %s, validation %s, train %s", number, len(folds), fold.test, fold.val, list(fold.train))
        tables = (Path(folder) / f"fold_{fold.test}" / "descriptors.json" for folder in reuse_folds_from or [])
        done = next((table for table in tables if table.is_file()), None)
        if done is not None:
            fold_rows[fold.test] = reused_fold_rows(done, fold, suite_arguments)
            reused[fold.test] = str(done.parent.parent)
        else:
            fold_rows[fold.test] = descriptor_suite.run_suite(
                output_dir=str(output / f"fold_{fold.test}"), quick=quick, publish_dir=None, score_hpatches=False,
                data_overrides=[*(data_overrides or []), *fold_overrides(fold, tracks)], **suite_arguments,
            )
        for row in fold_rows[fold.test]:
            row["run"] = output.name
    if merge_published:  # read now: a run of other methods may have published while this one trained
        kept, runs = published_loo(publish_dir, all_folds, quick)
    first = next(iter(fold_rows.values()), [])
    device = next((r["device"] for r in first if r.get("train") not in (None,) and r["method"] not in ("sift", "rootsift")), first[0]["device"] if first else "")
    runs = {**runs, output.name: {"seed": seed, "seeds": suite_arguments.get("seeds"), "device": device, **({"reused_folds": reused} if reused else {})}}
    fold_rows = merge_fold_rows(kept, fold_rows)
    folds = [fold for fold in all_folds if fold.test in fold_rows]
    rows = combine_folds(folds, fold_rows)
    runs = {run: about for run, about in runs.items() if any(r.get("run") == run for r in rows)}
    info = {"quick": quick, "device": device, "seed": seed, "seeds": suite_arguments.get("seeds"), "runs": runs,
            "main_protocol": main_protocol_fpr95(publish_dir)}
    result = {**info, "folds": [{"test": f.test, "val": f.val, "train": list(f.train)} for f in folds], "rows": rows,
              "fold_rows": fold_rows}
    (output / "descriptors_loo.json").write_text(json.dumps(result, indent=2))
    (output / "descriptors_loo.md").write_text(markdown(rows, folds, info))
    _plot(rows, folds, output / "descriptors_loo.png")
    publish_files(output, publish_dir, ["descriptors_loo.json", "descriptors_loo.md", "descriptors_loo.png"])
    print((output / "descriptors_loo.md").read_text())
    return rows
