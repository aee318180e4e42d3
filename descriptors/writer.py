"""Patch sets from real images with ground-truth homographies.

Detect SIFT keypoints (position, scale, orientation) in image 1, map each through H to
images 2..N, keep those whose patch lands inside, and cut rotated, scaled patches: the
patch frame in image n is the keypoint frame of image 1 pushed through the local affine
approximation of H at the keypoint (its Jacobian). Sequences come from

* the Oxford affine layout (``img1.ppm .. img6.ppm``, ``H1to2p ..``),
* the HPatches-sequences layout (``1.ppm .. 6.ppm``, ``H_1_2 ..``),
* single photos under random homographies and photometric changes (:func:`synthetic_sequence`).

Outputs: the Brown layout (:func:`write_brown_set`, read back by :mod:`descriptors.brown`)
and the HPatches layout with easy / hard / tough frame jitter (:func:`write_hpatches_set`).
:func:`build_real_brown` and :func:`build_real_hpatches` build the cached real-data sets.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.errors import CorruptDatasetError, DatasetError, DatasetNotFoundError

log = logging.getLogger(__name__)

__all__ = [
    "ImageSequence",
    "read_image_sequence",
    "synthetic_sequence",
    "random_homography",
    "photometric_change",
    "detect_keypoints",
    "local_affine",
    "warp_patches",
    "Correspondences",
    "extract_correspondences",
    "JITTER",
    "jitter_frames",
    "jitter_correspondences",
    "frame_overlap",
    "write_brown_set",
    "write_hpatches_set",
    "photo_sources",
    "build_real_brown",
    "build_real_hpatches",
    "GRAF_VALID_Y_MAX",
    "REAL_BROWN_VERSION",
    "REAL_HPATCHES_VERSION",
    "portable_build_env",
    "match_detections",
]

#: graf's lower band (a parked car, window glass in front of the wall) is off the wall
#: plane, so its homography is wrong there: keypoints of image 1 below this row are dropped.
GRAF_VALID_Y_MAX = 455.0

_HINT = "Real sequences live in <data_root>/sequences/ (see the data README)"


@dataclass
class ImageSequence:
    """Grey images ``images[0..N-1]`` and ``homographies[n]`` mapping image 1 to image n+1
    (``homographies[0]`` = identity). ``valid_y_max``: keypoints of image 1 below are dropped."""

    name: str
    images: list[np.ndarray]
    homographies: list[np.ndarray]
    valid_y_max: float | None = None


def _read_grey(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError("sequence image missing", path, _HINT)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CorruptDatasetError("unreadable or truncated sequence image", path)
    return image


def _read_homography(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError("homography file missing", path, _HINT)
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise CorruptDatasetError(f"homography file has non-numeric values ({exc})", path) from exc
    if values.size != 9:
        raise CorruptDatasetError(f"homography file holds {values.size} numbers, expected 9 (3x3)", path)
    return values.reshape(3, 3) / values[-1]


def read_image_sequence(folder: str | os.PathLike, name: str | None = None, n_images: int = 6) -> ImageSequence:
    """An Oxford (``img1.ppm``, ``H1to2p``) or HPatches (``1.ppm``, ``H_1_2``) sequence folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError("image sequence folder not found", folder, _HINT)
    name = name or folder.name
    if (folder / "img1.ppm").exists() or (folder / "H1to2p").exists():
        images = [_read_grey(folder / f"img{n}.ppm") for n in range(1, n_images + 1)]
        homographies = [np.eye(3)] + [_read_homography(folder / f"H1to{n}p") for n in range(2, n_images + 1)]
    elif (folder / "1.ppm").exists() or (folder / "H_1_2").exists():
        images = [_read_grey(folder / f"{n}.ppm") for n in range(1, n_images + 1)]
        homographies = [np.eye(3)] + [_read_homography(folder / f"H_1_{n}") for n in range(2, n_images + 1)]
    else:
        raise DatasetNotFoundError("no Oxford (img1.ppm, H1to2p) or HPatches (1.ppm, H_1_2) sequence in", folder, _HINT)
    valid_y_max = GRAF_VALID_Y_MAX if folder.name == "graf" else None
    return ImageSequence(name, images, homographies, valid_y_max)


