"""`lstmc export MODEL.pt --onnx out.onnx`: a model saved by `lstmc train` as one ONNX graph.

The whole trained model is exported, as lstmc.train.models.SeqModel computes it in eval mode:

  input  [B, T, I] float32 (a float task) or [B, T] int64 token ids (a token task; `Gather` from
         the embedding table), batch first as in training; B and T symbolic
  the Recurrent (lstmc/onnx_export/recurrent.py: generic Scan, or native LSTM/GRU where it applies)
  the head: MatMul + Add on the last step (target "last": for a bidirectional model, the forward
         direction's last step and the reverse direction's first, as SeqModel reads them) or on
         every step (target "all")
  output [B, n_out] or [B, T, n_out]: what SeqModel returns (regression values or class logits)

For a data-file model, the input is the model's input after the normalisation `model.pt` records
under `data` (mean, std); the output is normalised too (target_mean, target_std undo it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from .graph import Graph
from .native import NATIVE
from .recurrent import Net, check_opset, choose_native, emit_recurrent, make_model
from .step import ExportError


def _load(path: Path) -> dict:
    """model.pt as written by lstmc.train.checkpoint.save_model: {"config", "model", "step"[, "data"]}."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one line, what to do
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path} is not a readable model.pt ({msg}); export a model.pt written by `lstmc train`") \
            from None
    if not isinstance(ck, dict) or not {"config", "model"} <= set(ck):
        raise ExportError(f"{path} is a PyTorch file but not a model.pt written by `lstmc train` (it lacks "
                          f"'config' and 'model')")
    return ck


def _target(ck: dict) -> str:
    """'last' or 'all': where the head reads the Recurrent's output (the task's target)."""
    if ck.get("data") is not None:          # a data-file task: forecasting and classification read the last step
        return "last"
    from ..tasks import get_task

    cfg = ck["config"]
    return get_task(cfg["task"], length=cfg.get("length")).target


def _recurrent(cfg: dict, sd: dict):
    """The trained Recurrent, rebuilt from the config and state dict (a backend="native" model's
    torch.nn.LSTM/GRU through Recurrent.from_torch: the same numbers)."""
    import torch

    from ..build import load
    from ..interop import torch_module_class
    from ..nn import Recurrent, bias_params

    rnn_sd = {k[4:]: v for k, v in sd.items() if k.startswith("rnn.")}
    layers, bidir = int(cfg.get("layers", 1)), bool(cfg.get("bidirectional", False))
    if any(k.startswith("rnn.") for k in rnn_sd):                       # NativeRecurrent: rnn.rnn.weight_ih_l0
        tsd = {k[4:]: v.float() for k, v in rnn_sd.items()}
        w = tsd["weight_ih_l0"]
        name = cfg["cell"]
        proj = {"proj_size": int(tsd["weight_hr_l0"].shape[0])} if "weight_hr_l0" in tsd else {}  # nn.LSTM(proj_size=)
        H = int(tsd["weight_hr_l0"].shape[1]) if proj else int(tsd["weight_hh_l0"].shape[1])
        m = torch_module_class(name)(int(w.shape[1]), H, num_layers=layers, bias="bias_ih_l0" in tsd,
                                     batch_first=True, bidirectional=bidir, **proj)
        m.load_state_dict(tsd)
        return Recurrent.from_torch(m.eval(), backend="reference")
    cell_name = cfg["cell"]
    if " (source sha256 " in str(cell_name):
        raise ExportError(f"the model was trained with a cell given as a lstmc.Cell ({cell_name}); model.pt does not "
                          f"hold its text: rebuild the module in Python and use lstmc.onnx_export.to_onnx")
    cell = load(cell_name)
    W = next((p for p, k in cell.params.items() if k == "W" and f"l0.{p}" in rnn_sd), None)
    if W is None:
        raise ExportError(f"model.pt's weights do not match cell '{cell.name}' (no l0 input matrix)")
    I, H = int(rnn_sd[f"l0.{W}"].shape[1]), int(rnn_sd[f"l0.{W}"].shape[0])
    bias = all(f"l0.{b}" in rnn_sd for b in bias_params(cell))       # bias=False drops them from the state
    rnn = Recurrent(cell, I, H, num_layers=layers, bias=bias, batch_first=True, bidirectional=bidir,
                    backend="reference", dtype=torch.float32, sizes=_sizes(cell, cfg, rnn_sd) or None)
    rnn.load_state_dict({k: v.float() for k, v in rnn_sd.items()})
    return rnn.eval()


