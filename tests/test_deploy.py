"""Deploying lstmc layers: the custom operators of lstmc/torch_ops.py under torch.library.opcheck,
torch.compile(fullgraph=True), torch.export with dynamic T and B, and torch.func (grad, vmap;
forward mode and second derivatives refused in a sentence). Every cell, built-in and example (those
with extra per-step inputs given them, and their gradients compared too), goes through one checker
per way of deploying; sizes are tiny (I=3, H=4, T=5, B=2) and float64 results must equal eager ones
to 1e-10. On CPU the operators run numba; their triton path (CUDA)
is checked against numba under Triton's CPU interpreter, eagerly and under compile and export
(test_triton_operators_*)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd, jvp, vmap

if not torch.cuda.is_available():   # the triton operators on CPU (test_triton_operators_*): before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import lstmc  # noqa: E402
import lstmc.torch_ops  # noqa: E402
from lstmc.autograd import ONCE_DIFFERENTIABLE  # noqa: E402
from lstmc.nn import Recurrent  # noqa: E402
from lstmc.torch_ops import NO_FORWARD_MODE, cell_ops  # noqa: E402

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent.parent / "examples").glob("*.cell"))
CELLS = lstmc.builtin_cells() + EXAMPLES
I, H, T, B = 3, 4, 5, 2
DT = torch.float64
TOL = dict(rtol=0, atol=1e-10)
SIZES = {"conditioned_lstm": {"K": 2}, "lstmp": {"P": 3}}     # the values of the cells' `size` lines


def _id(cell: str) -> str:
    return Path(cell).stem


def _inputs(rnn, T, B, batch_first=False):
    """Extra per-step inputs for `rnn`'s cell ({} for a cell without any): positive, [T, B(, n)]."""
    out = {}
    for u, size in rnn.cell.inputs.items():
        n = None if size is None else H if size == "H" else rnn.sizes[size]
        shape = ((B, T) if batch_first else (T, B)) + (() if n is None else (n,))
        out[u] = torch.rand(shape, dtype=DT) + 0.1
    return out


class Model(nn.Module):
    """Linear -> Recurrent -> Linear: what a deployed model around an lstmc layer looks like."""

    def __init__(self, cell, **kw):
        super().__init__()
        self.inp = nn.Linear(I, I, dtype=DT)
        self.rnn = Recurrent(cell, I, H, dtype=DT, sizes=SIZES.get(_id(cell)), **kw)
        self.out = nn.Linear(self.rnn.output_size * (2 if kw.get("bidirectional") else 1), 2, dtype=DT)

    def forward(self, x, state=None, inputs=None):
        y, _ = self.rnn(self.inp(x), state, inputs=inputs)
        return self.out(y)


def _fwd_bwd(model, f, x, state=None, inputs=None):
    """f(x, state, inputs) and the gradients of a loss of it for every parameter of `model`, for x and
    for the extra inputs."""
    model.zero_grad()
    x = x.detach().requires_grad_()
    inputs = {u: v.detach().requires_grad_() for u, v in (inputs or {}).items()}
    y = f(x, state, inputs or None)
    y.square().sum().backward()
    return [y.detach(), x.grad] + [v.grad for v in inputs.values()] + [p.grad.clone() for p in model.parameters()]


def _assert_same(got, want, what):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None and w is not None, f"{what}: value {i} missing"
        torch.testing.assert_close(g, w, **TOL, msg=lambda m: f"{what}, value {i}: {m}")


def _ops_used(graph_module) -> set:
    return {str(n.target) for n in graph_module.graph.nodes if n.op == "call_function"}


# ------------------------------------------------------------------------------ the checkers

