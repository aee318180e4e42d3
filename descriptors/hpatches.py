"""HPatches: the patch release reader, the official splits, the task lists and the three
tasks (verification, matching, retrieval), vectorised on torch.

Layout (``hpatches-release/<seq>/<image>.png``): grey PNGs 65 pixels wide, N*65 high, the
N patches of the sequence stacked vertically; images ``ref``, ``e1..e5``, ``h1..h5``,
``t1..t5`` (easy / hard / tough geometric noise). Sequences ``i_*`` change illumination,
``v_*`` viewpoint.

The tasks follow hpatches-benchmark's Python code (``python/utils/tasks.py`` and
``metrics.py``) exactly; :mod:`descriptors.hpatches_official` is a straight loop-by-loop
port of that logic, used as the reference in tests and in ``benchmarks/patch_eval.py``.
Both produce the same raw per-item numbers (:class:`HPatchesResults`), summarised the way
``utils/results.py`` does by :func:`summarize`. All APs are fractions in [0, 1].

Pair and query lists: the official ``tasks/verif_{pos,neg_intra,neg_inter}_split-X.csv``
and ``retr_{queries,distractors}_split-X.csv`` are read when given; otherwise they are
generated with the same random draws as ``gen_verif`` / ``gen_retrieval`` (seed 42).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from core.errors import CorruptDatasetError, DatasetNotFoundError

__all__ = [
    "HPATCHES_URL",
    "HPATCHES_TAR_MD5",
    "IMAGES",
    "LEVELS",
    "POOL_SIZES",
    "SPLITS_FILE",
    "read_sequence",
    "write_sequence",
    "find_release_dir",
    "load_hpatches",
    "load_splits",
    "split_sequences",
    "describe_sequences",
    "PairList",
    "VerificationPairs",
    "RetrievalLists",
    "generate_verification_pairs",
    "generate_retrieval_lists",
    "read_verification_pairs",
    "read_retrieval_lists",
    "write_verification_pairs",
    "write_retrieval_lists",
    "task_lists",
    "HPatchesResults",
    "verification_distances",
    "evaluate_verification",
    "evaluate_matching",
    "evaluate_retrieval",
    "summarize",
    "evaluate_hpatches",
    "download_hpatches",
]

HPATCHES_URL = "https://huggingface.co/datasets/vbalnt/hpatches/resolve/main/hpatches-release.zip"
#: md5 of the former ``hpatches-release.tar.gz`` (vbalnt/tfeat); the zip's is not published.
HPATCHES_TAR_MD5 = "0ab830d37fceb2b4c86cb1cc6cc79a61"
LEVELS = ("e", "h", "t")
IMAGES = ("ref",) + tuple(f"{level}{i}" for level in LEVELS for i in range(1, 6))
#: retrieval pool sizes of hpatches-benchmark (``at_ranks``)
POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)
SPLITS_FILE = Path(__file__).resolve().parent / "assets" / "hpatches_splits.json"
PATCH = 65
NEG_TYPES = ("intra", "inter")

_HINT = (
    f"Get the HPatches patch release ({HPATCHES_URL}, 4.2 GB), unzip it to "
    "<data_root>/hpatches-release/ and point the data root (DEEPMATCH_DATA) at it, "
    "or generate a set from real sequences with descriptors.writer.build_real_hpatches"
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


def describe_sequences(
    sequences: Mapping[str, Mapping[str, np.ndarray]],
    describe: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    batch_size: int = 4096,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``describe(uint8 (B, 65, 65)) -> (B, D)`` on every image of every sequence."""
    from tqdm import tqdm

    out: dict[str, dict[str, np.ndarray]] = {}
    for seq, images in tqdm(sequences.items(), desc="describing", disable=not progress, mininterval=2):
        out[seq] = {}
        for name, patches in images.items():
            parts = []
            for i in range(0, len(patches), batch_size):
                d = describe(np.ascontiguousarray(patches[i : i + batch_size]))
                parts.append(d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d))
            out[seq][name] = np.concatenate(parts).astype(np.float64, copy=False)
    return out


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


def _read_csv(path: Path, columns: list[str]) -> list[tuple]:
    if not path.is_file():
        raise DatasetNotFoundError("HPatches task list not found", path, "Copy the tasks/ folder of hpatches-benchmark, or leave tasks_dir unset to generate the lists")
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


