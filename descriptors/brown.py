"""Brown / UBC PhotoTour patches in their official layout, a memory-mapped cache, the
training samplers and :class:`BrownDataModule`.

Official layout of one subset folder (``liberty``, ``notredame``, ``yosemite``)::

    patches0000.bmp ...   1024x1024 grey tiles of 16x16 patches of 64x64, row-major
                          (left to right, then top to bottom); the last tile partly filled
    info.txt              one line per patch: "3D-point-id unused"
    interest.txt          one line per patch: "reference-image-id x y orientation log2-scale"
    m50_<n>_<n>_0.txt     match pairs: "patch1 point1 unused patch2 point2 unused";
                          label = (point1 == point2); m50_100000_100000_0.txt is the test set

Batches (the contract with the networks): dicts of float32 tensors in [0, 1], patches
``(B, 1, 64, 64)``:

* train, ``sampler="pairs"`` -> ``{"patch1", "patch2", "label"}`` (balanced, label 1 = same point)
* train, ``sampler="triplets"`` -> ``{"anchor", "positive", "negative"}``
* train, ``sampler="points"`` -> ``{"anchor", "positive"}``: each batch holds B distinct 3D points
* val / test -> ``{"patch1", "patch2", "label"}`` from an m50 match file

Hard negatives: a subset's *scenes* are the connected components of its images linked by
shared 3D points (the first column of interest.txt; one scene for a Brown subset, one per
photo or sequence for the generated real-data sets). With ``hard_negatives=f`` a fraction f
of the negatives is drawn from the anchor's own scene and ``points`` batches are filled
scene by scene, as in the test pairs of one scene (Brown's m50 files, v_churchill).

Look-alike negatives: with ``lookalike_negatives=f`` a fraction f of the negatives is a patch
of one of the anchor point's ``lookalike_k`` nearest other points in plain appearance (NCC of
the 16x16 area-averaged reference patches, over the whole subset), and ``points`` batches
hold clusters of such neighbours, so that the in-batch negatives the losses mine include
repeated structures (windows, bricks, letters), the false positives of one facade.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.errors import CorruptDatasetError, DatasetNotFoundError

log = logging.getLogger(__name__)

__all__ = [
    "BROWN_SUBSETS",
    "BROWN_URLS",
    "BROWN_MIRROR",
    "BROWN_MD5",
    "BROWN_PATCH_COUNTS",
    "BROWN_MEAN_STD",
    "TEST_MATCH_FILE",
    "BrownSubset",
    "find_subset_dir",
    "read_info",
    "read_interest",
    "read_matches",
    "read_patches",
    "read_subset",
    "load_subset",
    "scene_ids",
    "write_subset",
    "write_matches",
    "sample_match_pairs",
    "subset_digest",
    "appearance_neighbours",
    "lookalike_groups",
    "lookalike_match_pairs",
    "download_brown",
    "PairSampler",
    "TripletSampler",
    "PointSampler",
    "EpochSampler",
    "MatchPairs",
    "BrownDataModule",
]

BROWN_SUBSETS = ("liberty", "notredame", "yosemite")
#: torchvision's (now dead) official URLs and the md5 of those zips.
BROWN_URLS = {name: f"http://icvl.ee.ic.ac.uk/vbalnt/{name}.zip" for name in BROWN_SUBSETS}
BROWN_MD5 = {
    "notredame": "509eda8535847b8c0a90bbb210c83484",
    "yosemite": "533b2e8eb7ede31be40abc317b2fd4f0",
    "liberty": "fdd9152f138ea5ef2091746689176414",
}
#: Re-packed zips (different md5s, not known here: checked by zip integrity instead).
BROWN_MIRROR = "https://cmp.felk.cvut.cz/~mishkdmy/datasets/BrownPhotoTour/"
BROWN_PATCH_COUNTS = {"notredame": 468159, "yosemite": 633587, "liberty": 450092}
#: file names of the cached look-alike groups in a subset's cache folder (v1: lookalike_groups'
#: NCC of 16x16 reference patches, overlapping keypoints skipped)
LOOKALIKE_CACHE_PREFIX = "lookalikes-v1-"

#: mean / std of the patches on [0, 1] (HardNet's normalisation constants)
BROWN_MEAN_STD = {"liberty": (0.4437, 0.2019), "notredame": (0.4854, 0.1864), "yosemite": (0.4844, 0.1818)}
TEST_MATCH_FILE = "m50_100000_100000_0.txt"

PATCH = 64
TILE = 1024
PER_ROW = TILE // PATCH
PER_TILE = PER_ROW * PER_ROW


def _hint(subset: str) -> str:
    url = BROWN_URLS.get(subset, "<subset>.zip")
    return (
        f"Get the Brown/UBC PhotoTour subset {subset!r} ({url}, dead; mirror {BROWN_MIRROR}{subset}.zip), "
        f"unzip it to <data_root>/brown/{subset}/ (e.g. descriptors.brown.download_brown(root, '{subset}')) "
        "and point the data root (DEEPMATCH_DATA / data.data_root) at it"
    )


@dataclass
class BrownSubset:
    """One subset: ``patches`` uint8 ``(N, 64, 64)`` (possibly memory-mapped), ``point_ids``
    int64 ``(N,)``, ``interest`` float ``(N, 5)`` or None, the folder it came from and, when
    loaded through a cache, the cache folder (where derived arrays such as look-alikes live)."""

    name: str
    patches: np.ndarray
    point_ids: np.ndarray
    interest: np.ndarray | None
    folder: Path
    cache: Path | None = None

    def __len__(self) -> int:
        return len(self.point_ids)

    def matches(self, match_file: str = TEST_MATCH_FILE) -> np.ndarray:
        """``(M, 3)`` int64 ``[patch1, patch2, is_match]`` from one of the subset's m50 files."""
        return read_matches(self.folder / match_file, n_patches=len(self))


