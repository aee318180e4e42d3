"""HPatches patch release: the reader and writer of its layout, the official splits, the
download and the task lists (verification pairs, retrieval queries and distractors).

Layout (``hpatches-release/<seq>/<image>.png``): grey PNGs 65 pixels wide, N*65 high, the
N patches of the sequence stacked vertically; images ``ref``, ``e1..e5``, ``h1..h5``,
``t1..t5`` (easy / hard / tough geometric noise). Sequences ``i_*`` change illumination,
``v_*`` viewpoint.

Pair and query lists: the official ``tasks/verif_{pos,neg_intra,neg_inter}_split-X.csv``
and ``retr_{queries,distractors}_split-X.csv`` are read when given; otherwise they are
generated with the same random draws as ``gen_verif`` / ``gen_retrieval`` (seed 42).
The three tasks on these lists: :mod:`descriptors.evaluation.hpatches`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError
from core.files import atomic_file

from .plain_csv import MAX_NAME, parse_plain_csv

HPATCHES_URL = "https://huggingface.co/datasets/vbalnt/hpatches/resolve/main/hpatches-release.zip"
#: md5 of the former ``hpatches-release.tar.gz`` (vbalnt/tfeat); the zip's is not published.
HPATCHES_TAR_MD5 = "0ab830d37fceb2b4c86cb1cc6cc79a61"
LEVELS = ("e", "h", "t")
IMAGES = ("ref",) + tuple(f"{level}{i}" for level in LEVELS for i in range(1, 6))
#: retrieval pool sizes of hpatches-benchmark (``at_ranks``)
POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)
SPLITS_FILE = Path(__file__).resolve().parents[1] / "assets" / "hpatches_splits.json"
PATCH = 65
NEG_TYPES = ("intra", "inter")

_HINT = (
    f"Get the HPatches patch release ({HPATCHES_URL}, 4.2 GB), unzip it to "
    "<data_root>/hpatches-release/ and point the data root (DEEPMATCH_DATA) at it, "
    "or generate a set from real sequences with descriptors.data.real.portable.build_real_hpatches"
)


def image_name(t: int, level: str) -> str:
    """Image of index ``t`` (0 = ref, 1..5) at noise ``level``, as ``id2t`` in tasks.py."""
    return "ref" if t == 0 else f"{level}{t}"


# --------------------------------------------------------------------------- reader / writer


def _read_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError("HPatches image missing", path, _HINT)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CorruptDatasetError("unreadable or truncated HPatches image", path, "Delete the sequence and unzip it again")
    if image.shape[1] != PATCH or image.shape[0] % PATCH:
        raise CorruptDatasetError(f"HPatches image is {image.shape[1]}x{image.shape[0]}; expected width 65 and a height multiple of 65", path)
    return image


def read_patch_file(path: str | os.PathLike) -> np.ndarray:
    """One ``<image>.png`` as uint8 ``(N, 65, 65)``."""
    image = _read_png(Path(path))
    return image.reshape(-1, PATCH, PATCH)


def read_sequence(folder: str | os.PathLike, images: Sequence[str] = IMAGES) -> dict[str, np.ndarray]:
    """All images of a sequence folder: ``{name: uint8 (N, 65, 65)}``, the same N in each."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError("HPatches sequence folder not found", folder, _HINT)
    patches = {name: read_patch_file(folder / f"{name}.png") for name in images}
    counts = {name: len(p) for name, p in patches.items()}
    if len(set(counts.values())) > 1:
        ref = counts.get("ref", next(iter(counts.values())))
        bad = next(name for name, n in counts.items() if n != ref)
        raise CorruptDatasetError(f"{bad}.png has {counts[bad]} patches but ref.png {ref}", folder / f"{bad}.png")
    return patches


