"""Thread plans of the numba backend: how a call's time loops use the thread budget (Plan,
LSTMC_NUMBA_PLAN's parse_plan), the batch-row ranges a plan splits a call into (row_ranges), and
running a kernel over them at once (run_chunks, on this process's executor).

Which plan a cell uses (the default, or "auto"'s measurement) is NumbaCell.plan (cell.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import os
import threading

from ...threads import blas_threads

_lock = threading.Lock()
MIN_ROWS = 8             # fewest batch rows worth a thread of their own


@dataclass(frozen=True)
class Plan:
    """How a call's time loops use the thread budget (one parallel scheme at a time: docs/design.md).

    chunks  disjoint batch-row ranges run at once, one thread each (rows never interact, so each
            runs the whole time loop with its own step GEMMs: no synchronisation per step)
    blas    BLAS threads of each step GEMM inside the time loop (the whole-sequence GEMMs outside
            it always get the full budget)
    """
    chunks: int
    blas: int


def row_ranges(B: int, chunks: int) -> list[tuple[int, int]]:
    edges = [B * c // chunks for c in range(chunks + 1)]
    return [(edges[c], edges[c + 1]) for c in range(chunks)]


def parse_plan(text: str):
    """LSTMC_NUMBA_PLAN: "default" (every step GEMM on the whole budget, one row range: bitwise
    reproducible across processes), "auto" (measured once per shape, like cudnn.benchmark: the
    fastest plan on this machine, but which one wins may differ between processes, and plans
    differ in the last bits) or "CHUNKS,BLAS", e.g. "2,1"."""
    t = text.strip().lower()
    if t in ("", "default", "auto"):
        return t or "default"
    try:
        c, k = (int(v) for v in t.split(","))
        if c < 1 or k < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"LSTMC_NUMBA_PLAN={text!r}: use 'default', 'auto' or 'CHUNKS,BLAS_THREADS' with "
                         f"positive integers, e.g. '2,1' (two batch-row chunks, one BLAS thread each)") from None
    return Plan(c, k)


_pool = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="lstmc")
    return _pool


def _after_fork_in_child() -> None:
    global _pool, _lock
    _pool, _lock = None, threading.Lock()   # the parent's pool threads do not exist in a forked child


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_chunks(fn, plan: Plan, B: int, args_for) -> None:
    """fn(*args_for(c), b0, b1) for every row chunk c, chunk 0 on this thread, the others on the
    pool (the kernels release the GIL); waits for all of them before raising any error."""
    ranges = row_ranges(B, min(plan.chunks, max(B, 1)))
    with blas_threads(plan.blas):
        if len(ranges) == 1:
            fn(*args_for(0), 0, B)
            return
        futures = [_executor().submit(fn, *args_for(c), b0, b1) for c, (b0, b1) in enumerate(ranges) if c]
        try:
            fn(*args_for(0), *ranges[0])
        finally:
            errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e
