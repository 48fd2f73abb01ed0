"""Extra per-step inputs (the second edition's `input dt`, `input keep[H]`, `input u[K]` and `size K`;
README, "The cell language"). One table of cells drives the ladder's checkers (lstmc.check): finite
differences in float64 over x, the initial state, every parameter and every extra input, torch
autograd, and every backend against the reference (float32 and float64, lengths, reverse, initial
state). The examples meet independent PyTorch implementations written here from their papers'
equations; bad specs and bad arguments are tables of cases with the message each must carry."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc.check import autograd, backend_vs_reference, finite_differences  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# every way an input is read: a scalar broadcast over H (also inside a recurrent operand and a
# reduction), an [H] input element-wise and as `V @ keep` (hoisted), `V @ u` of a declared size
EVERYTHING = """
cell everything
size K
input dt, keep[H], u[K]
state h, c
a  = W @ x + U @ (h * dt) + V @ u + b
c' = sigmoid(a) * c + keep * tanh(V2 @ keep + mean(c) * dt)
h' = tanh(c') * (1 - keep) + h * keep
"""
# no product of x at all (dx is 0): only `V @ u`, and a scalar input
NO_X = """
cell no_x
size K
input u[K], dt
state h
h' = tanh(V @ u + U @ h + b) * dt + h * (1 - dt)
"""
# heads and an input: the block-diagonal recurrent matrix next to a hoisted V @ u
HEADS = """
cell heads_inputs
heads 2
size P
input u[P], gate[H]
state h
h' = tanh(W @ x + U @ h + V @ u) * gate
"""
# an input named `t`: its slot's local (xp_t) was the torch step's own argument, which it overwrote
NAMED_T = """
cell named_t
input t[H], q
state h
h' = tanh(W @ x + U @ h) * t + q
"""
CELLS = {"everything": EVERYTHING, "no_x": NO_X, "heads_inputs": HEADS, "named_t": NAMED_T,
         "tlstm": str(EXAMPLES / "tlstm.cell"), "episodic_gru": str(EXAMPLES / "episodic_gru.cell"),
         "zoneout_lstm": str(EXAMPLES / "zoneout_lstm.cell"),
         "conditioned_lstm": str(EXAMPLES / "conditioned_lstm.cell")}
SYNTHETIC = ["everything", "no_x", "heads_inputs", "named_t"]   # the examples are in test_second_edition's table too


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_backward_matches_finite_differences_and_autograd(name, reverse):
    """Over x, the initial state, every parameter and every extra input (float64, with lengths)."""
    for r in (finite_differences(CELLS[name], reverse=reverse), autograd(CELLS[name], reverse=reverse)):
        assert r.ok, (r.name, r.error, r.tolerance)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["torch", "numba", "triton"])
@pytest.mark.parametrize("name", SYNTHETIC)
def test_every_backend_matches_the_reference(name, backend, dtype, reverse):
    if backend == "triton":
        pytest.importorskip("triton")
    bad = [(r.name, r.error, r.tolerance) for r in backend_vs_reference(CELLS[name], backend, dtype, reverse=reverse)
           if not r.ok]
    assert not bad, bad


# ------------------------------------------------------------------------------ the trust case

def test_a_declared_input_is_never_a_parameter():
    undeclared = lstmc.parse("cell c\nstate h\nh' = tanh(W @ x + U @ h) * dt\n")
    assert undeclared.params == {"W": "W", "U": "U", "dt": "b"}     # as before: a free name is learned
    declared = lstmc.parse("cell c\ninput dt\nstate h\nh' = tanh(W @ x + U @ h) * dt\n")
    assert list(declared.params) == ["W", "U"] and declared.inputs == {"dt": None}
    prog = lstmc.compile(declared, "reference")
    assert set(prog.init_params(3, 4)) == {"W", "U"}
    assert "dt" not in lstmc.lower(declared).vector_params


def test_a_misspelt_input_is_named():
    with pytest.raises(lstmc.SpecError) as e:
        lstmc.parse("cell c\ninput dt\nstate h\nh' = tanh(W @ x + U @ h) * dtt\n")
    assert e.value.line == 2 and "'dt' is declared but never used" in str(e.value)
    assert "'dtt' on line 4 is taken as a learned parameter" in str(e.value)


# ------------------------------------------------------------------------------------ bad specs

HEAD = "cell c\nstate h\n"
BAD = [
    # (spec, line, words the message must contain)
    (HEAD + "input dt\nh' = tanh(W @ x + U @ h)\n", 3, "input 'dt' is declared but never used"),
    (HEAD + "size K\nh' = tanh(W @ x + U @ h)\n", 3, "size 'K' is declared but never used"),
    (HEAD + "size K\ninput u[H]\nh' = tanh(W @ x + U @ h) * u\n", 3, "size 'K' is declared but never used"),
    (HEAD + "input u[K]\nh' = tanh(W @ x + U @ h + V @ u)\n", 3, "size 'K', which is not declared"),
    (HEAD + "size K\ninput u[k]\nh' = tanh(W @ x + U @ h + V @ u)\n", 4, "did you mean `K`"),
    (HEAD + "input u[3]\nh' = tanh(W @ x + U @ h)\n", 3, "must be a name"),
    (HEAD + "input h\nh' = tanh(W @ x + U @ h)\n", 3, "input 'h' is also a state"),
    (HEAD + "param W, U, b\ninput b\nh' = tanh(W @ x + U @ h + b)\n", 4, "also declared as a parameter"),
    (HEAD + "input a\na = W @ x\nh' = tanh(a + U @ h)\n", 3, "also assigned as an intermediate"),
    (HEAD + "input x\nh' = tanh(W @ x + U @ h)\n", 3, "'x' is the built-in step input"),
    (HEAD + "input tanh\nh' = tanh(W @ x + U @ h)\n", 3, "'tanh' is reserved"),
    (HEAD + "input dt, dt\nh' = tanh(W @ x + U @ h) * dt\n", 3, "declared twice"),
    (HEAD + "size K, K\ninput u[K]\nh' = tanh(W @ x + U @ h + V @ u)\n", 3, "declared twice"),
    (HEAD + "size H\ninput u[H]\nh' = tanh(W @ x + U @ h) * u\n", 3, "'H' is built in"),
    (HEAD + "input dt\nh' = tanh(W @ x + U @ h + V @ dt)\n", 4, "one number per batch row"),
    (HEAD + "size K\ninput u[K]\nh' = tanh(W @ x + U @ h) * u\n", 5, "can only be used directly as `M @ u`"),
    (HEAD + "size K\ninput u[K]\nh' = tanh(W @ x + U @ h + V @ (2 * u))\n", 5, "can only be used directly"),
    (HEAD + "size K\ninput u[K]\nh' = tanh(W @ x + U @ h + mean(u))\n", 5, "can only be used directly"),
    (HEAD + "input dt\nh' = tanh(W @ x + U @ h) * dt'\n", 4, "has no primed value"),
    (HEAD + "input dt\nh' = tanh(W @ x + dt @ h)\n", 4, "not the input 'dt'"),
    (HEAD + "size K\ninput u[K]\nh' = tanh(W @ x + U @ h + W @ u)\n", 5, "applied to the input u"),
    (HEAD + "size K\ninput u[K], v[K]\nh' = tanh(W @ x + U @ h + V @ u + V @ v)\n", 5, "applied to the input"),
    (HEAD + "input dt\ninit dt = 1\nh' = tanh(W @ x + U @ h) * dt\n", 4, "an extra input"),
    (HEAD + "input dt\nh' = tanh(W @ x + U @ h) * dt(h)\n", 4, "is not a function"),
]


@pytest.mark.parametrize("spec,line,words", BAD, ids=[w for _, _, w in BAD])
def test_bad_specs_are_spec_errors_at_their_line(spec, line, words):
    with pytest.raises(lstmc.SpecError) as e:
        lstmc.parse(spec)
    assert e.value.line == line, str(e.value)
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
def test_a_cell_without_parameters_is_refused_at_compile_naming_why(backend):
    """Inputs make a cell without any parameter possible; forward reads hidden_size off the parameters,
    so it could not run (numba's compile raised a TypeError, forward said "hidden_size=None")."""
    with pytest.raises(ValueError, match="has no parameters, so hidden_size cannot be read"):
        lstmc.compile(HEAD + "input keep[H]\nh' = h * keep + (1 - keep)\n", backend)


def test_an_hidden_size_input_may_be_multiplied_and_is_hoisted():
    prog = lstmc.lower(lstmc.parse(HEAD + "input keep[H]\nh' = tanh(W @ x + U @ h + V @ keep) * keep\n"))
    assert prog.input_mats == ("W", "V", "keep")
    assert "xp = x @ [W]^T; keep @ [V]^T" in prog.text()
    assert "inputs read per step as xp slots: keep" in prog.text()
    prog.verify()


def test_the_program_text_says_how_each_input_is_read():
    text = lstmc.lower(lstmc.load(CELLS["conditioned_lstm"])).text()
    assert "extra inputs: w [T, B, K]   sizes: K" in text
    assert "xp = x @ [W_i, W_f, W_g, W_o]^T; w @ [V_i, V_f, V_g, V_o]^T" in text
    text = lstmc.lower(lstmc.load(CELLS["tlstm"])).text()
    assert "inputs read per step as xp slots: dt (broadcast over H)" in text


# ------------------------------------------------------------------------- the runtime contract

def _problem(cell, backend="reference", dtype="float64", T=5, B=3, I=4, H=6, K=3, seed=0):
    prog = lstmc.compile(cell, backend, dtype)
    sizes = {k: K for k in prog.cell.sizes} or None
    rng = np.random.default_rng(seed)
    params = prog.init_params(I, H, seed=seed, sizes=sizes)
    x = rng.normal(size=(T, B, I)).astype(dtype)
    ins = {u: rng.uniform(0, 1.5, size=s).astype(dtype) for u, s in prog.input_shapes(T, B, H, sizes).items()}
    return prog, x, params, ins


def test_backward_returns_three_values_and_the_inputs_gradients():
    prog, x, params, ins = _problem(EVERYTHING)
    y, _, tape = prog.forward(x, params, inputs=ins, lengths=[5, 0, 2], reverse=True)
    grads = prog.backward(tape, np.ones_like(y))
    dx, dstate, dparams = grads                       # unpacks as it always has
    assert grads.dx is dx and grads.dparams is dparams and set(dparams) == set(params)
    assert set(grads.dinputs) == {"dt", "keep", "u"}
    for u, g in grads.dinputs.items():
        assert g.shape == ins[u].shape and g.dtype == ins[u].dtype
        assert not np.any(g[:, 1]) and not np.any(g[2:, 2]), "rows past their length get no gradient"
    no_inputs = lstmc.compile("lstm", "reference").forward(x, lstmc.compile("lstm").init_params(4, 6))
    assert lstmc.compile("lstm").backward(no_inputs[2], np.ones_like(no_inputs[0])).dinputs == {}


@pytest.mark.parametrize("backend", ["reference", "torch", "numba"])
def test_bad_inputs_are_value_errors_naming_the_input(backend):
    prog, x, params, ins = _problem(EVERYTHING, backend)
    cases = [
        (None, "inputs is missing 'dt'"),
        ({k: v for k, v in ins.items() if k != "keep"}, "inputs is missing 'keep'"),
        ({**ins, "dtt": ins["dt"]}, "unknown entries ['dtt']"),
        ({**ins, "dt": ins["dt"][:, :, None]}, "inputs['dt'] has shape (5, 3, 1), expected (5, 3)"),
        ({**ins, "keep": ins["keep"][:, :, :2]}, "inputs['keep'] has shape (5, 3, 2), expected (5, 3, 6)"),
        ({**ins, "u": ins["u"][:, :, :2]}, "expected (5, 3, 3) = [T, B, K] (`input u[K]`, K=3"),
        ({**ins, "u": ins["u"].astype(np.float32)}, "inputs['u'] has dtype float32"),
        ("dt", "inputs must be a dict"),
    ]
    for bad, words in cases:
        with pytest.raises(ValueError) as e:
            prog.forward(x, params, inputs=bad)
        assert words in str(e.value), (words, str(e.value))
    lstm = lstmc.compile("lstm", backend)
    with pytest.raises(ValueError, match="has no extra inputs"):
        lstm.forward(x, lstm.init_params(4, 6), inputs={"dt": ins["dt"]})


def test_sizes_are_given_at_init():
    prog = lstmc.compile(CELLS["conditioned_lstm"], "reference")
    with pytest.raises(ValueError, match=r"declares `size K`.*sizes=\{'K': 8\}"):
        prog.init_params(3, 4)
    with pytest.raises(ValueError, match="unknown entries"):
        prog.init_params(3, 4, sizes={"K": 2, "P": 3})
    with pytest.raises(ValueError, match="positive integer"):
        prog.init_params(3, 4, sizes={"K": 0})
    assert prog.init_params(3, 4, sizes={"K": 5})["V_i"].shape == (4, 5)
    assert prog.param_shapes(3, 4, sizes={"K": np.int64(2)})["V_o"] == (4, 2)
    assert prog.input_shapes(7, 2, 4, sizes={"K": 5}) == {"w": (7, 2, 5)}
    assert prog.cell.param_dims("V_i") == "[H, K]"


def test_torch_autograd_reaches_the_inputs_through_the_torch_backend():
    prog, x, params, ins = _problem(EVERYTHING, "torch")
    it = {k: torch.tensor(v, requires_grad=True) for k, v in ins.items()}
    y, _, _ = prog.forward(torch.tensor(x), {k: torch.tensor(v) for k, v in params.items()}, inputs=it)
    y.sum().backward()
    ref, _, _, _ = _problem(EVERYTHING)
    _, _, tape = ref.forward(x, params, inputs=ins)
    g = ref.backward(tape, np.ones((5, 3, 6)))
    for k in ins:
        np.testing.assert_allclose(it[k].grad.numpy(), g.dinputs[k], rtol=1e-10, atol=1e-12)


def test_numba_inference_in_time_chunks_reads_the_inputs_of_each_chunk():
    prog, x, params, ins = _problem(EVERYTHING, "numba", T=9)
    y, s, _ = prog.forward(x, params, inputs=ins, lengths=[9, 4, 0], reverse=True)
    old = prog.INFER_BYTES
    prog.INFER_BYTES = 1          # one step per chunk
    try:
        y1, s1, _ = prog.forward(x, params, inputs=ins, lengths=[9, 4, 0], reverse=True, need_tape=False)
    finally:
        prog.INFER_BYTES = old
    np.testing.assert_allclose(y1, y, rtol=1e-12, atol=1e-14)
    for k in s:
        np.testing.assert_allclose(s1[k], s[k], rtol=1e-12, atol=1e-14)


def test_triton_graph_workspaces_take_the_inputs():
    pytest.importorskip("triton")
    from lstmc.backends.triton import TritonCell

    prog, x, params, ins = _problem(EVERYTHING, "reference")
    y0, _, tape0 = prog.forward(x, params, inputs=ins, lengths=[5, 2, 0])
    g0 = prog.backward(tape0, np.ones_like(y0))
    tc = TritonCell(lstmc.lower(prog.cell), "float64", graphs="emulate")
    for _ in range(2):                   # the second call replays the workspace
        y, _, tape = tc.forward(x, params, inputs=ins, lengths=[5, 2, 0], schedule="step")
        g = tc.backward(tape, np.ones_like(y))
        np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-13)
        for k in ins:
            np.testing.assert_allclose(g.dinputs[k], g0.dinputs[k], rtol=1e-11, atol=1e-12)


