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


def budget() -> int:
    """The number of threads lstmc may use now: set_num_threads's, else the BLAS pool's size."""
    if _n is not None:
        return _n
    sizes = [c.num_threads for c in _blas().lib_controllers]
    return max(sizes) if sizes else 1


_ctl = None


def _blas():
    global _ctl
    if _ctl is None:
        from threadpoolctl import ThreadpoolController

        _ctl = ThreadpoolController().select(user_api="blas")
    return _ctl


class blas_threads:
    """Context manager: BLAS pools use `n` threads inside, the previous sizes again after.

    Cheap (a library call per pool, no scan of loaded libraries after the first use), so it can
    wrap every kernel call. Used by the numba backend's thread plans (lstmc.backends.numba)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.saved = [(c, c.num_threads) for c in _blas().lib_controllers]
        for c, k in self.saved:
            if k != self.n:
                c.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        for c, k in self.saved:
            if k != self.n:
                c.set_num_threads(k)
