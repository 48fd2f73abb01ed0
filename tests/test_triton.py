"""The triton backend against the reference: on Triton's CPU interpreter where there is no CUDA GPU
(TRITON_INTERPRET=1, set here before triton is first imported), compiled on the GPU where there is
one; tests marked `gpu` (realistic sizes, bf16, autotuning) run only there. One test compiles kernels
for an H100 with Triton's real compiler, which needs no GPU.

Tolerances (max |a - b| / max(1, |b|) against the float64 reference, lstmc.check.max_rel):
  float64                        1e-10 (both sides differ by rounding only; measured <= 3e-15)
  float32                        lstmc.check's 2e-6 forward / 2e-4 backward (measured <= 6e-7)
  bfloat16 storage, f32 compute  3e-2 forward / 1e-1 backward. Inputs, weights, outputs and the
                                 tape are rounded to 8 significant bits (unit roundoff 2^-8 = 3.9e-3);
                                 measured over every built-in cell at T=6, B=3, H=13: <= 6.3e-3
                                 forward, <= 3.3e-2 backward (janet)
  float16 storage, f32 compute   5e-3 forward / 1e-2 backward (measured <= 6.7e-4 / 2.9e-3)
The reference gets the same storage-rounded inputs, so the tolerances measure the kernels.
"""

import os
from pathlib import Path
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# Triton picks its CPU interpreter or its GPU compiler once, when it is first imported (its own
# library functions are decorated then). Without CUDA this module turns the interpreter on before
# that import; with CUDA it leaves Triton alone and every test below runs compiled on the GPU.
if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import lstmc  # noqa: E402
from lstmc.backends import triton as tb  # noqa: E402
from lstmc.backends.triton import Schedule, TritonCell  # noqa: E402
from lstmc.check import backend_vs_reference, max_rel, problem  # noqa: E402
from lstmc.lower import lower  # noqa: E402

if not tb.interpreting() and not torch.cuda.is_available():
    pytest.fail("triton was imported before tests/test_triton.py could turn its interpreter on and there is no "
                "CUDA GPU: run with TRITON_INTERPRET=1 in the environment", pytrace=False)

# the built-ins without sized states (the realistic-size GPU tests and the golden snapshots); lstmp
# (`state h[P]`) joins the reference comparison below, and tests/test_triton_sized.py covers sizes
CELLS = [c for c in lstmc.builtin_cells() if not lstmc.load(c).sized]
SIZED_BUILTINS = [c for c in lstmc.builtin_cells() if lstmc.load(c).sized]
STEP16 = Schedule("step", block_b=16, block_h=16, block_k=16)   # small tiles: several programs per grid
SCHEDULES = {"persistent": Schedule("persistent"), "step": STEP16}

# a user-written cell: the gates read U @ m with m = (W_m x) * (U_m h), a staged (second-phase) GEMM
MLSTM = (Path(__file__).resolve().parents[1] / "examples" / "mlstm.cell").read_text()

# two GEMM groups in one phase (U @ h, V @ c), a staged GEMM, every primitive, parameter-only values,
# constants float32 cannot hold exactly, and an output that is not the first state
ODD = """
cell odd
state h, c
output c
a  = sigmoid(W_a @ x + U_a @ h + V_a @ c + b_a)
m  = softplus(W_m @ x + U_m @ h + b_m)
k  = exp(-abs(b_k)) * 0.3
c' = 0.9 * c + 0.1 * a * tanh(m) + k
h' = a * sqrt(1 + c' * c') + relu(U_r @ (a * h) + W_r @ x) - 0.25 + log(1 + a)
"""


def _compiled(cell, dtype="float32", **options):
    return lstmc.compile(cell, "triton", dtype, **options)


def _check(results):
    bad = [f"{r.name}: {r.error:.2e} > {r.tolerance:.0e}" for r in results if not r.ok]
    assert not bad, bad


def _vs_reference(cell, schedule, dtype="float32", **sizes):
    """lstmc.check.backend_vs_reference with this schedule (set on the cached compiled program)."""
    cc = _compiled(cell, dtype)
    old, cc.schedule = cc.schedule, schedule
    try:
        out = []
        for rev in (False, True):
            out += backend_vs_reference(cell, "triton", dtype, reverse=rev, **sizes)
        return out
    finally:
        cc.schedule = old


# ------------------------------------------------------------------------------ vs the reference

@pytest.mark.parametrize("variant", list(SCHEDULES))
@pytest.mark.parametrize("cell", CELLS + SIZED_BUILTINS)
def test_builtin_vs_reference_float32(cell, variant):
    # T=5, B=3 with lengths [5, 0, random] (a full row and a length-0 row), odd H, forward and reverse
    _check(_vs_reference(cell, SCHEDULES[variant], T=5, B=3, I=4, H=7))