def check_compile(cell, backend="aot_eager", **kw):
    torch.manual_seed(0)
    model = Model(cell, **kw)
    bf = kw.get("batch_first", False)
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=DT)
    ins = _inputs(model.rnn, T, B, bf)
    want = _fwd_bwd(model, model, x, None, ins)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)   # fullgraph: a graph break is an error
    _assert_same(_fwd_bwd(model, compiled, x, None, ins), want, f"torch.compile({backend}) of {_id(cell)} {kw}")
    x2 = torch.randn((B + 1, T + 2, I) if bf else (T + 2, B + 1, I), dtype=DT)   # another shape
    ins2 = _inputs(model.rnn, T + 2, B + 1, bf)
    _assert_same(_fwd_bwd(model, compiled, x2, None, ins2), _fwd_bwd(model, model, x2, None, ins2),
                 f"{_id(cell)} at another shape")


def check_export(cell, **kw):
    torch.manual_seed(0)
    model = Model(cell, **kw)
    bf = kw.get("batch_first", False)
    Tdim, Bdim = torch.export.Dim("T", min=2, max=64), torch.export.Dim("B", min=2, max=64)
    dims = {0: Bdim, 1: Tdim} if bf else {0: Tdim, 1: Bdim}

    def args(t, b):          # (x, state, inputs) at T=t, B=b; inputs None for a cell without any
        return (torch.randn((b, t, I) if bf else (t, b, I), dtype=DT), None, _inputs(model.rnn, t, b, bf) or None)

    a = args(T, B)
    dynamic = (dims, None, None if a[2] is None else {u: dims for u in a[2]})
    ep = torch.export.export(model, a, dynamic_shapes=dynamic)
    ops = cell_ops(model.rnn.cell)
    assert str(ops.fwd) in _ops_used(ep.graph_module), ep.graph_module.code
    run = ep.module()
    for t, b in ((T, B), (T + 3, B + 2), (2, 7)):
        a2 = args(t, b)
        with torch.no_grad():
            torch.testing.assert_close(run(*a2), model(*a2), **TOL)
    with torch.no_grad():                                              # for inference: no tape kept
        ep_infer = torch.export.export(model, a, dynamic_shapes=dynamic)
    used = _ops_used(ep_infer.graph_module)
    assert str(ops.infer) in used and str(ops.fwd) not in used
    a2 = args(T + 1, B + 3)
    with torch.no_grad():
        torch.testing.assert_close(ep_infer.module()(*a2), model(*a2), **TOL)
    buf = io.BytesIO()                                                 # and through a file
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    a2 = args(T + 1, B + 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*a2), model(*a2), **TOL)


# ------------------------------------------------------------------------------------ tables

# aot_eager for the table: it is the same dynamo capture (fullgraph) and the same AOT-autograd joint
# forward+backward graph over fake tensors as inductor, without inductor's C++ code generation,
# which costs 20-40 s a graph on a loaded 2-core machine; inductor itself runs in test_inductor.
@pytest.mark.parametrize("cell", CELLS, ids=_id)
def test_compile_fullgraph_equals_eager(cell):
    check_compile(cell)


@pytest.mark.parametrize("cell", CELLS, ids=_id)
def test_export_dynamic_T_and_B_equals_eager(cell):
    check_export(cell)


MODULE_CASES = [dict(num_layers=2, bidirectional=True), dict(batch_first=True), dict(bias=False),
                dict(num_layers=2, dropout=0.0, bidirectional=True, batch_first=True)]


