"""lstmc owns the CPU thread budget: BLAS pools (threadpoolctl) and Numba's pool together.

On few cores, two thread pools that are both busy-waiting slow each other down (DESIGN.md §7), so
lstmc sets one budget for both: `lstmc.set_num_threads(n)`. The default is left to the libraries
(all cores).
"""

from __future__ import annotations

_limits = None
_n = None


def set_num_threads(n: int) -> None:
    """Use at most `n` threads for lstmc's CPU work (BLAS GEMMs and Numba kernels)."""
    global _limits, _n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads needs a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=n, user_api="blas")   # stays in force until changed
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _n = n


def get_num_threads() -> int | None:
    """The budget set by set_num_threads, or None when the libraries' defaults are in force."""
    return _n
