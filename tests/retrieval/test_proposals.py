"""RPN region proposals (torchvision Faster R-CNN): shapes, frame, offline error."""

from __future__ import annotations

import pytest
import torch

from retrieval.nets.attention import RegionalAttentionNet
from retrieval.nets.backbones import WeightsNotFoundError
from retrieval.proposals import RegionProposals, sliding_window_boxes


@pytest.fixture(scope="module")
def proposals():
    torch.manual_seed(0)
    return RegionProposals(max_boxes=16, pretrained=False, min_size=128, max_size=192)


def test_boxes_are_in_the_input_frame_and_capped(proposals):
    images = torch.rand(2, 3, 96, 160)
    boxes = proposals(images)
    assert len(boxes) == 2
    for b in boxes:
        assert b.shape[1] == 4 and 0 < len(b) <= 16
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 96).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()


def test_proposals_feed_the_attention_net(proposals):
    images = torch.rand(1, 3, 64, 96)
    boxes = proposals(images)
    net = RegionalAttentionNet("efficientnet_lite0", context=True, pretrained=False).eval()
    with torch.no_grad():
        vector = net(images, boxes=[b.float() for b in boxes])
    assert vector.shape == (1, 1280)
    torch.testing.assert_close(vector.norm(dim=1), torch.ones(1))


def test_bad_input_and_arguments(proposals):
    with pytest.raises(ValueError, match="expected images"):
        proposals(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="max_boxes"):
        RegionProposals(max_boxes=0, pretrained=False)


def test_offline_pretrained_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsNotFoundError) as error:
        RegionProposals(pretrained=True)
    message = str(error.value)
    assert "FasterRCNN_ResNet50_FPN_Weights.COCO_V1" in message and str(tmp_path) in message


def test_sliding_window_boxes_cover_the_map_at_several_scales():
    boxes = sliding_window_boxes(6, 8, scales=(1.0, 0.5), aspects=(1.0, 2.0), overlap=0.5, max_boxes=100)
    assert boxes[0].tolist() == [0, 0, 8, 6]  # the whole map first
    assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)  # no duplicates
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 8).all() and (boxes[:, 3] <= 6).all()
    assert ((boxes[:, 2] - boxes[:, 0]) > 0).all() and ((boxes[:, 3] - boxes[:, 1]) > 0).all()
    sides = {(int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in boxes.tolist()}
    assert {(6, 6), (3, 3), (8, 4), (4, 2)} <= sides  # square and 2:1 windows at both scales
    assert len(sliding_window_boxes(6, 8, max_boxes=5)) == 5
    assert sliding_window_boxes(1, 1).tolist() == [[0, 0, 1, 1]]
