"""Published descriptor weights: the staged files (TFeat x3, HardTFeat, MKD) against kornia, the
official HardNet / SOSNet / HyNet / L2-Net formats on files written here, clear errors for a
missing file or another network's, fine-tuning from published weights, and the suite's rows."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from core.errors import CheckpointError, DatasetNotFoundError
from descriptors.nets.published import (
    PUBLISHED,
    git_blob_id,
    load_published,
    published_names,
    weights_root,
)
from tests.conftest import SHARED_DATA

WEIGHTS = SHARED_DATA / "weights"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "tfeat").is_dir(), reason=f"no published weights under {WEIGHTS}")


def _patches(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_network(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> None:
    """The same function to 1e-6, compared in float64: in float32 the two differ by the kernels
    each picks (kornia >= 0.9.2 runs its patch convolutions channels-last: ~2e-6 on TFeat's outputs),
    which is checked only to 1e-5."""
    ours64, theirs64 = copy.deepcopy(ours).double().eval(), copy.deepcopy(theirs).double().eval()
    with torch.no_grad():
        assert (ours64(x.double()) - theirs64(x.double())).abs().max() < 1e-6
        assert (ours(x) - theirs.eval()(x)).abs().max() < 1e-5


def _randomise_batchnorm(net: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics, so that a wrong BN mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))


# -- the staged files --------------------------------------------------------------------------
@needs_weights
@pytest.mark.parametrize("subset", ["liberty", "notredame", "yosemite"])
def test_published_tfeat_is_kornias_tfeat_with_the_same_file(subset):
    import kornia.feature as KF

    ours = load_published(f"tfeat-{subset}", WEIGHTS)
    theirs = KF.TFeat(pretrained=False)
    theirs.load_state_dict(torch.load(WEIGHTS / "tfeat" / f"tfeat-{subset}.params", map_location="cpu", weights_only=True))
    assert_same_network(ours, theirs, _patches())
    assert type(ours).__module__ == "descriptors.nets.tfeat" and not ours.training
    assert ours.published["official"] and ours.published["git_blob"] == git_blob_id(WEIGHTS / "tfeat" / f"tfeat-{subset}.params")


@needs_weights
def test_published_mkd_is_kornias_mkd_with_the_local_whitening_file(monkeypatch):
    import kornia.feature as KF
    import kornia.feature.mkd as kornia_mkd

    mkd = load_published("mkd-concat-pcawt-liberty", WEIGHTS)
    assert (mkd.patch_size, mkd.descriptor_dim) == (64, 128) and mkd.published["official"]
    # kornia's own constructor, its download replaced by the same local file
    monkeypatch.setattr(kornia_mkd, "load_state_dict_from_url",
                        lambda url, map_location=None: torch.load(WEIGHTS / "mkd" / "mkd-concat-64.pth", map_location="cpu", weights_only=True))
    theirs = KF.MKDDescriptor(patch_size=64, kernel_type="concat", whitening="pcawt", training_set="liberty")
    x = _patches(8, 64)
    with torch.no_grad():
        assert (mkd(x) - theirs(x)).abs().max() < 1e-6
    assert load_published("mkd-cart-lw-yosemite", WEIGHTS)(x).shape == (8, 63)  # the cart embedding is 63 wide


@needs_weights
def test_published_hardtfeat_loads_without_its_unused_sift_module():
    net = load_published("hardtfeat", WEIGHTS)
    x = _patches()
    with torch.no_grad():
        out = net(x)
    assert out.shape == (16, 128) and torch.allclose(out.norm(dim=1), torch.ones(16), atol=1e-5)
    assert net.published["official"] and not any(k.startswith("SIFT") for k in net.state_dict())


def test_missing_file_names_the_path_and_the_official_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_published("tfeat-liberty", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "tfeat" / "tfeat-liberty.params") in message
    assert "https://github.com/vbalnt/tfeat/raw/master/pretrained-models/tfeat-liberty.params" in message
    with pytest.raises(ValueError, match="unknown published network"):
        load_published("tfeat-paris", tmp_path)


def test_names_and_default_root(monkeypatch, tmp_path):
    names = published_names()
    for name in ("tfeat-liberty", "tfeat-notredame", "tfeat-yosemite", "hardtfeat", "mkd-concat-pcawt-liberty", "hardnet", "sosnet", "hynet",
                 "l2net", "l2net-liberty-plus", "hardnet++"):
        assert name in names, name
    assert all(len(blob) == 40 for spec in PUBLISHED.values() for blob in spec.blobs)
    assert {n for n, spec in PUBLISHED.items() if spec.hpatches_trained} == {"hardnet++", "sosnet-hpatches-a", "l2net-hpatches", "l2net-hpatches-plus"}
    from benchmarks.suites.descriptors import published_row_name

    assert published_row_name("tfeat_liberty") == ("tfeat-liberty", "liberty") and published_row_name("hynet_notredame")[0] == "hynet-notredame"
    for refused in ("hardnet++", "sosnet_hpatches_a", "l2net_hpatches"):
        with pytest.raises(ValueError, match="HPatches"):
            published_row_name(refused)
    monkeypatch.setenv("DEEPMATCH_DATA", str(tmp_path))
    assert weights_root() == tmp_path / "weights"


# -- the official formats of the files that are not staged -------------------------------------
def test_official_hardnet_checkpoint_gives_kornias_hardnet(tmp_path):
    import kornia.feature as KF

    theirs = KF.HardNet(pretrained=False)
    _randomise_batchnorm(theirs)
    file = tmp_path / "checkpoint_liberty_with_aug.pth"
    torch.save({"epoch": 9, "state_dict": theirs.state_dict()}, file)  # DagnyT/hardnet's layout
    ours = load_published("hardnet", path=file)
    x = _patches()
    with torch.no_grad():
        # kornia standardises with eps 1e-6, HardNet's code with 1e-7
        assert (ours(x) - theirs.eval()(x)).abs().max() < 1e-5
    assert not ours.training and not ours.published["official"]


def test_official_sosnet_state_dict_gives_kornias_sosnet(tmp_path):
    import kornia.feature as KF

    theirs = KF.SOSNet(pretrained=False)
    _randomise_batchnorm(theirs)
    file = tmp_path / "sosnet_32x32_liberty.pth"
    torch.save(theirs.state_dict(), file)  # keys layers.1 ... layers.21
    ours = load_published("sosnet", path=file)
    x = _patches()
    with torch.no_grad():
        assert (ours(x) - theirs.eval()(x)).abs().max() < 1e-5


def test_official_hynet_state_dict_gives_kornias_hynet(tmp_path):
    import kornia.feature as KF

    theirs = KF.HyNet(pretrained=False)
    _randomise_batchnorm(theirs)
    with torch.no_grad():  # FRN scales / shifts and TLU thresholds away from their initial values
        generator = torch.Generator().manual_seed(2)
        for value in theirs.parameters():
            if value.dim() == 4 and value.shape[0] == 1 and value.shape[2:] == (1, 1):  # (1, C, 1, 1): FRN and TLU
                value.add_(0.1 * torch.randn(value.shape, generator=generator))
    file = tmp_path / "HyNet_LIB.pth"
    torch.save(theirs.state_dict(), file)
    ours = load_published("hynet", path=file)
    assert_same_network(ours, theirs, _patches())
    assert type(ours).__module__ == "descriptors.nets.hynet" and (ours.patch_size, ours.descriptor_dim) == (32, 128)


def _cell(*arrays) -> np.ndarray:
    """A MATLAB cell array (what savemat writes for an object array)."""
    cell = np.empty(len(arrays), dtype=object)
    cell[:] = arrays
    return cell


def _matconvnet_l2net(seed: int = 0) -> tuple[dict, list]:
    """An L2-Net MatConvNet simplenn file's content (``cal_L2Net_des.m``'s ``net`` and ``pixMean``):
    layers conv / bnormPair / relu, then the 8x8 conv, a bnormPair and normalize."""
    rng = np.random.default_rng(seed)
    layers, reference = [], []
    specs = [(1, 32, 3, 1, 1), (32, 32, 3, 1, 1), (32, 64, 3, 2, 1), (64, 64, 3, 1, 1), (64, 128, 3, 2, 1), (128, 128, 3, 1, 1), (128, 128, 8, 1, 0)]
    for index, (n_in, n_out, k, stride, pad) in enumerate(specs):
        weight = (rng.normal(size=(k, k, n_in, n_out)) / np.sqrt(k * k * n_in)).astype(np.float32)  # H x W x Cin x Cout
        bias = (0.1 * rng.normal(size=n_out)).astype(np.float32)
        moments = np.stack([0.1 * rng.normal(size=n_out), 0.5 + rng.random(n_out)], axis=1).astype(np.float32)  # (mean, sigma)
        ones, zeros = np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
        layers.append({"type": "conv", "name": f"conv{index}", "weights": _cell(weight, bias), "stride": stride, "pad": pad})
        layers.append({"type": "bnormPair", "name": f"bn{index}", "weights": _cell(ones, zeros, moments)})
        if index < len(specs) - 1:
            layers.append({"type": "relu", "name": f"relu{index}"})
        reference.append((weight, bias, moments, stride, pad))
    layers.append({"type": "normalize", "name": "l2"})
    cell = _cell(*layers)
    pix_mean = (110 + 20 * rng.random((32, 32))).astype(np.float32)
    return {"net": {"layers": cell}, "pixMean": pix_mean}, reference


def _matconvnet_forward(x255: torch.Tensor, pix_mean: np.ndarray, reference: list) -> torch.Tensor:
    """What cal_L2Net_des.m computes, written out independently: minus pixMean, per-patch
    standardisation, conv + (x - mean) / sigma (+ ReLU), L2."""
    h = x255 - torch.from_numpy(pix_mean)
    h = (h - h.mean(dim=(1, 2, 3), keepdim=True)) / (h.std(dim=(1, 2, 3), keepdim=True) + 1e-12)
    for index, (weight, bias, moments, stride, pad) in enumerate(reference):
        h = F.conv2d(h, torch.from_numpy(weight).permute(3, 2, 0, 1), torch.from_numpy(bias), stride=stride, padding=pad)
        m = torch.from_numpy(moments)
        h = (h - m[:, 0].view(1, -1, 1, 1)) / m[:, 1].view(1, -1, 1, 1)
        if index < len(reference) - 1:
            h = h.relu()
    return F.normalize(h.flatten(1), dim=1)


def test_official_l2net_matconvnet_file_gives_the_matlab_computation(tmp_path):
    import scipy.io

    content, reference = _matconvnet_l2net()
    file = tmp_path / "L2Net-LIB.mat"
    scipy.io.savemat(file, content)
    net = load_published("l2net", path=file)
    x = _patches()
    with torch.no_grad():
        assert (net(x) - _matconvnet_forward(255 * x, content["pixMean"], reference)).abs().max() < 1e-5


def test_a_file_of_another_network_is_one_clear_error(tmp_path):
    import kornia.feature as KF

    tfeat = tmp_path / "checkpoint_liberty_with_aug.pth"
    torch.save({"epoch": 1, "state_dict": KF.TFeat(pretrained=False).state_dict()}, tfeat)
    with pytest.raises(CheckpointError) as error:
        load_published("hardnet", path=tfeat)
    assert str(tfeat) in str(error.value) and "HardNet" in str(error.value) and "descr.0" in str(error.value)
    text = tmp_path / "HyNet_LIB.pth"
    text.write_text("not a torch file")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file for 'hynet'"):
        load_published("hynet", path=text)
    with pytest.raises(CheckpointError, match="SOSNet"):
        load_published("sosnet", path=tfeat)
    mat = tmp_path / "L2Net-LIB.mat"
    __import__("scipy.io").io.savemat(mat, {"weights": np.zeros(3)})
    with pytest.raises(CheckpointError, match="L2-Net"):
        load_published("l2net", path=mat)
    with pytest.raises(CheckpointError, match="MKD"):
        (tmp_path / "mkd").mkdir()
        torch.save({"liberty": {"pca": {"mean": torch.zeros(3)}}}, tmp_path / "mkd" / "mkd-concat-64.pth")
        load_published("mkd-concat-pcawt-liberty", tmp_path)


# -- fine-tuning from published weights ----------------------------------------------------------
def _official_tfeat_root(tmp_path):
    """The real weights if staged, else a TFeat state dict written in the official format."""
    if (WEIGHTS / "tfeat" / "tfeat-liberty.params").is_file():
        return WEIGHTS
    import kornia.feature as KF

    root = tmp_path / "weights"
    (root / "tfeat").mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(KF.TFeat(pretrained=False).state_dict(), root / "tfeat" / "tfeat-liberty.params")
    return root


def test_finetune_option_starts_from_the_published_weights(make_cfg, tmp_path):
    import hydra

    root = _official_tfeat_root(tmp_path)
    cfg = make_cfg(["experiment=descriptors/tfeat_liberty_finetune", f"model.weights_root={root}"])
    assert cfg.model.init_weights == "tfeat-liberty"
    module = hydra.utils.instantiate(cfg.model)
    x = _patches()
    published = load_published("tfeat-liberty", root)
    with torch.no_grad():
        assert (module.net.eval()(x) - published(x)).abs().max() > 1e-3  # composing loads nothing
        module.setup("fit")
        assert (module.net.eval()(x) - published(x)).abs().max() == 0.0
    assert module.hparams.init_weights == "tfeat-liberty"


def test_finetune_experiment_trains_from_the_published_file(tmp_path):
    from tests.conftest import REPO, run_module
    from tests.descriptors.test_experiments import write_brown_fixture

    data = write_brown_fixture(tmp_path / "data", n_points=30)
    root = _official_tfeat_root(tmp_path)
    run = tmp_path / "run"
    result = run_module(
        ["benchmarks.train", "experiment=descriptors/tfeat_liberty_finetune", "data=brown", "++trainer.fast_dev_run=true",
         f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={run}", f"hydra.run.dir={run}",
         f"model.weights_root={root}", "data.n_train=16", "data.batch_size=8", "data.n_val=32", "data.n_test=32", "data.eval_batch_size=32",
         "logger=none", "extras.print_config=false", "trainer=cpu"],
        cwd=REPO, env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["test/fpr95"] <= 1.0


# -- the suite's rows ------------------------------------------------------------------------------
def test_published_rows_in_the_suite_json_end_to_end(tmp_path):
    from benchmarks.suites.descriptors import run_suite
    from tests.descriptors.test_descriptors_benchmark import _hpatches_release
    from tests.descriptors.test_experiments import write_brown_fixture

    data = write_brown_fixture(tmp_path / "data", n_points=40)
    release = _hpatches_release(tmp_path / "hp")
    weights = WEIGHTS if (WEIGHTS / "mkd").is_dir() else None
    if weights is None:  # the official formats, written here
        import kornia.feature as KF

        weights = _official_tfeat_root(tmp_path)
        (weights / "mkd").mkdir()
        eye = {"mean": torch.zeros(238), "eigvecs": torch.eye(238), "eigvals": torch.linspace(2, 1, 238)}
        torch.save({s: {"pca": eye, "lw": eye} for s in ("liberty", "notredame", "yosemite")}, weights / "mkd" / "mkd-concat-64.pth")
        (weights / "hardtfeat").mkdir()
        trunk = KF.TFeat(pretrained=False).state_dict()
        torch.save({"epoch": 2, "state_dict": {"features.0.weight": trunk["features.1.weight"], "features.0.bias": trunk["features.1.bias"],
                                               "features.3.weight": trunk["features.4.weight"], "features.3.bias": trunk["features.4.bias"],
                                               "classifier.1.weight": 0.01 * torch.randn(128, 64, 8, 8), "classifier.1.bias": torch.zeros(128),
                                               "SIFT.gx.0.weight": torch.zeros(1, 1, 1, 3)}}, weights / "hardtfeat" / "HardTFeat.pth")
    publish = tmp_path / "published"
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        rows = run_suite(
            output_dir=str(tmp_path / "run"), methods=[], data_dir=str(data), cache_dir=str(tmp_path / "cache"), baselines=("sift",),
            data_overrides=["data=brown", "data.val_subset=liberty"],
            base_overrides=[f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=none", "extras.print_config=false",
                            "trainer=cpu", "data.n_val=32", "data.eval_batch_size=32"],
            n_test_pairs=100, hpatches_root=str(release), hpatches_lists={"n_pos": 200, "n_neg": 200, "n_queries": 10, "n_distractors": 20},
            timing_batch_size=16, timing_patches=32, timing_repeats=1, publish_dir=str(publish),
            published=["mkd", "tfeat_liberty", "hardtfeat", "tfeat_notredame"], weights_dir=str(weights),
        )
    GlobalHydra.instance().clear()
    by_name = {r["method"]: r for r in rows}
    staged = weights == WEIGHTS
    expected = ["sift", "mkd", "tfeat_liberty", "hardtfeat", *(["tfeat_notredame"] if staged else [])]
    assert [r["method"] for r in rows] == expected
    for name in expected[1:]:
        row = by_name[name]
        assert 0.0 <= row["fpr95"] <= 1.0 and row["patches_per_s"] > 0 and 0.0 <= row["val_fpr95"] <= 1.0, name
        assert all(0.0 <= row[f"hpatches_{t}"] <= 1.0 for t in ("verification", "matching", "retrieval")), name
        assert row["published"]["official"] is staged and "seconds_per_epoch" not in row, name
    assert by_name["mkd"]["train"] == "liberty" and by_name["mkd"]["dim"] == 128
    assert by_name["tfeat_liberty"]["max_abs_difference_vs_kornia"] < 1e-5  # through the channels-last inference copy
    # published in the table's order (the published rows after SIFT / RootSIFT, in PAPER's order)
    published = json.loads((publish / "descriptors.json").read_text())
    assert sorted(published, key=lambda r: r["method"]) == sorted(rows, key=lambda r: r["method"])
    assert [r["method"] for r in published] == ["sift", "mkd", "tfeat_liberty", *(["tfeat_notredame"] if staged else []), "hardtfeat"]
    table = (tmp_path / "run" / "descriptors.md").read_text()
    assert "| TFeat (published, liberty) |" in table and "Published weights (evaluated as released, not trained here)" in table
    if not staged:  # the absent file: skipped with a note, no row
        assert "Published row tfeat_notredame skipped" in table


def test_our_hynet_trains_and_rebuilds_from_its_spec():
    from descriptors.nets import HyNet, network_from_spec, network_spec

    torch.manual_seed(0)
    net = HyNet()
    out = net(_patches(4))
    assert out.shape == (4, 128) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert torch.isfinite(net.eval()(torch.zeros(2, 1, 32, 32))).all()  # a flat patch: FRN's eps, the L2's 1e-10
    rebuilt = network_from_spec(network_spec(net))
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt.eval()(_patches(2)), net(_patches(2)))