@pytest.mark.parametrize("cell", ["lstm", "gru_v1", "indrnn", "peephole_lstm"])
def test_batch_one_odd_hidden(cell):
    for sched in SCHEDULES.values():
        _check(_vs_reference(cell, sched, T=6, B=1, I=3, H=13))


@pytest.mark.parametrize("cell", ["gru_v1", "mgu", MLSTM])
def test_float64_multi_tile_grid(cell):
    # B=18, H=20 with 16-wide tiles: 2 batch tiles x 2 hidden tiles x 2 K chunks, rows past B masked
    for sched in SCHEDULES.values():
        _check(_vs_reference(cell, sched, dtype="float64", T=4, B=18, I=5, H=20))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # 0/0 in padded lanes, masked
def test_user_cells():
    for text in (MLSTM, ODD):
        for sched in SCHEDULES.values():
            _check(_vs_reference(text, sched, T=5, B=3, I=4, H=11))


# --------------------------------------------------------------------------- reduced precision

def _storage_vs_reference(cell, storage, schedule, T=6, B=3, I=5, H=13, seed=1):
    tdt = getattr(torch, storage)
    ref = lstmc.compile(cell, "reference", "float64")
    cc = _compiled(cell, "float32", storage=storage)
    rnd = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(tdt).double().numpy()  # noqa: E731
    dev = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(cc.device, tdt)  # noqa: E731
    x, params, st, L, dy, ds = problem(cell, T=T, B=B, I=I, H=H, seed=seed, dtype=np.float32)
    y0, f0, tape0 = ref.forward(rnd(x), {k: rnd(v) for k, v in params.items()},
                                state={k: rnd(v) for k, v in st.items()}, lengths=L)
    g0 = ref.backward(tape0, rnd(dy), {k: rnd(v) for k, v in ds.items()})
    y1, f1, tape1 = cc.forward(dev(x), {k: dev(v) for k, v in params.items()},
                               state={k: dev(v) for k, v in st.items()}, lengths=L, schedule=schedule)
    g1 = cc.backward(tape1, dev(dy), {k: dev(v) for k, v in ds.items()})
    assert y1.dtype == tdt and all(v.dtype == tdt for v in g1[2].values())
    assert all(v.dtype == torch.float32 for v in tape1.states.values())   # the state stays float32
    n = lambda a: a.double().cpu().numpy()  # noqa: E731
    fwd = max([max_rel(n(y1), y0)] + [max_rel(n(f1[s]), f0[s]) for s in f0])
    bwd = max([max_rel(n(g1[0]), g0[0])] + [max_rel(n(g1[1][s]), g0[1][s]) for s in g0[1]]
              + [max_rel(n(g1[2][p]), g0[2][p]) for p in g0[2]])
    return fwd, bwd


@pytest.mark.parametrize("cell", ["lstm", "gru_v1"])
@pytest.mark.parametrize("variant", list(SCHEDULES))
def test_bfloat16_storage(cell, variant):
    fwd, bwd = _storage_vs_reference(cell, "bfloat16", SCHEDULES[variant])
    assert fwd < 3e-2 and bwd < 1e-1, (fwd, bwd)


def test_float16_storage():
    fwd, bwd = _storage_vs_reference("janet", "float16", STEP16)
    assert fwd < 5e-3 and bwd < 1e-2, (fwd, bwd)


def test_bfloat16_numpy_float32_io():
    # NumPy has no bfloat16: a bfloat16 cell takes float32 arrays (rounded on entry), returns float32
    cc = TritonCell(lower(lstmc.load("gru")), "bfloat16")
    assert cc.dtype == "bfloat16" and cc.compute_dtype == "float32"
    x, params, st, L, dy, _ = problem("gru", T=3, B=2, I=3, H=5, dtype=np.float32)
    y, fin, tape = cc.forward(x, params, state=st, lengths=L)
    dx, dst, dp = cc.backward(tape, dy)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and dx.dtype == np.float32
    ref = lstmc.compile("gru", "reference", "float64")
    y0, _, _ = ref.forward(x.astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()},
                           state={k: v.astype(np.float64) for k, v in st.items()}, lengths=L)
    assert max_rel(y, y0) < 3e-2


# ------------------------------------------------------------------------------------ schedules

