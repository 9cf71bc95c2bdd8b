"""The `litserve` peer: LitServe with its own batching (max_batch_size, batch_timeout) on the same model.

    python benchmarks/peers/litserve_server.py --port 8002 [--max-batch-size 16] [--batch-timeout 0.01]

Serves ``POST /generate`` (``{"text"}`` → WAV) and LitServe's ``GET /health``; ``/ping`` is added for
the harness's readiness check. The model runs where the naive peer's does (CUDA when present,
``common.device()``), and LitServe is told that accelerator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import litserve as ls
from fastapi import Response

from benchmarks.peers.common import device, load_model, synthesize_batch, token_ids, wav


class VitsAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model

    def setup(self, device: str) -> None:
        self.vits, self.frontend, self.rate = load_model(self.model_name)
        synthesize_batch(self.vits, [token_ids(self.frontend, "Warm up.")])

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # unannotated: LitServe reads a JSON body
        return token_ids(self.frontend, request["text"])

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, sequences: list[Any]) -> list[Any]:
        return synthesize_batch(self.vits, sequences)

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, audio: Any) -> Response:
        return Response(wav(audio, self.rate), media_type="audio/wav")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()
    api = VitsAPI(args.model, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout,
                  api_path="/generate")  # fmt: skip
    server = ls.LitServer(api, accelerator=device().type, devices=1, workers_per_device=1, healthcheck_path="/ping")
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False, log_level="warning")
