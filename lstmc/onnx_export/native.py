"""The built-in cells ONNX has an operator for, and how lstmc's parameters fill it.

A cell is exported as the native `LSTM`/`GRU` operator only when its lowered Program is the very
Program of one of these built-ins (a user cell that merely shares a name never is), because only
then do the semantics match exactly:

  lstm           LSTM                      B = [b_ii; b_io; b_if; b_ig] ++ [b_hi; b_ho; b_hf; b_hg]
  peephole_lstm  LSTM with P = [p_i; p_o; p_f]   (o looks at c', i and f at c: ONNX's definition)
  cifg_lstm      LSTM, input_forget=1      (f = 1 - i; W_f, U_f are zero and unread)
  gru            GRU, linear_before_reset=1  (torch's GRU: r scales U_n h + b_hn)
  gru_v1         GRU, linear_before_reset=0  (Cho et al.: U_n @ (r * h))

Gate orders are ONNX's (lstmc/interop.py ONNX_GATES: LSTM i, o, f, c; GRU z, r, h). The cells'
own header comments give the same mapping, and lstmc/oracles.py checks the reference against
these operators in onnx.reference and ONNX Runtime.
"""

from __future__ import annotations

import numpy as np

from ..build import load
from ..interop import ONNX_GATES
from ..lower import lower

# cell -> (ONNX operator, attributes)
NATIVE = {
    "lstm": ("LSTM", {}),
    "peephole_lstm": ("LSTM", {}),
    "cifg_lstm": ("LSTM", {"input_forget": 1}),
    "gru": ("GRU", {"linear_before_reset": 1}),
    "gru_v1": ("GRU", {"linear_before_reset": 0}),
}

_builtin_text: dict[str, str] = {}


def native_of(cell, program=None) -> str | None:
    """The built-in whose native ONNX operator computes exactly what `cell` computes, or None."""
    cell = load(cell)
    if cell.name not in NATIVE:
        return None
    if cell.name not in _builtin_text:
        _builtin_text[cell.name] = lower(load(cell.name)).text()
    text = (program if program is not None else lower(cell)).text()
    return cell.name if text == _builtin_text[cell.name] else None


def native_weights(name: str, p: dict[str, np.ndarray], H: int) -> dict[str, np.ndarray]:
    """The operator's W [1, G*H, I], R [1, G*H, H], B [1, 2*G*H] and, for peephole_lstm, P [1, 3*H]
    from one layer and direction's parameters `p` (biases dropped with bias=False are zeros in `p`)."""
    kind = "lstm" if NATIVE[name][0] == "LSTM" else "gru"
    gates = ONNX_GATES[kind]
    any_w, any_u = p[f"W_{gates[0]}"], p[f"U_{gates[0]}"]
    zero = np.zeros(H, dtype=any_w.dtype)
    W = np.concatenate([p.get(f"W_{g}", np.zeros_like(any_w)) for g in gates])   # cifg_lstm has no W_f
    R = np.concatenate([p.get(f"U_{g}", np.zeros_like(any_u)) for g in gates])
    if name in ("lstm", "gru"):          # two biases per gate, as torch has them
        B = np.concatenate([p[f"b_i{g}"] for g in gates] + [p[f"b_h{g}"] for g in gates])
    else:                                # one bias per gate: the input bias; the recurrent one is 0
        B = np.concatenate([p.get(f"b_{g}", zero) for g in gates] + [zero] * len(gates))
    out = {"W": W[None], "R": R[None], "B": B[None]}
    if name == "peephole_lstm":
        out["P"] = np.concatenate([p["p_i"], p["p_o"], p["p_f"]])[None]
    return out
