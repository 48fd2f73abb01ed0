"""The math every float64 numba kernel calls: the activations (`_tanh`, `_sigmoid`, `_relu`, `_step`,
`_sign`, `_softplus`, `_logsigmoid`; `_exp`, `_log`; the selects `_max`, `_min`, `_where` and the
comparison masks `_gt`, `_ge`, `_lt`, `_le`; `_abs`, `_sqrt` from prelude.py) and the in-kernel products
of steps with at most SMALL_ROWS rows (`_mm_nt`, `_mm_nn`), under the names prelude_f32.py uses.
float64 kernels use libm and match the reference to rounding. Generated float64 modules import these
(`from lstmc.backends.numba.prelude_f64 import ...`); they are `inline="always"`, so Numba inlines
them into the kernels. In GENERATOR_FILES (lstmc/backends/cache.py), as prelude_f32.py is.
"""

from __future__ import annotations

import math

from numba import njit

from .options import JIT
from .prelude import SMALL_ROWS, _abs, _max, _min, _sqrt, _where  # the same for both dtypes

# what a generated module imports (render.prelude_names; tests/test_tables.py checks they agree)
__all__ = ["SMALL_ROWS", "_abs", "_exp", "_ge", "_gt", "_le", "_log", "_logsigmoid", "_lt", "_max", "_min",
           "_mm_nn", "_mm_nt", "_relu", "_sigmoid", "_sign", "_softplus", "_sqrt", "_step", "_tanh", "_where"]


# float64: libm, matching the reference to rounding (prelude_f32.py has arithmetic-only exp/log).
@njit(inline="always", **JIT)
def _exp(x):
    return math.exp(x)


@njit(inline="always", **JIT)
def _log(x):
    return math.log(x)


@njit(inline="always", **JIT)
def _tanh(x):
    return math.tanh(x)


@njit(inline="always", **JIT)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(inline="always", **JIT)
def _relu(x):
    return 0.0 if x < 0.0 else x          # NaN stays NaN, as in the reference


@njit(inline="always", **JIT)
def _step(x):
    return 1.0 if x > 0.0 else 0.0


@njit(inline="always", **JIT)
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)   # sign(NaN) is NaN, sign(0) is 0


@njit(inline="always", **JIT)
def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(inline="always", **JIT)
def _logsigmoid(x):
    return -_softplus(-x)          # log(sigmoid(x)), stable for large |x|


@njit(inline="always", **JIT)
def _gt(a, b):
    return 1.0 if a > b else 0.0


@njit(inline="always", **JIT)
def _ge(a, b):
    return 1.0 if a >= b else 0.0


@njit(inline="always", **JIT)
def _lt(a, b):
    return 1.0 if a < b else 0.0


@njit(inline="always", **JIT)
def _le(a, b):
    return 1.0 if a <= b else 0.0


# The in-kernel products (prelude_f32.py has the same code, with float32 zeros: tests/test_tables.py).
@njit(inline="always", **JIT)
def _mm_nt(a, W, out):
    # out = a @ W.T: dot products over contiguous rows of W, four output units at a time (each
    # load of a serves four products)
    n = W.shape[0]
    n4 = n - n % 4
    for b in range(a.shape[0]):
        for k in range(0, n4, 4):
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for j in range(a.shape[1]):
                v = a[b, j]
                s0 += v * W[k, j]
                s1 += v * W[k + 1, j]
                s2 += v * W[k + 2, j]
                s3 += v * W[k + 3, j]
            out[b, k] = s0
            out[b, k + 1] = s1
            out[b, k + 2] = s2
            out[b, k + 3] = s3
        for k in range(n4, n):
            acc = 0.0
            for j in range(a.shape[1]):
                acc += a[b, j] * W[k, j]
            out[b, k] = acc


@njit(inline="always", **JIT)
def _mm_nn(a, W, out):
    # out = a @ W: rows of W scaled and added, contiguous along the output
    for b in range(a.shape[0]):
        for j in range(W.shape[1]):
            out[b, j] = 0.0
        for k in range(W.shape[0]):
            s = a[b, k]
            for j in range(W.shape[1]):
                out[b, j] += s * W[k, j]