# --------------------------------------------------------------------------- independent oracles

def _run(name, T=6, B=3, I=4, H=5, K=3, seed=3, inputs=None):
    prog, x, params, ins = _problem(CELLS[name], T=T, B=B, I=I, H=H, K=K, seed=seed)
    ins = {**ins, **(inputs or {})}
    st = {s: np.random.default_rng(seed + 1).normal(size=(B, H)) * 0.5 for s in prog.cell.states}
    y, fin, _ = prog.forward(x, params, state=st, inputs=ins)
    t = {k: torch.tensor(v) for k, v in params.items()}
    return y, fin, torch.tensor(x), t, {k: torch.tensor(v) for k, v in ins.items()}, \
        {k: torch.tensor(v) for k, v in st.items()}


def test_zoneout_lstm_matches_lstmcell_with_zoneout():
    """Krueger et al. 2017, eq. for the LSTM: c_t = d_c c_{t-1} + (1 - d_c)(f c_{t-1} + i g),
    h_t = d_h h_{t-1} + (1 - d_h)(o tanh(f c_{t-1} + i g)), with Bernoulli masks."""
    rng = np.random.default_rng(5)
    masks = {k: (rng.uniform(size=(6, 3, 5)) < 0.3).astype(np.float64) for k in ("keep_c", "keep_h")}
    y, fin, x, p, ins, st = _run("zoneout_lstm", inputs=masks)
    cell = torch.nn.LSTMCell(4, 5, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.cat([p["W_i"], p["W_f"], p["W_g"], p["W_o"]]))
        cell.weight_hh.copy_(torch.cat([p["U_i"], p["U_f"], p["U_g"], p["U_o"]]))
        cell.bias_ih.copy_(torch.cat([p["b_i"], p["b_f"], p["b_g"], p["b_o"]]))
        cell.bias_hh.zero_()
        h, c = st["h"], st["c"]
        ys = []
        for t in range(6):
            hn, cn = cell(x[t], (h, c))
            dc, dh = ins["keep_c"][t], ins["keep_h"][t]
            h, c = dh * h + (1 - dh) * hn, dc * c + (1 - dc) * cn
            ys.append(h)
    np.testing.assert_allclose(y, torch.stack(ys).numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fin["c"], c.numpy(), rtol=1e-12, atol=1e-13)


