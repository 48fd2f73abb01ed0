"""The `torch` backend: the lowered Program rendered as eager PyTorch ops (any device).

It renders the step's blocks and GEMMs into a Python module (templates/torch_step.py.j2) and runs
it under the shared SequenceDriver. Because it is plain PyTorch, autograd through its forward is an
independent check of the symbolically derived backward, and it is the "hand-written PyTorch"
baseline of the benchmarks. It accepts NumPy arrays (returning NumPy) or torch tensors (returning
tensors, differentiable by autograd).
"""

from __future__ import annotations

import numpy as np
import torch

from ..ir import Node, state, var
from ..lower import Block, Gemm, Program
from .base import CompiledCell, Gradients, check_flags
from .sequence import ArrayOps, SequenceDriver
from .render import check_spelling, is_batched, key_name, render_expr, render_template, value_name

SPELL = {
    "exp": "torch.exp({0})",
    "log": "torch.log({0})",
    "sigmoid": "torch.sigmoid({0})",
    "tanh": "torch.tanh({0})",
    "relu": "torch.relu({0})",
    "softplus": "F.softplus({0})",
    "step": "torch.sign(torch.relu({0}))",
    "sqrt": "torch.sqrt({0})",
    "abs": "torch.abs({0})",
    "sign": "torch.where(torch.isnan({0}), {0}, torch.sign({0}))",   # torch.sign(NaN) is 0; NaN as NumPy
    "logsigmoid": "F.logsigmoid({0})",
    "max": "torch.where({0} >= {1}, {0}, {1})",     # ties (and NaN) as the reference: not torch.maximum
    "min": "torch.where({0} <= {1}, {0}, {1})",
    "gt": "({0} > {1})",          # a boolean mask: where() selects with it; arithmetic promotes it
    "ge": "({0} >= {1})",
    "lt": "({0} < {1})",
    "le": "({0} <= {1})",
    # DT: the step's dtype (its prologue); a constant branch is a tensor of it, not torch's default
    "where": ("torch.where(torch.as_tensor({0}) != 0, torch.as_tensor({1}, dtype=DT), "
              "torch.as_tensor({2}, dtype=DT))"),
}
check_spelling(SPELL, "torch")


class TorchOps(ArrayOps):
    """torch's array operations (any device)."""
    name = "torch"

    def __init__(self, dtype):
        self.dtype = dtype

    def zeros(self, shape, like=None):
        return torch.zeros(shape, dtype=self.dtype, device=like.device if like is not None else None)

    def where(self, m, a, b):
        return torch.where(m, a, b)

    def cat(self, arrays, axis):
        return torch.cat(arrays, dim=axis)

    def stack(self, arrays):
        return torch.stack(arrays)

    def take_rows(self, a, idx):
        idx_t = torch.as_tensor(idx, device=a.device)
        return a[idx_t, torch.arange(a.shape[1], device=a.device)[None, :]]

    def sum0(self, a):
        return a.sum(dim=0)

    def mask(self, m, like=None):
        return torch.as_tensor(m, device=like.device if like is not None else None)

    def copy(self, a):
        return a.clone()

    def mm(self, a, b, out=None):
        return a @ b if out is None else torch.mm(a, b, out=out)


def _extent(size: str) -> str:
    """The local holding a size's number in the generated step (H, or Z_P for `size P`)."""
    return "H" if size == "H" else f"Z_{size}"


def _sized_prologue(program: Program, first: str) -> list[str]:
    """For a cell with states of other sizes: H and each size from P['dims'], and a [B, n] tensor per
    size for constant-only values to take their shape from."""
    if not program.cell.sized:
        return [f"B, H = {first}.shape", f"DT = {first}.dtype"]
    out = [f"B = {first}.shape[0]", "H = P['dims']['H']", f"DT = {first}.dtype"]
    for z in program.cell.sizes:
        out.append(f"{_extent(z)} = P['dims'][{z!r}]")
    for z in ("H", *program.cell.sizes):
        out.append(f"LIKE_{z} = {first}.new_empty((B, {_extent(z)}))")
    return out


