"""core.files: the lock and the atomically published build folders and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.files import atomic_build, atomic_file, file_lock, lock_path
from tests.conftest import REPO

# A builder that writes a folder slowly, file by file (so that two of them overlap), and says
# whether it built or reused the folder.
_BUILDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from core.files import atomic_build

    target, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():  # start together
        time.sleep(0.01)
    built = []

    def build(folder):
        built.append(1)
        for k in range(10):
            (folder / f"part{k}.txt").write_text(str(k))
            time.sleep(0.05)
        (folder / "done.json").write_text(json.dumps({"parts": 10}))

    def complete(folder):
        try:
            parts = json.loads((folder / "done.json").read_text())["parts"]
        except (OSError, ValueError):
            return False
        return all((folder / f"part{k}.txt").is_file() for k in range(parts))

    atomic_build(target, build, complete)
    print("built" if built else "reused")
    """
)


def _complete(folder: Path) -> bool:
    try:
        parts = json.loads((folder / "done.json").read_text())["parts"]
    except (OSError, ValueError):
        return False
    return all((folder / f"part{k}.txt").is_file() for k in range(parts))


def test_two_processes_build_one_folder_once(tmp_path):
    target, go = tmp_path / "cache" / "set", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(target), str(go)], stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    time.sleep(0.3)
    go.touch()
    outputs = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sorted(outputs) == ["built", "reused"]
    assert _complete(target)
    # nothing left beside it but the lock
    assert sorted(p.name for p in target.parent.iterdir()) == ["set", "set.lock"]


def test_partial_folder_is_rebuilt_and_failed_build_leaves_target(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "done.json").write_text(json.dumps({"parts": 2}))  # part files missing
    (target / "part0.txt").write_text("0")

    def build(folder: Path) -> None:
        for k in range(2):
            (folder / f"part{k}.txt").write_text(str(k))
        (folder / "done.json").write_text(json.dumps({"parts": 2}))

    assert atomic_build(target, build, _complete) == target and _complete(target)
    stamp = (target / "done.json").stat().st_mtime_ns
    assert atomic_build(target, lambda folder: pytest.fail("rebuilt a complete folder"), _complete) == target
    assert (target / "done.json").stat().st_mtime_ns == stamp

    other = tmp_path / "other"

    def crash(folder: Path) -> None:
        (folder / "part0.txt").write_text("0")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_build(other, crash, _complete)
    with pytest.raises(RuntimeError, match="complete"):
        atomic_build(other, lambda folder: None, _complete)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.lock", "set", "set.lock"]
    # a killed builder's folder (and its scratch) goes with the next build
    (tmp_path / ".other.build-dead").mkdir()
    (tmp_path / ".other.build-dead.request-x").mkdir()
    atomic_build(other, build, _complete)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "other.lock", "set", "set.lock"]


def test_file_lock_excludes_another_process(tmp_path):
    lock = lock_path(tmp_path / "thing")
    assert lock.name == "thing.lock"
    code = "import sys; from core.files import file_lock\nwith file_lock(sys.argv[1]): print('got it', flush=True)"
    with file_lock(lock):
        other = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(1.0)
        assert other.poll() is None  # still waiting
    assert other.communicate(timeout=30)[0].strip() == "got it"


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(path) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with atomic_file(path, suffix=".npy") as tmp:
        assert tmp.name.endswith(".npy") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_published_files_and_folders_get_ordinary_permissions(tmp_path):
    # mkstemp / mkdtemp are private (0600 / 0700); a published cache must be readable like any file
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "lists.csv") as tmp:
            tmp.write_text("s,idx\n")
        target = atomic_build(tmp_path / "set", lambda folder: (folder / "done.json").write_text("{}"), lambda folder: (folder / "done.json").is_file())
    finally:
        os.umask(umask)
    assert (tmp_path / "lists.csv").stat().st_mode & 0o777 == 0o644
    assert target.stat().st_mode & 0o777 == 0o755
