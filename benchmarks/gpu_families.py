"""Every served model family at full size with random weights: audio-seconds per wall-second and memory.

Checkpoints are built here from the families' default configs (MMS-TTS-size VITS, SpeechT5 with its
HiFi-GAN, Bark at bark-small's size, CSM at csm-1b's size with its Mimi codec) and saved with
``save_pretrained``, then loaded through ``load_backend`` exactly as ``CHORUS_MODEL=<folder>`` would; no
hub access. Random weights make random-sounding audio of realistic length and cost (SpeechT5's stop-token
head is silenced and its length limit set to 4 mel steps per token, about what real speech takes; a
random CSM never ends a row, so its rows are capped at 4 s). Run by ``benchmarks/gpu_check.sh
--families``; ``--small --device cpu`` is a dry run of the script on a laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.bench.report import machine
from service.bench.sentences import SENTENCES


def build_vits(out: Path, small: bool) -> Path:
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(["<pad>", "<unk>", " ", "'", "-", *string.ascii_lowercase])}
    (out / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = VitsTokenizer(
        vocab_file=str(out / "vocab.json"), language="eng", add_blank=True, phonemize=False, normalize=True
    )
    tokenizer.save_pretrained(out)
    options: dict[str, Any] = {"vocab_size": len(vocab)}
    if small:
        options.update(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32, flow_size=8,
                       upsample_initial_channel=16)  # fmt: skip
    torch.manual_seed(0)
    model = VitsModel(VitsConfig(**options))
    with torch.no_grad():  # durations of about four frames per token, as trained models give
        model.duration_predictor.flows[0].log_scale.fill_(3.0)
        model.duration_predictor.flows[0].translate.fill_(-1.4 * float(torch.exp(torch.tensor(3.0))))
    model.save_pretrained(out)
    return out


def build_speecht5(out: Path, small: bool) -> Path:
    import numpy as np
    import sentencepiece as spm
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Tokenizer,
    )

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join([string.ascii_letters + "'.,?!-", *SENTENCES] * 10) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "spm_char"), model_type="char", vocab_size=81,
        hard_vocab_limit=False, character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2,
    )  # fmt: skip
    tokenizer = SpeechT5Tokenizer(vocab_file=str(out / "spm_char.model"))
    options: dict[str, Any] = {"vocab_size": tokenizer.vocab_size}
    vocoder_options: dict[str, Any] = {}
    if small:
        options.update(hidden_size=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)  # fmt: skip
        vocoder_options.update(upsample_initial_channel=16)
    torch.manual_seed(0)
    model = SpeechT5ForTextToSpeech(SpeechT5Config(**options))
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.weight.zero_()
        model.speech_decoder_postnet.prob_out.bias.fill_(-10.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    SpeechT5HifiGan(SpeechT5HifiGanConfig(**vocoder_options)).save_pretrained(out / "vocoder")
    (out / "speakers").mkdir(exist_ok=True)
    np.save(out / "speakers" / "random.npy", np.random.default_rng(0).standard_normal(512).astype(np.float32))
    return out


def build_bark(out: Path, small: bool) -> Path:
    """Bark at bark-small's size (the stage configs' defaults), or the test suite's tiny one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_model import write_tiny_bark

    if small:
        return write_tiny_bark(out)
    import json as _json

    import torch
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkSemanticConfig,
        EncodecConfig,
        GenerationConfig,
    )

    tiny = write_tiny_bark(out)  # tokenizer, presets and the generation config; weights replaced below
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=129600, output_vocab_size=10048).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=12096, output_vocab_size=12096).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=1056, output_vocab_size=1056).to_dict(),
        codec_config=EncodecConfig(target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0]).to_dict(),
    )
    generation = _json.loads((tiny / "generation_config.json").read_text())
    generation["semantic_config"]["max_new_tokens"] = 256  # about five seconds of speech per row
    torch.manual_seed(0)
    model = BarkModel(config)
    with torch.no_grad():
        for layer in model.codec_model.quantizer.layers:
            layer.codebook.embed.normal_()
    model.generation_config = GenerationConfig()
    model.save_pretrained(tiny)
    (tiny / "generation_config.json").write_text(_json.dumps(generation))
    return tiny


