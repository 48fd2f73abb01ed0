"""The numba backend: every cell vs the reference, determinism, bad input, SIMD, build cache, golden code."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import lstmc
from lstmc import check
from lstmc.backends import numba as nbmod
from lstmc.backends.numba import options, prelude_f32

CELLS = lstmc.builtin_cells()
GOLDEN = Path(__file__).parent / "golden"

SIZES = [  # T, B, I, H: B=1, T=1, H not a multiple of 8 or 16
    (7, 3, 5, 13),
    (1, 1, 1, 1),
    (1, 4, 3, 9),
    (12, 1, 2, 17),
    (5, 2, 4, 24),
    (4, 9, 3, 10),      # more rows than nbmod.SMALL_ROWS: the step products go to BLAS
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T%dB%dI%dH%d" % s)
@pytest.mark.parametrize("name", CELLS)
def test_numba_vs_reference(name, size, dtype):
    """Forward and backward with lengths (incl. 0), initial state, both directions.
    Tolerances (lstmc/check.py): float64 1e-10; float32 2e-6 forward, 2e-4 backward (growing as sqrt(T/100) beyond T=100)."""
    T, B, I, H = size
    for reverse in (False, True):
        for r in check.backend_vs_reference(name, "numba", dtype, T=T, B=B, I=I, H=H, reverse=reverse):
            assert r.ok, r


@pytest.mark.parametrize("name", ["lstm", "gru_v1", "janet"])
def test_numba_float32_tolerance_holds_at_T_1000(name):
    for r in check.backend_vs_reference(name, "numba", "float32", T=1000, B=3, I=6, H=20):
        assert r.ok, r


def test_numba_without_lengths_or_initial_state():
    nb = lstmc.compile("peephole_lstm", "numba", "float64")
    ref = lstmc.compile("peephole_lstm")
    p = nb.init_params(4, 6)
    x = np.random.default_rng(1).normal(size=(5, 2, 4))
    y0, s0, t0 = ref.forward(x, p)
    y1, s1, t1 = nb.forward(x, p)
    np.testing.assert_allclose(y1, y0, atol=1e-14)
    g0 = ref.backward(t0, np.ones_like(y0))
    g1 = nb.backward(t1, np.ones_like(y1))
    np.testing.assert_allclose(g1[0], g0[0], atol=1e-13)
    y2, s2, t2 = nb.forward(x, p, need_tape=False)
    assert t2 is None
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(s2["c"], s1["c"])


@pytest.mark.parametrize("name", ["lstm", "gru_v1"])
def test_bitwise_deterministic(name):
    nb = lstmc.compile(name, "numba", "float32")
    x, params, st, L, dy, ds = check.problem(name, T=20, B=8, I=16, H=32, dtype=np.float32)
    runs = []
    for _ in range(3):
        y, fin, tape = nb.forward(x, params, state=st, lengths=L)
        runs.append((y, nb.backward(tape, dy, ds)))
    for y, (dx, dst, dp) in runs[1:]:
        assert np.array_equal(y, runs[0][0])
        assert np.array_equal(dx, runs[0][1][0])
        assert all(np.array_equal(dp[k], runs[0][1][2][k]) for k in dp)


def test_recycled_memory_never_overwrites_live_results():
    """Tapes, outputs and packed weights reuse memory only once nothing holds them: two forwards
    before either backward, outputs kept across calls, and a tape whose arrays live on as views."""
    nb = lstmc.compile("gru_v1", "numba", "float32")
    ref = lstmc.compile("gru_v1", "reference", "float64")
    runs = [check.problem("gru_v1", T=6, B=5, I=3, H=7, seed=s, dtype=np.float32) for s in (1, 2)]
    kept = [nb.forward(x, p, state=st, lengths=L) for x, p, st, L, dy, ds in runs]   # both alive at once
    ys = [y.copy() for y, _, _ in kept]
    for (x, p, st, L, dy, ds), (y, fin, tape), y_copy in zip(runs, kept, ys):
        for _ in range(3):                              # more calls that want the same sizes
            nb.backward(nb.forward(x, p, state=st, lengths=L)[2], dy, ds)
        assert np.array_equal(y, y_copy)
        g = nb.backward(tape, dy, ds)
        y0, _, t0 = ref.forward(x.astype(np.float64), {k: v.astype(np.float64) for k, v in p.items()},
                                state={k: v.astype(np.float64) for k, v in st.items()}, lengths=L)
        g0 = ref.backward(t0, dy.astype(np.float64), {k: v.astype(np.float64) for k, v in ds.items()})
        assert check.max_rel(y, y0) < 2e-6 and check.max_rel(g[0], g0[0]) < 2e-4
        assert all(check.max_rel(g[2][k], g0[2][k]) < 2e-4 for k in g0[2])
    nb.empty_cache()
    y, _, tape = nb.forward(*runs[0][:2])
    assert np.isfinite(nb.backward(tape, runs[0][4])[0]).all()


PLANS = ["1,1", "2,1", "3,2", "64,1"]   # one thread; row chunks, incl. uneven ones and more chunks than rows


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("name", ["lstm", "gru_v1", "janet"])
def test_thread_plans_match_the_reference(name, plan, monkeypatch):
    """Every thread plan computes the same function: row chunks run the time loops on disjoint rows
    at once, each with its own bias-gradient sums (lengths incl. 0, reverse, initial state)."""
    monkeypatch.setenv("LSTMC_NUMBA_PLAN", plan)
    for dtype in ("float64", "float32"):
        for reverse in (False, True):
            for r in check.backend_vs_reference(name, "numba", dtype, T=6, B=5, I=3, H=11, reverse=reverse):
                assert r.ok, (plan, r)


def test_thread_plan_choice(monkeypatch):
    nb = lstmc.compile("lstm", "numba", "float32")
    monkeypatch.setenv("LSTMC_NUMBA_PLAN", "default")
    assert nb.plan(64, 32) == nbmod.Plan(1, lstmc.threads.budget())
    monkeypatch.setenv("LSTMC_NUMBA_PLAN", "4,1")
    assert nb.plan(64, 32) == nbmod.Plan(4, 1) and nb.plan(3, 32) == nbmod.Plan(3, 1)
    monkeypatch.setenv("LSTMC_NUMBA_PLAN", "auto")
    monkeypatch.setattr(lstmc.threads, "_n", 2)          # a budget of 2 whatever this machine has
    chosen = nb.plan(32, 16)
    assert chosen in (nbmod.Plan(1, 2), nbmod.Plan(1, 1), nbmod.Plan(2, 1))
    assert nb.plans[(32, 16, 2)] == chosen                # measured once, then reused
    monkeypatch.setenv("LSTMC_NUMBA_PLAN", "two")
    with pytest.raises(ValueError, match="LSTMC_NUMBA_PLAN='two': use 'default', 'auto' or 'CHUNKS,BLAS_THREADS'"):
        nb.plan(8, 8)


def _pool_sizes():
    return [c.num_threads for c in lstmc.threads._blas().lib_controllers]


def test_thread_budget_holds_across_python_threads():
    """A plan that lowers BLAS threads in a worker thread restores them, and set_num_threads from
    another thread still takes effect afterwards (threadpoolctl >= 3.8 lets only one thread resize
    OpenBLAS unless that role is given up, which lstmc.threads does)."""
    import threading

    before = _pool_sizes()
    seen = []

    def worker():
        with lstmc.threads.blas_threads(1):
            seen.append(_pool_sizes())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [[1] * len(before)] and _pool_sizes() == before
    try:
        lstmc.set_num_threads(1)
        assert _pool_sizes() == [1] * len(before) and lstmc.threads.budget() == 1
        # contexts opened by two threads at once: the last to close restores the first's sizes
        a, b = lstmc.threads.blas_threads(2), lstmc.threads.blas_threads(3)
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        assert _pool_sizes() == [1] * len(before)
    finally:
        lstmc.set_num_threads(max(before))


_FORK = """
import os, signal, sys, numpy as np
os.environ["LSTMC_NUMBA_PLAN"] = "2,1"
import lstmc
nb = lstmc.compile("lstm", "numba", "float32")
x, p = np.ones((3, 16, 4), np.float32), nb.init_params(4, 5)
y0 = nb.forward(x, p)[0]
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    ok = np.array_equal(nb.forward(x, p)[0], y0)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_row_chunks_work_in_a_forked_child():
    """The chunk threads of the parent do not exist after fork(): the child makes its own pool."""
    r = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split()[-1] == "0", r.stdout + r.stderr


