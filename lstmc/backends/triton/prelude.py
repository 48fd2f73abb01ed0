"""The math every generated Triton module calls: the activations whose stable forms are more than
one `tl` call (`_sigmoid`, `_tanh`, `_relu`, `_step`, `_sign`, `_softplus`, `_logsigmoid`), the
selects (`_max`, `_min`, `_where`), the comparison masks (`_gt`, `_ge`, `_lt`, `_le`: 1.0 or 0.0 in
float32, whatever the compute type; `_where` only tests them against 0) and `_dot`, the tl.dot
precision policy. Generated modules import these (`from lstmc.backends.triton.prelude import ...`);
the renderer's spelling table (`render.SPELL`) names them, one row per primitive, and a primitive's
Triton math lives either in its row there or here, nowhere else. tests/test_triton_prelude.py checks
each against float64 NumPy on the interpreter.

Every function is written for both compute types (float32, float64): constants are Python floats
(float32 holds them exactly), so they take the argument's type. Decorated when first imported, in
the mode Triton was imported in (environment._InterpretEnv sees to it while a module is built).
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, acc, F32: tl.constexpr, PREC: tl.constexpr):
    # F32: the interpreter multiplies bfloat16 bit patterns in tl.dot (triton issue #11584), so
    # there the operands (already rounded to DT) are widened first; on a GPU F32 is False.
    # 16-bit operands: tensor cores, float32 accumulation. float32 operands: PREC is "ieee" (exact
    # float32 products, the default) or "tf32" (tensor cores, 10-bit mantissas: the cell's tf32
    # option). float64: ieee.
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif (a.dtype == tl.bfloat16) or (a.dtype == tl.float16):
        return tl.dot(a, b, acc)
    elif a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision=PREC)
    else:                           # float64: Triton's dot defaults to a float32 result; ask for float64
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=tl.float64)


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))          # never exp of a large positive number
    r = 1.0 / (1.0 + e)
    return tl.where(x >= 0.0, r, e * r)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    r = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0.0, r, -r)


@triton.jit
def _relu(x):
    return tl.where(x < 0.0, 0.0, x)          # NaN stays NaN, as in the reference


@triton.jit
def _step(x):
    return tl.where(x > 0.0, 1.0, 0.0)


@triton.jit
def _sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, x * 0.0))   # sign(NaN) is NaN, sign(0) is 0


@triton.jit
def _softplus(x):
    return tl.where(x > 0.0, x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _logsigmoid(x):
    return -_softplus(-x)                     # log(sigmoid(x)), stable for large |x|


@triton.jit
def _max(a, b):
    return tl.where(a >= b, a, b)             # ties: the first, as the gradient (lstmc/ops.py)


@triton.jit
def _min(a, b):
    return tl.where(a <= b, a, b)


@triton.jit
def _gt(a, b):
    return tl.where(a > b, 1.0, 0.0)


@triton.jit
def _ge(a, b):
    return tl.where(a >= b, 1.0, 0.0)


@triton.jit
def _lt(a, b):
    return tl.where(a < b, 1.0, 0.0)


@triton.jit
def _le(a, b):
    return tl.where(a <= b, 1.0, 0.0)


@triton.jit
def _where(c, p, q):
    return tl.where(c != 0.0, p, q)           # a select: the branch not taken never reaches the result
