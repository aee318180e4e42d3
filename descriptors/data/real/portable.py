"""The cached real-data sets, built in a portable process (the same bytes on every CPU), and
their command line: ``python -m descriptors.data.real {brown,hpatches} --data-root D --cache-dir C``.

:func:`build_real_brown` and :func:`build_real_hpatches` key a set by its settings, and when
it is not cached run :mod:`descriptors.data.real.writer` in a new Python process under
:func:`portable_build_env`. A set is written into a private folder and published with one
rename under a lock (:func:`core.files.atomic_build`): runs that ask for the same set at once
build it once, and a cached set is checked (:func:`real_brown_complete`,
:func:`real_hpatches_complete`) before it is trusted; a partial one is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2

from core.errors import CorruptDatasetError, DatasetError, DatasetNotFoundError
from core.files import atomic_build

from ..brown import PER_TILE, TILE
from .tracks import is_track_set
from .writer import missing_photo_sources, sequences_folder, write_real_brown, write_real_hpatches

log = logging.getLogger(__name__)

#: bumped whenever build_real_brown writes something else for the same settings (part of its
#: cache key, so an older cached set is never reused); 4: built in a portable process
#: (:func:`portable_build_env`), the same patches on every CPU
REAL_BROWN_VERSION = 4
#: the same for build_real_hpatches (sets without a version in their key are the older,
#: CPU-dependent builds)
REAL_HPATCHES_VERSION = 1
#: build_real_brown options added after sets were cached, with the default that means "as before"
_KEY_NEUTRAL_DEFAULTS = {"val_sequences": [], "max_tilt": 1.0}
#: build_real_brown options that only shape the patches of multi-view tracks: part of the key
#: only when a track set is used (then all of them, so that a new default is a new set)
_TRACK_OPTIONS = ("track_sets", "track_radius", "track_scale_spread", "track_min_ncc")


def _set_folder(cache_dir, kind: str, settings: dict) -> Path:
    key = hashlib.md5(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / kind / key


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _line_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _brown_subset_complete(folder: Path, n_patches, match_file) -> bool:
    """``folder`` holds a Brown-layout subset of ``n_patches`` patches: every tile (whole),
    ``info.txt`` and ``interest.txt`` with one line per patch, and the match file."""
    if not isinstance(n_patches, int) or n_patches <= 0 or not isinstance(match_file, str):
        return False
    tiles = [folder / f"patches{tile:04d}.bmp" for tile in range(-(-n_patches // PER_TILE))]
    try:
        return (
            all(tile.stat().st_size >= TILE * TILE for tile in tiles)  # 8-bit pixels and a header
            and (folder / match_file).stat().st_size > 0
            and _line_count(folder / "info.txt") == n_patches
            and _line_count(folder / "interest.txt") == n_patches
        )
    except OSError:
        return False


def real_brown_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a whole real Brown set: ``done.json`` (written last) names the
    training, validation and test subsets, and each is there with all its patches."""
    folder = Path(folder)
    report = _read_json(folder / "done.json")
    if report is None or not isinstance(report.get("settings"), dict):
        return False
    settings = report["settings"]
    expected = {settings.get("train_name"): report.get("train"), settings.get("test_sequence"): report.get("test")}
    val = report.get("val", {})
    if not isinstance(val, dict) or sorted(val) != sorted(settings.get("val_sequences", [])):
        return False
    expected.update(val)
    return all(
        isinstance(name, str) and isinstance(info, dict) and _brown_subset_complete(folder / name, info.get("patches"), info.get("match_file"))
        for name, info in expected.items()
    )