def _block_lines(program: Program, stages, like: str) -> list[str]:
    """The stages as torch statements; `like` is a [B, H] local whose dtype and device constant-only
    values take (a Python float would become torch's default dtype, float32, in a float64 program;
    a cell with sized states: LIKE_<size> of the block's size)."""
    lines = []
    for st in stages:
        if isinstance(st, Block):
            lines.append(f"# block {st.phase}" + ("" if st.size == "H" else f" [B, {st.size}]"))
            for let in st.lets:
                rhs = render_expr(let.expr, SPELL)
                if not is_batched(let.expr):
                    rhs = f"_bh({rhs}, {like if not program.cell.sized else 'LIKE_' + st.size})"
                lines.append(f"{key_name(let.key)} = {rhs}")
        elif isinstance(st, Gemm) and st.reduce:     # mean/sum over the row, broadcast (its adjoint too)
            a = value_name(st.a[0])
            lines.append(f"{value_name(st.out[0])} = {a}.{st.reduce}(1, keepdim=True).expand_as({a})")
        elif isinstance(st, Gemm):
            k = len(st.mats)
            if st.transposed:
                a = ", ".join(value_name(n) for n in st.a)
                a = f"torch.cat([{a}], 1)" if len(st.a) > 1 else a
                prod = f"{a} @ P['U{st.group}']" if st.heads == 1 else f"heads_nn({a}, P['U{st.group}'], {k})"
                lines.append(f"{value_name(st.out[0])} = {prod}  # [{'; '.join(st.mats)}]"
                             + (f", {st.heads} heads" if st.heads > 1 else ""))
            else:
                a = value_name(st.a[0])
                prod = f"{a} @ P['U{st.group}'].T" if st.heads == 1 else f"heads_nt({a}, P['U{st.group}'], {k})"
                lines.append(f"rp{st.group} = {prod}  # [{', '.join(st.mats)}]"
                             + (f", {st.heads} heads" if st.heads > 1 else ""))
                r = _extent(program.groups[st.group].rows)
                for j, o in enumerate(st.out):
                    lines.append(f"{value_name(o)} = rp{st.group}[:, {j} * {r}:{j + 1} * {r}]")
    return lines


def render(program: Program, key: str = "") -> str:
    """The generated module's source text."""
    cell = program.cell
    vec = [p for p in program.vector_params]
    first = cell.states[0]
    fwd_pro = [f"{value_name(state(s))} = S[{s!r}]" for s in cell.states]
    fwd_pro += _sized_prologue(program, value_name(state(first)))
    fwd_pro += [f"{value_name(Node('param', (), p))} = P[{p!r}]" for p in vec]
    # XP_T: the step's input products; upper case, so no local (xp_<name> for an input or matrix
    # named t, say) can shadow it (lstmc/names.py's prefixes are lower case)
    fwd_pro += [f"{value_name(var('xp', m))} = XP_T[:, {j} * H:{j + 1} * H]" for j, m in enumerate(program.input_mats)]
    fwd_ret = ("{" + ", ".join(f"{s!r}: {key_name(('s1', s))}" for s in cell.states) + "}, {"
               + ", ".join(f"{n!r}: {key_name(('sv', n))}" for n, _ in program.saved) + "}")
    bwd_pro = []
    for s in cell.states:
        bwd_pro += [f"{value_name(state(s))} = S[{s!r}]", f"{key_name(('s1', s))} = S1[{s!r}]",
                    f"{key_name(('ds1', s))} = dS1[{s!r}]"]
    bwd_pro += _sized_prologue(program, value_name(state(first)))
    bwd_pro += [f"{key_name(('sv', n))} = SV[{n!r}]" for n, _ in program.saved]
    bwd_pro += [f"{value_name(Node('param', (), p))} = P[{p!r}]" for p in vec]
    dxp = (f"torch.cat([{', '.join(key_name(('dxp', m)) for m in program.input_mats)}], 1)"
           if program.input_mats else "None")
    drp = "{" + ", ".join(
        f"{g.index}: torch.cat([{', '.join(key_name(('drp', g.index, m)) for m in g.mats)}], 1)"
        for g in program.groups) + "}"
    bwd_ret = ("{" + ", ".join(f"{s!r}: {key_name(('ds', s))}" for s in cell.states) + "}, " + dxp + ", " + drp
               + ", {" + ", ".join(f"{p!r}: {key_name(('dp', p))}" for p in vec) + "}")
    return render_template("torch_step.py.j2", cell=cell.name, key=key, fwd_prologue=fwd_pro,
                           fwd_body=_block_lines(program, program.fwd, value_name(state(first))), fwd_return=fwd_ret,
                           bwd_prologue=bwd_pro, bwd_body=_block_lines(program, program.bwd, value_name(state(first))),
                           bwd_return=bwd_ret)


