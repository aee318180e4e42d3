"""Image sequences with ground-truth homographies and the geometry of patch frames.

Sequences come from

* the Oxford affine layout (``img1.ppm .. img6.ppm``, ``H1to2p ..``),
* the HPatches-sequences layout (``1.ppm .. 6.ppm``, ``H_1_2 ..``),
* single photos under random homographies and photometric changes (:func:`synthetic_sequence`).

A patch frame in image n is the keypoint frame of image 1 pushed through the local affine
approximation of H at the keypoint (its Jacobian); :func:`warp_patches` cuts it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError

#: graf's lower band (a parked car, window glass in front of the wall) is off the wall
#: plane, so its homography is wrong there: keypoints of image 1 below this row are dropped.
GRAF_VALID_Y_MAX = 455.0

SEQUENCES_HINT = "Real sequences live in <data_root>/sequences/ (see the data README)"


@dataclass
class ImageSequence:
    """Grey images ``images[0..N-1]`` and ``homographies[n]`` mapping image 1 to image n+1
    (``homographies[0]`` = identity). ``valid_y_max``: keypoints of image 1 below are dropped."""

    name: str
    images: list[np.ndarray]
    homographies: list[np.ndarray]
    valid_y_max: float | None = None


def read_grey(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError("sequence image missing", path, SEQUENCES_HINT)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CorruptDatasetError("unreadable or truncated sequence image", path)
    return image


def _read_homography(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetNotFoundError("homography file missing", path, SEQUENCES_HINT)
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
        raise DatasetNotFoundError("image sequence folder not found", folder, SEQUENCES_HINT)
    name = name or folder.name
    if (folder / "img1.ppm").exists() or (folder / "H1to2p").exists():
        images = [read_grey(folder / f"img{n}.ppm") for n in range(1, n_images + 1)]
        homographies = [np.eye(3)] + [_read_homography(folder / f"H1to{n}p") for n in range(2, n_images + 1)]
    elif (folder / "1.ppm").exists() or (folder / "H_1_2").exists():
        images = [read_grey(folder / f"{n}.ppm") for n in range(1, n_images + 1)]
        homographies = [np.eye(3)] + [_read_homography(folder / f"H_1_{n}") for n in range(2, n_images + 1)]
    else:
        raise DatasetNotFoundError("no Oxford (img1.ppm, H1to2p) or HPatches (1.ppm, H_1_2) sequence in", folder, SEQUENCES_HINT)
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


def frame_inside(centres: np.ndarray, linear: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
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
