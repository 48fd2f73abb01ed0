"""The Triton renderer: the lowered Program -> a Python module of @triton.jit kernels
(templates/triton_cell.py.j2, the kernel shells), which imports its math from prelude.py.

It spells ops (SPELL, one row per primitive) and places loads and stores; it makes no
mathematical decisions. Every kernel works on tiles of [BB batch rows x BH hidden units],
elementwise code is the Program's blocks rendered as tile expressions, and the recurrent GEMMs are
`tl.dot` (prelude `_dot`) over those tiles. Two designs, both from the same stages (lstmc/lower.py):

- **step** kernels (`fwd_step{i}`, `bwd_step{i}`): the host loops over time; per step it launches
  one kernel per *segment*, a segment being the recurrent GEMM(s) of one phase followed by the next
  pointwise block as their fused epilogue (the first segment may be a block alone). A program
  computes every gate slot of its hidden tile (`acc` per slot), then runs the block on registers.
  Values that a later segment of the same step reads go through global memory (the tape, or
  per-step scratch `RS*`/`DV*`/`BT_*`), since the next GEMM needs them from every program.
- **persistent** kernels (`fwd_persistent`, `bwd_persistent`): one launch runs the whole time loop;
  one program per BB batch rows owns all H (BH >= H), loads the recurrent weights once into
  registers, and carries the states (forward) or their adjoints (backward) from step to step on
  chip. A multi-phase step needs no grid-wide sync because each program owns whole rows.

Conventions inside kernels: locals and arrays are named by the naming table, lstmc/names.py:
locals s_h, xp_W_i, rp0_U_i, sv_g, dn_h, drp0_U_i, dv0, ...; arrays are upper-case (XP, Y, L, SQ_h,
SV_g, UT0, U0, P_b, dY, DS_h, DSN_h, dXP, dRP0, DP, scratch). Masks: `m2` = valid element,
`live` = valid and t < length[row]. States are stored in the compute type CT (float32 for float32/bfloat16/float16 storage), every
[T, B, *] sequence and the weights in the storage type DT, and `tl.dot` accumulates in CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import Node, var, walk
from ...names import ARRAYS, array_name
from ...lower import Block, Gemm, Program
from ..render import (check_spelling, compile_spec, ident, is_batched, key_name, ops_used, past_value, render_expr,
                      render_template, spelled_functions, value_name)

# storage dtype -> compute dtype (arithmetic, accumulation, states)
STORAGE = {"float32": "float32", "float64": "float64", "bfloat16": "float32", "float16": "float32"}

# One row per primitive: its Triton math is either the row itself (a `tl` call) or a @triton.jit
# function of prelude.py that the row names (stable forms, no overflow warnings); nowhere else.
SPELL = {
    "exp": "tl.exp({0})",
    "log": "tl.log({0})",
    "sigmoid": "_sigmoid({0})",
    "tanh": "_tanh({0})",
    "relu": "_relu({0})",
    "softplus": "_softplus({0})",
    "step": "_step({0})",
    "sqrt": "tl.sqrt({0})",
    "abs": "tl.abs({0})",
    "sign": "_sign({0})",
    "logsigmoid": "_logsigmoid({0})",
    "max": "_max({0}, {1})",
    "min": "_min({0}, {1})",
    "gt": "_gt({0}, {1})",
    "ge": "_ge({0}, {1})",
    "lt": "_lt({0}, {1})",
    "le": "_le({0}, {1})",
    "where": "_where({0}, {1}, {2})",
}
check_spelling(SPELL, "triton")

def prelude_names(program: Program | None = None) -> list[str]:
    """What a generated module imports from prelude.py: the functions SPELL names (for the
    primitives `program` uses, when given), and `_dot`."""
    return sorted(spelled_functions(SPELL, None if program is None else ops_used(program)) | {"_dot"})


def _param_args(program: Program):
    """(vector parameter, its kernel argument P_<name>), in DP row order."""
    return [(p, array_name("P_", p)) for p in program.vector_params]


def const(v) -> str:
    """A number: a Python float when float32 holds it exactly (Triton types those float32, so
    they are exact in both compute types), else a CT scalar so float64 kernels keep every digit."""
    v = float(v)
    if float(np.float32(v)) == v:
        return repr(v)
    return f"tl.full([], {v!r}, CT)"


@dataclass
class KernelMeta:
    """What the host needs to launch one generated kernel."""
    name: str
    direction: str                 # "fwd" | "bwd"
    variant: str                   # "step" | "persistent"
    array_of: dict = field(default_factory=dict)   # pointer argument -> (names.ARRAYS prefix, name or group), in order
    scalars: list[str] = field(default_factory=list)    # runtime integers, in order
    constexprs: list[str] = field(default_factory=list)
    # for the template
    prologue: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    carry: list[str] = field(default_factory=list)
    epilogue: list[str] = field(default_factory=list)
    doc: str = ""

    @property
    def arrays(self) -> list[str]:
        """The pointer arguments, in order."""
        return list(self.array_of)

    @property
    def signature(self) -> str:
        return ", ".join(self.arrays + self.scalars + [f"{c}: tl.constexpr" for c in self.constexprs])

    @property
    def no_specialize(self) -> list[str]:
        # runtime sizes and time indices must never trigger a recompile (Triton specialises ints == 1)
        return [s for s in self.scalars if s != "H"]


@dataclass
class Rendered:
    source: str
    kernels: dict[str, KernelMeta]
    fwd_steps: list[str]                 # step kernels of one forward step, in launch order
    bwd_steps: list[str]
    scratch: dict[str, int]              # step-variant scratch array -> slots (shape [B, slots * H], CT)
    alias: int | None                    # program.dxp_alias: dXP is dRP[alias]
    vec_index: dict[str, int]            # vector parameter -> row of the DP partial sums


def segments(stages) -> list[tuple[list[Gemm], Block | None]]:
    """Split a step into launchable segments: the GEMMs of one phase, then the block they feed."""
    out, pending = [], []
    for st in stages:
        if isinstance(st, Gemm):
            pending.append(st)
        else:
            out.append((pending, st))
            pending = []
    if pending:
        out.append((pending, None))
    return out


def _leaves(expr: Node) -> list[Node]:
    return [n for n in walk([expr]) if n.is_leaf and n.op != "const"]


def _produced(seg) -> set:
    gemms, block = seg
    keys = {o.attr for g in gemms for o in g.out}
    if block is not None:
        keys |= {let.key for let in block.lets}
    return keys


def _read(seg) -> set:
    gemms, block = seg
    keys = set()
    if block is not None:
        keys = {n.attr for let in block.lets for n in _leaves(let.expr) if n.op == "var"}
    return keys


class _Kernel:
    """Builds the lines of one kernel: loads of leaves on first use, the blocks' lets, stores."""

    def __init__(self, program: Program, meta: KernelMeta, alias, vec_index, later: set, persistent: bool):
        self.p = program
        self.m = meta
        self.fwd = meta.direction == "fwd"
        self.persistent = persistent
        self.alias = alias
        self.vec_index = vec_index
        self.later = later          # keys a later step-segment reads (stored to scratch here)
        self.local: set = set()     # leaves (Nodes) already bound to a local of the same name
        self.helpers: set = set()   # other locals already defined (go_*: incoming adjoints, for skipped rows)
        self.dp_acc: dict = {}      # (persistent) vector parameter -> its accumulator
        self.dp_reduced: set = set()   # shared-sum representatives already reduced in this kernel
        self.xslot = {m: j for j, m in enumerate(program.input_mats)}
        self.gslot = {(g.index, m): j for g in program.groups for j, m in enumerate(g.mats)}
        self.gsize = {g.index: len(g.mats) for g in program.groups}
        self.nx = len(program.input_mats)
        self.lines = meta.body

    def arr(self, prefix: str, name=None) -> str:
        """The kernel argument of the naming table's array `prefix` (+ name or group), declared on first use."""
        arg = array_name(prefix, name)
        self.m.array_of.setdefault(arg, (prefix, name))
        return arg

    def emit(self, line: str) -> None:
        self.lines.append(line)

    # ------------------------------------------------------------------------------------ loads
    def tile(self, base: str, row: str | None = None, slots: int = 1, slot: int = 0) -> str:
        """Load expression of the [BB, BH] tile of `base` ([T?, B, slots*H] array) at `slot`."""
        off = f"rows[:, None] * ({slots} * H) + {slot} * H + cols[None, :]" if slots > 1 or slot else "obh"
        r = f"{row} + " if row else ""
        return f"tl.load({base} + {r}{off}, mask=m2, other=0.0).to(CT)"

    def ensure(self, node: Node) -> None:
        """Bind `node` (a leaf) to a local, loading it if it is not one yet."""
        if node in self.local:
            return
        name = value_name(node)
        self.emit(f"{name} = {self.load_expr(node)}")
        self.local.add(node)

    def load_expr(self, node: Node) -> str:
        if node.op == "param":
            return f"tl.load({self.arr('P_', node.attr)} + cols, mask=cmask, other=0.0).to(CT)[None, :]"
        if node.op == "state":
            return self.tile(self.arr('SQ_', node.attr), "rc")
        kind, *rest = node.attr
        if kind == "xp":
            return self.tile(self.arr('XP'), f"ry * {self.nx}", self.nx, self.xslot[rest[0]])
        if kind == "rp":
            g = rest[0]
            return self.tile(self.arr('RS', g), None, self.gsize[g], self.gslot[(g, rest[1])])
        if kind == "s1":
            return self.tile(self.arr('SQ_', rest[0]), "rn")
        if kind == "sv":
            return self.tile(self.arr('SV_', rest[0]), "rt")
        if kind == "t":
            return self.tile(self.arr('BT_', rest[0]))
        if kind == "ds1":
            s = rest[0]
            base = ident("gs_", s) if self.persistent else self.incoming(s)
            if s == self.p.dy_state:
                return f"{base} + {self.tile(self.arr('dY'), 'ry')}"
            return base
        if kind == "dv":
            return self.tile(self.arr('DV', rest[0]))
        if kind == "drp":
            g = rest[0]
            return self.tile(self.arr('dRP', g), f"ry * {self.gsize[g]}", self.gsize[g], self.gslot[(g, rest[1])])
        if kind == "dxp":
            if self.alias is not None:
                g = self.alias
                m = self.p.groups[g].mats[self.xslot[rest[0]]]
                return self.tile(self.arr('dRP', g), f"ry * {self.gsize[g]}", self.gsize[g], self.gslot[(g, m)])
            return self.tile(self.arr('dXP'), f"ry * {self.nx}", self.nx, self.xslot[rest[0]])
        if kind == "ds":
            return self.tile(self.arr('DSN_', rest[0]))
        raise KeyError(node.attr)  # pragma: no cover - lower.py defines no other leaves

    def incoming(self, s: str) -> str:
        """(step kernels) the local holding this step's incoming adjoint of state s, loaded once."""
        name = ident("go_", s)
        if name not in self.helpers:
            self.emit(f"{name} = {self.tile(self.arr('DS_', s))}")
            self.helpers.add(name)
        return name

    # ----------------------------------------------------------------------------------- blocks
    def block(self, block: Block) -> None:
        self.emit(f"# block {block.phase}")
        for let in block.lets:
            for leaf in _leaves(let.expr):
                self.ensure(leaf)
            rhs = render_expr(let.expr, SPELL, const=const)
            if not is_batched(let.expr):
                rhs = f"ZT + {rhs}" if let.expr.is_leaf else f"ZT + ({rhs})"   # [BH] or scalar -> tile
            name = key_name(let.key)
            self.emit(f"{name} = {rhs}")
            self.local.add(var(*let.key))
            self.store(let.key, name, let.expr)

    def past(self, kind: str, new: str, before: str | None = None) -> str:
        """`new` for live rows; for rows past their length what program.past_length says."""
        return f"tl.where(live, {new}, {past_value(self.p, kind, before, '0.0')})"

    def store(self, key: tuple, name: str, expr: Node | None = None) -> None:
        kind = key[0]
        st = "if STORE_TAPE: " if self.persistent else ""   # persistent forward: the tape is optional
        if kind == "s1":
            s = key[1]
            self.ensure(Node("state", (), s))
            w = ident("w_", s)
            old = value_name(Node("state", (), s))
            self.emit(f"{w} = {self.past('s1', name, old)}  # rows past their length: program.past_length")
            self.emit(f"{st}tl.store({self.arr('SQ_', s)} + rn + obh, {w}, mask=m2)")
            if s == self.p.cell.output:
                self.emit(f"tl.store({self.arr('Y')} + ry + obh, {self.past('y', name)}, mask=m2)")
            if self.persistent:
                self.m.carry.append(f"{old} = {w}")
        elif kind == "sv":
            self.emit(f"{st}tl.store({self.arr('SV_', key[1])} + rt + obh, {self.past('sv', name)}, mask=m2)")
        elif kind == "t":
            if key in self.later:
                self.emit(f"tl.store({self.arr('BT_', key[1])} + obh, {name}, mask=m2)")
        elif kind == "drp":
            g, slot, k = key[1], self.gslot[(key[1], key[2])], self.gsize[key[1]]
            self.emit(f"{name} = {self.past('drp', name)}  # rows past their length: program.past_length")
            self.emit(f"tl.store({self.arr('dRP', g)} + ry * {k} + rows[:, None] * ({k} * H) + {slot} * H "
                      f"+ cols[None, :], {name}, mask=m2)")
        elif kind == "dxp":
            if self.alias is None:
                slot = self.xslot[key[1]]
                self.emit(f"{name} = {self.past('dxp', name)}")
                self.emit(f"tl.store({self.arr('dXP')} + ry * {self.nx} + rows[:, None] * ({self.nx} * H) "
                          f"+ {slot} * H + cols[None, :], {name}, mask=m2)")
        elif kind == "ds":
            s = key[1]
            if self.persistent:
                g = ident("gs_", s)
                self.m.carry.append(f"{g} = {self.past('ds', name, g)}")
            else:
                old = self.incoming(s)
                self.emit(f"tl.store({self.arr('DSN_', s)} + obh, {self.past('ds', name, old)}, mask=m2)")
        elif kind == "dp":
            # one batch reduction per distinct expression (the LSTM's b_ih and b_hh gradients are the
            # same sum): stored to each parameter's row, reduced once
            # (program.dp_shared says which parameters share a sum; the first of a set met here reduces)
            rep = self.p.dp_shared.get(key[1], key[1])
            first = rep not in self.dp_reduced
            self.dp_reduced.add(rep)
            if self.persistent:
                a = ident("dpa_", rep)
                self.dp_acc[key[1]] = a
                if first:
                    self.emit(f"{a} += tl.sum({self.past('dp', name)}, axis=0)")
            else:
                sm = ident("dsum_", rep)
                if first:
                    self.emit(f"{sm} = tl.sum({self.past('dp', name)}, axis=0)")
                self.emit(f"dpp = {self.arr('DP')} + pid_b * ({len(self.vec_index)} * H) + "
                          f"{self.vec_index[key[1]]} * H + cols")
                self.emit(f"tl.store(dpp, tl.load(dpp, mask=cmask, other=0.0) + {sm}, mask=cmask)")

    # ------------------------------------------------------------------------------------ GEMMs
    def reduce_step(self, gm: Gemm) -> None:
        """A reduction stage in a step kernel: every program reads its rows whole (H in chunks of BK,
        as a product reads K) and sums them, so no result crosses programs; broadcast over its tile."""
        g = gm.group
        if gm.transposed:
            src = f"{self.arr('dRP', g)} + ry"
        else:
            a = gm.a[0]
            src = (f"{self.arr('SQ_', a.attr)} + rc" if a.op == "state" else f"{self.arr('SV_', a.attr[1])} + rt")
        out = value_name(gm.out[0])
        self.emit(f"# {gm.reduce} over each row, read whole by every program (H in chunks of BK), broadcast")
        self.emit("red = tl.zeros([BB], CT)")
        self.emit("for k0 in range(0, H, BK):")
        self.emit("    kk = k0 + tl.arange(0, BK)")
        self.emit(f"    red += tl.sum(tl.load({src} + rows[:, None] * H + kk[None, :], "
                  f"mask=rmask[:, None] & (kk < H)[None, :], other=0.0).to(CT), axis=1)")
        self.emit(f"{out} = ZT + red[:, None]" + (" / H" if gm.reduce == "mean" else ""))
        self.local.add(gm.out[0])
        if gm.out[0].attr in self.later:
            name = "DV" if gm.transposed else "RS"
            self.emit(f"tl.store({self.arr(name, g)} + rows[:, None] * H + cols[None, :], {out}, mask=m2)")

    def reduce_persistent(self, gm: Gemm) -> None:
        """A reduction stage in a persistent kernel: the program owns whole rows (BH >= H), so the row
        is in registers; padding columns are masked out of the sum."""
        a = gm.a[0]
        self.ensure(a)
        out = value_name(gm.out[0])
        self.emit(f"# {gm.reduce} over each row (the program owns whole rows), broadcast")
        self.emit(f"{out} = ZT + tl.sum(tl.where(cmask[None, :], {value_name(a)}, 0.0), axis=1)[:, None]"
                  + (" / H" if gm.reduce == "mean" else ""))
        self.local.add(gm.out[0])

    def gemm_step(self, gm: Gemm) -> None:
        """One product of a step kernel: K in chunks of BK, every slot of this hidden tile."""
        if gm.reduce:
            return self.reduce_step(gm)
        g, k = gm.group, len(gm.mats)
        if not gm.transposed:
            a = gm.a[0]
            src = (f"{self.arr('SQ_', a.attr)} + rc" if a.op == "state"
                   else f"{self.arr('SV_', a.attr[1])} + rt")
            outs = [value_name(o) for o in gm.out]
            self.emit(f"# GEMM [{', '.join(gm.mats)}]: {value_name(a)} @ UT{g}, K in chunks of BK")
            for o in outs:
                self.emit(f"{o} = ZT")
            self.emit("for k0 in range(0, H, BK):")
            self.emit("    kk = k0 + tl.arange(0, BK)")
            self.emit("    kmask = kk < H")
            self.emit(f"    a = tl.load({src} + rows[:, None] * H + kk[None, :], "
                      f"mask=rmask[:, None] & kmask[None, :], other=0.0).to(DT)")
            for s, o in enumerate(outs):
                self.emit(f"    w = tl.load({self.arr('UT', g)} + kk[:, None] * ({k} * H) + {s} * H + cols[None, :], "
                          f"mask=kmask[:, None] & cmask[None, :], other=0.0)")
                self.emit(f"    {o} = _dot(a, w, {o}, DOT_F32, PREC)")
            for s, o in enumerate(gm.out):
                self.local.add(o)
                if o.attr in self.later:
                    self.emit(f"tl.store({self.arr('RS', g)} + rows[:, None] * ({k} * H) + {s} * H + cols[None, :], "
                              f"{value_name(o)}, mask=m2)")
        else:
            out = value_name(gm.out[0])
            self.emit(f"# GEMM [{'; '.join(gm.mats)}]: dRP{g}[t] @ U{g}, K = {k}*H in chunks of BK")
            self.emit(f"{out} = ZT")
            self.emit(f"for k0 in range(0, {k} * H, BK):")
            self.emit("    kk = k0 + tl.arange(0, BK)")
            self.emit(f"    kmask = kk < {k} * H")
            self.emit(f"    a = tl.load({self.arr('dRP', g)} + ry * {k} + rows[:, None] * ({k} * H) + kk[None, :], "
                      f"mask=rmask[:, None] & kmask[None, :], other=0.0)")
            self.emit(f"    w = tl.load({self.arr('U', g)} + kk[:, None] * H + cols[None, :], "
                      f"mask=kmask[:, None] & cmask[None, :], other=0.0)")
            self.emit(f"    {out} = _dot(a, w, {out}, DOT_F32, PREC)")
            self.local.add(gm.out[0])
            if gm.out[0].attr in self.later:
                self.emit(f"tl.store({self.arr('DV', g)} + obh, {out}, mask=m2)")

    def gemm_persistent(self, gm: Gemm) -> None:
        """One product of a persistent kernel: operands and weights are already on chip."""
        if gm.reduce:
            return self.reduce_persistent(gm)
        g, k = gm.group, len(gm.mats)
        wmask = "mask=cmask[:, None] & cmask[None, :], other=0.0"
        if not gm.transposed:
            a = gm.a[0]
            self.ensure(a)
            self.emit(f"# GEMM [{', '.join(gm.mats)}]: {value_name(a)} @ UT{g} (weights in registers)")
            self.emit(f"a = tl.where(cmask[None, :], {value_name(a)}, 0.0).to(DT)")
            for s, o in enumerate(gm.out):
                wn = f"W{g}_{s}"
                self.m.prologue.append(f"{wn} = tl.load({self.arr('UT', g)} + cols[:, None] * ({k} * H) + {s} * H "
                                       f"+ cols[None, :], {wmask})")
                self.emit(f"{value_name(o)} = _dot(a, {wn}, ZT, DOT_F32, PREC)")
                self.local.add(o)
        else:
            out = value_name(gm.out[0])
            self.emit(f"# GEMM [{'; '.join(gm.mats)}]: [{', '.join(value_name(a) for a in gm.a)}] @ U{g} "
                      f"(weights in registers)")
            self.emit(f"{out} = ZT")
            for s, a in enumerate(gm.a):
                self.ensure(a)
                wn = f"V{g}_{s}"
                self.m.prologue.append(f"{wn} = tl.load({self.arr('U', g)} + ({s} * H + cols)[:, None] * H "
                                       f"+ cols[None, :], {wmask})")
                self.emit(f"{out} = _dot({value_name(a)}.to(DT), {wn}, {out}, DOT_F32, PREC)")
            self.local.add(gm.out[0])


