"""The lowered Program: the data every backend renders, with a printer (`text`), a checker
(`verify`) and the sequence decisions every backend shares (docs/design.md, "Lowering").

A Program is one step of the cell, forward and backward, planned as GEMM phases with fused
pointwise blocks between them, plus what the time loop around the step must agree on:

  past_length  what happens to a batch row past its length, per kind of buffer;
  dy_state     the state whose incoming adjoint receives dy at every step (the output state);
  dxp_alias    the GEMM group whose product adjoints equal the input products' adjoints slot for
               slot (the LSTM: d(W_i x) = d(U_i h)), so dXP need not be stored (None: no group);
  dp_shared    vector parameter -> the parameter whose gradient is the same sum (the LSTM's b_hi
               and b_ii): backends accumulate one sum and copy it;
  step_only    the saved values that only this step's forward reads (a reduction's operand: the
               backward step never reads it, and a reduction has no weight gradient), so a backend
               may keep them in one [1, B, n] buffer reused at every step instead of the [T, B, n] tape.
               (Likewise a reduction group's product adjoints, drp: read only by its own step's
               reduction, never by a weight gradient.)
  row_values   the saved values that are one number per row (made of reductions' results and
               constants only: layernorm's sqrt(var + eps)), so a backend may keep [T, B, 1]
               instead of the same number H times.

These are decided here once (`decide`); renderers, hosts and the sequence driver read them.

Input slots (`input_mats`, the column slots of the hoisted XP [T, B, nx*H]), in this order: the
products `W @ x`, then each extra input's products `V @ u` (in declaration order), then the extra
inputs read element-wise (`keep`: the input itself; `dt`: broadcast over H). `input_segments()`
lists them; lstmc/backends/sequence.py fills XP and scatters dXP back (dW, dx, dV, du, dkeep, ddt).

Value names (`var` keys) used in blocks (their table, with each local's prefix, is lstmc/names.py):
  ('xp', M)          input product M @ x_t              ('rp', g, M)   recurrent product M @ v_g
  ('s1', s)          new state s'                        ('sv', name)   a value saved in the tape
  ('t', name)        a temporary inside/between blocks   ('ds1', s)     adjoint of s' (input to a bwd step)
  ('dv', g)          adjoint of group g's operand, from a transposed GEMM
  ('drp', g, M), ('dxp', M), ('ds', s), ('dp', p)   adjoints written by backward blocks
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ir
from .ir import Node, var, walk
from .names import VALUES
from .ops import REDUCTIONS
from .spec import Cell

__all__ = ["Program", "Block", "Gemm", "Let", "Group", "ProgramError", "PAST_LENGTH", "describe", "decide"]

# What a step does to a batch row past its length (t >= length[b]), per kind of value it writes.
# "keep": the value before the step stays; "zero": 0 is written; "pass": the incoming adjoint
# passes through unchanged. Every backend follows this table (docs/design.md, "Sequence semantics").
PAST_LENGTH = {
    "s1": "keep",     # forward: the state is kept (a length-0 row returns its initial state)
    "y": "zero",      # forward: the output is 0
    "sv": "zero",     # forward: the tape's saved values are 0 (never read; finite for the GEMMs)
    "ds": "pass",     # backward: the adjoint of the state before the step is the incoming one
    "drp": "zero",    # backward: product adjoints are 0, so the whole-sequence weight GEMMs and
    "dxp": "zero",    #           the input gradient get nothing from the row
    "dp": "zero",     # backward: the row adds nothing to the vector parameters' gradients
}

# var kind -> (arity of its key after the kind, meaning): the naming table's VALUES (lstmc/names.py)
KINDS = {k: (v.arity, v.meaning) for k, v in VALUES.items()}


class ProgramError(ValueError):
    """A Program that breaks an invariant the backends rely on (a bug in lowering, never user input)."""


@dataclass(frozen=True)
class Let:
    key: tuple          # the var key this assignment defines
    expr: Node          # IR over leaves and earlier lets' vars
    buffer: bool        # True: an array that outlives the block (state, tape, GEMM operand, output)


@dataclass(frozen=True)
class Block:
    """Fused pointwise work of one phase: straight-line lets, elementwise over [B, size] (size "H",
    or a declared size: a phase whose values have several sizes is one block per size, see
    docs/design.md, "Sizes")."""
    phase: int
    lets: tuple[Let, ...]
    size: str = "H"


@dataclass(frozen=True)
class Gemm:
    """One matrix product per step. Forward: out[:, slot j] = A @ mats[j]^T (A is [B, H]).
    Backward: out = concat(A slots) @ concat(mats) (A is [B, k*H], out [B, H]).
    A reduction stage (`reduce` "mean" or "sum", mats ("mean",) or ("sum",)) is the product with
    the constant [H, H] matrix J/H or J, computed as what it is: the row's mean or sum, broadcast;
    the matrix is symmetric, so backward is the same reduction of the adjoint."""
    group: int
    a: tuple[Node, ...]      # leaf nodes whose values form A's column slots
    mats: tuple[str, ...]
    out: tuple[Node, ...]    # the var leaves this GEMM defines
    transposed: bool         # False: forward (A @ W^T), True: backward (dA @ W)
    reduce: str | None = None
    heads: int = 1           # `heads N`: the matrices are block-diagonal, multiplied head by head


@dataclass(frozen=True)
class Group:
    """A recurrent GEMM group: operand v (a state or a saved value) times each matrix in `mats`;
    or, with `reduce`, a reduction of v over the hidden axis (mats is then (reduce,), no weight)."""
    index: int
    operand: Node            # state(s) or var('sv', name)
    mats: tuple[str, ...]
    phase: int
    reduce: str | None = None
    rows: str = "H"          # the size of each product (its matrices' rows; a reduction: the operand's)
    cols: str = "H"          # the operand's size (the matrices' columns)
    heads: int = 1           # `heads N`: each matrix is N diagonal [H/N, H/N] blocks, multiplied per head


@dataclass
class Program:
    """The lowered step, shared by every backend. See the module docstring for the value names."""
    cell: Cell
    input_mats: tuple[str, ...]
    groups: tuple[Group, ...]
    fwd: tuple                 # Block | Gemm, in execution order
    bwd: tuple
    saved: tuple[tuple[str, Node], ...]   # (name, forward node) kept in the tape at every step
    vector_params: tuple[str, ...]
    dxp_alias: int | None = None
    dp_shared: dict = field(default_factory=dict)
    past_length: dict = field(default_factory=lambda: dict(PAST_LENGTH))
    saved_sizes: dict = field(default_factory=dict)     # saved value -> its size name
    step_only: tuple[str, ...] = ()                      # saved values no backward reads (see `decide`)
    row_values: tuple[str, ...] = ()                     # saved values that are one number per row

    @property
    def states(self):
        return self.cell.states

    def state_size(self, s: str) -> str:
        """A state's size name ("H", or "P" for `state h[P]`)."""
        return self.cell.state_size(s)

    def extents(self, H: int, sizes: dict | None = None) -> dict:
        """{size name: number} at run time: H and every declared size (`sizes`, read off the
        parameters by the backends)."""
        return {"H": H, **{k: int(v) for k, v in (sizes or {}).items()}}

    def size_of_key(self, key: tuple) -> str | None:
        """The size of a value of the step by its var key (None for a temporary 't': its expression's)."""
        kind = key[0]
        if kind in ("s1", "ds1", "ds"):
            return self.state_size(key[1])
        if kind in ("xp", "dxp"):
            return "H"
        if kind in ("rp", "drp"):
            return self.groups[key[1]].rows
        if kind == "dv":
            return self.groups[key[1]].cols
        if kind == "dp":
            return self.cell.param_sizes.get(key[1], ("H",))[0]
        if kind == "sv":
            return self.saved_sizes.get(key[1], "H")
        return None

    def tape_shape(self, name: str, T: int, B: int, n: int, compact: bool) -> tuple:
        """The [T, B, n] array of saved value `name` (n: its size's number); `compact` (a backend
        that uses step_only and row_values: numba) gives a step-only value one row, reused every
        step, and a row value one column. The operators' fake tape (torch_ops) follows this too."""
        if not compact:
            return (T, B, n)
        return (1 if name in self.step_only else T, B, 1 if name in self.row_values else n)

    @property
    def dy_state(self) -> str:
        """The state whose incoming adjoint receives dy at every step."""
        return self.cell.output

    @property
    def weight_groups(self) -> tuple[Group, ...]:
        """The groups that multiply learned matrices (not reductions)."""
        return tuple(g for g in self.groups if g.reduce is None)

    @property
    def x_mats(self) -> tuple[str, ...]:
        """The input slots that multiply x (the W parameters)."""
        return tuple(m for m in self.input_mats if self.cell.params.get(m) == "W")

    def input_segments(self) -> list[tuple]:
        """The input slots as contiguous segments (source, slot names, direct, first slot):
        source None is x; direct False: products of the source with the slots' matrices; direct
        True: the extra input itself (one slot, named after it)."""
        segs: list[tuple] = []
        for j, m in enumerate(self.input_mats):
            direct = m in self.cell.inputs
            src = m if direct else self.cell.param_inputs.get(m)
            if segs and segs[-1][0] == src and not direct and not segs[-1][2]:
                segs[-1] = (src, segs[-1][1] + (m,), False, segs[-1][3])
            else:
                segs.append((src, (m,), direct, j))
        return segs

    def dp_sums(self) -> tuple[str, ...]:
        """The vector parameters whose gradients are accumulated (the others copy one of these)."""
        return tuple(p for p in self.vector_params if p not in self.dp_shared)

    def text(self) -> str:
        """A readable, canonical description (used by `lstmc show` and as part of cache keys)."""
        states = ", ".join(s + ("" if self.state_size(s) == "H" else f"[{self.state_size(s)}]") for s in self.cell.states)
        out = [f"program {self.cell.name}", f"  states: {states}   output: {self.cell.output}"]
        out.append("  params: " + ", ".join(f"{p}:{k}" for p, k in self.cell.params.items()))
        if self.cell.sized:
            out.append("  sizes: " + ", ".join(f"{p} {self.cell.param_dims(p)}" for p in self.cell.params)
                       + "; groups: " + ", ".join(f"{g.index} [{g.rows}] <- [{g.cols}]" for g in self.groups)
                       + "".join(f"; saved {n} [{z}]" for n, z in self.saved_sizes.items() if z != "H"))
        if self.cell.heads > 1:
            out.append(f"  heads: {self.cell.heads} (every U block-diagonal, [{self.cell.heads}, H/{self.cell.heads}, "
                       f"H/{self.cell.heads}]: multiplied head by head, {self.cell.heads}x fewer FLOPs than dense)")
        if self.cell.inits:
            out.append("  init: " + ", ".join(f"{p}={v}" for p, v in self.cell.inits.items()))
        if self.cell.inputs:
            out.append("  extra inputs: " + ", ".join(
                f"{u} [T, B{'' if k is None else ', ' + k}]" for u, k in self.cell.inputs.items())
                + ("   sizes: " + ", ".join(self.cell.sizes) if self.cell.sizes else ""))
        gemms = [f"{src or 'x'} @ [{', '.join(names)}]^T" for src, names, direct, _ in self.input_segments()
                 if not direct]
        out.append("  input GEMM (hoisted, all T*B rows): xp = " + "; ".join(gemms) if gemms else "  input GEMM: none")
        direct = [src + ("" if self.cell.inputs[src] else " (broadcast over H)")
                  for src, _, d, _ in self.input_segments() if d]
        if direct:
            out.append("  inputs read per step as xp slots: " + ", ".join(direct))
        out.append("  saved per step: " + (", ".join(n for n, _ in self.saved) or "(states only)"))
        for title, stages in (("forward step", self.fwd), ("backward step", self.bwd)):
            out.append(f"  {title}:")
            for st in stages:
                out.extend("    " + line for line in describe(st))
        out.append("  after the loop: dW = dxp^T @ x, dU_g = drp_g^T @ v_g, dx = dxp @ W (whole-sequence GEMMs)"
                   + ("; dV = dxp^T @ u, du = dxp @ V" if any(k == "V" for k in self.cell.params.values()) else "")
                   + ("; an input read per step gets its slot's dxp (summed over H when it is [T, B])"
                      if any(d for _, _, d, _ in self.input_segments()) else ""))
        out.append("  decisions:")
        out.append("    rows past their length: " + ", ".join(f"{k} {v}" for k, v in self.past_length.items()))
        out.append(f"    dy seeds the adjoint of {self.dy_state}'")
        out.append("    dxp " + (f"is drp[{self.dxp_alias}] slot for slot (not stored)" if self.dxp_alias is not None
                                  else "is stored"))
        if self.dp_shared:
            out.append("    shared gradient sums: " + ", ".join(f"{p} = {q}" for p, q in self.dp_shared.items()))
        if self.step_only:
            out.append("    kept for one step only (no backward reads them): " + ", ".join(self.step_only))
        if self.row_values:
            out.append("    one number per row (made of reductions and constants): " + ", ".join(self.row_values))
        return "\n".join(out)

    def verify(self) -> "Program":
        """Check the invariants every backend relies on; raise ProgramError naming the first broken one."""
        _verify(self)
        return self


