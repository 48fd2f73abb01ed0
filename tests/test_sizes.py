"""States of different sizes (`size P`, `state h[P], c`; README, "The cell language") and the
built-in `lstmp` (Sak et al. 2014; torch.nn.LSTM(proj_size=P)). One table of cells drives one
checker: finite differences in float64 through the reference (x, initial states, every parameter),
torch autograd, and every backend against the reference (float32 and float64, with lengths, reverse
and initial states). lstmp meets torch's own nn.LSTM(proj_size=P) with weights copied 1:1 through
lstmc/interop.py; bad specs and bad arguments are tables of cases with the message each must carry."""

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc.check import autograd, backend_vs_reference, finite_differences  # noqa: E402
from lstmc.interop import torch_builtin, torch_layer_weights  # noqa: E402
from lstmc.program import Block  # noqa: E402

# a P-sized state read by a recurrent product (U [H, P]), a peephole and a bias of size P, a row
# reduction and a select over P values, a staged product into P (W_p [P, H]) next to a P-sized
# element-wise term; the output is the H-sized state
SIZED = """
cell sized
size P
state h[P], c
output c
a  = W @ x + U @ h + b
c' = sigmoid(a) * c + tanh(a)
h' = tanh(W_p @ c' + b_p + r * h) * sigmoid(mean(h) + q) + 0.1 * max(h, 0)
"""
# two declared sizes, two staged products out of one step's values, a matrix into each size
TWO = """
cell two_sizes
size P, Q
state h[P], z[Q], c
g  = sigmoid(W @ x + U @ h + V @ z + b)
c' = g * c + (1 - g) * tanh(W_c @ x + U_c @ h)
z' = tanh(M_z @ c' + b_z)
h' = A @ (c' * g) + h * d
"""
# only a P-sized state: the hidden size H lives in the intermediates alone; a constant-only value
# of size P (its block makes it [B, P])
ONLY_P = """
cell only_p
size P
state h[P]
a  = tanh(W @ x + U @ h + b)
h' = V @ a + h * 0.5 + where(h > 2, 1, 0)
"""
CELLS = {"lstmp": "lstmp", "sized": SIZED, "two_sizes": TWO, "only_p": ONLY_P}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_backward_matches_finite_differences_and_autograd(name, reverse):
    """Over x, the initial states ([B, P] and [B, H]) and every parameter (float64, with lengths)."""
    for r in (finite_differences(CELLS[name], reverse=reverse), autograd(CELLS[name], reverse=reverse)):
        assert r.ok, (r.name, r.error, r.tolerance)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["torch", "numba", "triton"])
@pytest.mark.parametrize("name", list(CELLS))
def test_every_backend_matches_the_reference(name, backend, dtype, reverse):
    bad = [(r.name, r.error, r.tolerance) for r in backend_vs_reference(CELLS[name], backend, dtype, reverse=reverse)
           if not r.ok]
    assert not bad, bad


# ------------------------------------------------------------------------------ the lstmp oracle