def write_sequence(folder: str | os.PathLike, patches: Mapping[str, np.ndarray]) -> Path:
    """Write ``{name: uint8 (N, 65, 65)}`` as ``<name>.png`` stacks (the official layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, stack in patches.items():
        stack = np.asarray(stack, dtype=np.uint8)
        if stack.ndim != 3 or stack.shape[1:] != (PATCH, PATCH):
            raise ValueError(f"{name}: patches must be (N, 65, 65), got {stack.shape}")
        cv2.imwrite(str(folder / f"{name}.png"), stack.reshape(-1, PATCH))
    return folder


def find_release_dir(root: str | os.PathLike) -> Path:
    """``root/hpatches-release``, ``root/hpatches/hpatches-release`` or ``root`` itself."""
    if root is None:
        raise DatasetNotFoundError("no data root configured for HPatches", "<unset>", _HINT)
    root = Path(root).expanduser()
    for folder in (root / "hpatches-release", root / "hpatches" / "hpatches-release", root):
        if folder.is_dir() and any((p / "ref.png").is_file() for p in folder.iterdir() if p.is_dir()):
            return folder
    raise DatasetNotFoundError("HPatches release (folders <seq>/ref.png) not found under", root, _HINT)


def load_hpatches(
    root: str | os.PathLike, split: str | Mapping = "full", splits_file: str | os.PathLike | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """The test sequences of ``split`` under ``root``: ``{seq: {image: (N, 65, 65)}}``."""
    folder = find_release_dir(root)
    available = sorted(p.name for p in folder.iterdir() if (p / "ref.png").is_file())
    names = split_sequences(split, available, splits_file)
    return {name: read_sequence(folder / name) for name in names}


def load_splits(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Split definitions ``{name: {"test": [...], "train": [...]}}``; default: the official
    splits.json content (embedded), or a user-supplied file in the same format."""
    path = Path(path) if path else SPLITS_FILE
    if not path.is_file():
        raise DatasetNotFoundError("HPatches splits file not found", path, "Pass the splits.json of hpatches-benchmark (tasks/splits/splits.json)")
    try:
        splits = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptDatasetError(f"cannot parse splits file ({exc})", path) from exc
    if not isinstance(splits, dict) or not all(isinstance(v, dict) and "test" in v for v in splits.values()):
        raise CorruptDatasetError("splits file must map split names to objects with a 'test' list", path)
    return splits


def split_sequences(split: str | Mapping, available: Sequence[str], splits_file: str | os.PathLike | None = None) -> list[str]:
    """Test sequences of a split among ``available``.

    ``full`` / ``illum`` / ``view`` are all / the ``i_*`` / the ``v_*`` sequences present (the
    official definitions; generated sets have other sequence names). ``a`` / ``b`` / ``c`` (or
    any name of ``splits_file``) are fixed lists that must all be present. A mapping with a
    ``test`` list is used as given.
    """
    available = list(available)
    if isinstance(split, Mapping):
        names = list(split["test"])
    elif split == "full":
        return available
    elif split == "illum":
        return [s for s in available if s.startswith("i_")]
    elif split == "view":
        return [s for s in available if s.startswith("v_")]
    else:
        splits = load_splits(splits_file)
        if split not in splits:
            raise ValueError(f"unknown HPatches split {split!r}; known: {sorted(splits)}")
        names = list(splits[split]["test"])
    missing = [s for s in names if s not in available]
    if missing:
        raise DatasetNotFoundError(f"split {split if isinstance(split, str) else 'custom'} needs sequences {missing[:5]}{'...' if len(missing) > 5 else ''}, missing in the release", "hpatches-release", _HINT)
    return names


# --------------------------------------------------------------------------- task lists


class PairList:
    """A verification pair list as columns ``s1, t1, idx1, s2, t2, idx2`` (sequence names,
    image indices 0..5 with 0 = ref, patch indices); iterating yields the rows as tuples."""

    columns = ("s1", "t1", "idx1", "s2", "t2", "idx2")

    def __init__(self, s1, t1, idx1, s2, t2, idx2) -> None:
        self.s1, self.s2 = np.asarray(s1, dtype=str), np.asarray(s2, dtype=str)
        self.t1, self.idx1, self.t2, self.idx2 = (np.asarray(v, dtype=np.int64) for v in (t1, idx1, t2, idx2))
        if len({len(getattr(self, c)) for c in self.columns}) > 1:
            raise ValueError("pair list columns differ in length")
        # sequence names as codes into one name table (like a pandas Categorical), so the
        # evaluation maps names to descriptor rows with array indexing
        self.names, codes = np.unique(np.concatenate([self.s1, self.s2]), return_inverse=True)
        self.codes1, self.codes2 = codes[: len(self.s1)], codes[len(self.s1) :]

    # built on first use when the pairs come as codes (1M names as strings are 100+ MB)
    @functools.cached_property
    def s1(self) -> np.ndarray:
        return self.names[self.codes1]

    @functools.cached_property
    def s2(self) -> np.ndarray:
        return self.names[self.codes2]

    @classmethod
    def from_codes(cls, names, codes1, t1, idx1, codes2, t2, idx2) -> PairList:
        """From sequence codes into the sorted unique ``names`` (the fast list reader's output)."""
        pairs = cls.__new__(cls)
        pairs.names = np.asarray(names, dtype=str)
        pairs.codes1, pairs.codes2 = np.asarray(codes1, dtype=np.int64), np.asarray(codes2, dtype=np.int64)
        pairs.t1, pairs.idx1, pairs.t2, pairs.idx2 = (np.asarray(v, dtype=np.int64) for v in (t1, idx1, t2, idx2))
        # the codes, not s1 / s2: asking for those would build the 1M name strings this avoids
        if len({len(getattr(pairs, c)) for c in ("codes1", "t1", "idx1", "codes2", "t2", "idx2")}) > 1:
            raise ValueError("pair list columns differ in length")
        return pairs

    @classmethod
    def from_rows(cls, rows) -> PairList:
        rows = list(rows)
        if not rows:
            return cls([], [], [], [], [], [])
        return cls(*zip(*rows))

    def __len__(self) -> int:
        return len(self.t1)

    def __iter__(self):
        return zip(self.s1.tolist(), self.t1.tolist(), self.idx1.tolist(), self.s2.tolist(), self.t2.tolist(), self.idx2.tolist())

    def __eq__(self, other) -> bool:
        return isinstance(other, PairList) and all(np.array_equal(getattr(self, c), getattr(other, c)) for c in self.columns)

    def __repr__(self) -> str:
        return f"PairList({len(self)} pairs)"


