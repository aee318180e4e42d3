"""What the GPU check runs: the families and parts in order, how much each part does (``Sizes``)
and how long it needs at least, and the run's deadline. Standard library only: the command line
reads it before the package check."""

from __future__ import annotations

import time
from dataclasses import dataclass


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
#: what one training item is, per family
UNITS = {"regionsearch": "query/reference pairs", "descriptors": "patch pairs", "retrieval": "tuple images"}
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