def _sizes(cell, cfg: dict, rnn_sd: dict) -> dict:
    """The values of the cell's `size` lines: the config's `sizes` when it records them, else read off
    the first layer's weights (`state h[P]`: W_hr is [P, H]; `input u[K]`: V is [H, K])."""
    given = dict(cfg.get("sizes") or {})
    out = {}
    for k in cell.sizes:
        if k in given:
            out[k] = int(given[k])
            continue
        for p, dims in cell.param_sizes.items():
            t = rnn_sd.get(f"l0.{p}")
            if t is not None and k in dims and len(dims) == t.dim():
                out[k] = int(t.shape[list(dims).index(k)])
                break
        else:
            raise ExportError(f"model.pt does not say the value of cell '{cell.name}''s size {k}, and no weight "
                              f"of its first layer has it")
    return out


def export_model(model_path, out, *, native="auto", opset: int | None = None) -> onnx.ModelProto:
    """Export the SeqModel in `model_path` (a model.pt from `lstmc train`) to `out` (unless None); returns
    the model. native: as in to_onnx ("auto", True, False: the generic Scan form)."""
    ck = _load(Path(model_path))
    cfg, sd = ck["config"], ck["model"]
    rnn = _recurrent(cfg, sd)
    net = Net.from_recurrent(rnn)
    target = _target(ck)
    g = Graph(np.float32, opset=check_opset(opset))
    kind = choose_native(net, native)
    H, D = net.out_width, net.dirs          # the output's width per direction (P for `state h[P]`)
    x = g.names.claim("input")
    if "embed.weight" in sd:
        table = g.initializer("embed.weight", sd["embed.weight"].float().numpy())
        inputs = [g.value_info(x, ["B", "T"], TensorProto.INT64)]
        feats = g.op("Gather", [table, x], name="embed", axis=0)                  # [B, T, E]
    else:
        inputs = [g.value_info(x, ["B", "T", net.input_size])]
        feats = x
    xt = g.op("Transpose", [feats], name="input_time_major", perm=[1, 0, 2])
    y, _ = emit_recurrent(g, net, xt, None, None, kind)                        # [T, B, D*H]
    if target == "last":
        last = g.op("Gather", [y, g.const(-1, np.int64)], name="last_step", axis=0)          # [B, D*H]
        if D == 2:   # the forward direction's last step, the reverse direction's first (SeqModel's reading)
            first = g.op("Gather", [y, g.const(0, np.int64)], name="first_step", axis=0)
            fwd = g.op("Slice", [last, g.ints([0], "zero_1"), g.ints([H], "H_1"), g.ints([1], "axes_1")],
                       name="forward_last")
            rev = g.op("Slice", [first, g.ints([H], "H_1"), g.ints([2 * H], "2H_1"), g.ints([1], "axes_1")],
                       name="reverse_first")
            last = g.op("Concat", [fwd, rev], name="features", axis=1)
        feats_out, shape = last, ["B"]
    else:
        feats_out, shape = g.op("Transpose", [y], name="batch_major", perm=[1, 0, 2]), ["B", "T"]
    w = sd["head.weight"].float().numpy()
    head_w = g.initializer("head.weight_T", np.ascontiguousarray(w.T))
    head_b = g.initializer("head.bias", sd["head.bias"].float().numpy())
    out_v = g.op("Add", [g.op("MatMul", [feats_out, head_w], name="head"), head_b], name="output", exact=True)
    outputs = [g.value_info(out_v, shape + [int(w.shape[0])])]
    form = f"native {NATIVE[kind][0]}" if kind else "generic Scan"
    model = make_model(g, inputs, outputs, f"SeqModel {net.cell.name} ({form}, target {target})")
    if out is not None:
        onnx.save(model, str(out))
    return model
