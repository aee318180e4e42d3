"""Loading checkpoints safely, with one clear error per way a file can be wrong.

Every loader (the runner's ``ckpt_path``, each family's ``from_checkpoint``) goes through
:func:`load_checkpoint`: tensors and plain containers only (``weights_only=True``), and a
:class:`~core.errors.CheckpointError` naming the path for a missing, empty, truncated or
foreign file instead of torch's messages (which lack the path or advise the unsafe
``weights_only=False``). :func:`require_keys` turns "this is another family's checkpoint"
into "not a retrieval checkpoint" instead of ``KeyError: 'backbone'``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError, CheckpointNotFoundError

# What torch.save writes: a zip archive (since torch 1.6) or, before, a bare pickle stream.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = b"\x80"


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device | None = "cpu",
    *,
    family: str | None = None,
    require: Iterable[str] = (),
    hint: str = "",
    mmap: bool = False,
) -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True``.

    Args:
        family: who wrote it ("retrieval", "region-search", ...), for :func:`require_keys`.
        require: dotted keys the checkpoint must hold (``"net_config.backbone"``).
        hint: how to get a good file (appended to every error, e.g. the train command).
        mmap: map the tensors instead of reading them (cheap validation of large files).

    Raises:
        CheckpointNotFoundError: nothing (or a folder) at ``path``.
        CheckpointError: empty, truncated, not a PyTorch file, unsafe to unpickle, not a dict,
            or missing a required key.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError("checkpoint not found", path, hint)
    if not path.is_file():
        raise CheckpointNotFoundError("checkpoint is a folder, not a file", path, hint)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError("checkpoint is empty (0 bytes)", path, hint)
    is_zip = _starts_with(path, _ZIP_MAGIC)
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint is truncated ({size} bytes, its zip archive has no end)", path, hint)
    if not is_zip and not _starts_with(path, _PICKLE_PROTOCOL_OPCODE):
        raise CheckpointError("not a PyTorch checkpoint (unrecognised content)", path, hint)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            # Unpickling arbitrary objects could run code: refuse, whatever torch suggests.
            raise CheckpointError(
                "checkpoint holds Python objects beyond tensors and plain containers; refusing to unpickle it", path, hint
            ) from None
        raise CheckpointError("checkpoint is corrupt (cannot be unpickled)", path, hint) from None
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError):
        # torch's zip reader, truncated pickle streams, damaged records
        raise CheckpointError(f"checkpoint is truncated or corrupt ({size} bytes)", path, hint) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"not a Lightning checkpoint (holds a {type(checkpoint).__name__}, not a dict)", path, hint)
    require_keys(checkpoint, path, require, family=family, hint=hint)
    return checkpoint


def require_keys(
    checkpoint: dict[str, Any], path: str | os.PathLike, keys: Iterable[str], *, family: str | None = None, hint: str = ""
) -> None:
    """Raise :class:`CheckpointError` unless every dotted key (``"net_config.backbone"``) is present.

    With ``family`` the message reads "not a <family> checkpoint (no net_config.backbone)".
    """
    for key in keys:
        node: Any = checkpoint
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                what = f"not a {family} checkpoint (no {key})" if family else f"checkpoint lacks {key!r}"
                raise CheckpointError(what, path, hint)
            node = node[part]


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


def load_weights(net: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike, *, family: str, hint: str = "") -> None:
    """``net.load_state_dict(state)`` (strict) with one :class:`CheckpointError` naming the path for
    weights that do not fit the network (another family's, another configuration's) or that are
    NaN / infinite (a run that diverged), instead of torch's multi-line key listing."""
    expected = net.state_dict()
    if not set(state) & set(expected):
        raise CheckpointError(f"not a {family} checkpoint (none of its weights belong to the network it describes)", path, hint)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    resized = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    if missing or unexpected or resized:
        parts = [f"{len(keys)} {what} (first: {keys[0]})" for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", resized)) if keys]
        raise CheckpointError(f"checkpoint weights do not fit the network its config describes: {', '.join(parts)}", path, hint)
    broken = [key for key, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise CheckpointError(f"checkpoint holds NaN or infinite weights in {len(broken)} tensors (first: {broken[0]}); the run diverged", path, hint)
    net.load_state_dict(state)
