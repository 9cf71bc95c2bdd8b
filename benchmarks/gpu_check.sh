#!/usr/bin/env bash
# The GPU check, prepared to run in one call on a machine with no network (see docs in the script).
# Here:  python benchmarks/prepare_gpu_bundle.py      (builds .gpu/ and .whl/, both git-ignored)
# There: bash benchmarks/gpu_check.sh [gpu_bench.py options]   (carry .gpu and .whl)
# Prints exactness, raw backend throughput by batch size and precision, and the HTTP service under load.
#   --compare [compare.py options]: Chorus beside raw, naive FastAPI and LitServe on the GPU (5.4 minutes on an H200
#       for 7 systems; ~8 estimated with the 10 now listed: CUDA graphs, the model in a process of its own, 2
#       processes sharing one model process, with and without the graphs),
#       writing gpu.json, gpu.md and the plots into $OUT (commit them under benchmarks/results/).
#   --families [gpu_families.py options]: every served family at full size.
#   --host [loop_cost.py options]: the host side alone (handoff_cost.py, channel_cost.py, loop_cost.py), ~1.5 minutes.
#   --diag [gpu_diag.py options]: time and memory per stage by batch size; --caps compares cuDNN workspace caps;
#       --graphs: eager against CHORUS_CUDA_GRAPHS, batch by batch (wall and model-thread CPU time, max |diff|).
#   --tests [pytest options]: the tests that need CUDA (batching exactness, CPU agreement, bf16, CUDA graphs), ~1 minute.
#   --live [chorus bench options]: voice agents over the live WebSocket at 16-512 real-time streams (~2.5 min, estimated),
#       writing gpu-live.json and gpu-live.md into $OUT (CHORUS_DTYPE and the like pass through to the server).
set -uo pipefail
cd "$(dirname "$0")/.."
SITE="${CHORUS_BUNDLE_SITE:-/tmp/site}"  # where the carried wheels are installed
unset CHORUS_BUNDLE_SITE  # the server refuses CHORUS_* variables it does not know
if compgen -G ".whl/*.whl" >/dev/null; then
  if [ ! -e "$SITE/.chorus-installed" ]; then  # once per machine: later calls of this script reuse it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || exit 1
    touch "$SITE/.chorus-installed"
  fi
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
# .gpu/piper holds espeak's bridge as a plain folder, found as the namespace package "piper".
export PYTHONPATH="$PWD:$PWD/.gpu:${PYTHONPATH:-}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
if [ "${1:-}" = "--diag" ]; then shift; python3 benchmarks/gpu_diag.py "$@"; exit; fi
if [ "${1:-}" = "--tests" ]; then
  shift  # the CUDA-only tests, and the CPU ones of the same files (the graphs' plumbing), on this machine
  python3 -m pytest -q -p no:cacheprovider tests/unit/inference/test_cuda.py tests/unit/inference/test_cuda_graphs.py \
    tests/unit/inference/test_cuda_memory.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_tests.log"
  exit
fi
if [ "${1:-}" = "--compare" ]; then
  shift
  python3 benchmarks/compare.py --name gpu --model "$PWD/.gpu/voice" --results-dir "${OUT:-/tmp}" \
    --systems raw,chorus,chorus-bf16,naive,litserve,chorus-stream \
    --variant chorus-bf16-graphs:CHORUS_DTYPE=bf16,CHORUS_CUDA_GRAPHS=1 \
    --variant chorus-bf16-mp:CHORUS_DTYPE=bf16,CHORUS_MODEL_PROCESS=1 \
    --variant chorus-bf16-p2-mp:CHORUS_DTYPE=bf16,CHORUS_PROCESSES=2,CHORUS_MODEL_PROCESS=1 \
    --variant chorus-bf16-graphs-p2-mp:CHORUS_DTYPE=bf16,CHORUS_CUDA_GRAPHS=1,CHORUS_PROCESSES=2,CHORUS_MODEL_PROCESS=1 \
    --concurrency 1,8,32,64 --duration 6 --rounds 2 --rate 0 --raw-max-batch 32 "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_compare.log"
  exit
fi
if [ "${1:-}" = "--live" ]; then
  # Voice agents over the live WebSocket, played back in real time: how many real-time streams one GPU holds.
  shift
  port=8765
  PORT=$port CHORUS_HOST=127.0.0.1 CHORUS_MODEL="${CHORUS_MODEL:-$PWD/.gpu/voice}" CHORUS_LOG_LEVEL=WARNING \
    python3 -c "from service.cli import main; raise SystemExit(main(['serve']))" >/tmp/gpu_live_server.log 2>&1 &  # logs in /tmp: $OUT brings back 8 files
  server=$!
  python3 - "$port" <<'PING'  # until GET /ping says 200 (no curl needed), at most 2 minutes
import sys, time, urllib.request
for _ in range(240):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ping", timeout=2).status == 200:
            break
    except OSError:
        pass
    time.sleep(0.5)
PING
  python3 -c "from service.bench import main; raise SystemExit(main())" "http://127.0.0.1:$port" --live --quiet \
    --system chorus-live --concurrency 16,64,256,512 --duration 30 --warmup 5 --out "${OUT:-/tmp}/gpu-live.json" "$@" \
    2>&1 | tee /tmp/gpu_live.log
  kill -TERM $server; wait $server
  exit
fi
if [ "${1:-}" = "--host" ]; then
  # The host side alone, no GPU work (~1.5 minutes): what the model thread's hand-off to a busy event loop costs,
  # bringing a batch's audio back from a model process, and what a request costs the loop (the forward pass
  # replaced by silence), on this machine's CPU.
  shift
  python3 benchmarks/handoff_cost.py --rows 64 --rounds 40 2>/dev/null | tee "${OUT:-/tmp}/gpu_host.log"
  python3 benchmarks/channel_cost.py --repeats 2 2>/dev/null | tee -a "${OUT:-/tmp}/gpu_host.log"
  python3 benchmarks/loop_cost.py --model "$PWD/.gpu/voice" --runs 2 "$@" 2>/dev/null | tee -a "${OUT:-/tmp}/gpu_host.log"
  exit
fi
if [ "${1:-}" = "--families" ]; then shift; python3 benchmarks/gpu_families.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_families.log"; exit; fi
python3 benchmarks/gpu_bench.py "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
