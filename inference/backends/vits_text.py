"""VITS's text side for inference: the text encoder and the stochastic duration predictor's reverse pass.

Same weights and arithmetic as ``transformers``' modules, in fewer and larger operations: the encoder keeps
its activations (rows, tokens, channels) from the embedding to the projection (no transposes around every
convolution and layer norm), runs its convolutions as channels-last 2-D convolutions on that memory,
projects queries, keys and values in one matrix product and adds the windowed relative-position terms by
one gather each instead of padding and reshaping to (tokens, 2 * tokens); the spline flows of the duration
predictor evaluate every element (their out-of-range ones are replaced by a select) instead of indexing
with boolean masks, and skip the log-determinants only training reads. On a 2-core CPU the text side of a
sentence was a quarter of its synthesis time, mostly per-operation overhead; on a GPU the same count of
operations is the count of kernel launches.

Equal to ``transformers``' forward to float rounding (tested against it, padded batches included).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["VitsTextSide", "spline_reverse"]


def _as_channels_last_weight(conv: nn.Conv1d) -> torch.Tensor:
    return conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _conv_tokens(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
    """A 1-D convolution over the tokens of a (rows, tokens, channels) tensor, returned in that layout.

    The memory of a contiguous (rows, tokens, channels) tensor is a channels-last (rows, channels, 1,
    tokens) image, so no copy happens on either side of the 2-D convolution.
    """
    image = hidden.transpose(1, 2).unsqueeze(2)
    return F.conv2d(image, weight, bias, **kwargs).squeeze(2).transpose(1, 2)


class _Layer:
    """One encoder layer's weights, arranged for ``VitsTextSide``."""

    def __init__(self, layer: Any, scaling: float) -> None:
        attention = layer.attention
        q, k, v = attention.q_proj, attention.k_proj, attention.v_proj
        self.qkv_weight = torch.cat([q.weight * scaling, k.weight, v.weight]).detach()
        self.qkv_bias: torch.Tensor | None = None
        if q.bias is not None:
            self.qkv_bias = torch.cat([q.bias * scaling, k.bias, v.bias]).detach()
        self.out_proj: nn.Linear = attention.out_proj
        self.rel_k: torch.Tensor | None = None
        self.rel_v: torch.Tensor | None = None
        if attention.window_size:
            self.rel_k = attention.emb_rel_k.detach()[0]  # (2 * window + 1, head_dim)
            self.rel_v = attention.emb_rel_v.detach()[0]
        self.norm_1: nn.LayerNorm = layer.layer_norm
        self.norm_2: nn.LayerNorm = layer.final_layer_norm
        feed_forward = layer.feed_forward
        self.act = feed_forward.act_fn
        self.conv_1 = _as_channels_last_weight(feed_forward.conv_1)
        self.conv_2 = _as_channels_last_weight(feed_forward.conv_2)
        self.bias_1, self.bias_2 = feed_forward.conv_1.bias, feed_forward.conv_2.bias
        kernel = feed_forward.conv_1.kernel_size[0]
        self.pad = ((kernel - 1) // 2, kernel // 2)


class VitsTextSide:
    """The text encoder and the stochastic duration predictor of a loaded ``VitsModel``, for inference.

    Holds references to the model's weights (plus a stacked query/key/value matrix and channels-last copies
    of the convolution kernels per layer); build it after the weights are final (weight norm folded, on
    their device).
    """

    def __init__(self, model: Any) -> None:
        config = model.config
        encoder = model.text_encoder
        self.hidden_size: int = config.hidden_size
        self.flow_size: int = config.flow_size
        self.heads: int = config.num_attention_heads
        self.window: int = config.window_size or 0
        self.embed: nn.Embedding = encoder.embed_tokens
        self.embed_scale = math.sqrt(config.hidden_size)
        scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.layers = [_Layer(layer, scaling) for layer in encoder.encoder.layers]
        self.project_weight = encoder.project.weight.detach()[..., 0]
        self.project_bias = encoder.project.bias
        self._indices: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.predictor = model.duration_predictor if config.use_stochastic_duration_prediction else None
        if self.predictor is not None:
            self._dds = {id(m): _DepthSeparable(m) for m in self._depth_separables(self.predictor)}

    # ------------------------------------------------------------------ text encoder

    def encode(
        self, ids: torch.Tensor, mask: torch.Tensor, padded: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``ids`` (rows, tokens) and ``mask`` (rows, tokens, 1), 1.0 on real tokens → the encoder's last
        hidden state (rows, tokens, hidden) and the prior's means and log-variances (rows, tokens, flow).
        ``padded=False`` promises that no row is padded (the key mask is then skipped)."""
        hidden = self.embed(ids) * self.embed_scale * mask
        key_bias = None
        if padded:  # additive: the most negative float on padded keys, as transformers' eager attention
            key_bias = (1.0 - mask.transpose(1, 2)) * torch.finfo(hidden.dtype).min  # (rows, 1, tokens)
            key_bias = key_bias.unsqueeze(1)  # (rows, 1, 1, tokens): every head, every query
        for layer in self.layers:
            attended = self._attention(layer, hidden, key_bias)
            hidden = _layer_norm(hidden + attended, layer.norm_1)
            hidden = _layer_norm(hidden + self._feed_forward(layer, hidden, mask), layer.norm_2)
        hidden = hidden * mask
        stats = F.linear(hidden, self.project_weight, self.project_bias) * mask
        means, log_variances = torch.split(stats, self.flow_size, dim=2)
        return hidden, means, log_variances

    def _attention(self, layer: _Layer, hidden: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        rows, tokens, channels = hidden.shape
        heads = self.heads
        head_dim = channels // heads
        qkv = F.linear(hidden, layer.qkv_weight, layer.qkv_bias).view(rows, tokens, 3, heads, head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4).reshape(3, rows * heads, tokens, head_dim)
        query, key, value = qkv[0], qkv[1], qkv[2]
        if layer.rel_k is not None and layer.rel_v is not None:
            key_index, value_index = self._relative_indices(tokens, hidden.device)
            # Query against each relative position's key embedding; a zero column serves the positions
            # beyond the window, then one gather lays the terms out as (query, key).
            relative = F.pad(torch.matmul(query, layer.rel_k.t()), (0, 1))
            bias = relative.gather(2, key_index.expand(rows * heads, tokens, tokens))
            if key_bias is not None:
                bias.view(rows, heads, tokens, tokens).add_(key_bias)
            scores = torch.baddbmm(bias, query, key.transpose(1, 2))
        else:
            scores = torch.bmm(query, key.transpose(1, 2))
            if key_bias is not None:
                scores.view(rows, heads, tokens, tokens).add_(key_bias)
        probs = torch.softmax(scores, dim=-1)
        out = torch.bmm(probs, value)
        if layer.rel_v is not None:
            window = self.window
            # Each query's weights on the keys within the window, by relative position, times their values.
            _, value_index = self._relative_indices(tokens, hidden.device)
            near = F.pad(probs, (window, window)).gather(2, value_index.expand(rows * heads, tokens, 2 * window + 1))
            out.view(-1, head_dim).addmm_(near.view(-1, 2 * window + 1), layer.rel_v)
        out = out.view(rows, heads, tokens, head_dim).transpose(1, 2).reshape(rows, tokens, channels)
        return F.linear(out, layer.out_proj.weight, layer.out_proj.bias)

    def _relative_indices(self, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``tokens`` tokens: (query, key) → relative position index (2 * window + 1 beyond the window,
        a zero column), and (query, relative position) → key index in keys padded by the window each side.
        Cached per length (lengths are bucketed, so few)."""
        cached = self._indices.get((tokens, device))
        if cached is None:
            window = self.window
            positions = torch.arange(tokens, device=device)
            offset = positions[None, :] - positions[:, None]
            key_index = torch.where(offset.abs() <= window, offset + window, 2 * window + 1)
            value_index = positions[:, None] + torch.arange(2 * window + 1, device=device)[None, :]
            cached = (key_index, value_index)
            self._indices[(tokens, device)] = cached
        return cached

    def _feed_forward(self, layer: _Layer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        left, right = layer.pad
        symmetric = left == right  # then the convolution pads; an even kernel is padded unevenly first
        padding = (0, left if symmetric else 0)
        inner = hidden * mask
        if not symmetric:
            inner = F.pad(inner, (0, 0, left, right))
        inner = _conv_tokens(inner, layer.conv_1, layer.bias_1, padding=padding)
        inner = layer.act(inner) * mask
        if not symmetric:
            inner = F.pad(inner, (0, 0, left, right))
        return _conv_tokens(inner, layer.conv_2, layer.bias_2, padding=padding) * mask

    # ------------------------------------------------------------------ stochastic duration predictor

    def log_durations(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        speaker: torch.Tensor | None,
        latents: torch.Tensor,
    ) -> torch.Tensor:
        """The stochastic duration predictor's reverse pass: ``hidden`` (rows, tokens, hidden) from
        ``encode``, ``mask`` (rows, tokens, 1), ``speaker`` (rows, embedding, 1) or None and the
        predictor's noise ``latents`` (rows, 2, tokens) → log-durations (rows, 1, tokens)."""
        predictor = self.predictor
        assert predictor is not None
        inputs = F.linear(hidden, predictor.conv_pre.weight[..., 0], predictor.conv_pre.bias)
        if speaker is not None:
            inputs = inputs + predictor.cond(speaker).transpose(1, 2)
        inputs = self._dds[id(predictor.conv_dds)](inputs, mask)
        inputs = F.linear(inputs, predictor.conv_proj.weight[..., 0], predictor.conv_proj.bias) * mask
        mask_channels = mask.transpose(1, 2)
        flows = list(reversed(predictor.flows))
        flows = [*flows[:-2], flows[-1]]  # the first conv flow is unused in the reverse direction
        for flow in flows:
            latents = torch.flip(latents, [1])
            if hasattr(flow, "log_scale"):  # the elementwise affine flow
                latents = (latents - flow.translate) * torch.exp(-flow.log_scale) * mask_channels
            else:
                latents = self._conv_flow_reverse(flow, latents, mask, mask_channels, inputs)
        return latents[:, :1, :]

    def _conv_flow_reverse(
        self, flow: Any, latents: torch.Tensor, mask: torch.Tensor, mask_channels: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        half, bins = flow.half_channels, flow.num_bins
        first, second = torch.split(latents, [half, half], dim=1)
        hidden = F.linear(first.transpose(1, 2), flow.conv_pre.weight[..., 0], flow.conv_pre.bias)
        hidden = self._dds[id(flow.conv_dds)](hidden + inputs, mask)
        hidden = F.linear(hidden, flow.conv_proj.weight[..., 0], flow.conv_proj.bias) * mask
        rows, tokens = hidden.shape[:2]
        params = hidden.view(rows, tokens, half, 3 * bins - 1).transpose(1, 2)  # (rows, half, tokens, params)
        scale = math.sqrt(flow.filter_channels)
        second = spline_reverse(
            second, params[..., :bins] / scale, params[..., bins : 2 * bins] / scale, params[..., 2 * bins :],
            tail_bound=flow.tail_bound,
        )  # fmt: skip
        return torch.cat([first, second], dim=1) * mask_channels

    @staticmethod
    def _depth_separables(predictor: Any) -> list[Any]:
        modules = [predictor.conv_dds]
        modules += [flow.conv_dds for flow in predictor.flows if hasattr(flow, "conv_dds")]
        return modules


class _DdsLayer(NamedTuple):
    dilated: torch.Tensor  # channels-last depthwise kernel
    dilated_bias: torch.Tensor | None
    groups: int
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pointwise: torch.Tensor
    pointwise_bias: torch.Tensor | None
    norm_1: nn.LayerNorm
    norm_2: nn.LayerNorm


class _DepthSeparable:
    """``VitsDilatedDepthSeparableConv`` on (rows, tokens, channels) tensors."""

    def __init__(self, module: Any) -> None:
        self.layers = []
        for dilated, pointwise, norm_1, norm_2 in zip(
            module.convs_dilated, module.convs_pointwise, module.norms_1, module.norms_2, strict=True
        ):
            self.layers.append(
                _DdsLayer(
                    dilated=_as_channels_last_weight(dilated),
                    dilated_bias=dilated.bias,
                    groups=dilated.groups,
                    padding=(0, int(dilated.padding[0])),
                    dilation=(1, int(dilated.dilation[0])),
                    pointwise=pointwise.weight.detach()[..., 0],
                    pointwise_bias=pointwise.bias,
                    norm_1=norm_1,
                    norm_2=norm_2,
                )
            )

    def __call__(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = _conv_tokens(
                inputs * mask, layer.dilated, layer.dilated_bias, padding=layer.padding, dilation=layer.dilation,
                groups=layer.groups,
            )  # fmt: skip
            hidden = F.gelu(_layer_norm(hidden, layer.norm_1))
            hidden = F.gelu(_layer_norm(F.linear(hidden, layer.pointwise, layer.pointwise_bias), layer.norm_2))
            inputs = inputs + hidden
        return inputs * mask


def _layer_norm(hidden: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def spline_reverse(
    inputs: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    tail_bound: float,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> torch.Tensor:
    """The inverse of VITS's monotonic rational-quadratic spline (identity outside ±``tail_bound``).

    ``widths`` and ``heights`` (…, bins) and ``derivatives`` (…, bins - 1) are unnormalised, as the flow's
    projection gives them. Every element is evaluated and the ones outside the interval replaced, so
    there is no boolean indexing (a host round trip on a GPU) and the log-determinant is not computed.
    """
    bins = widths.shape[-1]
    constant = math.log(math.exp(1 - min_derivative) - 1)
    derivatives = min_derivative + F.softplus(F.pad(derivatives, (1, 1), value=constant))

    def knots(unnormalised: torch.Tensor, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = minimum + (1 - minimum * bins) * torch.softmax(unnormalised, dim=-1)
        cumulative = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
        cumulative = 2 * tail_bound * cumulative - tail_bound
        cumulative[..., 0] = -tail_bound
        cumulative[..., -1] = tail_bound
        return cumulative, cumulative[..., 1:] - cumulative[..., :-1]

    cum_widths, widths = knots(widths, min_bin_width)
    cum_heights, heights = knots(heights, min_bin_height)
    locations = cum_heights.clone()
    locations[..., -1] += 1e-6
    index = (torch.sum(inputs[..., None] >= locations, dim=-1) - 1).clamp_(0, bins - 1)[..., None]

    def pick(table: torch.Tensor) -> torch.Tensor:
        return table.gather(-1, index)[..., 0]

    delta = heights / widths
    input_cum_widths, input_widths = pick(cum_widths), pick(widths)
    input_cum_heights, input_heights, input_delta = pick(cum_heights), pick(heights), pick(delta)
    input_derivatives, input_derivatives_next = pick(derivatives), pick(derivatives[..., 1:])

    slope_sum = input_derivatives + input_derivatives_next - 2 * input_delta
    offset = inputs - input_cum_heights
    term = offset * slope_sum
    a = input_heights * (input_delta - input_derivatives) + term
    b = input_heights * input_derivatives - term
    c = -input_delta * offset
    root = (2 * c) / (-b - torch.sqrt(b.pow(2) - 4 * a * c))
    outputs = root * input_widths + input_cum_widths
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    return torch.where(inside, outputs, inputs)
