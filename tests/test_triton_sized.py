"""The triton backend on cells with states of other sizes (`size P`, `state h[P], c`; docs/design.md,
"Sizes"; docs/triton.md, "Sizes"): the built-in lstmp and the sized cells of tests/test_sizes.py
against the float64 reference, forward and backward (x, both initial states, every parameter),
with lengths (a full row and a length-0 row), reverse and initial states, float32 and float64, both
designs (persistent, and step kernels with 16-wide tiles so that H and P span several programs),
P smaller and larger than H, the CUDA-graph workspace path (`graphs="emulate"`), inference without a
tape (lstmp against torch.nn.LSTM(proj_size=P) on triton is in tests/test_sizes.py's table of
backends). On Triton's CPU interpreter where there is no
CUDA GPU (as tests/test_triton.py), compiled on the GPU where there is one. Tolerances as
tests/test_triton.py: float64 1e-10, float32 2e-6 forward / 2e-4 backward."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import lstmc  # noqa: E402
from lstmc.backends import triton as tb  # noqa: E402
from lstmc.backends.triton import Schedule, TritonCell  # noqa: E402
from lstmc.check import max_rel  # noqa: E402
from lstmc.lower import lower  # noqa: E402

from test_sizes import CELLS, SIZED, TWO  # noqa: E402 - the cells of tests/test_sizes.py

if not tb.interpreting() and not torch.cuda.is_available():
    pytest.fail("triton was imported before this module could turn its interpreter on and there is no CUDA GPU: "
                "run with TRITON_INTERPRET=1 in the environment", pytrace=False)

STEP16 = Schedule("step", block_b=16, block_h=16, block_k=16)   # small tiles: several programs per row
SCHEDULES = {"persistent": Schedule("persistent"), "step": STEP16}
TOL = {"float64": (1e-10, 1e-10), "float32": (2e-6, 2e-4)}


def _problem(cell, T, B, I, H, sizes, dtype, seed=0):
    """(x, params, state0, lengths, dy, dstate) with the given sizes; lengths [T, 0, random...]."""
    ref = lstmc.compile(cell, "reference", "float64")
    rng = np.random.default_rng(seed)
    params = ref.init_params(I, H, seed=seed, sizes=sizes)
    n = {s: ref.cell.size_value(ref.cell.state_size(s), I, H, sizes) for s in ref.cell.states}
    x = rng.normal(size=(T, B, I))
    st = {s: 0.5 * rng.normal(size=(B, n[s])) for s in ref.cell.states}
    L = rng.integers(0, T + 1, size=B)
    L[0] = T
    if B > 2:
        L[1] = 0
    dy = rng.normal(size=(T, B, n[ref.cell.output]))
    ds = {s: rng.normal(size=(B, n[s])) for s in ref.cell.states}
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return (cast(x), {k: cast(v) for k, v in params.items()}, {k: cast(v) for k, v in st.items()}, L, cast(dy),
            {k: cast(v) for k, v in ds.items()})


def _errors(cell, dtype, schedule, T=4, B=3, I=3, H=7, sizes=None, reverse=False, graphs=False):
    """(forward error, backward error) of the triton backend against the float64 reference."""
    sizes = sizes or {k: 4 for k in lstmc.load(cell).sizes}
    x, p, st, L, dy, ds = _problem(cell, T, B, I, H, sizes, dtype)
    ref = lstmc.compile(cell, "reference", "float64")
    up = lambda d: {k: v.astype(np.float64) for k, v in d.items()}  # noqa: E731
    y0, f0, tape0 = ref.forward(x.astype(np.float64), up(p), state=up(st), lengths=L, reverse=reverse)
    g0 = ref.backward(tape0, dy.astype(np.float64), up(ds))
    tc = TritonCell(lower(lstmc.load(cell)), dtype, schedule=schedule, graphs=graphs)
    y1, f1, tape1 = tc.forward(x, p, state=st, lengths=L, reverse=reverse)
    g1 = tc.backward(tape1, dy, ds)
    assert y1.shape == y0.shape and all(f1[s].shape == f0[s].shape for s in f0)
    assert all(g1.dparams[k].shape == v.shape for k, v in g0.dparams.items())
    fwd = max([max_rel(y1, y0)] + [max_rel(f1[s], f0[s]) for s in f0])
    bwd = max([max_rel(g1.dx, g0.dx)] + [max_rel(g1.dstate[s], g0.dstate[s]) for s in g0.dstate]
              + [max_rel(g1.dparams[k], g0.dparams[k]) for k in g0.dparams])
    return fwd, bwd


def _ok(errors, dtype):
    tf, tb_ = TOL[dtype]
    assert errors[0] <= tf and errors[1] <= tb_, (errors, TOL[dtype])


# ------------------------------------------------------------------------------ vs the reference

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(SCHEDULES))
@pytest.mark.parametrize("name", list(CELLS))
def test_sized_cells_vs_reference(name, variant, dtype, reverse):
    """T=4, B=3 with lengths [4, 0, random], initial states and dstate, H=7 and every size 4."""
    _ok(_errors(CELLS[name], dtype, SCHEDULES[variant], reverse=reverse), dtype)


@pytest.mark.parametrize("variant", list(SCHEDULES))
@pytest.mark.parametrize("name", ["lstmp", "sized", "two_sizes"])
def test_sizes_larger_than_hidden(name, variant):
    """P (and Q) larger than H: the sized tiles, not H's, bound every load and store."""
    sizes = {k: 5 + i for i, k in enumerate(lstmc.load(CELLS[name]).sizes)}
    _ok(_errors(CELLS[name], "float64", SCHEDULES[variant], T=3, B=2, I=3, H=3, sizes=sizes), "float64")


