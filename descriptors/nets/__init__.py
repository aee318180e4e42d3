"""Patch matching networks, one module per group (see :mod:`descriptors.nets.common` for the
two kinds, the input contract and the shared pieces), and the registry by name."""

from __future__ import annotations

import importlib

from torch import nn

from .common import (
    BROWN_MEAN,
    BROWN_STD,
    DescriptorNetwork,
    L2Norm,
    MetricNetwork,
    PatchNetwork,
    SubtractiveNorm2d,
    center_crop,
    count_parameters,
    gaussian_kernel2d,
    hamming_from_signs,
    l2_normalize,
    msr_init,
    network_spec,
    sign_straight_through,
    standardize_patches,
    subtractive_normalization,
)
from .deepcompare import (
    CentralSurroundTower,
    DeepCompare2ch,
    DeepCompare2ch2Stream,
    DeepCompare2chDeep,
    DeepComparePseudoSiamese,
    DeepCompareSiamese,
    DeepCompareSiamese2Stream,
    deepcompare_normalize,
)
from .gloss import CSSNet, SNet
from .hynet import HyNet
from .l2net import BinaryL2Net, CSL2Net, HardNet, L2Net
from .matchnet import MatchNet, MatchNetTower
from .tfeat import DeepDesc, TFeat, TNet

__all__ = [
    "BROWN_MEAN", "BROWN_STD", "NETWORKS", "BinaryL2Net", "CSL2Net", "CSSNet", "CentralSurroundTower", "DeepCompare2ch",
    "DeepCompare2ch2Stream", "DeepCompare2chDeep", "DeepComparePseudoSiamese", "DeepCompareSiamese",
    "DeepCompareSiamese2Stream", "DeepDesc", "DescriptorNetwork", "HardNet", "HyNet", "L2Net", "L2Norm", "MatchNet",
    "MatchNetTower", "MetricNetwork", "PatchNetwork", "SNet", "SubtractiveNorm2d", "TFeat", "TNet", "build_network",
    "center_crop", "count_parameters", "deepcompare_normalize", "gaussian_kernel2d", "hamming_from_signs",
    "l2_normalize", "msr_init", "network_from_spec", "network_spec", "sign_straight_through", "standardize_patches",
    "subtractive_normalization",
]

NETWORKS: dict[str, type[nn.Module]] = {
    "matchnet": MatchNet,
    "deepcompare_2ch": DeepCompare2ch,
    "deepcompare_2chdeep": DeepCompare2chDeep,
    "deepcompare_2ch2stream": DeepCompare2ch2Stream,
    "deepcompare_siam": DeepCompareSiamese,
    "deepcompare_pseudosiam": DeepComparePseudoSiamese,
    "deepcompare_siam2stream": DeepCompareSiamese2Stream,
    "snet": SNet,
    "cs_snet": CSSNet,
    "tnet": TNet,
    "deepdesc": DeepDesc,
    "tfeat": TFeat,
    "l2net": L2Net,
    "cs_l2net": CSL2Net,
    "binary_l2net": BinaryL2Net,
    "hardnet": HardNet,
}



def network_from_spec(spec: dict) -> nn.Module:
    """Rebuild a network from :func:`network_spec` (only classes of this package's modules)."""
    module_name, _, class_name = spec["class"].rpartition(".")
    if module_name == "descriptors.networks":  # checkpoints written before the nets/ package
        module_name = "descriptors.nets"
    if not module_name.startswith("descriptors.") and module_name != "kornia.feature":
        raise ValueError(f"refusing to build {spec['class']!r}: not a descriptors network")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**spec.get("kwargs", {}))


def build_network(name: str, **kwargs) -> nn.Module:
    """Instantiate a network of :data:`NETWORKS` by name (configs use the class ``_target_``)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)
