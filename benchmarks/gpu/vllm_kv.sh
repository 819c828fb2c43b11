#!/usr/bin/env bash
# The vLLM KV connector on a GPU: the end-to-end suite (tests/vllm) and the TTFT benchmark
# (benchmarks.vllm_kv) against vllm==0.33.0, the CUDA build from PyPI, in under 10 minutes.
#
# NOT YET RUN END TO END. The GPU machines lent to this project so far reach no network and
# take at most 64 MiB along per call, where vllm 0.33.0's wheel alone is 336 MB (and it pins a
# torch of its own): the vLLM steps below could not run there. Its first step,
# benchmarks.kv_codec (the connector's block copies in vLLM 0.33's six KV layouts, checked as
# FlashAttention reads them, and timed), needs only torch and did run, on an H100 (README).
# Written for one NVIDIA GPU (H100/H200 class), Python 3.11, root; run from anywhere:
#
#   bash benchmarks/gpu/vllm_kv.sh            # logs and the JSON line in $OUT or .bench/gpu
#
# Environment: either the machine reaches PyPI (the script builds .venv-vllm-gpu with
# vllm==0.33.0, which pins its CUDA torch, then this project beside it with every vLLM
# package pinned), or VLLM_GPU_PYTHON names a python that already has vllm==0.33.0 and this
# project's dependencies (e.g. the deploy image's vLLM stage) and nothing is installed.
# redis-server is needed by the shared-Redis test; without it (and without apt) that test
# is left out, and the summary says so.
#
# Budget (10 min): install ~3 min, block copies ~30 s, suite ~3 min (7 in-process engines),
# benchmark ~2 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
OUT_DIR=${OUT:-.bench/gpu}
mkdir -p "$OUT_DIR"
VENV=${VLLM_GPU_VENV:-.venv-vllm-gpu}
VLLM_VERSION=0.33.0

step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - START))" "$*" | tee -a "$OUT_DIR/summary.txt"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT_DIR/summary.txt"

if [ -n "${VLLM_GPU_PYTHON:-}" ]; then
  PY=$VLLM_GPU_PYTHON
  step "using $PY as it is"
else
  PY=$VENV/bin/python
  if [ ! -f "$VENV/.installed" ]; then
    step "creating $VENV: vllm==$VLLM_VERSION from PyPI, then this project"
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "vllm==$VLLM_VERSION"
    constraints=$(mktemp)
    "$VENV/bin/pip" freeze --exclude-editable | grep -v -e '^-e ' -e ' @ ' >"$constraints"
    "$VENV/bin/pip" install -q -c "$constraints" -e . 'pytest>=8.3' 'pytest-timeout>=2.3'
    rm -f "$constraints"
    touch "$VENV/.installed"
  fi
fi
"$PY" - <<PY | tee -a "$OUT_DIR/summary.txt"
import torch, vllm
assert vllm.__version__.startswith("$VLLM_VERSION"), f"vllm {vllm.__version__}, not $VLLM_VERSION"
assert torch.cuda.is_available(), "torch sees no GPU"
print("vllm", vllm.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))
PY

step "block copies: python -m benchmarks.kv_codec --json (no vLLM needed)"
set +e
timeout 120 "$PY" -m benchmarks.kv_codec --json >"$OUT_DIR/kv_codec.log" 2>&1
codec=$?
set -e
tail -14 "$OUT_DIR/kv_codec.log" | head -13 | tee -a "$OUT_DIR/summary.txt"

deselect=()
if ! command -v redis-server >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) 2>/dev/null || true
fi
if ! command -v redis-server >/dev/null 2>&1; then
  deselect=(--deselect tests/vllm/test_shared.py)
  step "redis-server missing: test (f), two daemons sharing Redis, is left out"
fi

export VLLM_ENABLE_V1_MULTIPROCESSING=0
step "suite: pytest -m vllm tests/vllm (limit 330 s)"
set +e
timeout 330 "$PY" -m pytest -m vllm tests/vllm -p no:cacheprovider --timeout 300 -rA \
  "${deselect[@]}" >"$OUT_DIR/pytest.log" 2>&1
suite=$?
set -e
grep -E '^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed' "$OUT_DIR/pytest.log" | tail -20 \
  | tee -a "$OUT_DIR/summary.txt"

step "benchmark: python -m benchmarks.vllm_kv --json (limit 150 s)"
set +e
timeout 150 "$PY" -m benchmarks.vllm_kv --prompts 3 --json >"$OUT_DIR/bench.log" 2>&1
bench=$?
set -e
grep -v -E ' (INFO|WARNING|DEBUG) ' "$OUT_DIR/bench.log" | tail -25 | tee -a "$OUT_DIR/summary.txt"
tail -1 "$OUT_DIR/bench.log" >"$OUT_DIR/vllm_kv.json" || true

step "done: block copies exit $codec, suite exit $suite, benchmark exit $bench"
[ "$codec" -eq 0 ] && [ "$suite" -eq 0 ] && [ "$bench" -eq 0 ]
