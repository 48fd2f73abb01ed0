"""The part of the numba prelude that is the same for both dtypes: SMALL_ROWS and the helpers with no
float literal in them (`_abs`, `_sqrt`, the selects `_max`, `_min`, `_where`). `_exp` and `_log` are
per dtype: libm in prelude_f64.py, arithmetic-only (vectorisable) in prelude_f32.py.
Generated modules import these through the prelude of their dtype (prelude_f32.py, prelude_f64.py),
which re-exports them, so a kernel imports its whole prelude from one module. Numba's math functions
keep the argument's type (float32 in, float32 out), so nothing here promotes a float32 kernel to
float64.
"""

from __future__ import annotations

import math

from numba import njit

from .options import JIT

# Below this many rows a step's recurrent product is a loop in the kernel (prelude _mm_nt/_mm_nn),
# not a BLAS call: at batch 1 an sgemm call costs ~45 us of overhead for ~5 us of work (U read once
# from cache).
SMALL_ROWS = 4   # steps with at most this many batch rows multiply in the kernel, not in BLAS


@njit(inline="always", **JIT)
def _abs(x):
    return abs(x)


@njit(inline="always", **JIT)
def _sqrt(x):
    return math.sqrt(x)


@njit(inline="always", **JIT)
def _max(a, b):
    return a if a >= b else b      # ties: the first, as the gradient (lstmc/ops.py)


@njit(inline="always", **JIT)
def _min(a, b):
    return a if a <= b else b


@njit(inline="always", **JIT)
def _where(c, p, q):
    return q if c == 0 else p      # a select: the branch not taken never reaches the result
