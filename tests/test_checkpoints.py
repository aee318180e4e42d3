"""core.checkpoints: one clear error naming the path for every way a checkpoint file can be wrong."""

from __future__ import annotations

import argparse

import pytest
import torch

from core.checkpoints import load_checkpoint, require_keys
from core.errors import CheckpointError, CheckpointNotFoundError


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"net.w": torch.ones(256)}, "net_config": {"backbone": "resnet18"}}, path)
    return path


def test_loads_a_good_checkpoint_with_its_keys(good):
    checkpoint = load_checkpoint(good, family="retrieval", require=("state_dict", "net_config.backbone"))
    torch.testing.assert_close(checkpoint["state_dict"]["net.w"], torch.ones(256))
    assert load_checkpoint(good, mmap=True)["net_config"] == {"backbone": "resnet18"}


def _truncated(good, tmp_path):
    data = good.read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "half.ckpt"


def _legacy_truncated(good, tmp_path):
    torch.save({"x": 1}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    (tmp_path / "legacy_cut.ckpt").write_bytes((tmp_path / "legacy.ckpt").read_bytes()[:-5])
    return tmp_path / "legacy_cut.ckpt"


def _garbage(good, tmp_path):
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 8)
    return tmp_path / "garbage.ckpt"


def _empty(good, tmp_path):
    (tmp_path / "empty.ckpt").touch()
    return tmp_path / "empty.ckpt"


def _not_a_dict(good, tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
    return tmp_path / "list.ckpt"


def _pickled_object(good, tmp_path):
    torch.save({"hparams": argparse.Namespace(lr=0.1)}, tmp_path / "object.ckpt")
    return tmp_path / "object.ckpt"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_empty, "empty"),
        (_truncated, "truncated"),
        (_legacy_truncated, "truncated or corrupt"),
        (_garbage, "not a PyTorch checkpoint"),
        (_not_a_dict, "not a Lightning checkpoint"),
        (_pickled_object, "refusing to unpickle"),
    ],
)
def test_bad_files_give_one_error_naming_the_path(good, tmp_path, make, expected):
    path = make(good, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert "weights_only" not in message  # never advise the unsafe weights_only=False


def test_missing_path_or_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.ckpt", hint="train one first")
    with pytest.raises(FileNotFoundError, match="train one first"):  # still a FileNotFoundError for callers
        load_checkpoint(tmp_path / "nope.ckpt", hint="train one first")
    with pytest.raises(CheckpointNotFoundError, match="folder"):
        load_checkpoint(tmp_path)


def test_another_familys_checkpoint_is_named(good):
    with pytest.raises(CheckpointError, match=r"not a region-search checkpoint \(no net_config.glimpse_size\)") as info:
        load_checkpoint(good, family="region-search", require=("net_config.glimpse_size",))
    assert isinstance(info.value, ValueError) and str(good) in str(info.value)
    with pytest.raises(CheckpointError, match="lacks 'optimizer_states'"):
        require_keys({"state_dict": {}}, good, ("state_dict", "optimizer_states"))