def build_csm(out: Path, small: bool) -> Path:
    """CSM at csm-1b's size (1B Llama backbone, depth decoder, full Mimi), or the test suite's tiny one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_model import write_tiny_csm

    tiny = write_tiny_csm(out)  # the byte-level tokenizer; weights replaced below
    if small:
        return tiny
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration

    config = CsmConfig(codec_config={"model_type": "mimi"})  # csm-1b's sizes are the defaults
    torch.manual_seed(0)
    model = CsmForConditionalGeneration(config)
    with torch.no_grad():
        for name, buffer in model.codec_model.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_()
    model.save_pretrained(tiny)
    return tiny


def measure(backend: Any, batch_size: int, min_s: float) -> dict[str, Any]:
    import torch

    from inference.backends.base import SynthesisParams

    jobs = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    if backend.info.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    samples, batches, index = 0, 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_s or batches < 2:
        batch = [jobs[(index + k) % len(jobs)] for k in range(batch_size)]
        index += batch_size
        samples += sum(len(w) for w in backend.synthesize(batch))
        batches += 1
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if backend.info.device.startswith("cuda") else None
    return {
        "batch_size": batch_size,
        "audio_s_per_s": round(samples / backend.info.sample_rate_hz / wall, 1),
        "ms_per_batch": round(wall / batches * 1000, 1),
        "peak_gib": round(peak, 2) if peak is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--families", default="vits,speecht5,bark,csm")
    parser.add_argument("--small", action="store_true", help="tiny configs: a dry run of this script")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new measurements after this many seconds"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    from inference.backends import ModelSpec, load_backend

    builders = {"vits": build_vits, "speecht5": build_speecht5, "bark": build_bark, "csm": build_csm}
    report: dict[str, Any] = {"machine": machine(), "rows": [], "skipped": []}
    print(f"machine: {report['machine']}", flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "gpu_families.json" if "OUT" in os.environ else None)

    def over_budget(what: str) -> bool:
        if time.perf_counter() - started < args.budget_s:
            return False
        report["skipped"].append(what)
        print(f"skipped (over the {args.budget_s:.0f} s budget): {what}", flush=True)
        return True

    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            if over_budget(family):
                continue
            folder = builders[family](Path(tmp) / family, args.small)
            for dtype in args.dtypes.split(","):
                if (dtype != "fp32" and args.device == "cpu") or over_budget(f"{family} {dtype}"):
                    continue
                t0 = time.perf_counter()
                backend = load_backend(ModelSpec(model=str(folder), device=args.device, dtype=dtype))
                if family == "speecht5":
                    backend.max_length_ratio = 4.0  # ~4 mel steps per token: the length real speech has
                if family == "csm":
                    backend.max_row_seconds = 4.0  # a random CSM never ends a row
                backend.warmup()
                load_s = time.perf_counter() - t0
                for size in (int(b) for b in args.batch_sizes.split(",")):
                    if over_budget(f"{family} {dtype} batch {size}"):
                        continue
                    row = {"family": family, "dtype": dtype, "load_s": round(load_s, 1),
                           **measure(backend, size, args.min_seconds)}  # fmt: skip
                    report["rows"].append(row)
                    print(
                        f"{family:<9} {dtype:<5} batch {size:>3}: {row['audio_s_per_s']:9.1f} audio-s/s  "
                        f"{row['ms_per_batch']:8.1f} ms/batch  peak {row['peak_gib']} GiB",
                        flush=True,
                    )
                    if out:  # after every row: a run cut short still leaves what it measured
                        out.write_text(json.dumps(report, indent=1))
                del backend
    if out:
        out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
