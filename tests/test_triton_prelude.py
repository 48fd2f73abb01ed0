"""The Triton prelude (lstmc/backends/triton/prelude.py), function by function, against float64
NumPy/PyTorch: values over a wide range including ±large and ±inf, exact saturation, NaN, and the
tl.dot precision policy of `_dot`. On Triton's CPU interpreter where there is no CUDA GPU (set here
before triton is first imported, as tests/test_triton.py does), compiled on the GPU where there is one.

Tolerances: float64 1e-14 relative + 1e-15 absolute, float32 2e-6 relative + 1e-7 absolute (the
stable forms lose relative accuracy where the result is tiny: tanh near 0 is (1 - e) / (1 + e), and
softplus of a large negative number is log(1 + e), which rounds to 0 once e is below half an ulp
of 1; the absolute error stays within an ulp of 1).
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from lstmc.backends import triton as tb  # noqa: E402
from lstmc.backends.triton.prelude import (  # noqa: E402
    _dot, _ge, _gt, _le, _logsigmoid, _lt, _max, _min, _relu, _sigmoid, _sign, _softplus, _step, _tanh, _where)

if not tb.interpreting() and not torch.cuda.is_available():
    pytest.skip("triton was imported for a GPU and there is none: run with TRITON_INTERPRET=1",
                allow_module_level=True)

DEVICE = "cpu" if tb.interpreting() else "cuda"
BLOCK = 128


@triton.jit
def _apply(X, Y, N, OP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(X + offs, mask=m, other=0.0)
    if OP == "sigmoid":
        y = _sigmoid(x)
    elif OP == "tanh":
        y = _tanh(x)
    elif OP == "relu":
        y = _relu(x)
    elif OP == "step":
        y = _step(x)
    elif OP == "sign":
        y = _sign(x)
    elif OP == "logsigmoid":
        y = _logsigmoid(x)
    else:
        y = _softplus(x)
    tl.store(Y + offs, y, mask=m)


def run(op: str, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(DEVICE)
    yt = torch.empty_like(xt)
    n = xt.numel()
    _apply[(triton.cdiv(n, BLOCK),)](xt, yt, n, OP=op, BLOCK=BLOCK)
    return yt.cpu().numpy()


def _softplus64(x):
    return np.logaddexp(0.0, x)


# independent float64 oracles (NaN handling as lstmc's reference, lstmc.ops.EVAL)
ORACLE = {
    "sigmoid": lambda x: torch.sigmoid(torch.from_numpy(x)).numpy(),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "step": lambda x: (x > 0).astype(np.float64),
    "sign": np.sign,
    "softplus": _softplus64,
    "logsigmoid": lambda x: -np.logaddexp(0.0, -x),
}
OPS = list(ORACLE)
TOL = {"float64": dict(rtol=1e-14, atol=1e-15), "float32": dict(rtol=2e-6, atol=1e-7)}


def grid() -> np.ndarray:
    """±0, tiny, moderate, ±large and ±inf, float64."""
    mags = np.concatenate([[0.0, 1e-300, 1e-30, 1e-8, 1e-4], np.linspace(0.01, 40.0, 400),
                           [1e2, 7e2, 7.1e2, 1e4, 1e30, 1e300, np.inf]])
    return np.concatenate([mags, -mags])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", OPS)
def test_prelude_function_matches_float64_oracle(op, dtype):
    with np.errstate(over="ignore"):
        x = grid().astype(dtype)                # float32: the large ones become ±inf, as they would
    got = run(op, x)
    assert got.dtype == np.dtype(dtype)
    want = ORACLE[op](x.astype(np.float64))
    np.testing.assert_allclose(got.astype(np.float64), want, **TOL[dtype], err_msg=f"{op} {dtype}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturation_is_exact(dtype):
    big = np.array([100.0, -100.0, 1000.0, -1000.0, 20.0, -20.0, np.inf, -np.inf, 0.0], dtype)
    s, t = run("sigmoid", big), run("tanh", big)
    assert s[0] == 1.0 and s[2] == 1.0 and s[6] == 1.0                  # sigmoid(100), (1000), (inf)
    assert 0.0 <= s[1] <= 1e-40 and s[3] == 0.0 and s[7] == 0.0         # sigmoid(-100) ~ 3.7e-44
    assert s[8] == 0.5
    assert t[4] == 1.0 and t[5] == -1.0 and t[0] == 1.0 and t[1] == -1.0 and t[6] == 1.0 and t[7] == -1.0
    assert t[8] == 0.0
    sp = run("softplus", big)
    assert sp[0] == 100.0 and sp[2] == 1000.0 and sp[6] == np.inf and sp[3] == 0.0 and sp[7] == 0.0
    assert sp[8] == np.log(np.array(2.0, dtype))
    assert not np.isnan(np.concatenate([s, t, sp])).any()               # no inf/inf, no 0*inf


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", ["sigmoid", "tanh", "softplus"])
def test_nan_propagates(op, dtype):
    got = run(op, np.array([np.nan, 1.0, np.nan], dtype))
    assert np.isnan(got[0]) and np.isnan(got[2]) and not np.isnan(got[1])


def test_step_of_nan_is_zero_as_in_the_reference():
    assert (run("step", np.array([np.nan, -np.nan])) == 0.0).all()


@pytest.mark.parametrize("op", ["relu", "sign"])
def test_relu_and_sign_propagate_nan_like_the_reference(op):
    assert np.isnan(run(op, np.array([np.nan]))).all()


# ------------------------------------------------------------------------------------------ _dot

N = 16


@triton.jit
def _apply_dot(A, B, C, OUT, F32: tl.constexpr, PREC: tl.constexpr, CT: tl.constexpr, N: tl.constexpr):
    r = tl.arange(0, N)
    off = r[:, None] * N + r[None, :]
    acc = tl.load(C + off).to(CT)
    out = _dot(tl.load(A + off), tl.load(B + off), acc, F32, PREC)
    tl.store(OUT + off, out)


def run_dot(a, b, c, f32=False, prec="ieee"):
    ct = tl.float64 if c.dtype == torch.float64 else tl.float32
    out = torch.empty_like(c, device=DEVICE)
    _apply_dot[(1,)](a.to(DEVICE), b.to(DEVICE), c.to(DEVICE), out, F32=f32, PREC=prec, CT=ct, N=N)
    return out.cpu()


def _operands(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn((N, N), generator=g, dtype=torch.float64) for _ in range(3))
    return a.to(dtype), b.to(dtype), c


def test_dot_float64_accumulates_in_float64():
    a, b, c = _operands(torch.float64)
    got = run_dot(a, b, c)
    assert got.dtype == torch.float64
    # a float32 result (Triton's default out_dtype) would be off by ~1e-7 here
    torch.testing.assert_close(got, a @ b + c, rtol=1e-13, atol=1e-13)


def test_dot_float32_ieee_is_float32_exact_products():
    a, b, c = _operands(torch.float32)
    c = c.float()
    got = run_dot(a, b, c)
    want = a.double() @ b.double() + c.double()
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-5)


@pytest.mark.skipif(DEVICE != "cpu", reason="F32 is the interpreter's bfloat16 path (triton issue #11584)")
def test_dot_bfloat16_widened_on_the_interpreter():
    a, b, c = _operands(torch.bfloat16)
    c = c.float()
    got = run_dot(a, b, c, f32=True)
    assert got.dtype == torch.float32
    want = a.double() @ b.double() + c.double()      # exact products of the bfloat16 values
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-5)


@triton.jit
def _apply2(A, B, Y, N, OP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    a = tl.load(A + offs, mask=m, other=0.0)
    b = tl.load(B + offs, mask=m, other=0.0)
    if OP == "max":
        y = _max(a, b)
    elif OP == "min":
        y = _min(a, b)
    elif OP == "gt":
        y = _gt(a, b)
    elif OP == "ge":
        y = _ge(a, b)
    elif OP == "lt":
        y = _lt(a, b)
    elif OP == "le":
        y = _le(a, b)
    else:                      # a select whose other branch overflows: inf must not reach the result
        y = _where(_lt(a, 1.0), tl.exp(a), a + 0.5)
    tl.store(Y + offs, y, mask=m)


# independent oracles of the selects and masks (no NaN in these grids: NumPy's maximum and lstmc's
# select differ only there)
ORACLE2 = {
    "max": np.maximum, "min": np.minimum,
    "gt": lambda a, b: (a > b).astype(np.float64), "ge": lambda a, b: (a >= b).astype(np.float64),
    "lt": lambda a, b: (a < b).astype(np.float64), "le": lambda a, b: (a <= b).astype(np.float64),
    "where": lambda a, b: np.where(a < 1.0, np.exp(np.minimum(a, 1.0)), a + 0.5),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", list(ORACLE2))
def test_prelude_selects_and_masks_match_oracle(op, dtype):
    """Pairs from the grid against each other, ties (a == b) and ±inf included."""
    g = np.concatenate([grid()[::7], [np.inf, -np.inf, 1.0]])
    a, b = (np.repeat(g, len(g)), np.tile(g, len(g)))
    with np.errstate(over="ignore"):
        a, b = a.astype(dtype), b.astype(dtype)
    at, bt = (torch.from_numpy(np.ascontiguousarray(v)).to(DEVICE) for v in (a, b))
    yt = torch.empty_like(at)
    _apply2[(triton.cdiv(a.size, BLOCK),)](at, bt, yt, a.size, OP=op, BLOCK=BLOCK)
    got = yt.cpu().numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        want = ORACLE2[op](a.astype(np.float64), b.astype(np.float64))
    assert np.isfinite(got).sum() == np.isfinite(want).sum()
    np.testing.assert_allclose(got.astype(np.float64), want, **TOL[dtype], err_msg=f"{op} {dtype}")
