"""Patch sets from real images with ground-truth homographies.

Detect SIFT keypoints (position, scale, orientation) in image 1, map each through H to
images 2..N, keep those whose patch lands inside, and cut rotated, scaled patches
(:mod:`descriptors.data.real.geometry`).

Outputs: the Brown layout (:func:`write_brown_set`, read back by :mod:`descriptors.data.brown`)
and the HPatches layout with easy / hard / tough frame jitter (:func:`write_hpatches_set`);
:func:`write_real_brown` and :func:`write_real_hpatches` write the whole real-data sets that
:mod:`descriptors.data.real.portable` builds and caches.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from core.errors import DatasetNotFoundError

from ..brown import write_subset
from ..hpatches import write_sequence
from ..samplers import sample_match_pairs
from .geometry import (
    SEQUENCES_HINT,
    ImageSequence,
    apply_homography,
    frame_inside,
    frame_overlap,
    jitter_frames,
    keypoint_frames,
    local_affine,
    read_grey,
    read_image_sequence,
    synthetic_sequence,
    warp_patches,
)

log = logging.getLogger(__name__)

def detect_keypoints(image: np.ndarray, max_keypoints: int = 2000, min_size: float = 3.0) -> np.ndarray:
    """OpenCV SIFT keypoints of a grey image as ``(K, 4)``: x, y, size, angle (degrees),
    strongest first, duplicates (same position and size, other orientation) kept once."""
    keypoints = cv2.SIFT_create(nfeatures=max_keypoints * 2).detect(image, None)
    keypoints = sorted(keypoints, key=lambda k: -k.response)
    rows, seen = [], set()
    for k in keypoints:
        key = (round(k.pt[0], 1), round(k.pt[1], 1), round(k.size, 1))
        if k.size < min_size or key in seen:
            continue
        seen.add(key)
        rows.append((k.pt[0], k.pt[1], k.size, k.angle))
        if len(rows) == max_keypoints:
            break
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a):
        return np.zeros(0)
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-9)


@dataclass
class Correspondences:
    """Keypoints of image 1 and their frames in every image.

    ``keypoints`` ``(K, 4)`` (x, y, size, angle in image 1); ``centres`` ``(N, K, 2)``,
    ``linear`` ``(N, K, 2, 2)``: the frame in image n; ``inside`` ``(N, K)`` bool;
    ``ncc`` ``(N, K)``: NCC of each patch with its image-1 patch (nan when outside);
    ``report``: per image pair counts and median NCC.
    """

    name: str
    keypoints: np.ndarray
    centres: np.ndarray
    linear: np.ndarray
    inside: np.ndarray
    ncc: np.ndarray
    report: list[dict] = field(default_factory=list)


def match_detections(
    predicted: np.ndarray, detections: np.ndarray, max_offset: float = 0.3, max_log2_scale: float = 0.5, max_angle: float | None = 30.0
) -> np.ndarray:
    """Index into ``detections`` ``(D, 4)`` of the detection nearest to each predicted
    keypoint ``(K, 4)`` (x, y, size, angle in degrees), or -1: it must lie within
    ``max_offset`` times the predicted size, its size within ``2**±max_log2_scale`` of the
    predicted size and (unless None) its orientation within ``max_angle`` degrees."""
    out = np.full(len(predicted), -1, dtype=np.int64)
    if not len(detections) or not len(predicted):
        return out
    tree = cKDTree(detections[:, :2])
    k = min(8, len(detections))
    distances, indices = tree.query(predicted[:, :2], k=k)
    distances, indices = distances.reshape(len(predicted), k), indices.reshape(len(predicted), k)
    log_ratio = np.abs(np.log2(detections[indices, 2] / predicted[:, None, 2]))
    ok = (distances <= max_offset * predicted[:, None, 2]) & (log_ratio <= max_log2_scale)
    if max_angle is not None:
        turn = np.abs((detections[indices, 3] - predicted[:, None, 3] + 180.0) % 360.0 - 180.0)
        ok &= turn <= max_angle
    # nearest acceptable candidate (the query returns them sorted by distance)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(len(predicted)), first]
    out[found] = indices[np.flatnonzero(found), first[found]]
    return out


def extract_correspondences(
    sequence: ImageSequence,
    max_keypoints: int = 1000,
    magnification: float = 2.5,
    min_ncc: float | None = None,
    check_size: int = 32,
    redetect: bool = False,
    max_offset: float = 0.3,
    max_log2_scale: float = 0.5,
    max_angle: float | None = 30.0,
    min_compression: float | None = None,
    keypoint_density: float | None = None,
    seed: int = 0,
) -> Correspondences:
    """Detect in image 1, map the frames through each H, keep what lands inside.

    ``min_ncc``: a correspondence in image n is dropped (``inside`` False) when the NCC of
    its patch with the image-1 patch is below this (for sequences whose H is wrong in places).
    ``redetect``: detect keypoints in every image independently and use, in image n, the
    detected frame (position, scale, orientation) nearest to the mapped one (see
    :func:`match_detections`); keypoints without such a detection are dropped in image n.
    Corresponding patches then carry the detector's own noise and the viewpoint's affine
    distortion, as in Brown (DoG keypoints matched through 3D) instead of exact frames.
    ``min_compression``: drop a correspondence in image n where H shrinks the image-1
    neighbourhood by more than this in some direction (smallest singular value of its
    Jacobian below ``min_compression``): there image n no longer resolves what the image-1
    patch shows (a detector would not fire there at that scale), so the pair is label noise.
    ``keypoint_density``: detect this many keypoints per megapixel of image 1 (the strongest)
    and keep ``max_keypoints`` of them drawn at random (``seed``) instead of the strongest
    ``max_keypoints``: weak keypoints (stochastic texture, grain) are kept in proportion, as
    in a sequence whose every detection is used.
    """
    image1 = sequence.images[0]
    if keypoint_density is None:
        keypoints = detect_keypoints(image1, max_keypoints)
    else:
        pool = detect_keypoints(image1, max(max_keypoints, int(round(keypoint_density * image1.size / 1e6))))
        keep = np.sort(np.random.default_rng(seed).permutation(len(pool))[:max_keypoints])
        keypoints = pool[keep]
    if sequence.valid_y_max is not None:
        keypoints = keypoints[keypoints[:, 1] <= sequence.valid_y_max]
    centres1, linear1 = keypoint_frames(keypoints, magnification)
    keep = frame_inside(centres1, linear1, image1.shape[1], image1.shape[0])
    keypoints, centres1, linear1 = keypoints[keep], centres1[keep], linear1[keep]
    n = len(sequence.images)
    centres = np.empty((n, len(keypoints), 2))
    linear = np.empty((n, len(keypoints), 2, 2))
    inside = np.zeros((n, len(keypoints)), dtype=bool)
    ncc = np.full((n, len(keypoints)), np.nan)
    reference = warp_patches(image1, centres1, linear1, check_size)
    report = []
    for i, (image, H) in enumerate(zip(sequence.images, sequence.homographies)):
        jacobian = local_affine(H, centres1)
        centres[i] = apply_homography(H, centres1)
        linear[i] = jacobian @ linear1
        found = np.ones(len(keypoints), dtype=bool)
        if redetect and i > 0:
            # the mapped frame's size and orientation (keypoint_frames: first column = angle)
            size = keypoints[:, 2] * np.sqrt(np.abs(np.linalg.det(jacobian)))
            angle = np.rad2deg(np.arctan2(linear[i, :, 1, 0], linear[i, :, 0, 0]))
            detections = detect_keypoints(image, 2 * max_keypoints)
            matched = match_detections(np.c_[centres[i], size, angle], detections, max_offset, max_log2_scale, max_angle)
            found = matched >= 0
            if found.any():
                centres[i, found], linear[i, found] = keypoint_frames(detections[matched[found]], magnification)
        inside[i] = frame_inside(centres[i], linear[i], image.shape[1], image.shape[0]) & found
        if min_compression is not None and i > 0:
            inside[i] &= np.linalg.svd(jacobian, compute_uv=False)[:, -1] >= min_compression
        if i == 0:
            ncc[0] = 1.0
            continue
        idx = np.flatnonzero(inside[i])
        ncc[i, idx] = _ncc(reference[idx], warp_patches(image, centres[i, idx], linear[i, idx], check_size))
        n_inside = len(idx)
        if min_ncc is not None:
            inside[i, idx[ncc[i, idx] < min_ncc]] = False
        report.append(
            {
                "pair": f"1-{i + 1}",
                "keypoints": int(len(keypoints)),
                "inside": n_inside,
                "kept": int(inside[i].sum()),
                "median_ncc": float(np.nanmedian(ncc[i, idx])) if n_inside else float("nan"),
            }
        )
    return Correspondences(sequence.name, keypoints, centres, linear, inside, ncc, report)


# --------------------------------------------------------------------------- HPatches noise

#: Frame jitter per HPatches noise level: max rotation (degrees), max log2 anisotropic
#: scale, max translation (fraction of the patch radius). Tuned so the median overlap of the
#: jittered and true frames is ~0.85 (easy), ~0.73 (hard), ~0.6 (tough) (measured with
#: frame_overlap; rotation does not change the overlap of a disk, only the patch content).


def jitter_correspondences(rng: np.random.Generator, corr: Correspondences, sequence: ImageSequence, level: str) -> Correspondences:
    """Jitter every frame of every image independently (:func:`jitter_frames` at an HPatches
    noise level), in place: corresponding patches then differ as independent noisy detections
    do. Frames pushed outside their image are dropped (``inside`` False)."""
    for i, image in enumerate(sequence.images):
        corr.linear[i], corr.centres[i] = jitter_frames(rng, corr.linear[i], corr.centres[i], level)
        corr.inside[i] &= frame_inside(corr.centres[i], corr.linear[i], image.shape[1], image.shape[0])
    return corr


# --------------------------------------------------------------------------- writers


def write_brown_set(
    folder: str | os.PathLike,
    correspondences: Sequence[Correspondences],
    sequences: Sequence[ImageSequence],
    n_match_pairs: int = 10000,
    seed: int = 0,
    patch_size: int = 64,
    scene_negatives: bool = False,
) -> dict:
    """One Brown-layout subset: every kept keypoint is a 3D point, with one 64x64 patch per
    image it lands in (at least two); ``m50_<n>_<n>_0.txt`` holds ``n_match_pairs`` pairs, half
    matching (``scene_negatives``: both patches of a non-matching pair from one sequence, as
    in a one-scene Brown subset). Returns the per-pair report and counts."""
    patches, point_ids, interest, scenes = [], [], [], []
    image_offset, point_offset = 0, 0
    for scene, (corr, seq) in enumerate(zip(correspondences, sequences)):
        counts = corr.inside.sum(0)
        good = np.flatnonzero(counts >= 2)
        for i, image in enumerate(seq.images):
            idx = good[corr.inside[i, good]]
            if not len(idx):
                continue
            patches.append(warp_patches(image, corr.centres[i, idx], corr.linear[i, idx], patch_size))
            point_ids.append(point_offset + np.searchsorted(good, idx))
            scenes.append(np.full(len(idx), scene, dtype=np.int64))
            size = np.sqrt(np.abs(np.linalg.det(corr.linear[i, idx]))) * 2 / 2.5
            angle = np.arctan2(corr.linear[i, idx, 1, 0], corr.linear[i, idx, 0, 0])
            interest.append(np.c_[np.full(len(idx), image_offset + i), corr.centres[i, idx], angle, np.log2(np.maximum(size, 1e-6))])
        image_offset += len(seq.images)
        point_offset += len(good)
    if not patches:
        raise ValueError("no keypoint landed in two images: nothing to write")
    patches_arr = np.concatenate(patches)
    point_arr = np.concatenate(point_ids).astype(np.int64)
    # group the patches of a point together, as in the official files
    order = np.argsort(point_arr, kind="stable")
    patches_arr, point_arr, interest_arr = patches_arr[order], point_arr[order], np.concatenate(interest)[order]
    scene_arr = np.concatenate(scenes)[order] if scene_negatives else None
    pairs = sample_match_pairs(point_arr, n_match_pairs, seed, scene_arr)
    name = f"m50_{n_match_pairs}_{n_match_pairs}_0.txt"
    write_subset(folder, patches_arr, point_arr, interest_arr, {name: pairs})
    return {"patches": int(len(point_arr)), "points": int(point_offset), "match_file": name}


def write_hpatches_set(folder: str | os.PathLike, correspondences: Correspondences, sequence: ImageSequence, seed: int = 0, patch_size: int = 65) -> dict:
    """One HPatches-layout sequence folder: the keypoints inside all images; ``ref`` = image 1
    without noise, ``<level><i>`` = image i+1 with the level's frame jitter. Returns the
    median overlap of each level's jitter."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(correspondences.inside.all(0))
    if not len(keep):
        raise ValueError(f"{sequence.name}: no keypoint lands inside every image")
    c, lin = correspondences.centres[:, keep], correspondences.linear[:, keep]
    stacks = {"ref": warp_patches(sequence.images[0], c[0], lin[0], patch_size)}
    overlaps = {}
    for level in ("e", "h", "t"):
        values = []
        for i in range(1, min(6, len(sequence.images))):
            inv = np.linalg.inv(lin[i])
            jl, jc = jitter_frames(rng, lin[i], c[i], level)
            # the jitter in frame coordinates, for the overlap measure
            values.append(frame_overlap(inv @ jl, np.einsum("kij,kj->ki", inv, jc - c[i]), samples=48))
            stacks[f"{level}{i}"] = warp_patches(sequence.images[i], jc, jl, patch_size)
        overlaps[level] = float(np.median(np.concatenate(values)))
    write_sequence(folder, stacks)
    return {"patches": int(len(keep)), "median_overlap": overlaps}


