#!/usr/bin/env bash
# One command for issue 12's GPU benchmark (benchmarks/gpu_suite.py): installs the carried wheels (.whl, made by
# benchmarks/gpu_prepare.sh) where these packages are missing, then runs the suite; JSON and log go to $OUT (else ./bench-out).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import pydantic, jsonlines, lm_eval" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
OUT_DIR=${OUT:-bench-out}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT_DIR/gpu.txt"
PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True} PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --out "$OUT_DIR" "$@"