def _params_used(stages) -> list[str]:
    out = []
    for st in stages:
        if isinstance(st, Block):
            for let in st.lets:
                for n in _leaves(let.expr):
                    if n.op == "param" and n.attr not in out:
                        out.append(n.attr)
    return out


def _step_kernels(program: Program, direction: str, alias, vec_index) -> list[KernelMeta]:
    stages = program.fwd if direction == "fwd" else program.bwd
    segs = segments(stages)
    # values read by a later segment than the one producing them
    produced_by = {}
    for i, seg in enumerate(segs):
        for k in _produced(seg):
            produced_by.setdefault(k, i)
    later = set()
    for i, seg in enumerate(segs):
        for k in _read(seg):
            if produced_by.get(k, i) < i:
                later.add(k)
    out = []
    for i, seg in enumerate(segs):
        gemms, block = seg
        scalars = ["t", "ci", "ni", "ti", "B", "H"] if direction == "fwd" else ["t", "B", "H"]
        meta = KernelMeta(f"{direction}_step{i}", direction, "step", scalars=scalars,
                          constexprs=["BB", "BH", "BK", "DT", "CT", "DOT_F32", "PREC"])
        kb = _Kernel(program, meta, alias, vec_index, later, persistent=False)
        kb.arr("L")
        if block is not None:
            for p in _params_used([block]):
                kb.ensure(Node("param", (), p))
        for gm in gemms:
            kb.gemm_step(gm)
        if block is not None:
            kb.block(block)
        what = " + ".join([f"GEMM[{', '.join(g.mats)}]" for g in gemms] + ([f"block {block.phase}"] if block else []))
        meta.doc = f"{'forward' if direction == 'fwd' else 'backward'} segment {i} of one step: {what}"
        out.append(meta)
    return out


