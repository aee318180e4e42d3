"""Published weights of patch descriptors, loaded offline from the files their authors released.

::

    from descriptors.nets.published import load_published
    tfeat = load_published("tfeat-liberty")            # $DEEPMATCH_DATA/weights/tfeat/tfeat-liberty.params
    mkd = load_published("mkd-concat-pcawt-liberty")   # kornia's MKDDescriptor, whitening from mkd/mkd-concat-64.pth
    hardnet = load_published("hardnet", path="checkpoint_liberty_with_aug.pth")  # a file the user has

Every name maps to a file under the weights root (``root``, else ``$DEEPMATCH_DATA/weights``, the
data README's ``weights/``) or to ``path``, the official download URL and the git blob ids of the
official files (:data:`PUBLISHED`). The network is one of this package's where the published
architecture is ours (TFeat, HardNet, L2-Net, HyNet, and HardTFeat / SOSNet here: TFeat's trunk
and HardNet's with their own input and output normalisations); MKD is kornia's
(``kornia.feature.MKDDescriptor`` built without whitening, so nothing is downloaded, then given
the whitening of the local file), wrapped so that it takes the package's ``(B, 1, 64, 64)``
patches in [0, 1] and says its ``patch_size`` and ``descriptor_dim``.

A missing file raises :class:`core.errors.DatasetNotFoundError` (the path and the official URL);
a file that is not the expected network raises :class:`core.errors.CheckpointError` (the path
and what was expected). The returned module is in eval mode and carries ``published``: the name,
the file, its git blob id and whether that is one of the official files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, DatasetNotFoundError

from .common import DescriptorNetwork, l2_normalize, standardize_patches
from .hynet import HyNet
from .l2net import HardNet, L2Net
from .tfeat import TFeat

log = logging.getLogger(__name__)

__all__ = ["PUBLISHED", "HardTFeat", "KorniaDescriptor", "OfficialL2Net", "PublishedFile", "SOSNet", "git_blob_id",
           "load_published", "published_names", "weights_root"]

SUBSETS = {"liberty": "LIB", "notredame": "ND", "yosemite": "YOS"}


@dataclass(frozen=True)
class PublishedFile:
    """Where a published network's file lies under the weights root, where to get it, which
    loader reads it, and the git blob ids (``git hash-object``) of the official file(s)."""

    relative: str
    url: str
    kind: str
    blobs: tuple[str, ...] = ()
    options: tuple = ()
    #: trained on HPatches, which holds graf (v_graffiti) and v_churchill: never a reference there
    hpatches_trained: bool = False


def _github(repo: str, path: str) -> str:
    return f"https://github.com/{repo}/raw/master/{path}"


def _registry() -> dict[str, PublishedFile]:
    table: dict[str, PublishedFile] = {}
    # staged in the data root (git blob ids of the staged files, byte-identical to the authors')
    tfeat_blobs = {"liberty": "0f28ae87db5e2fc95ae691faf3aa9c2c631060b2", "notredame": "47f6f3ec28047f9dbab748d1df9c25d09e49c2fc",
                   "yosemite": "4554f4d9208414a4c2c035eb9ff9002fd54ecf85"}
    for subset, blob in tfeat_blobs.items():
        table[f"tfeat-{subset}"] = PublishedFile(f"tfeat/tfeat-{subset}.params", _github("vbalnt/tfeat", f"pretrained-models/tfeat-{subset}.params"),
                                                 "tfeat", (blob,))
    table["hardtfeat"] = PublishedFile("hardtfeat/HardTFeat.pth", _github("ducha-aiki/affnet", "pretrained/HardTFeat.pth"), "hardtfeat",
                                       ("57acd11280b9ad937f5d9a85bf9159161e8e94d7",))
    mkd_blobs = {"concat": "c309ada231de03f5a203f139f4361358c62479e7", "polar": "f539bc5c3b643191fff18e5a2f5918c71e7ebb77",
                 "cart": "6f9f999b64c12609b983f3904739749cca67a5d9"}
    for kernel, blob in mkd_blobs.items():
        for whitening in ("pcawt", "pcaws", "pca", "lw"):
            for subset in SUBSETS:
                table[f"mkd-{kernel}-{whitening}-{subset}"] = PublishedFile(
                    f"mkd/mkd-{kernel}-64.pth", _github("manyids2/mkd_pytorch", f"mkd_pytorch/mkd-{kernel}-64.pth"), "mkd", (blob,),
                    (kernel, whitening, subset))
    # not staged: users who have them put them under the weights root or pass path=
    hardnet = {
        "hardnet": ("pretrained/train_liberty_with_aug/checkpoint_liberty_with_aug.pth", "c1b2a5f4e79a5f3e50ec9a1ac98a428965cef37b"),
        "hardnet-liberty-noaug": ("pretrained/train_liberty/checkpoint_liberty_no_aug.pth", "8694b2a670aec840800966e42cd8c79e3be66e9a"),
        "hardnet-notredame": ("pretrained/train_notredame_with_aug/checkpoint_notredame_with_aug.pth", "e3d10581066a9408db8c9a6b545e08318bdead2c"),
        "hardnet-yosemite": ("pretrained/train_yosemite_with_aug/checkpoint_yosemite_with_aug.pth", "ec9124d045fa7c05cefa76a7ae48a016754aae85"),
        "hardnet-6brown": ("pretrained/6Brown/hardnetBr6.pth", "26df901859b3bbfc0cafaca504f09e771ac7b427"),
        # trained on HPatches too (graf as v_graffiti, v_churchill): never a reference on those
        "hardnet++": ("pretrained/pretrained_all_datasets/HardNet++.pth", "84aa9c230b7cd6d0a8a7d13b65b39cfb0f406eec"),
    }
    for name, (path, blob) in hardnet.items():
        table[name] = PublishedFile(f"hardnet/{Path(path).name}", _github("DagnyT/hardnet", path), "hardnet", (blob,), hpatches_trained=name == "hardnet++")
    sosnet = {"liberty": "e1654f36def583bb942cccbe149b0162d57d3d2a", "notredame": "386016b63ca2f18a77370b9a5254b0784428323c",
              "yosemite": "3b16e9f3afba50bb8138586bf829255f58fb0465", "hpatches_a": "9154f47b3ead6f6eadd21bec48bd9b61e256e704"}
    for subset, blob in sosnet.items():
        file = f"sosnet_32x32_{subset}.pth"
        table[f"sosnet-{subset.replace('_', '-')}"] = PublishedFile(f"sosnet/{file}", _github("yuruntian/SOSNet", f"sosnet-weights/{file}"), "sosnet", (blob,),
                                                  hpatches_trained=subset.startswith("hpatches"))
    hynet = {"liberty": "30e43b29b92162617e7b34f0c7cc6c454798943d", "notredame": "0592b59d1c560c0fb0c4f702950478dd91fc2408",
             "yosemite": "060fb65541317560504c816e353fe6ea249c80bc"}
    for subset, blob in hynet.items():
        file = f"HyNet_{SUBSETS[subset]}.pth"
        table[f"hynet-{subset}"] = PublishedFile(f"hynet/{file}", _github("yuruntian/HyNet", f"weights/{file}"), "hynet", (blob,))
    l2net = {"LIB": ("421df758db7535924f297f22961594b0e9625cc4", "fb13559c8c954266c790fe68bb3c9871233d243b"),
             "ND": ("7633fec5ddd0f3b8f0a6d8e216041a46ed0c0d36", "886d3c8016b50185042a6458b661f7631146c1b6"),
             "YOS": ("1e2159e0ebde0fa818513d7c250ade3a5d2d8973", "e1ec8f24b3a90fb9471fe22c9d3bc5ce08732d08"),
             "HP": ("9c30488488f8ef67c0cb16265e15e63dac959343", "e50abaec78d543164ab549973ae1f17437e703a1")}
    long_names = {**{code: subset for subset, code in SUBSETS.items()}, "HP": "hpatches"}
    for code, (plain, plus) in l2net.items():
        for suffix, blob in (("", plain), ("+", plus)):
            file = f"L2Net-{code}{suffix}.mat"
            name = f"l2net-{long_names[code]}{'-plus' if suffix else ''}"
            table[name] = PublishedFile(f"l2net/{file}", _github("yuruntian/L2-Net", f"matlab/{file}"), "l2net", (blob,), hpatches_trained=code == "HP")
    # the short names: the Liberty-trained files (kornia's defaults)
    for short in ("sosnet", "hynet", "l2net"):
        table[short] = table[f"{short}-liberty"]
    return table


#: every loadable name -> its file
PUBLISHED: dict[str, PublishedFile] = _registry()


def published_names() -> list[str]:
    return sorted(PUBLISHED)


def weights_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$DEEPMATCH_DATA/weights`` (``./data/weights`` without the variable)."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("DEEPMATCH_DATA") or "data") / "weights"


def git_blob_id(path: str | os.PathLike) -> str:
    """``git hash-object``: SHA-1 of ``blob <size>\\0`` + the bytes (the reference notes list the
    official files' ids)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# -- networks of published files that are not already in this package --------------------
class HardTFeat(DescriptorNetwork):
    """HardTFeat (AffNet authors' ``HardTFeatNet``): TFeat's trunk trained with the HardNet loss.
    Per-patch standardisation (unbiased std + 1e-7) -> C(32,7)-Tanh-MaxPool(2)-C(64,6)-Tanh ->
    Dropout(0.1)-C(128,8)-Tanh -> L2 (eps 1e-8). State-dict keys ``features.0/3``,
    ``classifier.1`` (the file's unused ``SIFT.*`` module is dropped).

    Shape:
        (B, 1, 32, 32) -> (B, 128), unit L2 norm
    """

    patch_size = 32
    descriptor_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, kernel_size=7), nn.Tanh(), nn.MaxPool2d(kernel_size=2, stride=2),
                                      nn.Conv2d(32, 64, kernel_size=6), nn.Tanh())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Conv2d(64, 128, kernel_size=8), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return l2_normalize(self.classifier(self.features(standardize_patches(x, 1e-7))).flatten(1), eps=1e-8)


