"""Convert a Piper voice (``voice.onnx`` + ``voice.onnx.json``) into a ``transformers`` VITS checkpoint.

Piper exports the original VITS modules to ONNX. Their weights map one-to-one onto ``transformers``'
VITS modules; the export renamed a few (recovered from the ONNX node that consumes them) and folded one
(``dp.flows.0.logs``, kept as ``exp(-logs)``). The decoder's residual blocks are HiFi-GAN's second kind,
which ``ChorusVitsModel`` supplies (``resblock_type = "2"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import VitsConfig

from inference.backends.text import PIPER_CONFIG_NAME, PiperFrontend
from inference.backends.vits import ChorusVitsModel
from inference.errors import ModelLoadError

__all__ = ["cached_conversion", "convert_piper_voice", "piper_config_path"]

log = logging.getLogger(__name__)

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rule(pattern: str, target: Callable[[re.Match[str]], str]) -> _Rule:
    return re.compile(pattern), target


def _dds(prefix: str, sub: Callable[[re.Match[str]], str]) -> list[_Rule]:
    """Rules for one dilated depth-separable conv stack (``convs`` in the original) under ``prefix``."""
    return [
        _rule(rf"^{prefix}\.convs\.convs_sep\.(?P<i>\d+)\.(?P<p>weight|bias)$",
              lambda m: f"{sub(m)}.convs_dilated.{m['i']}.{m['p']}"),
        _rule(rf"^{prefix}\.convs\.convs_1x1\.(?P<i>\d+)\.(?P<p>weight|bias)$",
              lambda m: f"{sub(m)}.convs_pointwise.{m['i']}.{m['p']}"),
        _rule(rf"^{prefix}\.convs\.norms_(?P<n>[12])\.(?P<i>\d+)\.gamma$",
              lambda m: f"{sub(m)}.norms_{m['n']}.{m['i']}.weight"),
        _rule(rf"^{prefix}\.convs\.norms_(?P<n>[12])\.(?P<i>\d+)\.beta$",
              lambda m: f"{sub(m)}.norms_{m['n']}.{m['i']}.bias"),
    ]  # fmt: skip


_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}
_ENC = "text_encoder.encoder.layers"

_COMMON_RULES: list[_Rule] = [
    _rule(r"^enc_p\.emb\.weight$", lambda m: "text_encoder.embed_tokens.weight"),
    _rule(r"^enc_p\.encoder\.attn_layers\.(\d+)\.conv_([qkvo])\.(weight|bias)$",
          lambda m: f"{_ENC}.{m[1]}.attention.{_ATTN[m[2]]}.{m[3]}"),
    _rule(r"^enc_p\.encoder\.attn_layers\.(\d+)\.emb_rel_([kv])$", lambda m: f"{_ENC}.{m[1]}.attention.emb_rel_{m[2]}"),
    _rule(r"^enc_p\.encoder\.norm_layers_1\.(\d+)\.gamma$", lambda m: f"{_ENC}.{m[1]}.layer_norm.weight"),
    _rule(r"^enc_p\.encoder\.norm_layers_1\.(\d+)\.beta$", lambda m: f"{_ENC}.{m[1]}.layer_norm.bias"),
    _rule(r"^enc_p\.encoder\.norm_layers_2\.(\d+)\.gamma$", lambda m: f"{_ENC}.{m[1]}.final_layer_norm.weight"),
    _rule(r"^enc_p\.encoder\.norm_layers_2\.(\d+)\.beta$", lambda m: f"{_ENC}.{m[1]}.final_layer_norm.bias"),
    _rule(r"^enc_p\.encoder\.ffn_layers\.(\d+)\.conv_([12])\.(weight|bias)$",
          lambda m: f"{_ENC}.{m[1]}.feed_forward.conv_{m[2]}.{m[3]}"),
    _rule(r"^enc_p\.proj\.(weight|bias)$", lambda m: f"text_encoder.project.{m[1]}"),
    _rule(r"^emb_g\.weight$", lambda m: "embed_speaker.weight"),
    _rule(r"^dec\.conv_pre\.(weight|bias)$", lambda m: f"decoder.conv_pre.{m[1]}"),
    _rule(r"^dec\.ups\.(\d+)\.(weight|bias)$", lambda m: f"decoder.upsampler.{m[1]}.{m[2]}"),
    _rule(r"^dec\.resblocks\.(\d+)\.convs\.(\d+)\.(weight|bias)$",
          lambda m: f"decoder.resblocks.{m[1]}.convs.{m[2]}.{m[3]}"),
    _rule(r"^dec\.resblocks\.(\d+)\.convs([12])\.(\d+)\.(weight|bias)$",
          lambda m: f"decoder.resblocks.{m[1]}.convs{m[2]}.{m[3]}.{m[4]}"),
    _rule(r"^dec\.conv_post\.(weight|bias)$", lambda m: f"decoder.conv_post.{m[1]}"),
    _rule(r"^dec\.cond\.(weight|bias)$", lambda m: f"decoder.cond.{m[1]}"),
    # Prior flow: the original interleaves Flip modules, so coupling layer i is transformers' i // 2.
    _rule(r"^flow\.flows\.(\d+)\.pre\.(weight|bias)$", lambda m: f"flow.flows.{int(m[1]) // 2}.conv_pre.{m[2]}"),
    _rule(r"^flow\.flows\.(\d+)\.post\.(weight|bias)$", lambda m: f"flow.flows.{int(m[1]) // 2}.conv_post.{m[2]}"),
    _rule(r"^flow\.flows\.(\d+)\.enc\.(in_layers|res_skip_layers)\.(\d+)\.bias$",
          lambda m: f"flow.flows.{int(m[1]) // 2}.wavenet.{m[2]}.{m[3]}.bias"),
    _rule(r"^flow\.flows\.(\d+)\.enc\.(in_layers|res_skip_layers)\.(\d+)\.weight$",
          lambda m: f"flow.flows.{int(m[1]) // 2}.wavenet.{m[2]}.{m[3]}.weight#wn"),
    _rule(r"^flow\.flows\.(\d+)\.enc\.cond_layer\.bias$",
          lambda m: f"flow.flows.{int(m[1]) // 2}.wavenet.cond_layer.bias"),
    _rule(r"^flow\.flows\.(\d+)\.enc\.cond_layer\.weight$",
          lambda m: f"flow.flows.{int(m[1]) // 2}.wavenet.cond_layer.weight#wn"),
]  # fmt: skip

_SDP = "duration_predictor"
_STOCHASTIC_RULES: list[_Rule] = [
    _rule(r"^dp\.pre\.(weight|bias)$", lambda m: f"{_SDP}.conv_pre.{m[1]}"),
    _rule(r"^dp\.proj\.(weight|bias)$", lambda m: f"{_SDP}.conv_proj.{m[1]}"),
    _rule(r"^dp\.cond\.(weight|bias)$", lambda m: f"{_SDP}.cond.{m[1]}"),
    *_dds(r"dp", lambda m: f"{_SDP}.conv_dds"),
    _rule(r"^dp\.flows\.0\.m$", lambda m: f"{_SDP}.flows.0.translate"),
    _rule(r"^dp\.flows\.0\.logs$", lambda m: f"{_SDP}.flows.0.log_scale"),
    # Conv flows sit at odd indices between Flips; the first (index 1) is unused at inference.
    _rule(r"^dp\.flows\.(\d+)\.pre\.(weight|bias)$", lambda m: f"{_SDP}.flows.{int(m[1]) // 2 + 1}.conv_pre.{m[2]}"),
    _rule(r"^dp\.flows\.(\d+)\.proj\.(weight|bias)$", lambda m: f"{_SDP}.flows.{int(m[1]) // 2 + 1}.conv_proj.{m[2]}"),
    *_dds(r"dp\.flows\.(?P<f>\d+)", lambda m: f"{_SDP}.flows.{int(m['f']) // 2 + 1}.conv_dds"),
]

_DETERMINISTIC_RULES: list[_Rule] = [
    _rule(r"^dp\.conv_([12])\.(weight|bias)$", lambda m: f"{_SDP}.conv_{m[1]}.{m[2]}"),
    _rule(r"^dp\.norm_([12])\.gamma$", lambda m: f"{_SDP}.norm_{m[1]}.weight"),
    _rule(r"^dp\.norm_([12])\.beta$", lambda m: f"{_SDP}.norm_{m[1]}.bias"),
    _rule(r"^dp\.proj\.(weight|bias)$", lambda m: f"{_SDP}.proj.{m[1]}"),
    _rule(r"^dp\.cond\.(weight|bias)$", lambda m: f"{_SDP}.cond.{m[1]}"),
]


def piper_config_path(onnx_path: Path) -> Path:
    """Piper keeps a voice's config beside it as ``<voice>.onnx.json``."""
    return onnx_path.with_name(onnx_path.name + ".json")


