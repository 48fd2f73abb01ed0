"""lstmc owns the CPU thread budget: BLAS pools (threadpoolctl) and Numba's pool together.

On few cores, two thread pools that are both busy-waiting slow each other down (docs/design.md, "Performance notes"), so
lstmc sets one budget for both: `lstmc.set_num_threads(n)`. The default is left to the libraries
(all cores).
"""

from __future__ import annotations

import os
import threading

_limits = None
_n = None


def set_num_threads(n: int) -> None:
    """Use at most `n` threads for lstmc's CPU work (BLAS GEMMs and Numba kernels)."""
    global _limits, _n, _saved
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads needs a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    _blas()                            # SciPy's OpenBLAS (the one Numba calls) is loaded and controlled
    with _lock:
        _release_control(force=True)   # threadpoolctl >= 3.8 lets one thread resize OpenBLAS: this one
        _limits = threadpool_limits(limits=n, user_api="blas")   # stays in force until changed
        _release_control()
        if _active:                    # a thread plan is running: it restores to the new budget
            _saved = [(c, n) for c, _ in _saved]
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _n = n


def get_num_threads() -> int | None:
    """The budget set by set_num_threads, or None when the libraries' defaults are in force."""
    return _n


def budget() -> int:
    """The number of threads lstmc may use: set_num_threads's, else the BLAS pool's size as lstmc
    first found it (not the live size, which a thread plan may have lowered for a while)."""
    if _n is not None:
        return _n
    _blas()
    return _start


_ctl = None
_start = 1
_lock = threading.Lock()
_active = 0          # blas_threads contexts open now, in any thread
_saved: list = []    # pool sizes to restore when the last one closes


def _blas():
    global _ctl, _start
    if _ctl is None:
        import scipy.linalg.cython_blas  # noqa: F401 - load the OpenBLAS that Numba's np.dot calls first
        from threadpoolctl import ThreadpoolController

        _ctl = ThreadpoolController().select(user_api="blas")
        _start = max([c.num_threads for c in _ctl.lib_controllers] or [1])
    return _ctl


def _release_control(force: bool = False) -> None:
    """threadpoolctl >= 3.8 lets only the first thread that resizes OpenBLAS resize it again, as long
    as that thread lives; give that role up so that the next resize, from any thread, takes effect."""
    for c in _blas().lib_controllers:
        clear = getattr(type(c), "clear_controlling_thread", None)
        if clear is not None:
            clear(force=force)


class blas_threads:
    """Context manager: BLAS pools use `n` threads inside, the previous sizes again after.

    Process-wide, as OpenBLAS's pool is: the first context to open sets the size and the last to
    close restores it; a context opened meanwhile by another thread keeps the size in force (only
    speed, never results, depends on it). Cheap enough to wrap every kernel call. Used by the numba
    backend's thread plans (lstmc.backends.numba)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        global _active, _saved
        ctl = _blas()
        with _lock:
            if _active == 0:
                _saved = [(c, c.num_threads) for c in ctl.lib_controllers]
                if any(k != self.n for _, k in _saved):
                    _release_control(force=True)
                    for c, k in _saved:
                        if k != self.n:
                            c.set_num_threads(self.n)
                    _release_control()
            _active += 1
        return self

    def __exit__(self, *exc):
        global _active
        with _lock:
            _active -= 1
            if _active == 0 and any(c.num_threads != k for c, k in _saved):
                _release_control(force=True)
                for c, k in _saved:
                    c.set_num_threads(k)
                _release_control()


def _after_fork_in_child() -> None:
    global _lock, _active
    _lock, _active = threading.Lock(), 0


os.register_at_fork(after_in_child=_after_fork_in_child)