def test_row_chunks_cover_every_row_once():
    for B in (1, 2, 7, 64):
        for c in (1, 2, 3, 5):
            ranges = nbmod.row_ranges(B, min(c, B))
            assert [b for lo, hi in ranges for b in range(lo, hi)] == list(range(B))
            assert all(hi > lo for lo, hi in ranges)


BAD = [
    ("dtype", lambda x, p: dict(x=x.astype(np.float64), params=p), "x has dtype float64"),
    ("non-contiguous x", lambda x, p: dict(x=np.asfortranarray(x), params=p), "x is not C-contiguous"),
    ("non-contiguous param", lambda x, p: dict(x=x, params=p | {"U_r": np.asfortranarray(p["U_r"])}),
     "params['U_r'] is not C-contiguous"),
    ("param dtype", lambda x, p: dict(x=x, params=p | {"b_ir": p["b_ir"].astype(np.float64)}),
     "params['b_ir'] has dtype float64"),
    ("shape", lambda x, p: dict(x=x[:, :, :2], params=p), "x has shape"),
    ("torch tensor", lambda x, p: dict(x=__import__("torch").from_numpy(x), params=p), "must be a NumPy array"),
    ("state shape", lambda x, p: dict(x=x, params=p, state={"h": np.zeros((3, 5), np.float32)}),
     "state['h'] has shape"),
]


