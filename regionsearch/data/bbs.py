"""The BBS template-matching benchmark (BBS105), read in the authors' release layout.

T. Dekel, S. Oron, M. Rubinstein, S. Avidan, W. T. Freeman, "Best-Buddies Similarity for
Robust Template Matching", CVPR 2015: 105 pairs of frames from 35 OTB videos (Wu et al.,
CVPR 2013), image B 20 frames after image A. Academic / non-commercial use. A TEST set:
nothing is trained or tuned on it.

Layout (``BBS_code_and_data_release_v1.0/data/``), four files per pair ``NNNN``::

    pairNNNN_frm1_<video>_<fA>.jpg   image A (the template's frame)
    pairNNNN_frm1_<video>_<fA>.txt   the template box in A
    pairNNNN_frm1_<video>_<fB>.txt   the ground-truth box in B: ALSO tagged frm1
    pairNNNN_frm2_<video>_<fB>.jpg   image B (the search image)

The two box files share the ``frm1`` tag, so they are told apart by frame number: the one
whose frame is image A's is the template box. Each holds one line ``x,y,w,h`` in fractional
pixels, read as the 0-based continuous box ``[x, x + w) x [y, y + h)`` and stored as
``(x1, y1, x2, y2)`` (the convention of :mod:`regionsearch.evaluate`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import CorruptDatasetError, DatasetNotFoundError

__all__ = ["BBS_HINT", "BBS_URL", "BBSPair", "BBSPairFiles", "list_bbs_pairs", "load_bbs_pairs", "read_bbs_box", "template_box"]

BBS_URL = "http://people.csail.mit.edu/talidekel/Code/BBS_code_and_data_release_v1.0.zip"
BBS_HINT = (
    f"Download {BBS_URL} and copy its data/ folder (pairNNNN_frm*_<video>_<frame>.jpg/.txt) to "
    "$DEEPMATCH_DATA/template_matching/bbs"
)
_NAME = re.compile(r"^pair(\d+)_frm([12])_(.+)_(\d+)\.(jpg|txt)$")


@dataclass(frozen=True)
class BBSPairFiles:
    """The four files of one pair (nothing decoded)."""

    number: int
    video: str
    frame_a: int
    frame_b: int
    image_a: Path
    box_a: Path
    image_b: Path
    box_b: Path


@dataclass
class BBSPair:
    """One template/search pair: RGB uint8 images ``(H, W, 3)`` and float64 ``(x1, y1, x2, y2)`` boxes."""

    number: int
    video: str
    frame_a: int
    frame_b: int
    image_a: np.ndarray
    box_a: np.ndarray
    image_b: np.ndarray
    box_b: np.ndarray

    def template_box(self) -> tuple[int, int, int, int]:
        """The integer ``(x1, y1, x2, y2)`` the template is cut at (see :func:`template_box`)."""
        return template_box(self.box_a, self.image_a.shape)

    def template(self) -> np.ndarray:
        """Image A cut at the rounded template box (the query of the peers' protocol)."""
        x1, y1, x2, y2 = self.template_box()
        return self.image_a[y1:y2, x1:x2]

    def rescaled(self, factor: float) -> BBSPair:
        """Both images resized by ``factor`` (area averaging when shrinking), boxes scaled with them."""
        if factor == 1.0:
            return self

        def resize(image):
            h, w = image.shape[:2]
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)

        return BBSPair(self.number, self.video, self.frame_a, self.frame_b, resize(self.image_a), self.box_a * factor, resize(self.image_b), self.box_b * factor)


def _round_half_up(value: float) -> int:
    # MATLAB's round (the peers' scripts) rounds halves away from zero; Python's rounds to even.
    # The tolerance keeps a width recomputed as (x + w) - x (24.4999999 for 24.5) rounding up.
    return int(math.floor(value + 0.5 + 1e-9))


