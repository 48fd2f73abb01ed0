"""A PackedSequence into lstmc.nn.Recurrent under torch.compile(fullgraph=True): forward and backward
equal eager in float64 (1e-10), for sequences packed with and without enforce_sorted, with and without
an initial state, batch first, several layers and both directions, a state of its own size (lstmp)
and a cell with an extra per-step input; the compiled graph is one graph at two shapes; plain
(non-fullgraph) torch.compile too.

Recurrent unpacks with index arithmetic on `batch_sizes` (lstmc/nn_packed.py: unpack, pack_like) instead of
pad_packed_sequence, which Dynamo does not trace, and hands the lengths to the cell's operator as a
tensor. The batch size is a shape, never a number read from the data: `sorted_indices`' length, the
initial state's batch dimension, or (enforce_sorted=True without a state) an unbacked size from the
lstmc::packed_lengths operator. The PackedSequence itself is made and read outside the compiled
function (pack_padded_sequence / pad_packed_sequence are not traced by Dynamo)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmc.nn import Recurrent

I, H, P = 3, 4, 3
DT = torch.float64
TOL = dict(rtol=0, atol=1e-10)
SHAPES = ((6, 3), (7, 4))           # (T, B): a second shape recompiles with dynamic T and B, no break


class Model(nn.Module):
    """Linear on the packed data -> Recurrent -> Linear on the packed output: the usual packed model,
    with pack_padded_sequence before it and pad_packed_sequence after it."""

    def __init__(self, cell="lstm", sizes=None, **kw):
        super().__init__()
        self.inp = nn.Linear(I, I, dtype=DT)
        self.rnn = Recurrent(cell, I, H, dtype=DT, sizes=sizes, **kw)
        self.out = nn.Linear(self.rnn.output_size * (2 if kw.get("bidirectional") else 1), 2, dtype=DT)

    def forward(self, packed, state=None, inputs=None):
        packed = PackedSequence(self.inp(packed.data), packed.batch_sizes, packed.sorted_indices,
                                packed.unsorted_indices)
        out, final = self.rnn(packed, state, inputs=inputs)
        final = final if isinstance(final, tuple) else (final,)
        return PackedSequence(self.out(out.data), out.batch_sizes, out.sorted_indices, out.unsorted_indices), final


def _case(T, B, sort, state, bf, model, extra=False):
    g = torch.Generator().manual_seed(T * 10 + B)
    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=DT, generator=g)
    L = torch.randint(1, T + 1, (B,), generator=g)
    L[B // 2] = T
    if sort:
        L = L.sort(descending=True).values
    rnn = model.rnn
    LD = rnn.num_layers * (2 if rnn.bidirectional else 1)
    s0 = (tuple(torch.randn(LD, B, rnn._state_size(s), dtype=DT, generator=g) for s in rnn.state_names)
          if state else None)
    ins = {"dt": torch.rand((B, T) if bf else (T, B), dtype=DT, generator=g) + 0.1} if extra else None
    return x, L, s0, ins


def _fwd_bwd(model, f, x, L, s0, ins, sort, bf):
    """f on the packed input: the padded output, the final states and the gradients of a loss of both
    for x, the initial state, the extra inputs and every parameter."""
    model.zero_grad()
    x = x.detach().requires_grad_()
    s0 = None if s0 is None else tuple(s.detach().requires_grad_() for s in s0)
    ins = None if ins is None else {u: v.detach().requires_grad_() for u, v in ins.items()}
    packed = pack_padded_sequence(x, L, batch_first=bf, enforce_sorted=sort)
    out, final = f(packed, s0 if s0 is None or len(s0) > 1 else s0[0], ins)
    y, lens = pad_packed_sequence(out, batch_first=bf)
    assert torch.equal(lens, L)
    (y.square().sum() + sum((k + 1.5) * f_.square().sum() for k, f_ in enumerate(final))).backward()
    return ([y.detach(), *(f_.detach() for f_ in final), x.grad] + ([s.grad for s in s0] if s0 else [])
            + ([v.grad for v in ins.values()] if ins else []) + [p.grad.clone() for p in model.parameters()])


def _assert_same(got, want, what):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None and w is not None, f"{what}: value {i} missing"
        torch.testing.assert_close(g, w, **TOL, msg=lambda m: f"{what}, value {i}: {m}")


CASES = [
    pytest.param(dict(sort=False, state=False, bf=False), dict(num_layers=2, bidirectional=True), id="unsorted-L2-bi"),
    pytest.param(dict(sort=True, state=False, bf=False), dict(num_layers=2, bidirectional=True),
                 id="enforce_sorted-L2-bi"),                          # B: an unbacked size
    pytest.param(dict(sort=False, state=True, bf=True), dict(bidirectional=True, batch_first=True),
                 id="unsorted-state-bf-bi"),                          # the state permuted into sorted order
    pytest.param(dict(sort=True, state=True, bf=False), dict(num_layers=2), id="enforce_sorted-state-L2"),
    pytest.param(dict(sort=False, state=True, bf=False, cell="gru"), dict(bidirectional=True), id="gru-state-bi"),
    pytest.param(dict(sort=False, state=True, bf=False, cell="lstmp", sizes={"P": P}),
                 dict(num_layers=2, bidirectional=True), id="lstmp-state-L2-bi"),   # h [.., P], output 2P
    pytest.param(dict(sort=False, state=False, bf=True, cell="examples/tlstm.cell", extra=True),
                 dict(bidirectional=True, batch_first=True), id="tlstm-inputs-bf-bi"),   # inputs={"dt": ...}
]


def _model(case, kw):
    torch.manual_seed(0)
    return Model(case.get("cell", "lstm"), sizes=case.get("sizes"), **kw)


def _check(case, kw, compile_kw):
    model = _model(case, kw)
    torch._dynamo.reset()
    graphs = []

    def count(gm, example_inputs):          # each graph Dynamo hands on: one per compile with fullgraph
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, backend=compile_kw.get("backend", count), fullgraph=compile_kw["fullgraph"])
    for T, B in SHAPES:
        x, L, s0, ins = _case(T, B, case["sort"], case["state"], case["bf"], model, case.get("extra", False))
        want = _fwd_bwd(model, model, x, L, s0, ins, case["sort"], case["bf"])
        got = _fwd_bwd(model, compiled, x, L, s0, ins, case["sort"], case["bf"])
        _assert_same(got, want, f"torch.compile({compile_kw}) at T={T}, B={B}")
    return graphs


@pytest.mark.parametrize("case, kw", CASES)
def test_packed_input_compiles_fullgraph_and_equals_eager(case, kw):
    graphs = _check(case, kw, dict(fullgraph=True))
    assert 1 <= len(graphs) <= 2            # the first shape, then at most one dynamic recompile
    ops = {str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"}
    assert not any("pad_packed" in o or "pack_padded" in o for o in ops)


def test_packed_input_under_plain_torch_compile():
    """torch.compile without fullgraph (aot_eager here; inductor below) gives eager's numbers with no
    graph break: torch._dynamo.explain counts none."""
    case, kw = dict(sort=False, state=True, bf=False), dict(num_layers=2, bidirectional=True)
    _check(case, kw, dict(fullgraph=False, backend="aot_eager"))
    model = _model(case, kw)
    x, L, s0, _ = _case(6, 3, False, True, False, model)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(pack_padded_sequence(x, L, enforce_sorted=False), s0)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.slow
def test_packed_input_with_inductor():
    """The default backend (inductor), once: its C++ compile takes about a minute on 2 cores."""
    _check(dict(sort=False, state=False, bf=False), dict(num_layers=2, bidirectional=True),
           dict(fullgraph=True, backend="inductor"))


def test_packed_lengths_operator():
    """lstmc::packed_lengths: the rows' lengths from batch_sizes, B checked against `rows`; its fake
    gives B as an unbacked size (torch.library.opcheck runs its real, fake and traced forms)."""
    from lstmc.torch_ops import packed_lengths

    bs = torch.tensor([3, 3, 2, 1])
    assert packed_lengths(bs).tolist() == packed_lengths(bs, 3).tolist() == [4, 3, 2]
    for args in ((bs,), (bs, 3)):
        torch.library.opcheck(packed_lengths, args)
    with pytest.raises(ValueError, match="initial state has 2 batch rows but the PackedSequence has 3"):
        packed_lengths(bs, 2)


def test_packed_state_batch_mismatch_is_an_error_under_compile():
    """With enforce_sorted=True the batch size is taken from the initial state and checked against the
    sequence's batch_sizes[0] when the graph runs: a mismatch is an error, not wrong numbers."""
    model = _model(dict(), dict())
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 3, I, dtype=DT)
    packed = pack_padded_sequence(x, torch.tensor([5, 4, 2]))
    bad = (torch.zeros(1, 2, H, dtype=DT), torch.zeros(1, 2, H, dtype=DT))
    with pytest.raises(Exception, match="initial state has 2 batch rows but the PackedSequence has 3"):
        compiled(packed, bad)
    with pytest.raises(RuntimeError, match=r"Expected state\[0\] \(h\) size \(1, 3, 4\), got \(1, 2, 4\)"):
        model(packed, bad)                   # eagerly: the module's own state check