class SOSNet(HardNet):
    """SOSNet (``yuruntian/SOSNet``, ``kornia.feature.SOSNet``): HardNet's bias-free trunk with an
    ``InstanceNorm2d`` input (biased variance, eps 1e-5) instead of ``input_norm``, dropout 0.1
    and L2 normalisation (the LRN of the original). The official state dict's ``layers.<i+1>``
    is this net's ``features.<i>`` (:func:`load_published` renames).

    Shape:
        (B, 1, 32, 32) -> (B, 128), unit L2 norm
    """

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__(dropout=dropout)
        self.input_norm = nn.InstanceNorm2d(1, affine=False)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.check_patches(x)
        return self.describe_normalized(self.input_norm(x), return_features)


class OfficialL2Net(L2Net):
    """L2-Net as ``cal_L2Net_des.m`` runs the official MatConvNet files: the training set's mean
    patch ``pixMean`` subtracted (on the 0..255 scale, here /255), then per-patch
    standardisation (eps 1e-12) and the L2-Net trunk (conv biases, BN without affine).

    Shape:
        (B, 1, 32, 32) -> (B, 128), unit L2 norm
    """

    def __init__(self, bn_eps: float = 1e-4) -> None:
        super().__init__(bias=True, bn_eps=bn_eps, dropout=0.0, input_eps=1e-12)
        self.register_buffer("pixel_mean", torch.zeros(1, 1, 32, 32))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.check_patches(x)
        return super().forward(x - self.pixel_mean, return_features)