@dataclass
class VerificationPairs:
    """The three lists of the verification task (lists of row tuples are converted)."""

    positives: PairList
    negatives_intra: PairList
    negatives_inter: PairList

    def __post_init__(self) -> None:
        for name in ("positives", "negatives_intra", "negatives_inter"):
            value = getattr(self, name)
            if not isinstance(value, PairList):
                setattr(self, name, PairList.from_rows(value))


@dataclass
class RetrievalLists:
    """``(s, idx)`` reference patches: the queries and the distractors."""

    queries: list[tuple]
    distractors: list[tuple]


def generate_verification_pairs(lengths: Mapping[str, int], test: Sequence[str], n_pos: int = 1_000_000, n_neg: int = 1_000_000, seed: int = 42) -> VerificationPairs:
    """The pair lists of ``gen_verif``: the same draws from a legacy numpy RandomState(seed).

    Positives: a random test sequence, two distinct patch indices (the first is used twice),
    two distinct image indices from 0..4. Intra negatives: the same rows with the second
    index. Inter negatives: the positive's first patch against a random patch of a random
    test sequence (which may be the same sequence, as in the official code).
    """
    rng = np.random.RandomState(seed)
    s = rng.choice(list(test), int(n_pos))
    s_idx = np.array([rng.choice(np.arange(lengths[k]), 2, replace=False) for k in s])
    s_type = np.array([rng.choice(np.arange(5), 2, replace=False) for _ in s_idx])
    s_inter = rng.choice(list(test), int(n_neg))
    s_idx_inter = np.array([rng.randint(lengths[k]) for k in s_inter])
    pos = PairList(s, s_type[:, 0], s_idx[:, 0], s, s_type[:, 1], s_idx[:, 0])
    intra = PairList(s, s_type[:, 0], s_idx[:, 0], s, s_type[:, 1], s_idx[:, 1])
    # the official DataFrame aligns the columns by index: with n_neg != n_pos rows are cut to the shorter
    n = min(len(s), len(s_inter))
    inter = PairList(s[:n], s_type[:n, 0], s_idx[:n, 0], s_inter[:n], s_type[:n, 1], s_idx_inter[:n])
    return VerificationPairs(pos, intra, inter)


def generate_retrieval_lists(
    sequences: Mapping[str, Mapping[str, np.ndarray]], test: Sequence[str], n_queries: int = 5000, n_distractors: int = 20000, seed: int = 42, min_std: float = 10.0
) -> RetrievalLists:
    """The lists of ``gen_retrieval``: 4x ``n_queries`` and 10x ``n_distractors`` random
    reference patches, kept if their std > 10, de-duplicated in order, the first
    ``n_queries`` queries, then the first ``n_distractors`` distractors that are no query."""
    rng = np.random.RandomState(seed)
    lengths = {k: len(sequences[k]["ref"]) for k in test}
    s_q = rng.choice(list(test), int(n_queries * 4))
    s_q_idx = np.array([rng.randint(lengths[k]) for k in s_q])
    s_d = rng.choice(list(test), int(n_distractors * 10))
    s_d_idx = np.array([rng.randint(lengths[k]) for k in s_d])

    def textured(seqs, idxs):
        return [(str(s), int(i)) for s, i in zip(seqs, idxs) if np.std(sequences[s]["ref"][i]) > min_std]

    queries = list(dict.fromkeys(textured(s_q, s_q_idx)))[: int(n_queries)]
    taken = set(queries)
    distractors = [d for d in dict.fromkeys(textured(s_d, s_d_idx)) if d not in taken][: int(n_distractors)]
    return RetrievalLists(queries, distractors)


