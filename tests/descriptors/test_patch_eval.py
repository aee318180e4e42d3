"""The patch-evaluation benchmark suite end to end on tiny real-layout sequences."""

from __future__ import annotations

import json

import cv2
import numpy as np

from benchmarks.suites.patch_eval import markdown, run_suite
from descriptors.data.real import geometry as G


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.normal(size=(30, 40)), (320, 240), interpolation=cv2.INTER_CUBIC)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)
    return ((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)


def test_suite_writes_rows_tables_and_plots(tmp_path):
    # two HPatches-sequence-layout folders (1.ppm .. 6.ppm, H_1_2 ..) under <data>/sequences
    for k, name in enumerate(("v_one", "v_two")):
        seq = G.synthetic_sequence(name, _texture(k), n_images=6, seed=k, strength=0.08)
        folder = tmp_path / "data" / "sequences" / name
        folder.mkdir(parents=True)
        for n, (image, H) in enumerate(zip(seq.images, seq.homographies), start=1):
            cv2.imwrite(str(folder / f"{n}.ppm"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
            if n > 1:
                np.savetxt(folder / f"H_1_{n}", H)
    publish = tmp_path / "published"
    rows = run_suite(
        output_dir=str(tmp_path / "run"),
        data_dir=str(tmp_path / "data"),
        cache_dir=str(tmp_path / "cache"),
        quick=True,
        descriptors=("sift",),
        sequences=("v_one", "v_two"),
        quick_synthetic=0,
        quick_list_sizes={"n_pos": 300, "n_neg": 300, "n_queries": 20, "n_distractors": 100},
        device="cpu",
        brown_real={"train_sequences": ["v_one"], "test_sequence": "v_two", "skimage_photos": False, "n_coil": 0, "n_logos": 0, "n_train_pairs": 200, "n_test_pairs": 200, "test_keypoints": 150},
        publish_dir=str(publish),
    )
    assert [r["implementation"] for r in rows] == ["fast", "official"]
    fast, official = rows
    for key in ("verification_map", "verification_auc", "matching_map", "retrieval_map"):
        assert 0 < fast[key] <= 1 and abs(fast[key] - official[key]) < 1e-9
    assert fast["max_abs_difference_vs_official"] < 1e-9 and fast["speedup_total"] > 0
    for name in ("patch_eval.json", "patch_eval.md", "patch_eval_roc.png", "patch_eval_matching_per_pair.png", "patch_eval_brown_roc.png"):
        assert (tmp_path / "run" / name).is_file() and (publish / name).is_file(), name
    result = json.loads((tmp_path / "run" / "patch_eval.json").read_text())
    assert result["rows"] == rows and set(result["matching_per_image_pair"]["sift"]) == {"v_one", "v_two"}
    (brown_row,) = result["brown_fpr95"]
    assert brown_row["pairs"] == 200 and 0 <= brown_row["fpr95"] < 0.5  # same-point patches are near
    table = markdown(result)
    assert "| sift | fast |" in table and "| v_one | e |" in table