@pytest.mark.parametrize("cell", ["lstm", "gru_v1", "indrnn"])
def test_schedules_agree(cell):
    cc = _compiled(cell)
    x, params, st, L, dy, ds = problem(cell, T=4, B=18, I=5, H=20, seed=3, dtype=np.float32)
    outs = []
    for sched in (Schedule("persistent"), Schedule("persistent", block_b=32, num_warps=8), STEP16,
                  Schedule("step", block_b=32, block_h=32, block_k=16)):
        y, fin, tape = cc.forward(x, params, state=st, lengths=L, reverse=True, schedule=sched)
        assert tape.extra["schedule"] == sched
        outs.append((y, fin, *cc.backward(tape, dy, ds)))
    y0, f0, dx0, ds0, dp0 = outs[0]
    for y, fin, dx, dst, dp in outs[1:]:
        assert max_rel(y, y0) < 1e-6 and max(max_rel(fin[s], f0[s]) for s in fin) < 1e-6
        assert max_rel(dx, dx0) < 1e-5 and max(max_rel(dst[s], ds0[s]) for s in dst) < 1e-5
        assert max(max_rel(dp[p], dp0[p]) for p in dp) < 1e-5


def test_persistent_falls_back_to_step_when_weights_do_not_fit():
    cc = TritonCell(lower(lstmc.load("lstm")), "float32")
    assert cc.resolve(Schedule("persistent"), B=2, H=7).variant == "persistent"
    cc.persistent_budget = 0
    sched = cc.resolve(Schedule("persistent"), B=2, H=7)
    assert sched.variant == "step"
    x, params, st, L, dy, ds = problem("lstm", T=3, B=2, I=3, H=7, dtype=np.float32)
    y, _, tape = cc.forward(x, params, state=st, lengths=L, schedule="persistent")
    assert tape.extra["schedule"].variant == "step"


def test_need_tape_false_matches():
    for cell in ("gru_v1", "lstm"):
        cc = _compiled(cell)
        x, params, st, L, _, _ = problem(cell, T=5, B=3, I=4, H=6, dtype=np.float32)
        for sched in SCHEDULES.values():
            y, fin, tape = cc.forward(x, params, state=st, lengths=L, schedule=sched)
            y2, fin2, none = cc.forward(x, params, state=st, lengths=L, need_tape=False, schedule=sched)
            assert none is None
            np.testing.assert_array_equal(y, y2)
            for s in fin:
                np.testing.assert_array_equal(fin[s], fin2[s])


def test_autotune_machinery():
    cc = TritonCell(lower(lstmc.load("mgu")), "float32")
    cands = [Schedule("persistent"), STEP16]
    best = cc.autotune(T=2, B=2, I=3, H=7, candidates=cands, reps=1, warmup=0)
    assert best in cands and [s for _, s in cc.tuning] != []
    assert cc.resolve(None, 2, 7) == best
    assert cc.default_schedule(2, 7).variant == "persistent"
    assert cc.candidates(2, 7)


def test_schedule_validation():
    with pytest.raises(ValueError, match="variant"):
        Schedule("fastest")
    with pytest.raises(ValueError, match="block_h"):
        Schedule("step", block_h=24)
    with pytest.raises(ValueError, match="power of two >= 16"):
        Schedule("step", block_b=8)
    cc = _compiled("gru")
    x, params, *_ = problem("gru", T=2, B=2, I=3, H=4, lengths=False, dtype=np.float32)
    with pytest.raises(ValueError, match="schedule"):
        cc.forward(x, params, schedule="quick")


# -------------------------------------------------------------------------------- CUDA graphs

# real CUDA graphs on a GPU; on the interpreter the same static-workspace path with the launches re-run
GRAPHS = "emulate" if tb.interpreting() else True


def _graph_problem(cell, storage, cc, seeds=(1, 2, 3), T=5, B=3, I=4, H=7):
    tdt = getattr(torch, storage)
    dev = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(cc.device, tdt)  # noqa: E731
    out = []
    for seed in seeds:
        x, params, st, L, dy, ds = problem(cell, T=T, B=B, I=I, H=H, seed=seed, dtype=np.float32)
        out.append((dev(x), {k: dev(v) for k, v in params.items()}, {k: dev(v) for k, v in st.items()}, L,
                    dev(dy), {k: dev(v) for k, v in ds.items()}))
    return out


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return torch.equal(a, b)


