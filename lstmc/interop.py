"""The weight layouts of the frameworks lstmc interoperates with, written once (docs/design.md,
"Interoperability"): which built-in cell a torch module computes, each framework's gate order, and
how lstmc's per-gate parameters stack into a framework's fused matrices.

A torch `nn.LSTM`/`nn.GRU` layer stores `weight_ih` = [W_<gate>; ...] and `weight_hh` =
[U_<gate>; ...] stacked in the framework's gate order, and two biases `bias_ih` = [b_i<gate>; ...],
`bias_hh` = [b_h<gate>; ...]. ONNX stacks W, R and B = [Wb; Rb] in its own order.
"""

from __future__ import annotations

# built-in cell -> the torch.nn class computing exactly the same function, and its gate order
TORCH_MODULES = {"lstm": "LSTM", "gru": "GRU"}
TORCH_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
# ONNX LSTM (i, o, f, c) and GRU (z, r, h), in lstmc's gate names
ONNX_GATES = {"lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "n")}

# torch's fused tensor -> the lstmc parameter prefix of one gate
TORCH_PARAM_PREFIX = {"weight_ih": "W_", "weight_hh": "U_", "bias_ih": "b_i", "bias_hh": "b_h"}


def torch_param_names(cell: str, kind: str) -> list[str]:
    """The lstmc parameters stacked (in order, H rows each) in torch's `kind` tensor of `cell`'s
    module, e.g. ("lstm", "weight_ih") -> ["W_i", "W_f", "W_g", "W_o"]."""
    return [TORCH_PARAM_PREFIX[kind] + g for g in TORCH_GATES[cell]]


def torch_module_class(cell: str):
    """torch.nn.LSTM or torch.nn.GRU for the built-in `cell`."""
    import torch

    return getattr(torch.nn, TORCH_MODULES[cell])


def torch_cell_of(module) -> str | None:
    """The built-in cell an nn.LSTM / nn.GRU instance computes (None for other modules)."""
    import torch

    for cell, cls in TORCH_MODULES.items():
        if type(module) is getattr(torch.nn, cls):
            return cell
    return None


def torch_equivalent(cell) -> str | None:
    """The built-in with a torch.nn module whose lowered Program equals `cell`'s, or None."""
    from .build import load
    from .lower import lower

    text = lower(load(cell)).text()
    for name in TORCH_MODULES:
        if lower(load(name)).text() == text:
            return name
    return None