# --------------------------------------------------------------------------- real-data sets


def missing_photo_sources(data_root: str | os.PathLike, n_coil: int | None = 40, n_logos: int | None = 40) -> list[tuple[str, str, Path]]:
    """The photo folders that :func:`photo_sources` is asked for (``n_coil`` / ``n_logos`` not
    0) but that are missing or hold no photo under ``data_root``, as ``(option, what, folder)``."""
    root = Path(data_root)
    wanted = (("n_coil", n_coil, "COIL-100 views (obj*__*.png)", root / "coil100", "obj*__*.png"),
              ("n_logos", n_logos, "FlickrLogos-27 scenes (*.jpg)", root / "flickrlogos27" / "images", "*.jpg"))
    return [(option, what, folder) for option, n, what, folder, pattern in wanted if n != 0 and not any(folder.glob(pattern))]


def photo_sources(data_root: str | os.PathLike | None, n_coil: int | None = 40, n_logos: int | None = 40, skimage_photos: bool = True, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Single real photos: scikit-image's photos, COIL-100 views (upsampled x2: they are
    128x128), FlickrLogos-27 scenes (longest side 640), as ``(name, grey uint8)``;
    ``n_coil`` / ``n_logos``: how many of each, drawn at random (None = all); a missing
    folder gives none of its photos (:func:`missing_photo_sources` says which)."""
    rng = np.random.default_rng(seed)
    photos: list[tuple[str, np.ndarray]] = []
    if skimage_photos:
        from skimage import data as skdata

        for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon", "page", "text", "immunohistochemistry"):
            try:
                image = getattr(skdata, name)()
            except Exception as exc:  # some photos need pooch downloads in newer releases
                log.info("skimage.data.%s unavailable (%s)", name, exc)
                continue
            if image.ndim == 3:
                image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
            photos.append((f"skimage_{name}", np.ascontiguousarray(image, dtype=np.uint8)))
    root = Path(data_root) if data_root else None
    if root is not None and n_coil != 0 and (root / "coil100").is_dir():
        files = sorted((root / "coil100").glob("obj*__*.png"))
        n_coil = len(files) if n_coil is None else min(n_coil, len(files))
        for path in (files[i] for i in sorted(rng.choice(len(files), n_coil, replace=False))):
            image = read_grey(path)
            photos.append((f"coil_{path.stem}", cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)))
    if root is not None and n_logos != 0 and (root / "flickrlogos27" / "images").is_dir():
        files = sorted((root / "flickrlogos27" / "images").glob("*.jpg"))
        n_logos = len(files) if n_logos is None else min(n_logos, len(files))
        for path in (files[i] for i in sorted(rng.choice(len(files), n_logos, replace=False))):
            image = read_grey(path)
            scale = 640.0 / max(image.shape)
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            photos.append((f"logo_{path.stem}", image))
    return photos


#: bumped whenever build_real_brown writes something else for the same settings (part of its
#: cache key, so an older cached set is never reused); 4: built in a portable process
#: (:func:`portable_build_env`), the same patches on every CPU


def sequences_folder(data_root) -> Path:
    if data_root is None:
        raise DatasetNotFoundError("no data root configured for the real sequences", "<unset>", SEQUENCES_HINT)
    root = Path(data_root)
    return root / "sequences" if (root / "sequences").is_dir() else root


def _held_out_subset(data_root, name: str, test_keypoints, magnification, min_ncc, track_options: dict):
    """The correspondences of a validation / test subset and what they were cut from: a real
    sequence with the exact frames and the NCC check, or a multi-view set's tracks."""
    from . import tracks as multiview  # (here: tracks builds on this module)

    if multiview.is_track_set(data_root, name):
        source = multiview.read_track_set(multiview.tracks_folder(data_root, name))
        return multiview.extract_track_correspondences(source, **track_options), source
    source = read_image_sequence(sequences_folder(data_root) / name)
    return extract_correspondences(source, test_keypoints, magnification, min_ncc), source


