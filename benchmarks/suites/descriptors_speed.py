"""Extraction speed of the descriptors suite: patches per second, and kornia's same network
(with our weights) as the peer measured in the same loop."""

from __future__ import annotations

import copy
import statistics
import time

import torch

KORNIA_PEERS = {"hardnet": "HardNet", "hardnet_plus": "HardNet", "tfeat": "TFeat"}


def _throughput(fns, patches: torch.Tensor, batch_size: int, repeats: int) -> list[float]:
    """Median patches per second of each function over batches of ``patches`` (one warm-up
    pass each); the functions take turns in every repeat, so a change of machine load hits
    them alike."""
    rates: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            fn(patches[:batch_size])
        for _ in range(repeats):
            for fn, fn_rates in zip(fns, rates):
                start = time.perf_counter()
                for i in range(0, len(patches), batch_size):
                    fn(patches[i : i + batch_size])
                fn_rates.append(len(patches) / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def kornia_peer(name: str, net: torch.nn.Module) -> torch.nn.Module:
    """kornia.feature.<name> with ``net``'s weights (pretrained=False: nothing downloaded)."""
    import kornia.feature as KF

    peer = getattr(KF, name)(pretrained=False)
    peer.load_state_dict(net.state_dict())
    return peer.to(next(net.parameters()).device).eval()


#: kornia.feature.HardNet standardises each patch with eps 1e-6
KORNIA_INPUT_EPS = 1e-6


def with_kornia_input_eps(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose per-patch standardisation uses kornia's eps: the reference for
    checking that kornia's network is ours when ours was trained with a contrast floor
    (``input_eps``), which kornia's does not have (the computation is the same either way)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if hasattr(module, "input_eps"):
            module.input_eps = KORNIA_INPUT_EPS
    return net
