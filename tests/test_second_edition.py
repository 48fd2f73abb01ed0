"""The cell language's second edition: max/min, where with comparisons, logsigmoid, and the
reductions mean/sum/layernorm (README, "The cell language"). One table of cells drives one checker
on every backend, float32 and float64, forward and backward, with lengths (the problem has rows of
length 6, 0 and 3) and reverse; both Triton designs with several programs per row; the tie rule of
max/min, a select over an overflowing branch, and sLSTM and LayerNorm LSTM against independent
PyTorch implementations written here from the papers' equations."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc.check import backend_vs_reference, run_checks  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# every new construct at least once; `selects` is an sLSTM-like cell with extra selects in it
SELECTS = """
cell selects
state h, c, m
it = W_i @ x + U_i @ h + b_i
ft = W_f @ x + U_f @ h + b_f
m' = max(logsigmoid(ft) + m, it)
i  = exp(it - m')
f  = exp(logsigmoid(ft) + m - m')
g  = where(it >= 0, it + 0.5, sigmoid(it))
c' = f * c + i * min(g, tanh(W_z @ x + U_z @ h + b_z))
h' = where(c' < b_o, c', where(c' > 1, 1 - c', 0.5 * c')) * sigmoid(W_o @ x + U_o @ h + b_o)
"""
CLIPPED = """
cell clipped
state h
param W, U, b, lo
a  = W @ x + U @ h + b
h' = min(max(a, lo), 1) + 0.1 * where(a <= 0, a, -a)
"""
# reductions over the row: of a state, of a product, of a value that itself needs a reduction
# (layernorm), sum and mean, one feeding a recurrent product
REDUCES = """
cell reduces
state h, c
a  = W_a @ x + U_a @ h + b_a
n  = layernorm(a, 0.001)
c' = sigmoid(n) * c + tanh(a - mean(h)) * 0.5
h' = tanh(U_c @ (c' - sum(c') / 8) + n * g)
"""
# a select between constants (its branches have no dtype of their own), and a saved h' next to an
# intermediate h1 (both would be the identifier h1 in generated code)
CONSTANTS = """
cell constants
state h, c
h' = tanh(W @ x + U @ h) * where(W @ x > h, 1, 0.5)
h1 = sigmoid(W2 @ x + c)
c' = h1 * c + mean(h')
"""
CELLS = {"selects": SELECTS, "clipped": CLIPPED, "mingru": str(EXAMPLES / "mingru.cell"),
         "slstm": str(EXAMPLES / "slstm.cell"), "reduces": REDUCES,
         "layernorm_lstm": str(EXAMPLES / "layernorm_lstm.cell"), "constants": CONSTANTS,
         "slstm_heads": str(EXAMPLES / "slstm_heads.cell"),
         # extra per-step inputs (tests/test_inputs.py has their oracles, bad specs and arguments)
         "tlstm": str(EXAMPLES / "tlstm.cell"), "episodic_gru": str(EXAMPLES / "episodic_gru.cell"),
         "zoneout_lstm": str(EXAMPLES / "zoneout_lstm.cell"),
         "conditioned_lstm": str(EXAMPLES / "conditioned_lstm.cell")}


@pytest.mark.parametrize("name", list(CELLS))
def test_the_ladder_passes(name):
    """Finite differences in float64 (x, initial state, every parameter), torch autograd and numba."""
    bad = [(r.name, r.error, r.tolerance) for r in run_checks(CELLS[name], backend="numba", dtype="float64")
           if not r.ok]
    assert not bad, bad


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["torch", "numba", "triton"])
@pytest.mark.parametrize("name", list(CELLS))
def test_every_backend_matches_the_reference(name, backend, dtype, reverse):
    if backend == "triton":
        pytest.importorskip("triton")
    bad = [(r.name, r.error, r.tolerance) for r in backend_vs_reference(CELLS[name], backend, dtype, reverse=reverse)
           if not r.ok]
    assert not bad, bad


@pytest.mark.parametrize("variant", ["persistent", "step"])
@pytest.mark.parametrize("name", ["reduces", "layernorm_lstm", "selects"])
def test_both_triton_designs_with_several_programs_per_row(name, variant):
    """H = 37 with 16-wide tiles: in the step design three programs share a row, and each reads the
    row whole for a reduction; the persistent design owns whole rows."""
    pytest.importorskip("triton")
    from lstmc.backends.triton import Schedule

    cc = lstmc.compile(CELLS[name], "triton", "float32")
    old = cc.schedule
    cc.schedule = Schedule("persistent") if variant == "persistent" else Schedule("step", block_b=16, block_h=16,
                                                                                     block_k=16)
    try:
        bad = [(r.name, r.error) for rev in (False, True)
               for r in backend_vs_reference(CELLS[name], "triton", "float32", reverse=rev, T=5, B=3, I=4, H=37)
               if not r.ok]
    finally:
        cc.schedule = old
    assert not bad, bad


TIES = {  # a cell whose two arguments are equal when W_b = W_a, and the same cell with the first alone
    "max": ("cell t\nstate h\nh' = tanh(max(W_a @ x, W_b @ x) + U @ h)\n", "cell t\nstate h\nh' = tanh(W_a @ x + U @ h)\n"),
    "min": ("cell t\nstate h\nh' = tanh(min(W_a @ x, W_b @ x) + U @ h)\n", "cell t\nstate h\nh' = tanh(W_a @ x + U @ h)\n"),
}


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
@pytest.mark.parametrize("fn", list(TIES))
def test_ties_send_the_gradient_to_the_first_argument(fn, backend):
    tied, alone = TIES[fn]
    T, B, I, H = 5, 3, 4, 6
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    ref = lstmc.compile(alone, "reference", "float64")
    p1 = ref.init_params(I, H, seed=1)
    params = {"W_a": p1["W_a"], "W_b": p1["W_a"].copy(), "U": p1["U"]}
    prog = lstmc.compile(tied, backend, "float64")
    y, _, tape = prog.forward(x, params)
    dx, _, dp = prog.backward(tape, dy)
    y1, _, tape1 = ref.forward(x, p1)
    dx1, _, dp1 = ref.backward(tape1, dy)
    np.testing.assert_allclose(y, y1, rtol=0, atol=1e-14)
    assert not np.any(dp["W_b"]), "a tie's gradient went to the second argument"
    np.testing.assert_allclose(dp["W_a"], dp1["W_a"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, dx1, rtol=1e-12, atol=1e-14)


SOFTPLUS_BY_HAND = """
cell soft
state h
a  = W @ x + U @ h + b
h' = tanh(where(a > 30, a, log(1 + exp(a))))
"""


@pytest.mark.parametrize("backend", ["reference", "torch", "numba", "triton"])
def test_a_branch_that_overflows_where_it_is_not_taken_never_reaches_the_output(backend):
    """exp(a) is inf in float32 for a > 88; where picks a there, so the output stays finite."""
    if backend == "triton":
        pytest.importorskip("triton")
    prog = lstmc.compile(SOFTPLUS_BY_HAND, backend, "float32")
    T, B, I, H = 4, 2, 3, 5
    params = prog.init_params(I, H, seed=0)
    x = np.full((T, B, I), 400.0, np.float32)
    params["W"] = np.abs(params["W"]).astype(np.float32) + 0.5       # a = W @ x > 600: exp overflows
    with np.errstate(over="ignore", invalid="ignore"):
        y, _, _ = prog.forward(x, params, need_tape=False)
    y = np.asarray(y)
    assert np.all(np.isfinite(y)) and np.all(y > 0.99)


def _slstm_torch(x, p, H):
    """sLSTM from Beck et al. 2024 (eqs. 8-17), written independently of lstmc: one head when U is
    [H, H]; with U [N, H/N, H/N], each head's units mix only among themselves (a batched product)."""
    T, B, _ = x.shape
    h = c = n = m = torch.zeros(B, H, dtype=x.dtype)

    def rec(U, h):
        if U.dim() == 2:
            return h @ U.T
        N, d, _ = U.shape
        return torch.einsum("bnk,njk->bnj", h.reshape(B, N, d), U).reshape(B, H)

    ys = []
    for t in range(T):
        pre = {g: x[t] @ p[f"W_{g}"].T + rec(p[f"U_{g}"], h) + p[f"b_{g}"] for g in "ifzo"}
        log_f = torch.nn.functional.logsigmoid(pre["f"])
        m_new = torch.maximum(log_f + m, pre["i"])
        i = torch.exp(pre["i"] - m_new)
        f = torch.exp(log_f + m - m_new)
        c = f * c + i * torch.tanh(pre["z"])
        n = f * n + i
        h = torch.sigmoid(pre["o"]) * c / n
        m = m_new
        ys.append(h)
    return torch.stack(ys)


