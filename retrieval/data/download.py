"""Download and unpack the public retrieval test sets into the layouts the readers expect.

``download_dataset(name, root)`` fetches the official files (see
:data:`retrieval.data.datasets.DATASET_URLS`) into ``root/.downloads/``, unpacks archives
safely (no absolute or ``..`` member paths) and, for image archives, flattens nested
folders (Paris ships ``paris/<landmark>/*.jpg``) so that ``root/jpg/<name>.jpg`` holds
every image (and ``root/gt_files/`` every ground-truth file). No official checksums are published for these files; a download is
checked by unpacking it and by the reader that runs afterwards. Flickr100k ships as a
40-part RAR archive and is not handled here (unrar it by hand).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from core.errors import CorruptDatasetError, DatasetNotFoundError

from .datasets import DATASET_HINTS, DATASET_URLS

__all__ = ["DOWNLOADS", "download_dataset", "fetch", "unpack"]

_OXFORD_IMAGES, _OXFORD_GT = DATASET_URLS["oxford5k"]
_PARIS_1, _PARIS_2, _PARIS_GT = DATASET_URLS["paris6k"]

#: name -> [(url, destination folder under root, flatten images into it)]
DOWNLOADS: dict[str, list[tuple[str, str, bool]]] = {
    "oxford5k": [(_OXFORD_IMAGES, "jpg", True), (_OXFORD_GT, "gt_files", True)],
    "paris6k": [(_PARIS_1, "jpg", True), (_PARIS_2, "jpg", True), (_PARIS_GT, "gt_files", True)],
    "roxford5k": [(DATASET_URLS["roxford5k"][0], ".", False), (_OXFORD_IMAGES, "jpg", True)],
    "rparis6k": [(DATASET_URLS["rparis6k"][0], ".", False), (_PARIS_1, "jpg", True), (_PARIS_2, "jpg", True)],
    "holidays": [(url, ".", False) for url in DATASET_URLS["holidays"]],
    "ukbench": [(DATASET_URLS["ukbench"][0], ".", False)],
    "r1m": [("http://ptak.felk.cvut.cz/revisitop/revisitop1m/revisitop1m.txt", ".", False)]
    + [(f"http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.{i}.tar.gz", "jpg", False) for i in range(1, 101)],
}


def fetch(url: str, folder: Path, timeout: float = 60.0) -> Path:
    """``url`` downloaded into ``folder`` (kept when already there), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / url.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file() and target.stat().st_size > 0:
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DatasetNotFoundError(f"could not download {url} ({exc}) into", folder, "Check the network or copy the file there by hand") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _safe_member(destination: Path, name: str, archive: Path) -> None:
    resolved = (destination / name).resolve()
    if not resolved.is_relative_to(destination.resolve()):
        raise CorruptDatasetError(f"archive member {name!r} would be written outside {destination}", archive, "Delete it and download it again")


def unpack(archive: Path, destination: Path) -> None:
    """Unpack a .tar(.gz)/.tgz/.zip into ``destination``, or copy any other file there."""
    destination.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith((".tgz", ".tar.gz", ".tar")):
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
                for member in members:
                    _safe_member(destination, member.name, archive)
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(destination, members=members, **safe)
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _safe_member(destination, member, archive)
                zf.extractall(destination)
        else:
            shutil.copy2(archive, destination / archive.name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CorruptDatasetError(f"cannot unpack ({exc})", archive, "Delete it and download it again") from None


def _flatten(folder: Path) -> None:
    """Move every file under ``folder``'s sub-folders up into ``folder`` (then drop empty dirs)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.parent != folder:
            target = folder / path.name
            if not target.exists():
                path.replace(target)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(sub.iterdir()):
            sub.rmdir()


def download_dataset(name: str, root: str | os.PathLike, timeout: float = 60.0, urls: list[tuple[str, str, bool]] | None = None) -> Path:
    """Download ``name`` (a key of :data:`DOWNLOADS`) into ``root``; returns ``root``.

    ``urls`` replaces the official list (mirrors, tests). Archives stay in
    ``root/.downloads`` so that an interrupted run resumes without fetching them again.
    """
    if urls is None:
        if name not in DOWNLOADS:
            raise ValueError(f"no download for {name!r}; available: {sorted(DOWNLOADS)}. {DATASET_HINTS.get(name, '')}")
        urls = DOWNLOADS[name]
    root = Path(root).expanduser()
    cache = root / ".downloads"
    for url, destination, flatten in urls:
        archive = fetch(url, cache, timeout)
        target = root / destination
        unpack(archive, target)
        if flatten:
            _flatten(target)
    return root
