"""ONNX export (lstmc/onnx_export, docs/onnx.md): every cell, built-in and example, exported in the
generic Scan form (and as the native ONNX LSTM/GRU where that applies), checked with
onnx.checker(full_check=True) and run in ONNX Runtime at two values of T and B, with lengths (0 and T
among them), the reverse direction and initial states, against lstmc's reference backend in float64:
max relative error (|a - b| / max(1, |b|)) at most 1e-5 for the float32 graph. Cells with extra
per-step inputs get them as graph inputs named after them; cells with states of their own sizes
(lstmp's `state h[P]`) get [L·D, B, P] state inputs and outputs. One table of cases drives one
checker; then the graph's interface, the errors, and `lstmc export` of trained models."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import lstmc  # noqa: E402
from lstmc.nn import Recurrent  # noqa: E402
from lstmc.ops import POINTWISE  # noqa: E402
from lstmc.onnx_export import ExportError, to_onnx  # noqa: E402
from lstmc.onnx_export.native import NATIVE, native_of  # noqa: E402
from lstmc.onnx_export.model import export_model  # noqa: E402
from lstmc.onnx_export.recurrent import check_supported  # noqa: E402
from lstmc.onnx_export.step import SPELL  # noqa: E402
from lstmc.results import max_rel  # noqa: E402

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent.parent / "examples").glob("*.cell"))
I, H = 3, 8
SIZES = ((5, 4), (9, 3))           # (T, B): two of each, through one session: T and B are dynamic
TOL = 1e-5
CELL_SIZES = {"conditioned_lstm": {"K": 2}, "lstmp": {"P": 5}}     # the values of the cells' `size` lines

# every primitive the language has beyond the examples' (log, softplus, sqrt, abs, min, the four
# comparisons, a float mask read by where, sum and mean), and a state computed from parameters only
ODDBALL = """cell oddball
state h, c, k
a  = W_a @ x + U_a @ h + b_a
s  = softplus(a) + sqrt(abs(c) + 1) - log(1 + abs(a))
m  = min(a, c)
q  = where(a < c, m, where(a > 0, s, where(a <= 0.5, tanh(a), sigmoid(a))))
p  = where(c >= 0, max(a, 0.2), relu(a))
c' = 0.5 * c + 0.1 * q + 0.1 * p + 0.01 * sum(h) - 0.01 * mean(c) + 0.1 * k
k' = sigmoid(b_k)
h' = tanh(c') * sigmoid(W_o @ x + b_o)
"""


def _id(cell) -> str:
    return cell if "\n" not in cell and "/" not in cell else (Path(cell).stem if "\n" not in cell else "oddball")


def _case(cell, form="generic", layers=1, bidirectional=True, lengths=True, initial_states=True,
          batch_first=False, bias=True, opset=None, dtype=torch.float32):
    return pytest.param(dict(cell=cell, form=form, layers=layers, bidirectional=bidirectional, lengths=lengths,
                             initial_states=initial_states, batch_first=batch_first, bias=bias, opset=opset,
                             dtype=dtype),
                        id=f"{_id(cell)}-{form}-L{layers}{'-bi' if bidirectional else ''}"
                           f"{'-lengths' if lengths else ''}{'-states' if initial_states else ''}"
                           f"{'-bf' if batch_first else ''}{'-nobias' if not bias else ''}"
                           f"{f'-opset{opset}' if opset else ''}{'-f64' if dtype == torch.float64 else ''}")


CELLS = lstmc.builtin_cells() + EXAMPLES + [ODDBALL]
CASES = (
    # every cell, generic: both directions (the reverse one within each row's length), lengths, states
    [_case(c) for c in CELLS]
    # the native operators where they apply, same checks
    + [_case(c, "native") for c in sorted(NATIVE)]
    # 2 layers, bidirectional, no lengths: the reverse direction is Scan's own; batch_first
    + [_case("lstm", "generic", layers=2, lengths=False, batch_first=True),
       # extra inputs: two layers read the same inputs; batch first; the reverse direction by Scan's own
       # direction (no lengths) and by ReverseSequence (lengths)
       _case(str(Path(EXAMPLES[0]).parent / "zoneout_lstm.cell"), layers=2, lengths=False, batch_first=True),
       _case(str(Path(EXAMPLES[0]).parent / "conditioned_lstm.cell"), layers=2, batch_first=True),
       _case(str(Path(EXAMPLES[0]).parent / "tlstm.cell"), dtype=torch.float64),
       _case("lstm", "native", layers=2, lengths=False, initial_states=False),
       _case(EXAMPLES[-1], "generic", layers=2),                                   # slstm_heads: heads 4
       _case("gru_v1", "native", layers=2, batch_first=True),
       # bias=False: the dropped biases are zeros in both forms
       _case("gru", "native", bias=False), _case("peephole_lstm", "generic", bias=False),
       # opset 18: ReduceMean takes its axes as an input
       _case(str(Path(EXAMPLES[0]).parent / "layernorm_lstm.cell"), opset=18),
       # float64 graphs (generic: ONNX Runtime's LSTM/GRU kernels are float32 only)
       _case("lstm", "generic", dtype=torch.float64), _case(ODDBALL, "generic", dtype=torch.float64),
       # states of their own sizes (h [.., P], c [.., H]): layer 1 reads 2P features; batch first
       # without lengths (the reverse direction by Scan's own direction); float64
       _case("lstmp", "generic", layers=2), _case("lstmp", "generic", layers=2, lengths=False, batch_first=True),
       _case("lstmp", "generic", dtype=torch.float64)]
)


def _modules(case):
    """The float64 reference module and the module exported (same weights, the case's dtype)."""
    torch.manual_seed(0)
    kw = dict(num_layers=case["layers"], bidirectional=case["bidirectional"], batch_first=case["batch_first"],
              bias=case["bias"])
    cell = lstmc.parse(case["cell"]) if "\n" in case["cell"] else case["cell"]
    kw["sizes"] = CELL_SIZES.get(_id(case["cell"]))
    ref = Recurrent(cell, I, H, backend="reference", dtype=torch.float64, **kw)
    exp = Recurrent(cell, I, H, backend="reference", dtype=case["dtype"], **kw)
    exp.load_state_dict({k: v.to(case["dtype"]) for k, v in ref.state_dict().items()})
    return ref, exp


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _ops(graph) -> list[str]:
    """Every node's op type in `graph` and its subgraphs."""
    out = []
    for n in graph.node:
        out.append(n.op_type)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _ops(a.g)
    return out


def _extra_dims(rnn) -> dict:
    """{extra input: its feature count or None} of the module's cell."""
    return {u: rnn.cell.input_size_of(u, H, rnn.sizes) for u in rnn.cell.inputs}


@pytest.mark.parametrize("case", CASES)
def test_export_matches_reference(case, tmp_path):
    ref, exp = _modules(case)
    extra = _extra_dims(ref)
    states = ref.state_names
    LD = case["layers"] * (2 if case["bidirectional"] else 1)
    D = 2 if case["bidirectional"] else 1
    native = case["form"] == "native"
    path = tmp_path / "m.onnx"
    example = torch.zeros((2, 3, I) if case["batch_first"] else (3, 2, I), dtype=case["dtype"])
    model = to_onnx(exp, path, example, lengths=case["lengths"], initial_states=case["initial_states"],
                    native=native, opset=case["opset"])
    assert path.stat().st_size > 0
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    # the interface as specified: names, symbolic T and B, [L*D, B, n] states (n: H, or P for
    # `state h[P]`), <state>_n outputs, an output of the output state's width
    g = model.graph
    seq = ["B", "T"] if case["batch_first"] else ["T", "B"]
    width = {s: ref._state_size(s) for s in states}
    want_in = ([("input", seq + [I])] + [(u, seq + ([] if n is None else [n])) for u, n in extra.items()]
               + ([("lengths", ["B"])] if case["lengths"] else [])
               + ([(s, [LD, "B", width[s]]) for s in states] if case["initial_states"] else []))
    assert [(v.name, _dims(v)) for v in g.input] == want_in
    assert [(v.name, _dims(v)) for v in g.output] == ([("output", seq + [D * ref.output_size])]
                                                      + [(f"{s}_n", [LD, "B", width[s]]) for s in states])
    ops = _ops(g)
    if native:
        assert ops.count(NATIVE[native_of(exp.cell)][0]) == LD and "Scan" not in ops
    else:
        assert ops.count("Scan") == LD and "LSTM" not in ops and "GRU" not in ops

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    np_dt = np.float32 if case["dtype"] == torch.float32 else np.float64
    for T, B in SIZES:
        x = rng.normal(size=(T, B, I))
        L = rng.integers(0, T + 1, size=B)
        L[0], L[1] = T, 0                   # a full row and an empty one
        s0 = [rng.uniform(0.1, 0.6, size=(LD, B, width[s])) for s in states]   # positive: sLSTM's normaliser n
        xin = x.transpose(1, 0, 2) if case["batch_first"] else x
        # the extra inputs: positive ([T, B] time gaps, [T, B, n] masks or a second stream), in the layout
        ins = {u: rng.uniform(0.1, 1.0, size=((B, T) if case["batch_first"] else (T, B)) + (() if n is None else (n,)))
               for u, n in extra.items()}
        feeds = {"input": xin.astype(np_dt), **{u: v.astype(np_dt) for u, v in ins.items()}}
        if case["lengths"]:
            feeds["lengths"] = L.astype(np.int64)
        if case["initial_states"]:
            feeds.update({s: v.astype(np_dt) for s, v in zip(states, s0)})
        got = sess.run(None, feeds)
        with torch.no_grad():
            st = tuple(torch.from_numpy(v) for v in s0) if case["initial_states"] else None
            y, fin = ref(torch.from_numpy(xin), st if st is None or len(st) > 1 else st[0],
                         lengths=torch.from_numpy(L) if case["lengths"] else None,
                         inputs={u: torch.from_numpy(v) for u, v in ins.items()})
        fin = fin if isinstance(fin, tuple) else (fin,)
        assert got[0].shape == tuple(y.shape)
        errs = {"output": max_rel(got[0], y.numpy())}
        errs.update({f"{s}_n": max_rel(a, b.numpy()) for s, a, b in zip(states, got[1:], fin)})
        assert max(errs.values()) <= TOL, (T, B, errs)
        if case["lengths"]:                 # past its length a row outputs 0 (the empty row everywhere)
            assert not np.any(got[0][1] if case["batch_first"] else got[0][:, 1])


def test_every_primitive_has_an_onnx_spelling():
    assert set(SPELL) == set(POINTWISE)


def test_native_only_for_identical_programs():
    assert {c for c in lstmc.builtin_cells() if native_of(c)} == set(NATIVE)
    for path in EXAMPLES:
        assert native_of(path) is None
    # same name, different math: not the built-in's operator
    fake = lstmc.parse("cell gru_v1\nstate h\nz = sigmoid(W_z @ x + U_z @ h + b_z)\nh' = z * h + (1 - z) * tanh(W_n @ x)\n")
    assert native_of(fake) is None


def test_node_names_follow_the_program(tmp_path):
    rnn = Recurrent("lstm", I, H, backend="reference", dtype=torch.float32)
    model = to_onnx(rnn, None, torch.zeros(3, 2, I), native=False)
    main = {n.name for n in model.graph.node}
    assert {"l0.xp", "l0.scan"} <= main
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    names = {n.name for n in body.node}
    values = {o for n in body.node for o in n.output}
    # the grouped recurrent GEMM of the four gates, its slots, the gates and the new states
    assert {"l0.rp0", "l0.split_rp0", "l0.i", "l0.f", "l0.g", "l0.o", "l0.c1", "l0.h1"} <= names
    assert {"l0.rp0.U_i", "l0.rp0.U_f", "l0.rp0.U_g", "l0.rp0.U_o", "l0.xp.W_i", "l0.c1", "l0.h1"} <= values
    assert sum(n.op_type == "MatMul" for n in body.node) == 1       # one recurrent product per step


def test_auto_picks_native_only_in_float32(tmp_path):
    for dtype, want in ((torch.float32, "LSTM"), (torch.float64, "Scan")):
        rnn = Recurrent("lstm", I, H, backend="reference", dtype=dtype)
        model = to_onnx(rnn, None, torch.zeros(3, 2, I, dtype=dtype))
        assert want in _ops(model.graph)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(native=True, cell="janet"), ExportError, "no native ONNX operator"),
    (dict(native="yes"), ValueError, "native must be"),
    (dict(opset=13), ValueError, "opset must be"),
    (dict(example=torch.zeros(3, I)), ValueError, "3-D"),
    (dict(example=torch.zeros(3, 2, I + 1)), ValueError, "input_size"),
    (dict(example=torch.zeros(3, 2, I, dtype=torch.float64)), ValueError, "dtype"),
])
def test_errors_name_the_problem(kwargs, exc, words):
    rnn = Recurrent(kwargs.pop("cell", "lstm"), I, H, backend="reference", dtype=torch.float32)
    example = kwargs.pop("example", torch.zeros(3, 2, I))
    with pytest.raises(exc, match=words):
        to_onnx(rnn, None, example, **kwargs)


