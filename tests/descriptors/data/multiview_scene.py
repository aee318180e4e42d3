"""A tiny calibrated scene for the multi-view track tests: a textured wall seen by three
cameras of known P (one nearer, one rolled, one stored as -P), rendered through the
plane-induced homography, with point tracks written in the VGG layout."""

from __future__ import annotations

import cv2
import numpy as np

from descriptors.data.real.tracks import write_track_set
from tests.descriptors.data.test_real import texture

SIZE = (320, 240)  # width, height
FOCAL = 300.0
WALL_DEPTH = 5.0
#: texture pixel (u, v) -> wall point (X, Y) in world units (X right, Y down, Z forward)
TEXTURE_TO_WALL = np.array([[1 / 60, 0, -3.0], [0, 1 / 60, -3.0], [0, 0, 1.0]])
#: camera centre, yaw (degrees, about the vertical Y axis), roll (degrees, about the optical axis)
CAMERAS = (((0.0, 0.0, 0.0), 0.0, 0.0), ((1.0, 0.0, 0.5), -12.5, 0.0), ((-0.8, 0.3, -1.0), 8.0, 20.0))


def camera(centre, yaw: float, roll: float) -> np.ndarray:
    """P = K [R | -R C] of an upright camera turned by ``yaw`` and rolled by ``roll``."""
    yaw, roll = np.deg2rad(yaw), np.deg2rad(roll)
    x, y, z = np.array([np.cos(yaw), 0, -np.sin(yaw)]), np.array([0.0, 1, 0]), np.array([np.sin(yaw), 0, np.cos(yaw)])
    R = np.stack([np.cos(roll) * x + np.sin(roll) * y, -np.sin(roll) * x + np.cos(roll) * y, z])
    K = np.array([[FOCAL, 0, SIZE[0] / 2], [0, FOCAL, SIZE[1] / 2], [0, 0, 1]])
    return K @ np.c_[R, -R @ np.asarray(centre)]


def wall_scene(seed: int = 0, n_tracks: int = 80):
    """``(images, projections, world, points, observed)``: three grey views of a textured wall,
    their P (the third stored as -P: the same camera), ``n_tracks`` wall points and their
    tracked positions ``(V, K, 2)``, seen where at least 12 px inside the image; every fourth
    track is hidden in one view as well (per-view visibility)."""
    wall = texture(seed, (360, 360))
    projections = np.stack([camera(*spec) for spec in CAMERAS])
    to_world = np.array([[1, 0, 0], [0, 1, 0], [0, 0, WALL_DEPTH], [0, 0, 1.0]])  # wall (X, Y, 1) -> (X, Y, Z, 1)
    images = [cv2.warpPerspective(wall, P @ to_world @ TEXTURE_TO_WALL, SIZE, flags=cv2.INTER_LINEAR) for P in projections]
    rng = np.random.default_rng(seed)
    uv = rng.uniform(90, 270, size=(n_tracks, 2))
    world = np.c_[(np.c_[uv, np.ones(n_tracks)] @ TEXTURE_TO_WALL.T)[:, :2], np.full(n_tracks, WALL_DEPTH)]
    homogeneous = np.einsum("vij,kj->vki", projections, np.c_[world, np.ones(n_tracks)])
    points = homogeneous[..., :2] / homogeneous[..., 2:]
    observed = ((points >= 12) & (points <= np.array(SIZE) - 13)).all(-1)
    hidden = np.arange(0, n_tracks, 4)
    observed[hidden % 3, hidden] = False
    projections[2] *= -1.0
    return images, projections, world, points, observed


def write_wall_scene(folder, seed: int = 0, n_tracks: int = 80):
    """The scene in the VGG layout under ``folder`` (``dinosaur.json``, as the real set names it)."""
    images, projections, world, points, observed = wall_scene(seed, n_tracks)
    write_track_set(folder, images, projections, points, observed, scene="dinosaur")
    return images, projections, world, points, observed
