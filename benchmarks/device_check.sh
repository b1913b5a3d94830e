#!/usr/bin/env bash
# See device_check.py: GPU vs CPU train/predict images/s; on a CPU-only machine the CPU figures, exit 0.
exec python3 "$(dirname "$0")/device_check.py" "$@"