def test_a_workspace_is_never_handed_out_twice_at_once():
    # two calls of one shape in flight (two Python threads): the second gets its own workspace; a
    # forward that fails after taking one releases it, and an older tape of it reads as stale
    gc = TritonCell(lower(lstmc.load("gru")), "float32", graphs=GRAPHS, schedule=STEP16)
    key = ("step", STEP16, 5, 3, 4, 7, False)
    a = gc._acquire(key)
    b = gc._acquire(key)
    assert a is not b and a.busy and b.busy and not a.free()
    a.busy = False
    assert gc._acquire(key) is a
    (x, p, st, L, dy, ds), = _graph_problem("gru", "float32", gc, seeds=(1,))
    y, _, tape = gc.forward(x, p, state=st, lengths=L)
    gc.backward(tape, dy, ds)                      # its workspace is released for the next forward
    assert tape.extra.get("graph") is not None
    real = gc._forward_graph
    gc._forward_graph = lambda *a, **k: 1 / 0
    with pytest.raises(ZeroDivisionError):
        gc.forward(x, p, state=st, lengths=L)      # takes the released workspace, then fails
    gc._forward_graph = real
    with pytest.raises(RuntimeError, match="reused"):
        gc.backward(tape, dy, ds)
    assert all(w.free() for w in gc._ws if w is not a and w is not b)


@pytest.mark.parametrize("cell,storage", [("lstm", "float32"), ("gru_v1", "float32"), ("lstm", "bfloat16")])
def test_graphs_match_eager_with_several_live_tapes(cell, storage):
    # Two forwards of one shape before either backward (a bidirectional or 2-layer net does this), the
    # backwards in the other order, then a loop that keeps the last tape alive after its backward (as
    # a training loop's autograd graph does): every result equals the eager launches', bit for bit.
    prog = lower(lstmc.load(cell))
    gc = TritonCell(prog, storage, graphs=GRAPHS, schedule=STEP16)
    ec = TritonCell(prog, storage, graphs=False, schedule=STEP16)
    probs = _graph_problem(cell, storage, gc)

    def fw(c, p, rev=False, need_tape=True):
        return c.forward(p[0], p[1], state=p[2], lengths=p[3], reverse=rev, need_tape=need_tape)

    def bw(c, tape, p):
        return c.backward(tape, p[4], p[5])

    for rev in (False, True):
        ya, fa, ta = fw(gc, probs[0], rev)
        yb, fb, tb2 = fw(gc, probs[1], rev)
        assert ta.extra["graph"].ws is not tb2.extra["graph"].ws       # two live tapes: two workspaces
        gb, ga = bw(gc, tb2, probs[1]), bw(gc, ta, probs[0])
        e0, e1 = fw(ec, probs[0], rev), fw(ec, probs[1], rev)
        assert _same((ya, fa), e0[:2]) and _same((yb, fb), e1[:2])
        assert _same(ga, bw(ec, e0[2], probs[0])) and _same(gb, bw(ec, e1[2], probs[1]))
        kept = []
        for i in range(3):
            p = probs[i]
            y, f, t = fw(gc, p, rev)
            g = bw(gc, t, p)
            ey, ef, et = fw(ec, p, rev)
            assert _same((y, f), (ey, ef)) and _same(g, bw(ec, et, p)), (rev, i)
            kept.append(t)               # alive, but its backward ran: the workspace is reused
        yn, fn, none = fw(gc, probs[2], rev, need_tape=False)
        assert none is None and _same((yn, fn), fw(ec, probs[2], rev, need_tape=False)[:2])
    assert gc.graph_stats["replays"] == 2 * (4 + 3 * 2 + 1) and gc.graph_stats["eager"] == 0
    assert 2 <= len(gc._ws) <= 3 and gc.graph_bytes() > 0
    assert not ec._ws and ec.graph_stats["replays"] == 0


def test_graph_cache_bound_and_stale_tape():
    prog = lower(lstmc.load("gru"))
    gc = TritonCell(prog, "float32", graphs=GRAPHS, schedule=STEP16, graph_cache=1)
    ec = TritonCell(prog, "float32", graphs=False, schedule=STEP16)
    p0, p1 = _graph_problem("gru", "float32", gc, seeds=(4, 5))
    _, _, t0 = gc.forward(p0[0], p0[1], state=p0[2], lengths=p0[3])
    y1, _, t1 = gc.forward(p1[0], p1[1], state=p1[2], lengths=p1[3])   # the one workspace is taken: eager
    assert gc.graph_stats["eager"] == 1 and "graph" not in t1.extra and len(gc._ws) == 1
    ey, _, et = ec.forward(p1[0], p1[1], state=p1[2], lengths=p1[3])
    assert _same(y1, ey) and _same(gc.backward(t1, p1[4]), ec.backward(et, p1[4]))
    gc.backward(t0, p0[4])                                   # releases the workspace ...
    _, _, t2 = gc.forward(p1[0], p1[1], state=p1[2], lengths=p1[3])    # ... which this call reuses
    assert t2.extra["graph"].ws is t0.extra["graph"].ws
    with pytest.raises(RuntimeError, match="reused"):
        gc.backward(t0, p0[4])                               # t0's arrays were overwritten: refused
    gc.clear_graphs()
    assert gc.graph_bytes() == 0
    gc.backward(t2, p1[4])                                   # a tape keeps its workspace alive