@pytest.mark.parametrize("name", ["lstmp", "sized"])
def test_multi_tile_grid(name):
    """B=18, H=20, P=18 with 16-wide step tiles: 2 batch tiles x 2 tiles of H and of P, 2 K chunks;
    the persistent design with P padded to 32."""
    for sched in SCHEDULES.values():
        _ok(_errors(CELLS[name], "float64", sched, T=3, B=18, I=3, H=20, sizes={"P": 18}, reverse=True), "float64")


# ------------------------------------------------------------------------------ host paths

def test_graph_workspaces_match_eager_launches():
    """The step design through the CUDA-graph workspaces (emulated on the interpreter): the same
    numbers, bit for bit, as eager launches; a second call reuses the workspace; a P of another
    number is another workspace."""
    prog = lower(lstmc.load("lstmp"))
    x, p, st, L, dy, ds = _problem("lstmp", 4, 3, 3, 6, {"P": 3}, "float32")
    eager = TritonCell(prog, "float32", schedule=STEP16, graphs=False)
    graph = TritonCell(prog, "float32", schedule=STEP16, graphs="emulate")
    for rev in (False, True):
        y0, f0, t0 = eager.forward(x, p, state=st, lengths=L, reverse=rev)
        g0 = eager.backward(t0, dy, ds)
        for _ in range(2):
            y1, f1, t1 = graph.forward(x, p, state=st, lengths=L, reverse=rev)
            g1 = graph.backward(t1, dy, ds)
            np.testing.assert_array_equal(y1, y0)
            for s in f0:
                np.testing.assert_array_equal(f1[s], f0[s])
                np.testing.assert_array_equal(g1.dstate[s], g0.dstate[s])
            np.testing.assert_array_equal(g1.dx, g0.dx)
            for k in g0.dparams:
                np.testing.assert_array_equal(g1.dparams[k], g0.dparams[k])
    assert len(graph._ws) == 1 and graph.graph_stats["replays"] == 8
    x5, p5, st5, L5, dy5, ds5 = _problem("lstmp", 4, 3, 3, 6, {"P": 5}, "float32")
    y5, _, t5 = graph.forward(x5, p5, state=st5, lengths=L5)
    assert y5.shape == (4, 3, 5) and len(graph._ws) == 2
    graph.backward(t5, dy5, ds5)