def test_only_a_recurrent_is_exported():
    with pytest.raises(TypeError, match="Recurrent"):
        to_onnx(torch.nn.LSTM(I, H), None, torch.zeros(3, 2, I))


def test_an_input_named_like_a_graph_value_is_refused():
    """Extra inputs become graph inputs named after them: one called `lengths` (or `input`, `output`,
    `h_n`) would clash with the graph's own values, and the error says to rename it."""
    cell = lstmc.parse("cell timed\ninput lengths\nstate h\nh' = tanh(W @ x + U @ h + b) * lengths\n")
    with pytest.raises(ExportError, match="extra input named 'lengths'.*rename the input"):
        check_supported(cell)
    ok = lstmc.parse("cell timed\ninput dt\nstate h\nh' = tanh(W @ x + U @ h + b) * dt\n")
    check_supported(ok)


def test_extra_inputs_enter_the_hoisted_products(tmp_path):
    """conditioned_lstm's `V @ w` is one more MatMul beside x's, concatenated into l0.xp before the
    Scan; with lengths, w is reversed for the reverse direction once and shared by both layers."""
    rnn = Recurrent(str(Path(EXAMPLES[0]).parent / "conditioned_lstm.cell"), I, H, num_layers=2,
                    bidirectional=True, sizes={"K": 2}, backend="reference", dtype=torch.float32)
    model = to_onnx(rnn, None, torch.zeros(3, 2, I), lengths=True)
    nodes = {n.name: n.op_type for n in model.graph.node}
    assert nodes["l0.xp_x"] == nodes["l0.xp_w"] == nodes["l1_reverse.xp_w"] == "MatMul"
    assert nodes["l0.xp"] == "Concat"
    assert sum(op == "ReverseSequence" and name.startswith("w_") for name, op in nodes.items()) == 1