def _lstmp_and_torch(I, H, P, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.LSTM(I, H, proj_size=P, dtype=torch.float64)
    assert torch_builtin(m) == ("lstmp", {"P": P})
    params = {k: v.detach().numpy().copy() for k, v in torch_layer_weights(m, "lstmp").items()}
    return m, params


@pytest.mark.parametrize("backend", ["reference", "torch", "numba", "triton"])
def test_lstmp_equals_torch_lstm_with_proj_size(backend):
    """Forward (y [T, B, P], final h [B, P] and c [B, H]) and the gradients of x, both initial states
    and every parameter, with torch's own weights copied in (float64, 1e-10)."""
    T, B, I, H, P = 5, 3, 4, 7, 3
    m, params = _lstmp_and_torch(I, H, P)
    prog = lstmc.compile("lstmp", backend, "float64")
    assert set(params) == set(prog.cell.params)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    h0, c0 = 0.5 * rng.standard_normal((B, P)), 0.5 * rng.standard_normal((B, H))
    dy, dh, dc = rng.standard_normal((T, B, P)), rng.standard_normal((B, P)), rng.standard_normal((B, H))
    y, fin, tape = prog.forward(x, params, state={"h": h0, "c": c0})
    dx, dst, dp = prog.backward(tape, dy, {"h": dh, "c": dc})
    assert y.shape == (T, B, P) and fin["h"].shape == (B, P) and fin["c"].shape == (B, H)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0[None], requires_grad=True), torch.tensor(c0[None], requires_grad=True)
    yt, (hn, cn) = m(xt, (h0t, c0t))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fin["h"], hn[0].detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fin["c"], cn[0].detach().numpy(), rtol=0, atol=1e-10)
    named = dict(m.named_parameters())
    grads = torch.autograd.grad([yt, hn, cn], [xt, h0t, c0t] + list(named.values()),
                                [torch.tensor(dy), torch.tensor(dh[None]), torch.tensor(dc[None])])
    np.testing.assert_allclose(dx, grads[0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dst["h"], grads[1][0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dst["c"], grads[2][0].numpy(), rtol=0, atol=1e-10)
    # torch's gradients sliced by the same map as its weights
    as_module = SimpleNamespace(hidden_size=H, bias=True, **dict(zip(named, grads[3:])))
    for k, g in torch_layer_weights(as_module, "lstmp").items():
        np.testing.assert_allclose(dp[k], g.numpy(), rtol=0, atol=1e-10, err_msg=k)


def test_the_lstmp_oracle_runs_in_the_ladder():
    from lstmc import oracles

    res = oracles.run("lstmp")
    assert [r.name for r in res] == ["torch.nn.LSTM(proj_size) forward", "torch.nn.LSTM(proj_size) backward"]
    assert all(r.ok for r in res), res


def test_the_torch_weight_map_covers_every_layer_and_direction():
    """What Recurrent.from_torch needs: every lstmc parameter of every layer/direction, torch's
    views of the right shapes (the second layer's input is the first's output, of size P)."""
    I, H, P = 4, 6, 2
    m = torch.nn.LSTM(I, H, proj_size=P, num_layers=2, bidirectional=True, dtype=torch.float64)
    cell = lstmc.load("lstmp")
    for sfx, in_size in (("0", I), ("0_reverse", I), ("1", 2 * P), ("1_reverse", 2 * P)):
        w = torch_layer_weights(m, "lstmp", sfx)
        assert set(w) == set(cell.params)
        for k, t in w.items():
            assert tuple(t.shape) == cell.param_shape(k, in_size, H, {"P": P}), (sfx, k)
    assert torch_builtin(torch.nn.LSTM(I, H)) == ("lstm", {})
    assert torch_builtin(torch.nn.GRU(I, H)) == ("gru", {})
    nobias = torch.nn.LSTM(I, H, proj_size=P, bias=False)
    assert set(torch_layer_weights(nobias, "lstmp")) == {k for k in cell.params if not k.startswith("b_")}


# ------------------------------------------------------------------------------ the plan

def test_the_program_splits_blocks_by_size_and_sizes_its_groups():
    prog = lstmc.lower(lstmc.load("lstmp")).verify()
    assert [(g.mats, g.rows, g.cols) for g in prog.groups] == [
        (("U_i", "U_f", "U_g", "U_o"), "H", "P"), (("W_hr",), "P", "H")]
    for stages in (prog.fwd, prog.bwd):
        for st in stages:
            if isinstance(st, Block):
                for let in st.lets:
                    want = prog.size_of_key(let.key)
                    assert want is None or want == st.size, (let, st.size)
    assert ("s1", "h") in {let.key for st in prog.fwd if isinstance(st, Block) and st.size == "P" for let in st.lets}
    text = prog.text()
    assert "states: h[P], c" in text and "W_hr [P, H]" in text and "block 2 [B, P]:" in text
    # a cell without sized states prints as it always did
    assert "sizes:" not in lstmc.lower(lstmc.load("lstm")).text()


def test_init_params_and_shapes():
    prog = lstmc.compile("lstmp", "reference")
    shapes = prog.param_shapes(4, 6, sizes={"P": 2})
    assert shapes["W_i"] == (6, 4) and shapes["U_i"] == (6, 2) and shapes["W_hr"] == (2, 6) and shapes["b_ii"] == (6,)
    p = prog.init_params(4, 6, sizes={"P": 2})
    assert p["W_hr"].shape == (2, 6)
    assert prog.cell.param_dims("U_i") == "[H, P]" and prog.cell.param_dims("W_hr") == "[P, H]"
    with pytest.raises(ValueError, match=r"size P.*sizes=\{'P': 8\}"):
        prog.init_params(4, 6)


BAD_ARGS = [  # (what to change, the message)
    ("state_h_H", r"state\['h'\] has shape \(3, 6\), expected \(3, 2\) = \[batch, P\] \(`state h\[P\]`\)"),
    ("state_c_P", r"state\['c'\] has shape \(3, 2\), expected \(3, 6\) = \[batch, hidden_size\]"),
    ("W_hr_T", r"params\['W_hr'\] has shape \(6, 2\), expected \(2, 6\): W_hr is \[P, H\]"),
    ("dy_H", r"dy has shape \(5, 3, 6\), expected \(5, 3, 2\) = \[T, B, P\]"),
    ("dstate_h", r"dstate\['h'\] has shape \(3, 6\), expected \(3, 2\)"),
]


@pytest.mark.parametrize("case,message", BAD_ARGS, ids=[c for c, _ in BAD_ARGS])
def test_bad_arguments_name_the_size(case, message):
    prog = lstmc.compile("lstmp", "reference")
    T, B, I, H, P = 5, 3, 4, 6, 2
    p = prog.init_params(I, H, sizes={"P": P})
    x = np.zeros((T, B, I))
    st = {"h": np.zeros((B, P)), "c": np.zeros((B, H))}
    if case == "state_h_H":
        st["h"] = np.zeros((B, H))
    if case == "state_c_P":
        st["c"] = np.zeros((B, P))
    if case == "W_hr_T":
        p["W_hr"] = np.ascontiguousarray(p["W_hr"].T)
    with pytest.raises(ValueError, match=message) if not case.startswith("d") else _nothing():
        y, _, tape = prog.forward(x, p, state=st)
    if case.startswith("d"):
        dy = np.zeros((T, B, H)) if case == "dy_H" else np.zeros((T, B, P))
        with pytest.raises(ValueError, match=message):
            prog.backward(tape, dy, {"h": np.zeros((B, H))} if case == "dstate_h" else None)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ------------------------------------------------------------------------------ bad specs

BAD_SPECS = [  # (spec, line, the message)
    ("cell t\nstate h[Q], c\nc' = tanh(W @ x + U @ h)\nh' = M @ c'\n", 2,
     "state 'h' has size 'Q', which is not declared"),
    ("cell t\nsize p\nstate h[P]\nh' = tanh(W @ x + U @ h)\n", 3, "did you mean `p`?"),
    ("cell t\nstate h[I]\nh' = tanh(W @ x + U @ h)\n", 2, "I is the input size"),
    ("cell t\nstate h[2]\nh' = tanh(W @ x + U @ h)\n", 2, "the size of state 'h' must be a name"),
    ("cell t\nsize P\nstate h\nh' = tanh(W @ x + U @ h)\n", 2, "size 'P' is declared but never used"),
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + U @ h)\nh' = c'\n", 5,
     "h' must have size P (state h[P]), but its expression has size H"),
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + U @ h) * h\nh' = M @ c'\n", 4,
     "c' must have size H (state c), but its expression has size P"),
    ("cell t\nsize P\nstate h[P], c\na = h * c\nc' = tanh(W @ x + U @ a)\nh' = M @ c'\n", 4,
     "sizes differ in a: "),
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + M @ c)\nh' = M @ c'\n", 5,
     "matrix 'M' is used elsewhere, so its rows have size H"),
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + M @ h)\nh' = M @ c'\n", 5,
     "matrix 'M' multiplies a vector of size H here and of size P elsewhere"),
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + U @ h)\nh' = tanh(W_h @ x + M @ c')\n", 5,
     "'W_h @ x' has size P: a product of an input of a size other than H is not supported yet"),
    ("cell t\nheads 2\nsize P\nstate h[P], c\nc' = tanh(W @ x + U @ h)\nh' = M @ c'\n", 4,
     "`heads` with states of other sizes is not supported yet"),
    # no parameter has a dimension of size P: forward could not tell P (a KeyError in numba's
    # compile, "pass sizes=" from forward, which takes none, and Recurrent(sizes=) failed too)
    ("cell t\nsize P\nstate h[P], c\nc' = tanh(W @ x + U @ c + b)\nh' = h * 0.5 + 1\n", 2,
     "no parameter has a dimension of size P"),
    # every state sized and no x: nothing has the hidden size, which forward reads off the parameters
    ("cell t\nsize P\nstate h[P]\nh' = tanh(U @ h + bp)\n", 3, "no parameter has the hidden size H"),
]