def describe(stage) -> list[str]:
    if isinstance(stage, Gemm) and stage.reduce:
        a, out = ir.to_text(stage.a[0]), ir.to_text(stage.out[0])
        return [f"REDUCE {out} = {stage.reduce}({a}) over each row's hidden axis, broadcast"]
    if isinstance(stage, Gemm):
        a = ", ".join(ir.to_text(n) for n in stage.a)
        per = f", per head ({stage.heads} heads)" if stage.heads > 1 else ""
        if stage.transposed:
            return [f"GEMM {ir.to_text(stage.out[0])} = [{a}] @ [{'; '.join(stage.mats)}]{per}"]
        outs = ", ".join(ir.to_text(n) for n in stage.out)
        return [f"GEMM [{outs}] = {a} @ [{', '.join(stage.mats)}]^T{per}"]
    lines = [f"block {stage.phase}" + ("" if stage.size == "H" else f" [B, {stage.size}]") + ":"]
    for let in stage.lets:
        lines.append(f"  {ir.var_name(let.key)}{'' if let.buffer else ' (local)'} = {ir.to_text(let.expr)}")
    return lines


# ------------------------------------------------------------------------------------- decisions

def decide(program: Program) -> Program:
    """Fill in the decisions that follow from the plan (aliases, shared sums); returns `program`."""
    adj = {let.key: let.expr for st in program.bwd if isinstance(st, Block) for let in st.lets}
    program.dxp_alias = None
    for g in program.weight_groups:
        if program.input_mats and g.rows == "H" and len(g.mats) == len(program.input_mats) and all(
                adj.get(("dxp", m)) is var("drp", g.index, gm) for m, gm in zip(program.input_mats, g.mats)):
            program.dxp_alias = g.index
            break
    first: dict[Node, str] = {}
    program.dp_shared = {}
    for p in program.vector_params:
        expr = adj.get(("dp", p))
        if expr is None:
            continue
        q = first.setdefault(expr, p)       # interned IR: the same sum is the same node
        if q != p:
            program.dp_shared[p] = q
    read = _read_after_forward(program)
    program.step_only = tuple(n for n, _ in program.saved if ("sv", n) not in read)
    operands = {g.operand.attr for g in program.groups if g.operand.op == "var"}
    per_row = _per_row(program)
    program.row_values = tuple(n for n, node in program.saved if n not in program.step_only
                               and ("sv", n) not in operands and per_row[node])
    return program