@pytest.mark.parametrize("kw", MODULE_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_module_options_compile_and_export(kw):
    check_compile("gru", **kw)
    check_export("lstm", **kw)


TLSTM = next(c for c in EXAMPLES if c.endswith("tlstm.cell"))
CONDITIONED = next(c for c in EXAMPLES if c.endswith("conditioned_lstm.cell"))


def test_cells_with_inputs_compile_and_export_with_layers_directions_and_batch_first():
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    check_compile(TLSTM, **kw)
    check_export(CONDITIONED, **kw)


def test_inductor_fullgraph_forward_and_backward_equal_eager():
    """The default backend, once (its C++ compile is slow on 2 cores): a two-layer bidirectional
    LSTM, and the initial state as an input."""
    torch.manual_seed(0)
    model = Model("lstm", num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=DT)
    h0 = tuple(torch.randn(4, B, H, dtype=DT) for _ in range(2))
    want = _fwd_bwd(model, model, x, h0)
    torch._dynamo.reset()
    got = _fwd_bwd(model, torch.compile(model, fullgraph=True), x, h0)
    _assert_same(got, want, "inductor")


def test_compile_with_lengths_and_inference():
    torch.manual_seed(0)
    rnn = Recurrent("lstm", I, H, dtype=DT, bidirectional=True)
    torch._dynamo.reset()
    compiled = torch.compile(rnn, fullgraph=True, backend="aot_eager")
    x = torch.randn(T, 3, I, dtype=DT)
    for lengths in (torch.tensor([5, 2, 0]), torch.tensor([1, 5, 3])):
        torch.testing.assert_close(compiled(x, lengths=lengths)[0], rnn(x, lengths=lengths)[0], **TOL)
        g1 = torch.autograd.grad(compiled(x, lengths=lengths)[0].sum(), list(rnn.parameters()))
        g2 = torch.autograd.grad(rnn(x, lengths=lengths)[0].sum(), list(rnn.parameters()))
        _assert_same(g1, g2, f"lengths {lengths.tolist()}")
    with torch.no_grad():                                   # the inference operator (no tape)
        torch.testing.assert_close(compiled(x)[1][0], rnn(x)[1][0], **TOL)
    with pytest.raises(ValueError, match="lengths must lie in"):   # checked by the operator
        compiled(x, lengths=torch.tensor([6, 1, 1]))


def test_export_with_lengths_and_backward_through_the_exported_program():
    torch.manual_seed(0)
    rnn = Recurrent("gru", I, H, dtype=DT, bidirectional=True)
    x, L = torch.randn(T, B, I, dtype=DT), torch.tensor([5, 3])
    Tdim, Bdim = torch.export.Dim("T", min=2, max=64), torch.export.Dim("B", min=2, max=64)
    ep = torch.export.export(rnn, (x, None, L), dynamic_shapes=({0: Tdim, 1: Bdim}, None, {0: Bdim}))
    x2, L2 = torch.randn(7, 3, I, dtype=DT), torch.tensor([2, 7, 0])
    run = ep.module()
    torch.testing.assert_close(run(x2, None, L2)[0], rnn(x2, lengths=L2)[0], **TOL)
    got = torch.autograd.grad(run(x2, None, L2)[0].square().sum(), list(run.parameters()))
    want = torch.autograd.grad(rnn(x2, lengths=L2)[0].square().sum(), list(rnn.parameters()))
    _assert_same(got, want, "gradients through the exported program")


# ----------------------------------------------------------------------------------- opcheck

SLSTM_HEADS = next(c for c in EXAMPLES if c.endswith("slstm_heads.cell"))
LAYERNORM = next(c for c in EXAMPLES if c.endswith("layernorm_lstm.cell"))   # a compact numba tape (step_only, row_values)
OPCHECK_CASES = [("lstm", None, False, False), ("lstm", [5, 3], True, True), ("mgu", [0, 4], False, False),
                 (SLSTM_HEADS, None, True, True), (TLSTM, [5, 3], True, True), (CONDITIONED, [2, 5], True, False),
                 (LAYERNORM, [5, 3], True, False)]


@pytest.mark.parametrize("cell,lengths,reverse,transposed", OPCHECK_CASES,
                         ids=[f"{_id(c)}-{L}-{'rev' if r else 'fwd'}{'-transposed' if tr else ''}"
                              for c, L, r, tr in OPCHECK_CASES])
def test_opcheck(cell, lengths, reverse, transposed):
    """schema, autograd registration, fake tensors (shapes and strides) and AOT dispatch with dynamic
    shapes, for all three operators; `transposed`: x (and the extra inputs) are [B, T, ...] tensors'
    transposes (batch_first)."""
    ops = cell_ops(cell)
    torch.manual_seed(0)
    sizes = SIZES.get(_id(cell))
    prog = lstmc.compile(cell, "reference")
    shapes = prog.param_shapes(I, H, sizes)
    x = (torch.randn(B, T, I, dtype=DT).transpose(0, 1) if transposed else torch.randn(T, B, I, dtype=DT))
    x.requires_grad_()
    states = [torch.randn(B, H, dtype=DT, requires_grad=True) for _ in ops.states]
    params = [(0.5 * torch.randn(shapes[p], dtype=DT)).requires_grad_() for p in ops.params]
    inputs = [(torch.rand((B, T) + s[2:], dtype=DT).transpose(0, 1) if transposed else torch.rand(s, dtype=DT))
              .requires_grad_() for s in prog.input_shapes(T, B, H, sizes).values()]
    L = None if lengths is None else torch.tensor(lengths)
    results = {"fwd": torch.library.opcheck(ops.fwd, (x, states, params, inputs, L, reverse))}
    plain = (x.detach(), [s.detach() for s in states], [p.detach() for p in params], [u.detach() for u in inputs])
    results["infer"] = torch.library.opcheck(ops.infer, (*plain, L, reverse))
    y, finals, tape = ops.fwd(*plain, L, reverse)
    results["bwd"] = torch.library.opcheck(ops.bwd, (plain[0], plain[2], plain[3], L, reverse, tape,
                                                     torch.randn_like(y), [torch.randn_like(f) for f in finals]))
    for name, r in results.items():
        assert set(r.values()) == {"SUCCESS"} and len(r) == 4, (name, r)


# ---------------------------------------------------------------------------------- torch.func

def _func_setup():
    torch.manual_seed(0)
    m = Recurrent("gru", I, H, dtype=DT, num_layers=2, bidirectional=True)
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(p, x):
        return functional_call(m, p, (x,))[0].square().sum()
    return m, params, loss


def test_func_grad_and_vmap():
    m, params, loss = _func_setup()
    x = torch.randn(T, B, I, dtype=DT)
    g = grad(loss)(params, x)
    m.zero_grad()
    loss(dict(m.named_parameters()), x).backward()
    _assert_same([g[k] for k, _ in m.named_parameters()], [p.grad for _, p in m.named_parameters()], "func.grad")
    xs = torch.randn(3, T, B, I, dtype=DT)                       # a batch of inputs
    ys = vmap(lambda x: functional_call(m, params, (x,))[0])(xs)
    _assert_same(list(ys), [m(xs[i])[0].detach() for i in range(3)], "vmap over inputs")
    ps = {k: torch.stack([v, 0.5 * v, -v]) for k, v in params.items()}   # a batch of models
    ys = vmap(lambda p: functional_call(m, p, (x,))[0])(ps)
    _assert_same(list(ys), [functional_call(m, {k: v[i] for k, v in ps.items()}, (x,))[0].detach()
                            for i in range(3)], "vmap over models")
    gs = vmap(grad(loss), in_dims=(None, 0))(params, xs)          # per-example gradients
    _assert_same([gs[k][2] for k in params], [grad(loss)(params, xs[2])[k] for k in params], "vmap(grad)")


@pytest.mark.parametrize("how", ["jvp", "jacfwd", "hessian", "grad-of-grad"])
def test_func_second_order_and_forward_mode_say_why(how):
    _, params, loss = _func_setup()
    x = torch.randn(T, B, I, dtype=DT)
    f = lambda x: loss(params, x)   # noqa: E731
    with pytest.raises(RuntimeError) as info:
        if how == "jvp":
            jvp(f, (x,), (torch.ones_like(x),))
        elif how == "jacfwd":
            jacfwd(f)(x)
        elif how == "hessian":
            torch.func.hessian(f)(x)
        else:
            grad(lambda x: grad(f)(x).sum())(x)
    assert (ONCE_DIFFERENTIABLE if how == "grad-of-grad" else NO_FORWARD_MODE) in str(info.value)


def test_forward_ad_says_why():
    import torch.autograd.forward_ad as fwAD

    rnn = Recurrent("lstm", I, H, dtype=DT)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="no forward-mode derivative"):
        rnn(fwAD.make_dual(torch.randn(T, B, I, dtype=DT), torch.ones(T, B, I, dtype=DT)))


