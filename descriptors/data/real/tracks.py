"""Point tracks of calibrated multi-view sets (VGG's "Dinosaur" layout) as patch correspondences.

Layout of one set, ``<data_root>/multiview/<name>/`` (VGG Oxford multi-view data)::

    images/viff.000.ppm ...     one image per view, in view order
    <scene>.json                {"P": [[3x4], ...]}: the projection matrix of each view
    2d_tracked_points.csv       one track a line: x y of every view in turn, -1 -1 where unseen

Every track is one 3D point, triangulated from its views (:func:`triangulate_tracks`); its patch
in a view is cut at the reprojected point with a similarity frame:

* scale: every view covers the same 3D neighbourhood, a sphere of radius ``r`` around the point
  (its image spans ``f r / depth`` pixels in a view of focal length ``f``). Brown's points are
  DoG detections transferred through the reconstruction; the tracks here are tracked corners, so
  there is no detector scale to transfer, and a DoG detection would not fire at most of them: a
  fixed 3D size is the geometry the ground truth gives directly, and it stays exact across
  views however far the camera moves. ``r`` is set in pixels at the set's median depth
  (``radius``) and drawn per track, log-uniform within ``2**±scale_spread``, so that the patches
  are not all of one scale (DoG points are not either).
* orientation: the image direction of the scene's "up" (the mean of the cameras' up axes; on a
  turntable, the rotation axis) at the point. One 3D direction seen from each camera, so the
  patch orientation follows the camera (its roll, perspective off the image centre) as a
  detector's dominant gradient would, without its errors; "upright" in image coordinates would
  only be right for cameras that do not roll.

The view-to-view change left in the patches is the real one: foreshortening of the surface,
occlusion boundaries, lighting on a turning object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.linalg import rq

from core.errors import CorruptDatasetError, DatasetNotFoundError

from .geometry import frame_inside, keypoint_frames, warp_patches
from .writer import Correspondences, _ncc

TRACKS_FILE = "2d_tracked_points.csv"
IMAGE_SUFFIXES = (".ppm", ".png", ".jpg")
TRACKS_HINT = (
    "Multi-view sets live in <data_root>/multiview/<name>/ as images/viff.NNN.ppm, <scene>.json (a 3x4 P per view) and "
    "2d_tracked_points.csv (VGG Oxford multi-view data, e.g. the Dinosaur, from https://www.robots.ox.ac.uk/~vgg/data/ ; see the data README)"
)
#: the magnification that the Brown writer's interest.txt assumes (keypoint size = 2 radius / 2.5)
MAGNIFICATION = 2.5


@dataclass
class TrackSet:
    """``images[v]`` grey, ``projections`` ``(V, 3, 4)``, ``points`` ``(V, K, 2)`` the tracked
    position of track k in view v and ``observed`` ``(V, K)`` where it was tracked."""

    name: str
    images: list[np.ndarray]
    projections: np.ndarray
    points: np.ndarray
    observed: np.ndarray


def tracks_folder(data_root: str | os.PathLike, name: str) -> Path:
    return Path(data_root) / "multiview" / name


def is_track_set(data_root: str | os.PathLike | None, name: str) -> bool:
    """Whether ``name`` is a multi-view set under ``data_root`` rather than an image sequence
    (a sequence folder of that name wins, so the sequences read as before)."""
    if data_root is None:
        return False
    root = Path(data_root)
    sequences = root / "sequences" if (root / "sequences").is_dir() else root
    return tracks_folder(root, name).is_dir() and not (sequences / name).is_dir()


def _projections_file(folder: Path) -> Path:
    candidates = sorted(folder.glob("*.json"))
    if not candidates:
        raise DatasetNotFoundError("no camera file (<scene>.json with a 3x4 P per view) in", folder, TRACKS_HINT)
    return candidates[0]


def _read_projections(path: Path) -> np.ndarray:
    try:
        projections = np.asarray(json.loads(path.read_text())["P"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptDatasetError(f"camera file is not JSON with a list of 3x4 matrices under 'P' ({type(exc).__name__}: {exc})", path) from None
    if projections.ndim != 3 or projections.shape[1:] != (3, 4) or not len(projections) or not np.isfinite(projections).all():
        raise CorruptDatasetError(f"camera file holds matrices of shape {projections.shape}, expected (views, 3, 4)", path)
    return projections


def _read_tracks(path: Path, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetNotFoundError("track file missing", path, TRACKS_HINT)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = next((k for k, row in enumerate(rows) if len(row) != 2 * n_views), None)
    if bad is not None or not rows:
        found = f"line {bad + 1} holds {len(rows[bad])} numbers" if rows else "no track"
        raise CorruptDatasetError(f"track file: {found}, expected {2 * n_views} (x y in each of the {n_views} views of the camera file)", path)
    try:
        values = np.array(rows, dtype=np.float64).reshape(len(rows), n_views, 2)
    except ValueError as exc:
        raise CorruptDatasetError(f"track file has non-numeric values ({exc})", path) from None
    observed = (values >= 0).all(-1).T
    return values.transpose(1, 0, 2), observed


def read_track_set(folder: str | os.PathLike, name: str | None = None) -> TrackSet:
    """A multi-view set in the VGG layout (module docstring). Views are those of the camera
    file, images taken in name order: extra images are ignored (the Dinosaur's ``viff.036`` is a
    copy of ``viff.000``, closing the circle, and has no camera or track column)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError("multi-view set folder not found", folder, TRACKS_HINT)
    projections = _read_projections(_projections_file(folder))
    points, observed = _read_tracks(folder / TRACKS_FILE, len(projections))
    files = sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    vgg_names = [folder / "images" / f"viff.{v:03d}.ppm" for v in range(len(projections))]
    if not files or any(path.is_file() for path in vgg_names):
        missing = next((path for path in vgg_names if not path.is_file()), None)
        if missing is not None:
            raise DatasetNotFoundError("view image missing", missing, TRACKS_HINT)
        files = vgg_names
    elif len(files) < len(projections):
        raise DatasetNotFoundError(f"{len(files)} view images for {len(projections)} cameras in", folder / "images", TRACKS_HINT)
    images = []
    for path in files[: len(projections)]:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CorruptDatasetError("unreadable or truncated view image", path)
        images.append(image)
    return TrackSet(name or folder.name, images, projections, points, observed)


