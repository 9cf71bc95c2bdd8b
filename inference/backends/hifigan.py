"""The HiFi-GAN vocoder body shared by VITS and SpeechT5, with optional padding masks.

With ``mask`` (rows, 1, frames) every convolution's input is zero past each row's end: what a lone row
sees as the convolution's zero padding, so each row of a padded batch equals its unbatched synthesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["hifigan_body", "resblock"]


def hifigan_body(
    dec: Any, hidden: torch.Tensor, mask: torch.Tensor | None, upsample_rates: Sequence[int], slope: float
) -> torch.Tensor:
    """Upsamplers and residual blocks after ``conv_pre``, then the final activation; ``conv_post`` and
    ``tanh`` are the caller's. ``mask`` is at the input frame rate and is upsampled alongside."""
    for i, rate in enumerate(upsample_rates):
        if mask is not None:
            hidden = hidden * mask
        hidden = dec.upsampler[i](nn.functional.leaky_relu(hidden, slope))
        if mask is not None:
            mask = mask.repeat_interleave(rate, dim=2)
            hidden = hidden * mask
        total: torch.Tensor | None = None
        for j in range(dec.num_kernels):
            out = resblock(dec.resblocks[i * dec.num_kernels + j], hidden, mask, slope)
            total = out if total is None else total + out
        assert total is not None
        hidden = total / dec.num_kernels
    hidden = nn.functional.leaky_relu(hidden)
    if mask is not None:
        hidden = hidden * mask
    return hidden


def resblock(block: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None, slope: float) -> torch.Tensor:
    """Either residual block type (``convs1``/``convs2`` pairs, or ResBlock2's single ``convs``)."""
    if not hasattr(block, "convs1"):
        convs: Any = block.convs
        for conv in convs:
            inner = nn.functional.leaky_relu(hidden, slope)
            if mask is not None:
                inner = inner * mask
            hidden = hidden + conv(inner)
        return hidden if mask is None else hidden * mask
    convs1: Any = block.convs1
    convs2: Any = block.convs2
    for conv1, conv2 in zip(convs1, convs2, strict=True):
        inner = nn.functional.leaky_relu(hidden, slope)
        if mask is not None:
            inner = inner * mask
        inner = nn.functional.leaky_relu(conv1(inner), slope)
        if mask is not None:
            inner = inner * mask
        hidden = hidden + conv2(inner)
    return hidden if mask is None else hidden * mask
