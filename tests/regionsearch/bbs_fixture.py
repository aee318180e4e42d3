"""A tiny BBS105-layout fixture: pairs written exactly as the authors' release names them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def textured_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour scene (uint8 RGB): blurred noise, so patches are distinctive."""
    noise = rng.random((height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    scene = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(scene * 255, 0, 255).astype(np.uint8)


def write_bbs_pair(root: Path, number: int, video: str, frame_a: int, frame_b: int, image_a: np.ndarray, box_a, image_b: np.ndarray, box_b) -> None:
    """The four files of one pair; both box files carry the frm1 tag, as in the release."""
    stem = f"pair{number:04d}"
    cv2.imwrite(str(root / f"{stem}_frm1_{video}_{frame_a:04d}.jpg"), cv2.cvtColor(image_a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(root / f"{stem}_frm2_{video}_{frame_b:04d}.jpg"), cv2.cvtColor(image_b, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    (root / f"{stem}_frm1_{video}_{frame_a:04d}.txt").write_text(",".join(f"{v:.6f}" for v in box_a))
    (root / f"{stem}_frm1_{video}_{frame_b:04d}.txt").write_text(",".join(f"{v:.6f}" for v in box_b))


def write_bbs_fixture(root: Path, n_pairs: int = 3, seed: int = 0, size: tuple[int, int] = (72, 96)) -> Path:
    """``n_pairs`` pairs in which image B is image A shifted by a known offset (written in
    reverse pair order, so the reader's sort is exercised). Boxes ``x,y,w,h``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    for number in range(n_pairs, 0, -1):
        scene = textured_scene(rng, height + 16, width + 16)
        dx, dy = int(rng.integers(0, 16)), int(rng.integers(0, 16))
        image_a, image_b = scene[8 : 8 + height, 8 : 8 + width], scene[dy : dy + height, dx : dx + width]
        box_a = (20.25, 15.5, 24.5, 20.0)
        # the same content in B, shifted by (8 - dx, 8 - dy)
        box_b = (box_a[0] + 8 - dx, box_a[1] + 8 - dy, box_a[2], box_a[3])
        write_bbs_pair(root, number, f"video{number}", 10 * number, 10 * number + 20, image_a, box_a, image_b, box_b)
    return root
