"""Training samplers over a Brown-layout subset, evaluation pairs and look-alike mining.

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

import os

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch.utils.data import Dataset, Sampler

from .brown import LOOKALIKE_CACHE_PREFIX, BrownSubset


def scene_ids(point_ids: np.ndarray, interest: np.ndarray | None) -> np.ndarray:
    """Scene of every patch ``(N,)`` int64: connected components of the image graph whose
    edges are the 3D points seen in two images (image = first column of interest.txt).
    Without interest.txt every patch is in scene 0."""
    point_ids = np.asarray(point_ids, dtype=np.int64)
    if interest is None or not len(point_ids):
        return np.zeros(len(point_ids), dtype=np.int64)
    images = np.unique(np.asarray(interest)[:, 0].astype(np.int64), return_inverse=True)[1].ravel()
    points = np.unique(point_ids, return_inverse=True)[1].ravel()
    # bipartite graph images + points: a patch links its image and its point
    n_images, n_points = int(images.max()) + 1, int(points.max()) + 1
    size = n_images + n_points
    graph = coo_matrix((np.ones(len(images)), (images, n_images + points)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return np.unique(labels[images], return_inverse=True)[1].ravel().astype(np.int64)


def point_groups(point_ids: np.ndarray) -> list[np.ndarray]:
    """Patch indices of every 3D point, in order of first appearance."""
    order = np.argsort(point_ids, kind="stable")
    sorted_ids = point_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    groups = np.split(order, starts[1:])
    return sorted(groups, key=lambda g: g[0])


def sample_match_pairs(point_ids: np.ndarray, n_pairs: int, seed: int = 0, scenes: np.ndarray | None = None) -> np.ndarray:
    """``(n_pairs, 2)`` patch index pairs, half matching (same point), half not, shuffled.

    ``scenes``: scene id per patch; when given, both patches of a non-matching pair come
    from one scene (as in a Brown subset, which is one scene)."""
    rng = np.random.default_rng(seed)
    groups = point_groups(point_ids)
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


def training_pairs(subset, n_pairs: int, seed: int = 0) -> np.ndarray:
    """``[i, j, label]`` rows of ``n_pairs`` pairs of a training subset, half matching, negatives
    within one scene (:func:`sample_match_pairs` with its scenes): how well a
    network fits the distribution it was trained on, next to the held-out sets (a gap between
    the two is transfer, not too little training)."""
    index = sample_match_pairs(subset.point_ids, int(n_pairs), seed=seed, scenes=scene_ids(subset.point_ids, subset.interest))
    labels = (subset.point_ids[index[:, 0]] == subset.point_ids[index[:, 1]]).astype(np.int64)
    return np.column_stack([index, labels])


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
    groups = point_groups(point_ids)
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
        self.groups = [g for g in point_groups(self.point_ids) if len(g) >= 2]
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
            try:
                cached = np.load(path)
            except (OSError, ValueError, EOFError):  # truncated or garbled: computed again below
                cached = None
            if cached is not None and cached.shape == (len(self.groups), k):
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
        n_points = sum(1 for g in point_groups(np.asarray(subset.point_ids)) if len(g) >= 2)
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