def _png_height(path: Path) -> int | None:
    """Height of a PNG from its header (``None``: not a PNG)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[20:24], "big")


def real_hpatches_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a whole real HPatches set: ``report.json`` (written last) names
    the sequences, and each has its ``ref`` stack of the reported number of patches and the
    first easy / hard / tough stacks."""
    folder = Path(folder)
    report = _read_json(folder / "report.json")
    if report is None or not isinstance(report.get("sequences"), dict) or not report["sequences"]:
        return False
    release = folder / "hpatches-release"
    for name, info in report["sequences"].items():
        n_patches = info.get("patches") if isinstance(info, dict) else None
        if not isinstance(n_patches, int) or _png_height(release / name / "ref.png") != n_patches * 65:
            return False
        if any(_png_height(release / name / f"{level}1.png") is None for level in "eht"):
            return False
    return True


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
        _BUILDERS[kind](folder, build=_build_record(), **kwargs)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    # named after the build folder, so that a killed build's scratch goes with its folder
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f"{folder.name}.request-") as scratch:
        request, failure = Path(scratch) / "request.json", Path(scratch) / "error.json"
        request.write_text(json.dumps({"kind": kind, "folder": str(folder), "kwargs": kwargs, "error_file": str(failure)}))
        package_root = str(Path(__file__).resolve().parents[3])
        env = {**os.environ, **portable_build_env(), _PORTABLE_CHILD: "1",
               "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        code = "import sys; from descriptors.data.real.portable import _portable_child; _portable_child(sys.argv[1])"
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
        _BUILDERS[request["kind"]](Path(request["folder"]), build=_build_record(), **request["kwargs"])
    except DatasetError as exc:
        Path(request["error_file"]).write_text(json.dumps({"type": type(exc).__name__, "what": getattr(exc, "what", str(exc)), "path": str(exc.path), "hint": exc.hint}))
        raise SystemExit(3) from None


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
    allow_partial_sources: bool = False,
    track_sets: Sequence[str] = (),
    track_radius: float = 10.0,
    track_scale_spread: float = 0.5,
    track_min_ncc: float | None = 0.3,
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
    these settings).

    Photos asked for (``n_coil``, ``n_logos`` not 0) whose folder under ``data_root``
    (``coil100/``, ``flickrlogos27/images/``) is missing or empty raise DatasetNotFoundError
    naming it, unless ``allow_partial_sources``: then the set is built from the photos that
    are there (cached under a key of its own, so that it is rebuilt once they are added).

    ``track_sets``: multi-view sets (folders under ``<data_root>/multiview/``, e.g.
    ``vgg_dinosaur``) whose point tracks join the training subset, one Brown point per track
    (:mod:`descriptors.data.real.tracks`: patch radius ``track_radius`` pixels at the set's
    median depth, per-track scales within ``2**±track_scale_spread``, views whose patch has an
    NCC below ``track_min_ncc`` with the track's reference view dropped). ``val_sequences`` and
    ``test_sequence`` may name such a set too: its subset is cut from its tracks.
    Photos, sequences and tracks compose freely (``conf/data/brown_real*.yaml``)."""
    held_in = [*train_sequences, *track_sets]
    if test_sequence in held_in:
        raise ValueError(f"the test sequence {test_sequence!r} must stay held out of train_sequences {list(train_sequences)} and track_sets {list(track_sets)}")
    leaked = [name for name in val_sequences if name in held_in or name == test_sequence]
    if leaked:
        raise ValueError(f"validation sequences {leaked} must be neither training sequences {held_in} nor the test sequence {test_sequence!r}")
    if len(set(held_in)) != len(held_in):
        raise ValueError(f"a training source is named twice: train_sequences {list(train_sequences)}, track_sets {list(track_sets)}")
    if len(set(val_sequences)) != len(val_sequences) or train_name in val_sequences or train_name == test_sequence:
        raise ValueError(f"subset names must differ: train {train_name!r}, validation {list(val_sequences)}, test {test_sequence!r}")
    missing = missing_photo_sources(data_root, n_coil, n_logos) if data_root else []
    if missing and not allow_partial_sources:
        option, what, path = missing[0]
        others = "".join(f" (and {other_what} in {other_path})" for _, other_what, other_path in missing[1:])
        raise DatasetNotFoundError(
            f"the real Brown training set needs {what}{others}, not found in", path,
            f"Put them there, leave them out ({' and '.join(f'data.real_data.{m[0]}=0' for m in missing)}) or build the "
            "smaller set from the photos that are there (data.real_data.allow_partial_sources=true)",
        )
    settings = {k: v for k, v in locals().items() if k not in ("data_root", "cache_dir", "leaked", "missing", "allow_partial_sources", "held_in")}
    if missing:  # the photos actually used are part of the key (absent = all there, as before)
        settings["missing_sources"] = [str(path) for _, _, path in missing]
    settings["train_sequences"] = list(train_sequences)
    settings["val_sequences"] = list(val_sequences)
    # options added later stay out of the key at their defaults: the sets built before keep theirs
    for name, default in _KEY_NEUTRAL_DEFAULTS.items():
        if settings[name] == default:
            settings.pop(name)
    settings["track_sets"] = list(track_sets)
    if not track_sets and not any(is_track_set(data_root, name) for name in [*val_sequences, test_sequence]):
        for name in _TRACK_OPTIONS:  # no track is cut: they change nothing
            settings.pop(name)
    settings["data_root"] = str(Path(data_root).resolve()) if data_root else None
    settings["version"] = REAL_BROWN_VERSION
    folder = _set_folder(cache_dir, "real_brown", settings)
    if real_brown_complete(folder):
        return folder
    sequences_folder(data_root)  # a missing data root fails here, before the build process starts
    scope = dict(locals())
    arguments = {name: scope[name] for name in _BROWN_ARGUMENTS}
    request = {**arguments, "data_root": str(data_root), "settings": settings,
               "train_sequences": list(train_sequences), "val_sequences": list(val_sequences), "track_sets": list(track_sets)}
    atomic_build(folder, lambda private: _run_portable("brown", private, request), real_brown_complete)
    report = json.loads((folder / "done.json").read_text())
    log.info("real Brown set in %s: %s", folder, {k: report[k] for k in ("train", "val", "test") if k in report})
    return folder


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
    if real_hpatches_complete(folder):
        return release
    sequences_folder(data_root)
    request = {"data_root": str(data_root), "settings": settings, "sequences": list(sequences), "n_synthetic": n_synthetic,
               "max_keypoints": max_keypoints, "synthetic_keypoints": synthetic_keypoints,
               "magnification": magnification, "min_ncc": min_ncc, "seed": seed}
    atomic_build(folder, lambda private: _run_portable("hpatches", private, request), real_hpatches_complete)
    return release


_BUILDERS = {"brown": write_real_brown, "hpatches": write_real_hpatches}
_BROWN_ARGUMENTS = set(inspect.signature(write_real_brown).parameters) - {"folder", "build"}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m descriptors.data.real {brown,hpatches} --data-root D --cache-dir C``: build a
    real-data set and print where it is (plus the per-pair report)."""
    parser = argparse.ArgumentParser(description="Patch sets from real images with ground-truth homographies.")
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
