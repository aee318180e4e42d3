"""The search-path matcher of Krishna et al. ("Learning Search Path for Region-Level
Image Matching", NTT): a siamese CNN compares the query with the current window of
the reference, and an LSTM moves the window. Plain PyTorch, no Lightning, no Hydra.

Coordinates: windows are boxes ``(x1, y1, x2, y2)`` in reference pixels (see
:mod:`regionsearch.evaluate`). Policy actions live in ``[-1, 1]``: the window centre
``(ax, ay)`` maps to ``((ax + 1) / 2 * W, (ay + 1) / 2 * H)``; optional size actions
map log-linearly between ``min_size`` and ``max_size`` (fractions of the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regionsearch.nets.blocks import (
    PretrainedEncoder,
    SiameseEncoder,
    SimilarityMap,
    crop_windows,
)
from regionsearch.nets.second_look import local_maxima, resized, second_look_candidates

SIZE_MODES = ("schedule", "isotropic", "anisotropic")
INPUT_NORMS = ("none", "batch", "layer")
FIRST_MOVES = ("gaussian", "map")
ENCODERS = ("conv", "efficientnet_lite0")
FIRST_VIEWS = ("glimpse", "reference")


class SearchPathPolicy(nn.Module):
    """LSTM localisation module with a Gaussian policy and a learned baseline.

    Input per step: ``[query feature, window feature, window location (cx, cy, w, h) in [-1,1]]``,
    plus, with ``compare=True``, the comparison of the two features (their elementwise
    product and distance: the poster's "compare" step, which an LSTM otherwise has to
    learn to compute from the raw features), plus ``context_views`` extra features of the
    window's surroundings (the peripheral views of a RAM-style retina), when configured.

    Shape:
        query_feature, window_feature: (B, D); location: (B, 4); context: (B, context_views * D)
        -> mean (B, action_dim), baseline (B,)
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_size: int = 256,
        action_dim: int = 2,
        std: float = 0.1,
        compare: bool = False,
        context_views: int = 0,
        input_norm: str = "none",
        steps: int = 1,
    ) -> None:
        super().__init__()
        self.compare = compare
        self.context_views = context_views
        input_size = (3 * feature_dim + 5 if compare else 2 * feature_dim + 4) + context_views * feature_dim
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        # Unit-norm features share a large common component and differ little between samples
        # (~0.02 per dimension once the encoder is class-discriminative), so the LSTM barely
        # reacts to them and the policy drifts to one constant path. "batch" standardises each
        # input over the batch, with statistics kept per step (the whole-reference view and
        # the small windows differ); "layer" only rescales each sample.
        self.input_norm_kind = input_norm
        if input_norm == "batch":
            self.input_norm = nn.ModuleList(nn.BatchNorm1d(input_size) for _ in range(steps))
        elif input_norm == "layer":
            self.input_norm = nn.LayerNorm(input_size)
        else:
            self.input_norm = None
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.mean_head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(inplace=True), nn.Linear(hidden_size, action_dim))
        self.baseline_head = nn.Linear(hidden_size, 1)
        self.hidden_size = hidden_size
        self.action_dim = action_dim
        self.std = std

    def initial_state(self, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def forward(self, query_feature, window_feature, location, state, context=None, step: int = 0):
        inputs = [query_feature, window_feature, location]
        if self.compare:
            inputs += [query_feature * window_feature, (query_feature - window_feature).norm(dim=1, keepdim=True)]
        if self.context_views:
            if context is None or context.shape[1] != self.context_views * query_feature.shape[1]:
                raise ValueError(f"the policy expects {self.context_views} context features per step")
            inputs.append(context)
        inputs = torch.cat(inputs, dim=1)
        if self.input_norm_kind == "batch":
            inputs = self.input_norm[min(step, len(self.input_norm) - 1)](inputs)
        elif self.input_norm_kind == "layer":
            inputs = self.input_norm(inputs)
        hidden, cell = self.cell(inputs, state)
        mean = torch.tanh(self.mean_head(hidden))
        # The baseline only estimates the expected reward: it must not shape the LSTM state.
        baseline = self.baseline_head(hidden.detach()).squeeze(1)
        return mean, baseline, (hidden, cell)

    def sample(self, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw an action; the draw is detached so the log-probability's gradient reaches only the mean."""
        action = (mean + self.std * torch.randn_like(mean)).detach()
        log_prob = torch.distributions.Normal(mean, self.std).log_prob(action).sum(dim=1)
        return action.clamp(-1.0, 1.0), log_prob


@dataclass
class SearchOutput:
    """One rollout. ``windows[t]`` is window t (window 0 = whole reference, ``windows[-1]`` = the answer)."""

    windows: torch.Tensor  # (T+1, B, 4)
    log_probs: torch.Tensor  # (T, B)
    baselines: torch.Tensor  # (T, B)
    query_feature: torch.Tensor  # (B, D)
    window_features: torch.Tensor  # (T, B, D), features of windows 0..T-1 (what the policy saw)
    final_feature: torch.Tensor | None  # (B, D), feature of the answer window when asked for
    first_logits: torch.Tensor | None = None  # (B, M), categorical first move over M map cells ("map")
    first_centres: torch.Tensor | None = None  # (M, 2) or per sample (B, M, 2): reference-pixel (x, y) centre of each cell
    windows_evaluated: torch.Tensor | None = None  # (B,), map placements + glimpses (``first_view='reference'``)
    # (B, K, 3): the second look's best placement per candidate, (x, y, mean cosine); NaN rows pad
    look_candidates: torch.Tensor | None = None

    @property
    def boxes(self) -> torch.Tensor:
        return self.windows[-1]


class SearchPathMatcher(nn.Module):
    """Query + reference -> a short search path of windows; the last window is the answer.

    Args:
        in_channels: 1 for MNIST, 3 for logos.
        glimpse_size: every window (and the query) is resampled to this size.
        steps: number of moves T; the encoder sees T windows (0..T-1) and answers window T.
        size_mode: ``schedule`` (window sizes fixed per step: geometric zoom from the whole
            reference to ``window_size`` in ``zoom_steps`` moves), ``isotropic`` (the policy
            also picks one size) or ``anisotropic`` (width and height).
        window_size: final window size, a fraction of the reference side (``schedule`` mode).
        min_size, max_size: range of predicted sizes, fractions of the reference side.
        compare: also feed the policy the query/window feature comparison.
        first_glimpse_size: resolution of the first view (the whole reference) when it
            should differ from ``glimpse_size``: on a 100x100 canvas a 32x32 glimpse
            shrinks the digits to ~9 px, too few to tell a target from a distractor.
        context_scales: RAM-style retina: at every step the encoder also sees crops of
            ``scale`` times the window's size around its centre (each resampled to the
            glimpse size); their features go to the policy only (the compare and the
            contrastive loss keep using the window itself). Empty = no retina.
        policy_input_norm: ``none``, ``batch`` or ``layer`` normalisation of the policy's
            input (see :class:`SearchPathPolicy`).
        detach_policy_features: the policy gradient stops at the features: the encoder is
            trained by the feature losses only, the LSTM by REINFORCE only (RAM's split of
            the hybrid loss). Keeps the noisy policy gradient from steering the encoder.
        first_move: ``gaussian`` (the paper: the LSTM's Gaussian policy makes every move) or
            ``map``: the first move is categorical over the cells of a :class:`SimilarityMap`
            of the query against the first view's feature map (layer ``map_layer`` of the
            encoder), so the policy can pick WHICH digit before it zooms in (among same-sized
            digits of other classes a Gaussian around one location never samples a jump);
            the LSTM makes the later moves. Give the first view its own resolution
            (``first_glimpse_size``) at the glimpse scale, e.g. 112 for 100 px references
            seen by 32 px glimpses of 28 px windows.
        map_layer: encoder layer (1..5) whose feature map is correlated (``map``).
        map_hidden: width of the map's own 3x3 Conv-ReLU before its projection (0 = a 1x1 projection only).
        relative_moves: the LSTM's centre action moves the current window by up to half its
            side instead of naming an absolute position (the first move from the whole
            reference is the same either way): the zero action keeps the window, so the
            later moves refine the digit a first move chose rather than wander off it.

    Shape:
        query: (B, C, h, w), reference: (B, C, H, W) -> SearchOutput with windows (T+1, B, 4)
    """

    def __init__(
        self,
        in_channels: int = 1,
        glimpse_size: int = 32,
        steps: int = 6,
        channels: tuple[int, ...] = (32, 64, 64, 128, 128),
        strides: tuple[int, ...] = (2, 2, 2, 2, 2),
        hidden_size: int = 256,
        std: float = 0.1,
        size_mode: str = "schedule",
        window_size: float = 0.28,
        zoom_steps: int = 2,
        min_size: float = 0.1,
        max_size: float = 0.9,
        compare: bool = False,
        first_glimpse_size: int | None = None,
        context_scales: tuple[float, ...] = (),
        detach_policy_features: bool = False,
        policy_input_norm: str = "none",
        first_move: str = "gaussian",
        map_layer: int = 4,
        relative_moves: bool = False,
        map_hidden: int = 0,
        encoder: str = "conv",
        freeze_encoder: bool = False,
        encoder_block: int = 4,
        pretrained: bool = True,
        first_view: str = "glimpse",
        size_step: float = 1.5,
        second_look_view: int | None = None,
        second_look_candidates: int = 2,
        second_look_radius: int = 2,
    ) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if first_view not in FIRST_VIEWS:
            raise ValueError(f"first_view must be one of {FIRST_VIEWS}, got {first_view!r}")
        if first_view == "reference" and (first_move != "map" or size_mode != "anisotropic" or not first_glimpse_size):
            raise ValueError("first_view='reference' needs first_move='map', size_mode='anisotropic' and first_glimpse_size (the view's long side)")
        if first_view == "reference" and encoder != "efficientnet_lite0":
            raise ValueError("first_view='reference' reads its glimpses off the pretrained encoder's map: use encoder='efficientnet_lite0'")
        if second_look_view and first_view != "reference":
            raise ValueError("second_look_view refines the first look over the whole reference: it needs first_view='reference'")
        if second_look_candidates < 1 or second_look_radius < 0:
            raise ValueError(f"second_look_candidates must be >= 1 and second_look_radius >= 0, got {second_look_candidates}, {second_look_radius}")
        if encoder == "efficientnet_lite0" and in_channels != 3:
            raise ValueError("the EfficientNet-Lite0 encoder takes colour input: in_channels must be 3")
        if first_move not in FIRST_MOVES:
            raise ValueError(f"first_move must be one of {FIRST_MOVES}, got {first_move!r}")
        if not 1 <= map_layer <= 5:
            raise ValueError(f"map_layer must be in 1..5, got {map_layer}")
        context_scales = tuple(float(scale) for scale in context_scales)
        if first_move == "map" and context_scales:
            raise ValueError("first_move='map' does not support context_scales")
        if any(scale <= 0 for scale in context_scales):
            raise ValueError(f"context_scales must be positive, got {context_scales}")
        if size_mode not in SIZE_MODES:
            raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {size_mode!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if encoder == "efficientnet_lite0":
            self.encoder = PretrainedEncoder(glimpse_size, encoder_block, tuple(channels)[-1], freeze_encoder, pretrained)
        else:
            self.encoder = SiameseEncoder(in_channels, channels, strides)
        self.encoder_kind = encoder
        self.freeze_encoder = freeze_encoder
        self.encoder_block = encoder_block
        self.first_view = first_view
        self.size_step = size_step
        # test-time coarse to fine (regionsearch.nets.second_look): None = one look
        self.second_look_view = second_look_view
        self.second_look_candidates = second_look_candidates
        self.second_look_radius = second_look_radius
        action_dim = {"schedule": 2, "isotropic": 3, "anisotropic": 4}[size_mode]
        self.policy = SearchPathPolicy(self.encoder.out_dim, hidden_size, action_dim, std, compare, len(context_scales), policy_input_norm, steps)
        self.glimpse_size = glimpse_size
        self.first_glimpse_size = first_glimpse_size
        self.context_scales = context_scales
        self.detach_policy_features = detach_policy_features
        self.first_move = first_move
        self.map_layer = map_layer
        self.relative_moves = relative_moves
        self.map_hidden = map_hidden
        map_channels = self.encoder.map_channels if encoder == "efficientnet_lite0" else tuple(channels)[map_layer - 1]
        self.similarity_map = SimilarityMap(map_channels, map_hidden) if first_move == "map" else None
        if first_view == "reference":
            # start from plain feature correlation (identity projection) and refinements that keep
            # the window (zero mean): training then only has to improve on both
            if map_hidden == 0:
                nn.init.eye_(self.similarity_map.projection.weight.view(map_channels, map_channels))
                nn.init.zeros_(self.similarity_map.projection.bias)
            nn.init.zeros_(self.policy.mean_head[-1].weight)
            nn.init.zeros_(self.policy.mean_head[-1].bias)
        self.steps = steps
        self.size_mode = size_mode
        self.window_size = window_size
        self.zoom_steps = max(1, zoom_steps)
        self.min_size = min_size
        self.max_size = max_size

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def scheduled_size(self, step: int) -> float:
        """Window side at move ``step`` (1-based) as a fraction of the reference, in schedule mode."""
        return self.window_size ** min(step / self.zoom_steps, 1.0)

    def actions_to_windows(self, actions: torch.Tensor, step: int, height: int, width: int, current: torch.Tensor | None = None) -> torch.Tensor:
        """Windows (B, 4) from actions; with ``current`` windows (relative moves) the centre
        action moves the current centre by up to half the current window's side (and stays
        inside the reference), else it is an absolute position."""
        if current is None:
            cx = (actions[:, 0] + 1) / 2 * width
            cy = (actions[:, 1] + 1) / 2 * height
        else:
            cx = ((current[:, 0] + current[:, 2]) / 2 + actions[:, 0] * (current[:, 2] - current[:, 0]) / 2).clamp(0, width)
            cy = ((current[:, 1] + current[:, 3]) / 2 + actions[:, 1] * (current[:, 3] - current[:, 1]) / 2).clamp(0, height)
        if self.size_mode == "schedule":
            fraction = self.scheduled_size(step)
            w = torch.full_like(cx, fraction * width)
            h = torch.full_like(cy, fraction * height)
        else:
            log_lo, log_hi = math.log(self.min_size), math.log(self.max_size)
            size_actions = actions[:, 2:] if self.size_mode == "anisotropic" else actions[:, 2:3].expand(-1, 2)
            fraction = torch.exp(log_lo + (size_actions + 1) / 2 * (log_hi - log_lo))
            w, h = fraction[:, 0] * width, fraction[:, 1] * height
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)

    @staticmethod
    def normalized_location(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
        scale = windows.new_tensor([width, height, width, height])
        x1, y1, x2, y2 = (windows / scale).unbind(1)
        return torch.stack([x1 + x2 - 1, y1 + y2 - 1, 2 * (x2 - x1) - 1, 2 * (y2 - y1) - 1], dim=1)

    def encode(
        self, images: torch.Tensor, boxes: torch.Tensor | None = None, batch_index: torch.Tensor | None = None, size: int | None = None
    ) -> torch.Tensor:
        """Features of whole images (query: ``boxes=None``) or of windows of them.

        The query goes through the same resampling as the windows (its whole-image box),
        so identical content gives identical siamese features. ``size`` overrides the
        glimpse size.
        """
        if boxes is None:
            height, width = images.shape[-2:]
            boxes = torch.tensor([0.0, 0.0, width, height], device=images.device).expand(images.shape[0], 4)
        return self.encoder(crop_windows(images, boxes, size or self.glimpse_size, batch_index))

    def encode_step(self, reference: torch.Tensor, window: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feature of the window seen at ``step`` (0 = the whole reference) and, with a retina,
        the concatenated features of its context views (one encoder pass for all of them)."""
        size = self.first_glimpse_size if step == 0 and self.first_glimpse_size else self.glimpse_size
        if not self.context_scales:
            return self.encode(reference, window, size=size), None
        batch = reference.shape[0]
        centre = (window[:, :2] + window[:, 2:]) / 2
        half = (window[:, 2:] - window[:, :2]) / 2
        boxes = [window] + [torch.cat([centre - scale * half, centre + scale * half], dim=1) for scale in self.context_scales]
        if size != self.glimpse_size:  # the first view at its own resolution, its context at the usual one
            feature = self.encode(reference, window, size=size)
            boxes = boxes[1:]
        index = torch.arange(batch, device=reference.device).repeat(len(boxes))
        features = self.encode(reference, torch.cat(boxes), batch_index=index).view(len(boxes), batch, -1)
        if size != self.glimpse_size:
            return feature, features.permute(1, 0, 2).flatten(1)
        return features[0], features[1:].permute(1, 0, 2).flatten(1)

    def forward(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        sample: bool = False,
        final_feature: bool = False,
        query_size: torch.Tensor | None = None,
        reference_size: torch.Tensor | None = None,
    ) -> SearchOutput:
        if query.dim() != 4 or reference.dim() != 4 or query.shape[:2] != reference.shape[:2]:
            raise ValueError(f"expected query (B,C,h,w) and reference (B,C,H,W), got {tuple(query.shape)}, {tuple(reference.shape)}")
        if self.first_view == "reference":
            return self.forward_at_reference_scale(query, reference, sample, final_feature, query_size, reference_size)
        batch, _, height, width = reference.shape
        window = reference.new_tensor([0.0, 0.0, width, height]).expand(batch, 4)
        first_logits = first_centres = None
        if self.first_move == "map":
            query_feature, window_feature, first_logits, first_centres = self.first_view_map(query, reference)
        else:
            query_feature = self.encode(query)
        state = self.policy.initial_state(batch, reference.device, reference.dtype)
        windows, log_probs, baselines, features = [window], [], [], []
        for step in range(1, self.steps + 1):
            if step == 1 and first_logits is not None:
                context = None  # the first view's feature came with its map
            else:
                window_feature, context = self.encode_step(reference, window, step - 1)
            features.append(window_feature)
            location = self.normalized_location(window, height, width)
            if self.detach_policy_features:
                policy_inputs = (query_feature.detach(), window_feature.detach(), None if context is None else context.detach())
            else:
                policy_inputs = (query_feature, window_feature, context)
            mean, baseline, state = self.policy(policy_inputs[0], policy_inputs[1], location, state, policy_inputs[2], step - 1)
            if step == 1 and first_logits is not None:
                action, log_prob = self.map_move(first_logits, first_centres, sample, height, width)
            elif sample:
                action, log_prob = self.policy.sample(mean)
            else:
                action, log_prob = mean, torch.zeros_like(baseline)
            relative = self.relative_moves and not (step == 1 and first_logits is not None)
            window = self.actions_to_windows(action, step, height, width, window if relative else None)
            windows.append(window)
            log_probs.append(log_prob)
            baselines.append(baseline)
        final = self.encode(reference, window) if final_feature else None
        return SearchOutput(
            torch.stack(windows), torch.stack(log_probs), torch.stack(baselines), query_feature, torch.stack(features), final, first_logits, first_centres
        )

    def first_view_map(self, query: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Query feature, first-view feature, the map logits over cells and the cells' centres.

        A cell is one placement of the query's layer-``map_layer`` map inside the first view's;
        its centre is where the query's centre then lies, in reference pixels.

        Shape:
            -> (B, D), (B, D), (B, M), (M, 2)
        """
        height, width = reference.shape[-2:]
        view_size = self.first_glimpse_size or self.glimpse_size
        whole = torch.tensor([0.0, 0.0, width, height], device=reference.device).expand(reference.shape[0], 4)
        query_whole = torch.tensor([0.0, 0.0, query.shape[-1], query.shape[-2]], device=query.device).expand(query.shape[0], 4)
        query_feature, query_map = self.encoder.forward_with_map(crop_windows(query, query_whole, self.glimpse_size), self.map_layer)
        view_feature, view_map = self.encoder.forward_with_map(crop_windows(reference, whole, view_size), self.map_layer)
        logits = self.similarity_map(view_map, query_map)
        rows, columns = view_map.shape[2] - query_map.shape[2] + 1, view_map.shape[3] - query_map.shape[3] + 1
        # a stride-s Conv (k3, pad 1) stack puts cell i at input index s*i, so a template whose
        # first cell sits on cell i has the query's centre (g/2 in a g px glimpse) at s*i + g/2
        stride = math.prod(conv.stride[0] for conv in self.encoder.features[: 2 * self.map_layer : 2])
        offsets = torch.arange(max(rows, columns), device=reference.device, dtype=torch.float32) * stride + self.glimpse_size / 2
        cy, cx = torch.meshgrid(offsets[:rows] * height / view_size, offsets[:columns] * width / view_size, indexing="ij")
        return query_feature, view_feature, logits, torch.stack([cx.flatten(), cy.flatten()], dim=1)

    @staticmethod
    def map_move(logits: torch.Tensor, centres: torch.Tensor, sample: bool, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The categorical first move: a cell drawn from (or, without sampling, the best of) the map;
        returns its centre as an action in [-1, 1] and its log-probability (zero without sampling)."""
        log_softmax = logits.log_softmax(dim=1)
        cell = torch.distributions.Categorical(logits=logits.detach()).sample() if sample else logits.argmax(dim=1)
        log_prob = log_softmax.gather(1, cell.unsqueeze(1)).squeeze(1) if sample else torch.zeros_like(logits[:, 0])
        centre = centres[cell]
        action = torch.stack([2 * centre[:, 0] / width - 1, 2 * centre[:, 1] / height - 1], dim=1)
        return action.clamp(-1.0, 1.0), log_prob

    # -- real photos: the first view at the reference's own scale and aspect ------------------
    def forward_at_reference_scale(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        sample: bool = False,
        final_feature: bool = False,
        query_size: torch.Tensor | None = None,
        reference_size: torch.Tensor | None = None,
    ) -> SearchOutput:
        """The search path for photos of any size and aspect (``first_view='reference'``).

        Images may be padded to a batch (bottom and right); ``query_size`` / ``reference_size``
        (B, 2) give each valid ``(height, width)`` (default: the whole tensor). The first move
        is the map: the reference scaled as a whole so that its tensor's long side is
        ``first_glimpse_size`` (aspect kept), the query scaled by the same factor (template
        matching's same-scale prior) and correlated with it at every placement. Window 1 is the
        best (or a sampled) placement with the query's size; each later move shifts the window
        by up to half its side and rescales its width and height by up to ``size_step``.
        Every glimpse (the whole reference, each window, the query) is read off the one feature
        map of the view and of the query (RoI pooling): two backbone passes per query in all.
        ``windows_evaluated`` counts the map's placements inside the reference plus the glimpses.
        """
        batch, _, canvas_h, canvas_w = reference.shape
        ref_hw = self._valid_sizes(reference_size, batch, canvas_h, canvas_w, reference)
        query_hw = self._valid_sizes(query_size, batch, query.shape[-2], query.shape[-1], reference)
        scale = self.first_glimpse_size / max(canvas_h, canvas_w)
        view = resized(reference, (max(1, round(canvas_h * scale)), max(1, round(canvas_w * scale))), scale)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            view_map = self.encoder.feature_map(view)
        stride = self.encoder.map_stride
        rows, columns = view_map.shape[-2:]
        projected_view = self.similarity_map.projection(view_map)
        logits, centres, query_features = [], [], []
        for index in range(batch):  # each query has its own size: one correlation per pair
            qh, qw = (int(v) for v in query_hw[index].tolist())
            size = (max(stride, round(qh * scale)), max(stride, round(qw * scale)))
            template = resized(query[index : index + 1, :, :qh, :qw], size, scale)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
                raw_template_map = self.encoder.feature_map(template)
            query_features.append(self.encoder.pool_windows(raw_template_map, template.new_tensor([[0.0, 0.0, size[1], size[0]]])))
            template_map = self.similarity_map.projection(raw_template_map)
            k, kw = template_map.shape[-2:]
            scores = F.conv2d(F.normalize(projected_view[index : index + 1], dim=1), F.normalize(template_map, dim=1), padding=(k // 2, kw // 2))
            logits.append(scores[0, 0, :rows, :columns].flatten() / (k * kw))
            # cell (i, j) places the template's first cell at (i - k // 2, j - kw // 2): its centre
            ys = ((torch.arange(rows, device=view.device) - k // 2) * stride + k * stride / 2) / scale
            xs = ((torch.arange(columns, device=view.device) - kw // 2) * stride + kw * stride / 2) / scale
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres.append(torch.stack([cx.flatten(), cy.flatten()], dim=1))
        centres = torch.stack(centres)  # (B, M, 2)
        inside = (centres[..., 0] < ref_hw[:, 1:2]) & (centres[..., 1] < ref_hw[:, 0:1]) & (centres >= 0).all(dim=2)
        first_logits = (self.similarity_map.log_scale.exp() * torch.stack(logits)).masked_fill(~inside, -1e4)

        whole = torch.cat([torch.zeros_like(ref_hw), ref_hw.flip(1)], dim=1)
        query_feature = torch.cat(query_features)
        looked, look_placements, look_candidates = None, torch.zeros(batch, device=reference.device), None
        if self.second_look_view:
            looked, look_placements, look_candidates = self._second_looks(query, reference, query_hw, ref_hw, first_logits.masked_fill(~inside, float("-inf")), centres, (rows, columns), scale)

        def glimpse(boxes: torch.Tensor) -> torch.Tensor:
            return self.encoder.pool_windows(view_map, boxes * scale)

        state = self.policy.initial_state(batch, reference.device, reference.dtype)
        window = whole
        windows, log_probs, baselines, features = [window], [], [], []
        for step in range(1, self.steps + 1):
            window_feature = glimpse(window)
            features.append(window_feature)
            location = self._relative_location(window, ref_hw)
            inputs = (query_feature.detach(), window_feature.detach()) if self.detach_policy_features else (query_feature, window_feature)
            mean, baseline, state = self.policy(inputs[0], inputs[1], location, state, None, step - 1)
            if step == 1:
                # the map's best placement, also in training: the map learns from its cross-entropy
                # (the module's map_weight), the moves from REINFORCE starting where the map points
                cell, log_prob = first_logits.argmax(dim=1), torch.zeros_like(baseline)
                centre = centres[torch.arange(batch, device=centres.device), cell] if looked is None else looked
                half = query_hw.flip(1) / 2
                window = torch.cat([centre - half, centre + half], dim=1)
            else:
                if sample:
                    action, log_prob = self.policy.sample(mean)
                else:
                    action, log_prob = mean, torch.zeros_like(baseline)
                window = self._refine(window, action, ref_hw)
            windows.append(window)
            log_probs.append(log_prob)
            baselines.append(baseline)
        final = glimpse(window) if final_feature else None
        evaluated = inside.sum(dim=1).float() + look_placements + self.steps + (1 if final_feature else 0)
        return SearchOutput(
            torch.stack(windows), torch.stack(log_probs), torch.stack(baselines), query_feature, torch.stack(features), final, first_logits, centres, evaluated,
            look_candidates,
        )  # fmt: skip

    @torch.no_grad()
    def _second_looks(self, query, reference, query_hw, ref_hw, logits, centres, grid, scale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per pair, the second look's centre around the first look's best local maxima (a
        test-time search: no gradient), the placements it scored and its best placement per
        candidate, ``(x, y, score)``, NaN-padded to ``second_look_candidates`` rows."""
        fine_scale = scale * self.second_look_view / self.first_glimpse_size
        looked, placements = [], []
        candidates = reference.new_full((reference.shape[0], self.second_look_candidates, 3), float("nan"))
        for index in range(reference.shape[0]):
            (qh, qw), (height, width) = (tuple(int(v) for v in hw[index].tolist()) for hw in (query_hw, ref_hw))
            cells = local_maxima(logits[index], *grid, self.second_look_candidates)
            found, scores, count = second_look_candidates(
                self.encoder, self.similarity_map.projection, reference[index : index + 1, :, :height, :width], query[index : index + 1, :, :qh, :qw],
                (height, width), fine_scale, centres[index, cells], self.second_look_radius,
            )  # fmt: skip
            looked.append(found[int(scores.argmax())])
            placements.append(float(count))
            candidates[index, : len(scores)] = torch.cat([found, scores[:, None]], dim=1)
        return torch.stack(looked), reference.new_tensor(placements), candidates

    @staticmethod
    def _valid_sizes(sizes: torch.Tensor | None, batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        if sizes is None:
            return like.new_tensor([float(height), float(width)]).expand(batch, 2)
        if sizes.shape != (batch, 2):
            raise ValueError(f"expected valid sizes (B, 2) = (height, width), got {tuple(sizes.shape)}")
        return sizes.to(device=like.device, dtype=like.dtype)

    @staticmethod
    def _relative_location(windows: torch.Tensor, ref_hw: torch.Tensor) -> torch.Tensor:
        scale = ref_hw.flip(1).repeat(1, 2)  # (w, h, w, h)
        x1, y1, x2, y2 = (windows / scale).unbind(1)
        return torch.stack([x1 + x2 - 1, y1 + y2 - 1, 2 * (x2 - x1) - 1, 2 * (y2 - y1) - 1], dim=1)

    def _refine(self, window: torch.Tensor, action: torch.Tensor, ref_hw: torch.Tensor) -> torch.Tensor:
        """Shift the window by up to half its side (centre kept inside the reference) and scale
        its width and height by ``size_step ** action``."""
        size = window[:, 2:] - window[:, :2]
        centre = (window[:, :2] + window[:, 2:]) / 2 + action[:, :2] * size / 2
        centre = torch.minimum(centre.clamp(min=0), ref_hw.flip(1))
        size = size * torch.exp(action[:, 2:] * math.log(self.size_step))
        return torch.cat([centre - size / 2, centre + size / 2], dim=1)

    @torch.no_grad()
    def search(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deterministic search (the policy mean). Returns the answer boxes (B, 4)."""
        return self.forward(query, reference, sample=False).boxes
