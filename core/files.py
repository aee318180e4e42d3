"""File checksums, locks and atomically published caches that every family uses.

A cache that several runs may build at once is built in a private temporary folder beside
its target and published with one rename (:func:`atomic_build`), under an advisory lock
(:func:`file_lock`), so that a reader sees either nothing or a complete build, never a
half-written or interleaved one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block;
    blocks until no other process (or open file in this one) holds it.

    ``fcntl.flock`` on POSIX (released by the kernel when the holder dies, so a killed build
    never leaves a stale lock), ``msvcrt.locking`` on Windows. The lock file itself is left in
    place: removing it would let a waiter and a newcomer lock two different files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            while True:
                try:
                    handle.seek(0)
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s: keep waiting
                    continue
            try:
                yield path
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file that guards ``target``: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def _remove_tree(folder: Path) -> None:
    """Take ``folder`` out of the way at once (a rename), then delete it."""
    trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.stale-"))
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def _as_created(path: Path, directory: bool) -> None:
    """The permissions a plain ``open`` / ``mkdir`` would give (mkstemp / mkdtemp make them private,
    which would hide a shared cache from the machine's other users)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def atomic_build(
    target: str | os.PathLike,
    build: Callable[[Path], object],
    is_complete: Callable[[Path], bool],
) -> Path:
    """The folder ``target``, built once by ``build`` however many processes ask at once.

    A ``target`` that passes ``is_complete`` is returned as it is. Otherwise, under
    :func:`file_lock` on ``<target>.lock``: if another process finished the build meanwhile, it
    is reused; else ``build(private)`` writes a new folder made by ``tempfile.mkdtemp`` beside
    ``target``, which must then pass ``is_complete`` (a ``RuntimeError`` otherwise), and is
    published with one rename, replacing an incomplete ``target`` (a partial or older build is
    rebuilt, never used). A failed build leaves ``target`` as it was and removes its folder.
    """
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path(target)):
        if is_complete(target):  # another process built it while this one waited
            return target
        # left by builders that were killed: only the lock's holder builds, so none is in use
        for leftover in [*target.parent.glob(f".{target.name}.build-*"), *target.parent.glob(f".{target.name}.stale-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        private = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
        _as_created(private, directory=True)
        try:
            build(private)
            if not is_complete(private):
                raise RuntimeError(f"the build of {target} finished without writing a complete set (in {private})")
            if target.exists():
                log.warning("replacing the incomplete cache %s", target)
                _remove_tree(target)
            os.replace(private, target)
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A private temporary path beside ``path`` to write; on leaving the block without an
    error it replaces ``path`` in one rename (readers see the old file or the whole new one),
    on an error it is removed. ``suffix`` keeps an extension some writers insist on
    (``np.save`` appends ``.npy`` to names without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    _as_created(Path(name), directory=False)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cached_arrays(path: str | os.PathLike, build: Callable[[], dict]) -> dict:
    """The arrays stored in ``path`` (an ``.npz``), or, when it is missing or unreadable,
    ``build()``'s arrays, written there atomically (:func:`atomic_file`) and returned."""
    path = Path(path).expanduser()
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError):
            pass  # unreadable cache: rebuild it
    arrays = build()
    with atomic_file(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return arrays
