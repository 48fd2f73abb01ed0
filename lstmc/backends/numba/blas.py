"""Matrix products for the numba backend, all through the one BLAS that Numba's np.dot calls
(SciPy's OpenBLAS). Sending every GEMM of a call to the same thread pool matters on few cores: two
OpenBLAS pools (NumPy's and SciPy's) alternating spin against each other (measured here: the
per-step GEMMs ran 3x slower right after a NumPy GEMM)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..sequence import NumpyOps


@njit(cache=True, nogil=True)
def _dot_into(a, b, out):
    np.dot(a, b, out)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (2-D, C- or F-contiguous operands, e.g. transposed views) into `out`."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    _dot_into(a, b, out)
    return out


class BlasOps(NumpyOps):
    """NumPy's array operations with every product through `matmul` (the sequence module's ops for
    the numba backend); gradients are returned as contiguous copies of their slices."""
    name = "numba"

    def mm(self, a, b, out=None):
        return matmul(a, b, out)

    def grad(self, g):
        return np.ascontiguousarray(g)
