"""The compiler guard: lstmc's kernels compile with LLVM's SLP vectorizer off (a wrapper of Triton's
`llvm.optimize_module`, switched on by a thread-local flag around lstmc's own launches only)."""

from __future__ import annotations

import os
import threading

_slp = threading.local()


def _install_slp_guard() -> None:
    """Compile lstmc's kernels with LLVM's SLP vectorizer off.

    LLVM's SLP vectorizer in Triton 3.9 hits crash-on-valid assertions (llvm-project issues #220475,
    #218850, #223139: "must be scheduled at this point") on some float32 persistent kernels for
    sm_90 (found compiling every generated kernel ahead of time: lstm and a multiplicative LSTM,
    bwd_persistent). An LLVM assertion aborts the Python process, so it cannot be caught. Triton
    already turns SLP off for sm_80 (make_llir's disable_slp_vectorizer); this wrapper asks for the
    same while one of lstmc's launches compiles (a thread-local flag), and leaves every other
    compilation alone. Set LSTMC_TRITON_SLP=1 to keep SLP on.
    """
    if os.environ.get("LSTMC_TRITON_SLP", "0") == "1":
        return
    try:
        from triton._C.libtriton import llvm
    except Exception:  # noqa: BLE001 - another Triton layout: nothing to guard
        return
    orig = getattr(llvm, "optimize_module", None)
    if orig is None or getattr(orig, "_lstmc_guard", False):
        return

    def optimize_module(*args, **kwargs):
        if getattr(_slp, "off", False) and not getattr(optimize_module, "_no_kwarg", False):
            try:
                return orig(*args, **{**kwargs, "disable_slp_vectorizer": True})
            except TypeError as e:       # an older Triton without the flag: compile as it would
                if "disable_slp_vectorizer" not in str(e) and "keyword" not in str(e):
                    raise
                optimize_module._no_kwarg = True
        return orig(*args, **kwargs)

    optimize_module._lstmc_guard = True
    llvm.optimize_module = optimize_module


class _NoSLP:
    """While active (on this thread), compilations that reach the guard run without SLP."""

    def __enter__(self):
        self.prev = getattr(_slp, "off", False)
        _slp.off = True

    def __exit__(self, *exc):
        _slp.off = self.prev