def _persistent_kernel(program: Program, direction: str, alias, vec_index) -> KernelMeta:
    stages = program.fwd if direction == "fwd" else program.bwd
    cx = ["BB", "BH", "DT", "CT", "DOT_F32", "PREC"] + (["STORE_TAPE"] if direction == "fwd" else [])
    meta = KernelMeta(f"{direction}_persistent", direction, "persistent", scalars=["T", "B", "H"], constexprs=cx)
    kb = _Kernel(program, meta, alias, vec_index, set(), persistent=True)
    kb.arr("L")
    for p in _params_used(stages):
        meta.prologue.append(f"{value_name(Node('param', (), p))} = {kb.load_expr(Node('param', (), p))}")
        kb.local.add(Node("param", (), p))
    cell = program.cell
    if direction == "fwd":
        for s in cell.states:   # the states live in registers for the whole sequence
            st = Node("state", (), s)
            meta.prologue.append(f"{value_name(st)} = {kb.tile(kb.arr('SQ_', s))}")
            kb.local.add(st)
            meta.epilogue.append("if not STORE_TAPE:  # the final state goes to row 1 of the 2-row buffer")
            meta.epilogue.append(f"    tl.store({array_name('SQ_', s)} + BHs + obh, {value_name(st)}, mask=m2)")
    else:
        for s in cell.states:   # adjoints of the states, carried backwards in time
            g = ident("gs_", s)
            meta.prologue.append(f"{g} = {kb.tile(kb.arr('DS_', s))}")
            meta.epilogue.append(f"tl.store({array_name('DS_', s)} + obh, {g}, mask=m2)")
    for st in stages:
        if isinstance(st, Block):
            kb.block(st)
        else:
            kb.gemm_persistent(st)
    if direction == "bwd":
        for a in dict.fromkeys(kb.dp_acc.values()):
            meta.prologue.append(f"{a} = tl.zeros([BH], CT)")
        for p, a in kb.dp_acc.items():
            meta.epilogue.append(f"tl.store({kb.arr('DP')} + pid_b * ({len(vec_index)} * H) + {vec_index[p]} * H "
                                 f"+ cols, {a}, mask=cmask)")
    meta.doc = (f"the whole {'forward' if direction == 'fwd' else 'backward'} sequence in one launch: "
                f"one program per BB batch rows owning all H")
    return meta