# --------------------------------------------------------------------------- synthetic views


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def random_homography(
    rng: np.random.Generator,
    width: int,
    height: int,
    strength: float = 0.15,
    max_rotation: float = 30.0,
    max_scale: float = 1.25,
    max_tilt: float = 1.0,
) -> np.ndarray:
    """Rotation (±max_rotation degrees) and scale (1/max_scale..max_scale, log-uniform)
    about the centre, then each corner moved by up to ``strength`` of the smaller side
    (perspective).

    ``max_tilt`` > 1 adds an oblique view first, as a camera tilt does (ASIFT's affine camera
    model): the image is compressed by a tilt t (1..max_tilt, log-uniform) along a random
    direction. Corner shifts alone rarely foreshorten beyond 1.7:1, while the oblique images
    of real viewpoint sequences reach 3-4:1 (graf 3 to 6, v_churchill 3, 4 and 6)."""
    centre = np.array([width / 2.0, height / 2.0])
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    scale = np.exp(rng.uniform(np.log(1 / max_scale), np.log(max_scale)))
    rotation = scale * _rotation(angle)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    if max_tilt <= 1.0:
        moved = (corners - centre) @ rotation.T + centre
        moved += rng.uniform(-1, 1, size=(4, 2)) * strength * min(width, height)
    else:
        # (drawn only here: max_tilt = 1 keeps the homographies of the sets built before)
        tilt = np.exp(rng.uniform(0.0, np.log(max_tilt)))
        direction = rng.uniform(0.0, np.pi)
        linear = rotation @ _rotation(direction) @ np.diag([1.0 / tilt, 1.0]) @ _rotation(-direction)
        # the corner shifts go in before the tilt, so that they stay a fraction of the tilted
        # image: after it they would push its short side towards the horizon
        shifts = rng.uniform(-1, 1, size=(4, 2)) * strength * min(width, height)
        moved = (corners - centre + shifts) @ linear.T + centre
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32)).astype(np.float64)


def photometric_change(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0, realistic: bool = False) -> np.ndarray:
    """Gain, bias, gamma, optional blur and sensor noise.

    ``realistic`` adds what real photo pairs differ by as well: a smooth illumination
    gradient across the image, more frequent (mild) defocus, JPEG compression. Blur and JPEG
    stay mild: stronger ones wipe out small keypoints' patches in one view only, which makes
    "corresponding" patches that no longer show the same thing."""
    x = image.astype(np.float64) / 255.0
    x = np.clip(x * rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength) + rng.uniform(-0.08, 0.08) * strength, 0, 1)
    x = x ** np.exp(rng.uniform(-0.35, 0.35) * strength)
    if realistic:
        # shading: a linear gain ramp in a random direction (up to ±25 % across the image)
        height, width = x.shape
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-12
        ys, xs = np.mgrid[0:height, 0:width]
        ramp = ((xs / max(width, 1) - 0.5) * direction[0] + (ys / max(height, 1) - 0.5) * direction[1])
        x = np.clip(x * (1 + rng.uniform(0, 0.5) * strength * ramp), 0, 1)
    if rng.random() < (0.5 if realistic else 0.3) * strength:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.2))
    x = x + rng.normal(0, rng.uniform(0, 0.015 * strength), size=x.shape)
    out = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    if realistic and rng.random() < 0.5 * strength:
        quality = int(rng.integers(60, 95))
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
    return out


