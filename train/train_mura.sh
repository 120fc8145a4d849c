#!/usr/bin/env bash
# The MURA method in one command: ./train/train_mura.sh /data/MURA-v1.1 [OUT] [key=value ...]
# Checks the data, trains the four members, builds and evaluates the ensemble, writes the model card.
# Run again with the same OUT to resume. See python -m train.train_mura --help.
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 /path/to/MURA-v1.1 [OUT] [key=value ...]" >&2; exit 2; fi
data="$1"; shift
out="mura_run"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then out="$1"; shift; fi
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec python -m train.train_mura "$data" "$@" --out "$out"
