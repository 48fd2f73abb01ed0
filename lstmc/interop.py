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

# nn.LSTM(proj_size=P) (P > 0) computes the built-in `lstmp` (Sak et al. 2014): the same gates as
# `lstm` (weight_hh is then [4H, P]) and h' = weight_hr (o * tanh(c')), weight_hr [P, H] = W_hr.
# Not in TORCH_MODULES: that table's cells are what nn.LSTM/nn.GRU compute without extra arguments.
TORCH_PROJECTED = {"lstmp": "lstm"}            # cell -> the cell whose gates it shares
TORCH_PROJECTION = {"lstmp": "W_hr"}           # cell -> the parameter torch calls weight_hr
TORCH_GATES["lstmp"] = TORCH_GATES["lstm"]
TORCH_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def torch_param_names(cell: str, kind: str) -> list[str]:
    """The lstmc parameters stacked (in order, H rows each) in torch's `kind` tensor of `cell`'s
    module, e.g. ("lstm", "weight_ih") -> ["W_i", "W_f", "W_g", "W_o"]; ("lstmp", "weight_hr") ->
    ["W_hr"] (the whole [P, H] tensor)."""
    if kind == "weight_hr":
        return [TORCH_PROJECTION[cell]]
    return [TORCH_PARAM_PREFIX[kind] + g for g in TORCH_GATES[cell]]


def torch_builtin(module) -> tuple[str, dict] | None:
    """(built-in cell, its sizes) that an nn.LSTM / nn.GRU instance computes: ("lstm", {}),
    ("gru", {}), or ("lstmp", {"P": proj_size}) for nn.LSTM(proj_size=P); None for other modules.
    What Recurrent.from_torch needs to build the module it copies into."""
    cell = torch_cell_of(module)
    if cell is None:
        return None
    if cell == "lstm" and getattr(module, "proj_size", 0):
        return "lstmp", {"P": int(module.proj_size)}
    return cell, {}


def torch_layer_weights(module, cell: str, suffix: str = "0") -> dict:
    """{lstmc parameter: the slice of `module`'s tensor holding it} for one layer and direction
    (`suffix` "0", "1_reverse", ...: torch's names weight_ih_l{suffix}): each gate's H rows of the
    fused weight_ih/weight_hh/bias_ih/bias_hh (biases when the module has them), and for `lstmp`
    weight_hr whole. Views, not copies: `params[name].copy_(value)` for each item loads them."""
    H = module.hidden_size
    out = {}
    kinds = TORCH_KINDS if getattr(module, "bias", True) else TORCH_KINDS[:2]
    for kind in kinds + (("weight_hr",) if cell in TORCH_PROJECTION else ()):
        fused = getattr(module, f"{kind}_l{suffix}")
        names = torch_param_names(cell, kind)
        if kind == "weight_hr":
            out[names[0]] = fused
            continue
        for j, name in enumerate(names):
            out[name] = fused[j * H:(j + 1) * H]
    return out


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