def test_graphs_option():
    prog = lower(lstmc.load("gru"))
    with pytest.raises(ValueError, match="graphs must be"):
        TritonCell(prog, "float32", graphs="yes")
    with pytest.raises(ValueError, match="graph_cache"):
        TritonCell(prog, "float32", graph_cache=-1)
    if tb.interpreting():
        assert TritonCell(prog, "float32").graphs is False
        with pytest.raises(ValueError, match="graphs=True needs CUDA"):
            TritonCell(prog, "float32", graphs=True)
    else:
        assert TritonCell(prog, "float32").graphs is True


# ------------------------------------------------------------------------------------------ API

def test_torch_tensors_in_and_out_without_copies():
    cc = _compiled("lstm")
    x, params, st, L, dy, ds = problem("lstm", T=3, B=2, I=3, H=5, dtype=np.float32)
    dev = lambda a: torch.from_numpy(a).to(cc.device)  # noqa: E731 - CPU under the interpreter, else CUDA
    xt = dev(x)
    y, fin, tape = cc.forward(xt, {k: dev(v) for k, v in params.items()},
                              state={k: dev(v) for k, v in st.items()}, lengths=L)
    assert isinstance(y, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in fin.values())
    assert tape.x.data_ptr() == xt.data_ptr()             # the input is read in place
    dx, dst, dp = cc.backward(tape, dev(dy), {k: dev(v) for k, v in ds.items()})
    assert isinstance(dx, torch.Tensor) and all(isinstance(v, torch.Tensor) for v in dp.values())
    y2, _, tape2 = cc.forward(x, params, state=st, lengths=L)
    assert isinstance(y2, np.ndarray)
    np.testing.assert_allclose(y.cpu().numpy(), y2, rtol=0, atol=0)
    dx2, _, _ = cc.backward(tape2, dy, ds)
    np.testing.assert_allclose(dx.cpu().numpy(), dx2, rtol=0, atol=0)


def test_default_state_and_dstate():
    cc = _compiled("peephole_lstm")
    ref = lstmc.compile("peephole_lstm", "reference", "float64")
    x, params, _, _, dy, _ = problem("peephole_lstm", T=4, B=2, I=3, H=5, lengths=False, dtype=np.float32)
    y, fin, tape = cc.forward(x, params)
    dx, dst, dp = cc.backward(tape, dy)
    up = {k: v.astype(np.float64) for k, v in params.items()}
    y0, f0, t0 = ref.forward(x.astype(np.float64), up)
    dx0, dst0, dp0 = ref.backward(t0, dy.astype(np.float64))
    assert max_rel(y, y0) < 2e-6 and max_rel(dx, dx0) < 2e-4
    assert max(max_rel(dp[p], dp0[p]) for p in dp) < 2e-4


BAD = [
    (lambda x, p, s, L: (x.astype(np.float64), p, s, L, {}), "x has dtype float64"),
    (lambda x, p, s, L: (x[0], p, s, L, {}), "x must be a 3-D array"),
    (lambda x, p, s, L: (x, {k: v for k, v in p.items() if k != "U_z"}, s, L, {}), "missing U_z"),
    (lambda x, p, s, L: (x, {**p, "b_z": p["b_z"][:-1]}, s, L, {}), r"params\['b_z'\] has shape"),
    (lambda x, p, s, L: (x, p, {"h": s["h"][:1]}, L, {}), r"state\['h'\] has shape"),
    (lambda x, p, s, L: (x, p, {"q": s["h"]}, L, {}), "state has unknown entries"),
    (lambda x, p, s, L: (x, p, s, np.array([9, 1, 1]), {}), "lengths must lie in"),
    (lambda x, p, s, L: (x, p, s, np.array([1, 1]), {}), "lengths must be a 1-D array of 3"),
    (lambda x, p, s, L: (torch.from_numpy(x).to("meta"), p, s, L, {}), "x is on meta"),
    (lambda x, p, s, L: (x, p, s, L, {"schedule": {"variant": "step", "block_k": 20}}), "block_k"),
]


