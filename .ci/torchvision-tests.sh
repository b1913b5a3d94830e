#!/usr/bin/env bash
# The torchvision-path equality tests (pytest marker `torchvision`), in a second venv.
#
# The main venv pins torch==2.13.0 (CPU), where torchvision does not import, so the torchvision
# kernels (deform_conv2d, nms) that GPU machines use are checked here against the plain-PyTorch
# reference: torch==2.14.1 + torchvision==0.29.1 come from the machine's local package mirror (a CUDA
# build of about 5.5 GB that runs on the CPU). Idempotent: an existing venv with both is reused.
#
# Usage: .ci/torchvision-tests.sh [VENV]   (default VENV: $TV_VENV or /work/venv-tv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${TV_VENV:-/work/venv-tv}}"
PY="$VENV/bin/python"
# CI's pins (.ci/constraints.txt) less the main venv's torch: this venv pins its own torch below
PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
grep -v '^torch==' .ci/constraints.txt > "$PINS"
if ! "$PY" -c "import torch, torchvision.ops; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$PY" -m pip install -q -c "$PINS" torch==2.14.1 torchvision==0.29.1
fi
# the project's runtime and test deps, with the venv's torch kept (never pulls another torch)
if ! "$PY" -c "import optuna, fvcore, rich, typer, pandas, scipy, matplotlib, tomli_w, tomlkit, PIL, pytest, hypothesis, pytest_timeout" 2>/dev/null; then
  "$PY" -m pip install -q -c "$PINS" torch==2.14.1 torchvision==0.29.1 "optuna>=5.0" "fvcore>=0.1.5" "rich>=13" \
    "typer>=0.12" "pandas>=2.0" "numpy>=1.24" "scipy>=1.10" "matplotlib>=3.7" "tomli-w>=1.0" "Pillow>=9" "tomlkit>=0.12" \
    "pytest>=8" "hypothesis>=6" "pytest-timeout>=2"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PY" -c "import torchvision.ops, featherface_tune.models.blocks.deform as d; assert 'torchvision' in d.BACKENDS, d.BACKENDS"
"$PY" -m pytest -q -m torchvision -p no:cacheprovider tests/training/test_torchvision_paths.py
