"""lstmc.nn.Recurrent: nn.LSTM/nn.GRU equivalence, user cells, state_dict, tapes, dropout, DDP,
argument errors and backend selection. Sizes are small on purpose: this runs on 2 cores."""

from __future__ import annotations

import copy
import importlib
import io
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstmc
from lstmc import nn as lnn
from lstmc.nn import Recurrent, bias_params, select_backend

TOL = {torch.float64: dict(rtol=0, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=2e-5)}
T, B, I, H = 5, 3, 3, 4
LENGTHS = {"sorted": [5, 3, 2], "unsorted": [2, 5, 3], "lengths": [3, 5, 1]}

GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def close(a, b, dtype, what):
    assert a is not None and b is not None, what
    torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def torch_name_to_ours(name: str, cell: str, H: int):
    """weight_ih_l1_reverse -> [(rows, 'l1_reverse.W_<gate>') for each gate]; written independently
    of lstmc.nn from the header comments of lstm.cell and gru.cell."""
    kind, rest = name.split("_l", 1)
    layer, _, rev = rest.partition("_")
    key = f"l{layer}" + ("_reverse" if rev == "reverse" else "")
    prefix = {"weight_ih": "W_{}", "weight_hh": "U_{}", "bias_ih": "b_i{}", "bias_hh": "b_h{}"}[kind]
    return [(slice(j * H, (j + 1) * H), f"{key}.{prefix.format(g)}") for j, g in enumerate(GATES[cell])]


# ----------------------------------------------------------------------------- from_torch tables

CASES = [(cell, L, bi, bf, mode, dt, True)
         for cell in ("lstm", "gru") for L in (1, 2) for bi in (False, True) for bf in (False, True)
         for mode in ("padded", "sorted", "unsorted", "lengths") for dt in (torch.float64, torch.float32)]
CASES += [("lstm", 2, True, False, "unsorted", torch.float64, False), ("gru", 2, True, True, "sorted", torch.float64, False),
          ("gru", 1, False, False, "lengths", torch.float32, False)]


def _id(c):
    cell, L, bi, bf, mode, dt, bias = c
    return "-".join([cell, f"L{L}", "bi" if bi else "uni", "bf" if bf else "tf", mode, str(dt)[6:]]
                    + ([] if bias else ["nobias"]))


@pytest.mark.parametrize("cell, L, bi, bf, mode, dt, bias", CASES, ids=[_id(c) for c in CASES])
def test_from_torch_matches_torch(cell, L, bi, bf, mode, dt, bias):
    """Outputs, packed structure, final states and the gradients of input, initial state and every
    parameter equal nn.LSTM's / nn.GRU's."""
    check_from_torch(cell, L, bi, bf, mode, dt, bias)