def _layernorm_lstm_torch(x, p, H):
    """LayerNorm LSTM (Ba et al. 2016, eqs. 20-22, one bias per gate), with F.layer_norm."""
    ln = torch.nn.functional.layer_norm
    T, B, _ = x.shape
    h = c = torch.zeros(B, H, dtype=x.dtype)
    ys = []
    for t in range(T):
        pre = {g: p[f"gx_{g}"] * ln(x[t] @ p[f"W_{g}"].T, (H,)) + p[f"gh_{g}"] * ln(h @ p[f"U_{g}"].T, (H,))
               + p[f"b_{g}"] for g in "ifgo"}
        c = torch.sigmoid(pre["f"]) * c + torch.sigmoid(pre["i"]) * torch.tanh(pre["g"])
        h = torch.sigmoid(pre["o"]) * torch.tanh(p["gc"] * ln(c, (H,)) + p["bc"])
        ys.append(h)
    return torch.stack(ys)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("cell", ["slstm", "layernorm_lstm", "slstm_heads"])
def test_matches_an_independent_torch_implementation(cell, backend):
    oracle = {"slstm": _slstm_torch, "layernorm_lstm": _layernorm_lstm_torch, "slstm_heads": _slstm_torch}[cell]
    T, B, I, H = 7, 3, 5, 8
    prog = lstmc.compile(str(EXAMPLES / f"{cell}.cell"), backend, "float64")
    params = prog.init_params(I, H, seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    y, _, tape = prog.forward(x, params)
    dx, _, dp = prog.backward(tape, dy)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    ty = oracle(tx, tp, H)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for k in params:
        np.testing.assert_allclose(np.asarray(dp[k]), tp[k].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_emitted_code_spells_the_new_constructs_through_the_prelude(backend, tmp_path):
    r = subprocess.run([sys.executable, "-m", "lstmc", "compile", str(EXAMPLES / "slstm.cell"), "--backend", backend,
                        "--emit", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0, r.stderr
    src = next(tmp_path.glob("slstm_*.py")).read_text()
    assert "_max(" in src and "_logsigmoid(" in src and "_ge(" in src and "_where(" in src
    show = subprocess.run([sys.executable, "-m", "lstmc", "show", str(EXAMPLES / "slstm.cell")], capture_output=True,
                          text=True, timeout=300)
    assert show.returncode == 0, show.stderr
    assert "max(" in show.stdout and ">=" in show.stdout


@pytest.mark.parametrize("cell,steps", [("mingru", 300), ("slstm", 200)])
def test_the_example_cells_train(cell, steps):
    """`lstmc train` on the adding problem: the exponential gates of sLSTM stay finite, both cells
    beat the predict-the-mean baseline clearly, and their gradients match the float64 reference."""
    from lstmc.train import TrainConfig, train

    res = train(TrainConfig(cell=str(EXAMPLES / f"{cell}.cell"), task="adding", steps=steps, progress=False,
                            validate=100))
    assert not res.diverged and np.isfinite(res.test_metric)
    assert res.test_metric < 0.5 * res.baseline, (res.test_metric, res.baseline)
    # float32 training gradients vs the float64 reference on the same batch (measured: 4e-8 to 1e-7)
    assert res.validations and max(v["max_diff"] for v in res.validations) < 1e-5, res.validations


def test_a_reduction_is_not_counted_as_a_product():
    """lstmc bench's GEMM FLOPs: layernorm_lstm multiplies the same matrices as lstm (its 18 row
    reductions are not H x H products); the reductions have no weights to pack or differentiate."""
    from lstmc.bench import forward_flops

    ln = str(EXAMPLES / "layernorm_lstm.cell")
    assert forward_flops(ln, 10, 4, 8, 16) == forward_flops("lstm", 10, 4, 8, 16)
    prog = lstmc.lower(lstmc.load(ln))
    assert len(prog.weight_groups) == 1 and sum(1 for g in prog.groups if g.reduce) == 18
    grads = lstmc.compile(ln, "reference", "float64").init_params(3, 4)
    assert not any(k in ("mean", "sum") for k in grads)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
def test_constant_branches_keep_the_programs_dtype(backend, dtype):
    """where(c, 1, 0) has no array in it: its value and every gradient still have the program's dtype."""
    cell = "cell k\nstate h\nh' = where(W @ x > h, 1, 0) + 0.5 * h\n"
    prog = lstmc.compile(cell, backend, dtype)
    params = prog.init_params(3, 4)
    x = np.ones((2, 2, 3), dtype=dtype)
    if backend == "torch":
        x, params = torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in params.items()}
    y, state, tape = prog.forward(x, params)
    dx, dstate, dparams = prog.backward(tape, y * 0 + 1)
    want = getattr(torch, dtype) if backend == "torch" else np.dtype(dtype)
    assert y.dtype == want and state["h"].dtype == want and dx.dtype == want and dparams["W"].dtype == want


def test_heads_make_recurrent_matrices_block_diagonal_everywhere():
    """`heads 4`: every U is [4, H/4, H/4] in init_params, Recurrent and the arena's parameter count;
    a hidden size that is not a multiple of the heads is refused by name."""
    cell = str(EXAMPLES / "slstm_heads.cell")
    prog = lstmc.compile(cell, "numba", "float64")
    params = prog.init_params(3, 8)
    assert params["U_i"].shape == (4, 2, 2) and params["W_i"].shape == (8, 3)
    with pytest.raises(ValueError, match="4 heads, so hidden_size must be a multiple of 4, got 6"):
        prog.init_params(3, 6)
    bad = {**params, "U_i": np.zeros((8, 8))}
    with pytest.raises(ValueError, match=r"U_i.*\[4, hidden_size/4, hidden_size/4\]"):
        prog.forward(np.zeros((2, 1, 3)), bad)
    from lstmc.arena import rnn_param_count

    assert rnn_param_count(cell, 3, 8) == 4 * 8 * 3 + 4 * 8 * 8 // 4 + 4 * 8
    from lstmc.nn import Recurrent

    rnn = Recurrent(cell, 3, 8, num_layers=2, dtype=torch.float64)
    assert rnn.l1.U_z.shape == (4, 2, 2)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y, _ = rnn(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(rnn.l0.U_o.grad).all()