@pytest.mark.parametrize("spec,line,message", BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))])
def test_bad_specs(spec, line, message):
    with pytest.raises(lstmc.SpecError) as e:
        lstmc.parse(spec)
    assert message in str(e.value), str(e.value)
    assert e.value.line == line, str(e.value)


def test_h_of_size_H_is_a_plain_state():
    a = lstmc.lower(lstmc.parse("cell t\nstate h[H]\nh' = tanh(W @ x + U @ h)\n")).text()
    b = lstmc.lower(lstmc.parse("cell t\nstate h\nh' = tanh(W @ x + U @ h)\n")).text()
    assert a == b


SIZED_BIAS = """cell lstmp_b
size P
state h[P], c
i = sigmoid(W_i @ x + U_i @ h + b_i)
f = sigmoid(W_f @ x + U_f @ h + b_f)
g = tanh(W_g @ x + U_g @ h + b_g)
o = sigmoid(W_o @ x + U_o @ h + b_o)
c' = f * c + i * g
h' = tanh(W_p @ (o * tanh(c')) + b_p)
"""


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_bias_false_drops_biases_of_every_size(backend):
    """Recurrent(bias=False) fixes each dropped bias at zeros of its own size (b_p: [P]), so it
    equals the module with bias=True whose biases are zero."""
    from lstmc.nn import Recurrent

    torch.manual_seed(0)
    kw = dict(sizes={"P": 4}, backend=backend, dtype=torch.float64, num_layers=2, bidirectional=True)
    nb = Recurrent(lstmc.parse(SIZED_BIAS), 3, 6, bias=False, **kw)
    wb = Recurrent(lstmc.parse(SIZED_BIAS), 3, 6, bias=True, **kw)
    assert "l0.b_p" not in dict(nb.named_parameters()) and wb.l0.b_p.shape == (4,)
    with torch.no_grad():
        for name, p in wb.named_parameters():
            p.copy_(dict(nb.named_parameters())[name] if name in dict(nb.named_parameters()) else torch.zeros_like(p))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    (y1, s1), (y2, s2) = nb(x), wb(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-14)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    assert y1.shape == (5, 2, 8) and s1[0].shape == (4, 2, 4) and s1[1].shape == (4, 2, 6)
