"""PyTorch custom operators for compiled cells, so that `torch.compile(fullgraph=True)`,
`torch.export` and `torch.func` see one opaque, shape-typed operator per layer and direction
instead of Python code holding NumPy arrays.

Design: one set of operators per cell, registered lazily (the first time a `Recurrent` of that
cell is built) through `torch.library.custom_op`, named from the cell's name and a hash of its
lowered program text, so two cells never share an operator and the same cell always gets the
same name (an exported program can be loaded in a process that has built the module again):

    lstmc::<cell>_<hash>_fwd(Tensor x, Tensor[] states, Tensor[] params, Tensor[] inputs, Tensor? lengths,
                             bool reverse) -> (Tensor y, Tensor[] finals, Tensor[] tape)
    lstmc::<cell>_<hash>_infer(same arguments) -> (Tensor y, Tensor[] finals)      no tape: inference
    lstmc::<cell>_<hash>_bwd(Tensor x, Tensor[] params, Tensor[] inputs, Tensor? lengths, bool reverse,
                             Tensor[] tape, Tensor dy, Tensor[] dfinals)
        -> (Tensor dx, Tensor[] dstates, Tensor[] dparams, Tensor[] dinputs)

x is [T, B, I]; states and finals are [B, H] in the cell's state order; params are in the cell's
parameter order; inputs are the cell's extra per-step inputs (`input dt`, `input keep[H]`, `input
u[K]`: [T, B] or [T, B, n], time-major) in its declaration order ([] for a cell without any), and
dinputs their gradients; lengths is an optional int64 CPU tensor [B]. The tape is what the compiled
backward reads that cannot be recomputed cheaply: every state sequence [T+1, B, H] (the state before
step t at index t) and every saved value [T, B, H], in the program's order. The rest of the
backend's tape (the time-ordered, padding-cleared input and extra inputs, the packed weights, the
reverse index) is
rebuilt in the backward operator from its inputs, so backward is a pure function of tensors and
a compiled or exported graph carries no Python object between forward and backward. That rebuild
copies the weights once (O(params), against the kernel's O(T·B·params)) and, with `reverse` or
short rows, the input once (as forward does).

One operator per cell rather than one generic operator taking a cell-key string: the schema then
names the cell, fake tensors and opcheck need no side table, and a program printed by torch.export
says which cell each call runs.

The implementations run the compiled program of the input's device: numba on CPU (zero-copy NumPy
views in and out), triton on CUDA (with CUDA graphs off: a graphed forward keeps its tape in a
static workspace that the next forward reuses, which a tensor returned by an operator must never
be). `register_fake` gives every output's shape from the inputs' shapes (T and B may be symbolic),
`register_autograd` joins them to autograd (backward calls the `_bwd` operator; a second derivative
raises `ONCE_DIFFERENTIABLE`), `register_vmap` runs a batch of calls one at a time.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import Optional

import numpy as np
import torch
from torch.autograd import forward_ad

from .autograd import ONCE_DIFFERENTIABLE
from .backends.base import Tape, check_lengths
from .backends.sequence import dense_weights, order_extra, order_inputs, pack
from .build import compile as _compile
from .build import load
from .lower import lower
from .version import __version__

__all__ = ["CellOps", "cell_ops", "registered_ops", "packed_lengths", "OP_BACKENDS", "NO_FORWARD_MODE"]

OP_BACKENDS = {"cpu": "numba", "cuda": "triton"}   # device type -> the backend its operators run
_NAMESPACE = "lstmc"
_registry: dict[str, "CellOps"] = {}
_lock = threading.Lock()


def cell_ops(cell) -> "CellOps":
    """The operators of `cell` (a Cell, built-in name or path), registered on first use."""
    cell = load(cell)
    key = _op_name(cell)
    ops = _registry.get(key)
    if ops is None:
        with _lock:
            ops = _registry.get(key)
            if ops is None:
                ops = _registry[key] = CellOps(cell, key)
    return ops


def registered_ops(name: str) -> "CellOps":
    """The operators registered under `name` (CellOps.name): a lookup torch.compile can trace."""
    return _registry[name]


def _op_name(cell) -> str:
    # lstmc's version is in the name: torch's compile caches (inductor's FX graph and AOT caches) key
    # a graph by its operators' names, not by their fake kernels, so an upgrade that changes what an
    # operator returns (its tape's shapes) must not reuse a graph compiled against the old one
    digest = hashlib.sha256((__version__ + "\0" + lower(cell).text()).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() else "_" for ch in cell.name).lower()
    return f"{safe}_{digest}"


def _np(t: torch.Tensor) -> np.ndarray:
    """A tensor as the numba backend reads it: a C-contiguous NumPy view (a copy only if strided)."""
    return t.detach().contiguous().numpy()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _fresh(ts: list) -> list:
    """The tensors with no two sharing memory (an operator's outputs must not alias each other:
    the weight gradients of one stacked product are views of one array)."""
    seen, out = set(), []
    for t in ts:
        p = t.untyped_storage().data_ptr()
        if p in seen:
            t = t.clone()
        seen.add(p)
        out.append(t)
    return out


class CellOps:
    """The registered operators of one cell and their implementations."""

    def __init__(self, cell, name: str):
        self.cell = cell
        self.program = lower(cell)
        self.name = name
        self.states = tuple(cell.states)
        self.params = tuple(cell.params)
        self.inputs = tuple(cell.inputs)
        self.saved = tuple(n for n, _ in self.program.saved)
        # the size name of each state and saved value (`state h[P]`: "P"; otherwise "H")
        self.state_dims = tuple(cell.state_size(s) for s in self.states)
        self.saved_dims = tuple(self.program.saved_sizes.get(n, "H") for n in self.saved)
        self._compiled: dict = {}
        args = "(Tensor x, Tensor[] states, Tensor[] params, Tensor[] inputs, Tensor? lengths, bool reverse)"
        q = f"{_NAMESPACE}::{name}"
        self.fwd_def = torch.library.custom_op(f"{q}_fwd", self._fwd, mutates_args=(),
                                               schema=args + " -> (Tensor, Tensor[], Tensor[])")
        self.infer_def = torch.library.custom_op(f"{q}_infer", self._infer, mutates_args=(),
                                                 schema=args + " -> (Tensor, Tensor[])")
        self.bwd_def = torch.library.custom_op(
            f"{q}_bwd", self._bwd, mutates_args=(),
            schema="(Tensor x, Tensor[] params, Tensor[] inputs, Tensor? lengths, bool reverse, Tensor[] tape, "
                   "Tensor dy, Tensor[] dfinals) -> (Tensor, Tensor[], Tensor[], Tensor[])")
        self.fwd_def.register_fake(self._fwd_fake)
        self.infer_def.register_fake(self._infer_fake)
        self.bwd_def.register_fake(self._bwd_fake)
        self.fwd_def.register_autograd(self._backward, setup_context=self._setup_context)
        self.bwd_def.register_autograd(_refuse_second_order, setup_context=_no_context)
        for d in (self.fwd_def, self.infer_def, self.bwd_def):
            d.register_vmap(_vmap_one_at_a_time(d))
        # the OpOverloads: what torch.compile and torch.export see and record
        self.fwd = getattr(getattr(torch.ops, _NAMESPACE), f"{name}_fwd").default
        self.infer = getattr(getattr(torch.ops, _NAMESPACE), f"{name}_infer").default
        self.bwd = getattr(getattr(torch.ops, _NAMESPACE), f"{name}_bwd").default

    def __repr__(self):
        return f"<CellOps {_NAMESPACE}::{self.name}_{{fwd,infer,bwd}} cell={self.cell.name!r}>"

    # ------------------------------------------------------------------------------ programs
    def compiled(self, device: torch.device, dtype: torch.dtype):
        """The compiled program that runs on `device` with `dtype` (compiled once)."""
        backend = OP_BACKENDS.get(device.type)
        if backend is None:
            raise RuntimeError(f"lstmc operators run on CPU (numba) and CUDA (triton) tensors, but the input is on "
                               f"{device}: use lstmc.nn.Recurrent(..., backend='torch') there")
        key = (backend, dtype)
        prog = self._compiled.get(key)
        if prog is None:
            name = str(dtype).replace("torch.", "")
            opts = {"graphs": False} if backend == "triton" else {}
            prog = self._compiled[key] = _compile(self.cell, backend=backend, dtype=name, **opts)
        return prog

    @staticmethod
    def _lengths(lengths, T: int, B: int):
        return None if lengths is None else check_lengths(lengths.detach().cpu().numpy(), T, B)

    # -------------------------------------------------------------------------------- forward
    def _run(self, x, states, params, inputs, lengths, reverse, need_tape):
        self._check_lists(states, params, inputs)
        prog = self.compiled(x.device, x.dtype)
        T, B = int(x.shape[0]), int(x.shape[1])
        L = self._lengths(lengths, T, B)
        if prog.backend == "numba":
            y, final, tape = prog.forward(_np(x), {p: _np(v) for p, v in zip(self.params, params)},
                                          {s: _np(v) for s, v in zip(self.states, states)},
                                          lengths=L, reverse=bool(reverse), need_tape=need_tape,
                                          inputs=self._inputs(inputs, _np))
            y, finals = _t(y), [_t(final[s]) for s in self.states]
            tape_out = [] if tape is None else (
                [_t(tape.states[s]) for s in self.states] + [_t(tape.saved[n]) for n in self.saved])
        else:
            y, final, tape = prog.forward(x.detach(), {p: v.detach() for p, v in zip(self.params, params)},
                                          {s: v.detach() for s, v in zip(self.states, states)},
                                          lengths=L, reverse=bool(reverse), need_tape=need_tape,
                                          inputs=self._inputs(inputs, torch.Tensor.detach))
            finals = [final[s] for s in self.states]
            tape_out = [] if tape is None else (
                [tape.states[s] for s in self.states] + [tape.saved[n] for n in self.saved])
            # a length-0 row can hand back the very tensor it was given: outputs never alias inputs
            ins = {v.untyped_storage().data_ptr() for v in [x, *states, *params, *inputs]}
            finals = [f.clone() if f.untyped_storage().data_ptr() in ins else f for f in finals]
        return y, finals, tape_out

    def _inputs(self, inputs, conv):
        """The extra inputs as the compiled program takes them: {name: conv(tensor)}, None without any."""
        return {u: conv(v) for u, v in zip(self.inputs, inputs)} if self.inputs else None

    def _fwd(self, x, states, params, inputs, lengths, reverse):
        return self._run(x, states, params, inputs, lengths, reverse, True)

    def _infer(self, x, states, params, inputs, lengths, reverse):
        y, finals, _ = self._run(x, states, params, inputs, lengths, reverse, False)
        return y, finals

    def _check_lists(self, states, params, inputs):
        if len(states) != len(self.states) or len(params) != len(self.params) or len(inputs) != len(self.inputs):
            raise ValueError(f"cell '{self.cell.name}' takes {len(self.states)} states ({', '.join(self.states)}), "
                             f"{len(self.params)} parameters ({', '.join(self.params)}) and {len(self.inputs)} extra "
                             f"inputs ({', '.join(self.inputs) or 'none'}), got {len(states)}, {len(params)} "
                             f"and {len(inputs)}")

    def _fwd_fake(self, x, states, params, inputs, lengths, reverse):
        y, finals = self._infer_fake(x, states, params, inputs, lengths, reverse)
        T, B = x.shape[0], x.shape[1]
        dims = dict(zip(self.state_dims, (s.shape[-1] for s in states)))       # size name -> number
        H = dims.get("H", states[0].shape[-1])
        compact = OP_BACKENDS.get(x.device.type) == "numba"      # numba's tape is compact (Program.tape_shape)
        tape = ([x.new_empty((T + 1, B, s.shape[-1])) for s in states]
                + [x.new_empty(self.program.tape_shape(n, T, B, dims.get(d, H), compact))
                   for n, d in zip(self.saved, self.saved_dims)])
        return y, finals, tape

    def _infer_fake(self, x, states, params, inputs, lengths, reverse):
        self._check_lists(states, params, inputs)
        T, B = x.shape[0], x.shape[1]
        out = states[self.states.index(self.cell.output)]        # y has the output state's size
        return x.new_empty((T, B, out.shape[-1])), [s.new_empty(s.shape) for s in states]

    # ------------------------------------------------------------------------------- backward
    def _tape(self, prog, x, params: dict, inputs: dict | None, L, reverse, tape: list):
        """The backend's Tape, rebuilt from the operator's inputs and the forward's tape tensors, as the
        backend's forward builds it (order_inputs, order_extra, pack)."""
        T, B, I = (int(s) for s in x.shape)
        n = len(self.states)
        dims = dict(zip(self.state_dims, (int(t.shape[2]) for t in tape[:n])))
        H = dims["H"] if "H" in dims else prog._sizes(params)[1]     # every state sized: H from the parameters
        # the size names' numbers ({"H": H, "P": P}) as forward records them, from the undensified parameters
        dims = prog.dims(params, inputs, H)
        states, saved = dict(zip(self.states, tape[:n])), dict(zip(self.saved, tape[n:]))
        L = np.full(B, T, np.int64) if L is None else L
        xo, rev_idx = order_inputs(prog.ops, x, L, bool(reverse))
        ins = order_extra(prog.ops, inputs, L, rev_idx)
        if prog.backend == "numba":
            pk = pack(prog.program, params, lambda names: prog._packed(params, names),
                      lambda names: prog._packed_heads(params, names))
            Wcat = pk.W if pk.W is not None else np.zeros((0, I), prog.np_dtype)
            packed = {"Wcat": Wcat, "vecs": list(pk.vecs.values()), "U": [u for u in pk.U if u is not None]}
            extra = {}
        else:                   # triton: whole matrices (block-diagonal ones made dense)
            params = dense_weights(prog.ops, prog.program, params)
            pk = pack(prog.program, params, lambda names: torch.cat([params[m] for m in names]).contiguous())
            packed = {"Wcat": pk.W, "U": pk.U, "vecs": pk.vecs,
                      "L": torch.as_tensor(L, dtype=torch.int32).to(x.device)}
            extra = {"numpy": False, "schedule": prog.resolve(None, B, H)}
        tp = Tape(owner=prog, x=xo, states=states, saved=saved, lengths=L, mask=None, reverse=bool(reverse),
                  rev_idx=rev_idx, packed=packed, shapes=(T, B, I, H), extra=extra, inputs=ins, vmats=pk.V)
        if dims is not None:
            tp.dims = dims
        return tp

    def _bwd(self, x, params, inputs, lengths, reverse, tape, dy, dfinals):
        prog = self.compiled(x.device, x.dtype)
        T, B = int(x.shape[0]), int(x.shape[1])
        L = self._lengths(lengths, T, B)
        if prog.backend == "numba":
            tp = self._tape(prog, _np(x), {p: _np(v) for p, v in zip(self.params, params)},
                            self._inputs(inputs, _np), L, reverse, [_np(t) for t in tape])
            g = prog.backward(tp, _np(dy), {s: _np(d) for s, d in zip(self.states, dfinals)})
            dx, ds, dp = g
            return (_t(dx), [_t(ds[s]) for s in self.states], _fresh([_t(dp[p]) for p in self.params]),
                    _fresh([_t(g.dinputs[u]) for u in self.inputs]))
        with torch.no_grad():
            tp = self._tape(prog, x.detach(), {p: v.detach() for p, v in zip(self.params, params)},
                            self._inputs(inputs, torch.Tensor.detach), L, reverse, [t.detach() for t in tape])
            g = prog.backward(tp, dy.detach(), {s: d.detach() for s, d in zip(self.states, dfinals)})
            dx, ds, dp = g
        return (dx, [ds[s] for s in self.states], _fresh([dp[p] for p in self.params]),
                _fresh([g.dinputs[u] for u in self.inputs]))

    def _bwd_fake(self, x, params, inputs, lengths, reverse, tape, dy, dfinals):
        # contiguous, as the real outputs are (empty_like would copy a transposed input's strides)
        return (x.new_empty(x.shape), [d.new_empty(d.shape) for d in dfinals], [p.new_empty(p.shape) for p in params],
                [u.new_empty(u.shape) for u in inputs])

    # ------------------------------------------------------------------------------------ call
    def __call__(self, x, states, params, lengths, reverse: bool, grad: bool, inputs=()):
        """(y, finals) of one layer and direction; `grad`: record it for autograd (a tape is kept);
        `inputs`: the cell's extra per-step inputs, time-major, in its declaration order."""
        inputs = list(inputs)
        if not torch.compiler.is_compiling() and (torch._C._functorch.peek_interpreter_stack() is not None
                                                  or forward_ad._current_level >= 0):
            # torch.func (grad, vmap, jacrev): the autograd.Function torch generates for a custom
            # operator has no setup_context, which functorch requires; this one has, and it refuses
            # forward mode (jvp) in a sentence instead of a silent zero tangent
            n = len(self.states)
            out = _TransformableCell.apply(self, lengths, bool(reverse), x, *states, *params, *inputs)
            return out[0], list(out[1:1 + n])
        if not grad:
            return self.infer(x, states, params, inputs, lengths, reverse)
        y, finals, _ = self.fwd(x, states, params, inputs, lengths, reverse)
        return y, finals

    # ------------------------------------------------------------------------------- autograd
    def _setup_context(self, ctx, inputs, output):
        x, states, params, extra, lengths, reverse = inputs
        _, finals, tape = output
        ctx.mark_non_differentiable(*tape)
        ctx.reverse, ctx.n_params, ctx.has_lengths = bool(reverse), len(params), lengths is not None
        ctx.n_inputs = len(extra)
        # saved through autograd: freed with the graph, and an in-place change of an input (a
        # parameter updated between forward and backward) is reported as for torch's own ops
        ctx.save_for_backward(x, *params, *extra, *tape, *([lengths] if lengths is not None else []))

    def _backward(self, ctx, dy, dfinals, _dtape):
        return (*self._grads(ctx, dy, dfinals), None, None)

    def _grads(self, ctx, dy, dfinals, bwd=None):
        """(dx, dstates, dparams, dinputs) from what _setup_context saved, by the _bwd operator (or `bwd`)."""
        if bwd is None and torch.is_grad_enabled():   # create_graph=True: a gradient of the gradient
            raise RuntimeError(ONCE_DIFFERENTIABLE)
        saved = ctx.saved_tensors         # raises if freed (second backward) or modified in place
        x, rest = saved[0], saved[1:]
        params, rest = list(rest[:ctx.n_params]), rest[ctx.n_params:]
        extra, rest = list(rest[:ctx.n_inputs]), rest[ctx.n_inputs:]
        lengths = rest[-1] if ctx.has_lengths else None
        tape = list(rest[:-1] if ctx.has_lengths else rest)
        B = x.shape[1]
        if dy is None:                    # the output state's size: its sequence in the tape
            dy = x.new_zeros((x.shape[0], B, tape[self.states.index(self.cell.output)].shape[2]))
        dfinals = [x.new_zeros((B, tape[i].shape[2])) if d is None else d for i, d in enumerate(dfinals)]
        return (bwd or self.bwd)(x, params, extra, lengths, ctx.reverse, tape, dy, dfinals)


