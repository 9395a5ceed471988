#!/usr/bin/env bash
# GPU check of the AD phase retrieval in one call (issue #11): the objective's
# forward + backward pass against the FFT floor at 3x512^2 and 5x2048^2, the
# paper cases of bench_ad.py at a reduced iteration budget, one 5x2048^2 fit,
# and CPU-vs-CUDA loss and gradient within a float32 rounding bound; one table.
# Details: benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh              # on a machine with CUDA (< 4 min)
#   benchmarks/gpu_check.sh --dry-run    # CPU, small sizes (or GPU_CHECK_DRY_RUN=1)
#
# Exit codes: 0 ok; 1 CUDA differs from CPU beyond float32 rounding; 2 no CUDA
# GPU available (nothing measured); 124 the run exceeded GPU_CHECK_TIMEOUT
# seconds (default 300).
# Python: $PYTHON, else the repository's .venv or /work/venv if present, else python3.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
if [ -z "${PYTHON:-}" ]; then
    for cand in .venv/bin/python ../venv/bin/python /work/venv/bin/python; do
        if [ -x "$cand" ]; then PYTHON="$cand"; break; fi
    done
fi
PYTHON="${PYTHON:-python3}"
exec timeout "${GPU_CHECK_TIMEOUT:-300}" "$PYTHON" "$here/gpu_check.py" "$@"