@pytest.mark.parametrize("variant", list(SCHEDULES))
def test_inference_without_tape(variant):
    """need_tape=False (the ring of two state rows; the persistent kernel's final-state epilogue)
    returns what the taped forward returns."""
    tc = TritonCell(lower(lstmc.parse(TWO)), "float64", schedule=SCHEDULES[variant])
    x, p, st, L, _, _ = _problem(TWO, 5, 3, 3, 6, {"P": 3, "Q": 5}, "float64")
    for rev in (False, True):
        y0, f0, _ = tc.forward(x, p, state=st, lengths=L, reverse=rev)
        y1, f1, tape = tc.forward(x, p, state=st, lengths=L, reverse=rev, need_tape=False)
        assert tape is None
        np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-14)
        for s in f0:
            np.testing.assert_allclose(f1[s], f0[s], rtol=0, atol=1e-14)


def test_torch_tensors_in_and_out():
    """Torch tensors on the kernels' device in, tensors of the sized shapes out; no initial state."""
    tc = lstmc.compile("lstmp", "triton", "float32")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    p = {k: torch.tensor(v, device=dev) for k, v in tc.init_params(3, 6, sizes={"P": 2}).items()}
    x = torch.randn(4, 2, 3, device=dev)
    y, fin, tape = tc.forward(x, p)
    assert tuple(y.shape) == (4, 2, 2) and tuple(fin["h"].shape) == (2, 2) and tuple(fin["c"].shape) == (2, 6)
    g = tc.backward(tape, torch.ones_like(y))
    assert tuple(g.dparams["W_hr"].shape) == (2, 6) and tuple(g.dparams["U_i"].shape) == (6, 2)
    assert tuple(g.dstate["h"].shape) == (2, 2) and tuple(g.dx.shape) == (4, 2, 3)


def test_autotune_with_sizes():
    """autotune(..., sizes=) times a sized cell and remembers the schedule for (B, the widest size),
    which forward then uses; forward(schedule="auto") of a sized cell never tunes implicitly."""
    tc = TritonCell(lower(lstmc.load("lstmp")), "float32")
    cands = [Schedule("persistent"), STEP16]
    best = tc.autotune(T=2, B=2, I=3, H=4, candidates=cands, reps=1, warmup=0, sizes={"P": 6})
    assert best in cands and tc._tuned == {(2, 6): best}
    x, p, st, L, _, _ = _problem("lstmp", 2, 2, 3, 4, {"P": 6}, "float32")
    _, _, tape = tc.forward(x, p, state=st, lengths=L, schedule="auto")
    assert tape.extra["schedule"] == best


# ------------------------------------------------------------------------------ the oracle, the source

def test_generated_source_sizes_its_tiles():
    """Each step kernel spans one size (its grid's second axis), a declared size's number is the
    scalar Z_P, and the persistent kernels own whole rows of P in tiles of BZ_P; an unsized cell's
    kernels have none of it."""
    r = lstmc.compile("lstmp", "triton", "float32").rendered
    assert [r.kernels[k].extent for k in r.fwd_steps] == ["H", "P"]
    assert [r.kernels[k].extent for k in r.bwd_steps] == ["P", "H", "P"]
    for k in r.kernels.values():
        assert "Z_P" in k.scalars and "Z_P" not in k.no_specialize
    assert "BZ_P" in r.kernels["fwd_persistent"].constexprs
    assert "cols_P = tl.arange(0, BZ_P)" in r.source and "cmask_P = cols < Z_P" in r.source
    plain = lstmc.compile("lstm", "triton", "float32").rendered
    assert "Z_" not in plain.source and all(k.extent == "H" and not k.sizes for k in plain.kernels.values())
    # the sized cell's phase 1 has a reduction over P and a product into H: one segment per size
    s = TritonCell(lower(lstmc.parse(SIZED)), "float32").rendered
    assert [s.kernels[k].extent for k in s.fwd_steps] == ["P", "H", "P"]
    assert s.scratch_size == {n: "H" if n == "RS0" else "P" for n in s.scratch}
