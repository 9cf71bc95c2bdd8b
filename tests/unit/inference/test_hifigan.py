"""The masked HiFi-GAN body: every convolution reads zeros past each row's end, as a lone row would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inference.backends import ModelSpec, load_backend
from inference.backends.hifigan import as_2d, hifigan_body
from tests.tiny_model import write_tiny_piper_voice

ENDS = [40, 17, 29]  # frames per row; the batch is 40 wide


@pytest.fixture(scope="module", params=["resblock-1", "resblock-2"])
def backend(request: pytest.FixtureRequest, tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "resblock-1":
        folder = tiny_vits_dir
    else:
        folder = write_tiny_piper_voice(tmp_path_factory.mktemp("tiny-piper") / "voice")
    return load_backend(ModelSpec(model=str(folder), device="cpu", batch_decoder=True))


@torch.inference_mode()
def test_every_convolution_reads_zeros_past_each_rows_end(backend: Any) -> None:
    dec, config = backend.model.decoder, backend.config
    rows, width = len(ENDS), max(ENDS)
    hidden = as_2d(torch.randn(rows, config.upsample_initial_channel, width))
    mask = as_2d((torch.arange(width)[None, :] < torch.tensor(ENDS)[:, None]).float()[:, None, :])
    read: list[tuple[str, float]] = []

    def record(name: str) -> Any:
        def hook(module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            (x,) = inputs
            scale = x.shape[-1] // width  # the stage's upsampling so far
            tails = [x[row, ..., end * scale :].abs().max().item() for row, end in enumerate(ENDS) if end < width]
            read.append((name, max(tails)))

        return hook

    handles = [
        module.register_forward_pre_hook(record(name))
        for name, module in dec.named_modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d) and name not in ("conv_pre", "cond")
    ]
    try:
        out = hifigan_body(dec, hidden, mask, config.upsample_rates, config.leaky_relu_slope)
    finally:
        for handle in handles:
            handle.remove()
    assert len(read) > 3 * len(config.upsample_rates)  # upsamplers and residual blocks were all seen
    assert [name for name, tail in read if tail != 0.0] == []
    scale = out.shape[-1] // width
    assert all(out[row, ..., end * scale :].abs().max().item() == 0.0 for row, end in enumerate(ENDS) if end < width)