def check_from_torch(cell, L, bi, bf, mode, dt, bias, device="cpu", backend="auto", ours_on=None):
    """nn.LSTM/GRU runs on `device` in `dt`; lstmc's copy runs on `ours_on` = (device, dtype), by
    default the same, and is compared at the tolerance of its own dtype."""
    torch.manual_seed(zlib.crc32(f"{cell}{L}{bi}{bf}{mode}".encode()))
    D = 2 if bi else 1
    odev, odt = ours_on or (device, dt)
    m = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bi)
    m = m.to(device, dt)
    r = Recurrent.from_torch(m, backend=backend).to(odev, odt)
    back = lambda a: a.to(device, dt)  # noqa: E731 - ours -> the reference's device and dtype
    assert r.cell.name == cell and r.batch_first == bf and r.num_layers == L and r.bidirectional == bi
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=dt).to(device).requires_grad_()
    s0 = [torch.randn(L * D, B, H, dtype=dt).to(device).requires_grad_() for _ in r.state_names]
    lengths = LENGTHS.get(mode)

    def run(module, ours):
        xx = x.to(odev, odt) if ours else x
        ss = tuple(s.to(odev, odt) for s in s0) if ours else tuple(s0)
        ss = ss[0] if cell == "gru" else ss
        if mode in ("sorted", "unsorted") or (mode == "lengths" and not ours):
            p = pack_padded_sequence(xx, lengths, batch_first=bf, enforce_sorted=(mode == "sorted"))
            out, fin = module(p, ss)
            assert isinstance(out, PackedSequence)
            packed = out
            out, lens = pad_packed_sequence(out, batch_first=bf, total_length=T)
            assert lens.tolist() == lengths
        else:
            out, fin = module(xx, ss, lengths=lengths) if ours else module(xx, ss)
            packed = None
        fin = fin if isinstance(fin, tuple) else (fin,)
        if ours:
            out, fin = back(out), tuple(back(f) for f in fin)
        return out, fin, packed

    y1, f1, p1 = run(r, True)
    y0, f0, p0 = run(m, False)
    assert y1.shape == y0.shape == ((B, T, D * H) if bf else (T, B, D * H))
    if p1 is not None:
        assert torch.equal(p1.batch_sizes, p0.batch_sizes)
        for a, b in ((p1.sorted_indices, p0.sorted_indices), (p1.unsorted_indices, p0.unsorted_indices)):
            assert (a is None and b is None) or torch.equal(a.cpu(), b.cpu())
        close(back(p1.data), p0.data, odt, "packed output data")
    close(y1, y0, odt, "output")
    for nm, a, b in zip(r.state_names, f1, f0):
        assert a.shape == (L * D, B, H)
        close(a, b, odt, f"final state {nm}")

    # gradients of a loss that weights every output and final-state entry differently
    g = torch.Generator().manual_seed(7)
    wy = torch.randn(y0.shape, generator=g, dtype=dt).to(device)
    wf = [torch.randn(f.shape, generator=g, dtype=dt).to(device) for f in f0]

    def grads(y, fin, params):
        loss = (y * wy).sum() + sum((f * w).sum() for f, w in zip(fin, wf))
        return torch.autograd.grad(loss, [x, *s0, *params])

    ours = dict(r.named_parameters())
    theirs = dict(m.named_parameters())
    g1 = grads(y1, f1, list(ours.values()))
    g0 = grads(y0, f0, list(theirs.values()))
    close(g1[0], g0[0], odt, "d input")
    for i, nm in enumerate(r.state_names):
        close(g1[1 + i], g0[1 + i], odt, f"d initial {nm}")
    gours = dict(zip(ours, g1[1 + len(s0):]))
    gtheirs = dict(zip(theirs, g0[1 + len(s0):]))
    seen = set()
    for tname, tgrad in gtheirs.items():
        for rows, oname in torch_name_to_ours(tname, cell, H):
            close(back(ours[oname].detach()), theirs[tname].detach()[rows], odt, f"{oname} value")
            close(back(gours[oname]), tgrad[rows], odt, f"d {oname} (torch {tname}[{rows.start}:{rows.stop}])")
            seen.add(oname)
    assert seen == set(ours), "every parameter is compared"


GPU_CASES = [c for c in CASES if c[2] and c[3] == (c[4] == "sorted")]   # every cell/L/mode/dtype, half the layouts
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("cell, L, bi, bf, mode, dt, bias", GPU_CASES, ids=[_id(c) for c in GPU_CASES])
def test_from_torch_on_gpu(cell, L, bi, bf, mode, dt, bias):
    """The triton backend under Recurrent on CUDA tensors. float64: against cuDNN's float64 RNN on
    the same GPU. float32: against float64 nn.LSTM/GRU on the CPU, the exact answer, because cuDNN's
    own float32 RNN is not IEEE-exact there (measured on an H100, torch 2.11, cuDNN 9.19: gradients
    5e-4 to 1.2e-3 from float64 with TF32 on or off; lstmc's triton float32 <= 8.4e-7)."""
    if dt == torch.float64:
        check_from_torch(cell, L, bi, bf, mode, dt, bias, device="cuda", backend="triton")
    else:
        check_from_torch(cell, L, bi, bf, mode, torch.float64, bias, backend="triton",
                         ours_on=("cuda", torch.float32))


def test_from_torch_across_dtypes_on_cpu():
    """The ours_on path of check_from_torch itself: lstmc in float32 against float64 torch."""
    check_from_torch("lstm", 2, True, False, "unsorted", torch.float64, True, ours_on=("cpu", torch.float32))


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="nn.LSTM or nn.GRU"):
        Recurrent.from_torch(nn.RNN(2, 3))


def test_from_torch_keeps_dropout_and_mode():
    m = nn.GRU(3, 4, num_layers=2, dropout=0.25).eval()
    r = Recurrent.from_torch(m)
    assert r.dropout == 0.25 and not r.training and r.backend == "auto"


# ------------------------------------------------------------------------- a user-written cell

