"""The math every float32 numba kernel calls: the activations (`_tanh`, `_sigmoid`, `_relu`, `_step`,
`_sign`, `_softplus`, `_logsigmoid`; the selects `_max`, `_min`, `_where` and the comparison masks
`_gt`, `_ge`, `_lt`, `_le`; `_abs`, `_exp`, `_log`, `_sqrt` from prelude.py) and the in-kernel products
of steps with at most SMALL_ROWS rows (`_mm_nt`, `_mm_nn`). Generated float32 modules import them
(`from lstmc.backends.numba.prelude_f32 import SMALL_ROWS, _abs, ...`: render.prelude_names); they
are `inline="always"`, so Numba inlines them into the kernels and the fused loops see their
arithmetic. prelude_f64.py is the float64 set, under the same names.

tanh/sigmoid are arithmetic-only (a rational approximation, |error| < 4e-7 and < 3e-7
respectively, tested) so the j-loop vectorises; past the point where float32 rounds the true value
to +-1 they return exactly +-1 (as libm does), so a saturated gate's slope is exactly 0 and float32
gradients do not grow with |x|. Every literal is `np.float32(...)` so nothing silently promotes to
float64.

Numba does not notice when an imported module changes: this file is in GENERATOR_FILES
(lstmc/backends/cache.py), so a change here renames every generated module (a fresh Numba cache).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .options import JIT
from .prelude import SMALL_ROWS, _abs, _exp, _log, _max, _min, _sqrt, _where  # the same for both dtypes

# what a generated module imports (render.prelude_names; tests/test_tables.py checks they agree)
__all__ = ["SMALL_ROWS", "_abs", "_exp", "_ge", "_gt", "_le", "_log", "_logsigmoid", "_lt", "_max", "_min",
           "_mm_nn", "_mm_nt", "_relu", "_sigmoid", "_sign", "_softplus", "_sqrt", "_step", "_tanh", "_where"]

# Rational minimax approximation of tanh on [-7.9053, 7.9053] (the coefficients Eigen uses for float):
# tanh(x) ~ x * P(x^2) / Q(x^2); beyond the clamp tanh rounds to +-1 in float32.
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
TANH_CLAMP = 7.90531110763549805
# The smallest float32 x whose correctly rounded tanh(x) / sigmoid(x) is 1.0 (tests/test_numerics.py
# recomputes both). The approximations alone top out at 1 - 2.4e-7 / 1 - 1.2e-7, whose "slope"
# 1 - t^2 (or s(1 - s)) never reaches 0: weight gradients then grow with |x| at saturated gates.
TANH_ONE = 9.010913848876953
SIGMOID_ONE = 17.32868003845215
TANH_MAX_ERROR = 4e-7       # measured 3.4e-7 over a 2M-point grid of [-12, 12]; tests/test_numba.py
SIGMOID_MAX_ERROR = 3e-7    # measured 2.3e-7

# (Numba freezes module globals when it compiles a kernel: each np.float32(TANH_P[k]) below is a
# float32 constant in the machine code, the same number the generated source once spelled out.)


# float32: arithmetic-only approximations (no libm call), so loops calling them vectorise.
@njit(inline="always", **JIT)
def _tanh(x):
    # |error| < TANH_MAX_ERROR over all float32 inputs (rational approximation, Eigen's coefficients)
    a = min(max(x, np.float32(-TANH_CLAMP)), np.float32(TANH_CLAMP))
    a2 = a * a
    p = np.float32(TANH_P[0])                       # Horner: P(a2) and Q(a2)
    p = p * a2 + np.float32(TANH_P[1])
    p = p * a2 + np.float32(TANH_P[2])
    p = p * a2 + np.float32(TANH_P[3])
    p = p * a2 + np.float32(TANH_P[4])
    p = p * a2 + np.float32(TANH_P[5])
    p = p * a2 + np.float32(TANH_P[6])
    q = np.float32(TANH_Q[0])
    q = q * a2 + np.float32(TANH_Q[1])
    q = q * a2 + np.float32(TANH_Q[2])
    q = q * a2 + np.float32(TANH_Q[3])
    r = a * p / q
    # exactly +-1 where float32 tanh rounds there (selects: the loop stays vectorised)
    r = np.float32(1.0) if x >= np.float32(TANH_ONE) else r
    return np.float32(-1.0) if x <= np.float32(-TANH_ONE) else r


@njit(inline="always", **JIT)
def _sigmoid(x):
    # sigmoid(x) = (1 + tanh(x / 2)) / 2; |error| < SIGMOID_MAX_ERROR; exactly 1 where float32 rounds there
    s = np.float32(0.5) * _tanh(np.float32(0.5) * x) + np.float32(0.5)
    return np.float32(1.0) if x >= np.float32(SIGMOID_ONE) else s


@njit(inline="always", **JIT)
def _relu(x):
    return np.float32(0.0) if x < np.float32(0.0) else x          # NaN stays NaN, as in the reference


@njit(inline="always", **JIT)
def _step(x):
    return np.float32(1.0) if x > np.float32(0.0) else np.float32(0.0)


@njit(inline="always", **JIT)
def _sign(x):
    return np.float32(1.0) if x > np.float32(0.0) else (np.float32(-1.0) if x < np.float32(0.0) else x * np.float32(0.0))   # sign(NaN) is NaN, sign(0) is 0


@njit(inline="always", **JIT)
def _softplus(x):
    return max(x, np.float32(0.0)) + math.log1p(math.exp(-abs(x)))


@njit(inline="always", **JIT)
def _logsigmoid(x):
    return -_softplus(-x)          # log(sigmoid(x)), stable for large |x|


@njit(inline="always", **JIT)
def _gt(a, b):
    return np.float32(1.0) if a > b else np.float32(0.0)


@njit(inline="always", **JIT)
def _ge(a, b):
    return np.float32(1.0) if a >= b else np.float32(0.0)


@njit(inline="always", **JIT)
def _lt(a, b):
    return np.float32(1.0) if a < b else np.float32(0.0)


@njit(inline="always", **JIT)
def _le(a, b):
    return np.float32(1.0) if a <= b else np.float32(0.0)


# The in-kernel products (prelude_f64.py has the same code, with float64 zeros: tests/test_tables.py).
@njit(inline="always", **JIT)
def _mm_nt(a, W, out):
    # out = a @ W.T: dot products over contiguous rows of W, four output units at a time (each
    # load of a serves four products)
    n = W.shape[0]
    n4 = n - n % 4
    for b in range(a.shape[0]):
        for k in range(0, n4, 4):
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
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
            acc = np.float32(0.0)
            for j in range(a.shape[1]):
                acc += a[b, j] * W[k, j]
            out[b, k] = acc


@njit(inline="always", **JIT)
def _mm_nn(a, W, out):
    # out = a @ W: rows of W scaled and added, contiguous along the output
    for b in range(a.shape[0]):
        for j in range(W.shape[1]):
            out[b, j] = np.float32(0.0)
        for k in range(W.shape[0]):
            s = a[b, k]
            for j in range(W.shape[1]):
                out[b, j] += s * W[k, j]
