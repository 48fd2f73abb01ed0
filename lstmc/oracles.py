"""Independent implementations the built-in cells are checked against (docs/design.md, "Validation" and "Interoperability").

  lstm           torch.nn.LSTM (forward + autograd), ONNX LSTM via onnx.reference
  gru            torch.nn.GRU (forward + autograd)
  lstmp          torch.nn.LSTM(proj_size=P) (forward + autograd; Sak et al. 2014)
  peephole_lstm  ONNX LSTM with peepholes via onnx.reference
  gru_v1         ONNX GRU, linear_before_reset=0, via onnx.reference
  cifg_lstm      ONNX Runtime LSTM with input_forget=1 (onnx.reference ignores input_forget)

An oracle applies only when the cell's lowered Program is identical to the built-in's, so a user
cell that merely shares a name is never compared against the wrong model. onnx and onnxruntime are
optional (test extras): without them those comparisons are reported as skipped.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .results import Result, max_rel, problem
from .build import compile as compile_cell
from .build import load
from .lower import lower

from .interop import (ONNX_GATES, TORCH_GATES, TORCH_KINDS, TORCH_PROJECTED, TORCH_PROJECTION, torch_layer_weights,
                      torch_module_class, torch_param_names)

LSTM_TORCH, GRU_TORCH = TORCH_GATES["lstm"], TORCH_GATES["gru"]
LSTM_ONNX, GRU_ONNX = ONNX_GATES["lstm"], ONNX_GATES["gru"]


def _cat(params, names):
    return np.concatenate([params[n] for n in names], axis=0)


# ------------------------------------------------------------------------------------------- torch

@contextlib.contextmanager
def torch_fp32_precision(tf32: bool = False):
    """Make cuDNN RNNs and cuBLAS matmuls do float32 products as `tf32` says, and restore on exit.

    Since PyTorch 2.9 the per-backend `fp32_precision` settings govern, and cudnn.rnn's default is
    "tf32": `torch.backends.cudnn.allow_tf32 = False` alone leaves nn.LSTM on TF32 tensor cores (seen
    on an H100 with torch 2.11: a 2e-4 relative gradient difference against IEEE float32). Comparing
    against cuDNN or timing it fairly needs both APIs set; older PyTorch has only the legacy flags.
    """
    import torch

    b = torch.backends
    mode = "tf32" if tf32 else "ieee"
    new = [(b, "fp32_precision"), (b.cuda.matmul, "fp32_precision"), (b.cudnn, "fp32_precision"),
           (b.cudnn.conv, "fp32_precision"), (b.cudnn.rnn, "fp32_precision")] \
        if hasattr(b, "fp32_precision") else []
    legacy = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
    saved = [(o, a, getattr(o, a)) for o, a in (new or legacy)]
    try:
        for o, a in (new or legacy):
            setattr(o, a, mode if new else tf32)
        yield
    finally:
        for o, a, v in reversed(saved):
            setattr(o, a, v)


def torch_module(cell_name: str, params: dict, I: int, H: int):
    """torch.nn.LSTM/GRU (float64) holding lstmc `params` of the built-in `lstm`/`gru` cell, or
    nn.LSTM(proj_size=P) for `lstmp` (P from W_hr's shape)."""
    import torch

    if cell_name in TORCH_PROJECTED:
        P = params[TORCH_PROJECTION[cell_name]].shape[0]
        m = torch_module_class(TORCH_PROJECTED[cell_name])(I, H, proj_size=P).double()
    else:
        m = torch_module_class(cell_name)(I, H).double()
    with torch.no_grad():
        for name, t in torch_layer_weights(m, cell_name).items():
            t.copy_(torch.from_numpy(params[name]))
    return m


def check_torch(cell_name: str) -> list[Result]:
    import torch

    ref = compile_cell(cell_name, "reference", "float64")
    T, B, I, H = 5, 3, 4, 7
    x, params, st, _, dy, ds = problem(cell_name, T=T, B=B, I=I, H=H, lengths=False)
    y, fin, tape = ref.forward(x, params, state=st)
    dx, dst, dp = ref.backward(tape, dy, ds)
    m = torch_module(cell_name, params, I, H)
    xt = torch.tensor(x, requires_grad=True)
    states = list(ref.cell.states)
    s0 = [torch.tensor(st[s][None], requires_grad=True) for s in states]
    yt, fin_t = m(xt, tuple(s0) if len(s0) > 1 else s0[0])
    fin_t = list(fin_t) if isinstance(fin_t, tuple) else [fin_t]
    fwd = max([max_rel(yt.detach().numpy(), y)] + [max_rel(f.detach().numpy()[0], fin[s])
                                                    for f, s in zip(fin_t, states)])
    grads = torch.autograd.grad([yt] + fin_t, [xt] + s0 + list(m.parameters()),
                                [torch.tensor(dy)] + [torch.tensor(ds[s][None]) for s in states])
    kinds = TORCH_KINDS + (("weight_hr",) if cell_name in TORCH_PROJECTION else ())
    ours = [dx] + [dst[s] for s in states] + [_cat(dp, torch_param_names(cell_name, kind)) for kind in kinds]
    bwd = max(max_rel(g.numpy()[0] if g.dim() == 3 and g.shape[0] == 1 and o.ndim == 2 else g.numpy(), o)
              for g, o in zip(grads, ours))
    kind = "GRU" if cell_name == "gru" else "LSTM" if cell_name == "lstm" else "LSTM(proj_size)"
    return [Result(f"torch.nn.{kind} forward", fwd, 1e-10), Result(f"torch.nn.{kind} backward", bwd, 1e-9)]


# -------------------------------------------------------------------------------------------- ONNX

def onnx_model(op: str, T, B, I, H, attrs: dict, dtype=np.float64, with_c=False, seq_lens=False):
    """A one-node ONNX model for LSTM/GRU with inputs X, W, R, B, [sequence_lens], initial_h, [initial_c, P]."""
    from onnx import TensorProto, helper

    et = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    G = 4 if op == "LSTM" else 3
    inputs = [helper.make_tensor_value_info("X", et, [T, B, I]), helper.make_tensor_value_info("W", et, [1, G * H, I]),
              helper.make_tensor_value_info("R", et, [1, G * H, H]),
              helper.make_tensor_value_info("B", et, [1, 2 * G * H]),
              helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
              helper.make_tensor_value_info("initial_h", et, [1, B, H])]
    names = ["X", "W", "R", "B", "sequence_lens" if seq_lens else "", "initial_h"]
    if with_c:
        inputs += [helper.make_tensor_value_info("initial_c", et, [1, B, H]),
                   helper.make_tensor_value_info("P", et, [1, 3 * H])]
        names += ["initial_c", "P"]
    if not seq_lens:
        inputs = [i for i in inputs if i.name != "sequence_lens"]
    outs = ["Y", "Y_h"] + (["Y_c"] if with_c else [])
    node = helper.make_node(op, names, outs, hidden_size=H, **attrs)
    outputs = [helper.make_tensor_value_info(o, et, None) for o in outs]
    graph = helper.make_graph([node], "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def onnx_feeds(cell_name: str, params, x, st, H, lengths=None):
    z = np.zeros(H)
    if cell_name in ("lstm", "peephole_lstm", "cifg_lstm"):
        order = LSTM_ONNX
        zW, zU = np.zeros_like(params["W_i"]), np.zeros_like(params["U_i"])   # cifg has no forget weights
        W = np.concatenate([params.get(f"W_{g}", zW) for g in order])[None]
        R = np.concatenate([params.get(f"U_{g}", zU) for g in order])[None]
        if cell_name == "lstm":
            Bv = np.concatenate([params[f"b_i{g}"] for g in order] + [params[f"b_h{g}"] for g in order])
        else:
            Bv = np.concatenate([params.get(f"b_{g}", z) for g in order] + [z] * 4)
        P = (np.concatenate([params["p_i"], params["p_o"], params["p_f"]]) if cell_name == "peephole_lstm"
             else np.zeros(3 * H))
        feeds = {"X": x, "W": W, "R": R, "B": Bv[None], "initial_h": st["h"][None], "initial_c": st["c"][None],
                 "P": P[None]}
    else:
        order = GRU_ONNX
        W = np.concatenate([params[f"W_{g}"] for g in order])[None]
        R = np.concatenate([params[f"U_{g}"] for g in order])[None]
        Bv = np.concatenate([params[f"b_{g}"] for g in order] + [z] * 3)
        feeds = {"X": x, "W": W, "R": R, "B": Bv[None], "initial_h": st["h"][None]}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    return feeds


def check_onnx(cell_name: str) -> list[Result]:
    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:
        return [Result("onnx.reference", 0.0, 0.0, note="skipped: onnx is not installed")]
    ref = compile_cell(cell_name, "reference", "float64")
    T, B, I, H = 5, 3, 4, 7
    x, params, st, _, _, _ = problem(cell_name, T=T, B=B, I=I, H=H, lengths=False)
    out = []
    for direction in ("forward", "reverse"):
        op = "GRU" if cell_name == "gru_v1" else "LSTM"
        attrs = {"direction": direction}
        if op == "GRU":
            attrs["linear_before_reset"] = 0
        model = onnx_model(op, T, B, I, H, attrs, with_c=op == "LSTM")
        feeds = onnx_feeds(cell_name, params, x, st, H)
        res = ReferenceEvaluator(model).run(None, feeds)
        y, fin, _ = ref.forward(x, params, state=st, reverse=direction == "reverse", need_tape=False)
        err = max([max_rel(res[0][:, 0], y), max_rel(res[1][0], fin["h"])]
                  + ([max_rel(res[2][0], fin["c"])] if op == "LSTM" else []))
        out.append(Result(f"onnx.reference {op} {direction}", err, 1e-10))
    return out


def check_ort(cell_name: str) -> list[Result]:
    """ONNX Runtime: input_forget (cifg_lstm) and sequence_lens with both directions."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [Result("onnxruntime", 0.0, 0.0, note="skipped: onnxruntime is not installed")]
    ref = compile_cell(cell_name, "reference", "float64")
    T, B, I, H = 5, 4, 4, 7
    x, params, st, _, _, _ = problem(cell_name, T=T, B=B, I=I, H=H, lengths=False)
    lengths = np.array([T, 2, 1, 3])  # ONNX Runtime requires lengths >= 1
    out = []
    # ORT's LSTM/GRU kernels are float32-only, so the comparison runs in float32: tolerance 1e-5
    f32 = lambda d: {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in d.items()}  # noqa: E731
    for direction in ("forward", "reverse"):
        op = "GRU" if cell_name == "gru_v1" else "LSTM"
        attrs = {"direction": direction}
        if cell_name == "cifg_lstm":
            attrs["input_forget"] = 1
        if op == "GRU":
            attrs["linear_before_reset"] = 0
        model = onnx_model(op, T, B, I, H, attrs, dtype=np.float32, with_c=op == "LSTM", seq_lens=True)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = f32(onnx_feeds(cell_name, params, x, st, H, lengths=lengths))
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
        res = sess.run(None, feeds)
        y, fin, _ = ref.forward(x, params, state=st, lengths=lengths, reverse=direction == "reverse",
                                need_tape=False)
        err = max([max_rel(res[0][:, 0], y), max_rel(res[1][0], fin["h"])]
                  + ([max_rel(res[2][0], fin["c"])] if op == "LSTM" else []))
        out.append(Result(f"onnxruntime {op} {direction} lengths"
                          + (" input_forget" if cell_name == "cifg_lstm" else ""), err, 1e-5))
    return out


ORACLES = {
    "lstm": (check_torch, check_onnx, check_ort),
    "gru": (check_torch,),
    "lstmp": (check_torch,),
    "peephole_lstm": (check_onnx,),
    "gru_v1": (check_onnx, check_ort),
    "cifg_lstm": (check_ort,),
}


def run(cell) -> list[Result]:
    """Every oracle that applies to `cell` (a built-in, unchanged)."""
    cell = load(cell)
    checks = ORACLES.get(cell.name)
    if not checks:
        return []
    if lower(load(cell.name)).text() != lower(cell).text():
        return []
    out = []
    for fn in checks:
        out += fn(cell.name)
    return out
