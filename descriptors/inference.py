"""Inference copies of trained patch networks: the same function, computed faster.

Two changes that leave the outputs equal up to float rounding (about 1e-7 on unit-norm
descriptors):

- :func:`fold_batchnorm`: every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d``
  in an ``nn.Sequential`` is folded into the convolution's weights and bias (the L2-Net
  family and HardNet: seven BN passes less per patch);
- channels-last memory format on the CPU, where oneDNN's convolutions otherwise reorder
  every layer's input and output (1.3-2.2x for every network of this package on the 2-core
  development machine; :mod:`benchmarks.descriptors` measures it against kornia).

The trained network itself is never modified: checkpoints, ``state_dict`` and the kornia
weight exchange keep the original layout.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "inference_copy", "use_channels_last"]


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with each ``Conv2d -> BatchNorm2d`` pair of an
    ``nn.Sequential`` replaced by one convolution (BN statistics folded in) and an
    ``nn.Identity`` in the BN's place, so module indices stay valid. BN layers without
    running statistics, or not right after a convolution, are kept as they are."""
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None:
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return folded


def use_channels_last(device: torch.device | str) -> bool:
    """Whether inference on ``device`` runs in channels-last format by default: on the CPU
    (measured faster for every network here); elsewhere the input layout is kept."""
    return torch.device(device).type == "cpu"


def inference_copy(net: nn.Module, device: torch.device | str = "cpu", channels_last: bool | None = None) -> nn.Module:
    """:func:`fold_batchnorm` of ``net`` on ``device``, in channels-last format when
    ``channels_last`` (None: :func:`use_channels_last`). Feed it channels-last input too
    (``x.contiguous(memory_format=torch.channels_last)``)."""
    runner = fold_batchnorm(net).to(device)
    if use_channels_last(device) if channels_last is None else channels_last:
        runner = runner.to(memory_format=torch.channels_last)
    return runner.requires_grad_(False)
