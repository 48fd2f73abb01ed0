"""Which Triton this process has: its CPU interpreter or its GPU compiler (fixed when `triton` is
first imported), the TRITON_INTERPRET knob around building a generated module, and the one error
that says what is missing (PyTorch, Triton, a CUDA GPU, or the interpreter variable)."""

from __future__ import annotations

import importlib
import os
import sys
import threading

from ..base import BackendUnavailable

# held while a generated module is built and decorated (TRITON_INTERPRET is process-wide)

_lock = threading.Lock()

PRELUDE = "lstmc.backends.triton.prelude"


def _env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def interpreting() -> bool:
    """Does Triton run kernels on its CPU interpreter? Triton fixes this when it is first imported
    (its own library, tl.zeros, tl.sum, ..., is decorated then), so this asks the imported Triton;
    TRITON_INTERPRET set after `import triton` does not switch it."""
    try:
        import triton.language as tl
    except Exception:  # noqa: BLE001
        return _env_interpret()
    kind = type(getattr(tl, "zeros", None)).__name__
    if kind in ("InterpretedFunction", "JITFunction"):
        return kind == "InterpretedFunction"
    return bool(triton_knob_interpret())


def asked_interpreting() -> bool:
    """`interpreting()` as the package `lstmc.backends.triton` exports it: the backend asks through
    this, so that replacing the package's name (tests play a GPU process that way) is heard."""
    return getattr(sys.modules.get(__package__), "interpreting", interpreting)()


def triton_knob_interpret() -> bool:
    try:
        import triton

        return bool(triton.knobs.runtime.interpret)
    except Exception:  # noqa: BLE001
        return _env_interpret()


class _InterpretEnv:
    """TRITON_INTERPRET as Triton was imported with, while a generated module is decorated: its
    kernels, and the prelude's functions they call, must be interpreted exactly when Triton's own
    library functions are. A prelude decorated the other way (imported while the variable said
    otherwise) is decorated again."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.prev = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if self.on else "0"
        prelude = sys.modules.get(PRELUDE)
        if prelude is not None and (type(prelude._dot).__name__ == "InterpretedFunction") != self.on:
            importlib.reload(prelude)

    def __exit__(self, *exc):
        if self.prev is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = self.prev


def environment():
    """(torch, triton, device, interpreting), or a RuntimeError saying what is missing and what to do."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"the triton backend needs PyTorch, which failed to import ({type(e).__name__}: {e}); "
                           f"install torch, or use backend='numba' (CPU) or 'reference'") from None
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"the triton backend needs Triton, which failed to import ({type(e).__name__}: {e}); "
                           f"install it (pip install triton; Linux x86-64/aarch64), or use backend='numba' (CPU) "
                           f"or 'torch'") from None
    if asked_interpreting():
        if not triton_knob_interpret():
            raise RuntimeError("Triton was first imported with TRITON_INTERPRET=1 (its CPU interpreter), and the "
                               "interpreter needs the variable to stay set, but it is unset now: leave "
                               "TRITON_INTERPRET=1 in the environment for the whole process")
        return torch, triton, "cpu", True
    if torch.cuda.is_available():
        return torch, triton, "cuda", False
    if _env_interpret():
        raise RuntimeError("TRITON_INTERPRET=1 is set, but only after `import triton` ran: Triton chooses between "
                           "its CPU interpreter and the GPU compiler when it is first imported. Set it before "
                           "Python starts (TRITON_INTERPRET=1 python ...) or before the first `import triton`.")
    raise BackendUnavailable("the triton backend needs a CUDA GPU, and torch.cuda.is_available() is False here. "
                       "To run its kernels on the CPU (slowly; meant for tests) start Python with "
                       "TRITON_INTERPRET=1 in the environment; otherwise use backend='numba' on the CPU.")