def _per_row(program: Program) -> dict:
    """{saved node (and each node under it): is it one number per row, made of reductions'
    results and constants and of nothing else?} One walk over all the saved values' DAG."""
    row: dict[Node, bool] = {}
    const: dict[Node, bool] = {}        # made of constants only
    for n in walk([node for _, node in program.saved]):
        if n.op == "const":
            row[n], const[n] = False, True
        elif n.op == "var" and n.attr[0] == "rp" and program.groups[n.attr[1]].reduce:
            row[n], const[n] = True, False
        elif n.is_leaf:
            row[n], const[n] = False, False
        else:
            const[n] = all(const[a] for a in n.args)
            row[n] = all(row[a] or const[a] for a in n.args) and any(row[a] for a in n.args)
    return row


def _read_after_forward(program: Program) -> set:
    """The var keys read after the forward step: by the backward step (its blocks' expressions and
    its GEMMs' operands) and by the weight gradients after the loop (the weight groups' operands)."""
    roots = [let.expr for st in program.bwd if isinstance(st, Block) for let in st.lets]
    roots += [a for st in program.bwd if isinstance(st, Gemm) for a in st.a]
    return ({n.attr for n in walk(roots) if n.op == "var"}
            | {g.operand.attr for g in program.weight_groups if g.operand.op == "var"})


