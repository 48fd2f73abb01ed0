"""Every wrong argument gets an error that names the argument, says what was expected and how to fix it.

One table of (description, call, exception type, regex the message must match) drives one checker,
run for every backend (triton on Triton's CPU interpreter when there is no CUDA GPU, as in
tests/test_triton.py); a second table does the same for `lstmc.nn.Recurrent`. Each case here failed
before with an AttributeError/KeyError/TypeError from deep inside a backend (Numba's "too many
arguments", torch's "can't convert np.ndarray"), passed silently, or gave a message without the fix
or with a wrong one (e.g. "compile with dtype='int32'", "module.to(torch.float16)": not supported).
A regex may be a dict {backend: regex} with a None default, where what a backend takes differs.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# Triton picks its CPU interpreter once, when first imported (see tests/test_triton.py)
if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc.nn import Recurrent  # noqa: E402

try:
    import triton  # noqa: F401
    from lstmc.backends import triton as tb
    HAVE_TRITON = tb.interpreting() or torch.cuda.is_available()
except ImportError:
    HAVE_TRITON = False

BACKENDS = ["reference", "torch", "numba"] + (["triton"] if HAVE_TRITON else [])
DTYPE = {"reference": "float64", "torch": "float64", "numba": "float32", "triton": "float32"}
T, B, I, H = 3, 2, 4, 5
NUMPY_ONLY = ("reference", "numba")


@functools.lru_cache(maxsize=None)
def ctx(backend: str) -> SimpleNamespace:
    """One lstm program per backend with good arguments (and a tape) for the cases to spoil."""
    dt = np.dtype(DTYPE[backend])
    prog = lstmc.compile("lstm", backend, DTYPE[backend])
    p = prog.init_params(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(dt)
    y, _, tape = prog.forward(x, p)
    c = SimpleNamespace(backend=backend, dt=dt, prog=prog, p=p, x=x, tape=tape, dy=np.ones((T, B, H), dt))
    c.P = lambda **kw: {**p, **kw}
    c.zeros = lambda *shape, dtype=dt: np.zeros(shape, dtype)
    return c


def other_tape(c, cell="gru", backend=None, dtype=None):
    backend = backend or c.backend
    prog = lstmc.compile(cell, backend, dtype or DTYPE[backend])
    return prog.forward(c.x.astype(prog.np_dtype), prog.init_params(I, H))[2]


def big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


def readonly_meta_lengths():
    return torch.tensor([1, 2], device="meta")


ARRAY = {"reference": r"must be a NumPy array{shape} \(float64\) for the reference backend",
         "numba": r"must be a NumPy array{shape} \(float32\) for the numba backend",
         None: r"must be a torch\.Tensor or NumPy array{shape} \(float\d\d\)"}
CONVERT = {"reference": r"np\.asarray\({name}, dtype=np\.float64\)", "numba": r"np\.asarray\({name}, dtype=np\.float32\)",
           None: r"torch\.as_tensor\({name}, dtype=torch\.float\d\d\)"}


def not_an_array(name, got, shape=""):
    """{backend: regex} for `name` given as a non-array `got`: the type wanted, what came, the conversion."""
    esc = re.escape(name)
    return {b: f"^{esc} {ARRAY[b].format(shape=re.escape(shape))}, got {got}: convert it with "
               f"{CONVERT[b].format(name=esc)}$" for b in ARRAY}


def astype(name, dname, triton_alt=False):
    """{backend: regex} for a wrong dtype: only the conversion to the compiled dtype is suggested (and
    compiling for `dname` only where that backend supports it)."""
    esc = re.escape(name)
    conv = {None: rf"{esc}\.astype\(np\.float\d\d\)", "torch": rf"({esc}\.astype\(np\.float64\)|{esc}\.to\(torch\.float64\))"}
    out = {b: rf"^{esc} has dtype {dname}.*, but this \w+ program was compiled for float\d\d: convert it with {v}$"
           for b, v in conv.items()}
    if triton_alt:
        out["triton"] = (rf"^{esc} has dtype {dname}, but this triton program was compiled for float32: convert it "
                         rf"with {esc}\.astype\(np\.float32\), or compile the cell for {dname}: "
                         rf"lstmc\.compile\(cell, 'triton', dtype='{dname}'\)$")
    return out


MADE_BY = r"^tape must come from this program's forward, but this tape was made by <{made}.*>: pass it to that program's backward"

# (description, call(ctx), exception, regex or {backend: regex}, backends or None for all)
CASES = [
    # parameters that are not arrays (AttributeError: 'list' object has no attribute 'shape')
    ("param is a list", lambda c: c.prog.forward(c.x, c.P(W_i=c.p["W_i"].tolist())), ValueError,
     not_an_array("params['W_i']", "a list", " of shape (5, 4)"), None),
    ("param is a float", lambda c: c.prog.forward(c.x, c.P(b_ii=0.5)), ValueError,
     not_an_array("params['b_ii']", "a float", " of shape (5,)"), None),
    ("param is None", lambda c: c.prog.forward(c.x, c.P(b_ii=None)), ValueError,
     not_an_array("params['b_ii']", "None", " of shape (5,)"), None),
    # torch tensors to the NumPy backends: reference ran silently (or failed inside torch); numba gave no fix
    ("param is a tensor (NumPy backend)", lambda c: c.prog.forward(c.x, c.P(W_i=torch.from_numpy(c.p["W_i"]))),
     ValueError, r"^params\['W_i'\] must be a NumPy array of shape \(5, 4\) \(float\d\d\) for the \w+ backend, got a torch\.Tensor: "
                 r"pass params\['W_i'\]\.detach\(\)\.cpu\(\)\.numpy\(\), or compile for backend='torch'", NUMPY_ONLY),
    ("x is a tensor that requires grad (NumPy backend)",
     lambda c: c.prog.forward(torch.from_numpy(c.x).requires_grad_(), c.p), ValueError,
     r"^x must be a NumPy array \(float\d\d\) for the \w+ backend, got a torch\.Tensor: pass x\.detach\(\)", NUMPY_ONLY),
    ("dy is a tensor (NumPy backend)", lambda c: c.prog.backward(c.tape, torch.from_numpy(c.dy)), ValueError,
     r"^dy must be a NumPy array of shape \(3, 2, 5\) .*got a torch\.Tensor: pass dy\.detach\(\)", NUMPY_ONLY),
    ("params is a list", lambda c: c.prog.forward(c.x, list(c.p.values())), ValueError,
     r"^params must be a dict \{name: array\} \(from init_params\), got a list$", None),
    # shapes: every parameter blames itself with the shape it should have (W_i [H, I+1] blamed x)
    ("W_i has I+1 columns", lambda c: c.prog.forward(c.x, c.P(W_i=c.zeros(H, I + 1))), ValueError,
     r"^params\['W_i'\] has shape \(5, 5\), expected \(5, 4\): W_i is \[hidden_size, input_size\], and x and the "
     r"other parameters give hidden_size=5, input_size=4$", None),
    ("W_i has H+1 rows", lambda c: c.prog.forward(c.x, c.P(W_i=c.zeros(H + 1, I))), ValueError,
     r"^params\['W_i'\] has shape \(6, 4\), expected \(5, 4\)", None),
    ("first bias too long", lambda c: c.prog.forward(c.x, c.P(b_ii=c.zeros(H + 1))), ValueError,
     r"^params\['b_ii'\] has shape \(6,\), expected \(5,\): b_ii is \[hidden_size\], and the other parameters "
     r"give hidden_size=5$", None),
    ("W_i 0-d", lambda c: c.prog.forward(c.x, c.P(W_i=np.array(1.0, c.dt))), ValueError,
     r"^params\['W_i'\] has shape \(\), expected \(5, 4\)", None),
    ("x has the wrong feature count", lambda c: c.prog.forward(c.x[:, :, :3].copy(), c.p), ValueError,
     r"^x has shape \(3, 2, 3\), expected \(3, 2, 4\): its last dimension is input_size, and params\['W_i'\] of "
     r"shape \(5, 4\) .*takes input_size=4; pass x with 4 features, or parameters for input_size=3 "
     r"\(init_params\(3, 5\)\)$", None),
    ("lone W with I+1 columns names W", lambda c: lstmc.compile("indrnn", c.backend, DTYPE[c.backend]).forward(
        c.x, {**lstmc.compile("indrnn", c.backend, DTYPE[c.backend]).init_params(I, H), "W": c.zeros(H, I + 1)}),
     ValueError, r"^x has shape \(3, 2, 4\), expected \(3, 2, 5\): .*params\['W'\] of shape \(5, 5\)", None),
    ("x 2-D", lambda c: c.prog.forward(c.x[:, 0], c.p), ValueError,
     r"^x must be a 3-D array \[T, B, input_size\].*got shape \(3, 4\): for one sequence \[T, input_size\] add a "
     r"batch axis, x\[:, None, :\]$", None),
    ("x 0-d", lambda c: c.prog.forward(np.array(1.0, c.dt), c.p), ValueError,
     r"^x must be a 3-D array .*got shape \(\)$", ("torch", "triton")),     # they said (1,)
    ("x is a list", lambda c: c.prog.forward(c.x.tolist(), c.p), ValueError, not_an_array("x", "a list"), None),
    # dtypes: suggest the conversion, never "compile with dtype='int32'"
    ("x int32", lambda c: c.prog.forward(c.x.astype(np.int32), c.p), ValueError, astype("x", "int32"), None),
    ("x bool", lambda c: c.prog.forward(c.x > 0, c.p), ValueError, astype("x", "bool"), None),
    ("x object", lambda c: c.prog.forward(c.x.astype(object), c.p), ValueError, astype("x", "object"), None),
    ("x float16", lambda c: c.prog.forward(c.x.astype(np.float16), c.p), ValueError,
     astype("x", "float16", triton_alt=True), None),
    ("x big-endian", lambda c: c.prog.forward(big_endian(c.x), c.p), ValueError,
     r"^x has dtype >f\d \(float\d\d in non-native byte order\), but .*: convert it with x\.astype\(np\.float\d\d\)$",
     None),
    ("x other float", lambda c: c.prog.forward(c.x.astype(np.float32 if c.dt == np.float64 else np.float64), c.p),
     ValueError, r"^x has dtype float\d\d, but this \w+ program was compiled for float\d\d: convert it with "
                 r"x\.astype\(np\.float\d\d\), or compile the cell for float\d\d: lstmc\.compile\(cell, '\w+', "
                 r"dtype='float\d\d'\)$", None),
    ("param int64", lambda c: c.prog.forward(c.x, c.P(b_ii=c.p["b_ii"].astype(np.int64))), ValueError,
     astype("params['b_ii']", "int64"), None),
    ("state int32", lambda c: c.prog.forward(c.x, c.p, state={"h": c.zeros(B, H, dtype=np.int32)}), ValueError,
     astype("state['h']", "int32"), None),
    ("state value is a list", lambda c: c.prog.forward(c.x, c.p, state={"h": c.zeros(B, H).tolist()}), ValueError,
     not_an_array("state['h']", "a list", " of shape (2, 5)"), None),
    ("state shape says where B and H come from", lambda c: c.prog.forward(c.x, c.p, state={"c": c.zeros(B, H + 1)}),
     ValueError, r"^state\['c'\] has shape \(2, 6\), expected \(2, 5\) = \[batch, hidden_size\]: B=2 from x, "
                 r"hidden_size=5 from params$", None),
    # numba reads arrays in place: the fix names the very argument ("np.ascontiguousarray(params...)")
    ("W not C-contiguous (numba)", lambda c: c.prog.forward(c.x, c.P(U_i=np.asfortranarray(c.p["U_i"] + 1))),
     ValueError, r"^params\['U_i'\] is not C-contiguous: pass np\.ascontiguousarray\(params\['U_i'\]\)", ("numba",)),
    ("x reversed view (numba)", lambda c: c.prog.forward(c.x[::-1], c.p), ValueError,
     r"^x has negative strides \(a reversed view\): pass np\.ascontiguousarray\(x\)", ("numba",)),
    ("dy not C-contiguous (numba)", lambda c: c.prog.backward(c.tape, np.asfortranarray(c.dy)), ValueError,
     r"^dy is not C-contiguous: pass np\.ascontiguousarray\(dy\)", ("numba",)),
    # torch backend: every argument on x's device (state and dy failed inside torch)
    ("state on another device (torch)",
     lambda c: c.prog.forward(torch.from_numpy(c.x), c.p, state={"h": torch.zeros(B, H, dtype=torch.float64,
                                                                                  device="meta")}),
     ValueError, r"^state\['h'\] is on meta but x is on cpu: move all arguments to one device", ("torch",)),
    ("dy on another device (torch)",
     lambda c: c.prog.backward(c.tape, torch.zeros(T, B, H, dtype=torch.float64, device="meta")), ValueError,
     r"^dy is on meta but forward ran on cpu: move it there", ("torch",)),
    # lengths
    ("lengths is a string", lambda c: c.prog.forward(c.x, c.p, lengths="ab"), ValueError,
     r"^lengths must be a 1-D array of 2 integers in \[0, T=3\], one per batch row, got a str 'ab'$", None),
    ("lengths is a scalar", lambda c: c.prog.forward(c.x, c.p, lengths=2), ValueError,
     r"^lengths must be a 1-D array of 2 integers .*got the scalar 2$", None),
    ("lengths are booleans", lambda c: c.prog.forward(c.x, c.p, lengths=[True, False]), ValueError,
     r"^lengths must be integers .*got booleans \[True, False\]: for a \[T, B\] mask of valid steps pass "
     r"mask\.sum\(0\)$", None),
    ("lengths are fractions", lambda c: c.prog.forward(c.x, c.p, lengths=[1.5, 2]), ValueError,
     r"^lengths must be integers, got \[1\.5, 2\.0\] \(dtype float64\)$", None),
    ("lengths are ragged", lambda c: c.prog.forward(c.x, c.p, lengths=[[1], [1, 2]]), ValueError,
     r"^lengths must be a 1-D array of 2 integers", None),
    ("lengths on the meta device", lambda c: c.prog.forward(c.x, c.p, lengths=readonly_meta_lengths()), ValueError,
     r"^lengths must be .*but the tensor given \(on meta\) cannot be read", None),
    ("lengths too long names the row", lambda c: c.prog.forward(c.x, c.p, lengths=[3, 9]), ValueError,
     r"^lengths must lie in \[0, T=3\] \(T from x\), got 9 for batch row 1", None),
    # backward
    ("tape of need_tape=False", lambda c: c.prog.backward(c.prog.forward(c.x, c.p, need_tape=False)[2], c.dy),
     ValueError, r"^tape must be the third value returned by forward\(\.\.\., need_tape=True\), got None: "
                 r"forward\(\.\.\., need_tape=False\) keeps no tape", None),
    ("tape is a tuple", lambda c: c.prog.backward(c.prog.forward(c.x, c.p), c.dy), ValueError,
     r"^tape must be the third value returned by forward\(\.\.\., need_tape=True\), got a tuple$", None),
    ("tape from another cell", lambda c: c.prog.backward(other_tape(c, "gru"), c.dy), ValueError,
     {b: MADE_BY.format(made=f"{'TritonCell' if b == 'triton' else '[A-Za-z]+Cell'} cell='gru'") for b in BACKENDS},
     None),
    ("tape from another backend",
     lambda c: c.prog.backward(other_tape(c, "lstm", "torch" if c.backend == "reference" else "reference"), c.dy),
     ValueError, {"reference": MADE_BY.format(made="TorchCell cell='lstm'"),
                  None: MADE_BY.format(made="ReferenceCell cell='lstm'")}, None),
    ("tape from another dtype",
     lambda c: c.prog.backward(other_tape(c, "lstm", dtype="float32" if c.dt == np.float64 else "float64"), c.dy),
     ValueError, MADE_BY.format(made=r"\w+Cell cell='lstm'"), None),
    ("dy int32", lambda c: c.prog.backward(c.tape, c.dy.astype(np.int32)), ValueError, astype("dy", "int32"), None),
    ("dy is a list", lambda c: c.prog.backward(c.tape, c.dy.tolist()), ValueError,
     not_an_array("dy", "a list", " of shape (3, 2, 5)"), None),
    ("dy shape says it is y's", lambda c: c.prog.backward(c.tape, c.dy[:, :, :4].copy()), ValueError,
     r"^dy has shape \(3, 2, 4\), expected \(3, 2, 5\) = \[T, B, hidden_size\], the shape of forward's y$", None),
    ("dstate int32", lambda c: c.prog.backward(c.tape, c.dy, {"c": c.zeros(B, H, dtype=np.int32)}), ValueError,
     astype("dstate['c']", "int32"), None),
    ("dstate is a list", lambda c: c.prog.backward(c.tape, c.dy, [c.zeros(B, H)]), ValueError,
     r"^dstate must be a dict \{state name: \[B, H\] array\} for states h, c, got a list$", None),
]


def check(call, exc, pattern):
    """The one checker: `call()` raises `exc` (a ValueError/TypeError/RuntimeError, never an
    AttributeError, KeyError, IndexError or a backend's internal error) whose message matches."""
    with pytest.raises(Exception) as info:
        call()
    e = info.value
    assert type(e) is exc, f"{type(e).__name__}: {e}"
    assert re.search(pattern, str(e)), f"message does not match\n  {pattern}\n  {e}"


def _pick(pattern, backend):
    return pattern.get(backend, pattern.get(None)) if isinstance(pattern, dict) else pattern


RUNS = [pytest.param(b, *case[1:4], id=f"{b}: {case[0]}") for case in CASES for b in BACKENDS
        if case[4] is None or b in case[4]]


@pytest.mark.parametrize("backend, call, exc, pattern", RUNS)
def test_bad_argument(backend, call, exc, pattern):
    c = ctx(backend)
    check(lambda: call(c), exc, _pick(pattern, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tape_serves_backward_twice_and_after_later_forwards(backend):
    """Not an error: the numba backend recycles memory (_recycled, _workspace), but never a tape's."""
    c = ctx(backend)
    y, _, tape = c.prog.forward(c.x, c.p, lengths=[2, 3], reverse=True)
    g1 = c.prog.backward(tape, c.dy)
    c.prog.forward(c.x * 0.5, c.p, lengths=[3, 1])          # same shapes: reuses whatever it may
    c.prog.backward(c.prog.forward(c.x * 2, c.p)[2], c.dy)
    g2 = c.prog.backward(tape, c.dy)
    np.testing.assert_array_equal(np.asarray(g1[0]), np.asarray(g2[0]))
    for k in g1[2]:
        np.testing.assert_array_equal(np.asarray(g1[2][k]), np.asarray(g2[2][k]))


def test_compile_dtype():
    check(lambda: lstmc.compile("lstm", "reference", 3), ValueError,
          r"^dtype must be one of float64, float32 .*got 3: lstmc compiles floating-point kernels only")
    check(lambda: lstmc.compile("lstm", "reference", None), ValueError, r"^dtype must be one of .*got None")
    # a torch or NumPy dtype names the same thing as its string ("Cannot interpret 'torch.float32'" before)
    assert lstmc.compile("lstm", "reference", torch.float32) is lstmc.compile("lstm", "reference", "float32")
    assert lstmc.compile("lstm", "reference", np.float64) is lstmc.compile("lstm", "reference", "float64")


# ------------------------------------------------------------------------------- lstmc.nn.Recurrent

def _swap(attr, value):
    def run(backend):
        r = Recurrent("lstm", 4, 5, num_layers=2, backend=backend)
        r.l1[attr] = torch.nn.Parameter(value(r.l1[attr]))
        return r(torch.randn(3, 2, 4, requires_grad=True))
    return run


def _rnn(backend, **kw):
    return Recurrent("lstm", 4, 5, backend=backend, **kw)


NN_CASES = [
    # a dtype lstmc cannot run is never suggested (was "or the module (module.to(torch.float16))")
    ("input float16", lambda b: _rnn(b)(torch.randn(3, 2, 4).half()), ValueError,
     r"^input has dtype torch\.float16 but the module's parameters are torch\.float32: convert the input with "
     r"input\.to\(torch\.float32\) \(lstmc runs float32 and float64 modules only\)$"),
    ("input bfloat16", lambda b: _rnn(b)(torch.randn(3, 2, 4).bfloat16()), ValueError,
     r"^(?!.*module\.to\(torch\.bfloat16\)).*convert the input with input\.to\(torch\.float32\)"),
    ("input int32", lambda b: _rnn(b)(torch.zeros(3, 2, 4, dtype=torch.int32)), ValueError,
     r"^(?!.*module\.to\(torch\.int32\)).*input has dtype torch\.int32.*convert the input with "
     r"input\.to\(torch\.float32\)"),
    # parameters changed after construction are named as the module names them (was params['W_i'] with
    # NumPy advice, or x blamed for a swapped W_i)
    ("parameter of another dtype", _swap("W_i", lambda w: w.detach().double()), ValueError,
     r"^parameter l1\.W_i has dtype torch\.float64 but the module's other parameters are torch\.float32: convert "
     r"the whole module, module\.to\(torch\.float32\)$"),
    ("parameter of another shape", _swap("W_i", lambda w: torch.zeros(5, 3)), RuntimeError,
     r"^parameter l1\.W_i has shape \(5, 3\), expected \(5, 5\) \(cell 'lstm', input size 5, hidden_size 5\)$"),
    # lengths say where T and B came from (was "a 1-D array of 1 integers")
    ("unbatched lengths count", lambda b: _rnn(b)(torch.randn(3, 4), lengths=[2, 3]), ValueError,
     r"^lengths must be a 1-D array of 1 integer in \[0, T=3\], one per batch row \(B=1 from input \(unbatched\)\)"),
    ("batch_first lengths count", lambda b: _rnn(b, batch_first=True)(torch.randn(2, 3, 4), lengths=[3, 3, 3]),
     ValueError, r"^lengths must be a 1-D array of 2 integers .*\(B=2 from input, batch_first\), got shape \(3,\)$"),
    ("lengths on the meta device", lambda b: _rnn(b)(torch.randn(3, 2, 4), lengths=readonly_meta_lengths()),
     ValueError, r"^lengths must be .*the tensor given \(on meta\) cannot be read"),
]


@pytest.mark.parametrize("backend", ["auto", "torch", "reference"])
@pytest.mark.parametrize("desc, call, exc, pattern", NN_CASES, ids=[c[0] for c in NN_CASES])
def test_bad_recurrent_argument(backend, desc, call, exc, pattern):
    check(lambda: call(backend), exc, pattern)


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
@pytest.mark.parametrize("flag,value", [("reverse", "no"), ("need_tape", "yes"), ("reverse", None), ("reverse", 2)])
def test_flags_must_be_booleans(backend, flag, value):
    """reverse="no" is truthy: it ran reversed without a word."""
    prog = lstmc.compile("gru", backend, "float32" if backend == "numba" else "float64")
    params = prog.init_params(3, 4)
    x = np.zeros((2, 1, 3), prog.np_dtype)
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        prog.forward(x, params, **{flag: value})
