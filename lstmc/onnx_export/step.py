"""One step of a lowered Program as the body of an ONNX `Scan` (the generic form of the export).

The body renders the Program's forward stages, as every backend does (docs/design.md, "Lowering"):
each `Block` let becomes the ONNX nodes of its expression, spelled by the table `SPELL` (one row per
primitive of lstmc/ops.py); each recurrent `Gemm` is one `MatMul` with the group's matrices stacked,
split back into its slots; a reduction stage (`mean`, `sum`) is a `ReduceMean`/`ReduceSum` over the
hidden axis, broadcast back to [B, H]. The input products are not here: they are one `MatMul` over
all T·B rows before the Scan (lstmc/onnx_export/recurrent.py), and the body reads their slice.

A row past its length follows the Program's `past_length` table (the state kept, the output 0),
selected with `Where` from the mask the Scan reads beside the input products.

Sizes (`state h[P]`, `size P`): every value has the width its size name says, looked up in `ext`
({"H": 8, "P": 5}, the Program's `extents`): a state's `program.state_size(s)`, a recurrent group's
products `Group.rows`, a block's values `Block.size`; the input products' slots are always H wide.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..ir import Node, state, var, walk
from ..ops import POINTWISE, REDUCTIONS
from ..program import Block, Gemm, Program
from .graph import Graph

COMPARE = {"gt": "Greater", "ge": "GreaterOrEqual", "lt": "Less", "le": "LessOrEqual"}


def _softplus(g: Graph, name: str, a: str) -> str:
    """max(a, 0) + log(1 + exp(-|a|)): the reference's stable form (ops.py), never exp of a large number.
    Spelled out rather than ONNX's Softplus: ONNX Runtime has no double Softplus kernel."""
    e = g.op("Exp", [g.op("Neg", [g.op("Abs", [a], name=f"{name}/abs")], name=f"{name}/neg_abs")], name=f"{name}/exp")
    tail = g.op("Log", [g.op("Add", [g.const(1.0), e], name=f"{name}/1p")], name=f"{name}/log1p")
    return g.op("Add", [g.op("Relu", [a], name=f"{name}/relu"), tail], name=name)


def _logsigmoid(g: Graph, name: str, a: str) -> str:
    # log(sigmoid(a)) = -softplus(-a), as the reference computes it
    return g.op("Neg", [_softplus(g, f"{name}/softplus", g.op("Neg", [a], name=f"{name}/neg"))], name=name)


def _step(g: Graph, name: str, a: str) -> str:
    return g.op("Cast", [g.op("Greater", [a, g.const(0.0)], name=f"{name}/gt")], name=name, to=g.elem)


def _select(cmp: str):
    """max/min as the reference computes them: the first argument where a >= b (a <= b), ties included."""
    def spell(g: Graph, name: str, a: str, b: str) -> str:
        return g.op("Where", [g.op(cmp, [a, b], name=f"{name}/cmp"), a, b], name=name)
    return spell


# primitive -> an ONNX operator of the same arity, or a function (graph, name, *args) -> output name.
# Comparisons give booleans; `_render_expr` casts them where arithmetic reads them (where() reads them as they are).
SPELL = {
    "neg": "Neg", "exp": "Exp", "log": "Log", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
    "softplus": _softplus, "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign",
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div",
    "step": _step,
    "logsigmoid": _logsigmoid,
    "max": _select("GreaterOrEqual"),
    "min": _select("LessOrEqual"),
    **COMPARE,
    "where": "Where",
}
_missing = sorted(set(POINTWISE) - set(SPELL))
if _missing:  # pragma: no cover - guarded by tests/test_onnx_export.py
    raise RuntimeError(f"the ONNX renderer has no spelling for {_missing}")


class ExportError(ValueError):
    """A model or construct the ONNX export cannot express; the message names it."""


def value_label(key: tuple) -> str:
    """A readable name for a Program value: xp.W_i, rp0.U_f, c' (c1 in ONNX), i, ..."""
    kind, *rest = key
    if kind == "s1":
        return f"{rest[0]}'"
    if kind == "xp":
        return f"xp.{rest[0]}"
    if kind == "rp":
        return f"rp{rest[0]}.{rest[1]}"
    return "_".join(str(r) for r in rest) if kind in ("t", "sv") else "_".join(map(str, key))


class StepWeights:
    """What the body reads from the main graph: vector parameters by name and, per weight group,
    the group's matrices stacked and transposed ([H, k*H]), as initializer names."""

    def __init__(self, vecs: dict[str, str], groups: dict[int, str]):
        self.vecs = vecs
        self.groups = groups