def test_episodic_gru_matches_grucell_with_the_state_reset_at_episode_starts():
    rng = np.random.default_rng(6)
    reset = (rng.uniform(size=(6, 3)) < 0.3).astype(np.float64)
    y, fin, x, p, ins, st = _run("episodic_gru", inputs={"reset": reset})
    cell = torch.nn.GRUCell(4, 5, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.cat([p["W_r"], p["W_z"], p["W_n"]]))
        cell.weight_hh.copy_(torch.cat([p["U_r"], p["U_z"], p["U_n"]]))
        cell.bias_ih.copy_(torch.cat([p["b_r"], p["b_z"], p["b_n"]]))
        cell.bias_hh.copy_(torch.cat([torch.zeros(10, dtype=torch.float64), p["b_hn"]]))
        h = st["h"]
        ys = []
        for t in range(6):
            h = torch.where(ins["reset"][t][:, None] == 1, torch.zeros_like(h), h)   # a new episode starts
            h = cell(x[t], h)
            ys.append(h)
    np.testing.assert_allclose(y, torch.stack(ys).numpy(), rtol=1e-12, atol=1e-13)


def test_tlstm_matches_the_papers_equations():
    """Baytas et al. 2017: C^S = tanh(W_d C + b_d), C^S' = C^S g(dt), C^T = C - C^S, C* = C^T + C^S',
    g(dt) = 1 / log(e + dt); then the LSTM step from C*."""
    y, fin, x, p, ins, st = _run("tlstm")
    h, c = st["h"], st["c"]
    ys = []
    for t in range(6):
        cs = torch.tanh(c @ p["U_d"].T + p["b_d"])
        cstar = (c - cs) + cs * (1 / torch.log(np.e + ins["dt"][t]))[:, None]
        gate = lambda n: x[t] @ p[f"W_{n}"].T + h @ p[f"U_{n}"].T + p[f"b_{n}"]  # noqa: E731
        i, f, o, g = torch.sigmoid(gate("i")), torch.sigmoid(gate("f")), torch.sigmoid(gate("o")), torch.tanh(gate("g"))
        c = f * cstar + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    np.testing.assert_allclose(y, torch.stack(ys).numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fin["c"], c.numpy(), rtol=1e-12, atol=1e-13)