def _read_voice(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Initializers (with recovered names), node attributes by weight name, and the Piper config."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError("converting a Piper voice needs the onnx package: install chorus-tts[voice]") from exc
    config_path = piper_config_path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path}: no such Piper voice file")
    try:
        piper_config = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(piper_config, dict):
            raise ValueError("the top level is not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: cannot read the Piper voice config beside the voice: {exc}") from exc
    PiperFrontend(piper_config, source=str(config_path))  # validates the phoneme map and espeak voice
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:  # onnx raises DecodeError and others without a common base
        raise ModelLoadError(f"{onnx_path}: not a readable ONNX model: {exc}") from exc

    consumers: dict[str, Any] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, node)
    weights: dict[str, np.ndarray] = {}
    attributes: dict[str, dict[str, Any]] = {}
    for init in graph.initializer:
        name = init.name
        node = consumers.get(name)
        if name.startswith("/"):
            # A folded constant; the only one we need is dp.flows.0's exp(-logs).
            if name == "/dp/flows.0/Exp_output_0":
                weights["dp.flows.0.logs"] = -np.log(numpy_helper.to_array(init).astype(np.float64)).astype(np.float32)
            continue
        if not re.match(r"^[a-z_]+(\.[A-Za-z0-9_]+)+$", name):
            # Renamed by the export (``onnx::Conv_8168``, ``sid``): the consuming node names its owner.
            is_weight = node is not None and node.op_type in {"Conv", "ConvTranspose", "Gather"} and len(init.dims) >= 2
            if node is None or not is_weight or not node.name.startswith("/"):
                continue  # shape constants and the like
            owner = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            name = f"{owner}.weight"
        weights[name] = numpy_helper.to_array(init).copy()
        if node is not None:
            attributes[name] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if "enc_p.emb.weight" not in weights:
        raise ModelLoadError(f"{onnx_path}: not a Piper VITS voice (no phoneme embedding found)")
    return weights, attributes, piper_config


