"""The training parts: a short real run per family through ``benchmarks.train`` (Hydra
composition of the experiments) with its throughput, and whether the checkpoint trained on the
device gives the same outputs loaded on the CPU; the real inputs the timing parts share."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from benchmarks.gpu_check.plan import UNITS, Deadline, Sizes
from benchmarks.train import train
from descriptors.api import PatchDescriptor
from regionsearch.api import RegionSearcher
from retrieval.api import Retriever

log = logging.getLogger("gpu_check")


class ThroughputMeter(pl.Callback):
    """Training items per second after ``warmup_steps`` (data loading included); written to
    ``record`` (JSON) when training ends. Retrieval tuples count as their images."""

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


def batch_items(batch) -> int:
    """Items in a training batch: the leading size of its first tensor; (B, T, 3, H, W) tuples of
    images count B * T."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0] * batch.shape[1]) if batch.dim() == 5 else int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        count = batch_items(value)
        if count:
            return count
    return 0


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
    output_dir.mkdir(parents=True, exist_ok=True)
    record = output_dir / "throughput.json"
    minutes, seconds = divmod(max(1, int(max_seconds)), 60)
    overrides = [
        *family_overrides(family, sizes, data_dir),
        f"paths.data_dir={data_dir}", "logger=none", "extras.print_config=false", f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        "++trainer.max_epochs=1", f"++trainer.max_steps={steps}", f"++trainer.precision={precision}",
        f"++trainer.max_time=00:00:{minutes:02d}:{seconds:02d}", "++trainer.enable_progress_bar=false",
        "++trainer.log_every_n_steps=10", "++trainer.deterministic=false",
        "+callbacks.throughput._target_=benchmarks.gpu_check.training.ThroughputMeter", f"+callbacks.throughput.record={record}",
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
    a, b = torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu()
    return {"max_abs_difference": float((a - b).abs().max()) if a.numel() else 0.0, "allclose": bool(torch.allclose(a, b, atol=atol, rtol=1e-4)), "atol": atol}


class _ExactMath:
    """float32 matmuls and convolutions without TF32, so device and CPU outputs compare."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def mixed_pairs(sizes: Sizes, n: int):
    """``n`` Mixed MNIST test pairs as float (N, 1, h, w) queries and (N, 1, H, W) references."""
    cfg = compose_train(family_overrides("regionsearch", sizes, Path()), Path(tempfile.mkdtemp(prefix="gpu_check_")))
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    queries, references = [], []
    for batch in datamodule.test_dataloader():
        queries.append(batch["query"])
        references.append(batch["reference"])
        if sum(len(q) for q in queries) >= n:
            break
    return torch.cat(queries)[:n], torch.cat(references)[:n]


def regionsearch_portable(checkpoint: str, device: str, sizes: Sizes, data_dir: Path) -> dict:
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
    patches = sequence_patches(data_dir, min(256, sizes.patches))[0]
    with _ExactMath():
        here = PatchDescriptor.from_checkpoint(checkpoint, device, optimize=False).describe(patches)
        cpu = PatchDescriptor.from_checkpoint(checkpoint, "cpu", optimize=False).describe(patches)
    return _close(here, cpu, atol=1e-4)


def coil_images(data_dir: Path, n: int):
    """``n`` COIL-100 views (uint8 128x128x3 RGB) of the carried objects."""
    files = sorted((data_dir / "coil100").glob("obj*__*.png"))
    if not files:
        raise FileNotFoundError(f"no COIL-100 images under {data_dir / 'coil100'} (make gpu-prepare)")
    return [cv2.cvtColor(cv2.imread(str(files[i % len(files)])), cv2.COLOR_BGR2RGB) for i in range(n)]


def retrieval_portable(checkpoint: str, device: str, sizes: Sizes, data_dir: Path) -> dict:
    images = coil_images(data_dir, min(16, sizes.images))
    with _ExactMath():
        here = Retriever.from_checkpoint(checkpoint, image_size=128, device=device).embed(images)
        cpu = Retriever.from_checkpoint(checkpoint, image_size=128, device="cpu").embed(images)
    return _close(here, cpu, atol=1e-4)


CHECKPOINT_CHECKS: dict[str, Callable] = {"regionsearch": regionsearch_portable, "descriptors": descriptors_portable, "retrieval": retrieval_portable}