@pytest.mark.parametrize("make,match", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_value_error(make, match):
    cc = _compiled("gru_v1")
    x, params, st, L, dy, ds = problem("gru_v1", T=3, B=3, I=4, H=5, dtype=np.float32)
    x, params, st, L, kw = make(x, params, st, L)
    with pytest.raises(ValueError, match=match):
        cc.forward(x, params, state=st, lengths=L, **kw)


def test_bad_backward_arguments():
    cc = _compiled("gru_v1")
    x, params, st, L, dy, ds = problem("gru_v1", T=3, B=3, I=4, H=5, dtype=np.float32)
    _, _, tape = cc.forward(x, params, state=st, lengths=L)
    with pytest.raises(ValueError, match="dy has shape"):
        cc.backward(tape, dy[:2])
    with pytest.raises(ValueError, match="dy has dtype float64"):
        cc.backward(tape, dy.astype(np.float64))
    with pytest.raises(ValueError, match=r"dstate\['h'\] has shape"):
        cc.backward(tape, dy, {"h": ds["h"][:, :2]})
    with pytest.raises(ValueError, match="tape must be"):
        cc.backward(None, dy)
    numba_like = lstmc.compile("gru_v1", "reference", "float32").forward(x, params, state=st, lengths=L)[2]
    with pytest.raises(ValueError, match="tape must come from"):
        cc.backward(numba_like, dy)


def test_bad_dtype():
    prog = lower(lstmc.load("gru"))
    with pytest.raises(ValueError, match="dtype must be"):
        TritonCell(prog, "int32")
    with pytest.raises(ValueError, match="storage"):
        TritonCell(prog, "float64", storage="bfloat16")


def test_clear_error_without_gpu_or_interpreter(monkeypatch):
    prog = lower(lstmc.load("gru"))
    monkeypatch.setattr(tb, "interpreting", lambda: False)           # Triton imported for a GPU ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # ... and there is none
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*TRITON_INTERPRET=1"):
        TritonCell(prog, "float32")
    monkeypatch.setenv("TRITON_INTERPRET", "1")                      # set, but after `import triton`
    with pytest.raises(RuntimeError, match="only after `import triton` ran"):
        TritonCell(prog, "float32")
    monkeypatch.setitem(__import__("sys").modules, "triton", None)   # `import triton` now fails
    with pytest.raises(RuntimeError, match="needs Triton, which failed to import"):
        TritonCell(prog, "float32")


def test_generated_source_emit_and_cache(tmp_path):
    from lstmc.cli import main

    cc = _compiled("gru_v1")
    head = cc.source.splitlines()[0]
    assert "gru_v1" in head and cc.key in head and lstmc.__version__ in head
    for name in ("fwd_step0", "fwd_step1", "bwd_step2", "fwd_persistent", "bwd_persistent"):
        assert f"def {name}(" in cc.source
    assert "@triton.jit(do_not_specialize=['T', 'B'])" in cc.source   # batch size never recompiles
    from lstmc.backends.cache import cache_dir

    files = list((cache_dir() / "triton").glob("gru_v1_float32_*.py"))
    assert any(f.read_text() == cc.source for f in files)
    assert main(["compile", "gru_v1", "--backend", "triton", "--emit", str(tmp_path)]) == 0
    out = tmp_path / "gru_v1_triton_float32.py"
    assert out.read_text() == cc.source


# ------------------------------------------------------------------------------------------ GPU

gpu = pytest.mark.skipif(not torch.cuda.is_available() or tb.interpreting(), reason="needs a CUDA GPU")


def _gpu_cell(cell, storage):
    return TritonCell(lower(lstmc.load(cell)), storage)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("storage", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell", CELLS + [MLSTM])
def test_gpu_realistic_sizes(cell, storage):
    # float32: elementwise max_rel as everywhere else. bfloat16: normwise error per tensor,
    # |a - b| / |b|. Elementwise error is the wrong yardstick at T=64 with 8-bit storage: a gradient
    # entry that is a small sum of large terms of both signs keeps the absolute error of its terms
    # (measured on an H100: indrnn dW elementwise 3.3 but normwise 1.1e-2; with float16 storage
    # 1.3 / 3.0e-3, float32 7e-6 / 1.2e-7 -- the error follows the unit roundoff, 2^-8 / 2^-11 /
    # 2^-24, and both schedules agree to the last digit). Worst normwise over indrnn, janet and
    # lstm: 2.3e-3 forward, 1.5e-2 backward (indrnn); the other cells passed elementwise 5e-2/2e-1.
    cc = _gpu_cell(cell, storage)
    assert cc.device == "cuda" and not cc.interpret
    tol = {"float32": (1e-4, 2e-3), "bfloat16": (2e-2, 5e-2)}[storage]   # T=64 sums more terms
    err = max_rel if storage == "float32" else (
        lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)))
    T, B, I, H = 64, 16, 128, 256
    for sched in [cc.default_schedule(B, H), Schedule("step", block_b=16, block_h=64, block_k=32),
                  Schedule("persistent", num_warps=8)]:
        for rev in (False, True):
            tdt = getattr(torch, storage)
            ref = lstmc.compile(cell, "reference", "float64")
            x, params, st, L, dy, ds = problem(cell, T=T, B=B, I=I, H=H, seed=0, dtype=np.float32)
            dev = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(tdt).cuda()  # noqa: E731
            back = lambda a: a.double().cpu().numpy()  # noqa: E731
            rnd = lambda a: back(dev(a))  # noqa: E731
            y0, f0, t0 = ref.forward(rnd(x), {k: rnd(v) for k, v in params.items()},
                                     state={k: rnd(v) for k, v in st.items()}, lengths=L, reverse=rev)
            g0 = ref.backward(t0, rnd(dy), {k: rnd(v) for k, v in ds.items()})
            y1, f1, t1 = cc.forward(dev(x), {k: dev(v) for k, v in params.items()},
                                    state={k: dev(v) for k, v in st.items()}, lengths=L, reverse=rev, schedule=sched)
            g1 = cc.backward(t1, dev(dy), {k: dev(v) for k, v in ds.items()})
            fwd = max([err(back(y1), y0)] + [err(back(f1[s]), f0[s]) for s in f0])
            bwd = max([err(back(g1[0]), g0[0])] + [err(back(g1[2][p]), g0[2][p]) for p in g0[2]])
            assert fwd < tol[0] and bwd < tol[1], (sched, rev, fwd, bwd)