def _count(weights: dict[str, np.ndarray], pattern: str) -> int:
    found = {m[1] for name in weights if (m := re.match(pattern, name))}
    return len(found)


def _vits_config(weights: dict[str, np.ndarray], attrs: dict[str, Any], piper: dict[str, Any]) -> VitsConfig:
    emb = weights["enc_p.emb.weight"]
    hidden = int(emb.shape[1])
    rel_k = weights["enc_p.encoder.attn_layers.0.emb_rel_k"]
    ffn = weights["enc_p.encoder.ffn_layers.0.conv_1.weight"]
    n_ups = _count(weights, r"^dec\.ups\.(\d+)\.weight$")
    resblock_type = "2" if "dec.resblocks.0.convs.0.weight" in weights else "1"
    n_res = _count(weights, r"^dec\.resblocks\.(\d+)\.")
    per_stage = n_res // n_ups
    conv_key = "convs" if resblock_type == "2" else "convs1"
    kernels, dilations = [], []
    for k in range(per_stage):
        n_convs = _count(weights, rf"^dec\.resblocks\.{k}\.{conv_key}\.(\d+)\.weight$")
        kernels.append(int(weights[f"dec.resblocks.{k}.{conv_key}.0.weight"].shape[2]))
        dilations.append(
            [int(attrs[f"dec.resblocks.{k}.{conv_key}.{j}.weight"]["dilations"][0]) for j in range(n_convs)]
        )
    stochastic = "dp.flows.0.m" in weights
    inference = piper.get("inference") or {}
    wavenet_key = next(k for k in weights if re.match(r"^flow\.flows\.0\.enc\.in_layers\.0\.weight$", k))
    num_speakers = int(piper.get("num_speakers", 1) or 1)
    config = VitsConfig(
        vocab_size=int(emb.shape[0]),
        hidden_size=hidden,
        num_hidden_layers=_count(weights, r"^enc_p\.encoder\.attn_layers\.(\d+)\."),
        num_attention_heads=hidden // int(rel_k.shape[2]),
        window_size=(int(rel_k.shape[1]) - 1) // 2,
        ffn_dim=int(ffn.shape[0]),
        ffn_kernel_size=int(ffn.shape[2]),
        flow_size=int(weights["enc_p.proj.weight"].shape[0]) // 2,
        upsample_initial_channel=int(weights["dec.conv_pre.weight"].shape[0]),
        upsample_rates=[int(attrs[f"dec.ups.{i}.weight"]["strides"][0]) for i in range(n_ups)],
        upsample_kernel_sizes=[int(weights[f"dec.ups.{i}.weight"].shape[2]) for i in range(n_ups)],
        resblock_kernel_sizes=kernels,
        resblock_dilation_sizes=dilations,
        use_stochastic_duration_prediction=stochastic,
        duration_predictor_num_flows=(_count(weights, r"^dp\.flows\.(\d+)\.pre\.weight$") + 1) if stochastic else 4,
        duration_predictor_flow_bins=(int(weights["dp.flows.3.proj.weight"].shape[0]) + 1) // 3 if stochastic else 10,
        depth_separable_num_layers=_count(weights, r"^dp\.convs\.convs_sep\.(\d+)\.") if stochastic else 3,
        duration_predictor_kernel_size=int(weights["dp.convs.convs_sep.0.weight"].shape[2]) if stochastic else 3,
        duration_predictor_filter_channels=int(weights["dp.conv_1.weight"].shape[0]) if not stochastic else 256,
        prior_encoder_num_flows=_count(weights, r"^flow\.flows\.(\d+)\.pre\.weight$"),
        prior_encoder_num_wavenet_layers=_count(weights, r"^flow\.flows\.0\.enc\.in_layers\.(\d+)\.bias$"),
        wavenet_kernel_size=int(weights[wavenet_key].shape[2]),
        num_speakers=num_speakers,
        speaker_embedding_size=int(weights["emb_g.weight"].shape[1]) if "emb_g.weight" in weights else 0,
        sampling_rate=int(piper["audio"]["sample_rate"]),
        noise_scale=float(inference.get("noise_scale", 0.667)),
        noise_scale_duration=float(inference.get("noise_w", 0.8)),
        speaking_rate=1.0 / float(inference.get("length_scale", 1.0)),
        layer_norm_eps=1e-5,
        pad_token_id=0,
    )
    config.resblock_type = resblock_type
    config.architectures = ["ChorusVitsModel"]
    return config