def test_sized_states_take_the_generic_form():
    """lstmp (`state h[P]`, h' = W_hr @ (o * tanh(c'))) has no native ONNX operator: ONNX's LSTM has no
    projection. "auto" gives the Scan form, native=True is refused with the reason; the Scan body
    carries h as [B, P] and c as [B, H], and the projection is a second recurrent product."""
    rnn = Recurrent("lstmp", I, H, sizes={"P": 5}, backend="reference", dtype=torch.float32)
    assert native_of("lstmp") is None
    model = to_onnx(rnn, None, torch.zeros(3, 2, I))
    ops = _ops(model.graph)
    assert "Scan" in ops and "LSTM" not in ops
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    assert [(v.name, _dims(v)) for v in body.input][:2] == [("l0.h", ["B", 5]), ("l0.c", ["B", H])]
    assert [_dims(v) for v in body.output] == [["B", 5], ["B", H], ["B", 5]]
    assert sum(n.op_type == "MatMul" for n in body.node) == 2       # U @ h, then W_hr @ (o * tanh(c'))
    with pytest.raises(ExportError, match="no native ONNX operator"):
        to_onnx(rnn, None, torch.zeros(3, 2, I), native=True)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_torch_lstm_with_proj_size_runs_in_onnx_runtime(tmp_path):
    """nn.LSTM(proj_size=P) -> Recurrent.from_torch (cell lstmp) -> to_onnx: ONNX Runtime gives
    torch's own output and final states ([L·D, B, P] and [L·D, B, H]) at two (T, B)."""
    torch.manual_seed(0)
    P = 4
    lstm = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, proj_size=P).eval()
    rnn = Recurrent.from_torch(lstm, backend="reference")
    assert rnn.cell.name == "lstmp"
    rnn.to_onnx(tmp_path / "m.onnx", torch.zeros(2, 3, I), initial_states=True)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for T, B in SIZES:
        x, h0, c0 = torch.randn(B, T, I), torch.randn(4, B, P), torch.randn(4, B, H)
        with torch.no_grad():
            y, (h, c) = lstm(x, (h0, c0))
        got = sess.run(None, {"input": x.numpy(), "h": h0.numpy(), "c": c0.numpy()})
        assert [a.shape for a in got] == [(B, T, 2 * P), (4, B, P), (4, B, H)]
        assert max(max_rel(a, b.numpy()) for a, b in zip(got, (y, h, c))) <= TOL