def test_create_graph_on_a_compiled_model_is_refused():
    """torch.compile refuses a double backward itself (AOT autograd's donated buffers, or 'does not
    currently support double backward'), before the lstmc operator is reached; eager says
    ONCE_DIFFERENTIABLE (test_nn.py)."""
    rnn = Recurrent("lstm", I, H, dtype=DT)
    x = torch.randn(T, B, I, dtype=DT, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(rnn, fullgraph=True, backend="aot_eager")
    with pytest.raises(RuntimeError, match="create_graph=False|double backward|once-differentiable"):
        g, = torch.autograd.grad(compiled(x)[0].sum(), x, create_graph=True)
        g.sum().backward()


# ------------------------------------------------------------------------------ registration

def test_operator_names_are_stable_and_per_cell():
    a, b = cell_ops("lstm"), cell_ops(lstmc.load("lstm"))
    assert a is b and a.name.startswith("lstm_")
    assert cell_ops("gru").name != a.name
    assert str(a.fwd) == f"lstmc.{a.name}_fwd.default"
    rnn = pickle.loads(pickle.dumps(Recurrent("janet", I, H, dtype=DT)))     # registers again if needed
    assert rnn._op_name == cell_ops("janet").name


def test_operators_refuse_other_devices_in_a_sentence():
    with pytest.raises(RuntimeError, match=r"CPU \(numba\) and CUDA \(triton\).*backend='torch'"):
        cell_ops("lstm").compiled(torch.device("meta"), DT)


def test_wrong_list_lengths_are_named():
    ops = cell_ops("lstm")
    x = torch.randn(T, B, I, dtype=DT)
    with pytest.raises(ValueError, match=r"takes 2 states .*, 16 parameters .* and 0 extra inputs \(none\), got 1, 0 "
                                         r"and 0"):
        ops.infer(x, [torch.zeros(B, H, dtype=DT)], [], [], None, False)
    with pytest.raises(ValueError, match=r"takes 2 states \(h, c\), .* and 1 extra inputs \(dt\), got 2, 14 and 0"):
        cell_ops(TLSTM).infer(x, [torch.zeros(B, H, dtype=DT)] * 2, [torch.zeros(H, dtype=DT)] * 14, [], None, False)


@pytest.mark.parametrize("cell", ["lstm", "gru", SLSTM_HEADS], ids=_id)
def test_triton_operators_match_numba(cell, monkeypatch):
    """The operators' triton path (forward, the tape rebuilt in backward, backward, inference) under
    Triton's CPU interpreter, against the numba path: on CUDA it is this code with the GPU kernels."""
    pytest.importorskip("triton")
    from lstmc.backends.triton.environment import interpreting

    if torch.cuda.is_available() or not interpreting():
        pytest.skip("needs Triton's CPU interpreter (TRITON_INTERPRET=1 before triton is imported)")
    ops = cell_ops(cell)
    torch.manual_seed(0)
    shapes = lstmc.compile(cell, "reference").param_shapes(I, H)
    x = torch.randn(B, T, I, dtype=DT).transpose(0, 1)              # batch_first's layout
    st = [torch.randn(B, H, dtype=DT) for _ in ops.states]
    ps = [0.5 * torch.randn(shapes[p], dtype=DT) for p in ops.params]
    for lengths, reverse in ((None, False), (torch.tensor([5, 0]), True)):
        res = {}
        for backend in ("numba", "triton"):
            monkeypatch.setitem(lstmc.torch_ops.OP_BACKENDS, "cpu", backend)
            xx, ss, pp = x.clone().requires_grad_(), [s.clone().requires_grad_() for s in st], \
                [p.clone().requires_grad_() for p in ps]
            y, fin = ops(xx, ss, pp, lengths, reverse, True)
            (y.square().sum() + sum(f.square().sum() for f in fin)).backward()
            yi, fi = ops(xx.detach(), [s.detach() for s in ss], [p.detach() for p in pp], lengths, reverse, False)
            res[backend] = [y.detach(), *fin, yi, *fi, xx.grad, *[s.grad for s in ss], *[p.grad for p in pp]]
        assert type(ops._compiled[("triton", DT)]).__name__ == "TritonCell"
        _assert_same(res["triton"], res["numba"], f"triton vs numba, lengths {lengths}, reverse {reverse}")


@pytest.mark.parametrize("eager_backend", ["torch", "reference"])
def test_eager_only_backends_break_the_graph_or_say_why_under_fullgraph(eager_backend):
    """The torch and reference backends are not custom operators: torch.compile runs them eagerly
    around a graph break (same numbers as eager), and fullgraph=True fails naming the backends that
    compile (instead of a Dynamo error about a generated module or a builtin)."""
    torch.manual_seed(0)
    model = Model("lstm", backend=eager_backend)
    x = torch.randn(T, B, I, dtype=DT)
    want = _fwd_bwd(model, model, x)
    torch._dynamo.reset()
    _assert_same(_fwd_bwd(model, torch.compile(model, backend="aot_eager"), x), want,
                 f"torch.compile of the {eager_backend} backend")
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"run eagerly only.*backend='auto', 'numba' \(CPU\) or 'triton'"):
        torch.compile(model, fullgraph=True, backend="aot_eager")(x)