def synthetic_sequence(
    name: str,
    image: np.ndarray,
    n_images: int = 6,
    seed: int = 0,
    strength: float = 0.15,
    photometric: float = 1.0,
    max_rotation: float = 30.0,
    max_scale: float = 1.25,
    realistic: bool = False,
    degrade_reference: bool = False,
    max_tilt: float = 1.0,
) -> ImageSequence:
    """Image 1 = the photo (grey); images 2..N = the photo under a random homography and a
    photometric change (see :func:`random_homography`, :func:`photometric_change`); the
    homographies are exact by construction. ``degrade_reference``: image 1 gets its own
    photometric change (noise, blur, JPEG) too, so no two images share the photo's pixels
    exactly, as two real photos of a scene do not."""
    rng = np.random.default_rng(seed)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    height, width = grey.shape
    images, homographies = [grey], [np.eye(3)]
    for _ in range(1, n_images):
        H = random_homography(rng, width, height, strength, max_rotation, max_scale, max_tilt)
        warped = cv2.warpPerspective(grey, H, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        images.append(photometric_change(rng, warped, photometric, realistic))
        homographies.append(H)
    if degrade_reference:
        # its own stream: images 2..N stay those of degrade_reference=False
        images[0] = photometric_change(np.random.default_rng([seed, 1]), grey, photometric, realistic)
    return ImageSequence(name, images, homographies)


# --------------------------------------------------------------------------- geometry


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


def apply_homography(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[points, np.ones(len(points))] @ H.T
    return homogeneous[:, :2] / homogeneous[:, 2:]


def local_affine(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Jacobian of the homography at each point: ``(K, 2, 2)``."""
    x, y = points[:, 0], points[:, 1]
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    u = H[0, 0] * x + H[0, 1] * y + H[0, 2]
    v = H[1, 0] * x + H[1, 1] * y + H[1, 2]
    jac = np.empty((len(points), 2, 2))
    jac[:, 0, 0] = (H[0, 0] * w - u * H[2, 0]) / w**2
    jac[:, 0, 1] = (H[0, 1] * w - u * H[2, 1]) / w**2
    jac[:, 1, 0] = (H[1, 0] * w - v * H[2, 0]) / w**2
    jac[:, 1, 1] = (H[1, 1] * w - v * H[2, 1]) / w**2
    return jac


def keypoint_frames(keypoints: np.ndarray, magnification: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(K, 2)`` and linear parts ``(K, 2, 2)`` mapping the unit square [-1, 1]^2 of
    the patch to image 1: radius = magnification * size / 2, rotated by the keypoint angle."""
    radius = magnification * keypoints[:, 2] / 2.0
    angle = np.deg2rad(keypoints[:, 3])
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2) * radius[:, None, None]
    return keypoints[:, :2].copy(), linear


def _inside(centres: np.ndarray, linear: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    points = centres[:, None, :] + np.einsum("kij,cj->kci", linear, corners)
    return (
        (points[..., 0] >= margin).all(1)
        & (points[..., 0] <= width - 1 - margin).all(1)
        & (points[..., 1] >= margin).all(1)
        & (points[..., 1] <= height - 1 - margin).all(1)
    )


def warp_patches(image: np.ndarray, centres: np.ndarray, linear: np.ndarray, patch_size: int) -> np.ndarray:
    """Cut ``(K, P, P)`` uint8 patches: patch pixel q samples image(centre + linear @ u(q)),
    u spanning [-1, 1] over the patch; large frames are sampled from a Gaussian pyramid
    level so the bilinear warp does not alias."""
    half = (patch_size - 1) / 2.0
    pyramid = [image]
    out = np.empty((len(centres), patch_size, patch_size), dtype=np.uint8)
    for k in range(len(centres)):
        per_pixel = linear[k] / half  # image pixels per patch pixel
        level = int(np.clip(np.floor(np.log2(max(np.sqrt(abs(np.linalg.det(per_pixel))), 1e-6))), 0, 6))
        while len(pyramid) <= level:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        factor = 2.0**level
        # pyrDown maps pixel x of level 0 to (x + 0.5) / 2 - 0.5 of level 1
        A = per_pixel / factor
        c = (centres[k] + 0.5) / factor - 0.5
        M = np.c_[A, c - A @ np.array([half, half])]
        out[k] = cv2.warpAffine(pyramid[level], M, (patch_size, patch_size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return out


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
    from scipy.spatial import cKDTree

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
    keep = _inside(centres1, linear1, image1.shape[1], image1.shape[0])
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
        inside[i] = _inside(centres[i], linear[i], image.shape[1], image.shape[0]) & found
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
JITTER = {
    "e": {"rotation": 10.0, "scale": 0.25, "translation": 0.10},
    "h": {"rotation": 20.0, "scale": 0.44, "translation": 0.19},
    "t": {"rotation": 30.0, "scale": 0.70, "translation": 0.35},
}


def jitter_frames(rng: np.random.Generator, linear: np.ndarray, centres: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """Random affine jitter of patch frames, in the frame's own coordinates:
    frame' = frame @ (R(theta) S(sx, sy)) + translation."""
    spec = JITTER[level]
    k = len(linear)
    theta = np.deg2rad(rng.uniform(-spec["rotation"], spec["rotation"], k))
    scales = 2.0 ** rng.uniform(-spec["scale"], spec["scale"], (k, 2))
    shift = rng.uniform(-spec["translation"], spec["translation"], (k, 2))
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    jitter = rotation * scales[:, None, :]  # R @ diag(s)
    return linear @ jitter, centres + np.einsum("kij,kj->ki", linear, shift)


def frame_overlap(jitter_linear: np.ndarray, jitter_shift: np.ndarray, samples: int = 64) -> np.ndarray:
    """Overlap (intersection over union) of the unit disk and its image under each jitter
    ``x -> A x + t`` (in frame coordinates), measured on a grid: HPatches' ellipse overlap."""
    grid = np.linspace(-2.5, 2.5, samples)
    xs, ys = np.meshgrid(grid, grid)
    points = np.stack([xs.ravel(), ys.ravel()], -1)
    disk = (points**2).sum(1) <= 1
    out = np.empty(len(jitter_linear))
    for k, (A, t) in enumerate(zip(jitter_linear, jitter_shift)):
        back = (points - t) @ np.linalg.inv(A).T
        ellipse = (back**2).sum(1) <= 1
        out[k] = (disk & ellipse).sum() / max((disk | ellipse).sum(), 1)
    return out


def jitter_correspondences(rng: np.random.Generator, corr: Correspondences, sequence: ImageSequence, level: str) -> Correspondences:
    """Jitter every frame of every image independently (:func:`jitter_frames` at an HPatches
    noise level), in place: corresponding patches then differ as independent noisy detections
    do. Frames pushed outside their image are dropped (``inside`` False)."""
    for i, image in enumerate(sequence.images):
        corr.linear[i], corr.centres[i] = jitter_frames(rng, corr.linear[i], corr.centres[i], level)
        corr.inside[i] &= _inside(corr.centres[i], corr.linear[i], image.shape[1], image.shape[0])
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
    from .brown import sample_match_pairs, write_subset

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
    from .hpatches import write_sequence

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


def photo_sources(data_root: str | os.PathLike | None, n_coil: int | None = 40, n_logos: int | None = 40, skimage_photos: bool = True, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Single real photos: scikit-image's photos, COIL-100 views (upsampled x2: they are
    128x128), FlickrLogos-27 scenes (longest side 640), as ``(name, grey uint8)``;
    ``n_coil`` / ``n_logos``: how many of each, drawn at random (None = all)."""
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
            image = _read_grey(path)
            photos.append((f"coil_{path.stem}", cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)))
    if root is not None and n_logos != 0 and (root / "flickrlogos27" / "images").is_dir():
        files = sorted((root / "flickrlogos27" / "images").glob("*.jpg"))
        n_logos = len(files) if n_logos is None else min(n_logos, len(files))
        for path in (files[i] for i in sorted(rng.choice(len(files), n_logos, replace=False))):
            image = _read_grey(path)
            scale = 640.0 / max(image.shape)
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            photos.append((f"logo_{path.stem}", image))
    return photos


#: bumped whenever build_real_brown writes something else for the same settings (part of its
#: cache key, so an older cached set is never reused); 4: built in a portable process
#: (:func:`portable_build_env`), the same patches on every CPU
REAL_BROWN_VERSION = 4
#: the same for build_real_hpatches (sets without a version in their key are the older,
#: CPU-dependent builds)
REAL_HPATCHES_VERSION = 1
#: build_real_brown options added after sets were cached, with the default that means "as before"
_KEY_NEUTRAL_DEFAULTS = {"val_sequences": [], "max_tilt": 1.0}


def _set_folder(cache_dir, kind: str, settings: dict) -> Path:
    key = hashlib.md5(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / kind / key


def _opencv_dispatched_features() -> list[str]:
    """OpenCV's dispatched instruction sets this CPU has, as its features line spells them
    (``*AVX2``, ``*SSE4.1``; ``*AVX512-SKX?`` is one the CPU lacks)."""
    return [token[1:] for token in cv2.getCPUFeaturesLine().split() if token.startswith("*") and not token.endswith("?")]


def portable_build_env() -> dict[str, str]:
    """Environment variables under which a data build gives the same bytes on every CPU.

    numpy (float32 sin / cos / exp / log, tanh), OpenBLAS, OpenCV (SIFT, warps, blurs,
    resizes: its SIMD dispatch and Intel IPP) and libjpeg-turbo choose code paths by the
    CPU's instruction set at run time, and the paths round differently. Measured here: the
    default real Brown set built with OpenCV's dispatch off, or with numpy's, has other
    patches and SIFT keypoints than the plain build on the same machine, and plain builds on
    an AVX2 and an AVX-512 machine differed in all three subsets. These variables (read when
    the libraries load, so they apply to a new process) turn every such dispatch off, down to
    the baseline that every CPU the wheels run on has; the process also calls
    ``cv2.setUseOptimized(False)``, which turns OpenCV's dispatch and IPP off too."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath  # type: ignore[no-redef]
    env = {
        "NPY_DISABLE_CPU_FEATURES": " ".join(getattr(umath, "__cpu_dispatch__", [])),
        # (cv2.setUseOptimized(False) in the process turns the dispatch and IPP off as well)
        "OPENCV_CPU_DISABLE": ",".join(_opencv_dispatched_features()),
        "JSIMD_FORCENONE": "1",  # libjpeg-turbo inside OpenCV
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        # several OpenCV threads gave other keypoints from run to run on small sets (the
        # un-optimised paths); one thread builds the default set in the same time
        "OPENCV_FOR_THREADS_NUM": "1",
    }
    # OpenBLAS picks its kernels by CPU; pin the oldest one numpy's baseline allows
    core = {"x86_64": "Nehalem", "AMD64": "Nehalem", "aarch64": "ARMV8", "arm64": "ARMV8"}.get(os.uname().machine if hasattr(os, "uname") else "")
    if core:
        env["OPENBLAS_CORETYPE"] = core
    return env


_PORTABLE_CHILD = "DEEPMATCH_PORTABLE_BUILD"


def _run_portable(kind: str, folder: Path, kwargs: dict) -> None:
    """Run ``_BUILDERS[kind](folder, **kwargs)`` in a new Python process under
    :func:`portable_build_env` (in this process if it already is one); a dataset error of the
    build is raised here as the same class, with the same message."""
    if os.environ.get(_PORTABLE_CHILD) == "1":
        _BUILDERS[kind](folder, **kwargs)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".request-") as scratch:
        request, failure = Path(scratch) / "request.json", Path(scratch) / "error.json"
        request.write_text(json.dumps({"kind": kind, "folder": str(folder), "kwargs": kwargs, "error_file": str(failure)}))
        package_root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, **portable_build_env(), _PORTABLE_CHILD: "1",
               "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        code = "import sys; from descriptors.writer import _portable_child; _portable_child(sys.argv[1])"
        done = subprocess.run([sys.executable, "-c", code, str(request)], env=env)
        if failure.is_file():
            error = json.loads(failure.read_text())
            cls = {"DatasetNotFoundError": DatasetNotFoundError, "CorruptDatasetError": CorruptDatasetError}.get(error["type"], DatasetError)
            raise cls(error["what"], error["path"], error["hint"])
        if done.returncode != 0:
            raise RuntimeError(f"the portable {kind} data build into {folder} failed (exit code {done.returncode}; its output is above)")


def _build_record() -> dict:
    """What a build ran under, for its report: the portable variables as the process saw them
    and whether OpenCV's optimised paths were on."""
    return {"env": {name: os.environ.get(name) for name in portable_build_env()}, "opencv_optimized": bool(cv2.useOptimized()),
            "opencv_ipp": bool(cv2.ipp.useIPP())}


def _portable_child(request_file: str) -> None:
    """The entry point of :func:`_run_portable`'s process."""
    cv2.setUseOptimized(False)  # OpenCV's dispatch and IPP, beside the environment
    cv2.setNumThreads(1)
    request = json.loads(Path(request_file).read_text())
    try:
        _BUILDERS[request["kind"]](Path(request["folder"]), **request["kwargs"])
    except DatasetError as exc:
        Path(request["error_file"]).write_text(json.dumps({"type": type(exc).__name__, "what": getattr(exc, "what", str(exc)), "path": str(exc.path), "hint": exc.hint}))
        raise SystemExit(3) from None


def _sequences_dir(data_root) -> Path:
    if data_root is None:
        raise DatasetNotFoundError("no data root configured for the real sequences", "<unset>", _HINT)
    root = Path(data_root)
    return root / "sequences" if (root / "sequences").is_dir() else root


def build_real_brown(
    data_root: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    train_sequences: Sequence[str] = ("graf",),
    test_sequence: str = "v_churchill",
    train_name: str = "real_train",
    n_coil: int | None = 40,
    n_logos: int | None = 40,
    skimage_photos: bool = True,
    views_per_photo: int = 6,
    keypoints_per_image: int = 300,
    test_keypoints: int = 1500,
    magnification: float = 2.5,
    min_ncc: float | None = 0.3,
    n_train_pairs: int = 10000,
    n_test_pairs: int = 10000,
    seed: int = 0,
    perspective: float = 0.15,
    max_rotation: float = 30.0,
    max_scale: float = 1.25,
    realistic_photometric: bool = False,
    redetect: bool = False,
    scene_negatives: bool = False,
    min_compression: float | None = None,
    degrade_reference: bool = False,
    keypoint_density: float | None = None,
    frame_jitter: str | None = None,
    val_sequences: Sequence[str] = (),
    max_tilt: float = 1.0,
) -> Path:
    """Build (once, cached) a real-data Brown root with two subsets: ``train_name`` (photos
    under random homographies + the real ``train_sequences``) and ``test_sequence`` (held out,
    e.g. the planar v_churchill). Returns the root (pass it as the Brown data root).

    ``val_sequences``: real sequences held out of training as validation subsets of their own
    (subset name = sequence name, e.g. ``graf``), cut with the exact frames and ``n_test_pairs``
    pairs exactly like the test subset: choose models and data settings on them
    (``data.val_subset=graf``), never on the test sequence. They may be neither a training
    sequence nor the test sequence.

    Training views: ``perspective``, ``max_rotation``, ``max_scale``, ``max_tilt`` of
    :func:`random_homography`; ``realistic_photometric``: shading, blur and JPEG on top of
    gain / gamma / noise (:func:`photometric_change`); ``redetect``: keypoints detected in
    every training image independently, so corresponding patches carry detector noise
    (:func:`extract_correspondences`); ``min_compression``: training correspondences where a
    view shrinks the neighbourhood by more than this are dropped (:func:`extract_correspondences`);
    ``keypoint_density``: the photos' ``keypoints_per_image`` are drawn at random from this
    many detections per megapixel rather than being the strongest (:func:`extract_correspondences`);
    ``frame_jitter``: an HPatches noise level (``"e"``, ``"h"``, ``"t"``, see :data:`JITTER`):
    every training patch frame (of every image) gets its own random affine jitter, as if each
    patch were an independent, noisy detection;
    ``degrade_reference``: the photo's first view gets a photometric change too
    (:func:`synthetic_sequence`); ``scene_negatives``: the non-matching pairs of the
    training subset's m50 file (the validation pairs) come from one photo or sequence each.
    The test subset is always cut with the exact frames (as before: it does not depend on
    these settings)."""
    if test_sequence in train_sequences:
        raise ValueError(f"the test sequence {test_sequence!r} must stay held out of train_sequences {list(train_sequences)}")
    leaked = [name for name in val_sequences if name in train_sequences or name == test_sequence]
    if leaked:
        raise ValueError(f"validation sequences {leaked} must be neither training sequences {list(train_sequences)} nor the test sequence {test_sequence!r}")
    if len(set(val_sequences)) != len(val_sequences) or train_name in val_sequences or train_name == test_sequence:
        raise ValueError(f"subset names must differ: train {train_name!r}, validation {list(val_sequences)}, test {test_sequence!r}")
    settings = {k: v for k, v in locals().items() if k not in ("data_root", "cache_dir", "leaked")}
    settings["train_sequences"] = list(train_sequences)
    settings["val_sequences"] = list(val_sequences)
    # options added later stay out of the key at their defaults: the sets built before keep theirs
    for name, default in _KEY_NEUTRAL_DEFAULTS.items():
        if settings[name] == default:
            settings.pop(name)
    settings["data_root"] = str(Path(data_root).resolve()) if data_root else None
    settings["version"] = REAL_BROWN_VERSION
    folder = _set_folder(cache_dir, "real_brown", settings)
    if (folder / "done.json").is_file():
        return folder
    _sequences_dir(data_root)  # a missing data root fails here, before the build process starts
    scope = dict(locals())
    arguments = {name: scope[name] for name in _BROWN_ARGUMENTS}
    _run_portable("brown", folder, {**arguments, "data_root": str(data_root), "settings": settings,
                                    "train_sequences": list(train_sequences), "val_sequences": list(val_sequences)})
    report = json.loads((folder / "done.json").read_text())
    log.info("real Brown set in %s: %s", folder, {k: report[k] for k in ("train", "val", "test") if k in report})
    return folder


def _write_real_brown(
    folder: Path, *, data_root, settings: dict, train_sequences, test_sequence, train_name, n_coil, n_logos, skimage_photos,
    views_per_photo, keypoints_per_image, test_keypoints, magnification, min_ncc, n_train_pairs, n_test_pairs, seed,
    perspective, max_rotation, max_scale, realistic_photometric, redetect, scene_negatives, min_compression,
    degrade_reference, keypoint_density, frame_jitter, val_sequences, max_tilt,
) -> None:
    """The body of :func:`build_real_brown` (run in its portable process): writes ``folder``."""
    from tqdm import tqdm

    sequences_dir = _sequences_dir(data_root)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report: dict = {"settings": settings, "build": _build_record(), "pairs": {}}
    train_corr, train_seqs = [], []
    for name in train_sequences:
        seq = read_image_sequence(sequences_dir / name)
        corr = extract_correspondences(seq, test_keypoints, magnification, min_ncc, redetect=redetect, min_compression=min_compression)
        train_corr.append(corr)
        train_seqs.append(seq)
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
        val_seq = read_image_sequence(sequences_dir / name)
        val_corr = extract_correspondences(val_seq, test_keypoints, magnification, min_ncc)
        report["pairs"][name] = val_corr.report
        report.setdefault("val", {})[name] = write_brown_set(tmp / name, [val_corr], [val_seq], n_test_pairs, seed + 2 + k)
    test_seq = read_image_sequence(sequences_dir / test_sequence)
    test_corr = extract_correspondences(test_seq, test_keypoints, magnification, min_ncc)
    report["pairs"][test_sequence] = test_corr.report
    report["test"] = write_brown_set(tmp / test_sequence, [test_corr], [test_seq], n_test_pairs, seed + 1)
    (tmp / "done.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def build_real_hpatches(
    data_root: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    sequences: Sequence[str] = ("v_churchill", "graf"),
    n_synthetic: int = 6,
    max_keypoints: int = 1500,
    synthetic_keypoints: int = 400,
    magnification: float = 2.5,
    min_ncc: float | None = 0.3,
    seed: int = 0,
) -> Path:
    """Build (once, cached) an HPatches-layout release from the real sequences (named
    ``v_<name>``: all are viewpoint sequences) plus ``n_synthetic`` scikit-image photos
    under random homographies (``v_synth_<photo>``). Returns the ``hpatches-release`` folder;
    ``report.json`` beside it has the per-pair counts, NCC and jitter overlaps."""
    settings = {k: v for k, v in locals().items() if k not in ("data_root", "cache_dir")}
    settings["sequences"] = list(sequences)
    settings["data_root"] = str(Path(data_root).resolve()) if data_root else None
    settings["version"] = REAL_HPATCHES_VERSION
    folder = _set_folder(cache_dir, "real_hpatches", settings)
    release = folder / "hpatches-release"
    if (folder / "report.json").is_file():
        return release
    _sequences_dir(data_root)
    _run_portable("hpatches", folder, {"data_root": str(data_root), "settings": settings, "sequences": list(sequences), "n_synthetic": n_synthetic,
                                       "max_keypoints": max_keypoints, "synthetic_keypoints": synthetic_keypoints,
                                       "magnification": magnification, "min_ncc": min_ncc, "seed": seed})
    return release


def _write_real_hpatches(folder: Path, *, data_root, settings: dict, sequences, n_synthetic, max_keypoints, synthetic_keypoints, magnification, min_ncc, seed) -> None:
    """The body of :func:`build_real_hpatches` (run in its portable process): writes ``folder``."""
    sequences_dir = _sequences_dir(data_root)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report: dict = {"settings": settings, "build": _build_record(), "sequences": {}}
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
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


_BUILDERS = {"brown": _write_real_brown, "hpatches": _write_real_hpatches}
_BROWN_ARGUMENTS = set(inspect.signature(_write_real_brown).parameters) - {"folder"}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m descriptors.writer {brown,hpatches} --data-root D --cache-dir C``: build a
    real-data set and print where it is (plus the per-pair report)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=("brown", "hpatches"))
    parser.add_argument("--data-root", default=os.environ.get("DEEPMATCH_DATA"))
    parser.add_argument("--cache-dir", default=os.environ.get("DEEPMATCH_CACHE", str(Path.home() / ".cache" / "deepmatch")))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.layout == "brown":
            folder = build_real_brown(args.data_root, args.cache_dir, seed=args.seed)
            report = json.loads((folder / "done.json").read_text())
        else:
            folder = build_real_hpatches(args.data_root, args.cache_dir, seed=args.seed)
            report = json.loads((folder.parent / "report.json").read_text())
    except (DatasetNotFoundError, CorruptDatasetError) as exc:
        raise SystemExit(f"error: {type(exc).__name__}: {exc}") from None
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=1)[:4000])
    print(folder)


if __name__ == "__main__":
    main()