def load_module(source: str, name: str):
    """Compile generated source into a fresh module namespace (the source is ours, built from
    validated identifiers; spec text itself is never executed)."""
    import types

    mod = types.ModuleType(name)
    exec(compile(source, f"<lstmc {name}>", "exec"), mod.__dict__)  # noqa: S102 - generated code
    return mod


class TorchCell(CompiledCell):
    backend = "torch"

    def __init__(self, program: Program, dtype: str = "float64", key: str = ""):
        super().__init__(program, dtype, key)
        self.torch_dtype = getattr(torch, self.dtype)
        self.source = render(program, key)
        self.module = load_module(self.source, f"torch_{program.cell.name}")
        self.ops = TorchOps(self.torch_dtype)
        self.driver = SequenceDriver(program, self.ops, self.module.fwd_step, self.module.bwd_step)

    def _to_torch(self, a):
        """A NumPy array of this program's dtype as a tensor (zero-copy when it can be); anything else is
        passed on as it is, for check_inputs to name what is wrong with it (dtype, type)."""
        if not isinstance(a, np.ndarray) or a.dtype != self.np_dtype or not a.dtype.isnative:
            return a
        return torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))   # 0-d stays 0-d

    def forward(self, x, params, state=None, lengths=None, reverse=False, need_tape=True, inputs=None):
        numpy_in = isinstance(x, np.ndarray)
        x = self._to_torch(x)
        params = {k: self._to_torch(v) for k, v in params.items()} if isinstance(params, dict) else params
        state = {k: self._to_torch(v) for k, v in state.items()} if isinstance(state, dict) else state
        inputs = {k: self._to_torch(v) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs
        T, B, I, H, lengths = self.check_inputs(x, params, state, lengths, inputs)
        check_flags(reverse=reverse, need_tape=need_tape)
        for nm, t in ([(f"params['{k}']", v) for k, v in params.items()]
                      + [(f"state['{k}']", v) for k, v in (state or {}).items()]
                      + [(f"inputs['{k}']", v) for k, v in (inputs or {}).items()]):
            if t.device != x.device:
                raise ValueError(f"{nm} is on {t.device} but x is on {x.device}: move all arguments to one device "
                                 f"({nm}.to('{x.device}'))")
        y, st, tape = self.driver.forward(x, params, state, lengths, bool(reverse), need_tape, T, B, I, H, inputs,
                                          self.dims(params, inputs, H))
        if tape is not None:
            tape.owner = self
        if tape is not None:
            tape.extra["numpy"] = numpy_in
        if numpy_in:
            y = y.detach().numpy()
            st = {k: v.detach().numpy() for k, v in st.items()}
        return y, st, tape

    def backward(self, tape, dy, dstate=None):
        dy = self._to_torch(dy)
        dstate = {k: self._to_torch(v) for k, v in dstate.items()} if isinstance(dstate, dict) else dstate
        self.check_backward(tape, dy, dstate)
        dev = tape.x.device
        for nm, t in [("dy", dy)] + [(f"dstate['{k}']", v) for k, v in (dstate or {}).items()]:
            if t.device != dev:
                raise ValueError(f"{nm} is on {t.device} but forward ran on {dev}: move it there ({nm}.to('{dev}'))")
        grads = self.driver.backward(tape, dy, dstate)
        dx, ds, dp = grads
        di = grads.dinputs
        if tape.extra.get("numpy"):
            dx = dx.detach().numpy()
            ds = {k: v.detach().numpy() for k, v in ds.items()}
            dp = {k: v.detach().numpy() for k, v in dp.items()}
            di = {k: v.detach().numpy() for k, v in di.items()}
        return Gradients(dx, ds, dp, di)