@pytest.mark.parametrize("cell", ["lstm", "lstmp", SLSTM_HEADS], ids=_id)
def test_triton_operators_under_compile_and_export(cell, monkeypatch):
    """What runs on CUDA, run on the CPU under Triton's interpreter: the module's layers as the
    triton operators, traced by torch.compile(fullgraph=True) (forward and backward) and by
    torch.export with dynamic T and B, against the numba operators run eagerly."""
    pytest.importorskip("triton")
    from lstmc.backends.triton.environment import interpreting

    if torch.cuda.is_available() or not interpreting():
        pytest.skip("needs Triton's CPU interpreter (TRITON_INTERPRET=1 before triton is imported)")
    torch.manual_seed(0)
    model = Model(cell)
    x, L = torch.randn(T, B, I, dtype=DT), torch.tensor([5, 3])
    want = _fwd_bwd(model, model, x)                                    # numba, eagerly
    with torch.no_grad():
        want_inf = model.rnn(x, lengths=L)[0]
    monkeypatch.setitem(lstmc.torch_ops.OP_BACKENDS, "cpu", "triton")   # the CUDA device's backend
    monkeypatch.setattr(lstmc.nn, "select_backend", lambda *a, **k: "triton")
    torch._dynamo.reset()
    _assert_same(_fwd_bwd(model, torch.compile(model, fullgraph=True, backend="aot_eager"), x), want,
                 f"torch.compile of the triton operators, {_id(cell)}")
    assert model.rnn.last_backend == "triton"
    ran = lstmc.torch_ops.registered_ops(model.rnn._op_name)._compiled
    assert type(ran.get(("triton", DT))).__name__ == "TritonCell"     # the operators ran the triton kernels
    Tdim, Bdim = torch.export.Dim("T", min=2, max=64), torch.export.Dim("B", min=2, max=64)
    with torch.no_grad():
        ep = torch.export.export(model.rnn, (x, None, L), dynamic_shapes=({0: Tdim, 1: Bdim}, None, {0: Bdim}))
        torch.testing.assert_close(ep.module()(x, None, L)[0], want_inf, **TOL)
        x2, L2 = torch.randn(7, 3, I, dtype=DT), torch.tensor([2, 7, 0])
        got = ep.module()(x2, None, L2)[0]
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(got, model.rnn(x2, lengths=L2)[0], **TOL)