# ---------------------------------------------------------------------------------------- verify

def _fail(msg: str):
    raise ProgramError(f"invalid Program: {msg}")


def _verify(p: Program) -> None:
    cell = p.cell
    params = cell.params
    for m in p.input_mats:
        if params.get(m) not in ("W", "V") and m not in cell.inputs:
            _fail(f"input slot {m} is neither a W or V parameter nor an extra input of cell {cell.name}")
    seen = [(src, d) for src, _, d, _ in p.input_segments()]
    if len(set(seen)) != len(seen) or seen != sorted(seen, key=lambda sd: (
            sd[0] is not None, sd[1], list(cell.inputs).index(sd[0]) if sd[0] is not None else -1)):
        _fail(f"input slots {p.input_mats} are not x's products, then each input's, then the direct inputs")
    for v in p.vector_params:
        if params.get(v) != "b":
            _fail(f"vector parameter {v} is not a b parameter of cell {cell.name}")
    for i, g in enumerate(p.groups):
        if g.index != i:
            _fail(f"group {i} has index {g.index}")
        bad = [m for m in g.mats if params.get(m) != "U"] if g.reduce is None else (
            [] if g.mats == (g.reduce,) and g.reduce in REDUCTIONS else list(g.mats))
        if bad:
            _fail(f"group {i} multiplies {bad}, which are not U parameters")
        if not (g.operand.op == "state" or (g.operand.op == "var" and g.operand.attr[0] == "sv")):
            _fail(f"group {i}'s operand {ir.to_text(g.operand)} is neither a state nor a saved value")
    saved = [n for n, _ in p.saved]
    if len(set(saved)) != len(saved):
        _fail(f"saved names repeat: {saved}")
    fwd_in = {("xp", m) for m in p.input_mats}
    fwd_out = _check_stages(p, p.fwd, fwd_in, "forward")
    for s in cell.states:
        if ("s1", s) not in fwd_out:
            _fail(f"the forward step never defines {s}'")
    for n in saved:
        if ("sv", n) not in fwd_out:
            _fail(f"saved value {n} is never defined by the forward step")
    bwd_in = {("ds1", s) for s in cell.states} | {("sv", n) for n in saved} | {("s1", s) for s in cell.states}
    bwd_out = _check_stages(p, p.bwd, bwd_in, "backward")
    for s in cell.states:
        if ("ds", s) not in bwd_out:
            _fail(f"the backward step never defines the adjoint of {s}")
    for g in p.groups:
        for m in g.mats:
            if ("drp", g.index, m) not in bwd_out:
                _fail(f"the backward step never defines drp[{g.index},{m}]")
    if p.dxp_alias is None:
        for m in p.input_mats:
            if ("dxp", m) not in bwd_out:
                _fail(f"the backward step never defines dxp[{m}]")
    elif not 0 <= p.dxp_alias < len(p.groups):
        _fail(f"dxp_alias {p.dxp_alias} names no group")
    if p.step_only:
        read = _read_after_forward(p)
        wrong = [n for n in p.step_only if n not in saved or ("sv", n) in read]
        if wrong:
            _fail(f"step-only values {wrong} are not saved values, or backward (or a weight gradient) reads them")
    per_row, nodes = _per_row(p), dict(p.saved)
    wrong = [n for n in p.row_values if n not in nodes or n in p.step_only or not per_row[nodes[n]]]
    if wrong:
        _fail(f"row values {wrong} are not saved values made of reductions and constants only")
    for q, r in p.dp_shared.items():
        if q not in p.vector_params or r not in p.vector_params or r in p.dp_shared:
            _fail(f"shared gradient sum {q} = {r} does not name two vector parameters (the second accumulated)")
    if set(p.past_length) != set(PAST_LENGTH) or not set(p.past_length.values()) <= {"keep", "zero", "pass"}:
        _fail(f"past_length must say keep/zero/pass for {sorted(PAST_LENGTH)}, got {p.past_length}")
    if p.dy_state not in cell.states:
        _fail(f"dy seeds {p.dy_state}, which is not a state")