def _render_expr(g: Graph, expr: Node, vals: dict, name: str) -> str:
    """Emit the nodes of `expr` (leaves already in `vals`: Node -> (value name, is_bool)); the root is
    named `name`, the nodes inside it name/op."""
    for n in walk([expr]):
        if n in vals:
            continue
        if n.op == "const":
            vals[n] = (g.const(n.attr), False)
            continue
        if n.is_leaf:
            raise ExportError(f"the ONNX export cannot read {n.op} {n.attr!r} here (a value of the step that "
                              f"is defined nowhere before it)")
        if n.op not in SPELL:
            raise ExportError(f"the ONNX export has no spelling for the primitive {n.op!r}")
        args = []
        for i, a in enumerate(n.args):
            v, is_bool = vals[a]
            if n.op == "where" and i == 0:
                if not is_bool:           # a float mask: where(c, p, q) takes p where c != 0
                    v = g.op("Not", [g.op("Equal", [v, g.const(0.0)], name=f"{name}/eq0")], name=f"{name}/cond")
            elif is_bool:
                v = g.op("Cast", [v], name=f"{name}/mask", to=g.elem)
            args.append(v)
        out = name if n is expr else f"{name}/{n.op}"
        spell = SPELL[n.op]
        v = g.op(spell, args, name=out) if isinstance(spell, str) else spell(g, out, *args)
        vals[n] = (v, n.op in COMPARE)
    return vals[expr][0]


def render_forward(g: Graph, prog: Program, weights: StepWeights, states: dict[str, str], xp_t: str | None,
                   ext: dict[str, int], label: str) -> dict[tuple, str]:
    """Emit prog.fwd into `g` (a Scan body). `states`: state -> the body's input name; `xp_t`: this
    step's input products [B, nx*H] (None: the cell has none); `ext`: {size name: width} (H and the
    cell's declared sizes). Values computed from parameters and constants only are expanded to
    [B, n] (n their block's size), as every backend does. Returns every defined value's key -> its name."""
    H = ext["H"]
    shapes: dict[str, str] = {}
    groups = {gr.index: gr for gr in prog.groups}

    def b_shape(size: str) -> str:      # [B, n] as a value, made on first use per size
        if size not in shapes:
            same = [s for s in prog.cell.states if prog.state_size(s) == size]
            if same:                    # the shape of a state of this size
                shapes[size] = g.op("Shape", [states[same[0]]], name=f"{label}.shape_B{size}")
            else:                       # B from any state, then the size's width
                b = g.op("Slice", [g.op("Shape", [states[prog.cell.states[0]]], name=f"{label}.shape_state"),
                                   g.ints([0], "zero_1"), g.ints([1], "one_1")], name=f"{label}.shape_B")
                shapes[size] = g.op("Concat", [b, g.ints([ext[size]], f"{size}_1")], name=f"{label}.shape_B{size}",
                                    axis=0)
        return shapes[size]

    vals: dict[Node, tuple[str, bool]] = {state(s): (v, False) for s, v in states.items()}
    vals.update({Node("param", (), p): (v, False) for p, v in weights.vecs.items()})
    mats = prog.input_mats
    if mats:
        outs = ([xp_t] if len(mats) == 1 else
                g.op("Split", [xp_t, g.ints([H] * len(mats), f"{label}.sizes_xp")], name=f"{label}.split_xp", axis=1,
                     outputs=[f"{label}.{value_label(('xp', m))}" for m in mats]))
        vals.update({var("xp", m): (o, False) for m, o in zip(mats, outs)})
    for st in prog.fwd:
        if isinstance(st, Block):
            for let in st.lets:
                name = f"{label}.{value_label(let.key)}"
                v = _render_expr(g, let.expr, vals, name)
                if vals[let.expr][1]:
                    v = g.op("Cast", [v], name=f"{name}/mask", to=g.elem)
                if not any(n.op in ("state", "var") for n in walk([let.expr])):   # [n] or a scalar
                    v = g.op("Expand", [v, b_shape(st.size)], name=f"{name}/bh")
                vals[var(*let.key)] = (v, False)
        elif isinstance(st, Gemm) and st.reduce:
            a = vals[st.a[0]][0]
            name = f"{label}.{st.reduce}{st.group}"
            r = _reduce(g, st.reduce, a, name)
            vals[st.out[0]] = (g.op("Expand", [r, g.op("Shape", [a], name=f"{name}/shape")], name=f"{name}/bh"), False)
        elif isinstance(st, Gemm):
            if st.transposed:  # pragma: no cover - the export renders the forward stages only
                raise ExportError("the ONNX export renders forward stages only")
            a = vals[st.a[0]][0]
            prod = g.op("MatMul", [a, weights.groups[st.group]], name=f"{label}.rp{st.group}")
            rows = ext[groups[st.group].rows]      # each product's width: its matrices' rows
            outs = ([prod] if len(st.out) == 1 else
                    g.op("Split", [prod, g.ints([rows] * len(st.out), f"{label}.sizes_rp{st.group}")],
                         name=f"{label}.split_rp{st.group}", axis=1,
                         outputs=[f"{label}.{value_label(o.attr)}" for o in st.out]))
            vals.update({o: (v, False) for o, v in zip(st.out, outs)})
        else:  # pragma: no cover
            raise ExportError(f"the ONNX export cannot render a {type(st).__name__} stage")
    return {n.attr: v for n, (v, _) in vals.items() if n.op == "var"}