def subset_digest(subset: BrownSubset, chunk: int = 8192) -> str:
    """MD5 (hex) of a subset's patches, point ids and keypoints: the same digest means the same
    data, so that two runs that disagree can tell a changed data set (e.g. a generated one under
    another OpenCV) from changed training."""
    digest = hashlib.md5()
    for start in range(0, len(subset.patches), chunk):
        digest.update(np.ascontiguousarray(subset.patches[start : start + chunk], dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(subset.point_ids, dtype=np.int64).tobytes())
    if subset.interest is not None:
        digest.update(np.ascontiguousarray(subset.interest, dtype=np.float64).tobytes())
    return digest.hexdigest()


def find_subset_dir(root: str | os.PathLike, subset: str) -> Path:
    """``root/brown/<subset>``, ``root/<subset>`` or ``root`` itself (holding ``info.txt``)."""
    if root is None:
        raise DatasetNotFoundError("no data root configured for Brown", "<unset>", _hint(subset))
    root = Path(root).expanduser()
    for folder in (root / "brown" / subset, root / subset, root):
        if (folder / "info.txt").is_file() and (folder is not root or root.name == subset):
            return folder
    if (root / "brown" / subset).is_dir() or (root / subset).is_dir():
        folder = root / "brown" / subset if (root / "brown" / subset).is_dir() else root / subset
        raise DatasetNotFoundError("Brown subset folder has no info.txt", folder, _hint(subset))
    raise DatasetNotFoundError(f"Brown subset {subset!r} not found under", root, _hint(subset))


def _read_columns(path: Path, columns: int, dtype, what: str, hint: str = "") -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError(f"Brown {what} not found", path, hint)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDatasetError(f"cannot read Brown {what} ({exc})", path, hint) from exc
    rows = [line.split() for line in text.splitlines() if line.strip()]
    bad = next((i for i, row in enumerate(rows) if len(row) != columns), None)
    if bad is not None:
        raise CorruptDatasetError(
            f"Brown {what}: line {bad + 1} has {len(rows[bad])} columns, expected {columns}", path, hint
        )
    try:
        return np.array(rows, dtype=np.float64).astype(dtype).reshape(len(rows), columns)
    except ValueError as exc:
        raise CorruptDatasetError(f"Brown {what}: non-numeric value ({exc})", path, hint) from exc


def read_info(path: str | os.PathLike) -> np.ndarray:
    """3D point id of every patch (``info.txt``: "pointid unused" per line)."""
    return _read_columns(Path(path), 2, np.int64, "info.txt")[:, 0]


def read_interest(path: str | os.PathLike) -> np.ndarray:
    """``(N, 5)`` float: reference image id, x, y, orientation, scale (log2 units)."""
    return _read_columns(Path(path), 5, np.float64, "interest.txt")


def read_matches(path: str | os.PathLike, n_patches: int | None = None) -> np.ndarray:
    """``(M, 3)`` int64 ``[patch1, patch2, is_match]`` from an m50 file (6 columns)."""
    path = Path(path)
    table = _read_columns(path, 6, np.int64, "match file")
    if n_patches is not None and len(table) and (table[:, [0, 3]].max() >= n_patches or table[:, [0, 3]].min() < 0):
        raise CorruptDatasetError(f"match file refers to patches outside 0..{n_patches - 1}", path)
    return np.stack([table[:, 0], table[:, 3], (table[:, 1] == table[:, 4]).astype(np.int64)], axis=1)


def read_patches(folder: str | os.PathLike, n_patches: int) -> np.ndarray:
    """The first ``n_patches`` patches of the ``patchesNNNN.bmp`` tiles of ``folder``."""
    folder = Path(folder)
    n_tiles = -(-n_patches // PER_TILE)
    patches = np.empty((n_tiles * PER_TILE, PATCH, PATCH), dtype=np.uint8)
    for tile in range(n_tiles):
        path = folder / f"patches{tile:04d}.bmp"
        if not path.is_file():
            raise DatasetNotFoundError(
                f"Brown tile missing ({n_patches} patches in info.txt need {n_tiles} tiles)", path, _hint(folder.name)
            )
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CorruptDatasetError("unreadable or truncated Brown tile", path, "Delete it and unzip the subset again")
        if image.shape != (TILE, TILE):
            raise CorruptDatasetError(f"Brown tile is {image.shape[1]}x{image.shape[0]}, expected 1024x1024", path)
        block = patches[tile * PER_TILE : (tile + 1) * PER_TILE]
        block[:] = image.reshape(PER_ROW, PATCH, PER_ROW, PATCH).transpose(0, 2, 1, 3).reshape(PER_TILE, PATCH, PATCH)
    return patches[:n_patches]


def read_subset(folder: str | os.PathLike, name: str | None = None) -> BrownSubset:
    """Read a subset folder directly from the bmp tiles (slow for real subsets: use :func:`load_subset`)."""
    folder = Path(folder)
    point_ids = read_info(folder / "info.txt")
    interest_path = folder / "interest.txt"
    interest = read_interest(interest_path) if interest_path.is_file() else None
    if interest is not None and len(interest) != len(point_ids):
        raise CorruptDatasetError(f"interest.txt has {len(interest)} lines but info.txt {len(point_ids)}", interest_path)
    return BrownSubset(name or folder.name, read_patches(folder, len(point_ids)), point_ids, interest, folder)


def _source_signature(folder: Path) -> dict:
    files = sorted(folder.glob("patches*.bmp")) + [folder / "info.txt"]
    return {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in files if p.is_file()}


def load_subset(root: str | os.PathLike, subset: str, cache_dir: str | os.PathLike | None = None) -> BrownSubset:
    """A subset with its patches memory-mapped from ``<cache_dir>/brown/<subset>/patches.npy``.

    The cache is built once from the bmp tiles (and rebuilt when the tiles change); later
    loads cost one ``np.load(mmap_mode="r")`` instead of decoding hundreds of bitmaps.
    """
    folder = find_subset_dir(root, subset)
    if cache_dir is None:
        return read_subset(folder, subset)
    key = hashlib.md5(str(folder.resolve()).encode()).hexdigest()[:8]
    cache = Path(cache_dir) / "brown" / f"{subset}-{key}"
    meta_path = cache / "meta.json"
    signature = _source_signature(folder)
    point_ids = read_info(folder / "info.txt")
    interest_path = folder / "interest.txt"
    interest = read_interest(interest_path) if interest_path.is_file() else None
    if interest is not None and len(interest) != len(point_ids):
        raise CorruptDatasetError(f"interest.txt has {len(interest)} lines but info.txt {len(point_ids)}", interest_path)
    fresh = meta_path.is_file() and json.loads(meta_path.read_text()).get("signature") == signature
    if not fresh:
        patches = read_patches(folder, len(point_ids))
        cache.mkdir(parents=True, exist_ok=True)
        for derived in cache.glob(f"{LOOKALIKE_CACHE_PREFIX}*.npy"):  # of the old tiles
            derived.unlink()
        tmp = cache / "patches.tmp.npy"
        np.save(tmp, patches)
        os.replace(tmp, cache / "patches.npy")
        meta_path.write_text(json.dumps({"signature": signature, "n_patches": len(point_ids), "folder": str(folder)}))
        log.info("cached %d Brown patches of %s in %s", len(point_ids), subset, cache)
    patches = np.load(cache / "patches.npy", mmap_mode="r")
    if len(patches) != len(point_ids):
        raise CorruptDatasetError(f"cached patches ({len(patches)}) do not match info.txt ({len(point_ids)})", cache)
    return BrownSubset(subset, patches, point_ids, interest, folder, cache)


def write_subset(
    folder: str | os.PathLike,
    patches: np.ndarray,
    point_ids: np.ndarray,
    interest: np.ndarray | None = None,
    match_files: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write patches in the official layout (tiles, info.txt, interest.txt, m50 files).

    ``match_files`` maps a file name to ``(M, 2)`` patch index pairs (see :func:`write_matches`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    patches = np.asarray(patches, dtype=np.uint8)
    if patches.ndim != 3 or patches.shape[1:] != (PATCH, PATCH):
        raise ValueError(f"patches must be (N, 64, 64), got {patches.shape}")
    point_ids = np.asarray(point_ids, dtype=np.int64)
    if len(point_ids) != len(patches):
        raise ValueError("one point id per patch is needed")
    n_tiles = -(-len(patches) // PER_TILE)
    for tile in range(n_tiles):
        block = np.zeros((PER_TILE, PATCH, PATCH), dtype=np.uint8)
        chunk = patches[tile * PER_TILE : (tile + 1) * PER_TILE]
        block[: len(chunk)] = chunk
        image = block.reshape(PER_ROW, PER_ROW, PATCH, PATCH).transpose(0, 2, 1, 3).reshape(TILE, TILE)
        cv2.imwrite(str(folder / f"patches{tile:04d}.bmp"), image)
    (folder / "info.txt").write_text("".join(f"{p} 0\n" for p in point_ids))
    if interest is None:
        interest = np.zeros((len(patches), 5))
    (folder / "interest.txt").write_text(
        "".join(f"{int(r[0])} {r[1]:.6g} {r[2]:.6g} {r[3]:.6g} {r[4]:.6g}\n" for r in np.asarray(interest))
    )
    for name, pairs in (match_files or {}).items():
        write_matches(folder / name, pairs, point_ids)
    return folder


def write_matches(path: str | os.PathLike, pairs: np.ndarray, point_ids: np.ndarray) -> Path:
    """An m50 file for patch index pairs ``(M, 2)``: "patch1 point1 0 patch2 point2 0"."""
    pairs = np.asarray(pairs, dtype=np.int64)
    lines = (f"{a} {point_ids[a]} 0 {b} {point_ids[b]} 0\n" for a, b in pairs)
    Path(path).write_text("".join(lines))
    return Path(path)


def sample_match_pairs(point_ids: np.ndarray, n_pairs: int, seed: int = 0, scenes: np.ndarray | None = None) -> np.ndarray:
    """``(n_pairs, 2)`` patch index pairs, half matching (same point), half not, shuffled.

    ``scenes``: scene id per patch; when given, both patches of a non-matching pair come
    from one scene (as in a Brown subset, which is one scene)."""
    rng = np.random.default_rng(seed)
    groups = _point_groups(point_ids)
    multi = [g for g in groups if len(g) >= 2]
    if not multi:
        raise ValueError("no 3D point has two patches: cannot sample matching pairs")
    n_pos = n_pairs // 2
    pairs = np.empty((n_pairs, 2), dtype=np.int64)
    for i, g in enumerate(rng.integers(len(multi), size=n_pos)):
        pairs[i] = rng.choice(multi[g], 2, replace=False)
    n_neg = n_pairs - n_pos
    a = rng.integers(len(point_ids), size=n_neg * 2)
    if scenes is None:
        b = rng.integers(len(point_ids), size=n_neg * 2)
    else:
        scenes = np.asarray(scenes, dtype=np.int64)
        order = np.argsort(scenes, kind="stable")
        counts = np.bincount(scenes)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        b = order[starts[scenes[a]] + (rng.random(len(a)) * counts[scenes[a]]).astype(np.int64)]
    keep = point_ids[a] != point_ids[b]
    if keep.sum() < n_neg:
        raise ValueError("too few distinct 3D points for non-matching pairs")
    pairs[n_pos:] = np.stack([a[keep][:n_neg], b[keep][:n_neg]], axis=1)
    return pairs[rng.permutation(n_pairs)]


def download_brown(root: str | os.PathLike, subset: str, timeout: float = 120.0) -> Path:
    """Download and unzip a subset to ``root/brown/<subset>/``: the official URL (md5
    checked), then the CTU mirror (zip integrity checked). Raises DatasetNotFoundError
    when neither works (no network)."""
    if subset not in BROWN_SUBSETS:
        raise ValueError(f"unknown Brown subset {subset!r}; expected one of {BROWN_SUBSETS}")
    from core.files import md5sum

    target = Path(root).expanduser() / "brown"
    target.mkdir(parents=True, exist_ok=True)
    failures = []
    for url, md5 in ((BROWN_URLS[subset], BROWN_MD5[subset]), (f"{BROWN_MIRROR}{subset}.zip", None)):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{subset}.", suffix=".zip.part", dir=target)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    out.write(block)
            if md5 is not None and md5sum(tmp) != md5:
                failures.append(f"{url}: md5 mismatch")
                continue
            with zipfile.ZipFile(tmp) as archive:
                if archive.testzip() is not None:
                    failures.append(f"{url}: corrupt zip")
                    continue
                names = archive.namelist()
                nested = all(n.startswith(f"{subset}/") for n in names)
                archive.extractall(target if nested else target / subset)
            return find_subset_dir(target.parent, subset)
        except (urllib.error.URLError, OSError, TimeoutError, zipfile.BadZipFile) as exc:
            failures.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DatasetNotFoundError(f"could not download Brown {subset} ({'; '.join(failures)}) into", target, _hint(subset))


# --------------------------------------------------------------------------- samplers


def scene_ids(point_ids: np.ndarray, interest: np.ndarray | None) -> np.ndarray:
    """Scene of every patch ``(N,)`` int64: connected components of the image graph whose
    edges are the 3D points seen in two images (image = first column of interest.txt).
    Without interest.txt every patch is in scene 0."""
    point_ids = np.asarray(point_ids, dtype=np.int64)
    if interest is None or not len(point_ids):
        return np.zeros(len(point_ids), dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    images = np.unique(np.asarray(interest)[:, 0].astype(np.int64), return_inverse=True)[1].ravel()
    points = np.unique(point_ids, return_inverse=True)[1].ravel()
    # bipartite graph images + points: a patch links its image and its point
    n_images, n_points = int(images.max()) + 1, int(points.max()) + 1
    size = n_images + n_points
    graph = coo_matrix((np.ones(len(images)), (images, n_images + points)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return np.unique(labels[images], return_inverse=True)[1].ravel().astype(np.int64)


def _point_groups(point_ids: np.ndarray) -> list[np.ndarray]:
    """Patch indices of every 3D point, in order of first appearance."""
    order = np.argsort(point_ids, kind="stable")
    sorted_ids = point_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    groups = np.split(order, starts[1:])
    return sorted(groups, key=lambda g: g[0])


def appearance_neighbours(patches: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """The ``k`` most similar other patches of every patch: ``(N, k)`` int64 indices, most
    similar first. Similarity = NCC of the patches area-averaged to 16x16 (the look of a
    patch at a glance, blind to noise and small shifts).

    Shape:
        - patches: ``(N, H, W)`` uint8 / float, N > k
        - output: ``(N, k)``
    """
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise ValueError(f"patches must be (N, H, W), got shape {patches.shape}")
    if not 0 < k < len(patches):
        raise ValueError(f"k must be in [1, {len(patches) - 1}] for {len(patches)} patches, got {k}")
    codes = []
    for start in range(0, len(patches), chunk):
        block = torch.from_numpy(np.asarray(patches[start : start + chunk], dtype=np.float32)).unsqueeze(1)
        small = torch.nn.functional.adaptive_avg_pool2d(block, 16).flatten(1)
        small = small - small.mean(1, keepdim=True)
        # flat patches (sky, walls) get a zero code: similar to nothing, never a neighbour's favourite
        codes.append(small / small.norm(dim=1, keepdim=True).clamp_min(1e-3))
    codes = torch.cat(codes)
    out = np.empty((len(codes), k), dtype=np.int64)
    for start in range(0, len(codes), chunk):
        similarity = codes[start : start + chunk] @ codes.T
        rows = torch.arange(similarity.shape[0])
        similarity[rows, rows + start] = -float("inf")  # not itself
        out[start : start + chunk] = similarity.topk(k, dim=1).indices.numpy()
    return out


def lookalike_groups(patches: np.ndarray, groups: list[np.ndarray], interest: np.ndarray | None, k: int) -> np.ndarray:
    """The ``k`` look-alike groups of every group of patches (one group = one 3D point), most
    similar first, by :func:`appearance_neighbours` of the groups' reference (first) patches.
    Not overlapping keypoints: a candidate whose reference patch lies in the same image closer
    than 4 keypoint sizes (``interest``, interest.txt rows) shows mostly the same pixels.

    Shape:
        - output: ``(len(groups), k)`` int64 group indices, ``k < len(groups)``
    """
    first = np.array([g[0] for g in groups])
    extra = min(k + 8, len(groups) - 1) if interest is not None else k
    candidates = appearance_neighbours(patches[first], extra)
    if interest is None:
        return candidates
    interest = np.asarray(interest, dtype=np.float64)[first]
    same_image = interest[candidates, 0] == interest[:, None, 0]
    distance = np.linalg.norm(interest[candidates, 1:3] - interest[:, None, 1:3], axis=2)
    overlap = same_image & (distance < 4.0 * np.exp2(interest[:, None, 4]))
    # the k best that do not overlap, in order (if fewer, the best overlapping ones after them)
    order = np.argsort(overlap, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, axis=1)


def lookalike_match_pairs(subset: BrownSubset, matches: np.ndarray, k: int = 8, seed: int = 0) -> np.ndarray:
    """``matches`` (``[patch1, patch2, label]`` rows) with the same positives and every
    negative's second patch replaced by a random patch of one of the first patch's point's
    ``k`` look-alike points (:func:`lookalike_groups` over every point of ``subset``): an
    evaluation set whose negatives are as hard as the repeated structures of one facade.

    Shape:
        - matches: ``(M, 3)`` int, label 1 = same point
        - output: ``(M, 3)``, the rows in the same order
    """
    matches = np.array(matches, dtype=np.int64)
    if matches.ndim != 2 or matches.shape[1] != 3:
        raise ValueError(f"matches must be (M, 3) [patch1, patch2, label] rows, got shape {matches.shape}")
    point_ids = np.asarray(subset.point_ids)
    groups = _point_groups(point_ids)
    if len(groups) < 2:
        raise ValueError(f"Brown subset {subset.name}: look-alike pairs need at least two 3D points")
    neighbours = lookalike_groups(subset.patches, groups, subset.interest, min(int(k), len(groups) - 1))
    group_of = np.empty(len(point_ids), dtype=np.int64)
    for g, members in enumerate(groups):
        group_of[members] = g
    sizes = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    negative = np.flatnonzero(matches[:, 2] == 0)
    chosen = neighbours[group_of[matches[negative, 0]], rng.integers(neighbours.shape[1], size=len(negative))]
    offset = (rng.random(len(negative)) * sizes[chosen]).astype(np.int64)
    matches[negative, 1] = [groups[g][o] for g, o in zip(chosen, offset)]
    return matches


def _fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a fraction in [0, 1], got {value}")
    return float(value)


class _Sampler(Dataset):
    """Base: a fixed number of items per epoch, redrawn by :meth:`set_epoch` from ``seed``."""

    keys: tuple[str, ...] = ()

    def __init__(
        self,
        subset: BrownSubset,
        n_items: int,
        seed: int = 0,
        augment: bool = False,
        hard_negatives: float = 0.0,
        lookalike_negatives: float = 0.0,
        lookalike_k: int = 8,
    ) -> None:
        _fraction("hard_negatives", hard_negatives)
        _fraction("lookalike_negatives", lookalike_negatives)
        if lookalike_negatives and int(lookalike_k) < 1:
            raise ValueError(f"lookalike_k must be >= 1, got {lookalike_k}")
        self.patches = subset.patches
        self.point_ids = np.asarray(subset.point_ids)
        self.groups = [g for g in _point_groups(self.point_ids) if len(g) >= 2]
        if not self.groups:
            raise ValueError(f"Brown subset {subset.name}: no 3D point has two patches")
        self.hard_negatives = float(hard_negatives)
        self.scenes = scene_ids(self.point_ids, subset.interest)
        # patches of every scene as one flat array (for same-scene negatives)
        self._scene_order = np.argsort(self.scenes, kind="stable")
        counts = np.bincount(self.scenes)
        self._scene_starts, self._scene_sizes = np.r_[0, np.cumsum(counts)[:-1]], counts
        self.group_scenes = self.scenes[[g[0] for g in self.groups]]
        self._scene_groups = [np.flatnonzero(self.group_scenes == s) for s in range(int(self.scenes.max()) + 1)]
        # the groups as one flat array, for vectorised draws
        self._flat = np.concatenate(self.groups)
        self._sizes = np.array([len(g) for g in self.groups])
        self._starts = np.r_[0, np.cumsum(self._sizes)[:-1]]
        self.lookalike_negatives = float(lookalike_negatives)
        self.neighbours = None  # (n_groups, k) look-alike groups of every group
        if self.lookalike_negatives > 0:
            if len(self.groups) < 2:
                raise ValueError("look-alike negatives need at least two 3D points with two patches")
            self.neighbours = self._lookalikes(subset, min(int(lookalike_k), len(self.groups) - 1))
            # patch -> its group (-1: a point seen once, never an anchor of a pair)
            self._group_of = np.full(len(self.point_ids), -1, dtype=np.int64)
            self._group_of[self._flat] = np.repeat(np.arange(len(self.groups)), self._sizes)
        self.n_items = int(n_items)
        self.seed = seed
        self.augment = augment
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.n_items

    def _lookalikes(self, subset: BrownSubset, k: int) -> np.ndarray:
        """``k`` look-alike groups of every group (see :func:`lookalike_groups`), kept in the
        subset's cache folder when it has one: the search takes about 25 s on 57k points, and
        every training run, seed and DDP rank would otherwise repeat it."""
        path = subset.cache / f"{LOOKALIKE_CACHE_PREFIX}k{k}.npy" if subset.cache is not None else None
        if path is not None and path.is_file():
            cached = np.load(path)
            if cached.shape == (len(self.groups), k):
                return cached
        neighbours = lookalike_groups(self.patches, self.groups, subset.interest, k)
        if path is not None:
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # one writer per process; the rename is atomic
            np.save(tmp, neighbours)
            os.replace(tmp, path)
        return neighbours

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.indices = self._draw(np.random.default_rng([self.seed, epoch]))

    def _draw(self, rng: np.random.Generator) -> np.ndarray:  # (n_items, len(keys)) patch indices
        raise NotImplementedError

    def _two_of(self, rng: np.random.Generator, group_ids: np.ndarray) -> np.ndarray:
        """Two distinct patches of each chosen point: ``(len(group_ids), 2)``."""
        group_ids = np.asarray(group_ids, dtype=np.int64)
        sizes = self._sizes[group_ids]
        first = rng.integers(sizes)
        second = (first + 1 + rng.integers(sizes - 1)) % sizes  # uniform over the others
        starts = self._starts[group_ids]
        return np.stack([self._flat[starts + first], self._flat[starts + second]], axis=1).reshape(-1, 2)

    def _negatives(self, rng: np.random.Generator, anchors: np.ndarray) -> np.ndarray:
        """One patch of another 3D point per anchor patch: from the anchor's scene with
        probability ``hard_negatives`` (when that scene has another point), else from anywhere."""
        anchors = np.asarray(anchors, dtype=np.int64)
        negatives = rng.integers(len(self.point_ids), size=len(anchors))
        if self.hard_negatives > 0:
            scene = self.scenes[anchors]
            local = rng.random(len(anchors)) < self.hard_negatives
            offset = (rng.random(len(anchors)) * self._scene_sizes[scene]).astype(np.int64)
            negatives = np.where(local, self._scene_order[self._scene_starts[scene] + offset], negatives)
        clash = np.flatnonzero(self.point_ids[negatives] == self.point_ids[anchors])
        for attempt in range(100):
            if not len(clash):
                return negatives
            # same scene again for the first tries (a scene of one point falls back to anywhere)
            scene = self.scenes[anchors[clash]]
            same = self.hard_negatives > 0 and attempt < 50
            offset = (rng.random(len(clash)) * self._scene_sizes[scene]).astype(np.int64)
            redraw = self._scene_order[self._scene_starts[scene] + offset] if same else rng.integers(len(self.point_ids), size=len(clash))
            negatives[clash] = redraw
            clash = clash[self.point_ids[negatives[clash]] == self.point_ids[anchors[clash]]]
        raise ValueError("too few distinct 3D points for non-matching pairs")

    def _with_lookalikes(self, rng: np.random.Generator, anchors: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """Replace a fraction ``lookalike_negatives`` of ``negatives`` by a random patch of one
        of the anchor point's look-alike points (anchors seen once keep their negative)."""
        if self.neighbours is None:
            return negatives
        anchors = np.asarray(anchors, dtype=np.int64)
        groups = self._group_of[anchors]
        chosen = np.flatnonzero((rng.random(len(anchors)) < self.lookalike_negatives) & (groups >= 0))
        if len(chosen):
            k = self.neighbours.shape[1]
            neighbour = self.neighbours[groups[chosen], rng.integers(k, size=len(chosen))]
            patch = self._flat[self._starts[neighbour] + rng.integers(self._sizes[neighbour])]
            # a neighbour of another point id always (groups are points); keep the check anyway
            fine = self.point_ids[patch] != self.point_ids[anchors[chosen]]
            negatives = negatives.copy()
            negatives[chosen[fine]] = patch[fine]
        return negatives

    def _patch(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.patches[index], dtype=np.float32) / 255.0).unsqueeze(0)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        row = self.indices[item]
        patches = [self._patch(int(i)) for i in row[: len(self.keys)]]
        if self.augment:
            # the same flip / rotation for every patch of an item (HardNet's --fliprot),
            # deterministic per (seed, epoch, item)
            k, flip = np.random.default_rng([self.seed, self.epoch, item, 7]).integers(0, [4, 2])
            patches = [torch.rot90(p, int(k), dims=(1, 2)) for p in patches]
            if flip:
                patches = [torch.flip(p, dims=(2,)) for p in patches]
        out = dict(zip(self.keys, patches))
        if len(row) > len(self.keys):
            out["label"] = torch.tensor(float(row[-1]))
        return out


class PairSampler(_Sampler):
    """Balanced pairs: even items match (two patches of one point), odd items do not."""

    keys = ("patch1", "patch2")

    def _draw(self, rng):
        n_pos = (self.n_items + 1) // 2
        positives = self._two_of(rng, rng.integers(len(self.groups), size=n_pos))
        n_neg = self.n_items - n_pos
        if self.hard_negatives > 0:
            first = rng.integers(len(self.point_ids), size=n_neg)
            negatives = np.stack([first, self._negatives(rng, first)], 1)
        else:
            negatives = np.empty((n_neg, 2), dtype=np.int64)
            filled = 0
            while filled < n_neg:
                a = rng.integers(len(self.point_ids), size=n_neg - filled)
                b = rng.integers(len(self.point_ids), size=n_neg - filled)
                good = self.point_ids[a] != self.point_ids[b]
                count = int(good.sum())
                negatives[filled : filled + count] = np.stack([a[good], b[good]], 1)
                filled += count
        negatives[:, 1] = self._with_lookalikes(rng, negatives[:, 0], negatives[:, 1])
        rows = np.zeros((self.n_items, 3), dtype=np.int64)
        rows[0::2, :2], rows[0::2, 2] = positives, 1
        rows[1::2, :2] = negatives
        return rows


class TripletSampler(_Sampler):
    """(anchor, positive, negative): a and p from one point, n from another point."""

    keys = ("anchor", "positive", "negative")

    def _draw(self, rng):
        groups = rng.integers(len(self.groups), size=self.n_items)
        pairs = self._two_of(rng, groups)
        if self.hard_negatives > 0:
            negatives = self._negatives(rng, pairs[:, 0])
        else:
            negatives = rng.integers(len(self.point_ids), size=self.n_items)
            anchor_points = self.point_ids[pairs[:, 0]]
            clash = self.point_ids[negatives] == anchor_points
            while clash.any():
                negatives[clash] = rng.integers(len(self.point_ids), size=int(clash.sum()))
                clash = self.point_ids[negatives] == anchor_points
        return np.column_stack([pairs, self._with_lookalikes(rng, pairs[:, 0], negatives)])


class PointSampler(_Sampler):
    """L2-Net / HardNet batches: every block of ``batch_size`` consecutive items holds pairs of
    ``batch_size`` distinct 3D points (load it with ``shuffle=False`` and that batch size).

    With ``hard_negatives=f``, a fraction f of each batch's points is taken scene by scene
    (all points of a random scene, then of another, ...), so the in-batch negatives the
    losses mine are mostly of the same scene; the rest are random points."""

    keys = ("anchor", "positive")

    def __init__(self, subset: BrownSubset, n_items: int, batch_size: int, seed: int = 0, augment: bool = False, **negatives) -> None:
        # negatives: hard_negatives / lookalike_negatives / lookalike_k, as in _Sampler
        self.batch_size = int(batch_size)
        n_points = sum(1 for g in _point_groups(np.asarray(subset.point_ids)) if len(g) >= 2)
        if self.batch_size > n_points:
            raise ValueError(f"batch_size {batch_size} exceeds the {n_points} 3D points with two patches")
        super().__init__(subset, n_items, seed, augment, **negatives)

    def _lookalike_points(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` distinct points in clusters: a random point, then its look-alikes not yet
        taken, then another random point, ..."""
        taken = np.zeros(len(self.groups), dtype=bool)
        chosen: list[int] = []
        while len(chosen) < size:
            start = int(rng.integers(len(self.groups)))
            if taken[start]:
                continue
            cluster = [start] + [int(n) for n in self.neighbours[start] if not taken[n]]
            cluster = list(dict.fromkeys(cluster))[: size - len(chosen)]
            taken[cluster] = True
            chosen.extend(cluster)
        return np.array(chosen, dtype=np.int64)

    def _scene_points(self, rng: np.random.Generator, size: int) -> np.ndarray:
        chosen: list[np.ndarray] = []
        count = 0
        for scene in rng.permutation(len(self._scene_groups)):
            take = rng.permutation(self._scene_groups[scene])[: size - count]
            chosen.append(take)
            count += len(take)
            if count == size:
                break
        return np.concatenate(chosen)

    def _draw(self, rng):
        blocks = []
        for start in range(0, self.n_items, self.batch_size):
            size = min(self.batch_size, self.n_items - start)
            n_look = int(round(self.lookalike_negatives * size)) if self.neighbours is not None else 0
            n_local = min(int(round(self.hard_negatives * size)), size - n_look)
            if n_look:
                look = self._lookalike_points(rng, n_look)
                local = np.empty(0, dtype=np.int64)
                if n_local:
                    # scene by scene as below, skipping the points already in the batch
                    scene = self._scene_points(rng, min(n_local + n_look, len(self.groups)))
                    local = scene[~np.isin(scene, look)][:n_local]
                rest = np.setdiff1d(np.arange(len(self.groups)), np.r_[look, local], assume_unique=True)
                points = np.r_[look, local, rng.choice(rest, size=size - n_look - len(local), replace=False)]
            elif n_local:
                local = self._scene_points(rng, n_local)
                rest = np.setdiff1d(np.arange(len(self.groups)), local, assume_unique=True)
                points = np.r_[local, rng.choice(rest, size=size - n_local, replace=False)]
            else:
                points = rng.choice(len(self.groups), size=size, replace=False)
            blocks.append(self._two_of(rng, points))
        return np.concatenate(blocks)


class EpochSampler(Sampler):
    """Item order of a training sampler; Lightning calls :meth:`set_epoch` before every epoch,
    which redraws the dataset's items for that epoch (and reshuffles when ``shuffle``)."""

    def __init__(self, dataset: _Sampler, shuffle: bool, seed: int = 0) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(len(self.dataset)))
        order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(self.dataset))
        return iter(order.tolist())


class MatchPairs(Dataset):
    """Pairs of an m50 match file: ``{"patch1", "patch2", "label"}``."""

    def __init__(self, subset: BrownSubset, matches: np.ndarray) -> None:
        self.patches = subset.patches
        self.matches = np.asarray(matches, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.matches)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        a, b, label = self.matches[item]
        return {
            "patch1": torch.from_numpy(np.array(self.patches[a], dtype=np.float32) / 255.0).unsqueeze(0),
            "patch2": torch.from_numpy(np.array(self.patches[b], dtype=np.float32) / 255.0).unsqueeze(0),
            "label": torch.tensor(float(label)),
        }


# --------------------------------------------------------------------------- datamodule


class BrownDataModule(pl.LightningDataModule):
    """Train on one Brown subset, validate / test on the m50 pairs of another.

    Args:
        data_root: folder holding ``brown/<subset>/`` (or the subsets directly).
        train_subset, test_subset: subset names (liberty / notredame / yosemite, or the
            generated real-data subsets, see ``real_data``).
        val_subset: subset of the validation pairs (default: ``test_subset``).
        sampler: ``pairs`` | ``triplets`` | ``points`` (see the module docstring).
        n_train: training items per epoch (None: one per training patch).
        n_val, n_test: caps on the validation / test pairs (None: the whole match file).
        test_match_file, val_match_file: m50 files of the evaluation pairs.
        augment: random rot90 / flip, the same for every patch of an item.
        hard_negatives: fraction of training negatives drawn from the anchor's own scene
            (``points``: of each batch's points taken scene by scene); 0 = uniform draws.
        lookalike_negatives: fraction of training negatives that are look-alikes of the anchor
            (``points``: of each batch's points taken in clusters of look-alikes), see the
            module docstring; ``lookalike_k`` neighbours per point.
        real_data: when set, keyword arguments of :func:`descriptors.writer.build_real_brown`:
            the subsets are generated from real images into ``cache_dir`` first.
        cache_dir: the memory-mapped patch caches (and generated sets) live here.
        seed: samples are a function of (seed, epoch) only.
    """

    def __init__(
        self,
        data_root: str | None = None,
        train_subset: str = "liberty",
        test_subset: str = "notredame",
        val_subset: str | None = None,
        sampler: str = "pairs",
        n_train: int | None = None,
        n_val: int | None = 10000,
        n_test: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = 1024,
        test_match_file: str = TEST_MATCH_FILE,
        val_match_file: str | None = None,
        augment: bool = False,
        hard_negatives: float = 0.0,
        lookalike_negatives: float = 0.0,
        lookalike_k: int = 8,
        real_data: dict | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if sampler not in ("pairs", "triplets", "points"):
            raise ValueError(f"sampler must be pairs, triplets or points, got {sampler!r}")
        self.data_root = data_root
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.val_subset = val_subset or test_subset
        self.sampler = sampler
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.test_match_file = test_match_file
        self.val_match_file = val_match_file or test_match_file
        self.augment = augment
        self.hard_negatives = hard_negatives
        self.lookalike_negatives = lookalike_negatives
        self.lookalike_k = lookalike_k
        self.real_data = dict(real_data) if real_data else None
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.seed = seed
        self.subsets: dict[str, BrownSubset] = {}
        self.splits: dict[str, Dataset] = {}

    def _root(self) -> str | None:
        if self.real_data is None:
            return self.data_root
        from .writer import build_real_brown

        if self.cache_dir is None:
            raise ValueError("real_data needs a cache_dir to write the generated subsets to")
        return str(build_real_brown(self.data_root, self.cache_dir, **self.real_data))

    def prepare_data(self) -> None:
        self._root()

    def subset(self, name: str) -> BrownSubset:
        """A subset by name (``train_subset``, ``val_subset``, ...), generated first where
        ``real_data`` says so; loaded once."""
        return self._subset(self._root(), name)

    def _subset(self, root: str | None, name: str) -> BrownSubset:
        if name not in self.subsets:
            self.subsets[name] = load_subset(root, name, self.cache_dir)
        return self.subsets[name]

    def _per_device(self, batch_size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the number of devices {world}")
        return batch_size // world

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        if all(split in self.splits for split in wanted):
            return
        root = self._root()
        if "train" in wanted and "train" not in self.splits:
            train = self._subset(root, self.train_subset)
            n_train = self.n_train or len(train)
            negatives = dict(hard_negatives=self.hard_negatives, lookalike_negatives=self.lookalike_negatives, lookalike_k=self.lookalike_k)
            if self.sampler == "pairs":
                self.splits["train"] = PairSampler(train, n_train, self.seed, self.augment, **negatives)
            elif self.sampler == "triplets":
                self.splits["train"] = TripletSampler(train, n_train, self.seed, self.augment, **negatives)
            else:
                per_device = self._per_device(self.batch_size)
                self.splits["train"] = PointSampler(train, n_train, per_device, self.seed, self.augment, **negatives)
        if "val" in wanted and "val" not in self.splits:
            val = self._subset(root, self.val_subset)
            self.splits["val"] = MatchPairs(val, val.matches(self.val_match_file)[: self.n_val])
        if "test" in wanted and "test" not in self.splits:
            test = self._subset(root, self.test_subset)
            self.splits["test"] = MatchPairs(test, test.matches(self.test_match_file)[: self.n_test])

    def train_dataloader(self) -> DataLoader:
        dataset = self.splits["train"]
        # points batches are built in order: shuffling would mix the distinct-point blocks
        sampler = EpochSampler(dataset, shuffle=self.sampler != "points", seed=self.seed)
        sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return DataLoader(
            dataset,
            batch_size=self._per_device(self.batch_size),
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self._per_device(self.eval_batch_size), shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
