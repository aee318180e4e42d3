"""The timing parts: the trained search path against OpenCV NCC, MTM and BBS (ms/query), patch
description against kornia's HardNet (patches/s), retrieval embedding (images/s) and the HPatches
evaluator (seconds per task), each on the device and on the CPU."""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_check.plan import Deadline, Sizes
from benchmarks.gpu_check.training import coil_images, mixed_pairs, sequence_patches
from core.timing import timed_median
from descriptors.api import PatchDescriptor, as_patch_tensor, evaluate_hpatches, load_network
from regionsearch.api import RegionSearcher, get_baseline
from retrieval.api import Retriever


def per_item_ms(fn: Callable, items: int, repeats: int, device) -> float:
    """Median ms per item of ``fn()`` (which handles ``items`` items) after one warm-up call."""
    fn()
    seconds, _ = timed_median(fn, repeats, device)
    return 1000 * seconds / items


def search_speed(sizes: Sizes, device: str, state: dict, data_dir: Path, deadline: Deadline) -> dict:
    """The trained search path on the device at batch 1 and batched vs NCC / MTM / BBS on the
    CPU, on the same Mixed MNIST test pairs (the paper's target: about 40x the best baseline)."""
    checkpoint = state.get("regionsearch_checkpoint")
    if not checkpoint:
        return {"skipped": "no region-search checkpoint (its training did not run)"}
    queries, references = mixed_pairs(sizes, sizes.search_pairs)
    row: dict = {"pairs": len(queries), "batch": sizes.search_batch}
    for where in dict.fromkeys([device, "cpu"]):
        searcher = RegionSearcher.from_checkpoint(checkpoint, where)
        q, r = queries.to(where), references.to(where)
        n1 = min(len(q), 64)
        batch = sizes.search_batch

        def one_at_a_time(q=q, r=r, n1=n1, searcher=searcher):
            for i in range(n1):
                searcher.windows(q[i : i + 1], r[i : i + 1])

        def batched(q=q, r=r, searcher=searcher, batch=batch):
            for i in range(0, len(q), batch):
                searcher.windows(q[i : i + batch], r[i : i + batch])

        with torch.inference_mode():
            row[f"{where}_ms_per_query_batch1"] = round(per_item_ms(one_at_a_time, n1, sizes.repeats, where), 4)
            row[f"{where}_ms_per_query_batched"] = round(per_item_ms(batched, len(q), sizes.repeats, where), 4)
    if device == "cuda" and deadline.left() > 120:
        try:
            search_compiled(row, checkpoint, device, queries, references, sizes)
        except Exception as error:  # noqa: BLE001 (the eager numbers stand without it)
            row["compile_failed"] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    n = min(sizes.baseline_pairs, len(queries))
    hwc = lambda x: (x.permute(1, 2, 0).squeeze(-1).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    pairs = [(hwc(queries[i]), hwc(references[i])) for i in range(n)]
    for name in ("ncc", "mtm", "bbs"):
        match = get_baseline(name)
        row[f"cpu_{name}_ms_per_query"] = round(per_item_ms(lambda match=match: [match(a, b) for a, b in pairs], n, 1, None), 3)
    best = min(row[f"cpu_{name}_ms_per_query"] for name in ("mtm", "bbs"))
    for mode in ("batch1", "batched"):
        # the faster of eager and compiled (the suite's convention: compiled where it worked)
        ours = min(v for k, v in row.items() if k.startswith(f"{device}_") and k.endswith(f"ms_per_query_{mode}"))
        row[f"speedup_vs_best_of_mtm_bbs_{mode}"] = round(best / ours, 1)
        row[f"ratio_to_ncc_{mode}"] = round(ours / row["cpu_ncc_ms_per_query"], 2)
    return row


def search_compiled(row: dict, checkpoint: str, device: str, queries, references, sizes: Sizes) -> None:
    """The search path compiled ahead of time (torch.export + AOTInductor, one library per
    batch shape) on the device: ms/query at batch 1 and batched, into ``row``."""
    compiled = RegionSearcher.from_checkpoint(checkpoint, device, compile=True)
    q, r = queries.to(device), references.to(device)
    batch = sizes.search_batch
    with torch.inference_mode():
        start = time.perf_counter()
        compiled.windows(q[:1], r[:1])
        row["compile_s"] = round(time.perf_counter() - start, 1)
        if compiled.compiled:  # else it warned and fell back to eager
            n1 = min(len(q), 64)
            row[f"{device}_compiled_ms_per_query_batch1"] = round(per_item_ms(
                lambda: [compiled.windows(q[i : i + 1], r[i : i + 1]) for i in range(n1)], n1, sizes.repeats, device), 4)
            row[f"{device}_compiled_ms_per_query_batched"] = round(per_item_ms(
                lambda: [compiled.windows(q[i : i + batch], r[i : i + batch]) for i in range(0, len(q) - batch + 1, batch)],
                (len(q) // batch) * batch, sizes.repeats, device), 4)


def descriptor_speed(sizes: Sizes, device: str, state: dict, data_dir: Path) -> dict:
    """Patches/s of the trained HardNet (``descriptors.api``) on the device and the CPU, and of
    kornia's HardNet holding the same weights on the device (same input batches)."""
    checkpoint = state.get("descriptors_checkpoint")
    if not checkpoint:
        return {"skipped": "no descriptor checkpoint (its training did not run)"}
    base = sequence_patches(data_dir, min(1000, sizes.patches))[0]
    patches = np.concatenate([base] * (-(-sizes.patches // len(base))))[: sizes.patches]
    row: dict = {"patches": len(patches), "patch_size": 65}
    batch = 1024
    for where, count in ((device, len(patches)), ("cpu", min(sizes.cpu_patches, len(patches)))) if device != "cpu" else ((device, len(patches)),):
        describer = PatchDescriptor.from_checkpoint(checkpoint, where, batch_size=batch)
        subset = patches[:count]
        row[f"{where}_patches_per_s"] = round(1000 / per_item_ms(lambda d=describer, s=subset: d.describe(s), count, sizes.repeats, where), 1)
    if importlib.util.find_spec("kornia") is None:
        row["kornia"] = "not installed"
        return row
    import kornia.feature as KF  # optional (``OPTIONAL``): imported only once found above

    net = load_network(checkpoint, device)
    peer = KF.HardNet(pretrained=False)
    peer.load_state_dict(net.state_dict())
    peer = peer.to(device).eval()
    sized = torch.nn.functional.interpolate(as_patch_tensor(patches), size=(net.patch_size, net.patch_size), mode="bilinear", align_corners=False)

    def kornia_describe():
        with torch.inference_mode():
            for i in range(0, len(sized), batch):
                peer(sized[i : i + batch].to(device))

    row[f"{device}_kornia_patches_per_s"] = round(1000 / per_item_ms(kornia_describe, len(sized), sizes.repeats, device), 1)
    row["speed_ratio_vs_kornia"] = round(row[f"{device}_patches_per_s"] / row[f"{device}_kornia_patches_per_s"], 2)
    return row


def retrieval_speed(sizes: Sizes, device: str, state: dict, data_dir: Path) -> dict:
    """Images/s of the fine-tuned GeM network (``retrieval.api``) embedding COIL-100 views."""
    checkpoint = state.get("retrieval_checkpoint")
    if not checkpoint:
        return {"skipped": "no retrieval checkpoint (its training did not run)"}
    images = coil_images(data_dir, sizes.images)
    row: dict = {"images": len(images), "image_size": 128}
    for where, count in ((device, len(images)), ("cpu", min(sizes.cpu_images, len(images)))) if device != "cpu" else ((device, len(images)),):
        retriever = Retriever.from_checkpoint(checkpoint, image_size=128, device=where)
        subset = images[:count]
        row[f"{where}_images_per_s"] = round(1000 / per_item_ms(lambda r=retriever, s=subset: r.embed(s, batch_size=64), count, sizes.repeats, where), 1)
    return row


def hpatches_evaluator(sizes: Sizes, device: str, state: dict, data_dir: Path) -> dict:
    """The HPatches evaluator (three tasks, fast implementation) on patches of the carried
    sequence laid out as one HPatches sequence (e/h/t levels: the same five views), described
    by the trained HardNet; seconds per task with the evaluation on the device and on the CPU."""
    checkpoint = state.get("descriptors_checkpoint")
    if not checkpoint:
        return {"skipped": "no descriptor checkpoint (its training did not run)"}
    views = sequence_patches(data_dir, sizes.hpatches_keypoints)
    sequence = {"ref": views[0], **{f"{level}{i}": views[i] for level in "eht" for i in range(1, 6)}}
    sequences = {"v_churchill_carried": sequence}
    describer = PatchDescriptor.from_checkpoint(checkpoint, device)
    descriptors = {name: {image: describer.describe(p).numpy() for image, p in images.items()} for name, images in sequences.items()}
    n = sizes.hpatches_keypoints
    list_sizes = {"n_pos": 5 * n, "n_neg": 5 * n, "n_queries": max(1, n // 2), "n_distractors": n}
    pool_sizes = tuple(p for p in (100, 500, 1000) if p <= n) or (n,)
    row: dict = {"patches_per_image": n}
    cache = Path(tempfile.mkdtemp(prefix="gpu_check_hpatches_"))
    for where in dict.fromkeys([device, "cpu"]):
        summary, results = evaluate_hpatches(descriptors, sequences=sequences, split="full", cache_dir=cache, device=where,
                                             list_sizes=list_sizes, pool_sizes=pool_sizes)
        row[f"{where}_seconds"] = {task: round(s, 3) for task, s in results.seconds.items()}
        row[f"{where}_summary"] = {k: round(float(v), 4) for k, v in summary.items() if isinstance(v, (int, float))}
    return row
