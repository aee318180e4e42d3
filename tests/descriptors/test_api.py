"""descriptors.api: checkpoints -> plain descriptor / matcher objects, without Hydra."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml

from descriptors.api import PatchDescriptor, PatchMatcher, as_patch_tensor, load_network
from descriptors.data.datamodule import BrownDataModule
from descriptors.module import DescriptorModule, MetricLearningModule, resize_patches
from descriptors.nets import (
    NETWORKS,
    BinaryL2Net,
    DeepCompare2ch,
    DeepComparePseudoSiamese,
    HardNet,
    L2Net,
    MatchNet,
    TFeat,
    l2_normalize,
    network_from_spec,
    network_spec,
    standardize_patches,
)
from tests.descriptors.test_experiments import write_brown_fixture


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


@pytest.fixture(scope="module")
def brown_root(tmp_path_factory):
    return write_brown_fixture(tmp_path_factory.mktemp("brown"), n_points=40)


def _train(tmp_path, brown_root, module, sampler: str, name: str):
    datamodule = BrownDataModule(str(brown_root), sampler=sampler, n_train=32, n_val=32, batch_size=8, eval_batch_size=32, cache_dir=str(tmp_path / "cache"))
    trainer = _trainer(tmp_path, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_every_network_rebuilds_from_its_spec():
    for name, cls in NETWORKS.items():
        net = cls()
        spec = network_spec(net)
        assert spec["class"] == f"{cls.__module__}.{cls.__name__}" and cls.__module__.startswith("descriptors.nets."), name
        rebuilt = network_from_spec(spec)
        rebuilt.load_state_dict(net.state_dict())  # same layout
        # checkpoints written before the nets/ package name the class by its old module
        assert type(network_from_spec({**spec, "class": f"descriptors.networks.{cls.__name__}"})) is cls, name
        assert yaml.safe_load(yaml.safe_dump(spec)) == spec  # plain values only
    assert network_spec(TFeat(descriptor_dim=64))["kwargs"] == {"descriptor_dim": 64}
    assert network_spec(BinaryL2Net(central_surround=True, dropout=0.1))["kwargs"] == {"central_surround": True, "dropout": 0.1}
    assert network_spec(HardNet(dropout=0.2))["kwargs"] == {"dropout": 0.2, "input_eps": 1e-7}  # the subclass's own arguments
    with pytest.raises(ValueError, match="not a descriptors network"):
        network_from_spec({"class": "os.system", "kwargs": {}})


def test_channels_last_l2net_matches_the_plain_layout():
    torch.manual_seed(0)
    net = L2Net().eval()
    x = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        plain = l2_normalize(net.features(standardize_patches(x, net.input_eps)).flatten(1))
        assert torch.allclose(net(x), plain, atol=1e-5)
        descriptors, maps = net(x, return_features=True)
    assert torch.allclose(descriptors, plain, atol=1e-5) and maps[0].shape == (6, 32 * 32 * 32)


def test_descriptor_from_a_trained_checkpoint(tmp_path, brown_root):
    module = DescriptorModule(HardNet(), loss="hardnet", optimizer=partial(torch.optim.SGD, lr=0.1))
    path = _train(tmp_path, brown_root, module, "points", "hardnet")
    descriptor = PatchDescriptor.from_checkpoint(path)
    assert descriptor.descriptor_dim == 128 and descriptor.patch_size == 32 and not descriptor.binary
    patches = np.random.default_rng(0).integers(0, 256, (10, 64, 64), dtype=np.uint8)
    vectors = descriptor.describe(patches)
    assert vectors.shape == (10, 128) and torch.allclose(vectors.norm(dim=1), torch.ones(10), atol=1e-4)
    module.eval()
    expected = module.describe(torch.from_numpy(patches))
    assert torch.allclose(vectors, expected, atol=1e-5)  # the same weights, resize and normalisation
    # uint8, float in [0, 1], with and without the channel axis: the same descriptors
    floats = torch.from_numpy(patches).float() / 255
    assert torch.allclose(descriptor(floats.unsqueeze(1)), vectors, atol=1e-5)
    assert torch.allclose(descriptor.describe(floats.numpy()), vectors, atol=1e-5)
    distances = descriptor.distance(vectors[:5], vectors[5:])
    assert torch.allclose(distances, descriptor.cdist(vectors[:5], vectors[5:]).diagonal(), atol=1e-5)
    assert torch.allclose(descriptor.distance(vectors, vectors), torch.zeros(10), atol=1e-5)
    # HPatches-size patches are resized like in training
    hpatches = np.random.default_rng(1).integers(0, 256, (4, 65, 65), dtype=np.uint8)
    resized = resize_patches(torch.from_numpy(hpatches).float().div(255).unsqueeze(1), 32)
    assert torch.allclose(descriptor.describe(hpatches), descriptor.describe(resized), atol=1e-6)
    with pytest.raises(ValueError, match="not a metric network"):
        PatchMatcher.from_checkpoint(path)


def test_binary_descriptor_uses_hamming(tmp_path):
    net = BinaryL2Net()
    module = DescriptorModule(net, loss="l2net", loss_kwargs={"e3_weight": 0.0})
    path = tmp_path / "binary.ckpt"
    trainer = _trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    descriptor = PatchDescriptor.from_checkpoint(path)
    assert descriptor.binary
    codes = descriptor.describe(torch.rand(6, 1, 32, 32))
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    hamming = (codes[:3] != codes[3:]).sum(dim=1).float()
    assert torch.equal(descriptor.distance(codes[:3], codes[3:]), hamming)
    assert torch.equal(descriptor.cdist(codes[:3], codes[3:]).diagonal(), hamming)


def test_matcher_from_a_trained_checkpoint(tmp_path, brown_root):
    module = MetricLearningModule(DeepCompare2ch(), loss="hinge", optimizer=partial(torch.optim.SGD, lr=0.01))
    path = _train(tmp_path, brown_root, module, "pairs", "2ch")
    matcher = PatchMatcher.from_checkpoint(path)
    assert not matcher.two_step
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (6, 64, 64), dtype=np.uint8) for _ in range(2))
    scores = matcher.score(a, b)
    module.eval()
    with torch.no_grad():
        expected = module.score_pairs(torch.from_numpy(a).float().div(255).unsqueeze(1), torch.from_numpy(b).float().div(255).unsqueeze(1))
    assert scores.shape == (6,) and torch.allclose(scores, expected, atol=1e-5)
    pool = np.concatenate([a, b])
    pairs = np.array([[0, 6], [1, 7], [2, 8]])
    assert torch.allclose(matcher.score_index_pairs(pool, pairs), scores[:3], atol=1e-5)
    with pytest.raises(ValueError, match="no per-patch features"):
        matcher.features(a)
    with pytest.raises(ValueError, match="patches1 holds 6 images but patches2 holds 2"):
        matcher.score(a, b[:2])
    with pytest.raises(ValueError, match="not a descriptor network"):
        PatchDescriptor.from_checkpoint(path)


@pytest.mark.parametrize("net_class", [MatchNet, DeepComparePseudoSiamese])
def test_two_step_matchers_agree_with_pair_scores(tmp_path, net_class):
    torch.manual_seed(0)
    loss = "softmax_ce" if net_class is MatchNet else "hinge"
    module = MetricLearningModule(net_class(), loss=loss)
    path = tmp_path / "metric.ckpt"
    trainer = _trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    matcher = PatchMatcher.from_checkpoint(path, batch_size=4)
    assert matcher.two_step and matcher.two_towers == (net_class is DeepComparePseudoSiamese)
    pool = torch.rand(8, 1, 64, 64)
    pairs = np.array([[0, 1], [3, 2], [5, 7], [6, 6]])
    direct = matcher.score(pool[pairs[:, 0]], pool[pairs[:, 1]])
    assert torch.allclose(matcher.score_index_pairs(pool, pairs), direct, atol=1e-4)


def test_config_tree_fallback_and_errors(tmp_path):
    net = TFeat(descriptor_dim=64)
    module = DescriptorModule(net, loss="triplet_margin")
    trainer = _trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(module)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["network"] == {"class": "descriptors.nets.tfeat.TFeat", "kwargs": {"descriptor_dim": 64}}
    del checkpoint["network"]  # a checkpoint of an older version
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="does not say which network"):
        load_network(path)
    (run / "config_tree.yaml").write_text(yaml.safe_dump({"model": {"net": {"_target_": "descriptors.networks.TFeat", "descriptor_dim": 64}}}))
    descriptor = PatchDescriptor.from_checkpoint(path)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(descriptor.describe(x), net.eval()(x), atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="grey"):
        as_patch_tensor(np.zeros((2, 3, 32, 32), dtype=np.uint8))


# -- bad checkpoints and bad input: one ValueError naming the path or the argument ----------------
@pytest.fixture(scope="module")
def tfeat_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfeat") / "tfeat.ckpt"
    trainer = _trainer(path.parent, max_steps=0)
    trainer.strategy.connect(DescriptorModule(TFeat(descriptor_dim=16), loss="triplet_margin"))
    trainer.save_checkpoint(path)
    return path


def _truncated(tmp_path, good):
    (tmp_path / "half.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return tmp_path / "half.ckpt"


def _empty(tmp_path, good):
    (tmp_path / "empty.ckpt").touch()
    return tmp_path / "empty.ckpt"


def _garbage(tmp_path, good):
    (tmp_path / "garbage.ckpt").write_bytes(bytes(range(256)) * 8)
    return tmp_path / "garbage.ckpt"


def _region_search_checkpoint(tmp_path, good):
    from regionsearch.module import RegionSearchModule
    from regionsearch.nets.search_path import SearchPathMatcher

    trainer = _trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(RegionSearchModule(SearchPathMatcher(steps=2, channels=(8, 8, 8, 8, 8), hidden_size=16)))
    trainer.save_checkpoint(tmp_path / "regionsearch.ckpt")
    return tmp_path / "regionsearch.ckpt"


def _retrieval_checkpoint(tmp_path, good):
    state = {"net.backbone.features.0.weight": torch.zeros(2, 3, 1, 1)}
    torch.save({"state_dict": state, "net_config": {"kind": "retrieval_net", "backbone": "efficientnet_lite0"}}, tmp_path / "retrieval.ckpt")
    return tmp_path / "retrieval.ckpt"


def _foreign_class(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["network"] = {"class": "retrieval.nets.retrieval_net.RetrievalNet", "kwargs": {}}
    torch.save(checkpoint, tmp_path / "foreign.ckpt")
    return tmp_path / "foreign.ckpt"


def _other_architecture(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    checkpoint["network"]["kwargs"]["descriptor_dim"] = 32  # the weights are of 16
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    return tmp_path / "mismatch.ckpt"


def _diverged(tmp_path, good):
    checkpoint = torch.load(good, map_location="cpu", weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if k.startswith("net.") and v.is_floating_point())
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("inf"))
    torch.save(checkpoint, tmp_path / "inf.ckpt")
    return tmp_path / "inf.ckpt"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp_path, good: tmp_path / "missing.ckpt", "checkpoint not found"),
        (_empty, "empty"),
        (_truncated, "truncated"),
        (_garbage, "not a PyTorch checkpoint"),
        (_region_search_checkpoint, "not a patch-descriptor checkpoint"),
        (_retrieval_checkpoint, "not a patch-descriptor checkpoint"),
        (_foreign_class, "not a patch-descriptor checkpoint"),
        (_other_architecture, "weights do not fit"),
        (_diverged, "NaN or infinite weights"),
    ],
)
@pytest.mark.parametrize("loader", [PatchDescriptor.from_checkpoint, PatchMatcher.from_checkpoint, load_network])
def test_bad_checkpoints_give_one_line_naming_the_path(tmp_path, tfeat_checkpoint, make, expected, loader):
    path = make(tmp_path, tfeat_checkpoint)
    with pytest.raises(ValueError) as info:
        loader(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert "weights_only" not in message  # never advise the unsafe weights_only=False


@pytest.fixture(scope="module")
def tfeat():
    torch.manual_seed(0)
    return PatchDescriptor(TFeat(descriptor_dim=16))


@pytest.mark.parametrize(
    ("patches", "expected"),
    [
        (np.full((2, 32, 32), np.nan, np.float32), "patches has 2048 NaN or infinite values"),
        (torch.zeros(3, 1, 32, 32).index_fill_(3, torch.tensor([5]), float("-inf")), "patches has 96 NaN or infinite"),
        (np.zeros((32, 32, 3), np.uint8), "patches looks like one \\(H, W, 3\\) image"),
        (np.zeros((2, 32, 32, 3), np.uint8), "patches is a RGB image \\(shape \\(2, 32, 32, 3\\)\\) but the model takes grey"),
        (np.zeros((2, 3, 32, 32), np.uint8), "patches is a RGB image"),
        (np.zeros((32, 32), np.uint8), "patches must be grey \\(N, H, W\\) or \\(N, 1, H, W\\) patches, got shape \\(32, 32\\)"),
        (np.zeros((2, 32, 32), np.int16), "patches must be uint8 \\(0..255\\) or float \\(0..1\\), got dtype int16"),
        (np.zeros((2, 0, 32), np.uint8), "patches is empty"),
    ],
)
def test_bad_patches_give_a_value_error_naming_the_argument(tfeat, patches, expected):
    with pytest.raises(ValueError, match=expected):
        tfeat.describe(patches)


def test_bad_pairs_and_descriptors_name_the_argument(tfeat):
    torch.manual_seed(0)
    matcher = PatchMatcher(DeepCompare2ch())
    good = np.zeros((2, 64, 64), np.uint8)
    with pytest.raises(ValueError, match="patches2 has 1 NaN"):
        matcher.score(good, np.where(np.arange(64 * 64 * 2).reshape(2, 64, 64) == 7, np.nan, 0).astype(np.float32))
    with pytest.raises(ValueError, match="patches1 holds 3 images but patches2 holds 2"):
        matcher.score(np.zeros((3, 64, 64), np.uint8), good)
    vectors = tfeat.describe(np.zeros((2, 32, 32), np.uint8))
    broken = vectors.clone()
    broken[1, 0] = float("nan")
    with pytest.raises(ValueError, match="b has 1 NaN"):
        tfeat.distance(vectors, broken)
    with pytest.raises(ValueError, match="a has 16 NaN"):
        tfeat.cdist(torch.full((1, 16), float("nan")), vectors)
    # channels-last grey (N, H, W, 1) is the same as (N, 1, H, W)
    x = torch.rand(2, 32, 32, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tfeat.describe(x), tfeat.describe(x.permute(0, 3, 1, 2)))


def test_the_hpatches_evaluator_is_part_of_the_api():
    from descriptors import api, evaluate

    assert api.evaluate_hpatches is evaluate.evaluate_hpatches