@pytest.mark.parametrize("desc, mutate, phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument(desc, mutate, phrase):
    nb = lstmc.compile("gru", "numba", "float32")
    p = nb.init_params(3, 5)
    x = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(ValueError) as e:
        nb.forward(**mutate(x, p))
    assert phrase in str(e.value)


def test_bad_backward_input():
    nb = lstmc.compile("gru", "numba", "float32")
    p = nb.init_params(3, 5)
    y, _, tape = nb.forward(np.zeros((4, 2, 3), np.float32), p)
    with pytest.raises(ValueError, match="dy has dtype float64"):
        nb.backward(tape, np.zeros((4, 2, 5)))
    with pytest.raises(ValueError, match="dy is not C-contiguous"):
        nb.backward(tape, np.zeros((5, 2, 4), np.float32).transpose(2, 1, 0))


# ---------------------------------------------------------------------------------------- SIMD

def _fresh_module(source: str, tmp_path: Path):
    """Import generated source as a new module of its own (not compiled yet): Numba compiles it
    afresh rather than loading it from its cache, on which inspect_asm does not work."""
    f = tmp_path / "kernels_nocache.py"
    f.write_text(source)
    spec = importlib.util.spec_from_file_location(f"nocache_{abs(hash(source))}", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@njit(inline="always")
def _no_product(a, W, out):
    pass


# a cell of selects and comparisons (max, min, where): they must vectorise like arithmetic
SELECTS = """
cell clip
state h, c
a  = W_a @ x + U_a @ h + b_a
g  = where(a >= 0, a + 0.5, sigmoid(a))
c' = max(min(c + g, 1), -1)
h' = tanh(c') * sigmoid(W_o @ x + U_o @ h + b_o)
"""


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LAYERNORM = str(EXAMPLES / "layernorm_lstm.cell")   # row reductions
SLSTM = str(EXAMPLES / "slstm.cell")                # exp and logsigmoid (softplus) gates
TLSTM = str(EXAMPLES / "tlstm.cell")                # log


@pytest.mark.parametrize("name", ["lstm", "gru_v1", "selects", "layernorm", "lstmp", "slstm", "tlstm"])
def test_float32_pointwise_loops_are_vectorised(name, tmp_path):
    """The fused blocks (and the reductions between them) must compile to packed SIMD (…ps on
    ymm/zmm), not only scalar (…ss) code, and call no libm exp/log (a call keeps its loop scalar:
    slstm's forward had 0 packed instructions while its exp and logsigmoid called expf/log1pf)."""
    nb = lstmc.compile({"selects": SELECTS, "layernorm": LAYERNORM, "slstm": SLSTM, "tlstm": TLSTM}.get(name, name),
                       "numba", "float32")
    mod = _fresh_module(nb.source, tmp_path)
    # the small-batch products (the prelude's _mm_nt/_mm_nn) vectorise on their own: rebind the
    # module's names to a no-op before its kernels compile (Numba reads a kernel's globals when it
    # compiles it), so that what is counted below comes from the fused blocks alone
    assert mod._mm_nt is prelude_f32._mm_nt and mod._mm_nn is prelude_f32._mm_nn
    assert not mod.forward.signatures and not mod.backward.signatures
    mod._mm_nt = mod._mm_nn = _no_product
    nb_fresh = object.__new__(type(nb))
    nb_fresh.__dict__.update(nb.__dict__)
    nb_fresh.module = mod
    nb_fresh.warm()
    for fn in (mod.forward, mod.backward):
        asm = fn.inspect_asm(fn.signatures[0])
        packed = re.findall(r"\bv(?:mul|add|sub|div|fmadd\w*|fnmadd\w*|max|min)ps\s+[^\n]*%[yz]mm", asm)
        assert len(packed) >= 10, f"{name}.{fn.__name__}: only {len(packed)} packed float32 instructions"
        libm = re.findall(r"\$(?:expf?|logf?|log1pf?)\b", asm)
        assert not libm, f"{name}.{fn.__name__} calls {libm}"
        if fn is mod.forward:  # the clamp of the tanh/sigmoid approximation runs on vectors
            assert re.search(r"\bvm(?:in|ax)ps\s+[^\n]*%[yz]mm", asm), f"{name}: activations not vectorised"


def test_activation_approximation_errors_are_as_documented():
    """The arithmetic-only float32 tanh/sigmoid of the prelude stay within their documented maximum
    errors, inlined into a loop compiled with the kernels' options (as in a kernel)."""
    _tanh, _sigmoid = prelude_f32._tanh, prelude_f32._sigmoid

    @njit(**dict(options.JIT, cache=False))
    def run(x, t, s):
        for i in range(x.size):
            t[i] = _tanh(x[i])
            s[i] = _sigmoid(x[i])

    x = np.linspace(-20, 20, 2_000_001).astype(np.float32)
    t = np.empty_like(x)
    s = np.empty_like(x)
    run(x, t, s)
    x64 = x.astype(np.float64)
    assert np.abs(t - np.tanh(x64)).max() < prelude_f32.TANH_MAX_ERROR
    assert np.abs(s - 1 / (1 + np.exp(-x64))).max() < prelude_f32.SIGMOID_MAX_ERROR
    assert np.all(np.abs(t) <= 1) and np.all((s >= 0) & (s <= 1))


def test_exp_log_softplus_errors_are_as_documented():
    """The arithmetic-only float32 exp, log, softplus and logsigmoid of the prelude stay within their
    documented relative errors against float64 (dense grids, inlined into a loop compiled with the
    kernels' options, as in a kernel) and keep libm's edges: overflow to inf, underflow to exactly 0,
    NaN, exp(0) = 1, log(1) = 0, log(0) = -inf, log(x < 0) = NaN, softplus stable up to |x| = 1e30."""
    P = prelude_f32
    _exp, _log, _softplus, _logsigmoid = P._exp, P._log, P._softplus, P._logsigmoid

    @njit(**dict(options.JIT, cache=False))
    def run(x, e, lg, sp, ls):
        for i in range(x.size):
            e[i] = _exp(x[i])
            lg[i] = _log(x[i])
            sp[i] = _softplus(x[i])
            ls[i] = _logsigmoid(x[i])

    def ev(x):
        x = np.asarray(x, np.float32)
        out = [np.empty_like(x) for _ in range(4)]
        run(x, *out)
        return out

    tiny, step = np.finfo(np.float32).tiny, 2.0 ** -149     # below tiny, float32 steps by 2^-149

    def within(got, want, bound, steps):
        # relative error where the true value is a normal float32, absolute (in subnormal steps) below
        got, normal = got.astype(np.float64), np.abs(want) >= tiny
        assert np.all(np.abs(got - want)[normal] <= bound * np.abs(want[normal])), \
            np.max(np.abs(got - want)[normal] / np.abs(want[normal]))
        assert np.all(np.abs(got - want)[~normal] <= steps * step)

    with np.errstate(over="ignore"):
        x = np.concatenate([np.linspace(-110, 110, 3_000_001), np.linspace(-1, 1, 1_000_001),
                            np.geomspace(1, 1e30, 100_001), -np.geomspace(1, 1e30, 100_001)]).astype(np.float32)
        e, _, sp, ls = ev(x)
        x64 = x.astype(np.float64)
        want = np.exp(x64)
        over = np.isinf(want.astype(np.float32))                 # where float32 exp rounds to inf
        assert np.array_equal(np.isinf(e), over)
        within(e[~over], want[~over], P.EXP_MAX_ERROR, 1)
        assert np.all(e[x < -104] == 0)                           # exactly 0, not subnormal garbage
        within(sp, np.logaddexp(0, x64), P.SOFTPLUS_MAX_ERROR, 2)
        within(ls, -np.logaddexp(0, -x64), P.SOFTPLUS_MAX_ERROR, 2)

    xl = np.concatenate([np.geomspace(2.0 ** -149, np.finfo(np.float32).max, 3_000_001),
                         np.linspace(0.25, 4, 1_000_001)]).astype(np.float32)
    lg = ev(xl)[1]
    within(lg, np.log(xl.astype(np.float64)), P.LOG_MAX_ERROR, 0)
    assert np.all(lg[xl == 1] == 0)

    edges = np.array([0, -0.0, 1, -1, np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32)
    e, lg, sp, ls = ev(edges)
    nan, inf, big = np.nan, np.inf, np.float32(1e30)
    np.testing.assert_array_equal(e[[0, 1, 4, 5, 6, 7, 8]], np.float32([1, 1, nan, inf, 0, inf, 0]))
    np.testing.assert_array_equal(lg[[0, 1, 2, 3, 4, 5, 6, 8]], np.float32([-inf, -inf, 0, nan, nan, inf, nan, nan]))
    np.testing.assert_array_equal(sp[4:], np.float32([nan, inf, 0, big, 0]))
    np.testing.assert_array_equal(ls[4:], np.float32([nan, 0, -inf, 0, -big]))
    assert abs(sp[0] - np.log(2)) <= P.SOFTPLUS_MAX_ERROR * np.log(2)


# --------------------------------------------------------------------------------------- build

def test_generated_source_is_a_real_file_with_a_header(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    lstmc.build._memory.clear()
    nb = lstmc.compile("mgu", "numba", "float32")
    files = list((tmp_path / "numba").glob("mgu_float32_*.py"))
    assert len(files) == 1
    text = files[0].read_text()
    assert text == nb.source
    assert text.startswith(f'"""Generated by lstmc {lstmc.__version__} from cell `mgu` (key {nb.key})')
    assert not list((tmp_path / "numba").glob(".*.tmp"))   # no temporary left behind


def test_corrupted_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    lstmc.build._memory.clear()
    nb = lstmc.compile("indrnn", "numba", "float64")
    f = next((tmp_path / "numba").glob("indrnn_float64_*.py"))
    f.write_text(nb.source[: len(nb.source) // 2])       # half-written file
    code = ("import lstmc, numpy as np; nb = lstmc.compile('indrnn', 'numba', 'float64');"
            "p = nb.init_params(2, 3); y, s, t = nb.forward(np.ones((3, 1, 2)), p); print(float(y.sum()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=os.environ | {"LSTMC_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert f.read_text() == nb.source


def test_unwritable_cache_dir_falls_back_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(blocker / "sub"))
    lstmc.build._memory.clear()
    with pytest.warns(RuntimeWarning, match="not writable"):
        nb = lstmc.compile("janet", "numba", "float32")
    assert nb.forward(np.zeros((2, 1, 3), np.float32), nb.init_params(3, 4))[0].shape == (2, 1, 4)


def test_two_processes_compiling_the_same_cell_both_succeed(tmp_path):
    cell = tmp_path / "race.cell"
    cell.write_text("cell race\nstate h\nh' = tanh(W @ x + U @ h + b) * 0.5 + 0.5 * h\n")
    code = ("import lstmc, numpy as np; nb = lstmc.compile(%r, 'numba', 'float32');"
            "y = nb.forward(np.ones((4, 2, 3), np.float32), nb.init_params(3, 5))[0]; print(y.shape)") % str(cell)
    env = os.environ | {"LSTMC_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "(4, 2, 5)" in out


def test_warm_cache_compile_is_fast(tmp_path):
    """A second process finds the generated file and Numba's cache: ready in well under the cold time."""
    code = ("import time, lstmc; t = time.perf_counter(); lstmc.compile('gru_v1', 'numba', 'float32');"
            "print(time.perf_counter() - t)")
    env = os.environ | {"LSTMC_CACHE_DIR": str(tmp_path)}
    cold = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                timeout=300, check=True).stdout)
    warm = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                timeout=300, check=True).stdout)
    assert warm < cold


# -------------------------------------------------------------------------------------- golden

@pytest.mark.parametrize("name", CELLS)
def test_generated_code_matches_golden_snapshot(name):
    """A change to the generator shows up here as a reviewable diff.
    Regenerate with: LSTMC_UPDATE_GOLDEN=1 make test (then review `git diff tests/golden`)."""
    src = lstmc.compile(name, "numba", "float32").source
    path = GOLDEN / f"{name}_numba_float32.py"
    if os.environ.get("LSTMC_UPDATE_GOLDEN"):
        path.write_text(src)
    assert path.exists(), f"no golden file {path}; run with LSTMC_UPDATE_GOLDEN=1"
    assert src == path.read_text(), f"generated code for {name} changed; review and update the golden file"


def test_cli_compile_emit_numba(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lstmc", "compile", "gru_v1", "--backend", "numba", "--emit",
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    src = (tmp_path / "gru_v1_numba_float32.py").read_text()
    assert "np.dot(SV_mul_r_h[ti, b0:b1], U1.T, RP1[b0:b1])" in src      # the staged GEMM of the second phase
    assert "def forward(" in src and "def backward(" in src


def test_cli_check_numba():
    r = subprocess.run([sys.executable, "-m", "lstmc", "check", "mgu", "--backend", "numba", "--dtype", "float32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "numba/float32" in r.stdout


_ = nbmod