def write_real_brown(
    folder: Path, *, build: dict, data_root, settings: dict, train_sequences, test_sequence, train_name, n_coil, n_logos, skimage_photos,
    views_per_photo, keypoints_per_image, test_keypoints, magnification, min_ncc, n_train_pairs, n_test_pairs, seed,
    perspective, max_rotation, max_scale, realistic_photometric, redetect, scene_negatives, min_compression,
    degrade_reference, keypoint_density, frame_jitter, val_sequences, max_tilt,
    track_sets=(), track_radius=10.0, track_scale_spread=0.5, track_min_ncc=0.3,
) -> None:
    """The body of :func:`build_real_brown` (run in its portable process): writes the subsets
    and ``done.json`` into ``folder``, a private build folder that the caller publishes.
    ``val_sequences`` and ``test_sequence`` may name a multi-view set (its tracks are cut)."""
    from . import tracks as multiview  # (here: tracks builds on this module)

    sequences_dir = sequences_folder(data_root)
    tmp = Path(folder)
    report: dict = {"settings": settings, "build": build, "pairs": {}}
    track_options = {"radius": track_radius, "scale_spread": track_scale_spread, "min_ncc": track_min_ncc, "seed": seed}
    train_corr, train_seqs = [], []
    for name in train_sequences:
        seq = read_image_sequence(sequences_dir / name)
        corr = extract_correspondences(seq, test_keypoints, magnification, min_ncc, redetect=redetect, min_compression=min_compression)
        train_corr.append(corr)
        train_seqs.append(seq)
        report["pairs"][name] = corr.report
    for name in track_sets:
        track_set = multiview.read_track_set(multiview.tracks_folder(data_root, name))
        corr = multiview.extract_track_correspondences(track_set, **track_options)
        train_corr.append(corr)
        train_seqs.append(track_set)  # (the Brown writer reads its images only)
        report["pairs"][name] = corr.report
    photos = photo_sources(data_root, n_coil, n_logos, skimage_photos, seed)
    for k, (name, image) in enumerate(tqdm(photos, desc="real Brown set: photos", mininterval=2)):
        seq = synthetic_sequence(name, image, views_per_photo, seed=seed * 100003 + k, strength=perspective, max_rotation=max_rotation, max_scale=max_scale, realistic=realistic_photometric, degrade_reference=degrade_reference, max_tilt=max_tilt)
        train_corr.append(extract_correspondences(seq, keypoints_per_image, magnification, None, redetect=redetect, min_compression=min_compression, keypoint_density=keypoint_density, seed=seed * 100003 + k))
        train_seqs.append(seq)
    if frame_jitter is not None:
        rng = np.random.default_rng([seed, 17])
        for corr, seq in zip(train_corr, train_seqs):
            jitter_correspondences(rng, corr, seq, frame_jitter)
    report["train"] = write_brown_set(tmp / train_name, train_corr, train_seqs, n_train_pairs, seed, scene_negatives=scene_negatives)
    for k, name in enumerate(val_sequences):
        # exactly as the test subset is cut (exact frames, NCC check, one scene)
        val_corr, val_source = _held_out_subset(data_root, name, test_keypoints, magnification, min_ncc, track_options)
        report["pairs"][name] = val_corr.report
        report.setdefault("val", {})[name] = write_brown_set(tmp / name, [val_corr], [val_source], n_test_pairs, seed + 2 + k)
    test_corr, test_source = _held_out_subset(data_root, test_sequence, test_keypoints, magnification, min_ncc, track_options)
    report["pairs"][test_sequence] = test_corr.report
    report["test"] = write_brown_set(tmp / test_sequence, [test_corr], [test_source], n_test_pairs, seed + 1)
    (tmp / "done.json").write_text(json.dumps(report, indent=2))