_VERIF_COLUMNS = ["s1", "t1", "idx1", "s2", "t2", "idx2"]
_RETR_COLUMNS = ["s", "idx"]


def _read_csv_rows(path: Path, columns: list[str]) -> list[tuple]:
    """The plain ``csv`` parse: the reference and the fallback of :func:`read_task_columns`
    (quoted fields, CRLF, signs or spaces in numbers); its errors name the line."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != columns:
            raise CorruptDatasetError(f"task list header is {header}, expected {columns}", path)
        rows = []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(columns):
                raise CorruptDatasetError(f"line {number} has {len(row)} columns, expected {len(columns)}", path)
            try:
                rows.append(tuple(v if c.startswith("s") else int(v) for c, v in zip(columns, row)))
            except ValueError as exc:
                raise CorruptDatasetError(f"line {number}: {exc}", path) from exc
    return rows


def read_task_columns(path: str | os.PathLike, columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An official task list as columns: ``(names, {column: array})``; sequence-name columns
    (``s``, ``s1``, ``s2``) hold int64 codes into the sorted ``names``, the others int64 values.

    One read into a padded buffer, then :func:`~descriptors.data.plain_csv.parse_plain_csv`
    (a scan for separators, 8-byte words per field, in numpy, ~2 MB parts in threads): less
    CPU and wall time than ``pandas.read_csv`` on the 1M-row verification lists (``make
    benchmark-patch-eval`` times both), where a ``csv`` row loop takes ~15 s. Lists that are not plain digits and names (quotes,
    CRLF, signs, spaces, longer fields) go through the ``csv`` module, which also words the errors.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError("HPatches task list not found", path, "Copy the tasks/ folder of hpatches-benchmark, or leave tasks_dir unset to generate the lists")
    size = path.stat().st_size
    buffer = np.empty(size + 9 + MAX_NAME, dtype=np.uint8)  # 8 spare, the file, a newline, room for a name's words
    with open(path, "rb") as handle:
        size = handle.readinto(memoryview(buffer)[8 : 8 + size])
    end = 8 + size
    buffer[:8] = buffer[end:] = 0  # only the padding needs clearing, not the whole file's bytes
    if size and buffer[end - 1] != 10:
        buffer[end] = 10
        end += 1
    data = memoryview(buffer)[8:end]
    newline = bytes(data[: min(len(data), 4096)]).find(b"\n")
    header = bytes(data[:newline]) if newline >= 0 else b""
    parsed = None
    if header.decode(errors="replace").split(",") == columns:
        if end == 8 + newline + 1:
            parsed = np.zeros(0, dtype=str), {c: np.zeros(0, dtype=np.int64) for c in columns}
        else:  # quotes and CR are below ',': the parse gives None on them
            parsed = parse_plain_csv(buffer, 8 + newline + 1, end, columns)
    if parsed is None:
        rows = _read_csv_rows(path, columns)
        text = [c for c in columns if c.startswith("s")]
        names, codes = np.unique(np.array([r[columns.index(c)] for c in text for r in rows], dtype=str), return_inverse=True)
        parsed = names, {c: np.array([r[j] for r in rows], dtype=np.int64) for j, c in enumerate(columns) if not c.startswith("s")}
        parsed[1].update({c: codes[n * len(rows) : (n + 1) * len(rows)].astype(np.int64) for n, c in enumerate(text)})
    return parsed


def _read_csv(path: Path, columns: list[str]) -> list[tuple]:
    """A task list as row tuples (the retrieval lists; small)."""
    names, values = read_task_columns(path, columns)
    return list(zip(*(names[values[c]].tolist() if c.startswith("s") else values[c].tolist() for c in columns)))


def _write_csv(path: Path, columns: list[str], rows: list[tuple]) -> None:
    # a private temporary file: two runs writing the same task list never mix their rows
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def read_verification_pairs(tasks_dir: str | os.PathLike, split_name: str) -> VerificationPairs:
    tasks_dir = Path(tasks_dir)
    lists = []
    for kind in ("pos", "neg_intra", "neg_inter"):
        names, v = read_task_columns(tasks_dir / f"verif_{kind}_split-{split_name}.csv", _VERIF_COLUMNS)
        lists.append(PairList.from_codes(names, v["s1"], v["t1"], v["idx1"], v["s2"], v["t2"], v["idx2"]))
    return VerificationPairs(*lists)


def write_verification_pairs(tasks_dir: str | os.PathLike, split_name: str, pairs: VerificationPairs) -> None:
    for kind, rows in zip(("pos", "neg_intra", "neg_inter"), (pairs.positives, pairs.negatives_intra, pairs.negatives_inter)):
        _write_csv(Path(tasks_dir) / f"verif_{kind}_split-{split_name}.csv", _VERIF_COLUMNS, rows)


def read_retrieval_lists(tasks_dir: str | os.PathLike, split_name: str) -> RetrievalLists:
    tasks_dir = Path(tasks_dir)
    return RetrievalLists(*(_read_csv(tasks_dir / f"retr_{kind}_split-{split_name}.csv", _RETR_COLUMNS) for kind in ("queries", "distractors")))


def write_retrieval_lists(tasks_dir: str | os.PathLike, split_name: str, lists: RetrievalLists) -> None:
    _write_csv(Path(tasks_dir) / f"retr_queries_split-{split_name}.csv", _RETR_COLUMNS, lists.queries)
    _write_csv(Path(tasks_dir) / f"retr_distractors_split-{split_name}.csv", _RETR_COLUMNS, lists.distractors)


def task_lists_cache_dir(
    sequences: Mapping[str, Mapping[str, np.ndarray]], split_name: str, cache_dir: str | os.PathLike,
    n_pos: int = 1_000_000, n_neg: int = 1_000_000, n_queries: int = 5000, n_distractors: int = 20000,
) -> Path:
    """The folder of :func:`task_lists`' generated lists in ``cache_dir`` (official CSV files)."""
    # names, sizes and the centre row of every ref patch (the std filter reads the patches)
    digest = hashlib.md5(json.dumps([n_pos, n_neg, n_queries, n_distractors, list(sequences)]).encode())
    for name in sequences:
        digest.update(np.ascontiguousarray(sequences[name]["ref"][:, PATCH // 2]).tobytes())
    return Path(cache_dir) / "hpatches_tasks" / f"{split_name}-{digest.hexdigest()[:12]}"


def task_lists(
    sequences: Mapping[str, Mapping[str, np.ndarray]],
    split_name: str,
    tasks_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    n_pos: int = 1_000_000,
    n_neg: int = 1_000_000,
    n_queries: int = 5000,
    n_distractors: int = 20000,
) -> tuple[VerificationPairs, RetrievalLists]:
    """The official lists from ``tasks_dir`` when given, else generated (and cached as the
    official CSV files in ``cache_dir`` when given)."""
    if tasks_dir is not None:
        return read_verification_pairs(tasks_dir, split_name), read_retrieval_lists(tasks_dir, split_name)
    test = list(sequences)
    if cache_dir is not None:
        folder = task_lists_cache_dir(sequences, split_name, cache_dir, n_pos, n_neg, n_queries, n_distractors)
        try:
            return read_verification_pairs(folder, split_name), read_retrieval_lists(folder, split_name)
        except (DatasetNotFoundError, CorruptDatasetError):
            pass
    lengths = {k: len(v["ref"]) for k, v in sequences.items()}
    verification = generate_verification_pairs(lengths, test, n_pos, n_neg)
    retrieval = generate_retrieval_lists(sequences, test, n_queries, n_distractors)
    if cache_dir is not None:
        write_verification_pairs(folder, split_name, verification)
        write_retrieval_lists(folder, split_name, retrieval)
    return verification, retrieval


# --------------------------------------------------------------------------- results


def download_hpatches(root: str | os.PathLike, timeout: float = 300.0) -> Path:
    """Download and unzip the patch release to ``root/hpatches-release`` (4.2 GB)."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".hpatches.", suffix=".zip.part", dir=root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(HPATCHES_URL, timeout=timeout) as response:
            while block := response.read(1 << 22):
                out.write(block)
        with zipfile.ZipFile(tmp) as archive:
            archive.extractall(root)
    except (urllib.error.URLError, OSError, TimeoutError, zipfile.BadZipFile) as exc:
        raise DatasetNotFoundError(f"could not download {HPATCHES_URL} ({exc}) into", root, _HINT) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return find_release_dir(root)
