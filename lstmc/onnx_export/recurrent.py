"""A `lstmc.nn.Recurrent` as ONNX: layers, directions, lengths, initial and final states.

Graph inputs:  input [T, B, I] ([B, T, I] with batch_first), T and B symbolic;
               one per extra per-step input of the cell (`input dt`, `input keep[H]`, `input u[K]`),
               named after it: [T, B] or [T, B, n] ([B, T, ...] with batch_first);
               lengths [B] int64 (with lengths=True); one [L·D, B, n] tensor per state, named after
               the cell's states (with initial_states=True; otherwise zeros).
Graph outputs: output [T, B, D·n_out] ([B, T, D·n_out] with batch_first); <state>_n [L·D, B, n] per state.

n is each state's own size: H, or the value of its declared size (`state h[P]`, lstmp: h is [.., P],
c [.., H]); n_out is the output state's size, and layer k > 0 reads D·n_out features.

Each layer and direction is one `Scan` over the lowered Program's step (lstmc/onnx_export/step.py),
after the input products of all T·B rows as one MatMul, or, for a built-in whose semantics ONNX's
operator shares, that operator (lstmc/onnx_export/native.py). Sequence semantics are lstmc's
(docs/nn.md, "Calling it"; lstmc/backends/sequence.py): a row past its length outputs 0 and keeps
its state; the reverse direction reads each row backwards within its own length (`ReverseSequence`,
which leaves positions past the length in place, exactly lstmc's `reverse_index`); positions past a
row's length are cleared before the input product (`clear_padding`). The extra inputs are reversed
and cleared like x (once per direction, shared by every layer) and enter the hoisted products slot
by slot as `program.input_segments()` says: `V @ u` one more MatMul, an input read element-wise its
own slot (a [T, B] input expanded over H); the Scan body reads the slots as it reads W @ x's.
Inter-layer dropout is a training-time operation and is not exported (the graph is the module in
eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..backends.sequence import NumpyOps, dense_weights
from ..lower import lower
from ..program import Program
from ..spec import Cell
from .graph import Graph
from .native import NATIVE, native_of, native_weights
from .step import ExportError, StepWeights, scan_body, transposed_stack

DEFAULT_OPSET = 17
MIN_OPSET = 14          # LSTM/GRU with `layout`, Split/Unsqueeze/ReduceSum with their axes as inputs
NATIVE_CHOICES = ("auto", True, False)


@dataclass
class Net:
    """What the export needs of a Recurrent: the cell, its Program, sizes, and every layer and
    direction's parameters as NumPy arrays (biases dropped by bias=False as zeros; `heads N`
    recurrent matrices as the dense block-diagonal [H, H] matrices they stand for)."""
    cell: Cell
    program: Program
    input_size: int
    hidden: int
    layers: int
    dirs: int
    dtype: np.dtype
    params: dict          # (layer, direction) -> {parameter: array}
    sizes: dict = None    # the values of the cell's `size` lines (Recurrent's sizes=)

    @property
    def ext(self) -> dict[str, int]:
        """{size name: width}: H and the cell's declared sizes (the Program's extents)."""
        return self.program.extents(self.hidden, self.sizes)

    def width(self, s: str) -> int:
        """The width of state `s`: H, or its declared size's value (`state h[P]`)."""
        return self.ext[self.program.state_size(s)]

    @property
    def out_width(self) -> int:
        """The output's width per direction: the output state's size."""
        return self.width(self.cell.output)

    def in_size(self, layer: int) -> int:
        """The features layer `layer` reads: the input's, or D times the output state's size."""
        return self.input_size if layer == 0 else self.out_width * self.dirs

    def input_dims(self) -> dict[str, int | None]:
        """{extra input: its feature count}: None for `input dt` ([T, B]), H or its size's value."""
        return {u: self.cell.input_size_of(u, self.hidden, self.sizes) for u in self.cell.inputs}

    @classmethod
    def from_recurrent(cls, rnn) -> "Net":
        cell, H = rnn.cell, rnn.hidden_size
        check_supported(cell)
        program = lower(cell)
        dirs = 2 if rnn.bidirectional else 1
        sizes = dict(getattr(rnn, "sizes", None) or {})
        first = next(iter(rnn.parameters()), None)      # a cell whose every parameter is a dropped bias has none
        dtype = np.dtype(str(first.dtype).replace("torch.", "") if first is not None else "float32")
        params = {}
        out_size = cell.size_value(cell.state_size(cell.output), rnn.input_size, H, sizes)
        for layer in range(rnn.num_layers):
            in_size = rnn.input_size if layer == 0 else out_size * dirs
            for d in range(dirs):
                pd = rnn.cell_params(layer, reverse=bool(d))
                p = {k: (pd[k].detach().cpu().numpy().astype(dtype) if k in pd else
                         np.zeros(cell.param_shape(k, in_size, H, sizes), dtype=dtype)) for k in cell.params}
                params[(layer, d)] = dense_weights(NumpyOps(dtype), program, p)
        return cls(cell, program, rnn.input_size, H, rnn.num_layers, dirs, dtype, params, sizes)

    @staticmethod
    def label(layer: int, d: int) -> str:
        """l0, l0_reverse, l1, ...: Recurrent's own names for a layer and direction."""
        return f"l{layer}" + ("_reverse" if d else "")

    @staticmethod
    def layer_of(label: str) -> int:
        return int(label[1:].split("_")[0])


