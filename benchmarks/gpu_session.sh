#!/usr/bin/env bash
# One call on a lent GPU machine (see docs/triton.md "Status"): set up, run the GPU tests, then the
# Triton benchmark. Usage: bash benchmarks/gpu_session.sh [setup|tests|bench|quick|all] [extra bench args]
# (setup: only install and print the environment; later commands in the same call need
#  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LSTMC_CACHE_DIR=/tmp/lstmc-cache)
# The machine's python3 already has torch/triton/numba/scipy; lark travels as a wheel in .whl/.
set -u
what=${1:-all}; shift || true
OUT=${OUT:-gpuout}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 LSTMC_CACHE_DIR=/tmp/lstmc-cache
unset TRITON_INTERPRET
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton, numba, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
# the tests are mostly Triton compile time (CPU): spread them over 8 processes where pytest-xdist is there
par=""; python3 -c "import xdist" 2>/dev/null && par="-n 8"
if [[ $what == tests || $what == all ]]; then
  timeout 330 python3 -m pytest -q -p no:cacheprovider $par --durations=10 tests/test_triton.py 2>&1 | tee "$OUT/tests_triton.log" | tail -40
  timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ --ignore tests/test_triton.py 2>&1 | tee "$OUT/tests_gpu_marked.log" | tail -15
fi
if [[ $what == quick ]]; then
  timeout 280 python3 benchmarks/bench_triton.py --quick "$@" 2>&1 | tee "$OUT/bench_quick.log" | tail -40
fi
if [[ $what == bench || $what == all ]]; then
  timeout 560 python3 benchmarks/bench_triton.py "$@" 2>&1 | tee "$OUT/bench.log" | tail -40
fi