USER_CELL = """\
# A cell nobody ships: a staged recurrent product (U_n @ (r * h)) and a per-unit decay a * c
cell test_gated
state h, c
output h
init b_f = 1

f  = sigmoid(W_f @ x + U_f @ h + b_f)
r  = sigmoid(W_r @ x + U_r @ h + b_r)
n  = tanh(W_n @ x + U_n @ (r * h) + a * c)
c' = f * c + (1 - f) * n
h' = tanh(c') * r
"""


def user_step(P, x, h, c):
    """USER_CELL in plain torch, for autograd to differentiate."""
    f = torch.sigmoid(x @ P["W_f"].T + h @ P["U_f"].T + P["b_f"])
    r = torch.sigmoid(x @ P["W_r"].T + h @ P["U_r"].T + P["b_r"])
    n = torch.tanh(x @ P["W_n"].T + (r * h) @ P["U_n"].T + P["a"] * c)
    c1 = f * c + (1 - f) * n
    return torch.tanh(c1) * r, c1


def reference_stack(rnn, step, x, s0, lengths):
    """Layers and directions written out plainly: the semantics Recurrent must have (time-major x)."""
    Tn, Bn, _ = x.shape
    L, D = rnn.num_layers, 2 if rnn.bidirectional else 1
    lens = torch.as_tensor(lengths if lengths is not None else [Tn] * Bn)
    finals = [[] for _ in s0]
    inp = x
    for layer in range(L):
        outs = []
        for d in range(D):
            P = dict(rnn.cell_params(layer, reverse=bool(d)))
            P = {k: P.get(k, torch.zeros(rnn.hidden_size, dtype=x.dtype)) for k in rnn.cell.params}
            S = [s[layer * D + d] for s in s0]
            ys = [None] * Tn
            for t in (range(Tn - 1, -1, -1) if d else range(Tn)):
                m = (t < lens)[:, None]
                new = step(P, inp[t], *S)
                S = [torch.where(m, a, b) for a, b in zip(new, S)]
                ys[t] = torch.where(m, new[0], torch.zeros_like(new[0]))
            outs.append(torch.stack(ys))
            for i, s in enumerate(S):
                finals[i].append(s)
        inp = torch.cat(outs, 2)
    return inp, [torch.stack(f) for f in finals]


