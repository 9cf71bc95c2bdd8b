"""VITS's normalising flow, reverse direction, for inference.

``transformers``' coupling layers compute terms that are zero at inference and pass over the whole
activation for each: a zero global-conditioning tensor added before every gate, a zero output
accumulator, a zero log-deviation and its exponential. This runs the same convolutions and the same
arithmetic without them, gates in place on the tensor the convolution just returned, and takes the same
``Mask`` as the vocoder (``hifigan``): a frame count zeroes a single row's padded tail in place instead of
multiplying the activation by a mask. Equal to ``VitsResidualCouplingBlock`` in reverse (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from inference.backends.hifigan import Mask, apply_mask

__all__ = ["flow_reverse"]


def flow_reverse(block: Any, latents: torch.Tensor, mask: Mask, speaker: torch.Tensor | None) -> torch.Tensor:
    """``VitsResidualCouplingBlock.forward(latents, mask, speaker, reverse=True)``.

    ``latents`` (rows, channels, …, frames), either layout the model's convolutions take (1-D, or the
    channels-last 2-D of ``hifigan.convolutions_as_2d``), zero past each row's end; ``mask`` as
    ``hifigan.Mask``, at that rank. The result is zero past each row's end too.
    """
    for layer in reversed(block.flows):
        latents = torch.flip(latents, [1])
        half = layer.half_channels
        first, second = latents[:, :half], latents[:, half:]
        hidden = apply_mask(layer.conv_pre(first), mask)
        hidden = _wavenet(layer.wavenet, hidden, mask, speaker)
        mean = layer.conv_post(hidden)  # read only by the masked difference below
        latents = torch.cat([first, apply_mask(second - mean, mask)], dim=1)
    return latents  # zero past each row's end, as its input must be


def _wavenet(net: Any, hidden: torch.Tensor, mask: Mask, speaker: torch.Tensor | None) -> torch.Tensor:
    channels = net.hidden_size
    conditioning = None if speaker is None else net.cond_layer(speaker)
    output: torch.Tensor | None = None
    last = net.num_layers - 1
    for i in range(net.num_layers):
        gates = net.in_layers[i](hidden)
        if conditioning is not None:
            gates = gates + conditioning[:, 2 * i * channels : 2 * (i + 1) * channels]
        acts = torch.tanh(gates[:, :channels]).mul_(torch.sigmoid(gates[:, channels:]))
        res_skip = net.res_skip_layers[i](acts)
        skip = res_skip if i == last else res_skip[:, channels:]
        output = skip if output is None else output + skip
        if i < last:
            hidden = apply_mask(hidden + res_skip[:, :channels], mask)
    assert output is not None
    return apply_mask(output, mask)