def render(program: Program, storage: str, compute: str, key: str = "") -> Rendered:
    """The generated module's source text and the launch metadata of its kernels."""
    alias = program.dxp_alias
    vec_index = {p: i for i, p in enumerate(program.vector_params)}
    fsteps = _step_kernels(program, "fwd", alias, vec_index)
    bsteps = _step_kernels(program, "bwd", alias, vec_index)
    kernels = fsteps + bsteps + [_persistent_kernel(program, "fwd", alias, vec_index),
                                 _persistent_kernel(program, "bwd", alias, vec_index)]
    scratch = {}
    for k in kernels:
        for a, (prefix, name) in k.array_of.items():
            if ARRAYS[prefix].scratch:
                scratch[a] = len(program.groups[name].mats) if prefix == "RS" else 1
    source = render_template("triton_cell.py.j2", spec=compile_spec(program.cell), cell=program.cell.name, key=key,
                             storage=storage, compute=compute,
                             kernels=kernels, n_fwd=len(fsteps), n_bwd=len(bsteps), prelude=prelude_names(program))
    return Rendered(source=source, kernels={k.name: k for k in kernels}, fwd_steps=[k.name for k in fsteps],
                    bwd_steps=[k.name for k in bsteps], scratch=scratch, alias=alias, vec_index=vec_index)
