"""`lstmc.nn.Recurrent` with cells that read extra per-step inputs (`input dt`, `input keep[H]`,
`input u[K]` with `sizes=`; docs/nn.md, "Extra inputs"). One table of cases (each example cell with
inputs x backend x layout) drives one checker: the module's output, final states and gradients
equal an oracle written here from the program's own forward (layers chained by hand, the reverse
direction reversed within each row's length by hand, not by the program's `reverse=`), and the
reference backend's gradients. Then gradcheck in float64 through the module including the extra
inputs, PackedSequence input with padded inputs, a table of errors, and `lstmc show` / the arena's
parameter count for every example cell. Sizes are tiny (I=3, H=4, T<=6, B<=3)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ.setdefault("TRITON_INTERPRET", "1")

import lstmc  # noqa: E402
from lstmc.nn import Recurrent  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
I, H = 3, 4
DT = torch.float64
TOL = dict(rtol=1e-9, atol=1e-10)


def _dt(rng, shape):             # time gaps: positive
    return rng.uniform(0.1, 3.0, size=shape)


def _flags(rng, shape):          # 0/1 flags: episode starts, zoneout masks
    return (rng.uniform(size=shape) < 0.3).astype(np.float64)


# cell -> (sizes, {input: (feature count or None, generator)})
CELLS = {
    "tlstm": (None, {"dt": (None, _dt)}),
    "episodic_gru": (None, {"reset": (None, _flags)}),
    "zoneout_lstm": (None, {"keep_c": (H, _flags), "keep_h": (H, _flags)}),
    "conditioned_lstm": ({"K": 2}, {"w": (2, lambda rng, shape: rng.normal(size=shape))}),
}


def _path(name: str) -> str:
    return str(EXAMPLES / f"{name}.cell")


def test_the_table_holds_every_example_with_inputs():
    have = {p.stem for p in EXAMPLES.glob("*.cell") if lstmc.load(str(p)).inputs}
    assert have == set(CELLS)


def _time_major_inputs(name, T, B, rng) -> dict[str, np.ndarray]:
    return {u: gen(rng, (T, B) if n is None else (T, B, n)) for u, (n, gen) in CELLS[name][1].items()}


def _module(name, backend, **kw) -> Recurrent:
    torch.manual_seed(0)
    return Recurrent(_path(name), I, H, backend=backend, dtype=DT, sizes=CELLS[name][0], **kw)


def _caller_layout(a: np.ndarray, batch_first: bool) -> torch.Tensor:
    t = torch.from_numpy(a.copy())
    return t.transpose(0, 1).contiguous() if batch_first else t


# ------------------------------------------------------------------------------------ the oracle

def _reverse_rows(a: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Each row's first L[b] steps in reverse order, the rest in place (lstmc's reverse direction)."""
    out = a.copy()
    for b, n in enumerate(L):
        out[:n, b] = a[:n, b][::-1]
    return out


def oracle(rnn: Recurrent, x: np.ndarray, inputs: dict, L: np.ndarray, state: list[np.ndarray]):
    """(output [T, B, D*H], finals [state][L*D, B, H]) of `rnn` computed with the reference program's
    forward one layer and direction at a time, time-major; the reverse direction reads x and the
    inputs reversed within each row's length by _reverse_rows (and its output is put back)."""
    prog = lstmc.compile(rnn.cell, "reference")
    D = 2 if rnn.bidirectional else 1
    layer_in = x
    finals = {s: [] for s in rnn.state_names}
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(D):
            pd = rnn.cell_params(layer, reverse=bool(d))
            P = {p: pd[p].detach().numpy() for p in rnn.cell.params}
            k = layer * D + d
            S = {s: state[i][k] for i, s in enumerate(rnn.state_names)}
            xin, uin = layer_in, inputs
            if d:
                xin, uin = _reverse_rows(layer_in, L), {u: _reverse_rows(a, L) for u, a in inputs.items()}
            y, fin, _ = prog.forward(np.ascontiguousarray(xin), P, S, lengths=L, need_tape=False,
                                     inputs={u: np.ascontiguousarray(a) for u, a in uin.items()})
            outs.append(_reverse_rows(y, L) if d else y)
            for s in rnn.state_names:
                finals[s].append(fin[s])
        layer_in = np.concatenate(outs, axis=2)
    return layer_in, [np.stack(finals[s]) for s in rnn.state_names]


