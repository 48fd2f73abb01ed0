"""The math every float32 numba kernel calls: the activations (`_tanh`, `_sigmoid`, `_relu`, `_step`,
`_sign`, `_softplus`, `_logsigmoid`; `_exp`, `_log`; the selects `_max`, `_min`, `_where` and the
comparison masks `_gt`, `_ge`, `_lt`, `_le`; `_abs`, `_sqrt` from prelude.py) and the in-kernel products
of steps with at most SMALL_ROWS rows (`_mm_nt`, `_mm_nn`). Generated float32 modules import them
(`from lstmc.backends.numba.prelude_f32 import SMALL_ROWS, _abs, ...`: render.prelude_names); they
are `inline="always"`, so Numba inlines them into the kernels and the fused loops see their
arithmetic. prelude_f64.py is the float64 set, under the same names.

tanh, sigmoid, exp, log, softplus and logsigmoid are arithmetic-only (no libm call: a libm call keeps
the whole fused j-loop scalar), each within a tested relative error (the *_MAX_ERROR constants below,
1-2 float32 ulps). tanh/sigmoid: a rational approximation; past the point where float32 rounds the
true value to +-1 they return exactly +-1 (as libm does), so a saturated gate's slope is exactly 0 and
float32 gradients do not grow with |x|. exp/log: Cephes-style range reduction and polynomials, with
the exponent bits read and written by the small LLVM intrinsics below; they keep libm's edges
(overflow to inf, gradual underflow to exactly 0, NaN, exp(0) == 1, log(0) = -inf, log(<0) = NaN).
Every literal is `np.float32(...)` so nothing silently promotes to float64.

Numba does not notice when an imported module changes: this file is in GENERATOR_FILES
(lstmc/backends/cache.py), so a change here renames every generated module (a fresh Numba cache).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .options import JIT
from .prelude import SMALL_ROWS, _abs, _max, _min, _sqrt, _where  # the same for both dtypes

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

# exp: exp(x) = 2^n * e^r, n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2], e^r ~ 1 + r + r^2 P(r)
# (Cephes expf). ln2 = EXP_LN2_HI + EXP_LN2_LO (Cody-Waite): n * EXP_LN2_HI is exact (9 significant
# bits), so r keeps its accuracy up to |n| = 150.
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
         5.0000001201e-1)
EXP_LN2_HI = 0.693359375
EXP_LN2_LO = -2.12194440e-4
LOG2E = 1.44269504088896341
# x is clamped to [EXP_LO, EXP_HI] before the reduction (the scale 2^n then stays within n in
# [-150, 128]): exp(-104) < 2^-150 rounds to exactly 0, exp(89) > FLT_MAX overflows to inf.
EXP_LO = -104.0
EXP_HI = 89.0
# log(m), softplus's log1p(y): log1p(f) = 2 atanh(s), s = f / (2 + f), atanh(s) = s (1 + s^2/3 + s^4/5 + ...):
# the Taylor coefficients 1/(2k+1). log reduces to m in [sqrt(1/2), sqrt(2)) (|s| < 0.172: four terms
# after 1 leave < 3e-9); softplus needs log1p(y) for y = exp(-|x|) in (0, 1] (s <= 1/3: six terms, < 2e-8).
ATANH_C = (1 / 3, 1 / 5, 1 / 7, 1 / 9, 1 / 11, 1 / 13)
SQRT2 = 1.41421356237309505
LN2 = 0.693147180559945309
FLT_MIN = 1.17549435082228751e-38          # the smallest normal float32; log scales smaller x by 2^23
# Largest relative errors against float64 numpy (tests/test_numba.py: dense grids, the edges, |x| up
# to 1e30). Where the true value is subnormal (below FLT_MIN) the error is absolute instead: exp
# within 1 step of 2^-149, softplus/logsigmoid within 2.
EXP_MAX_ERROR = 1.5e-7        # measured 1.18e-7 (1 ulp) over [-110, 110]
LOG_MAX_ERROR = 2e-7          # measured 1.68e-7 over all positive float32 magnitudes
SOFTPLUS_MAX_ERROR = 2.5e-7   # measured 2.23e-7 (log1p(exp(x)) near x = -4.8); logsigmoid(x) is -softplus(-x)

# (Numba freezes module globals when it compiles a kernel: each np.float32(TANH_P[k]) below, and each
# such constant of exp/log, is a float32 constant in the machine code, the same number the generated
# source once spelled out.)


# Bit-level helpers of _exp/_log, as LLVM intrinsics (Numba has no float/int bit-cast in scalar code;
# these inline to a few integer vector instructions). Numba's fast-math pass flags every float
# instruction that has no flags yet; the ones here carry their own ("contract"/"nsz", which allow
# neither reassociation nor folding) so LLVM keeps them as written: with `reassoc` it folded
# n*EXP_LN2_HI + n*EXP_LN2_LO into n*ln2 (3e-7 error at |x| ~ 88) and (y*2^k1)*2^k2 into y*inf.
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


def _c32(v):
    return ir.Constant(_I32, v)


def _pow2_bits(builder, k):
    # 2.0^k for an i32 k in [-126, 127]: k + 127 in the exponent bits
    return builder.bitcast(builder.shl(builder.add(k, _c32(127)), _c32(23)), _F32)


@intrinsic
def _ldexp(typingctx, y, n):
    """y * 2^n for a float32 n holding an integer in [-150, 128], as two exact power-of-two scalings
    (2^n alone can be out of range), so the result overflows to inf and underflows gradually as
    IEEE multiplication does."""
    if y != types.float32 or n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        k = builder.fptosi(args[1], _I32)
        k1 = builder.ashr(k, _c32(1))
        s1, s2 = _pow2_bits(builder, k1), _pow2_bits(builder, builder.sub(k, k1))
        return builder.fmul(builder.fmul(args[0], s1, flags=("nsz",)), s2, flags=("nsz",))
    return types.float32(types.float32, types.float32), codegen


@intrinsic
def _sub_mul(typingctx, a, b, c):
    """a - b*c as written (one FMA where the machine has it), never reassociated with its neighbours."""
    if a != types.float32 or b != types.float32 or c != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], builder.fmul(args[1], args[2], flags=("contract",)), flags=("contract",))
    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def _exponent(typingctx, x):
    """The unbiased exponent of a positive normal float32, as a float32 (frexp's, minus 1)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _I32)
        e = builder.sub(builder.and_(builder.lshr(bits, _c32(23)), _c32(255)), _c32(127))
        return builder.sitofp(e, _F32)
    return types.float32(types.float32), codegen


@intrinsic
def _mantissa(typingctx, x):
    """x's significand as a float32 in [1, 2) (x positive normal): x / 2^_exponent(x)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _I32)
        return builder.bitcast(builder.or_(builder.and_(bits, _c32(0x007FFFFF)), _c32(0x3F800000)), _F32)
    return types.float32(types.float32), codegen


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
def _exp(x):
    # relative error < EXP_MAX_ERROR; inf past ~88.72, exactly 0 below ~-103.97, NaN stays NaN
    a = x if x < np.float32(EXP_HI) else np.float32(EXP_HI)       # selects (NaN -> EXP_HI, replaced below)
    a = a if a > np.float32(EXP_LO) else np.float32(EXP_LO)
    n = np.floor(a * np.float32(LOG2E) + np.float32(0.5))
    r = _sub_mul(_sub_mul(a, n, np.float32(EXP_LN2_HI)), n, np.float32(EXP_LN2_LO))
    p = np.float32(EXP_P[0])                        # Horner: e^r ~ 1 + r + r^2 P(r)
    p = p * r + np.float32(EXP_P[1])
    p = p * r + np.float32(EXP_P[2])
    p = p * r + np.float32(EXP_P[3])
    p = p * r + np.float32(EXP_P[4])
    p = p * r + np.float32(EXP_P[5])
    y = _ldexp(p * r * r + r + np.float32(1.0), n)
    return x if x != x else y


@njit(inline="always", **JIT)
def _log(x):
    # relative error < LOG_MAX_ERROR; log(0) = -inf, log(inf) = inf, log(x < 0) and log(NaN) are NaN
    tiny = x < np.float32(FLT_MIN)                  # subnormals: scale into the normal range first
    a = x * np.float32(8388608.0) if tiny else x
    e = _exponent(a) - np.float32(23.0) if tiny else _exponent(a)
    m = _mantissa(a)                                # x = m 2^e, m in [1, 2)
    big = m > np.float32(SQRT2)                     # m in [sqrt(1/2), sqrt(2)): log(m) is small
    m = m * np.float32(0.5) if big else m
    e = e + np.float32(1.0) if big else e
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))   # m - 1 is exact
    z = s * s
    p = np.float32(ATANH_C[3])                      # log(m) = 2 atanh(s) = 2s + 2s z P(z)
    p = p * z + np.float32(ATANH_C[2])
    p = p * z + np.float32(ATANH_C[1])
    p = p * z + np.float32(ATANH_C[0])
    t = s + s
    r = e * np.float32(LN2) + (t + t * z * p)
    r = r if x < np.float32(np.inf) else x          # +inf stays, NaN stays
    r = np.float32(-np.inf) if x == np.float32(0.0) else r
    return np.float32(np.nan) if x < np.float32(0.0) else r


@njit(inline="always", **JIT)
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)), as libm's form is; relative error < SOFTPLUS_MAX_ERROR for all x
    y = _exp(-abs(x))                               # in [0, 1]: 0 for |x| past ~104
    s = y / (np.float32(2.0) + y)                   # log1p(y) = 2 atanh(s), s in [0, 1/3]
    z = s * s
    p = np.float32(ATANH_C[5])
    p = p * z + np.float32(ATANH_C[4])
    p = p * z + np.float32(ATANH_C[3])
    p = p * z + np.float32(ATANH_C[2])
    p = p * z + np.float32(ATANH_C[1])
    p = p * z + np.float32(ATANH_C[0])
    t = s + s
    return max(x, np.float32(0.0)) + (t + t * z * p)


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