def test_conditioned_lstm_is_nn_lstm_over_the_concatenated_streams():
    y, fin, x, p, ins, st = _run("conditioned_lstm")
    lstm = torch.nn.LSTM(4 + 3, 5, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.cat([torch.cat([p[f"W_{n}"], p[f"V_{n}"]], 1) for n in "ifgo"]))
        lstm.weight_hh_l0.copy_(torch.cat([p[f"U_{n}"] for n in "ifgo"]))
        lstm.bias_ih_l0.copy_(torch.cat([p[f"b_{n}"] for n in "ifgo"]))
        lstm.bias_hh_l0.zero_()
        out, (hT, cT) = lstm(torch.cat([x, ins["w"]], 2), (st["h"][None], st["c"][None]))
    np.testing.assert_allclose(y, out.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fin["c"], cT[0].numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("variant", ["persistent", "step"])
def test_both_triton_designs_read_the_input_slots(variant):
    """H = 37 with 16-wide tiles: in the step design three programs share a row; the persistent
    design owns whole rows. Both read the inputs' slots of XP as they read input products."""
    pytest.importorskip("triton")
    from lstmc.backends.triton import Schedule

    cc = lstmc.compile(EVERYTHING, "triton", "float32")
    old = cc.schedule
    cc.schedule = Schedule("persistent") if variant == "persistent" else Schedule("step", block_b=16, block_h=16,
                                                                                     block_k=16)
    try:
        bad = [(r.name, r.error) for rev in (False, True)
               for r in backend_vs_reference(EVERYTHING, "triton", "float32", reverse=rev, T=5, B=3, I=4, H=37)
               if not r.ok]
    finally:
        cc.schedule = old
    assert not bad, bad