def _reduce(g: Graph, how: str, a: str, name: str) -> str:
    """mean/sum over the hidden axis of each row, keepdims ([B, 1]); the axes are an input from opset 18
    (ReduceMean) and 13 (ReduceSum)."""
    if how not in REDUCTIONS:  # pragma: no cover - lowering admits only these
        raise ExportError(f"the ONNX export has no reduction {how!r}")
    op = {"mean": "ReduceMean", "sum": "ReduceSum"}[how]
    axes_as_input = how == "sum" or g.opset >= 18
    if axes_as_input:
        return g.op(op, [a, g.ints([1], "axes_hidden")], name=name, keepdims=1)
    return g.op(op, [a], name=name, axes=[1], keepdims=1)


def scan_body(root: Graph, prog: Program, weights: StepWeights, ext: dict[str, int], label: str, has_xp: bool,
              masked: bool, scan_width: int) -> "helper.GraphProto":
    """The Scan body of one layer and direction. Inputs: the states ([B, n], n each state's size in
    `ext`), then (scan inputs) this step's input products [B, nx*H] (or, for a cell without input
    products, the input itself, unread), then, when `masked`, the row mask [B, 1]. Outputs: the
    states after the step, then (scan output) the step's output (the output state's size),
    past-length rows as prog.past_length says."""
    g = Graph(root.dtype, names=root.names, parent=root)
    cell = prog.cell
    s_in = {s: g.names.fresh(f"{label}.{s}") for s in cell.states}
    xp_t = g.names.fresh(f"{label}.xp_t" if has_xp else f"{label}.x_t")
    m_t = g.names.fresh(f"{label}.live_t") if masked else None
    vals = render_forward(g, prog, weights, s_in, xp_t if has_xp else None, ext, label)
    new = {s: vals[("s1", s)] for s in cell.states}
    outs = {}
    for s in cell.states:
        outs[s] = _past(g, prog, "s1", m_t, new[s], s_in[s], f"{label}.{s}_next")
    y = _past(g, prog, "y", m_t, new[cell.output], s_in[cell.output], f"{label}.y_t")
    width = {s: ext[prog.state_size(s)] for s in cell.states}
    inputs = [g.value_info(s_in[s], ["B", width[s]]) for s in cell.states]
    inputs.append(g.value_info(xp_t, ["B", scan_width]))
    if masked:
        inputs.append(g.value_info(m_t, ["B", 1], TensorProto.BOOL))
    outputs = ([g.value_info(outs[s], ["B", width[s]]) for s in cell.states]
               + [g.value_info(y, ["B", width[cell.output]])])
    return helper.make_graph(g.nodes, f"{label}.step", inputs, outputs)


def _past(g: Graph, prog: Program, kind: str, live: str | None, new: str, old: str, name: str) -> str:
    """The value a row gets: `new` while it is live; past its length, prog.past_length[kind] decides."""
    if live is None:
        return g.op("Identity", [new], name=name)
    rule = prog.past_length[kind]
    if rule not in ("keep", "zero"):
        raise ExportError(f"the ONNX export cannot apply the past-length rule {kind} {rule!r}")
    return g.op("Where", [live, new, old if rule == "keep" else g.const(0.0)], name=name)


def transposed_stack(mats: list[np.ndarray]) -> np.ndarray:
    """[M_1; M_2; ...]^T: the right operand of `x @ [M_1; ...]^T` (a GEMM group's slots side by side)."""
    return np.ascontiguousarray(np.concatenate(mats, axis=0).T)