def _write_csv(path: Path, columns: list[str], rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, path)


def read_verification_pairs(tasks_dir: str | os.PathLike, split_name: str) -> VerificationPairs:
    tasks_dir = Path(tasks_dir)
    return VerificationPairs(*(PairList.from_rows(_read_csv(tasks_dir / f"verif_{kind}_split-{split_name}.csv", _VERIF_COLUMNS)) for kind in ("pos", "neg_intra", "neg_inter")))


def write_verification_pairs(tasks_dir: str | os.PathLike, split_name: str, pairs: VerificationPairs) -> None:
    for kind, rows in zip(("pos", "neg_intra", "neg_inter"), (pairs.positives, pairs.negatives_intra, pairs.negatives_inter)):
        _write_csv(Path(tasks_dir) / f"verif_{kind}_split-{split_name}.csv", _VERIF_COLUMNS, rows)


def read_retrieval_lists(tasks_dir: str | os.PathLike, split_name: str) -> RetrievalLists:
    tasks_dir = Path(tasks_dir)
    return RetrievalLists(*(_read_csv(tasks_dir / f"retr_{kind}_split-{split_name}.csv", _RETR_COLUMNS) for kind in ("queries", "distractors")))


def write_retrieval_lists(tasks_dir: str | os.PathLike, split_name: str, lists: RetrievalLists) -> None:
    _write_csv(Path(tasks_dir) / f"retr_queries_split-{split_name}.csv", _RETR_COLUMNS, lists.queries)
    _write_csv(Path(tasks_dir) / f"retr_distractors_split-{split_name}.csv", _RETR_COLUMNS, lists.distractors)


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
        # names, sizes and the centre row of every ref patch (the std filter reads the patches)
        digest = hashlib.md5(json.dumps([n_pos, n_neg, n_queries, n_distractors, test]).encode())
        for name in test:
            digest.update(np.ascontiguousarray(sequences[name]["ref"][:, PATCH // 2]).tobytes())
        key = f"{split_name}-{digest.hexdigest()[:12]}"
        folder = Path(cache_dir) / "hpatches_tasks" / key
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


@dataclass
class HPatchesResults:
    """Raw per-item numbers, identical in layout for the fast code and the official port.

    ``verification[(level, neg_type)] = {"auc": balanced ROC AUC, "ap": imbalanced AP}``;
    ``matching[(seq, level, i)] = AP`` (i = 1..5); ``retrieval`` = float array
    ``(n_queries, 3 levels, len(pool_sizes))`` of APs.
    """

    verification: dict = field(default_factory=dict)
    matching: dict = field(default_factory=dict)
    retrieval: np.ndarray | None = None
    pool_sizes: tuple[int, ...] = POOL_SIZES
    seconds: dict = field(default_factory=dict)


def summarize(results: HPatchesResults) -> dict[str, float]:
    """The numbers of hpatches-benchmark's ``utils/results.py`` (fractions, not percent).

    verification: mean over e/h/t x intra/inter of the imbalanced AP (``verification_map``)
    and of the balanced AUC (``verification_auc``). matching: per level and sequence type
    (i/v) the mean over sequences of the mean AP over images 1..5; ``matching_map`` = mean of
    the i- and v-averages (of the one present when a set has one type only). retrieval: per
    level the mean over pool sizes of the mean AP over queries; ``retrieval_map`` = mean of e/h/t.
    """
    out: dict[str, float] = {}
    if results.verification:
        for balance, key in (("verification_auc", "auc"), ("verification_map", "ap")):
            values = [results.verification[(t, n)][key] for t in LEVELS for n in NEG_TYPES]
            out[balance] = float(np.mean(values))
        for t in LEVELS:
            for n in NEG_TYPES:
                out[f"verification_ap_{t}_{n}"] = float(results.verification[(t, n)]["ap"])
    if results.matching:
        type_means = {}
        for kind in ("i", "v"):
            seqs = sorted({s for s, _, _ in results.matching if s.split("_")[0] == kind})
            if not seqs:
                continue
            level_means = []
            for t in LEVELS:
                per_seq = [np.mean([results.matching[(s, t, i)] for i in range(1, 6)]) for s in seqs]
                level_means.append(float(np.mean(per_seq)))
                out[f"matching_map_{t}_{kind}"] = level_means[-1]
            type_means[kind] = float(np.mean(level_means))
            out[f"matching_map_{kind}"] = type_means[kind]
        other = sorted({s for s, _, _ in results.matching if s.split("_")[0] not in ("i", "v")})
        if other:  # sequences without an i_/v_ prefix count as one more type
            level_means = [float(np.mean([np.mean([results.matching[(s, t, i)] for i in range(1, 6)]) for s in other])) for t in LEVELS]
            type_means["other"] = float(np.mean(level_means))
        out["matching_map"] = float(np.mean(list(type_means.values())))
        for t in LEVELS:
            out[f"matching_map_{t}"] = float(np.mean([results.matching[k] for k in results.matching if k[1] == t]))
    if results.retrieval is not None and len(results.retrieval):
        per_level = results.retrieval.mean(axis=0).mean(axis=-1)  # (3,)
        for t, value in zip(LEVELS, per_level):
            out[f"retrieval_map_{t}"] = float(value)
        out["retrieval_map"] = float(per_level.mean())
    return out


# --------------------------------------------------------------------------- fast tasks (torch)


def _ap_from_sorted(labels: torch.Tensor, numpos: torch.Tensor | float) -> torch.Tensor:
    """hpatches ``metrics.pr`` AP from labels already in ranked order ``(..., L)``: the PR curve
    starts at (recall 0, precision 1), one point per ranked item, AP = trapezoid rule."""
    small = 1e-10
    tp = labels.to(torch.float64).cumsum(-1)
    ranks = torch.arange(1, labels.shape[-1] + 1, dtype=torch.float64, device=labels.device)
    numpos = torch.as_tensor(numpos, dtype=torch.float64, device=labels.device)
    zero = torch.zeros(labels.shape[:-1] + (1,), dtype=torch.float64, device=labels.device)
    tp = torch.cat([zero, tp], -1)
    total = torch.cat([zero, ranks.expand(labels.shape[:-1] + ranks.shape)], -1)
    recall = tp / numpos.clamp_min(small).unsqueeze(-1)
    precision = tp.clamp_min(small) / total.clamp_min(small)
    return ((recall[..., 1:] - recall[..., :-1]) * (precision[..., 1:] + precision[..., :-1]) / 2).sum(-1)


class _DescriptorTable:
    """All descriptors of a level in one tensor; a row per (sequence, image index, patch)."""

    def __init__(self, descriptors: Mapping[str, Mapping[str, np.ndarray]], level: str, device, dtype=torch.float64) -> None:
        self.offsets: dict[str, int] = {}
        self.lengths: dict[str, int] = {}
        blocks, offset = [], 0
        for seq, images in descriptors.items():
            n = len(images["ref"])
            self.offsets[seq], self.lengths[seq] = offset, n
            blocks.extend(np.asarray(images[image_name(t, level)]) for t in range(6))
            offset += 6 * n
        self.table = torch.as_tensor(np.concatenate(blocks), dtype=dtype, device=device)

    def rows(self, seqs: Sequence[str], images: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        offsets = np.array([self.offsets[s] for s in seqs], dtype=np.int64)
        lengths = np.array([self.lengths[s] for s in seqs], dtype=np.int64)
        if len(indices) and ((indices < 0) | (indices >= lengths)).any():
            bad = int(np.flatnonzero((indices < 0) | (indices >= lengths))[0])
            raise IndexError(f"patch index {indices[bad]} out of range for sequence {seqs[bad]} ({lengths[bad]} patches)")
        return torch.as_tensor(offsets + images * lengths + indices, device=self.table.device)


def _pair_rows(table: _DescriptorTable, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """Table rows of both sides of every pair (the same for every level: one layout)."""
    missing = [name for name in pairs.names.tolist() if name not in table.offsets]
    if missing:
        raise KeyError(f"pairs refer to sequences without descriptors: {missing[:5]}")
    name_offsets = np.array([table.offsets[name] for name in pairs.names.tolist()], dtype=np.int64)
    name_lengths = np.array([table.lengths[name] for name in pairs.names.tolist()], dtype=np.int64)

    def side(codes, images, indices) -> np.ndarray:
        lengths = name_lengths[codes]
        bad = (indices < 0) | (indices >= lengths) | (images < 0) | (images > 5)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise IndexError(f"pair {k}: image {images[k]} / patch {indices[k]} out of range for sequence {pairs.names[codes[k]]} ({lengths[k]} patches)")
        return name_offsets[codes] + images * lengths + indices

    return side(pairs.codes1, pairs.t1, pairs.idx1), side(pairs.codes2, pairs.t2, pairs.idx2)


def _distance_plan(a: np.ndarray, b: np.ndarray, n_rows: int) -> tuple[np.ndarray, ...]:
    """Distinct (a, b) row pairs in sorted order and the map back to every pair (level-independent)."""
    keys = a * n_rows + b
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(keys) else np.zeros(0, bool)
    return a[order[first]], b[order[first]], order, np.cumsum(first) - 1


def _gathered_distances(table: _DescriptorTable, a: np.ndarray, b: np.ndarray, distance: str, chunk: int = 1024, plan=None) -> torch.Tensor:
    """Distances of table rows ``a[k]``, ``b[k]`` in float64. Pairs are sorted by (a, b) and
    each distinct pair is computed once, in small chunks: within-sequence pairs then read a
    small block of the table and the gathered rows stay in cache."""
    if not len(a):
        return torch.zeros(0, dtype=torch.float64)
    unique_a, unique_b, order, inverse = plan if plan is not None else _distance_plan(a, b, len(table.table))
    unique = np.empty(len(unique_a))
    if table.table.device.type == "cpu":
        values = table.table.numpy()
        for start in range(0, len(unique_a), chunk):
            diff = values[unique_a[start : start + chunk]]
            diff -= values[unique_b[start : start + chunk]]
            unique[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff)) if distance == "L2" else np.abs(diff).sum(1)
    else:
        a_t, b_t = torch.as_tensor(unique_a, device=table.table.device), torch.as_tensor(unique_b, device=table.table.device)
        for start in range(0, len(unique_a), chunk * 256):
            diff = table.table[a_t[start : start + chunk * 256]] - table.table[b_t[start : start + chunk * 256]]
            unique[start : start + chunk * 256] = (diff.pow(2).sum(-1).sqrt() if distance == "L2" else diff.abs().sum(-1)).cpu().numpy()
    out = np.empty(len(a))
    out[order] = unique[inverse]
    return torch.from_numpy(out)


def _pair_distances(table: _DescriptorTable, rows: PairList, distance: str) -> torch.Tensor:
    return _gathered_distances(table, *_pair_rows(table, rows), distance)


def verification_distances(descriptors, pairs: VerificationPairs, level: str, neg_type: str = "intra", distance: str = "L2") -> tuple[np.ndarray, np.ndarray]:
    """Distances and labels ``[negatives; positives]`` of one level and negative type (for ROC plots)."""
    table = _DescriptorTable(descriptors, level, "cpu")
    d_pos = _pair_distances(table, pairs.positives, distance)
    d_neg = _pair_distances(table, pairs.negatives_intra if neg_type == "intra" else pairs.negatives_inter, distance)
    return torch.cat([d_neg, d_pos]).numpy(), np.r_[np.zeros(len(d_neg)), np.ones(len(d_pos))]


def _balanced_auc(d_neg: np.ndarray, d_pos: np.ndarray) -> float:
    """``metrics.roc`` AUC of ``-[d_neg; d_pos]``: the trapezoids have width only at negatives,
    where the curve's height is the share of positives ranked before; with the stable sort
    (negatives first on ties) that is the share of positives strictly closer."""
    if not len(d_neg) or not len(d_pos):
        return 0.0
    before = np.searchsorted(np.sort(d_pos), np.sort(d_neg), side="left")  # sorted: cache friendly
    return float(before.sum(dtype=np.float64) / (len(d_neg) * len(d_pos)))


def _imbalanced_ap(d_neg: np.ndarray, d_pos: np.ndarray) -> float:
    """``metrics.pr`` AP of ``-[d_neg; d_pos]``: recall steps of 1/P at each positive, from
    precision at the rank before (1 at rank 0) to precision at the positive's rank."""
    if not len(d_pos):
        return 0.0
    small = 1e-10
    c = np.arange(1, len(d_pos) + 1, dtype=np.float64)
    rank = c + np.searchsorted(np.sort(d_neg), np.sort(d_pos), side="right")  # negatives win ties
    previous = np.maximum(c - 1, small) / np.maximum(rank - 1, small)
    return float(np.sum((previous + c / rank) / 2) / len(d_pos))


def evaluate_verification(descriptors, pairs: VerificationPairs, distance: str = "L2", device: str | torch.device = "cpu") -> dict:
    """Balanced ROC AUC and imbalanced AP (first n_pos + 0.2 n_pos of [negatives; positives])
    per noise level and negative type, as ``eval_verification``; ranks are counted with
    sorted searches instead of sorting the 2M pooled distances."""
    results = {}
    rows = plans = None
    for level in LEVELS:
        table = _DescriptorTable(descriptors, level, device)
        if rows is None:
            rows = [_pair_rows(table, r) for r in (pairs.positives, pairs.negatives_intra, pairs.negatives_inter)]
            plans = [_distance_plan(a, b, len(table.table)) for a, b in rows]
        d_pos = _gathered_distances(table, *rows[0], distance, plan=plans[0]).numpy()
        n_imbalanced = len(d_pos) + int(len(d_pos) * 0.2)
        for neg_type, neg_rows, plan in zip(NEG_TYPES, rows[1:], plans[1:]):
            d_neg = _gathered_distances(table, *neg_rows, distance, plan=plan).numpy()
            k_neg = min(len(d_neg), n_imbalanced)
            results[(level, neg_type)] = {
                "auc": _balanced_auc(d_neg, d_pos),
                "ap": _imbalanced_ap(d_neg[:k_neg], d_pos[: n_imbalanced - k_neg]),
            }
    return results


def _cdist(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "L2":
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    if distance == "L1":
        return torch.cdist(a, b, p=1)
    raise ValueError(f"unknown distance {distance!r}; expected L2 or L1")


def _nearest(queries: torch.Tensor, databases: list[torch.Tensor], distance: str) -> list[torch.Tensor]:
    """Exact nearest neighbour (first index on ties) of every query in each database.

    L2: a float32 matmul over all databases at once screens the candidates, within a bound
    of float32's rounding error of the minimum; only those are compared with exact float64
    differences. The result is the argmin of the exact distances, as scipy's cdist gives.
    """
    if distance != "L2":
        return [_cdist(queries, d, distance).argmin(dim=1) for d in databases]
    q32 = queries.float()
    stacked = torch.cat(databases).float()
    sizes = [len(d) for d in databases]
    database_norms = stacked.pow(2).sum(-1)
    approx = database_norms.unsqueeze(0) - 2 * q32 @ stacked.T  # |q - d|^2 - |q|^2
    # float32 error of |d|^2 - 2 q.d is below ~D * eps * (|q|^2 + |d|^2): screen generously
    tolerance = 1e-4 * (q32.pow(2).sum(-1, keepdim=True) + database_norms.max()) + 1e-30
    out, start = [], 0
    for size, database in zip(sizes, databases):
        block = approx[:, start : start + size]
        start += size
        candidates = block <= block.min(dim=1, keepdim=True).values + tolerance
        rows, cols = candidates.nonzero(as_tuple=True)
        exact = (queries[rows] - database[cols]).pow(2).sum(-1)
        # per row: smallest exact distance, then smallest index
        order = np.lexsort((cols.cpu().numpy(), exact.cpu().numpy(), rows.cpu().numpy()))
        rows_sorted = rows.cpu().numpy()[order]
        first = np.r_[True, rows_sorted[1:] != rows_sorted[:-1]]
        nearest = torch.empty(len(queries), dtype=torch.long)
        nearest[torch.from_numpy(rows_sorted[first])] = cols.cpu()[torch.from_numpy(order[first])]
        out.append(nearest.to(queries.device))
    return out


def evaluate_matching(descriptors, sequences: Sequence[str] | None = None, distance: str = "L2", device: str | torch.device = "cpu") -> dict:
    """Nearest-neighbour matching ref -> image i of each level: AP of the NN distances with
    recall over all N reference patches, as ``eval_matching``."""
    results = {}
    names = [f"{level}{i}" for level in LEVELS for i in range(1, 6)]
    for seq in sequences or list(descriptors):
        ref = torch.as_tensor(np.asarray(descriptors[seq]["ref"]), dtype=torch.float64, device=device)
        truth = torch.arange(len(ref), device=device)
        others = [torch.as_tensor(np.asarray(descriptors[seq][name]), dtype=torch.float64, device=device) for name in names]
        # a float32 (N, 15 N) screen per group of images, kept under ~256 MB
        group = max(1, min(len(names), (64 << 20) // max(len(ref) ** 2, 1)))
        nearest_all = []
        for g in range(0, len(names), group):
            nearest_all += _nearest(ref, others[g : g + group], distance)
        for name, other, nearest in zip(names, others, nearest_all):
            diff = ref - other[nearest]
            nearest_distance = diff.pow(2).sum(-1).sqrt() if distance == "L2" else diff.abs().sum(-1)
            correct = nearest == truth
            order = torch.sort(nearest_distance, stable=True).indices
            results[(seq, name[0], int(name[1]))] = float(_ap_from_sorted(correct[order], len(ref)))
    return results


def evaluate_retrieval(
    descriptors, lists: RetrievalLists, distance: str = "L2", pool_sizes: Sequence[int] = POOL_SIZES, device: str | torch.device = "cpu", chunk: int = 128
) -> np.ndarray:
    """AP of the 5 corresponding patches of each query among [5 positives + the first k - 5
    distractors of other sequences], per level and pool size k, as ``eval_retrieval``.

    Instead of sorting each pool, the rank of every positive is counted: positives come first
    in the candidate list, so with the stable sort a distractor ranks before a positive only
    when strictly closer; one matmul per chunk of queries counts, per pool, the distractors
    closer than each positive.
    """
    q_seqs = [s for s, _ in lists.queries]
    q_idx = np.array([i for _, i in lists.queries], dtype=np.int64)
    d_seqs = [s for s, _ in lists.distractors]
    d_idx = np.array([i for _, i in lists.distractors], dtype=np.int64)
    ref_table = _DescriptorTable(descriptors, "e", device)  # image 0 = ref, whatever the level
    # official: query and distractor descriptors go through float32 (descr_from_idx(...).astype(float32))
    queries32 = ref_table.table[ref_table.rows(q_seqs, np.zeros_like(q_idx), q_idx)].float().double()
    distractors = ref_table.table[ref_table.rows(d_seqs, np.zeros_like(d_idx), d_idx)].float().double()
    seq_code = {s: k for k, s in enumerate(descriptors)}
    d_code = torch.as_tensor([seq_code[s] for s in d_seqs], device=device)
    q_code = torch.as_tensor([seq_code[s] for s in q_seqs], device=device)
    pools = torch.as_tensor(list(pool_sizes), device=device)
    n_pools = len(pool_sizes)
    aps = np.zeros((len(q_seqs), len(LEVELS), n_pools))
    positives = []
    for level in LEVELS:
        table = _DescriptorTable(descriptors, level, device)
        rows = torch.stack([table.rows(q_seqs, np.full_like(q_idx, i), q_idx) for i in range(1, 6)], 1)
        positives.append(table.table[rows])  # (Q, 5, D)
    for start in range(0, len(q_seqs), chunk):
        stop = min(start + chunk, len(q_seqs))
        dist_d = _cdist(queries32[start:stop], distractors, distance)  # (q, Nd)
        valid = d_code.unsqueeze(0) != q_code[start:stop].unsqueeze(1)  # other sequences only
        position = valid.cumsum(1)  # 1-based position among this query's distractors
        # pool bin of each distractor: the first pool k whose first k - 5 distractors hold it
        bins = torch.searchsorted(pools - 5, position.contiguous(), right=False)
        bins = torch.where(valid, bins, torch.full_like(bins, n_pools))
        # counts by float32 matmul: exact for counts below 2^24
        onehot = torch.nn.functional.one_hot(bins, n_pools + 1)[..., :n_pools].float()  # (q, Nd, P)
        for li in range(len(LEVELS)):
            query = queries32[start:stop].unsqueeze(1)  # (q, 1, D)
            dist_p = _cdist(query, positives[li][start:stop], distance).squeeze(1)  # (q, 5)
            dist_p = torch.sort(dist_p, dim=1, stable=True).values
            closer = (dist_d.unsqueeze(1) < dist_p.unsqueeze(2)).float()  # (q, 5, Nd)
            before = torch.bmm(closer, onehot).double().cumsum(-1)  # (q, 5, P) distractors ranked before
            c = torch.arange(1, 6, dtype=torch.float64, device=device).view(1, 5, 1)
            rank = c + before  # 1-based rank of the c-th positive
            previous = torch.where(rank > 1, (c - 1).clamp_min(1e-10) / (rank - 1).clamp_min(1e-10), torch.ones_like(rank))
            ap = ((previous + c / rank) / 2).sum(1) / 5  # recall steps of 1/5
            aps[start:stop, li] = ap.cpu().numpy()
    return aps


def evaluate_hpatches(
    descriptors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    *,
    sequences: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    describe: Callable[[np.ndarray], np.ndarray | torch.Tensor] | None = None,
    split: str = "full",
    tasks: Sequence[str] = ("verification", "matching", "retrieval"),
    tasks_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    distance: str = "L2",
    implementation: str = "fast",
    device: str | torch.device = "cpu",
    list_sizes: Mapping[str, int] | None = None,
    pool_sizes: Sequence[int] = POOL_SIZES,
    lists: tuple[VerificationPairs, RetrievalLists] | None = None,
) -> tuple[dict[str, float], HPatchesResults]:
    """Evaluate descriptors on HPatches; returns ``(summary, raw results)``.

    Give either precomputed ``descriptors`` ``{seq: {image: (N, D)}}`` or ``sequences`` of
    uint8 patches plus ``describe(uint8 (B, 65, 65)) -> (B, D)``. ``sequences`` are also
    needed to generate the retrieval lists (std filter) when ``tasks_dir`` is not given.
    ``implementation``: ``fast`` (this module) or ``official`` (the straight port).
    ``list_sizes``: n_pos / n_neg / n_queries / n_distractors of generated lists;
    ``lists``: already loaded ``(verification pairs, retrieval lists)`` (then neither is read).
    """
    import time

    if descriptors is None:
        if sequences is None or describe is None:
            raise ValueError("pass descriptors, or sequences and a describe function")
        descriptors = describe_sequences(sequences, describe)
    if sequences is None and tasks_dir is None and lists is None and "retrieval" in tasks:
        raise ValueError("generating the retrieval lists needs the patches (sequences=...)")
    source = sequences if sequences is not None else {k: {"ref": v["ref"]} for k, v in descriptors.items()}
    verification_pairs, retrieval_lists = lists if lists is not None else (None, None)
    if lists is None and {"verification", "retrieval"} & set(tasks):
        verification_pairs, retrieval_lists = task_lists(source, split, tasks_dir, cache_dir, **dict(list_sizes or {}))
    results = HPatchesResults(pool_sizes=tuple(pool_sizes))
    if implementation == "fast":
        run = {
            "verification": lambda: evaluate_verification(descriptors, verification_pairs, distance, device),
            "matching": lambda: evaluate_matching(descriptors, None, distance, device),
            "retrieval": lambda: evaluate_retrieval(descriptors, retrieval_lists, distance, pool_sizes, device),
        }
    elif implementation == "official":
        from . import hpatches_official as official

        run = {
            "verification": lambda: official.eval_verification(descriptors, verification_pairs, distance),
            "matching": lambda: official.eval_matching(descriptors, list(descriptors), distance),
            "retrieval": lambda: official.eval_retrieval(descriptors, retrieval_lists, list(descriptors), distance, pool_sizes),
        }
    else:
        raise ValueError(f"implementation must be fast or official, got {implementation!r}")
    for task in tasks:
        if task not in run:
            raise ValueError(f"unknown task {task!r}; expected verification, matching or retrieval")
        start = time.perf_counter()
        setattr(results, task, run[task]())
        results.seconds[task] = time.perf_counter() - start
    return summarize(results), results


def download_hpatches(root: str | os.PathLike, timeout: float = 300.0) -> Path:
    """Download and unzip the patch release to ``root/hpatches-release`` (4.2 GB)."""
    import tempfile
    import zipfile

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