# ------------------------------------------------------------------------------------ the checker

def _run(rnn, x, inputs, L, state, batch_first):
    """The module's output, finals and the gradients of a loss of them (x, inputs, state, parameters)."""
    xt = _caller_layout(x, batch_first).requires_grad_()
    ins = {u: _caller_layout(a, batch_first).requires_grad_() for u, a in inputs.items()}
    st = [torch.from_numpy(s.copy()).requires_grad_() for s in state]
    rnn.zero_grad()
    y, fin = rnn(xt, st[0] if len(st) == 1 else tuple(st), lengths=None if L is None else torch.from_numpy(L),
                 inputs=ins)
    fin = [fin] if isinstance(fin, torch.Tensor) else list(fin)
    w = torch.linspace(-1, 1, y.numel(), dtype=DT).reshape(y.shape)
    ((y * w).sum() + sum((f * f).sum() for f in fin)).backward()
    grads = [xt.grad, *(ins[u].grad for u in inputs), *(s.grad for s in st), *(p.grad for p in rnn.parameters())]
    return y.detach(), [f.detach() for f in fin], grads


def check_module(name, backend, lengths, bidirectional, batch_first, layers):
    rng = np.random.default_rng(1)
    T, B = 6, 3
    rnn = _module(name, backend, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    D = 2 if bidirectional else 1
    x = rng.normal(size=(T, B, I))
    inputs = _time_major_inputs(name, T, B, rng)
    L = np.array([T, 2, 0]) if lengths else None
    state = [rng.uniform(-0.5, 0.5, size=(layers * D, B, H)) for _ in rnn.state_names]
    y, fin, grads = _run(rnn, x, inputs, L, state, batch_first)
    want_y, want_fin = oracle(rnn, x, inputs, np.full(B, T) if L is None else L, state)
    y_tm = y.transpose(0, 1) if batch_first else y
    torch.testing.assert_close(y_tm, torch.from_numpy(want_y), **TOL)
    for f, w in zip(fin, want_fin):
        torch.testing.assert_close(f, torch.from_numpy(w), **TOL)
    if lengths:                   # the empty row outputs zeros
        assert not y_tm[:, 2].any()
    if backend != "reference":    # the gradients equal the reference backend's (same weights)
        ref = _module(name, "reference", num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        ref.load_state_dict(rnn.state_dict())
        _, _, want = _run(ref, x, inputs, L, state, batch_first)
        assert len(grads) == len(want)
        for i, (g, w) in enumerate(zip(grads, want)):
            torch.testing.assert_close(g, w, **TOL, msg=lambda m, i=i: f"gradient {i}: {m}")
    return grads


CONFIGS = [  # (lengths, bidirectional, batch_first, layers)
    (True, True, False, 1),      # lengths (0 and T among them), the reverse direction within each length
    (False, True, True, 2),      # batch first, two bidirectional layers: every layer reads the same inputs
    (True, False, False, 2),     # lengths and two forward layers
]
CASES = [pytest.param(name, backend, *cfg, id=f"{name}-{backend}-{'L' if cfg[0] else 'full'}"
                      f"{'-bi' if cfg[1] else ''}{'-bf' if cfg[2] else ''}-{cfg[3]}layers")
         for name in CELLS for backend in ("numba", "torch", "reference") for cfg in CONFIGS
         if backend == "numba" or cfg == CONFIGS[0]]


@pytest.mark.parametrize("name, backend, lengths, bidirectional, batch_first, layers", CASES)
def test_module_equals_the_program_layer_by_layer(name, backend, lengths, bidirectional, batch_first, layers):
    grads = check_module(name, backend, lengths, bidirectional, batch_first, layers)
    assert all(g is not None for g in grads)
    assert all(grads[1 + i].abs().sum() > 0 for i in range(len(CELLS[name][1])))   # autograd reached them


def test_empty_rows_give_their_inputs_no_gradient():
    rng = np.random.default_rng(2)
    rnn = _module("zoneout_lstm", "numba", bidirectional=True)
    x = rng.normal(size=(5, 3, I))
    inputs = _time_major_inputs("zoneout_lstm", 5, 3, rng)
    L = np.array([5, 2, 0])
    _, _, grads = _run(rnn, x, inputs, L, [np.zeros((2, 3, H))] * 2, False)
    for g in grads[1:3]:                       # keep_c, keep_h: [T, B, H]
        assert not g[:, 2].any() and not g[2:, 1].any() and g[:2, 1].abs().sum() > 0


@pytest.mark.parametrize("backend", ["numba", "torch", "reference"])
@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_through_the_module_including_the_inputs(name, backend):
    """torch.autograd.gradcheck (float64 finite differences) of output and final states with respect
    to x, the initial state and every extra input, bidirectional with lengths."""
    rng = np.random.default_rng(3)
    T, B = 3, 2
    rnn = _module(name, backend, bidirectional=True)
    x = torch.from_numpy(rng.normal(size=(T, B, I))).requires_grad_()
    inputs = {u: torch.from_numpy(a).requires_grad_() for u, a in _time_major_inputs(name, T, B, rng).items()}
    s0 = [torch.from_numpy(rng.uniform(-0.5, 0.5, size=(2, B, H))).requires_grad_() for _ in rnn.state_names]
    names = list(inputs)
    L = torch.tensor([3, 2])

    def f(x, *rest):
        st, ins = rest[:len(s0)], dict(zip(names, rest[len(s0):]))
        y, fin = rnn(x, st[0] if len(st) == 1 else tuple(st), lengths=L, inputs=ins)
        return (y, *([fin] if isinstance(fin, torch.Tensor) else fin))

    assert torch.autograd.gradcheck(f, (x, *s0, *inputs.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("name", ["tlstm", "conditioned_lstm"])
def test_packed_input_with_padded_inputs_equals_lengths(name, batch_first):
    """A PackedSequence (unsorted) with the extra inputs as padded tensors in the caller's batch order,
    laid out as the module is: the same output, states and gradients as the padded call with lengths."""
    rng = np.random.default_rng(4)
    T, B = 5, 3
    rnn = _module(name, "numba", bidirectional=True, batch_first=batch_first)
    x = rng.normal(size=(T, B, I))
    inputs = _time_major_inputs(name, T, B, rng)
    L = np.array([3, 5, 1])                       # unsorted: the packed input reorders the batch
    y, fin, grads = _run(rnn, x, inputs, L, [np.zeros((2, B, H))] * len(rnn.state_names), batch_first)

    xt = _caller_layout(x, batch_first).requires_grad_()
    ins = {u: _caller_layout(a, batch_first).requires_grad_() for u, a in inputs.items()}
    packed = pack_padded_sequence(xt, torch.from_numpy(L), batch_first=batch_first, enforce_sorted=False)
    rnn.zero_grad()
    py, pfin = rnn(packed, inputs=ins)
    pfin = [pfin] if isinstance(pfin, torch.Tensor) else list(pfin)
    pad, _ = torch.nn.utils.rnn.pad_packed_sequence(py, batch_first=batch_first, total_length=T)
    torch.testing.assert_close(pad, y, **TOL)
    for a, b in zip(pfin, fin):
        torch.testing.assert_close(a, b, **TOL)
    w = torch.linspace(-1, 1, pad.numel(), dtype=DT).reshape(pad.shape)
    ((pad * w).sum() + sum((f * f).sum() for f in pfin)).backward()
    torch.testing.assert_close(xt.grad, grads[0], **TOL)
    for i, u in enumerate(inputs):
        torch.testing.assert_close(ins[u].grad, grads[1 + i], **TOL)
    # padded inputs longer than the longest sequence are read up to its length
    longer = {u: torch.cat([v.detach(), v.detach()], dim=1 if batch_first else 0) for u, v in ins.items()}
    with torch.no_grad():
        torch.testing.assert_close(rnn(packed, inputs=longer)[0].data, py.data, **TOL)


def test_unbatched_input_takes_unbatched_inputs():
    rng = np.random.default_rng(5)
    rnn = _module("conditioned_lstm", "numba", num_layers=2)
    x = torch.from_numpy(rng.normal(size=(4, I)))
    w = torch.from_numpy(rng.normal(size=(4, 2)))
    with torch.no_grad():
        y, (h, c) = rnn(x, inputs={"w": w})
        y1, (h1, c1) = rnn(x[:, None], inputs={"w": w[:, None]})
    torch.testing.assert_close(y, y1[:, 0], **TOL)
    torch.testing.assert_close(h, h1[:, 0], **TOL)


def test_no_grad_inference_and_inputs_without_requires_grad():
    """Under no_grad the inference path runs (no tape); with inputs that need no gradient the
    parameters still get theirs."""
    rng = np.random.default_rng(6)
    rnn = _module("tlstm", "numba", bidirectional=True)
    x = torch.from_numpy(rng.normal(size=(5, 2, I)))
    dt = torch.from_numpy(_dt(rng, (5, 2)))
    with torch.no_grad():
        y0, _ = rnn(x, inputs={"dt": dt})
    y, _ = rnn(x, inputs={"dt": dt})
    torch.testing.assert_close(y.detach(), y0, rtol=0, atol=0)
    y.sum().backward()
    assert rnn.l0.W_i.grad is not None and rnn.l0_reverse.U_d.grad.abs().sum() > 0


def test_triton_operators_take_the_inputs(monkeypatch):
    """The custom operators' triton path with extra inputs (Triton's CPU interpreter) against numba:
    forward, the tape rebuilt in backward (reversed inputs), backward with the inputs' gradients."""
    pytest.importorskip("triton")
    from lstmc.backends.triton.environment import interpreting

    import lstmc.torch_ops
    from lstmc.torch_ops import cell_ops

    if torch.cuda.is_available() or not interpreting():
        pytest.skip("needs Triton's CPU interpreter (TRITON_INTERPRET=1 before triton is imported)")
    rng = np.random.default_rng(7)
    rnn = _module("conditioned_lstm", "numba")
    ops = cell_ops(rnn.cell)
    x = torch.from_numpy(rng.normal(size=(4, 2, I)))
    w = torch.from_numpy(rng.normal(size=(2, 4, 2))).transpose(0, 1)      # batch_first's layout
    ps = [rnn.l0[p].detach() for p in ops.params]
    st = [torch.from_numpy(rng.uniform(-0.5, 0.5, size=(2, H))) for _ in ops.states]
    res = {}
    for backend in ("numba", "triton"):
        monkeypatch.setitem(lstmc.torch_ops.OP_BACKENDS, "cpu", backend)
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        pp = [p.clone().requires_grad_() for p in ps]
        y, fin = ops(xx, st, pp, torch.tensor([4, 2]), True, True, [ww])
        (y.square().sum() + sum(f.square().sum() for f in fin)).backward()
        res[backend] = [y.detach(), *[f.detach() for f in fin], xx.grad, ww.grad, *[p.grad for p in pp]]
    assert type(ops._compiled[("triton", DT)]).__name__ == "TritonCell"
    for a, b in zip(res["triton"], res["numba"]):
        torch.testing.assert_close(a, b, **TOL)


# -------------------------------------------------------------------------------------- errors

def _x(T=5, B=2):
    return torch.zeros(T, B, I, dtype=DT)


ERRORS = [
    # (cell, constructor kwargs, call kwargs, exception, words)
    ("tlstm", {}, {}, ValueError, r"inputs is missing 'dt': pass inputs=\{'dt': \[T, B\]\}"),
    ("conditioned_lstm", {}, {"inputs": {}}, ValueError, r"missing 'w': pass inputs=\{'w': \[T, B, K\]\}"),
    ("tlstm", {}, {"inputs": {"dt": torch.ones(5, 2, dtype=DT), "dtt": torch.ones(5, 2, dtype=DT)}},
     ValueError, r"unknown entries \['dtt'\]; the inputs of cell 'tlstm' are dt"),
    ("tlstm", {}, {"inputs": {"d_t": torch.ones(5, 2, dtype=DT)}}, ValueError, r"did you mean 'dt'"),
    ("tlstm", {}, {"inputs": {"dt": torch.ones(5, 2, 1, dtype=DT)}}, ValueError,
     r"inputs\['dt'\] has shape \(5, 2, 1\), expected \(5, 2\) = \[T, B\] \(`input dt`"),
    ("tlstm", {"batch_first": True}, {"inputs": {"dt": torch.ones(5, 2, dtype=DT)}, "x": torch.zeros(2, 5, I, dtype=DT)},
     ValueError, r"expected \(2, 5\) = \[B, T\] .*batch first"),
    ("zoneout_lstm", {}, {"inputs": {"keep_c": torch.ones(5, 2, H + 1, dtype=DT), "keep_h": torch.ones(5, 2, H, dtype=DT)}},
     ValueError, r"inputs\['keep_c'\] has shape \(5, 2, 5\), expected \(5, 2, 4\) = \[T, B, H\]"),
    ("conditioned_lstm", {}, {"inputs": {"w": torch.ones(5, 2, 3, dtype=DT)}}, ValueError,
     r"expected \(5, 2, 2\) = \[T, B, K\] \(`input w\[K\]`, K=2 from sizes="),
    ("tlstm", {}, {"inputs": {"dt": torch.ones(5, 2, dtype=torch.float32)}}, ValueError,
     r"inputs\['dt'\] has dtype torch.float32 but the input and module are torch.float64: convert it with "
     r"inputs\['dt'\].to\(torch.float64\)"),
    ("episodic_gru", {}, {"inputs": {"reset": torch.zeros(5, 2, dtype=torch.bool)}}, ValueError,
     r"has dtype torch.bool .*read as a number"),
    ("tlstm", {}, {"inputs": {"dt": torch.ones(5, 2, dtype=DT, device="meta")}}, RuntimeError,
     r"inputs\['dt'\] is on meta but the input is on cpu"),
    ("tlstm", {}, {"inputs": {"dt": np.ones((5, 2))}}, TypeError, r"inputs\['dt'\] must be a Tensor"),
    ("tlstm", {}, {"inputs": [torch.ones(5, 2, dtype=DT)]}, TypeError, r"inputs must be a dict"),
    ("lstm", {}, {"inputs": {"dt": torch.ones(5, 2, dtype=DT)}}, ValueError,
     r"cell 'lstm' has no extra inputs"),
]


@pytest.mark.parametrize("cell, ctor, call, exc, words", ERRORS,
                         ids=[f"{i}-{c}" for i, (c, *_) in enumerate(ERRORS)])
def test_bad_inputs_are_named(cell, ctor, call, exc, words):
    path = cell if cell == "lstm" else _path(cell)
    rnn = Recurrent(path, I, H, dtype=DT, sizes=CELLS[cell][0] if cell in CELLS else None, **ctor)
    call = dict(call)
    x = call.pop("x", _x())
    with pytest.raises(exc, match=words):
        rnn(x, **call)


SIZE_ERRORS = [
    ("conditioned_lstm", None, ValueError, r"declares `size K` \(for `input w\[K\]`\): pass its value, e\.g\. "
                                           r"Recurrent\(\.\.\., sizes=\{'K': 8\}\)"),
    ("conditioned_lstm", {"K": 2, "Q": 3}, ValueError, r"sizes has unknown entries \['Q'\].*its sizes are K"),
    ("conditioned_lstm", {"K": 0}, ValueError, r"sizes\['K'\] must be a positive integer, got 0"),
    ("conditioned_lstm", {"K": 2.5}, ValueError, r"positive integer, got 2.5"),
    ("conditioned_lstm", [("K", 2)], TypeError, r"sizes must be a dict"),
    ("lstm", {"K": 2}, ValueError, r"declares none \(no `size` line\)"),
]


@pytest.mark.parametrize("cell, sizes, exc, words", SIZE_ERRORS, ids=[f"{i}" for i in range(len(SIZE_ERRORS))])
def test_bad_sizes_are_named(cell, sizes, exc, words):
    with pytest.raises(exc, match=words):
        Recurrent(cell if cell == "lstm" else _path(cell), I, H, sizes=sizes)


def test_sizes_shape_the_parameters_and_are_kept():
    rnn = Recurrent(_path("conditioned_lstm"), I, H, num_layers=2, sizes={"K": 7}, dtype=DT)
    assert tuple(rnn.l0.V_i.shape) == (H, 7) and tuple(rnn.l1.V_o.shape) == (H, 7)
    assert tuple(rnn.l1.W_i.shape) == (H, H)
    assert "sizes={'K': 7}" in repr(rnn)
    import copy
    import pickle

    for other in (copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn))):
        assert other.sizes == {"K": 7}
        torch.testing.assert_close(other.l0.V_i, rnn.l0.V_i)
    with pytest.raises(RuntimeError, match=r"parameter l0.V_i has shape \(4, 3\), expected \(4, 7\)"):
        rnn.l0.V_i.data = torch.zeros(H, 3, dtype=DT)
        rnn(_x(), inputs={"w": torch.zeros(5, 2, 7, dtype=DT)})


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_a_state_of_its_own_size_sets_the_next_layers_input(backend):
    """sizes= also gives `state h[P]` its size: the output is D*P wide, layer 1 reads D*P features,
    the states are [L*D, B, P] and [L*D, B, H]; the numbers are torch.nn.LSTM(proj_size=P)'s."""
    cell = lstmc.load("lstmp")          # the built-in: nn.LSTM(proj_size)'s parameterisation
    Hs, P = 6, 2
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, Hs, proj_size=P, num_layers=2, bidirectional=True, dtype=DT)
    rnn = Recurrent(cell, I, Hs, num_layers=2, bidirectional=True, sizes={"P": P}, backend=backend, dtype=DT)
    assert rnn.output_size == P and tuple(rnn.l1.W_i.shape) == (Hs, 2 * P) and tuple(rnn.l1.W_hr.shape) == (P, Hs)
    with torch.no_grad():
        for key, pd in rnn._directions():
            for kind, names in (("weight_ih", "W_i W_f W_g W_o"), ("weight_hh", "U_i U_f U_g U_o"),
                                ("bias_ih", "b_ii b_if b_ig b_io"), ("bias_hh", "b_hi b_hf b_hg b_ho")):
                fused = getattr(lstm, f"{kind}_l{key[1:]}")
                for j, n in enumerate(names.split()):
                    pd[n].copy_(fused[j * Hs:(j + 1) * Hs])
            pd["W_hr"].copy_(getattr(lstm, f"weight_hr_l{key[1:]}"))
    x = torch.randn(5, 2, I, dtype=DT)
    h0, c0 = torch.randn(4, 2, P, dtype=DT), torch.randn(4, 2, Hs, dtype=DT)
    want, (wh, wc) = lstm(x, (h0, c0))
    got, (gh, gc) = rnn(x, (h0, c0))
    for a, b in ((got, want), (gh, wh), (gc, wc)):
        torch.testing.assert_close(a, b, **TOL)
    with pytest.raises(RuntimeError, match=r"Expected state\[0\] \(h\) size \(4, 2, 2\), got \(4, 2, 6\)"):
        rnn(x, (c0, c0))


# ------------------------------------------------------------------------- show and the arena

@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.cell")), ids=lambda p: p.stem)
def test_show_works_for_every_example_cell(path, capsys):
    from lstmc.cli import cmd_show

    class Args:
        cell = str(path)

    assert cmd_show(Args()) == 0
    out = capsys.readouterr().out
    cell = lstmc.load(str(path))
    for p in cell.params:
        assert f"  {p} " in out
    for u, size in cell.inputs.items():
        assert f"  {u} " in out and (f"[T, B, {size}]" if size else "[T, B]") in out
    for k in cell.sizes:
        assert f"size {k}" in out


def test_arena_parameter_count_counts_V_from_sizes():
    from lstmc.arena import rnn_param_count

    lstm = rnn_param_count("lstm", 3, 8)
    assert rnn_param_count(_path("conditioned_lstm"), 3, 8, sizes={"K": 5}) == 4 * 8 * 3 + 4 * 64 + 4 * 8 * 5 + 4 * 8
    assert rnn_param_count(_path("tlstm"), 3, 8) == lstm - 4 * 8 + 64 + 8      # one b per gate; U_d, b_d
    with pytest.raises(ValueError, match=r"sizes=\{'K': 8\}"):
        rnn_param_count(_path("conditioned_lstm"), 3, 8)


def test_show_prints_sized_states_with_their_size(capsys):
    from lstmc.cli import cmd_show

    class Args:
        cell = "lstmp"

    assert cmd_show(Args()) == 0
    out = capsys.readouterr().out
    assert "states: h[P], c   output: h" in out and "W_hr         [P, H]" in out
