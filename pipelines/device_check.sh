#!/usr/bin/env bash
# The prepared device check (pipelines/device_check.py): on a machine with an NVIDIA GPU, a few
# minutes, one JSON and a README-ready table in OUT (default ./device-check). Without a GPU: one
# line saying so, then a CPU smoke of the same code paths at tiny sizes, exit 0.
#   bash pipelines/device_check.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${1:-device-check}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  exec "$PY" pipelines/device_check.py --out "$OUT"
fi
echo "device check: no NVIDIA GPU here (torch.cuda.is_available() is False); running the CPU smoke of the same code paths at tiny sizes"
exec "$PY" pipelines/device_check.py --smoke --out "$OUT"