def write_real_hpatches(folder: Path, *, build: dict, data_root, settings: dict, sequences, n_synthetic, max_keypoints, synthetic_keypoints, magnification, min_ncc, seed) -> None:
    """The body of :func:`build_real_hpatches` (run in its portable process): writes
    ``hpatches-release/`` and ``report.json`` into ``folder``, a private build folder that the
    caller publishes."""
    sequences_dir = sequences_folder(data_root)
    tmp = Path(folder)
    report: dict = {"settings": settings, "build": build, "sequences": {}}
    todo: list[tuple[ImageSequence, int, float | None]] = []
    for name in sequences:
        seq = read_image_sequence(sequences_dir / name, name=name if name.startswith(("v_", "i_")) else f"v_{name}")
        todo.append((seq, max_keypoints, min_ncc))
    if n_synthetic:
        for k, (name, image) in enumerate(photo_sources(None, 0, 0, True, seed)[:n_synthetic]):
            todo.append((synthetic_sequence(f"v_synth_{name.removeprefix('skimage_')}", image, 6, seed=seed * 7919 + k), synthetic_keypoints, None))
    for k, (seq, n_keypoints, threshold) in enumerate(todo):
        corr = extract_correspondences(seq, n_keypoints, magnification, threshold)
        info = write_hpatches_set(tmp / "hpatches-release" / seq.name, corr, seq, seed=seed + k)
        report["sequences"][seq.name] = {**info, "pairs": corr.report}
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
