"""Every backend against the reference, and the reference against finite differences and autograd,
for every built-in cell (docs/design.md, "Validation", rungs 2-3). One checker, a table of cases."""

import numpy as np
import pytest

import lstmc
import lstmc.oracles
from lstmc import check

CELLS = lstmc.builtin_cells()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_reference_backward_vs_finite_differences(name, reverse):
    r = check.finite_differences(name, reverse=reverse)
    assert r.ok, r


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_reference_backward_vs_autograd_of_torch_backend(name, reverse):
    r = check.autograd(name, reverse=reverse)
    assert r.ok, r


SIZES = [  # T, B, I, H: odd sizes, B=1, T=1
    (6, 3, 5, 7),
    (1, 1, 1, 1),
    (1, 4, 3, 9),
    (9, 1, 2, 13),
]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T%dB%dI%dH%d" % s)
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_backend_vs_reference(name, size, dtype):
    T, B, I, H = size
    for reverse in (False, True):
        for r in check.backend_vs_reference(name, "torch", dtype, T=T, B=B, I=I, H=H, reverse=reverse):
            assert r.ok, r


@pytest.mark.parametrize("name", CELLS)
def test_oracles(name):
    for r in lstmc.oracles.run(name):
        assert r.ok, r


def test_reference_float32_on_request():
    prog = lstmc.compile("lstm", "reference", "float32")
    p = prog.init_params(3, 4)
    assert all(v.dtype == np.float32 for v in p.values())
    y, st, tape = prog.forward(np.ones((2, 1, 3), np.float32), p)
    assert y.dtype == np.float32 and st["c"].dtype == np.float32
    dx, ds, dp = prog.backward(tape, np.ones_like(y))
    assert dx.dtype == np.float32 and all(v.dtype == np.float32 for v in dp.values())


def test_lengths_semantics():
    """Past a row's length: zero output, frozen state; length 0 returns the initial state."""
    prog = lstmc.compile("gru")
    x, params, st, _, _, _ = check.problem("gru", T=5, B=3, I=2, H=4, lengths=False)
    L = np.array([5, 0, 2])
    y, fin, _ = prog.forward(x, params, state=st, lengths=L)
    assert np.all(y[2:, 2] == 0) and np.all(y[:, 1] == 0)
    np.testing.assert_array_equal(fin["h"][1], st["h"][1])
    y2, fin2, _ = prog.forward(x[:2, 2:3], params, state={"h": st["h"][2:3]})
    np.testing.assert_allclose(fin["h"][2], fin2["h"][0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(y[:2, 2], y2[:, 0], rtol=0, atol=1e-15)


def test_reverse_within_lengths():
    """reverse=True on a row of length L equals the forward pass over that row's first L inputs flipped."""
    prog = lstmc.compile("lstm")
    x, params, st, _, _, _ = check.problem("lstm", T=6, B=2, I=3, H=4, lengths=False)
    L = np.array([6, 4])
    y, fin, _ = prog.forward(x, params, state=st, lengths=L, reverse=True)
    one = {k: v[1:2] for k, v in st.items()}
    y1, fin1, _ = prog.forward(x[:4, 1:2][::-1].copy(), params, state=one)
    np.testing.assert_allclose(y[:4, 1], y1[::-1, 0], atol=1e-15)
    assert np.all(y[4:, 1] == 0)
    np.testing.assert_allclose(fin["c"][1], fin1["c"][0], atol=1e-15)


def test_no_tape_forward_matches_and_keeps_nothing():
    prog = lstmc.compile("peephole_lstm")
    x, params, st, L, _, _ = check.problem("peephole_lstm")
    y, fin, tape = prog.forward(x, params, state=st, lengths=L)
    y2, fin2, tape2 = prog.forward(x, params, state=st, lengths=L, need_tape=False)
    assert tape2 is None
    np.testing.assert_array_equal(y, y2)


def test_deterministic_run_to_run():
    for backend in ("reference", "torch"):
        prog = lstmc.compile("mgu", backend)
        x, params, st, L, dy, ds = check.problem("mgu")
        a = prog.backward(prog.forward(x, params, state=st, lengths=L)[2], dy, ds)
        b = prog.backward(prog.forward(x, params, state=st, lengths=L)[2], dy, ds)
        np.testing.assert_array_equal(a[0], b[0])
        for k in a[2]:
            np.testing.assert_array_equal(a[2][k], b[2][k])


def test_init_params_follow_init_lines_and_pytorch_default():
    prog = lstmc.compile("janet")
    p = prog.init_params(input_size=3, hidden_size=16, seed=3)
    assert np.all(p["b_f"] == 1.0)
    assert p["W_f"].shape == (16, 3) and p["U_f"].shape == (16, 16) and p["b_g"].shape == (16,)
    bound = 1 / np.sqrt(16)
    assert np.all(np.abs(p["U_g"]) <= bound) and np.abs(p["U_g"]).max() > 0.5 * bound
    again = prog.init_params(input_size=3, hidden_size=16, seed=3)
    assert all(np.array_equal(p[k], again[k]) for k in p)


@pytest.mark.parametrize("how", ["zeros", "ones", "normal", "xavier", "orthogonal", "-0.5"])
def test_init_kinds(how):
    prog = lstmc.compile(lstmc.parse(f"cell c\nstate h\ninit U = {how}\nh' = tanh(U @ h + W @ x)\n"))
    U = prog.init_params(4, 6, seed=0)["U"]
    if how == "orthogonal":
        np.testing.assert_allclose(U @ U.T, np.eye(6), atol=1e-12)
    elif how in ("zeros", "ones", "-0.5"):
        assert np.all(U == {"zeros": 0.0, "ones": 1.0, "-0.5": -0.5}[how])
    else:
        assert U.std() > 0


def test_a_cell_nobody_has_built_passes_check_without_code_changes(tmp_path):
    """The language's promise: a new gated cell, written only as text, compiles and checks."""
    f = tmp_path / "gated_softplus.cell"
    f.write_text("""
# a made-up cell: softplus candidate, exp-gated decay, peephole on the old state, a staged product
cell gated_softplus
state h, m
output h
init b_d = -1
d  = exp(-softplus(W_d @ x + U_d @ h + b_d))
k  = sigmoid(W_k @ x + U_k @ (d * h) + p_k * m)
u  = softplus(W_u @ x + U_u @ h) - log(2)
m' = d * m + (1 - d) * u
h' = k * tanh(m') + (1 - k) * h / (1 + abs(h))
""")
    results = check.run_checks(str(f))
    assert results and all(r.ok for r in results), check.format_table("gated_softplus", results)