@pytest.mark.parametrize("source", ["path", "cell"])
def test_user_cell_through_the_module(tmp_path, source):
    path = tmp_path / "test_gated.cell"
    path.write_text(USER_CELL)
    cell = str(path) if source == "path" else lstmc.parse(USER_CELL)
    torch.manual_seed(3)
    r = Recurrent(cell, I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    assert r.biases == ("b_f", "b_r")                 # `a * c` is a factor, not a bias
    assert torch.all(r.l0.b_f == 1) and torch.all(r.l1_reverse.b_f == 1)   # the cell's init line
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    s0 = [torch.randn(4, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    lengths = [5, 2, 4]
    y, (h, c) = r(x, tuple(s0), lengths=lengths)
    assert r.last_backend == "numba"
    y0, (h0, c0) = reference_stack(r, user_step, x, s0, lengths)
    close(y, y0, torch.float64, "output")
    close(h, h0, torch.float64, "h_n")
    close(c, c0, torch.float64, "c_n")
    params = list(r.parameters())
    loss = lambda y, h, c: (y.sin()).sum() + (h * 2).sum() + (c ** 2).sum()  # noqa: E731
    g1 = torch.autograd.grad(loss(y, h, c), [x, *s0, *params])
    g0 = torch.autograd.grad(loss(y0, h0, c0), [x, *s0, *params])
    for (nm, _), a, b in zip([("x", 0), ("h0", 0), ("c0", 0)] + list(r.named_parameters()), g1, g0):
        close(a, b, torch.float64, f"d {nm}")


def test_gradcheck_peephole_cell():
    torch.manual_seed(0)
    r = Recurrent("peephole_lstm", 2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    names = [n for n, _ in r.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0, *ps):
        y, (h, c) = torch.func.functional_call(r, dict(zip(names, ps)), (x, (h0, c0)), {"lengths": [3, 2]})
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *[p.detach().requires_grad_() for p in r.parameters()]),
                                    eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ parameters, init, state_dict

def test_parameter_names_and_shapes():
    r = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    keys = list(r.state_dict())
    assert keys[:4] == ["l0.W_i", "l0.b_ii", "l0.U_i", "l0.b_hi"]     # the cell's parameter order
    assert {k.split(".")[0] for k in keys} == {"l0", "l0_reverse", "l1", "l1_reverse"}
    assert r.l1_reverse.W_f.shape == (4, 8) and r.l0.U_o.shape == (4, 4) and r.l0.b_hg.shape == (4,)
    assert r.cell_params(1, reverse=True) is r.l1_reverse
    with pytest.raises(IndexError):
        r.cell_params(2)
    assert all(isinstance(p, nn.Parameter) for p in r.parameters())


def test_state_dict_round_trip():
    torch.manual_seed(1)
    a = Recurrent("peephole_lstm", 3, 4, num_layers=2, bidirectional=True)
    b = Recurrent("peephole_lstm", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, 3)
    assert not torch.equal(a(x)[0], b(x)[0])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    ya, (ha, ca) = a(x)
    yb, (hb, cb) = b(x)
    assert torch.equal(ya, yb) and torch.equal(ha, hb) and torch.equal(ca, cb)
    # the whole module pickles and deep-copies (compiled kernels are rebuilt, not copied)
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    c = torch.load(buf, weights_only=False)
    assert torch.equal(c(x)[0], ya)
    assert torch.equal(copy.deepcopy(a)(x)[0], ya)
    with pytest.raises(RuntimeError, match="Missing key"):
        Recurrent("peephole_lstm", 3, 4).load_state_dict({"l0.W_i": torch.zeros(4, 3)})


def test_init_is_reproducible_and_follows_init_lines():
    torch.manual_seed(5)
    a = Recurrent("janet", 3, 4, num_layers=2)
    torch.manual_seed(5)
    b = Recurrent("janet", 3, 4, num_layers=2)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert torch.all(a.l0.b_f == 1) and torch.all(a.l1.b_f == 1)     # `init b_f = 1`
    assert not torch.equal(a.l0.U_f, a.l1.U_f)                      # a seed per layer and direction
    k = 1 / 4 ** 0.5
    assert a.l0.W_g.abs().max() <= k


def test_bias_false_drops_biases_and_fixes_them_at_zero():
    assert bias_params("lstm") == tuple(p for p in lstmc.load("lstm").params if p.startswith("b"))
    assert bias_params("peephole_lstm") == ("b_i", "b_f", "b_g", "b_o")   # p_* are factors
    assert bias_params("indrnn") == ("b",)                                # u * h is a factor
    torch.manual_seed(0)
    r0 = Recurrent("peephole_lstm", 3, 4, bias=False, dtype=torch.float64)
    assert sorted(dict(r0.named_parameters())) == sorted(
        f"l0.{p}" for p in lstmc.load("peephole_lstm").params if not p.startswith("b_"))
    r1 = Recurrent("peephole_lstm", 3, 4, dtype=torch.float64)
    with torch.no_grad():
        for n, p in r1.l0.items():
            p.copy_(r0.l0[n] if n in r0.l0 else torch.zeros_like(p))
    x = torch.randn(T, B, 3, dtype=torch.float64)
    close(r0(x)[0], r1(x)[0], torch.float64, "bias=False equals zero biases")


# ----------------------------------------------------------------------- tapes and autograd

@pytest.fixture
def spy(monkeypatch):
    """Record need_tape of every compiled forward a module makes."""
    calls = []

    def install(rnn, dtype=torch.float32, backend="numba"):
        prog = rnn._program(backend, dtype)
        real = prog.forward

        def forward(*a, **k):
            calls.append(k.get("need_tape", True))
            return real(*a, **k)

        monkeypatch.setattr(prog, "forward", forward)
        return calls

    return install


def test_no_grad_keeps_no_tape(spy):
    r = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True, dtype=torch.float32)
    calls = spy(r)
    x = torch.randn(T, B, 3)
    with torch.no_grad():
        y, (h, c) = r(x)
    assert calls == [False] * 4 and y.grad_fn is None and h.grad_fn is None
    calls.clear()
    with torch.inference_mode():
        r(x)
    assert calls == [False] * 4
    calls.clear()
    y, _ = r(x)                                   # parameters require grad: tapes are kept
    assert calls == [True] * 4 and y.grad_fn is not None
    calls.clear()
    r.requires_grad_(False)
    y, _ = r(x)                                   # nothing requires grad
    assert calls == [False] * 4 and y.grad_fn is None
    calls.clear()
    y, _ = r(x.requires_grad_())                  # only the input does
    assert calls == [True] * 4
    y.sum().backward()
    assert x.grad is not None and r.l0.W_i.grad is None


def test_retain_graph_in_place_and_double_backward():
    torch.manual_seed(0)
    r = Recurrent("gru", 3, 4, dtype=torch.float64)
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    y, h = r(x)
    y.sum().backward(retain_graph=True)
    g1 = x.grad.clone()
    y.sum().backward()                             # the tape survives retain_graph
    close(x.grad, 2 * g1, torch.float64, "second backward")
    with pytest.raises(RuntimeError, match="second time|freed"):
        y.sum().backward()
    y, h = r(x)
    with torch.no_grad():
        r.l0.U_z.mul_(2)                           # modified between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    y, h = r(x)
    with pytest.raises(RuntimeError, match="once-differentiable"):   # said when the graph is asked for
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_unbatched_and_batch_first_match_time_major():
    torch.manual_seed(0)
    r = Recurrent("peephole_lstm", 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, 3, dtype=torch.float64)
    h0 = torch.randn(4, B, 4, dtype=torch.float64)
    c0 = torch.randn(4, B, 4, dtype=torch.float64)
    y, (h, c) = r(x, (h0, c0))
    y1, (h1, c1) = r(x[:, 1], (h0[:, 1], c0[:, 1]))
    assert y1.shape == (T, 8) and h1.shape == (4, 4)
    close(y1, y[:, 1], torch.float64, "unbatched output")
    close(c1, c[:, 1], torch.float64, "unbatched c_n")
    rb = Recurrent("peephole_lstm", 3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    rb.load_state_dict(r.state_dict())
    yb, (hb, cb) = rb(x.transpose(0, 1), (h0, c0))
    close(yb.transpose(0, 1), y, torch.float64, "batch_first output")
    close(hb, h, torch.float64, "batch_first h_n")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_other_backends_agree_with_numba(backend):
    torch.manual_seed(0)
    r = Recurrent("gru", 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    o = Recurrent("gru", 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, backend=backend)
    o.load_state_dict(r.state_dict())
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    out = []
    for m in (r, o):
        y, h = m(x, lengths=[5, 1, 3])
        out.append((y, h, *torch.autograd.grad((y ** 2).sum() + h.sum(), [x, *m.parameters()])))
    assert (r.last_backend, o.last_backend) == ("numba", backend)
    for a, b in zip(*out):
        close(a, b, torch.float64, backend)


# ------------------------------------------------------------------------------------ dropout

def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    r = Recurrent("lstm", 3, 4, num_layers=3, dropout=0.5, bidirectional=True, dtype=torch.float64)
    layers = []
    for k in range(3):
        one = Recurrent("lstm", 3 if k == 0 else 8, 4, bidirectional=True, dtype=torch.float64)
        one.load_state_dict({n.replace(f"l{k}", "l0", 1): p for n, p in r.state_dict().items()
                             if n.split(".")[0] in (f"l{k}", f"l{k}_reverse")})
        layers.append(one)
    x = torch.randn(T, B, 3, dtype=torch.float64)

    def composed(train):
        y = x
        for k, one in enumerate(layers):
            y, _ = one(y)
            if k < 2:
                y = F.dropout(y, 0.5, training=train)
        return y

    r.eval()
    close(r(x)[0], composed(False), torch.float64, "eval: no dropout")
    close(r(x)[0], r(x)[0], torch.float64, "eval is deterministic")
    r.train()
    torch.manual_seed(11)
    y_train = r(x)[0]
    torch.manual_seed(11)
    close(y_train, composed(True), torch.float64, "train: dropout after layers 0 and 1, not after the last")
    assert not torch.allclose(y_train, composed(False))
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        Recurrent("lstm", 3, 4, dropout=0.2)


# ----------------------------------------------------------------------------------------- DDP

DDP_WORKER = """
import sys, torch, torch.distributed as dist
from lstmc.nn import Recurrent
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
sys.path.insert(0, sys.argv[5])
from test_nn import ddp_problem
model, x, h0, lengths, loss_fn = ddp_problem()
per = x.shape[1] // world
rows = slice(rank * per, (rank + 1) * per)
ddp = torch.nn.parallel.DistributedDataParallel(model)
xl = x[:, rows].clone().requires_grad_()
y, (h, c) = ddp(xl, (h0[:, rows], torch.zeros_like(h0[:, rows])), lengths=lengths[rows])
loss_fn(y, h, c).backward()
if rank == 0:
    torch.save({n: p.grad for n, p in model.named_parameters()}, out)
dist.barrier()
dist.destroy_process_group()
# Leave without running C++ static destructors: at interpreter teardown gloo's and the BLAS/Numba
# thread pools' destructors can race ("terminate called without an active exception", seen once
# in a cold-cache run); the work above is complete and saved.
sys.stdout.flush()
import os
os._exit(0)
"""


def ddp_problem():
    torch.manual_seed(0)
    model = Recurrent("peephole_lstm", 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(4, 4, 4, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 5, 2])

    def loss_fn(y, h, c):   # means over the batch: DDP's gradient average is the combined batch's
        return (y ** 2).mean() + h.sum(dim=(0, 2)).mean() + (c ** 2).mean()

    return model, x, h0, lengths, loss_fn


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    out = tmp_path / "grads.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(lstmc.__file__)), os.environ.get("PYTHONPATH", "")]))
    here = os.path.dirname(os.path.abspath(__file__))
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), "2", str(tmp_path / "store"), str(out), here],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    ddp_grads = torch.load(out)
    model, x, h0, lengths, loss_fn = ddp_problem()
    y, (h, c) = model(x, (h0, torch.zeros_like(h0)), lengths=lengths)
    loss_fn(y, h, c).backward()
    assert set(ddp_grads) == {n for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[n], p.grad, rtol=0, atol=1e-12, msg=lambda m: f"{n}: {m}")


# ------------------------------------------------------------------------------------- errors

def _lstm(**kw):
    torch.manual_seed(0)
    return Recurrent("lstm", 3, 4, num_layers=2, **kw)


BAD = [  # (description, module kwargs, call(module) -> None, exception, phrase)
    ("1-D input", {}, lambda r: r(torch.randn(3)), ValueError, "input must have 3 dimensions"),
    ("4-D input", {}, lambda r: r(torch.randn(2, 2, 2, 3)), ValueError, "or 2 for an unbatched sequence ([T, I]), got 4"),
    ("input size", {}, lambda r: r(torch.randn(5, 2, 7)), RuntimeError,
     "input.size(-1) must be equal to input_size. Expected 3, got 7"),
    ("input dtype", {}, lambda r: r(torch.randn(5, 2, 3, dtype=torch.float64)), ValueError,
     "input has dtype torch.float64 but the module's parameters are torch.float32"),
    ("input device", {}, lambda r: r(torch.randn(5, 2, 3, device="meta")), RuntimeError,
     "input is on meta but the module's parameters are on cpu"),
    ("not a tensor", {}, lambda r: r(np.zeros((5, 2, 3), np.float32)), TypeError, "input must be a Tensor"),
    ("empty time", {}, lambda r: r(torch.randn(0, 2, 3)), ValueError, "input must have at least one time step"),
    ("h size", {}, lambda r: r(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4))), RuntimeError,
     "Expected state[0] (h) size (2, 2, 4), got (1, 2, 4)"),
    ("c size batch_first", {"batch_first": True},
     lambda r: r(torch.randn(2, 5, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 5, 4))), RuntimeError,
     "Expected state[1] (c) size (2, 2, 4), got (2, 5, 4)"),
    ("state tensor for 2 states", {}, lambda r: r(torch.randn(5, 2, 3), torch.zeros(2, 2, 4)), TypeError,
     "state must be a tuple of 2 tensors (h, c)"),
    ("state too short", {}, lambda r: r(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4),)), TypeError,
     "state must be a tuple of 2 tensors (h, c) for cell 'lstm', got a tuple of 1"),
    ("state dtype", {}, lambda r: r(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4).double())),
     ValueError, "state[1] (c) has dtype torch.float64"),
    ("state device", {}, lambda r: r(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4, device="meta"),
                                                           torch.zeros(2, 2, 4))),
     RuntimeError, "state[0] (h) is on meta but the input is on cpu"),
    ("unbatched 3-D state", {}, lambda r: r(torch.randn(5, 3), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 4))),
     RuntimeError, "For unbatched 2-D input, state[0] (h) should also be 2-D"),
    ("lengths too long", {}, lambda r: r(torch.randn(5, 2, 3), lengths=[6, 1]), ValueError,
     "lengths must lie in [0, T=5]"),
    ("lengths count", {}, lambda r: r(torch.randn(5, 2, 3), lengths=[5]), ValueError, "one per batch row"),
    ("lengths with packed", {}, lambda r: r(pack_padded_sequence(torch.randn(5, 2, 3), [5, 2]), lengths=[5, 2]),
     ValueError, "lengths must be None when input is a PackedSequence"),
    ("packed input size", {}, lambda r: r(pack_padded_sequence(torch.randn(5, 2, 2), [5, 2])), RuntimeError,
     "input.size(-1) must be equal to input_size. Expected 3, got 2"),
]


