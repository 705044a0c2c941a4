#!/usr/bin/env bash
# local.sh -- run distvmc in a single process (no MPI, no Horovod).
#
# Usage:
#   launch/local.sh [CONFIG] [key=value ...] [--out DIR]
#   e.g. launch/local.sh configs/hydrogen.yaml sampler.walkers=2048
#
# All arguments go to `distvmc run` unchanged; the backend is whatever the
# config says (`auto` falls back to single when not under an MPI launcher).
# Environment:
#   DISTVMC_CMD  command that runs distvmc (default: `distvmc` on PATH, else
#                `$PYTHON -m distvmc`), e.g. DISTVMC_CMD="python -m distvmc"
set -euo pipefail

if [[ -n "${DISTVMC_CMD:-}" ]]; then
    read -r -a CMD <<<"$DISTVMC_CMD"
elif command -v distvmc >/dev/null 2>&1; then
    CMD=(distvmc)
else
    CMD=("${PYTHON:-python3}" -m distvmc)
fi

exec "${CMD[@]}" run "$@"
