"""Does this machine get more sgemm throughput from more threads? (Through the BLAS lstmc uses.)

    python benchmarks/sgemm_threads.py            # 1..(cores) threads, three shapes, medians of 5

On the 2-vCPU VM of RESULTS.md both vCPUs share one core's vector units: a large sgemm runs at the
same ~190 GFLOP/s on 1 and on 2 threads, so neither BLAS threads nor lstmc's row-chunk thread
plans (LSTMC_NUMBA_PLAN) can speed up GEMM-bound work there.
"""

from __future__ import annotations

import os
import time

import numpy as np
from threadpoolctl import ThreadpoolController

from lstmc.backends.numba.blas import _dot_into

SHAPES = [(1024, 1024, 1024), (6400, 256, 1024), (64, 256, 1024)]   # square; the input GEMM; one step


def rate(M: int, K: int, N: int, reps: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    out = np.empty((M, N), np.float32)
    inner = max(1, int(2e9 // (2 * M * K * N)))       # about a second of work per shape and thread count
    _dot_into(a, b, out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            _dot_into(a, b, out)
        times.append((time.perf_counter() - t0) / inner)
    return 2 * M * K * N / float(np.median(times)) / 1e9


def main() -> None:
    ctl = ThreadpoolController().select(user_api="blas")
    ncpu = os.cpu_count() or 1
    print(f"{ncpu} CPUs; BLAS: {', '.join(f'{c.internal_api} {c.version}' for c in ctl.lib_controllers)}")
    for shape in SHAPES:
        row = []
        for n in range(1, ncpu + 1):
            with ctl.limit(limits=n):
                row.append(f"{n} thr {rate(*shape):.0f}")
        print(f"sgemm {shape[0]}x{shape[1]}x{shape[2]}: " + ", ".join(row) + " GFLOP/s")


if __name__ == "__main__":
    main()