# ---------------------------------------------------------------------------- lstmc export MODEL.pt

def _export_cli(argv) -> int:
    from lstmc.onnx_export import add_parser

    p = argparse.ArgumentParser(prog="lstmc")
    add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.fn(args)


@pytest.mark.parametrize("task, extra, native_op", [
    ("adding", dict(length=10, layers=2, bidirectional=True), "LSTM"),   # floats in, the last step's value out
    ("copy", dict(length=4), "LSTM"),                                    # token ids in (embedding), every step out
    ("adding", dict(length=10, cell="gru", backend="native"), "GRU"),    # trained as torch.nn.GRU
    ("adding", dict(length=10, cell="lstmp", sizes={"P": 3}, layers=2, bidirectional=True), "Scan"),   # h[P]
])
def test_cli_exports_a_trained_model(task, extra, native_op, tmp_path, capsys):
    from lstmc.train import TrainConfig, train

    res = train(TrainConfig(task=task, steps=5, hidden=8, out=str(tmp_path / "run"), progress=False, **extra))
    model = res.model.eval()
    x = (torch.randn(3, 12, 2) if task == "adding" else torch.randint(0, model.embed.num_embeddings, (3, 12)))
    with torch.no_grad():
        want = model(x).numpy()
    for flags, op in (([], native_op), (["--generic"], "Scan")):
        out = tmp_path / f"model{len(flags)}.onnx"
        assert _export_cli(["export", str(tmp_path / "run" / "model.pt"), "--onnx", str(out)] + flags) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        m = onnx.load(str(out))
        onnx.checker.check_model(m, full_check=True)
        assert op in _ops(m.graph)
        assert [v.name for v in m.graph.input] == ["input"] and [v.name for v in m.graph.output] == ["output"]
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
        assert got.shape == want.shape
        assert max_rel(got, want) <= TOL


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("native_module", [False, True])
def test_export_model_with_sized_states(native_module, tmp_path):
    """A model.pt of an lstmp model (2 layers, bidirectional, target "last"), as lstmc.nn.Recurrent
    or as torch.nn.LSTM(proj_size=P) (backend "native"): the size P is read off the weights and the
    head reads the forward direction's last P features and the reverse direction's first P.
    (`lstmc train` cannot train lstmp yet, as no task gives P: the file is written as save_model does.)"""
    torch.manual_seed(0)
    P, n_in = 3, 2
    if native_module:
        lstm = torch.nn.LSTM(n_in, H, num_layers=2, bidirectional=True, batch_first=True, proj_size=P).eval()
        rnn_sd, cell = {f"rnn.rnn.{k}": v for k, v in lstm.state_dict().items()}, "lstm"
        run = lambda x: lstm(x)[0]  # noqa: E731
    else:
        rnn = Recurrent("lstmp", n_in, H, num_layers=2, bidirectional=True, batch_first=True, sizes={"P": P},
                        backend="reference", dtype=torch.float32).eval()
        rnn_sd, cell = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}, "lstmp"
        run = lambda x: rnn(x)[0]  # noqa: E731
    head = torch.nn.Linear(2 * P, 1)
    sd = {**rnn_sd, "head.weight": head.weight.detach(), "head.bias": head.bias.detach()}
    torch.save({"config": {"task": "adding", "cell": cell, "layers": 2, "bidirectional": True, "length": 10},
                "model": sd, "step": 0}, tmp_path / "model.pt")
    model = export_model(tmp_path / "model.pt", tmp_path / "m.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert "Scan" in _ops(model.graph) and "LSTM" not in _ops(model.graph)
    x = torch.randn(3, 12, n_in)
    with torch.no_grad():
        y = run(x)
        want = head(torch.cat([y[:, -1, :P], y[:, 0, P:]], dim=-1)).numpy()
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    assert got.shape == want.shape == (3, 1)
    assert max_rel(got, want) <= TOL


def test_cli_refuses_a_file_that_is_not_a_model(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    assert _export_cli(["export", str(bad), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not a model.pt written by `lstmc train`" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_recurrent_to_onnx_method_runs_in_onnx_runtime(tmp_path):
    """`Recurrent.to_onnx` is the documented route: the file it writes runs in ONNX Runtime and
    gives the module's output and final states (generic form, a non-built-in cell)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    rnn = Recurrent("mgu", 3, 5, num_layers=2, bidirectional=True, backend="numba").eval()
    x = torch.randn(7, 2, 3)
    rnn.to_onnx(tmp_path / "m.onnx", x, lengths=True)
    L = torch.tensor([7, 4])
    with torch.no_grad():
        y, state = rnn(x, lengths=L)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    out, h_n = sess.run(["output", "h_n"], {"input": x.numpy(), "lengths": L.numpy()})
    assert np.abs(out - y.numpy()).max() < 1e-5
    assert np.abs(h_n - state.numpy()).max() < 1e-5        # mgu has one state: a tensor
