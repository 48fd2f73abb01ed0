"""Compile time against the length of a cell (docs/compile_time.md): lowering must stay near-linear.

    pytest benchmarks/test_compile_time.py                     # lower() at 100/500/1000/1990 statements
    LSTMC_BENCH_NUMBA_N=100,500 pytest benchmarks/test_compile_time.py -k numba    # + cold numba builds

The cells come from tests/test_lower.py's `long_cell` (gates, staged products, elementwise work
reusing earlier intermediates), so the test that counts lowering's work and this timing see the
same shapes. Every round lowers a cell with fresh parameter names: simplification is memoised per
IR node for the life of the process, and a repeated cell would time the memo, not the compiler.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lstmc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_lower import long_cell  # noqa: E402  (one generator for the test, this benchmark and the docs)

ROUNDS = int(os.environ.get("LSTMC_BENCH_ROUNDS", "3"))
_fresh = itertools.count()


@pytest.mark.parametrize("n", [100, 500, 1000, 1990])
def test_lower_time(benchmark, n):
    benchmark.group = "compile-time-lower"
    benchmark.extra_info["statements"] = n

    def setup():
        return (lstmc.parse(long_cell(n, tag=f"b{next(_fresh)}")),), {}

    benchmark.pedantic(lstmc.lower, setup=setup, rounds=ROUNDS, warmup_rounds=0, iterations=1)


_NUMBA = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_lower import long_cell
import lstmc
text = long_cell(int(sys.argv[1]))
t = time.perf_counter()
prog = lstmc.lower(lstmc.parse(text))
t_lower = time.perf_counter() - t
t = time.perf_counter()
lstmc.compile(text, backend="numba", dtype="float32")
print(t_lower, time.perf_counter() - t)
"""


@pytest.mark.parametrize("n", [int(v) for v in os.environ.get("LSTMC_BENCH_NUMBA_N", "").split(",") if v])
def test_numba_build_time(benchmark, n, tmp_path):
    """A cold numba build (empty cache, fresh process): minutes per hundred statements, so opt-in."""
    benchmark.group = "compile-time-numba"
    env = os.environ | {"LSTMC_CACHE_DIR": str(tmp_path)}
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    out = {}

    def build():
        res = subprocess.run([sys.executable, "-c", _NUMBA, str(n), tests], capture_output=True, text=True,
                             env=env, check=True)
        out["lower_s"], out["total_s"] = map(float, res.stdout.split())

    benchmark.pedantic(build, rounds=1, iterations=1)
    benchmark.extra_info.update(statements=n, **out)