NO_FORWARD_MODE = ("lstmc layers have no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
                   "torch.autograd.forward_ad): their backward is compiled reverse-mode code; use reverse mode "
                   "(torch.func.grad, vjp, jacrev, or loss.backward())")


class _TransformableCell(torch.autograd.Function):
    """The _fwd/_bwd operators as an autograd.Function with setup_context, for torch.func
    transforms (grad, vjp, jacrev, and vmap over them through the operators' vmap rules)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(ops, lengths, reverse, x, *rest):
        n, m = len(ops.states), len(ops.params)
        y, finals, tape = ops.fwd(x, list(rest[:n]), list(rest[n:n + m]), list(rest[n + m:]), lengths, reverse)
        return (y, *finals, *tape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ops, lengths, reverse, x, *rest = inputs
        n, m = len(ops.states), len(ops.params)
        ops._setup_context(ctx, (x, rest[:n], rest[n:n + m], rest[n + m:], lengths, reverse),
                           (output[0], output[1:1 + n], output[1 + n:]))
        ctx.ops = ops

    @staticmethod
    def backward(ctx, dy, *grads):
        ops = ctx.ops
        n = len(ops.states)
        # torch.func runs every backward with create_graph=True: a second derivative is refused by
        # _TransformableBackward's backward, when (and only when) an outer transform asks for it
        dx, dstates, dparams, dinputs = ops._grads(ctx, dy, list(grads[:n]), bwd=functools.partial(
            _call_backward, ops))
        return (None, None, None, dx, *dstates, *dparams, *dinputs)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(NO_FORWARD_MODE)


def _call_backward(ops, x, params, inputs, lengths, reverse, tape, dy, dfinals):
    out = _TransformableBackward.apply(ops, lengths, reverse, len(params), len(inputs), len(tape), x, *params,
                                       *inputs, *tape, dy, *dfinals)
    n, m = len(ops.states), len(params)
    return out[0], list(out[1:1 + n]), list(out[1 + n:1 + n + m]), list(out[1 + n + m:])


class _TransformableBackward(torch.autograd.Function):
    """The _bwd operator under torch.func: differentiating it again says the layer is once-differentiable."""
    generate_vmap_rule = True

    @staticmethod
    def forward(ops, lengths, reverse, n_params, n_inputs, n_tape, x, *rest):
        params, rest = list(rest[:n_params]), rest[n_params:]
        inputs, rest = list(rest[:n_inputs]), rest[n_inputs:]
        tape, dy, dfinals = list(rest[:n_tape]), rest[n_tape], list(rest[n_tape + 1:])
        dx, dstates, dparams, dinputs = ops.bwd(x, params, inputs, lengths, reverse, tape, dy, dfinals)
        return (dx, *dstates, *dparams, *dinputs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ONCE_DIFFERENTIABLE)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(NO_FORWARD_MODE)


def _no_context(ctx, inputs, output):
    pass


def _refuse_second_order(ctx, *grads):
    raise RuntimeError(ONCE_DIFFERENTIABLE)


@torch.library.custom_op(f"{_NAMESPACE}::packed_lengths", mutates_args=())
def packed_lengths(batch_sizes: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
    """The lengths [B] (int64) of a PackedSequence's rows from its batch_sizes [T], B = batch_sizes[0]
    (`rows`: the B the caller expects, checked). An operator so that torch.compile traces a
    PackedSequence made with enforce_sorted=True (no sorted_indices to read B from): B is then
    `rows`, or an unbacked size known when the graph runs."""
    B = int(batch_sizes[0]) if batch_sizes.numel() else 0
    if rows is not None and rows != B:
        raise ValueError(f"the initial state has {rows} batch rows but the PackedSequence has {B} "
                         f"(its batch_sizes[0])")
    return (torch.arange(B, device=batch_sizes.device)[None, :] < batch_sizes[:, None]).sum(0)


@packed_lengths.register_fake
def _packed_lengths_fake(batch_sizes, rows=None):
    B = torch.library.get_ctx().new_dynamic_size(min=1) if rows is None else rows
    return batch_sizes.new_empty((B,), dtype=torch.int64)


def _vmap_one_at_a_time(opdef):
    """A vmap rule that runs the operator once per batch element and stacks the results (lstmc's
    kernels have no batch-of-problems dimension; for a batch of inputs to one model, folding it into
    the B dimension is faster and is what a caller should do)."""

    def rule(info, in_dims, *args):
        N = info.batch_size

        def pick(a, d, i):
            if isinstance(a, (list, tuple)):
                return [pick(v, dv, i) for v, dv in zip(a, d if isinstance(d, (list, tuple)) else [d] * len(a))]
            return a if d is None or not isinstance(a, torch.Tensor) else a.select(d, i)

        outs = [opdef(*[pick(a, d, i) for a, d in zip(args, in_dims)]) for i in range(N)]

        def stack(parts):
            first = parts[0]
            if isinstance(first, (list, tuple)):
                return [stack([p[j] for p in parts]) for j in range(len(first))]
            return torch.stack(parts)

        def zeros_like(o):
            return [zeros_like(v) for v in o] if isinstance(o, (list, tuple)) else 0

        result = stack(outs)
        return tuple(result), tuple(zeros_like(o) for o in outs[0])

    return rule