class KorniaDescriptor(DescriptorNetwork):
    """A ``kornia.feature`` descriptor (MKD) as a network of this package: it says its
    ``patch_size`` and ``descriptor_dim`` and takes ``(B, 1, patch_size, patch_size)`` in [0, 1]."""

    def __init__(self, kornia_net: nn.Module, patch_size: int, descriptor_dim: int) -> None:
        super().__init__()
        self.kornia_net = kornia_net
        self.patch_size = int(patch_size)
        self.descriptor_dim = int(descriptor_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_patches(x)
        return self.kornia_net(x)


# -- file reading ---------------------------------------------------------------------------
def _torch_file(path: Path, name: str, expected: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(f"not a readable PyTorch weights file for {name!r}", path,
                              f"expected {expected} ({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None


def _state_dict_of(obj, path: Path, name: str, expected: str) -> dict:
    """The tensors of a plain state dict or of ``{'state_dict': ...}`` (HardNet, HardTFeat)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"not a state dict of {name!r}", path, f"expected {expected}")
    return dict(obj)


def _file_state_dict(path: Path, name: str, expected: str) -> dict:
    return _state_dict_of(_torch_file(path, name, expected), path, name, expected)


def _load_exactly(net: nn.Module, state: dict, path: Path, name: str, expected: str) -> None:
    """``load_state_dict(strict=True)`` with the keys and shapes checked first, so a file of
    another network fails with one line naming what differs."""
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    # old PyTorch files have no BatchNorm counters: BatchNorm fills them in
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = sorted(set(state) - set(want))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(want[k].shape)})" for k in want
              if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or shapes:
        found = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}" if missing else "",
            f"unexpected {', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''}" if unexpected else "",
            f"wrong shapes {', '.join(shapes[:3])}" if shapes else "") if part)
        raise CheckpointError(f"not the {expected} of {name!r}", path, f"{details} (the file holds {len(state)} tensors: {found})")
    net.load_state_dict(state, strict=False)


def _tfeat(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    expected = "a TFeat state dict (features.1, features.4, descr.0: kornia.feature.TFeat's keys)"
    net = TFeat()
    _load_exactly(net, _file_state_dict(path, name, expected), path, name, expected)
    return net


def _hardtfeat(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    expected = "a HardTFeat checkpoint ({'state_dict': features.0/3, classifier.1[, SIFT.*]})"
    state = _file_state_dict(path, name, expected)
    net = HardTFeat()
    _load_exactly(net, {k: v for k, v in state.items() if not k.startswith("SIFT.")}, path, name, expected)
    return net


def _hardnet(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    expected = "a HardNet checkpoint ({'state_dict': features.0 ... features.20}: kornia.feature.HardNet's keys)"
    net = HardNet()
    _load_exactly(net, _file_state_dict(path, name, expected), path, name, expected)
    return net


def _sosnet(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    expected = "a SOSNet state dict (layers.1 ... layers.21: kornia.feature.SOSNet's keys)"
    state = _file_state_dict(path, name, expected)
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        index, _, tail = rest.partition(".")
        renamed[f"features.{int(index) - 1}.{tail}" if head == "layers" and index.isdigit() and int(index) > 0 else key] = value
    net = SOSNet()
    _load_exactly(net, renamed, path, name, expected)
    return net


def _hynet(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    expected = "a HyNet state dict (layer1 ... layer7: kornia.feature.HyNet's keys)"
    net = HyNet()
    _load_exactly(net, _file_state_dict(path, name, expected), path, name, expected)
    return net


def _mkd(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    import kornia.feature as KF
    from kornia.feature.mkd import Whitening

    kernel, whitening, subset = spec.options
    expected = "an MKD whitening file ({training set: {'pca' | 'lw': {'mean', 'eigvecs', 'eigvals'}}}, kornia's mkd-<kernel>-64.pth)"
    models = _torch_file(path, name, expected)
    algo = "lw" if whitening == "lw" else "pca"
    model = models.get(subset) if isinstance(models, dict) else None
    entry = model.get(algo) if isinstance(model, dict) else None
    if not isinstance(entry, dict) or not {"mean", "eigvecs", "eigvals"} <= set(entry):
        raise CheckpointError(f"not an MKD whitening file with {subset}/{algo}", path, f"expected {expected}")
    # whitening=None: kornia builds the embedding without downloading; the whitening layer is
    # then made from the local file exactly as its constructor would from the downloaded one
    mkd = KF.MKDDescriptor(patch_size=64, kernel_type=kernel, whitening=None, training_set=subset, output_dims=128)
    if entry["mean"].shape[0] != mkd.odims:
        raise CheckpointError(f"not the MKD {kernel} whitening model", path,
                              f"its mean has {entry['mean'].shape[0]} dimensions, the {kernel} embedding {mkd.odims}")
    mkd.whitening = whitening
    mkd.whitening_layer = Whitening(whitening, model, in_dims=mkd.odims, output_dims=mkd.output_dims)
    mkd.odims = mkd.output_dims
    return KorniaDescriptor(mkd, 64, mkd.output_dims)


def _mat_layers(path: Path, name: str, variable: str, expected: str) -> tuple[list, object]:
    import scipy.io

    try:
        data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise CheckpointError(f"a MATLAB v7.3 (HDF5) file for {name!r}", path, f"expected {expected} saved as MATLAB v5 (scipy.io.loadmat)") from None
    except (ValueError, TypeError, OSError) as error:
        raise CheckpointError(f"not a MATLAB file for {name!r}", path, f"expected {expected} ({type(error).__name__})") from None
    net = data.get(variable)
    layers = getattr(net, "layers", None)
    if layers is None or "pixMean" not in data:
        raise CheckpointError(f"not an L2-Net MatConvNet file for {name!r}", path, f"expected {expected}")
    return list(layers), data["pixMean"]


def _l2net(path: Path, name: str, spec: PublishedFile) -> nn.Module:
    """MatConvNet ``simplenn`` (``net.layers``: conv / bnormPair / relu [/ normalize]) onto
    :class:`OfficialL2Net`. Conv weights are H x W x Cin x Cout (cross-correlation, like
    PyTorch's); a bnormPair's moments are (mean, sigma) with sigma = sqrt(var + eps) of training,
    so the running variance is sigma^2 - eps; its multipliers/biases are not used by L2-Net
    (BN without affine, as the Keras port reads them)."""
    expected = "an L2-Net MatConvNet file (net.layers: 7 conv + 7 bnormPair layers, pixMean 32x32)"
    layers, pixel_mean = _mat_layers(path, name, "net", expected)
    net = OfficialL2Net()
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, nn.BatchNorm2d)]
    mat_convs = [layer for layer in layers if getattr(layer, "type", None) == "conv"]
    mat_norms = [layer for layer in layers if getattr(layer, "type", None) in ("bnormPair", "bnorm")]
    if len(mat_convs) != len(convs) or len(mat_norms) != len(norms) or pixel_mean.shape[-2:] != (32, 32):
        raise CheckpointError(f"not the L2-Net of {name!r}", path,
                              f"expected {expected}; found {len(mat_convs)} conv, {len(mat_norms)} batch-norm layers, pixMean {pixel_mean.shape}")
    for conv, layer in zip(convs, mat_convs):
        weight, bias = layer.weights[0], layer.weights[1]
        want = (conv.kernel_size[0], conv.kernel_size[1], conv.in_channels, conv.out_channels)
        if weight.size != int(torch.tensor(want).prod()):
            raise CheckpointError(f"not the L2-Net of {name!r}", path, f"a conv layer of shape {weight.shape}, expected {want}")
        weight = torch.as_tensor(weight.reshape(want, order="F") if weight.ndim != 4 else weight, dtype=torch.float32)
        conv.weight.data.copy_(weight.permute(3, 2, 0, 1))
        conv.bias.data.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(-1))
    for norm, layer in zip(norms, mat_norms):
        moments = torch.as_tensor(layer.weights[2], dtype=torch.float32).reshape(-1, 2)
        if moments.shape[0] != norm.num_features:
            raise CheckpointError(f"not the L2-Net of {name!r}", path, f"batch-norm moments {tuple(moments.shape)}, expected ({norm.num_features}, 2)")
        norm.running_mean.copy_(moments[:, 0])
        norm.running_var.copy_((moments[:, 1] ** 2 - norm.eps).clamp_min(0.0))
    net.pixel_mean.copy_(torch.as_tensor(pixel_mean, dtype=torch.float32).reshape(1, 1, 32, 32) / 255.0)
    return net


_LOADERS = {"tfeat": _tfeat, "hardtfeat": _hardtfeat, "mkd": _mkd, "hardnet": _hardnet, "sosnet": _sosnet, "hynet": _hynet, "l2net": _l2net}


def load_published(name: str, root: str | os.PathLike | None = None, path: str | os.PathLike | None = None) -> nn.Module:
    """The published network ``name`` (:func:`published_names`: ``tfeat-liberty``, ``hardtfeat``,
    ``mkd-concat-pcawt-liberty``, ``hardnet``, ``sosnet``, ``hynet``, ``l2net``, ...), in eval mode
    on the CPU, read from ``path`` or from its place under :func:`weights_root` (``root``)."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown published network {name!r}; choose one of {published_names()}")
    spec = PUBLISHED[name]
    file = Path(path) if path is not None else weights_root(root) / spec.relative
    if not file.is_file():
        raise DatasetNotFoundError(f"published weights {name!r} not found", file, f"download {spec.url} to this path (or pass path=)")
    net = _LOADERS[spec.kind](file, name, spec)
    blob = git_blob_id(file)
    if blob not in spec.blobs:
        log.info("%s: %s is not the official file (git blob %s); loaded as it is", name, file, blob)
    net.published = {"name": name, "path": str(file), "git_blob": blob, "official": blob in spec.blobs}
    return net.eval()
