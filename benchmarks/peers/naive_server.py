"""The `naive` peer: FastAPI + uvicorn + the transformers model behind a lock, one request at a time.

python benchmarks/peers/naive_server.py --port 8001 [--model DIR_OR_ONNX]
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import uvicorn
from fastapi import FastAPI, Request, Response

from benchmarks.peers.common import load_model, synthesize_one, token_ids, wav


def build(model: str | None) -> FastAPI:
    vits, frontend, rate = load_model(model)
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/generate")
    async def generate(request: Request) -> Response:
        text = (await request.json())["text"]
        ids = token_ids(frontend, text)

        def run() -> bytes:
            with lock:
                return wav(synthesize_one(vits, ids), rate)

        from starlette.concurrency import run_in_threadpool

        return Response(await run_in_threadpool(run), media_type="audio/wav")

    synthesize_one(vits, token_ids(frontend, "Warm up."))
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")
