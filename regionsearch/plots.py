"""Figures people look at: search paths, success curves, success vs steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().float().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def plot_search_paths(queries, references, truths, windows, max_pairs: int = 8):
    """A grid: each row shows the query, then the reference with the truth (green) and every window of the path."""
    n = min(max_pairs, queries.shape[0])
    steps = windows.shape[0]
    fig, axes = plt.subplots(n, 2, figsize=(5, 2.4 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 2.5]})
    colours = plt.cm.autumn(np.linspace(0, 1, steps))
    for row in range(n):
        cmap = "gray" if queries.shape[1] == 1 else None
        axes[row, 0].imshow(_to_image(queries[row]), cmap=cmap, vmin=0, vmax=1)
        axes[row, 0].set_title("query", fontsize=8)
        axes[row, 1].imshow(_to_image(references[row]), cmap=cmap, vmin=0, vmax=1)
        x1, y1, x2, y2 = truths[row].tolist()
        axes[row, 1].add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="lime", lw=2))
        for step in range(steps):
            x1, y1, x2, y2 = windows[step, row].tolist()
            axes[row, 1].add_patch(
                plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colours[step], lw=1, ls="--" if step < steps - 1 else "-")
            )
            axes[row, 1].text(x1, y1, str(step), color=colours[step], fontsize=6)
        axes[row, 1].set_title("reference: truth (green), windows 0..T", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_success_curves(curves: dict[str, np.ndarray], thresholds, title: str = "success curve"):
    """Success rate against the IoU threshold, one line per method (legend shows the AUC)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, curve in curves.items():
        ax.plot(thresholds, curve, label=f"{name} (AUC {np.mean(curve[:-1]):.3f})")
    ax.axvline(0.5, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_success_per_step(per_step: dict[str, np.ndarray], title: str = "success vs number of steps"):
    """Success (IoU > 0.5) of the window after each move, one line per dataset."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, values in per_step.items():
        ax.plot(np.arange(len(values)), values, marker="o", label=name)
    ax.set_xlabel("step (0 = whole reference)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_speed(rows: list[dict], titles: dict[str, str] | None = None):
    """Bar chart (log scale) of ms per query per dataset: the search path eager at batch 1,
    compiled at batch 1 and batched, against NCC / MTM / BBS (the speed suite's rows)."""
    titles = titles or {}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    of = {(r["dataset"], r["method"]): r for r in rows}
    mode = "compiled" if all(r.get("compiled") for r in rows if r["method"] == "search_path") else "best of eager / compiled"
    series = [
        ("search path b1 (eager)", "search_path", "ms_per_query_eager"),
        (f"search path b1 ({mode})", "search_path", "ms_per_query"),
        (f"search path batched ({mode})", "search_path", "ms_per_query_batched"),
    ]
    series += [(name.upper(), name, "ms_per_query") for name in ("ncc", "mtm", "bbs")]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(series)
    for k, (label, method, key) in enumerate(series):
        values = [of.get((dataset, method), {}).get(key, float("nan")) for dataset in datasets]
        ax.bar(np.arange(len(datasets)) + k * width, values, width, label=label)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, [titles.get(d, d) for d in datasets], fontsize=8)
    ax.set_ylabel("ms per query (log)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- real-photo benchmark


def plot_real_success_curves(rows: list[dict], path: Path, title: str) -> None:
    """Success rate against the IoU threshold, one line per method, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in sorted(rows, key=lambda r: -r["auc"]):
        ax.plot(row["thresholds"], row["success_curve"], label=f"{row['method']} [{row['auc']:.3f}]")
    ax.set(xlabel="overlap threshold (IoU >)", ylabel="success rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="method [AUC]")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_vs_auc(rows: list[dict], path: Path, title: str) -> None:
    """Milliseconds per query (log scale) against AUC, one point per method."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        ax.scatter(row["ms_per_query"], row["auc"])
        ax.annotate(row["method"], (row["ms_per_query"], row["auc"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="ms per query (batch 1)", ylabel="AUC", title=title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_vs_size(rows: list[dict], path: Path, title: str) -> None:
    """Milliseconds per query against the reference's long side (log-log), one line per method."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["long_side"], r["ms_per_query"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set(xscale="log", yscale="log", xlabel="reference long side (px)", ylabel="ms per query", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _box_patch(box, colour: str, lw: float = 1.5, ls: str = "-"):
    x1, y1, x2, y2 = (float(v) for v in box)
    return plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=lw, ls=ls)


def plot_real_search_paths(panels: list[dict], path: Path, title: str, per_row: int = 2) -> None:
    """A grid of search paths on photo pairs: per pair the template, then image B with the truth
    (green), the net's windows 1..T (dashed, yellow to red; window 0 is the whole image), the second
    look's candidates (white crosses, by the net's rank) and the method's answer (cyan).

    ``panels``: dicts with ``template``, ``image`` (H, W, 3 uint8 RGB), ``truth`` and ``answer`` boxes
    ``(x1, y1, x2, y2)``, ``windows`` (T + 1, 4), ``candidates`` (K, 3) ``(x, y, score)`` or None, and
    a ``label`` (the pair and its IoU)."""
    rows = max(1, -(-len(panels) // per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(5.2 * per_row, 2.6 * rows), squeeze=False, gridspec_kw={"width_ratios": [1, 3] * per_row})
    for ax in axes.flat:
        ax.axis("off")
    for index, panel in enumerate(panels):
        left, right = axes[index // per_row, 2 * (index % per_row)], axes[index // per_row, 2 * (index % per_row) + 1]
        left.imshow(panel["template"])
        left.set_title("template", fontsize=7)
        right.imshow(panel["image"])
        right.add_patch(_box_patch(panel["truth"], "lime", 2))
        moves = panel["windows"][1:]
        for step, (box, colour) in enumerate(zip(moves, plt.cm.autumn_r(np.linspace(0, 1, max(1, len(moves))))), start=1):
            right.add_patch(_box_patch(box, colour, 1, "--"))
            right.text(float(box[0]), float(box[1]), str(step), color=colour, fontsize=6, va="bottom")
        candidates = panel.get("candidates")
        if candidates is not None:
            found = candidates[np.isfinite(candidates).all(axis=1)]
            for rank, (x, y, _) in enumerate(found[np.argsort(-found[:, 2])], start=1):
                right.plot(x, y, marker="x", color="white", ms=5, mew=1.5)
                right.text(x + 3, y, str(rank), color="white", fontsize=6)
        right.add_patch(_box_patch(panel["answer"], "cyan", 1.5))
        height, width = panel["image"].shape[:2]
        right.set(xlim=(0, width), ylim=(height, 0))  # windows may reach past the image: keep its frame
        right.set_title(panel.get("label", ""), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    # photos: JPEG keeps the file a fraction of a PNG's (the format follows the path's suffix)
    fig.savefig(path, dpi=90, pil_kwargs={"quality": 85} if Path(path).suffix.lower() in (".jpg", ".jpeg") else None)
    plt.close(fig)