def _check_stages(p: Program, stages, available: set, direction: str) -> set:
    """Every value a stage reads is defined before it (an input of the step, an earlier let, or an
    earlier GEMM's output); every key is defined once and has a known kind. Returns what the step defines."""
    defined = set(available)
    made = set()
    states, params = set(p.cell.states), set(p.cell.params)
    for st in stages:
        if isinstance(st, Gemm):
            if (not 0 <= st.group < len(p.groups) or st.mats != p.groups[st.group].mats
                    or st.reduce != p.groups[st.group].reduce):
                _fail(f"{direction} GEMM of group {st.group} multiplies {st.mats}, not its group's matrices")
            if st.transposed != (direction == "backward"):
                _fail(f"{direction} GEMM of group {st.group} has the wrong orientation")
            for a in st.a:
                if not (a.op == "state" and a.attr in states) and not (a.op == "var" and a.attr in defined):
                    _fail(f"{direction} GEMM of group {st.group} reads {ir.to_text(a)} before it is defined")
            for o in st.out:
                defined.add(o.attr)
                made.add(o.attr)
            continue
        if not isinstance(st, Block):
            _fail(f"a {direction} stage is a {type(st).__name__}, not a Block or a Gemm")
        for let in st.lets:
            kind = let.key[0]
            if kind not in KINDS or len(let.key) != KINDS[kind][0] + 1:
                _fail(f"{direction} block {st.phase} defines {let.key!r}, not a known kind of value")
            if let.key in made:
                _fail(f"{direction} step defines {ir.var_name(let.key)} twice")
            size = p.size_of_key(let.key)
            if size is not None and size != st.size:
                _fail(f"{direction} block {st.phase} of size {st.size} defines {ir.var_name(let.key)} of size {size}")
            for n in walk([let.expr]):
                if n.op == "var" and n.attr not in defined:
                    _fail(f"{direction} block {st.phase}: {ir.var_name(let.key)} reads {ir.var_name(n.attr)} "
                          f"before it is defined")
                if n.op == "state" and n.attr not in states:
                    _fail(f"{direction} block {st.phase} reads unknown state {n.attr}")
                if n.op == "param" and n.attr not in params:
                    _fail(f"{direction} block {st.phase} reads unknown parameter {n.attr}")
                if n.op in ("matvec", "input", *REDUCTIONS):
                    _fail(f"{direction} block {st.phase} holds an unlowered {n.op}: products belong to GEMMs")
            defined.add(let.key)
            made.add(let.key)
    return made