@pytest.mark.parametrize("desc, kw, call, exc, phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_name_the_argument(desc, kw, call, exc, phrase):
    r = _lstm(**kw)
    with pytest.raises(exc) as e:
        call(r)
    assert phrase in str(e.value)


def test_single_state_cell_takes_a_tensor():
    r = Recurrent("gru", 3, 4)
    y, h = r(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    assert isinstance(h, torch.Tensor) and h.shape == (1, 2, 4)
    with pytest.raises(RuntimeError, match=r"Expected state size \(1, 2, 4\), got \(1, 3, 4\)"):
        r(torch.randn(5, 2, 3), torch.zeros(1, 3, 4))
    with pytest.raises(TypeError, match="state must be a Tensor"):
        r(torch.randn(5, 2, 3), "h")


@pytest.mark.parametrize("kw, exc, phrase", [
    (dict(backend="cudnn"), ValueError, "backend must be one of 'auto', 'numba', 'triton', 'torch', 'reference'"),
    (dict(dtype=torch.float16), TypeError, "dtype must be torch.float32 or torch.float64"),
    (dict(input_size=0), ValueError, "input_size must be a positive integer"),
    (dict(num_layers=1.5), ValueError, "num_layers must be a positive integer"),
    (dict(dropout=1.5), ValueError, "dropout must be a number in [0, 1]"),
    (dict(cell="no_such_cell"), FileNotFoundError, "no built-in cell or file named 'no_such_cell'"),
])
def test_bad_constructor_arguments(kw, exc, phrase):
    args = dict(cell="lstm", input_size=3, hidden_size=4) | kw
    with pytest.raises(exc) as e:
        Recurrent(**args)
    assert phrase in str(e.value)


# ---------------------------------------------------------------------------- backend selection

def test_select_backend_auto(monkeypatch):
    f32, f64 = torch.float32, torch.float64
    assert select_backend("auto", "cpu", f32) == select_backend("auto", "cpu", f64) == "numba"
    assert select_backend("auto", "meta", f32, "lstm") == "torch"
    monkeypatch.setattr(lnn, "_triton_status", lambda cell, dt: (False, "lstmc.backends.triton does not import"))
    assert select_backend("auto", "cuda:0", f32, "lstm") == "torch"
    monkeypatch.setattr(lnn, "_triton_status", lambda cell, dt: (True, ""))
    assert select_backend("auto", "cuda:0", f32, "lstm") == "triton"
    assert select_backend("triton", "cuda", f64, "gru") == "triton"
    assert select_backend("torch", "cuda", f32, "lstm") == "torch"


def test_triton_probe_reports_why(monkeypatch):
    monkeypatch.setattr(lnn, "_triton_probe", {})
    try:
        importlib.import_module("lstmc.backends.triton")
    except ImportError:
        ok, why = lnn._triton_status(lstmc.load("lstm"), "float32")
        assert not ok and "lstmc.backends.triton does not import" in why
        with pytest.raises(RuntimeError, match="backend 'triton' cannot run: lstmc.backends.triton does not import"):
            Recurrent("lstm", 3, 4, backend="triton")
    else:  # the backend exists: a failing compile falls back to torch, with a warning saying why
        monkeypatch.setattr(lnn, "_compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.warns(RuntimeWarning, match="boom"):
            assert select_backend("auto", "cuda", torch.float32, "lstm") == "torch"


@pytest.mark.parametrize("args, exc, phrase", [
    (("numba", "cuda:0", torch.float32), RuntimeError, "backend 'numba' runs on CPU tensors only"),
    (("reference", "meta", torch.float64), RuntimeError, "backend 'reference' runs on CPU tensors only"),
    (("numba", "cpu", torch.float16), TypeError, "float32 and float64 kernels only, but the input and module are "
                                                   "float16 (backend 'numba')"),
    (("auto", "cpu", torch.bfloat16), TypeError, "are bfloat16"),
    (("triton", "cpu", torch.float32), RuntimeError, "backend 'triton' runs on CUDA tensors only"),
    (("tpu", "cpu", torch.float32), ValueError, "backend must be one of"),
])
def test_select_backend_refuses_with_the_reason(args, exc, phrase):
    with pytest.raises(exc) as e:
        select_backend(*args, "lstm")
    assert phrase in str(e.value)


def test_module_backend_errors():
    r = Recurrent("gru", 3, 4, backend="numba").to("meta")
    with pytest.raises(RuntimeError, match="backend 'numba' runs on CPU tensors only .* input is on meta"):
        r(torch.empty(5, 2, 3, device="meta"))
    r = Recurrent("gru", 3, 4, backend="numba").half()
    with pytest.raises(TypeError, match="float16"):
        r(torch.randn(5, 2, 3).half())
    r = Recurrent("gru", 3, 4).double()           # .to(dtype) after construction picks the float64 kernels
    r(torch.randn(5, 2, 3, dtype=torch.float64))
    assert r.last_backend == "numba" and ("numba", torch.float64) in r._programs


@pytest.mark.parametrize("second_order", ["create_graph", "gradgradcheck"])
def test_a_second_derivative_is_refused_in_one_sentence(second_order):
    """lstmc layers are once-differentiable: asking for a gradient of their gradient says so, rather
    than failing later with a misleading 'does not require grad' or 'Jacobian mismatch'."""
    from lstmc.autograd import ONCE_DIFFERENTIABLE

    m = lstmc.nn.Recurrent("lstm", 3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="once-differentiable") as info:
        if second_order == "create_graph":
            torch.autograd.grad(m(x)[0].sum(), x, create_graph=True)
        else:
            torch.autograd.gradgradcheck(lambda v: m(v)[0], (x,))
    assert ONCE_DIFFERENTIABLE in str(info.value)
    g, = torch.autograd.grad(m(x)[0].sum(), x)        # first order still works
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("L, bi, bf", [(1, False, False), (2, True, True)])
def test_from_torch_lstm_with_projection_matches_torch(backend, L, bi, bf):
    """nn.LSTM(proj_size=P) becomes the built-in lstmp with sizes {"P": P}: output [.., D*P], h_n
    [L*D, B, P], c_n [L*D, B, H], and the gradients of input, both initial states and every
    parameter equal torch's in float64 (lstmc.interop.torch_layer_weights maps each one)."""
    import copy

    from lstmc.interop import torch_layer_weights

    P = 3
    torch.manual_seed(11)
    m = nn.LSTM(I, H, num_layers=L, batch_first=bf, bidirectional=bi, proj_size=P).double()
    r = Recurrent.from_torch(m, backend=backend)
    D = 2 if bi else 1
    assert r.cell.name == "lstmp" and r.output_size == P
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * D, B, P, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L * D, B, H, dtype=torch.float64, requires_grad=True)
    y1, (h1, c1) = r(x, (h0, c0))
    y0, (hh, cc) = m(x, (h0, c0))
    assert y1.shape == y0.shape and h1.shape == (L * D, B, P) and c1.shape == (L * D, B, H)
    for a, b, what in ((y1, y0, "output"), (h1, hh, "h_n"), (c1, cc, "c_n")):
        close(a, b, torch.float64, what)
    g = torch.Generator().manual_seed(3)
    w = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y0, hh, cc)]

    def grads(outs, params):
        loss = sum((o * wi).sum() for o, wi in zip(outs, w))
        return torch.autograd.grad(loss, [x, h0, c0, *params])

    ours = dict(r.named_parameters())
    g1 = grads((y1, h1, c1), list(ours.values()))
    g0 = grads((y0, hh, cc), list(m.parameters()))
    for a, b, what in zip(g1[:3], g0[:3], ("d input", "d h0", "d c0")):
        close(a, b, torch.float64, what)
    gm = copy.deepcopy(m)                   # torch's gradients in the module's layout, to slice like weights
    with torch.no_grad():
        for prm, gr in zip(gm.parameters(), g0[3:]):
            prm.copy_(gr)
    gours = dict(zip(ours, g1[3:]))
    seen = set()
    for key, _ in r._directions():
        for name, t in torch_layer_weights(gm, "lstmp", key[1:]).items():
            close(gours[f"{key}.{name}"], t, torch.float64, f"d {key}.{name}")
            seen.add(f"{key}.{name}")
    assert seen == set(ours), "every parameter is compared"