@pytest.mark.gpu
@gpu
def test_gpu_graphs_in_a_two_layer_bidirectional_net():
    # lstmc.nn runs both directions of a layer with the same shapes before any backward, and a training
    # loop keeps the last step's autograd graph (and its tapes) alive into the next forward. Gradients
    # with CUDA graphs (step schedule forced) against the torch backend in float64 on the CPU.
    from lstmc.nn import Recurrent

    cc = lstmc.compile("lstm", "triton", "float32")       # the program lstmc.nn uses
    assert cc.graphs is True
    old, cc.schedule = cc.schedule, Schedule("step", block_b=16, block_h=32, block_k=32)
    before = dict(cc.graph_stats)
    try:
        torch.manual_seed(0)
        net = Recurrent("lstm", 24, 48, num_layers=2, bidirectional=True, backend="triton", device="cuda")
        ref = Recurrent("lstm", 24, 48, num_layers=2, bidirectional=True, backend="torch", dtype=torch.float64)
        ref.load_state_dict({k: v.detach().double().cpu() for k, v in net.state_dict().items()})
        keep = []
        for it in range(3):
            x = torch.randn(20, 5, 24, device="cuda")
            lengths = [20, 13, 1, 20, 7][it:] + [20, 13, 1, 20, 7][:it]
            w = torch.randn(20, 5, 96, device="cuda")
            outs = []
            for m, xx, ww in ((net, x, w), (ref, x.double().cpu(), w.double().cpu())):
                m.zero_grad()
                xx = xx.clone().requires_grad_(True)
                y, (h, c) = m(xx, lengths=lengths)
                ((y * ww).sum() + (h * c).sum()).backward()
                outs.append((y, xx.grad, {k: v.grad for k, v in m.named_parameters()}))
            (y, dx, dp), (y0, dx0, dp0) = outs
            n = lambda a: a.detach().double().cpu().numpy()  # noqa: E731
            assert max_rel(n(y), n(y0)) < 1e-5 and max_rel(n(dx), n(dx0)) < 1e-4, it
            assert max(max_rel(n(dp[k]), n(dp0[k])) for k in dp) < 1e-4, it
            keep.append(y)      # the graph of this step stays alive into the next one
        assert cc.graph_stats["replays"] - before["replays"] >= 3 * 4 * 2
        assert cc.graph_stats["eager"] == before["eager"] and cc.graph_stats["capture_failed"] == 0
    finally:
        cc.schedule = old


@pytest.mark.gpu
@gpu
def test_gpu_autotune_picks_a_schedule():
    cc = _gpu_cell("lstm", "bfloat16")
    best = cc.autotune(T=32, B=16, I=64, H=128, reps=3)
    assert best in [s for _, s in cc.tuning]


# ---------------------------------------------------------- ahead-of-time compile for an H100