def template_box(box: np.ndarray, image_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The rounded box ``(x1, y1, x2, y2)`` of a continuous box: corner and size rounded half up
    (as MATLAB's ``round``), at least one pixel, clipped to the image of ``image_shape``."""
    h, w = image_shape[:2]
    x1 = min(max(_round_half_up(box[0]), 0), w - 1)
    y1 = min(max(_round_half_up(box[1]), 0), h - 1)
    x2 = min(x1 + max(_round_half_up(box[2] - box[0]), 1), w)
    y2 = min(y1 + max(_round_half_up(box[3] - box[1]), 1), h)
    return x1, y1, x2, y2


def read_bbs_box(path: str | Path) -> np.ndarray:
    """One ``x,y,w,h`` line -> ``(x, y, x + w, y + h)`` float64.

    Raises:
        DatasetNotFoundError: the file does not exist.
        CorruptDatasetError: not four finite numbers, or a width / height that is not positive.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError("BBS box file missing", path, BBS_HINT)
    text = path.read_text(errors="replace").strip()
    try:
        values = [float(v) for v in re.split(r"[,\s]+", text)]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise CorruptDatasetError(f"BBS box file is not one 'x,y,w,h' line with w, h > 0 (read {text[:60]!r})", path, BBS_HINT)
    x, y, w, h = values
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def list_bbs_pairs(root: str | Path) -> list[BBSPairFiles]:
    """The pairs under ``root``, sorted by pair number; checks every file exists (decodes nothing).

    Raises:
        DatasetNotFoundError: ``root`` is not a folder, holds no pair, or a pair lacks a file.
        CorruptDatasetError: a pair's files disagree (two videos, box files that match no image).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError("BBS dataset folder not found", root, BBS_HINT)
    found: dict[int, list[tuple[int, str, int, str, Path]]] = {}
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match:
            number, tag, video, frame, ext = match.groups()
            found.setdefault(int(number), []).append((int(tag), video, int(frame), ext, path))
    if not found:
        raise DatasetNotFoundError("no pairNNNN_frm*_<video>_<frame>.jpg/.txt files in the BBS folder", root, BBS_HINT)
    pairs = []
    for number in sorted(found):
        files = found[number]
        videos = {video for _, video, _, _, _ in files}
        if len(videos) != 1:
            raise CorruptDatasetError(f"BBS pair {number:04d} mixes videos {sorted(videos)}", root, BBS_HINT)
        video = videos.pop()
        images = {tag: (frame, path) for tag, _, frame, ext, path in files if ext == "jpg"}
        for tag in (1, 2):
            if tag not in images:
                stem = f"pair{number:04d}_frm{tag}_{video}_<frame>.jpg"
                raise DatasetNotFoundError(f"BBS pair {number:04d} lacks image {'A' if tag == 1 else 'B'}", root / stem, BBS_HINT)
        (frame_a, image_a), (frame_b, image_b) = images[1], images[2]
        # both box files carry the frm1 tag: tell them apart by frame number
        boxes = {frame: path for _, _, frame, ext, path in files if ext == "txt"}
        for frame, role in ((frame_a, "template box in A"), (frame_b, "ground-truth box in B")):
            if frame not in boxes:
                expected = root / f"pair{number:04d}_frm1_{video}_{frame:04d}.txt"
                raise DatasetNotFoundError(f"BBS pair {number:04d} lacks its {role}", expected, BBS_HINT)
        if frame_a == frame_b:
            raise CorruptDatasetError(f"BBS pair {number:04d} has images A and B of the same frame {frame_a}", image_a, BBS_HINT)
        pairs.append(BBSPairFiles(number, video, frame_a, frame_b, image_a, boxes[frame_a], image_b, boxes[frame_b]))
    return pairs


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CorruptDatasetError("cannot decode BBS image", path, BBS_HINT)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_bbs_pairs(root: str | Path, limit: int | None = None) -> list[BBSPair]:
    """Decode the first ``limit`` pairs (all when None) in pair-number order.

    Raises:
        DatasetNotFoundError / CorruptDatasetError: as :func:`list_bbs_pairs`, or an image that
            does not decode, or a box that lies entirely outside its image.
    """
    pairs = []
    for files in list_bbs_pairs(root)[:limit]:
        image_a, image_b = _read_rgb(files.image_a), _read_rgb(files.image_b)
        box_a, box_b = read_bbs_box(files.box_a), read_bbs_box(files.box_b)
        for box, image, path in ((box_a, image_a, files.box_a), (box_b, image_b, files.box_b)):
            h, w = image.shape[:2]
            if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
                raise CorruptDatasetError(f"BBS box {box.tolist()} lies outside its {w}x{h} image", path, BBS_HINT)
        pairs.append(BBSPair(files.number, files.video, files.frame_a, files.frame_b, image_a, box_a, image_b, box_b))
    return pairs