def write_track_set(folder: str | os.PathLike, images: Sequence[np.ndarray], projections: np.ndarray, points: np.ndarray,
                    observed: np.ndarray, scene: str = "scene") -> Path:
    """Write a set in the VGG layout (``points`` ``(V, K, 2)``, ``observed`` ``(V, K)``), as
    :func:`read_track_set` reads it: test scenes, or one's own reconstruction."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for v, image in enumerate(images):
        cv2.imwrite(str(folder / "images" / f"viff.{v:03d}.ppm"), image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    (folder / f"{scene}.json").write_text(json.dumps({"P": np.asarray(projections, dtype=np.float64).tolist()}))
    values = np.where(np.asarray(observed)[..., None], points, -1.0).transpose(1, 0, 2).reshape(points.shape[1], -1)
    (folder / TRACKS_FILE).write_text("".join(" ".join(f"{x:.2f}" for x in row) + "\n" for row in values))
    return folder


# --------------------------------------------------------------------------- geometry


def triangulate_tracks(projections: np.ndarray, points: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of every track over the views it was tracked in: ``(K, 3)``
    (nan for a track seen in fewer than two views). Each view adds the rows ``x P3 - P1`` and
    ``y P3 - P2``, scaled to unit norm, so that no view weighs more for its matrix's scale."""
    rows = np.concatenate([points[..., :1] * projections[:, None, 2] - projections[:, None, 0],
                           points[..., 1:] * projections[:, None, 2] - projections[:, None, 1]], axis=0)  # (2V, K, 4)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    rows = rows * np.concatenate([observed, observed])[..., None]
    _, _, vt = np.linalg.svd(rows.transpose(1, 0, 2))
    homogeneous = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        world = homogeneous[:, :3] / homogeneous[:, 3:]
    world[observed.sum(0) < 2] = np.nan
    return world


