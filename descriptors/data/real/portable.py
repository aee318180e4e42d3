"""The cached real-data sets, built in a portable process (the same bytes on every CPU), and
their command line: ``python -m descriptors.data.real {brown,hpatches} --data-root D --cache-dir C``.

:func:`build_real_brown` and :func:`build_real_hpatches` key a set by its settings, and when
it is not cached run :mod:`descriptors.data.real.writer` in a new Python process under
:func:`portable_build_env`.
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

from .writer import sequences_folder, write_real_brown, write_real_hpatches

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
        _BUILDERS[kind](folder, build=_build_record(), **kwargs)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".request-") as scratch:
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
    sequences_folder(data_root)  # a missing data root fails here, before the build process starts
    scope = dict(locals())
    arguments = {name: scope[name] for name in _BROWN_ARGUMENTS}
    _run_portable("brown", folder, {**arguments, "data_root": str(data_root), "settings": settings,
                                    "train_sequences": list(train_sequences), "val_sequences": list(val_sequences)})
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
    if (folder / "report.json").is_file():
        return release
    sequences_folder(data_root)
    _run_portable("hpatches", folder, {"data_root": str(data_root), "settings": settings, "sequences": list(sequences), "n_synthetic": n_synthetic,
                                       "max_keypoints": max_keypoints, "synthetic_keypoints": synthetic_keypoints,
                                       "magnification": magnification, "min_ncc": min_ncc, "seed": seed})
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