def convert_piper_voice(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Write a ``transformers`` checkpoint (safetensors, config, ``piper.json``) for a Piper voice."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    weights, attrs, piper = _read_voice(onnx_path)
    try:
        config = _vits_config(weights, attrs, piper)
    except (KeyError, IndexError, StopIteration, ValueError, ZeroDivisionError) as exc:
        raise ModelLoadError(f"{onnx_path}: unsupported Piper voice layout ({exc!r})") from exc
    model = ChorusVitsModel(config)
    expected = model.state_dict()
    rules = _COMMON_RULES + (_STOCHASTIC_RULES if config.use_stochastic_duration_prediction else _DETERMINISTIC_RULES)
    state: dict[str, torch.Tensor] = {}
    unmapped = []
    for name, value in weights.items():
        target = next((fn(m) for pattern, fn in rules if (m := pattern.match(name))), None)
        if target is None:
            unmapped.append(name)
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if target.endswith("#wn"):
            # transformers' WaveNet weights are weight-norm parametrised: g = ||v|| over (1, 2), v = w.
            base = target[: -len(".weight#wn")]
            state[f"{base}.parametrizations.weight.original0"] = tensor.norm(dim=(1, 2), keepdim=True)
            state[f"{base}.parametrizations.weight.original1"] = tensor
            continue
        if ".attention." in target and target.endswith(".weight") and "emb_rel" not in target:
            tensor = tensor.squeeze(-1)
        state[target] = tensor
    if unmapped:
        raise ModelLoadError(f"{onnx_path}: weights with no place in the VITS model: {', '.join(sorted(unmapped)[:5])}")
    bad_shapes = [k for k, v in state.items() if k not in expected or expected[k].shape != v.shape]
    if bad_shapes:
        raise ModelLoadError(f"{onnx_path}: weights that do not fit the inferred architecture: {bad_shapes[:5]}")
    ignored = tuple(re.compile(p) for p in ChorusVitsModel._keys_to_ignore_on_load_missing)
    missing = [k for k in expected if k not in state and not any(p.match(k) for p in ignored)]
    if missing:
        raise ModelLoadError(f"{onnx_path}: the voice lacks weights the model needs: {missing[:5]}")
    model.load_state_dict(state, strict=False)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Save only what inference uses: the training-only modules stay out of the file.
    model.save_pretrained(out_dir, state_dict=state)
    (out_dir / PIPER_CONFIG_NAME).write_text(json.dumps(piper, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info("converted Piper voice %s into %s", onnx_path.name, out_dir)
    return out_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_conversion(onnx_path: str | Path, cache_dir: str | Path) -> Path:
    """The converted checkpoint for a voice, converting on first use; keyed by the ONNX file's sha256."""
    onnx_path, cache_dir = Path(onnx_path), Path(cache_dir)
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path}: no such Piper voice file")
    key = _sha256(onnx_path)
    # The config (phoneme map, scales) is part of the voice too: a changed .onnx.json converts again.
    config = piper_config_path(onnx_path)
    config_digest = hashlib.sha256(config.read_bytes()).hexdigest()[:8] if config.is_file() else "noconfig"
    target = cache_dir / "piper" / f"{onnx_path.stem}-{key[:16]}-{config_digest}"
    if (target / "config.json").is_file() and (target / PIPER_CONFIG_NAME).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a private folder and rename it into place, so a crash or a concurrent start never
    # leaves a half-written checkpoint that later starts would trust.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        convert_piper_voice(onnx_path, staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