RESERVED = ("input", "lengths", "output")     # the graph's own input and output names


def check_supported(cell: Cell) -> None:
    """Refuse, naming it, a construct the export does not express: parameters other than W, U
    (block-diagonal with heads), V (`V @ u`) and b (each of the sizes its cell gives it: W [H, I],
    U [H, P] or [P, H] with `state h[P]`), and an extra input whose name is one of the graph's own
    (`input`, `lengths`, `output`, `<state>_n`)."""
    odd = [f"{p} (kind {k})" for p, k in cell.params.items() if k not in ("W", "U", "V", "b")]
    if odd:
        raise ExportError(f"cell '{cell.name}' has parameters the ONNX export does not support yet: {', '.join(odd)}")
    taken = set(RESERVED) | {f"{s}_n" for s in cell.states}
    clash = [u for u in cell.inputs if u in taken]
    if clash:
        raise ExportError(f"cell '{cell.name}' has an extra input named '{clash[0]}', which is also the name of a "
                          f"value of the exported graph ({', '.join(sorted(taken))}): rename the input in the cell")


class _Sequence:
    """Values every layer shares: the batch size, zeros for absent initial states (one [B, n] per
    width n), the lengths,
    the mask of live positions [T, B, 1] and of rows with a nonzero length [B, 1], the extra inputs
    as each direction reads them."""

    def __init__(self, g: Graph, x: str, H: int, lengths: str | None, inputs: dict[str, str] | None = None):
        self.g = g
        self.inputs = dict(inputs or {})       # the extra per-step inputs, time-major, as given
        shape = g.op("Shape", [x], name="shape_input")
        self.T = g.op("Gather", [shape, g.const(0, np.int64)], name="T", axis=0)
        self.B = g.op("Gather", [shape, g.const(1, np.int64)], name="B", axis=0)
        self.H = H
        self.lengths = lengths
        self._zeros: dict[int, str] = {}
        self.live = self.live_TB = self._nonempty = self._lengths_i32 = self._B1 = None
        self._extra: dict = {}
        if lengths is not None:
            t = g.op("Range", [g.const(0, np.int64), self.T, g.const(1, np.int64)], name="time")
            self.live_TB = g.op("Less", [g.op("Unsqueeze", [t, g.ints([1], "axes_1")], name="time_col"),
                                         g.op("Unsqueeze", [lengths, g.ints([0], "axes_0")], name="lengths_row")],
                                name="live_TB")
            self.live = g.op("Unsqueeze", [self.live_TB, g.ints([2], "axes_2")], name="live")

    def extra(self, name: str, value: str, rank: int, reverse: bool) -> str:
        """An extra input [T, B] or [T, B, n] (`rank` 2 or 3) as a direction reads it, as x is read:
        each row reversed within its length for the reverse direction (with lengths), positions past
        the length cleared. Made once per input and direction, shared by every layer."""
        key = (name, reverse)
        if key not in self._extra:
            g, v = self.g, value
            if self.lengths is not None:
                if reverse:
                    v = g.op("ReverseSequence", [v, self.lengths], name=f"{name}_reversed", batch_axis=1, time_axis=0)
                v = g.op("Where", [self.live if rank == 3 else self.live_TB, v, g.const(0.0)],
                         name=f"{name}{'_reversed' if reverse else ''}_cleared")
            self._extra[key] = v
        return self._extra[key]

    def zeros(self, n: int | None = None) -> str:
        """A [B, n] zero state, n = H by default (shared by every layer, direction and state of that
        width without an initial value)."""
        n = self.H if n is None else int(n)
        if n not in self._zeros:
            g = self.g
            tag = "H" if n == self.H else str(n)
            if self._B1 is None:
                self._B1 = g.op("Unsqueeze", [self.B, g.ints([0], "axes_0")], name="B_1")
            bn = g.op("Concat", [self._B1, g.ints([n], f"{tag}_1")], name=f"shape_B{tag}", axis=0)
            self._zeros[n] = g.op("ConstantOfShape", [bn], name=f"zeros_B{tag}",
                                  value=helper.make_tensor("zero", g.elem, [1], [0.0]))
        return self._zeros[n]

    def int32_lengths(self) -> str:
        """The lengths as ONNX's LSTM/GRU take them (sequence_lens is int32)."""
        if self._lengths_i32 is None:
            self._lengths_i32 = self.g.op("Cast", [self.lengths], name="lengths_int32", to=TensorProto.INT32)
        return self._lengths_i32

    def nonempty(self) -> str:
        """[B, 1]: the rows whose length is not 0."""
        if self._nonempty is None:
            g = self.g
            self._nonempty = g.op("Unsqueeze", [g.op("Greater", [self.lengths, g.const(0, np.int64)], name="nonempty_B"),
                                                g.ints([1], "axes_1")], name="nonempty")
        return self._nonempty


