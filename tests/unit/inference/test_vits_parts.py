"""Chorus's inference-only VITS text side and flow against ``transformers``' own modules.

Random ``VitsModel``s of several shapes (odd, even and 1-wide feed-forward kernels, biased or unbiased
attention, one speaker or several) run padded batches of mixed lengths through both; every real position
must agree to float rounding.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import VitsModel
from transformers.models.vits import modeling_vits

from inference.backends.vits_flow import flow_reverse
from inference.backends.vits_text import VitsTextSide, spline_reverse
from tests.tiny_model import _tiny_config

LENGTHS = [11, 29, 3]
TOLERANCE = 1e-5

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "even-ffn-kernel": {"ffn_kernel_size": 4},
    "pointwise-ffn": {"ffn_kernel_size": 1, "hidden_act": "gelu"},
    "no-bias-four-heads": {"use_bias": False, "num_attention_heads": 4, "hidden_size": 24, "flow_size": 6},
    "speakers": {"num_speakers": 3, "speaker_embedding_size": 8},
}


def _model(overrides: dict[str, Any], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = VitsModel(_tiny_config(vocab_size=40, **overrides)).eval()
    with torch.no_grad():  # random weights: make every parameter matter (biases and norms start at 0 and 1)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def _batch(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = max(LENGTHS) + 2  # every row padded
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (len(LENGTHS), tokens), generator=generator)
    mask = torch.arange(tokens)[None, :] < torch.tensor(LENGTHS)[:, None]
    return ids * mask, mask


def _speaker(model: Any) -> torch.Tensor | None:
    if model.config.num_speakers <= 1:
        return None
    return model.embed_speaker(torch.tensor([2, 0, 1])).unsqueeze(-1)  # type: ignore[no-any-return]


def _assert_close_where(reference: torch.Tensor, ours: torch.Tensor, mask: torch.Tensor) -> None:
    """Equal at every real position (channels first: ``mask`` broadcasts as (rows, 1, time))."""
    assert reference.shape == ours.shape
    difference = ((reference - ours) * mask).abs().max().item()
    assert difference <= TOLERANCE * max(1.0, reference.abs().max().item()), difference


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.inference_mode()
def test_text_encoder_equals_transformers(name: str) -> None:
    model = _model(CONFIGS[name])
    ids, mask = _batch(model)
    reference = model.text_encoder(
        input_ids=ids, padding_mask=mask[:, :, None].float(), attention_mask=mask.long(), return_dict=True
    )
    hidden, means, log_variances = VitsTextSide(model).encode(ids, mask[:, :, None].float())
    row_mask = mask[:, :, None]
    _assert_close_where(reference.last_hidden_state, hidden, row_mask)
    _assert_close_where(reference.prior_means, means, row_mask)
    _assert_close_where(reference.prior_log_variances, log_variances, row_mask)


@torch.inference_mode()
def test_unpadded_batch_may_skip_the_key_mask() -> None:
    model = _model({})
    ids = torch.randint(1, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 9, 1)
    side = VitsTextSide(model)
    masked = side.encode(ids, mask, padded=True)
    unmasked = side.encode(ids, mask, padded=False)
    for a, b in zip(masked, unmasked, strict=True):
        assert torch.equal(a, b)


def _reference_log_durations(model: Any, hidden: torch.Tensor, mask: torch.Tensor, speaker: Any, noise: Any) -> Any:
    """transformers' stochastic duration predictor in reverse, with the noise given."""
    predictor = model.duration_predictor
    inputs = predictor.conv_pre(hidden)
    if speaker is not None:
        inputs = inputs + predictor.cond(speaker)
    inputs = predictor.conv_proj(predictor.conv_dds(inputs, mask)) * mask
    flows = list(reversed(predictor.flows))
    latents = noise
    for flow in [*flows[:-2], flows[-1]]:
        latents = torch.flip(latents, [1])
        latents, _ = flow(latents, mask, global_conditioning=inputs, reverse=True)
    return latents[:, :1, :]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.inference_mode()
def test_duration_predictor_reverse_equals_transformers(name: str) -> None:
    model = _model(CONFIGS[name])
    ids, mask = _batch(model)
    side = VitsTextSide(model)
    hidden, _, _ = side.encode(ids, mask[:, :, None].float())
    channels_mask = mask[:, None, :].float()
    noise = torch.randn(len(LENGTHS), 2, mask.shape[1], generator=torch.Generator().manual_seed(4)) * channels_mask
    speaker = _speaker(model)
    reference = _reference_log_durations(model, hidden.transpose(1, 2), channels_mask, speaker, noise)
    ours = side.log_durations(hidden, mask[:, :, None].float(), speaker, noise)
    _assert_close_where(reference, ours, channels_mask)


@pytest.mark.parametrize("name", ["default", "speakers"])
@torch.inference_mode()
def test_flow_reverse_equals_transformers(name: str) -> None:
    model = _model(CONFIGS[name])
    frames = [40, 17, 33]
    mask = (torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]).float()[:, None, :]
    latents = torch.randn(3, model.config.flow_size, max(frames), generator=torch.Generator().manual_seed(5)) * mask
    speaker = _speaker(model)
    reference = model.flow(latents, mask, speaker, reverse=True)
    batched = flow_reverse(model.flow, latents, mask, speaker)
    _assert_close_where(reference, batched, mask)
    # One row with a frame count for its mask: the padded tail zeroed in place instead of multiplied.
    row = flow_reverse(model.flow, latents[1:2], frames[1], None if speaker is None else speaker[1:2])
    _assert_close_where(reference[1:2], row, mask[1:2])
    # Zero past each row's end, as the vocoder's first convolution must read it (no mask in between).
    assert (batched * (1 - mask)).abs().max().item() == 0.0
    assert row[..., frames[1] :].abs().max().item() == 0.0


@torch.inference_mode()
def test_spline_reverse_equals_transformers_inside_and_outside_the_tail_bound() -> None:
    generator = torch.Generator().manual_seed(6)
    bins, tail_bound = 10, 5.0
    inputs = torch.linspace(-7.0, 7.0, 303).view(3, 1, 101)  # some beyond ±5: identity there
    widths = torch.randn(3, 1, 101, bins, generator=generator)
    heights = torch.randn(3, 1, 101, bins, generator=generator)
    derivatives = torch.randn(3, 1, 101, bins - 1, generator=generator)
    reference, _ = modeling_vits._unconstrained_rational_quadratic_spline(
        inputs, widths, heights, derivatives, reverse=True, tail_bound=tail_bound
    )
    ours = spline_reverse(inputs, widths, heights, derivatives, tail_bound=tail_bound)
    assert torch.allclose(reference, ours, atol=1e-6, rtol=1e-6)
    outside = inputs.abs() > tail_bound
    assert bool(outside.any())
    assert torch.equal(ours[outside], inputs[outside])
