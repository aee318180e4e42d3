"""Leave-one-sequence-out over the real sequences: train on all but one, test on the one left out.

The seven real "sequences" of the data root are the Oxford / HPatches image sequences with
ground-truth homographies and the Dinosaur's point tracks (:data:`REAL_SEQUENCES`). Each fold
holds one out as its test subset and picks its validation sequence inside the rest
(:func:`leave_one_out_folds`: the first of ``val_preference`` that is not the test), so that
every choice is made without the test sequence. :func:`build_fold` writes a fold's Brown root
with :func:`descriptors.data.real.portable.build_real_brown` (training from the sequences and
tracks only: no photos unless asked for).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .portable import build_real_brown
from .tracks import is_track_set

#: the real sequences of the data root (``sequences/<name>`` or ``multiview/<name>``)
REAL_SEQUENCES = ("graf", "wall", "bark", "bikes", "leuven", "v_churchill", "vgg_dinosaur")
#: validation sequence of a fold: the first of these that is not its test sequence
VAL_PREFERENCE = ("graf", "wall")
#: build_real_brown settings of every fold unless a base is given: no photos (the other options at
#: their defaults)
FOLD_DEFAULTS = {"n_coil": 0, "n_logos": 0, "skimage_photos": False, "train_name": "real_train"}


@dataclass(frozen=True)
class Fold:
    """One fold: ``test`` held out, ``val`` for every choice, ``train`` the rest."""

    test: str
    val: str
    train: tuple[str, ...]


def leave_one_out_folds(names: Sequence[str] = REAL_SEQUENCES, val_preference: Sequence[str] = VAL_PREFERENCE) -> list[Fold]:
    """One fold per name, in order: test = that name, validation = the first of
    ``val_preference`` that is not the test (it must be one of ``names``), train = the others.
    No fold trains or validates on its test sequence."""
    names = list(names)
    if len(set(names)) != len(names) or len(names) < 3:
        raise ValueError(f"leave-one-out needs at least three distinct sequences, got {names}")
    folds = []
    for test in names:
        val = next((name for name in val_preference if name != test and name in names), None)
        if val is None:
            raise ValueError(f"no validation sequence for the fold that tests on {test!r}: none of {list(val_preference)} is among {names} besides it")
        folds.append(Fold(test, val, tuple(name for name in names if name not in (test, val))))
    return folds


def fold_settings(fold: Fold, data_root: str | os.PathLike | None, base: dict | None = None, **overrides) -> dict:
    """The :func:`build_real_brown` keyword arguments of a fold (without data root and cache):
    ``base`` (e.g. a ``data.real_data`` config; default :data:`FOLD_DEFAULTS`, no photos), then
    the fold's sources: its training names split into image sequences and multi-view track sets
    (by what ``data_root`` holds), ``val_sequences`` = ``[fold.val]``, ``test_sequence`` =
    ``fold.test``, then ``overrides``. The datamodule reads the subsets ``train_name``
    (``real_train``), ``fold.val`` and ``fold.test``."""
    tracks = [name for name in fold.train if is_track_set(data_root, name)]
    sources = {"train_sequences": [name for name in fold.train if name not in tracks], "track_sets": tracks,
               "val_sequences": [fold.val], "test_sequence": fold.test}
    for name in sources:
        if name in overrides:
            raise ValueError(f"{name} is the fold's own ({sources[name]}); choose the folds with leave_one_out_folds")
    return {**(FOLD_DEFAULTS if base is None else dict(base)), **sources, **overrides}


def build_fold(data_root: str | os.PathLike, cache_dir: str | os.PathLike, fold: Fold, base: dict | None = None, **overrides) -> Path:
    """A fold's Brown root (built once, cached): see :func:`fold_settings`."""
    return build_real_brown(data_root, cache_dir, **fold_settings(fold, data_root, base, **overrides))


def build_folds(data_root: str | os.PathLike, cache_dir: str | os.PathLike, names: Sequence[str] = REAL_SEQUENCES,
                val_preference: Sequence[str] = VAL_PREFERENCE, base: dict | None = None, **overrides) -> dict[str, Path]:
    """Every fold's Brown root, by test sequence."""
    folds = leave_one_out_folds(names, val_preference)
    return {fold.test: build_fold(data_root, cache_dir, fold, base, **overrides) for fold in folds}