def emit_recurrent(g: Graph, net: Net, x: str, lengths: str | None, states: dict[str, str] | None,
                   native: str | None, inputs: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Emit the network reading `x` [T, B, I] (time-major); returns (output [T, B, D·n_out],
    {state: its L·D final values [B, n], in nn.LSTM's order}; n each state's width, n_out the output
    state's). `states`: state -> its [L·D, B, n] input (None: zeros); `native`: the built-in whose
    ONNX operator to use (None: the generic Scan form); `inputs`: the cell's extra per-step inputs, name -> time-major value (every layer reads them)."""
    missing = [u for u in net.cell.inputs if u not in (inputs or {})]
    if missing:
        raise ExportError(f"cell '{net.cell.name}' reads extra per-step inputs ({', '.join(missing)}), which this "
                          f"export does not provide: export the Recurrent with to_onnx, which makes them graph inputs")
    seq = _Sequence(g, x, net.hidden, lengths, inputs)
    finals = {s: [] for s in net.cell.states}
    layer_in = x
    for layer in range(net.layers):
        outs = []
        for d in range(net.dirs):
            label = Net.label(layer, d)
            k = layer * net.dirs + d
            s0 = {s: (seq.zeros(net.width(s)) if states is None else
                      g.op("Gather", [states[s], g.const(k, np.int64)], name=f"{label}.{s}0", axis=0))
                  for s in net.cell.states}
            emit = _native_direction if native else _generic_direction
            y, fin = emit(g, net, seq, label, net.params[(layer, d)], layer_in, bool(d), s0, native)
            outs.append(y)
            for s in net.cell.states:
                finals[s].append(fin[s])
        layer_in = outs[0] if len(outs) == 1 else g.op("Concat", outs, name=f"l{layer}.output", axis=2)
    return layer_in, finals


def _clear_padding(g: Graph, seq: _Sequence, x: str, label: str) -> str:
    """x with every position past its row's length set to 0 (lstmc clears it before the input products)."""
    return x if seq.lengths is None else g.op("Where", [seq.live, x, g.const(0.0)], name=f"{label}.x_cleared")


def _generic_direction(g: Graph, net: Net, seq: _Sequence, label: str, p: dict, x: str, reverse: bool,
                       s0: dict[str, str], native=None):
    prog, H = net.program, net.hidden
    if reverse and seq.lengths is not None:          # each row backwards within its own length
        x = g.op("ReverseSequence", [x, seq.lengths], name=f"{label}.x_reversed", batch_axis=1, time_axis=0)
    x = _clear_padding(g, seq, x, label)
    mats = prog.input_mats
    if mats:
        xs = _input_products(g, net, seq, label, p, x, reverse)
        width = len(mats) * H
    else:
        xs, width = x, net.in_size(Net.layer_of(label))
    weights = StepWeights(
        vecs={v: g.initializer(f"{label}.{v}", p[v]) for v in prog.vector_params},
        groups={gr.index: g.initializer(f"{label}.U{gr.index}", transposed_stack([p[m] for m in gr.mats]))
                for gr in prog.weight_groups})
    masked = seq.lengths is not None
    body = scan_body(g, prog, weights, net.ext, label, bool(mats), masked, width)
    scan_in = [xs] + ([seq.live] if masked else [])
    flip = reverse and not masked                    # the whole sequence backwards: Scan's own direction
    outs = g.op("Scan", [s0[s] for s in prog.cell.states] + scan_in, name=f"{label}.scan",
                outputs=[f"{label}.{s}_n" for s in prog.cell.states] + [f"{label}.y"],
                body=body, num_scan_inputs=len(scan_in),
                scan_input_directions=[int(flip)] * len(scan_in), scan_output_directions=[int(flip)])
    y = outs[-1]
    if reverse and masked:
        y = g.op("ReverseSequence", [y, seq.lengths], name=f"{label}.y_in_order", batch_axis=1, time_axis=0)
    return y, dict(zip(prog.cell.states, outs[:-1]))


def _input_products(g: Graph, net: Net, seq: _Sequence, label: str, p: dict, x: str, reverse: bool) -> str:
    """XP [T, B, nx·H], all T·B rows at once before the loop, slot by slot as the Program's
    input_segments() say: x @ [W...]^T, u @ [V...]^T for each `V @ u`, and each input read
    element-wise as its own slot (a [T, B] input expanded over H)."""
    H, dims = net.hidden, net.input_dims()
    segs = net.program.input_segments()
    parts = []
    for src, names, direct, _ in segs:
        name = f"{label}.xp" if len(segs) == 1 else f"{label}.xp_{src or 'x'}"
        if src is None:
            W = g.initializer(f"{label}.W", transposed_stack([p[m] for m in names]))
            parts.append(g.op("MatMul", [x, W], name=name))
            continue
        u = seq.extra(src, seq.inputs[src], 2 if dims[src] is None else 3, reverse)
        if not direct:
            V = g.initializer(f"{label}.V_{src}", transposed_stack([p[m] for m in names]))
            parts.append(g.op("MatMul", [u, V], name=name))
        elif dims[src] is None:
            u1 = g.op("Unsqueeze", [u, g.ints([2], "axes_2")], name=f"{name}/1")
            parts.append(g.op("Expand", [u1, g.ints([1, 1, H], "shape_11H")], name=name))
        else:
            parts.append(g.op("Identity", [u], name=name))
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, name=f"{label}.xp", axis=2)


def _native_direction(g: Graph, net: Net, seq: _Sequence, label: str, p: dict, x: str, reverse: bool,
                      s0: dict[str, str], native: str):
    op, attrs = NATIVE[native]
    H = net.hidden
    w = {k: g.initializer(f"{label}.{k}", v) for k, v in native_weights(native, p, H).items()}
    x = _clear_padding(g, seq, x, label)
    lens = seq.int32_lengths() if seq.lengths is not None else ""
    init = {s: g.op("Unsqueeze", [s0[s], g.ints([0], "axes_0")], name=f"{label}.{s}0_1") for s in net.cell.states}
    inputs = [x, w["W"], w["R"], w["B"], lens, init["h"]]
    if op == "LSTM":
        inputs += [init["c"], w.get("P", "")]
    outs = g.op(op, inputs, name=f"{label}.{op.lower()}",
                outputs=[f"{label}.Y", *(f"{label}.Y_{s}" for s in net.cell.states)],
                hidden_size=H, direction="reverse" if reverse else "forward", **attrs)
    y = g.op("Squeeze", [outs[0], g.ints([1], "axes_1")], name=f"{label}.y")       # [T, 1, B, H] -> [T, B, H]
    fin = {}
    for s, v in zip(net.cell.states, outs[1:]):
        f = g.op("Squeeze", [v, g.ints([0], "axes_0")], name=f"{label}.{s}_n")
        if seq.lengths is not None:   # ONNX Runtime returns 0 for a length-0 row; lstmc its initial state
            f = g.op("Where", [seq.nonempty(), f, s0[s]], name=f"{label}.{s}_n_kept")
        fin[s] = f
    return y, fin


def _stack(g: Graph, parts: list[str], name: str) -> str:
    """[B, H] values -> [len(parts), B, H]."""
    ups = [g.op("Unsqueeze", [v, g.ints([0], "axes_0")], name=f"{v}/1") for v in parts]
    return g.op("Identity" if len(ups) == 1 else "Concat", ups, name=name, exact=True,
                **({} if len(ups) == 1 else {"axis": 0}))


def choose_native(net: Net, native) -> str | None:
    """The built-in whose ONNX operator to use, or None for the generic Scan form. native="auto": the
    operator when the cell's Program is a built-in's and the dtype is float32 (ONNX Runtime runs its
    LSTM/GRU in float32 only); True: the operator, or an error naming why not; False: generic."""
    if native not in NATIVE_CHOICES:
        raise ValueError(f"native must be 'auto', True or False, got {native!r}")
    if native is False:
        return None
    name = native_of(net.cell, net.program)
    if native is True and name is None:
        raise ExportError(f"cell '{net.cell.name}' has no native ONNX operator with the same semantics (only "
                          f"the built-ins {', '.join(NATIVE)} do, unchanged): use native=False or 'auto'")
    if native == "auto" and net.dtype != np.float32:
        return None
    return name


def check_opset(opset) -> int:
    opset = DEFAULT_OPSET if opset is None else opset
    top = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {top} (this onnx's newest), got {opset!r}")
    return opset


def make_model(g: Graph, inputs, outputs, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)],
                              producer_name="lstmc", doc_string=f"lstmc export: {name}")
    model.ir_version = min(model.ir_version, 9)      # readable by ONNX Runtime releases of the last years
    onnx.checker.check_model(model)
    return model


def to_onnx(recurrent, path, example_input, *, lengths: bool = False, initial_states: bool = False,
            native="auto", opset: int | None = None) -> onnx.ModelProto:
    """Export a `lstmc.nn.Recurrent` to ONNX; write it to `path` (unless None) and return the model.

    Graph inputs: `input` ([T, B, I], or [B, T, I] with batch_first; T and B are symbolic), one per
    extra per-step input of the cell, named after it ([T, B] or [T, B, n], batch first likewise),
    `lengths` ([B] int64, with lengths=True: lstmc's `lengths=` semantics) and, with
    initial_states=True, one [L·D, B, n] input per state named after the cell's states (`h`, `c`;
    n the state's size: H, or P for `state h[P]`). Outputs: `output` ([.., D·n] of the output
    state's n) and the final states `<state>_n` (`h_n`, `c_n`).

    `example_input` fixes the layout and dtype (it must match the module's parameters); it is not run.
    native: "auto" (the native ONNX LSTM/GRU for the built-ins lstm, gru, gru_v1, peephole_lstm,
    cifg_lstm in float32, else the generic Scan form), True (native or an error) or False (generic).
    """
    import torch

    if not all(hasattr(recurrent, a) for a in ("cell_params", "cell", "hidden_size")):
        raise TypeError(f"to_onnx takes a lstmc.nn.Recurrent, got {type(recurrent).__name__}")
    net = Net.from_recurrent(recurrent)
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 3:
        raise ValueError("example_input must be a 3-D tensor ([T, B, I], or [B, T, I] with batch_first); "
                         "unbatched and packed inputs are not exported"
                         + ("" if not isinstance(example_input, torch.Tensor)
                            else f", got {example_input.dim()} dimensions"))
    if int(example_input.shape[-1]) != net.input_size:
        raise ValueError(f"example_input.size(-1) must be input_size {net.input_size}, got {int(example_input.shape[-1])}")
    if np.dtype(str(example_input.dtype).replace("torch.", "")) != net.dtype:
        raise ValueError(f"example_input has dtype {example_input.dtype} but the module's parameters are "
                         f"{net.dtype}: convert one of them")
    g = Graph(net.dtype, opset=check_opset(opset))
    kind = choose_native(net, native)
    bf = bool(recurrent.batch_first)
    D, LD = net.dirs, net.layers * net.dirs
    x = g.names.claim("input")
    inputs = [g.value_info(x, ["B", "T", net.input_size] if bf else ["T", "B", net.input_size])]
    if bf:
        x = g.op("Transpose", [x], name="input_time_major", perm=[1, 0, 2])
    extra = {}
    for u, n in net.input_dims().items():        # the cell's extra per-step inputs, named after them
        v = g.names.claim(u)
        inputs.append(g.value_info(v, (["B", "T"] if bf else ["T", "B"]) + ([] if n is None else [n])))
        extra[u] = (g.op("Transpose", [v], name=f"{u}_time_major", perm=[1, 0] if n is None else [1, 0, 2])
                    if bf else v)
    L = None
    if lengths:
        L = g.names.claim("lengths")
        inputs.append(g.value_info(L, ["B"], TensorProto.INT64))
    states = None
    if initial_states:
        states = {s: g.names.claim(s) for s in net.cell.states}
        inputs += [g.value_info(v, [LD, "B", net.width(s)]) for s, v in states.items()]
    y, finals = emit_recurrent(g, net, x, L, states, kind, extra)
    out = g.op("Transpose" if bf else "Identity", [y], name="output", exact=True, **({"perm": [1, 0, 2]} if bf else {}))
    width = D * net.out_width
    outputs = [g.value_info(out, ["B", "T", width] if bf else ["T", "B", width])]
    for s in net.cell.states:
        outputs.append(g.value_info(_stack(g, finals[s], f"{s}_n"), [LD, "B", net.width(s)]))
    form = f"native {NATIVE[kind][0]}" if kind else "generic Scan"
    model = make_model(g, inputs, outputs, f"{net.cell.name} ({form}, {net.layers} layer(s), {D} direction(s))")
    if path is not None:
        onnx.save(model, str(path))
    return model
