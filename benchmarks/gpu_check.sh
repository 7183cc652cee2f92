#!/usr/bin/env bash
# GPU validation (fits a 10-minute run on one GPU): dense vs reforward vs stale on
# ResNet-50 at 224x224, images/s and NVML joules per epoch, ratios vs the compute model,
# and an NVML-counter vs power-integration cross-check. Needs CUDA and nvidia-ml-py.
#   bash benchmarks/gpu_check.sh [extra args for benchmarks/gpu_check.py]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader || true
out="${OUT:-benchmarks/results}/gpu_check.json"
exec "$PY" benchmarks/gpu_check.py --out "$out" "$@"