def project(projections: np.ndarray, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image points ``(V, K, 2)`` and the third coordinate ``w`` ``(V, K)`` of ``world`` ``(K, 3)``."""
    homogeneous = np.einsum("vij,kj->vki", projections, np.c_[world, np.ones(len(world))])
    return homogeneous[..., :2] / homogeneous[..., 2:], homogeneous[..., 2]


def decompose_cameras(projections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Focal length (pixels, geometric mean of fx, fy) ``(V,)`` and the rows of ``R``
    ``(V, 3, 3)`` of ``P[:, :3] = K R`` with ``K`` upper triangular of positive diagonal.
    ``R`` is orthogonal but may be a reflection (the Dinosaur's world frame is mirrored against
    its image frames) and is defined up to the sign of P; :func:`camera_signs` fixes that."""
    focal, rotations = np.empty(len(projections)), np.empty((len(projections), 3, 3))
    for v, P in enumerate(projections):
        K, R = rq(P[:, :3])
        D = np.diag(np.sign(np.diag(K)))
        K, R = K @ D, D @ R  # (D D = I)
        focal[v] = np.sqrt(K[0, 0] * K[1, 1]) / K[2, 2]
        rotations[v] = R
    return focal, rotations


def camera_signs(w: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """The sign ``(V,)`` that makes the depth of what each view sees positive: ``P`` and
    ``-P`` are the same camera, the tracked points are in front of it."""
    signs = np.array([np.sign(np.median(row[seen])) if seen.any() else 1.0 for row, seen in zip(w, observed & np.isfinite(w))])
    return np.where(signs == 0, 1.0, signs)


def track_frames(track_set: TrackSet, world: np.ndarray, radius: float = 10.0, scale_spread: float = 0.5, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch frames of the tracks' 3D points ``world`` ``(K, 3)`` in every view: centres
    ``(V, K, 2)``, linear parts ``(V, K, 2, 2)`` (the unit square [-1, 1]^2 of the patch to the
    image, as :func:`keypoint_frames`), depth ``(V, K)`` (nan behind a camera). Scale and
    orientation: see the module docstring; ``seed`` draws the per-track scales."""
    P = track_set.projections
    focal, rotations = decompose_cameras(P)
    centres, w = project(P, world)
    signs = camera_signs(w, track_set.observed)
    depth = w * signs[:, None] / np.linalg.norm(P[:, 2, :3], axis=1)[:, None]
    depth = np.where(depth > 0, depth, np.nan)
    seen = track_set.observed & np.isfinite(depth)
    reference = float(np.median((depth / focal[:, None])[seen])) if seen.any() else 1.0
    spread = 2.0 ** np.random.default_rng([seed, 29]).uniform(-scale_spread, scale_spread, len(world))
    pixels = focal[:, None] * (radius * reference * spread)[None] / depth  # f r / depth
    # up: the mean of the cameras' up axes (-R[1] for the sign that sees the points: image
    # y points down)
    up = -(signs[:, None] * rotations[:, 1]).mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    # image direction of a step along up at the point: (P[:2, :3] - x P[2, :3]) up / w
    direction = (np.einsum("vij,j->vi", P[:, :2, :3], up)[:, None] - centres * (P[:, 2, :3] @ up)[:, None, None]) / w[..., None]
    norm = np.linalg.norm(direction, axis=-1, keepdims=True)
    direction = np.where(norm > 1e-9, direction / np.maximum(norm, 1e-12), [0.0, -1.0])
    # the patch's +y axis (its "down") along the image's -up: (-sin a, cos a) = -direction
    angle = np.degrees(np.arctan2(direction[..., 0], -direction[..., 1]))
    keypoints = np.stack([centres[..., 0], centres[..., 1], 2 * np.nan_to_num(pixels) / MAGNIFICATION, angle], -1)
    _, linear = keypoint_frames(keypoints.reshape(-1, 4), MAGNIFICATION)
    return centres, linear.reshape(*centres.shape[:2], 2, 2), depth


def extract_track_correspondences(
    track_set: TrackSet,
    radius: float = 10.0,
    scale_spread: float = 0.5,
    min_ncc: float | None = 0.3,
    max_reprojection_error: float = 2.0,
    check_size: int = 32,
    seed: int = 0,
) -> Correspondences:
    """Every track as a correspondence over the views it was tracked in (the layout the Brown
    writer takes, :func:`descriptors.data.real.writer.write_brown_set`; ``inside`` = the
    track's views kept).

    A view is kept where the track was tracked, the triangulated point reprojects within
    ``max_reprojection_error`` pixels of the tracked position, lies in front of the camera and
    its patch frame inside the image, and (``min_ncc``) the patch's NCC with the patch of the
    track's reference view (the middle one of its views, the first of two, so that the widest
    baseline compared is half the track's) is at least ``min_ncc``; the reference is kept.
    The patches are cut at the reprojected point: one 3D point for all its views."""
    world = triangulate_tracks(track_set.projections, track_set.points, track_set.observed)
    centres, linear, depth = track_frames(track_set, world, radius, scale_spread, seed)
    error = np.linalg.norm(centres - track_set.points, axis=-1)
    inside = track_set.observed & np.isfinite(depth) & (error <= max_reprojection_error)
    n_views, n_tracks = inside.shape
    for v, image in enumerate(track_set.images):
        idx = np.flatnonzero(inside[v])
        inside[v, idx] &= frame_inside(centres[v, idx], linear[v, idx], image.shape[1], image.shape[0])
    reference = np.full(n_tracks, -1)
    for k in np.flatnonzero(inside.sum(0) >= 1):
        views = np.flatnonzero(inside[:, k])
        reference[k] = views[(len(views) - 1) // 2]
    ncc = np.full((n_views, n_tracks), np.nan)
    has_reference = np.flatnonzero(reference >= 0)
    ncc[reference[has_reference], has_reference] = 1.0
    reference_patches = np.zeros((n_tracks, check_size, check_size), dtype=np.uint8)
    for v in np.unique(reference[has_reference]):
        idx = np.flatnonzero(reference == v)
        reference_patches[idx] = warp_patches(track_set.images[v], centres[v, idx], linear[v, idx], check_size)
    report = []
    for v, image in enumerate(track_set.images):
        idx = np.flatnonzero(inside[v] & (reference != v))
        ncc[v, idx] = _ncc(reference_patches[idx], warp_patches(image, centres[v, idx], linear[v, idx], check_size))
        if min_ncc is not None:
            inside[v, idx[ncc[v, idx] < min_ncc]] = False
        report.append({"view": v, "tracked": int(track_set.observed[v].sum()), "checked": int(len(idx)), "kept": int(inside[v].sum()),
                       "median_ncc": float(np.median(ncc[v, idx])) if len(idx) else float("nan")})
    finite = track_set.observed & np.isfinite(error)
    report.insert(0, {"view": "all", "tracks": int(n_tracks), "triangulated": int(np.isfinite(world).all(1).sum()),
                      "median_reprojection_px": float(np.median(error[finite])) if finite.any() else float("nan"),
                      "tracks_kept": int((inside.sum(0) >= 2).sum()), "views_kept": int(inside[:, inside.sum(0) >= 2].sum())})
    # the reference view's keypoint of each track (nan without one), as image 1's in a sequence
    ref_xy = np.where((reference >= 0)[:, None], centres[np.maximum(reference, 0), np.arange(n_tracks)], np.nan)
    ref_linear = linear[np.maximum(reference, 0), np.arange(n_tracks)]
    keypoints = np.c_[ref_xy, 2 * np.sqrt(np.abs(np.linalg.det(ref_linear))) / MAGNIFICATION,
                      np.degrees(np.arctan2(ref_linear[:, 1, 0], ref_linear[:, 0, 0]))]
    return Correspondences(track_set.name, keypoints, centres, linear, inside, ncc, report)