AHEAD = r"""
import json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
try:
    import triton.backends.nvidia  # noqa: F401
except Exception as e:
    print("SKIP", e); sys.exit(0)
import lstmc
from lstmc.lower import lower
from lstmc.backends.triton import compile_ahead, persistent_fits
out = {}
for cell, storage, kernels, sizes in json.loads(sys.argv[1]):
    prog = lower(lstmc.load(cell))
    out[f"{cell}/{storage}"] = compile_ahead(prog, storage, H=64, kernels=kernels, sizes=sizes)
    # would the host launch the persistent kernels on an H100 (227 KiB per block)?
    out[f"{cell}/{storage}"]["fits"] = persistent_fits(prog, 64, 4 if storage == "float32" else 2, 227 * 1024)
print("RESULT", json.dumps(out))
"""


def test_kernels_compile_for_sm90():
    """The real compiler, not the interpreter: Triton compiles for sm_90 without a GPU. lstm's float32
    bwd_persistent aborted inside LLVM's SLP vectorizer before lstmc's compiler guard; gru_v1 in
    bfloat16 covers a multi-phase cell on tensor cores. In a subprocess, as an abort kills the process."""
    import json
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[1] / "examples"
    jobs = [("lstm", "float32", ["bwd_persistent", "fwd_persistent", "fwd_step0"], None),
            ("gru_v1", "bfloat16", None, None),
            # the second edition: row reductions (step and persistent forms) and selects/masks
            (str(examples / "layernorm_lstm.cell"), "float32", None, None),
            (str(examples / "slstm.cell"), "float32", ["fwd_persistent", "bwd_persistent"], None),
            # sized states: every lstmp kernel (H=64, P=32), tiles of two sizes
            ("lstmp", "float32", None, {"P": 32}), ("lstmp", "bfloat16", None, {"P": 32})]
    p = subprocess.run([sys.executable, "-c", AHEAD, json.dumps(jobs)], capture_output=True, text=True,
                       timeout=600, env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    last = (p.stdout.strip().splitlines() or [""])[-1]
    if last.startswith("SKIP"):
        pytest.skip(f"Triton's NVIDIA backend is not available: {last}")
    assert p.returncode == 0 and last.startswith("RESULT"), (p.returncode, p.stderr[-2000:])
    res = json.loads(last[len("RESULT "):])
    fits = {key: r.pop("fits") for key, r in res.items()}
    assert set(res["lstm/float32"]) == {"bwd_persistent", "fwd_persistent", "fwd_step0"}
    gru = res["gru_v1/bfloat16"]
    assert set(gru) == {"fwd_step0", "fwd_step1", "bwd_step0", "bwd_step1", "bwd_step2", "fwd_persistent",
                        "bwd_persistent"}
    ln = res[f"{examples / 'layernorm_lstm.cell'}/float32"]
    assert {"fwd_persistent", "bwd_persistent"} <= set(ln) and sum(k.startswith("fwd_step") for k in ln) >= 3
    assert all(v["spills"] == 0 for r in res.values() for v in r.values())
    assert gru["fwd_persistent"]["mma"] > 0 and gru["bwd_step2"]["mma"] > 0        # bf16 dots on tensor cores
    for storage in ("float32", "bfloat16"):
        assert set(res[f"lstmp/{storage}"]) == {"fwd_step0", "fwd_step1", "bwd_step0", "bwd_step1", "bwd_step2",
                                                "fwd_persistent", "bwd_persistent"}, storage
    assert res["lstmp/bfloat16"]["fwd_persistent"]["mma"] > 0       # the [B, P] x [P, 4H] dot on tensor cores
    # an H100 block's limit: every kernel the host would launch fits it. layernorm_lstm's backward
    # persistent kernel does not at H = 64, and the schedule's estimate knows it (the step kernels run)
    for key, r in res.items():
        for k, v in r.items():
            assert v["shared"] <= 227 * 1024 or (k.endswith("persistent") and not fits[key]), (key, k, v)
    assert not fits[f"{examples / 'layernorm_lstm.cell'}/float32"] and fits["lstm/float32"]


# -------------------------------------------------------------------------------------- golden

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", CELLS)
def test_generated_triton_code_matches_golden_snapshot(name):
    """A change to the Triton generator shows up here as a reviewable diff, as numba's does.
    Regenerate with: LSTMC_UPDATE_GOLDEN=1 make test (then review `git diff tests/golden`)."""
    src = lstmc.compile(name, "triton", "float32").rendered.source
    path = GOLDEN / f"{name}_triton_float32.py"
    if os.environ.get("LSTMC_UPDATE_GOLDEN"):
        path.write_text(src)
    assert path.exists(), f"no golden file {path}; run with LSTMC_UPDATE_GOLDEN=1"
    assert src == path.read_text(), f"generated Triton code for {name} changed; review and update the golden file"
