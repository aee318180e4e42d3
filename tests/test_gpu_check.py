"""`make gpu-check` on the CPU: results files, the missing-package line, the deadline guard."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import gpu_check
from tests.conftest import SHARED_DATA

TINY = gpu_check.SIZES["tiny"]


def tiny_data_root(root):
    """A few COIL-100 objects and the v_churchill sequence at a quarter of its size (homographies
    rescaled to match): the carried layout, small enough for a CPU test."""
    import cv2
    import numpy as np

    source = SHARED_DATA / "sequences" / "v_churchill"
    if not source.is_dir() or not (SHARED_DATA / "coil100").is_dir():
        pytest.skip(f"real data not found under {SHARED_DATA}")
    (root / "coil100").mkdir(parents=True)
    for path in sorted((SHARED_DATA / "coil100").glob("obj*__*.png")):
        if int(path.name[3:].split("__")[0]) in range(2, 10):
            shutil.copy(path, root / "coil100")
    sequence = root / "sequences" / "v_churchill"
    sequence.mkdir(parents=True)
    scale = np.diag([0.25, 0.25, 1.0])
    for k in range(1, 7):
        image = cv2.imread(str(source / f"{k}.ppm"))
        cv2.imwrite(str(sequence / f"{k}.ppm"), cv2.resize(image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA))
        if k > 1:
            np.savetxt(sequence / f"H_1_{k}", scale @ np.loadtxt(source / f"H_1_{k}") @ np.linalg.inv(scale))
    return root


def test_missing_package_is_named_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(gpu_check.REQUIRED, "surely_not_a_module_here", "surely-not-a-package")
    assert gpu_check.main(["--device", "cpu", "--tiny"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing packages: surely-not-a-package" in err[0]


def test_deadline_skips_every_part_and_still_writes(tmp_path):
    results = gpu_check.run_check("cpu", tmp_path, budget_s=0, sizes=TINY, data_dir=tmp_path, work=tmp_path / "runs")
    assert set(results["skipped"]) == set(gpu_check.PARTS) and not results["parts"] and not results["failed"]
    assert json.loads((tmp_path / "gpu.json").read_text())["skipped"] == results["skipped"]
    md = (tmp_path / "gpu.md").read_text()
    for family in gpu_check.FAMILIES:
        assert f"| {family} |" in md
    assert "train_retrieval: skipped (deadline" in md


def test_cpu_region_search_end_to_end(tmp_path, cache_dir):
    """Train (a few steps), the checkpoint on the CPU again, the search path vs NCC/MTM/BBS; the
    other families' rows say they were not run."""
    parts = ["train_regionsearch", "search_speed"]
    results = gpu_check.run_check("cpu", tmp_path, budget_s=300, sizes=TINY, parts=parts, data_dir=tmp_path, work=tmp_path / "runs")
    assert not results["failed"], results["failed"]
    train = results["parts"]["train_regionsearch"]
    assert train["device"]["items_per_s"] > 0 and train["portable"]["allclose"]
    search = results["parts"]["search_speed"]
    for key in ("cpu_ms_per_query_batch1", "cpu_ms_per_query_batched", "cpu_ncc_ms_per_query", "cpu_mtm_ms_per_query", "cpu_bbs_ms_per_query"):
        assert search[key] > 0, key
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["device_kind"] == "cpu" and written["versions"]["torch"]
    md = (tmp_path / "gpu.md").read_text()
    assert "| regionsearch | query/reference pairs |" in md and "## Region search on Mixed MNIST" in md
    assert "| descriptors | patch pairs | - |" in md and "| retrieval | tuple images | - |" in md


@pytest.mark.slow
def test_cpu_every_family_end_to_end(tmp_path, cache_dir):
    """Every part at toy sizes on a small real-data root (~3 min on a busy 2-core CPU)."""
    data = tiny_data_root(tmp_path / "data")
    results = gpu_check.run_check("cpu", tmp_path, budget_s=900, sizes=TINY, data_dir=data, work=tmp_path / "runs")
    assert not results["failed"] and not results["skipped"], (results["failed"], results["skipped"])
    for family in gpu_check.FAMILIES:
        row = results["parts"][f"train_{family}"]
        assert row["device"]["items_per_s"] > 0 and row["portable"]["allclose"], family
    assert results["parts"]["descriptor_speed"]["cpu_patches_per_s"] > 0
    assert results["parts"]["retrieval_speed"]["cpu_images_per_s"] > 0
    assert set(results["parts"]["hpatches_evaluator"]["cpu_seconds"]) == {"verification", "matching", "retrieval"}
    md = (tmp_path / "gpu.md").read_text()
    for heading in ("Training throughput", "Region search on Mixed MNIST", "Inference throughput", "HPatches evaluator"):
        assert heading in md
