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
    extent: str = "H"              # (step) the size its grid spans: cdiv(extent, BH) tiles (docs/design.md, "Sizes")
    sizes: dict = field(default_factory=dict)   # declared size -> its scalar argument (Z_P) [, persistent: BZ_P]

    @property
    def arrays(self) -> list[str]:
        """The pointer arguments, in order."""
        return list(self.array_of)

    @property
    def signature(self) -> str:
        return ", ".join(self.arrays + self.scalars + [f"{c}: tl.constexpr" for c in self.constexprs])

    @property
    def no_specialize(self) -> list[str]:
        # runtime sizes and time indices must never trigger a recompile (Triton specialises ints == 1);
        # the sizes (H, and a declared size's Z_P) are specialised as H always was
        return [s for s in self.scalars if s != "H" and s not in self.sizes.values()]


@dataclass
class Rendered:
    source: str
    kernels: dict[str, KernelMeta]
    fwd_steps: list[str]                 # step kernels of one forward step, in launch order
    bwd_steps: list[str]
    scratch: dict[str, int]              # step-variant scratch array -> slots (shape [B, slots * size], CT)
    alias: int | None                    # program.dxp_alias: dXP is dRP[alias]
    vec_index: dict[str, int]            # vector parameter -> its place in the DP partial sums
    scratch_size: dict = field(default_factory=dict)   # scratch array -> the size of its slots ("H", "P")
    vec_size: dict = field(default_factory=dict)       # vector parameter -> its size

    def dp_offsets(self, dims: dict) -> tuple[dict, int]:
        """({vector parameter: its first column in a row of DP}, the row's width) for `dims`: the
        vector parameters side by side, each as wide as its size ([nb, nvec * H] without sizes)."""
        off, n = {}, 0
        for p in self.vec_index:
            off[p] = n
            n += dims[self.vec_size.get(p, "H")]
        return off, n


def size_arg(size: str) -> str:
    """The kernel scalar holding a declared size's number (H is H): Z_P for `size P`."""
    return "H" if size == "H" else ident("Z_", size)


def size_block(size: str) -> str:
    """(persistent kernels) the constexpr tile width of a size: BH, or BZ_P >= P."""
    return "BH" if size == "H" else ident("BZ_", size)


def _n(size: str) -> str:
    return size_arg(size)


def _lin(counts: dict) -> str:
    """sum of count * size as kernel text, in first-seen order: "3 * H", "2 * H + 1 * Z_P"."""
    return " + ".join(f"{c} * {_n(z)}" for z, c in counts.items() if c) or "0"


def segments(stages, size_of=None) -> list[tuple[list[Gemm], Block | None]]:
    """Split a step into launchable segments: the GEMMs of one phase, then the block they feed.
    With sizes (`size_of(gemm)`: the size of its results) a phase may have one block per size: each
    block takes the phase's GEMMs of its size, and GEMMs no block of the phase reads in their size
    are segments of their own (their results go to scratch for a later phase)."""
    out, pending = [], []

    def flush():
        by = {}
        for g in pending:
            by.setdefault(size_of(g) if size_of else "H", []).append(g)
        out.extend((gs, None) for gs in by.values())
        pending.clear()

    last_block = False
    for st in stages:
        if isinstance(st, Gemm):
            if last_block and pending:      # the previous phase's GEMMs no block of it took
                flush()
            pending.append(st)
            last_block = False
        else:
            mine = [g for g in pending if size_of is None or size_of(g) == st.size]
            pending[:] = [g for g in pending if g not in mine]
            out.append((mine, st))
            last_block = True
    if pending:
        flush()
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


def _temp_sizes(program: Program) -> dict:
    """The size of every let by its key (a temporary 't' has its block's)."""
    return {let.key: st.size for st in program.fwd + program.bwd if isinstance(st, Block) for let in st.lets}


def gemm_size(program: Program, gm: Gemm) -> str:
    """The size of a GEMM stage's results: its group's rows forward, its operand's size backward."""
    g = program.groups[gm.group]
    return g.cols if gm.transposed else g.rows


class _Kernel:
    """Builds the lines of one kernel: loads of leaves on first use, the blocks' lets, stores.

    Sizes (docs/design.md, "Sizes"): every tile-level name (cols, cmask, m2, obh, ZT, live) and every
    row offset (ry, rc, rn, rt, BHs) exists per size; H's are the template's, a declared size P's are
    suffixed (cols_P, ry_P, ..., its number the scalar Z_P) and defined at the top of the kernel. A
    step kernel's tiles span one size (its `extent`: the grid's second axis); a persistent kernel
    owns whole rows of every size (cols_P = arange(BZ_P), BZ_P >= P)."""

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
        self.tsize = _temp_sizes(program)
        self.lines = meta.body

    # ------------------------------------------------------------------------------------ sizes
    def size(self, key: tuple) -> str:
        """The size of a value by its var key."""
        return self.p.size_of_key(key) or self.tsize.get(key, "H")

    def psize(self, p: str) -> str:
        return self.p.cell.param_sizes.get(p, ("H",))[0]

    def n(self, size: str) -> str:
        """The number of a size in kernel text: H, or the scalar Z_P (an argument of this kernel)."""
        if size != "H" and size not in self.m.sizes:
            self.m.sizes[size] = size_arg(size)
        return size_arg(size)

    def z(self, base: str, size: str) -> str:
        """A per-size name: `base` for H, base_P for a declared size (defined at the kernel's top)."""
        if size == "H":
            return base
        if not self.persistent and base in ("cols", "cmask", "m2", "obh", "ZT", "live") and size != self.m.extent:
            raise AssertionError(f"step kernel {self.m.name} spans {self.m.extent}, not {size}")  # pragma: no cover
        self.n(size)
        return ident(base + "_", size)

    def finish(self) -> None:
        """Define the names of the declared sizes this kernel used, and add their arguments."""
        m = self.m
        for z in m.sizes:
            Z, s = size_arg(z), lambda b: ident(b + "_", z)   # noqa: E731
            rows = [f"{s('BHs')} = B * {Z}"]
            tiles = []
            if self.persistent:
                bz = size_block(z)
                tiles = [f"{s('cols')} = tl.arange(0, {bz})", f"{s('cmask')} = {s('cols')} < {Z}",
                         f"{s('m2')} = rmask[:, None] & {s('cmask')}[None, :]",
                         f"{s('obh')} = rows[:, None] * {Z} + {s('cols')}[None, :]",
                         f"{s('ZT')} = tl.zeros([BB, {bz}], CT)"]
                step = [f"{s('ry')} = tl.cast(t, tl.int64) * {s('BHs')}", f"{s('rc')} = {s('ry')}",
                        f"{s('rn')} = {s('ry')} + {s('BHs')}", f"{s('rt')} = {s('ry')}",
                        f"{s('live')} = (t < Lr)[:, None] & {s('m2')}"]
                m.prologue[:0] = [f"# size {z}: whole rows of {Z} units in tiles of {bz}"] + rows + tiles
                m.body[:0] = step
                m.constexprs.append(bz)
            else:
                if z == m.extent:
                    tiles = [f"{s('cols')} = cols", f"{s('cmask')} = cols < {Z}",
                             f"{s('m2')} = rmask[:, None] & {s('cmask')}[None, :]",
                             f"{s('obh')} = rows[:, None] * {Z} + cols[None, :]", f"{s('ZT')} = ZT",
                             f"{s('live')} = (t < tl.load(L + rows, mask=rmask, other=0))[:, None] & {s('m2')}"]
                ry = [f"{s('ry')} = tl.cast(t, tl.int64) * {s('BHs')}"]
                if self.fwd:
                    ry += [f"{s('rc')} = tl.cast(ci, tl.int64) * {s('BHs')}",
                           f"{s('rn')} = tl.cast(ni, tl.int64) * {s('BHs')}",
                           f"{s('rt')} = tl.cast(ti, tl.int64) * {s('BHs')}"]
                else:
                    ry += [f"{s('rc')} = {s('ry')}", f"{s('rn')} = {s('ry')} + {s('BHs')}", f"{s('rt')} = {s('ry')}"]
                m.body[:0] = [f"# size {z}" + (f": this kernel's tiles span its {Z} units" if z == m.extent else "")] \
                    + rows + tiles + ry
            m.scalars.append(Z)

    def arr(self, prefix: str, name=None) -> str:
        """The kernel argument of the naming table's array `prefix` (+ name or group), declared on first use."""
        arg = array_name(prefix, name)
        self.m.array_of.setdefault(arg, (prefix, name))
        return arg

    def emit(self, line: str) -> None:
        self.lines.append(line)

    # ------------------------------------------------------------------------------------ loads
    def tile(self, base: str, row: str | None = None, slots: int = 1, slot: int = 0, size: str = "H") -> str:
        """Load expression of the [BB, BH] tile of `base` ([T?, B, slots*size] array) at `slot`."""
        n, cols = self.n(size), self.z("cols", size)
        off = (f"rows[:, None] * ({slots} * {n}) + {slot} * {n} + {cols}[None, :]" if slots > 1 or slot
               else self.z("obh", size))
        r = f"{row} + " if row else ""
        return f"tl.load({base} + {r}{off}, mask={self.z('m2', size)}, other=0.0).to(CT)"

    def ensure(self, node: Node) -> None:
        """Bind `node` (a leaf) to a local, loading it if it is not one yet."""
        if node in self.local:
            return
        name = value_name(node)
        self.emit(f"{name} = {self.load_expr(node)}")
        self.local.add(node)

    def load_expr(self, node: Node) -> str:
        z = self.z
        if node.op == "param":
            sz = self.psize(node.attr)
            return (f"tl.load({self.arr('P_', node.attr)} + {z('cols', sz)}, mask={z('cmask', sz)}, "
                    f"other=0.0).to(CT)[None, :]")
        if node.op == "state":
            sz = self.p.state_size(node.attr)
            return self.tile(self.arr('SQ_', node.attr), z("rc", sz), size=sz)
        kind, *rest = node.attr
        sz = self.size(node.attr)
        if kind == "xp":
            return self.tile(self.arr('XP'), f"ry * {self.nx}", self.nx, self.xslot[rest[0]])
        if kind == "rp":
            g = rest[0]
            return self.tile(self.arr('RS', g), None, self.gsize[g], self.gslot[(g, rest[1])], size=sz)
        if kind == "s1":
            return self.tile(self.arr('SQ_', rest[0]), z("rn", sz), size=sz)
        if kind == "sv":
            return self.tile(self.arr('SV_', rest[0]), z("rt", sz), size=sz)
        if kind == "t":
            return self.tile(self.arr('BT_', rest[0]), size=sz)
        if kind == "ds1":
            s = rest[0]
            base = ident("gs_", s) if self.persistent else self.incoming(s)
            if s == self.p.dy_state:
                return f"{base} + {self.tile(self.arr('dY'), z('ry', sz), size=sz)}"
            return base
        if kind == "dv":
            return self.tile(self.arr('DV', rest[0]), size=sz)
        if kind == "drp":
            g = rest[0]
            return self.tile(self.arr('dRP', g), f"{z('ry', sz)} * {self.gsize[g]}", self.gsize[g],
                             self.gslot[(g, rest[1])], size=sz)
        if kind == "dxp":
            if self.alias is not None:
                g = self.alias
                m = self.p.groups[g].mats[self.xslot[rest[0]]]
                return self.tile(self.arr('dRP', g), f"ry * {self.gsize[g]}", self.gsize[g], self.gslot[(g, m)])
            return self.tile(self.arr('dXP'), f"ry * {self.nx}", self.nx, self.xslot[rest[0]])
        if kind == "ds":
            return self.tile(self.arr('DSN_', rest[0]), size=sz)
        raise KeyError(node.attr)  # pragma: no cover - lower.py defines no other leaves

    def incoming(self, s: str) -> str:
        """(step kernels) the local holding this step's incoming adjoint of state s, loaded once."""
        name = ident("go_", s)
        if name not in self.helpers:
            self.emit(f"{name} = {self.tile(self.arr('DS_', s), size=self.p.state_size(s))}")
            self.helpers.add(name)
        return name

    # ----------------------------------------------------------------------------------- blocks
    def block(self, block: Block) -> None:
        self.emit(f"# block {block.phase}" + ("" if block.size == "H" else f" [B, {block.size}]"))
        zt = self.z("ZT", block.size)
        for let in block.lets:
            for leaf in _leaves(let.expr):
                self.ensure(leaf)
            rhs = render_expr(let.expr, SPELL, const=const)
            if not is_batched(let.expr):
                rhs = f"{zt} + {rhs}" if let.expr.is_leaf else f"{zt} + ({rhs})"   # [BH] or scalar -> tile
            name = key_name(let.key)
            self.emit(f"{name} = {rhs}")
            self.local.add(var(*let.key))
            self.store(let.key, name, let.expr)

    def past(self, kind: str, new: str, before: str | None = None, size: str = "H") -> str:
        """`new` for live rows; for rows past their length what program.past_length says."""
        return f"tl.where({self.z('live', size)}, {new}, {past_value(self.p, kind, before, '0.0')})"

    def store(self, key: tuple, name: str, expr: Node | None = None) -> None:
        kind = key[0]
        z, sz = self.z, self.size(key)
        st = "if STORE_TAPE: " if self.persistent else ""   # persistent forward: the tape is optional
        if kind == "s1":
            s = key[1]
            self.ensure(Node("state", (), s))
            w = ident("w_", s)
            old = value_name(Node("state", (), s))
            self.emit(f"{w} = {self.past('s1', name, old, sz)}  # rows past their length: program.past_length")
            self.emit(f"{st}tl.store({self.arr('SQ_', s)} + {z('rn', sz)} + {z('obh', sz)}, {w}, mask={z('m2', sz)})")
            if s == self.p.cell.output:
                self.emit(f"tl.store({self.arr('Y')} + {z('ry', sz)} + {z('obh', sz)}, {self.past('y', name, None, sz)}, "
                          f"mask={z('m2', sz)})")
            if self.persistent:
                self.m.carry.append(f"{old} = {w}")
        elif kind == "sv":
            self.emit(f"{st}tl.store({self.arr('SV_', key[1])} + {z('rt', sz)} + {z('obh', sz)}, "
                      f"{self.past('sv', name, None, sz)}, mask={z('m2', sz)})")
        elif kind == "t":
            if key in self.later:
                self.emit(f"tl.store({self.arr('BT_', key[1])} + {z('obh', sz)}, {name}, mask={z('m2', sz)})")
        elif kind == "drp":
            g, slot, k, n = key[1], self.gslot[(key[1], key[2])], self.gsize[key[1]], self.n(sz)
            self.emit(f"{name} = {self.past('drp', name, None, sz)}  # rows past their length: program.past_length")
            self.emit(f"tl.store({self.arr('dRP', g)} + {z('ry', sz)} * {k} + rows[:, None] * ({k} * {n}) + {slot} * {n} "
                      f"+ {z('cols', sz)}[None, :], {name}, mask={z('m2', sz)})")
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
                self.m.carry.append(f"{g} = {self.past('ds', name, g, sz)}")
            else:
                old = self.incoming(s)
                self.emit(f"tl.store({self.arr('DSN_', s)} + {z('obh', sz)}, {self.past('ds', name, old, sz)}, "
                          f"mask={z('m2', sz)})")
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
                    self.emit(f"{a} += tl.sum({self.past('dp', name, None, sz)}, axis=0)")
            else:
                sm = ident("dsum_", rep)
                if first:
                    self.emit(f"{sm} = tl.sum({self.past('dp', name, None, sz)}, axis=0)")
                self.emit(f"dpp = {self.arr('DP')} + pid_b * ({self.dp_width()}) + {self.dp_offset(key[1])} + "
                          f"{z('cols', sz)}")
                self.emit(f"tl.store(dpp, tl.load(dpp, mask={z('cmask', sz)}, other=0.0) + {sm}, "
                          f"mask={z('cmask', sz)})")

    def dp_width(self) -> str:
        """A row of DP: every vector parameter's partial sums side by side (Rendered.dp_offsets)."""
        counts: dict = {}
        for p in self.vec_index:
            counts[self.psize(p)] = counts.get(self.psize(p), 0) + 1
        for z in counts:
            self.n(z)
        return _lin(counts)

    def dp_offset(self, p: str) -> str:
        counts: dict = {}
        for q in self.vec_index:
            if q == p:
                break
            counts[self.psize(q)] = counts.get(self.psize(q), 0) + 1
        if set(counts) <= {"H"}:
            return f"{self.vec_index[p]} * H"
        for z in counts:
            self.n(z)
        return f"({_lin(counts)})"

    # ------------------------------------------------------------------------------------ GEMMs
    def reduce_step(self, gm: Gemm) -> None:
        """A reduction stage in a step kernel: every program reads its rows whole (H in chunks of BK,
        as a product reads K) and sums them, so no result crosses programs; broadcast over its tile."""
        g = gm.group
        z = self.z
        sz = self.p.groups[g].cols          # a reduction's operand, result and adjoints have one size
        n = self.n(sz)
        if gm.transposed:
            src = f"{self.arr('dRP', g)} + {z('ry', sz)}"
        else:
            a = gm.a[0]
            src = (f"{self.arr('SQ_', a.attr)} + {z('rc', sz)}" if a.op == "state"
                   else f"{self.arr('SV_', a.attr[1])} + {z('rt', sz)}")
        out = value_name(gm.out[0])
        self.emit(f"# {gm.reduce} over each row, read whole by every program ({n} in chunks of BK), broadcast")
        self.emit("red = tl.zeros([BB], CT)")
        self.emit(f"for k0 in range(0, {n}, BK):")
        self.emit("    kk = k0 + tl.arange(0, BK)")
        self.emit(f"    red += tl.sum(tl.load({src} + rows[:, None] * {n} + kk[None, :], "
                  f"mask=rmask[:, None] & (kk < {n})[None, :], other=0.0).to(CT), axis=1)")
        self.emit(f"{out} = {z('ZT', sz)} + red[:, None]" + (f" / {n}" if gm.reduce == "mean" else ""))
        self.local.add(gm.out[0])
        if gm.out[0].attr in self.later:
            name = "DV" if gm.transposed else "RS"
            self.emit(f"tl.store({self.arr(name, g)} + rows[:, None] * {n} + {z('cols', sz)}[None, :], {out}, "
                      f"mask={z('m2', sz)})")

    def reduce_persistent(self, gm: Gemm) -> None:
        """A reduction stage in a persistent kernel: the program owns whole rows (BH >= H), so the row
        is in registers; padding columns are masked out of the sum."""
        a = gm.a[0]
        sz = self.p.groups[gm.group].cols
        self.ensure(a)
        out = value_name(gm.out[0])
        self.emit(f"# {gm.reduce} over each row (the program owns whole rows), broadcast")
        self.emit(f"{out} = {self.z('ZT', sz)} + tl.sum(tl.where({self.z('cmask', sz)}[None, :], {value_name(a)}, "
                  f"0.0), axis=1)[:, None]" + (f" / {self.n(sz)}" if gm.reduce == "mean" else ""))
        self.local.add(gm.out[0])

    def head_range(self, gm: Gemm) -> tuple[str, str]:
        """The K range of a step kernel's product over its operand's units: all of them, or with
        `heads N` (the Program's Gemm.heads) only the heads this program's hidden tile belongs to,
        [first head's start, last head's end): the block-diagonal matrix is zero elsewhere, so the
        tile does N times fewer multiply-adds when BH <= H/N, and the sums are the same."""
        nC = self.n(self.p.groups[gm.group].cols)
        if gm.heads == 1:
            return "0", nC
        self.emit(f"HD = {nC} // {gm.heads}  # units per head: this tile's heads are all its products read")
        self.emit("klo = (pid_h * BH) // HD * HD")
        self.emit(f"khi = tl.minimum({nC}, ((pid_h * BH + BH - 1) // HD + 1) * HD)")
        return "klo", "khi"

    def gemm_step(self, gm: Gemm) -> None:
        """One product of a step kernel: K in chunks of BK, every slot of this hidden tile. A group's
        matrices are [k*R, C] (R its rows, C its operand's size): forward [B, C] -> [B, k*R], backward
        [B, k*R] -> [B, C]."""
        if gm.reduce:
            return self.reduce_step(gm)
        g, k = gm.group, len(gm.mats)
        grp = self.p.groups[g]
        z, R, C = self.z, grp.rows, grp.cols
        nR, nC = self.n(R), self.n(C)
        if not gm.transposed:
            a = gm.a[0]
            src = (f"{self.arr('SQ_', a.attr)} + {z('rc', C)}" if a.op == "state"
                   else f"{self.arr('SV_', a.attr[1])} + {z('rt', C)}")
            outs = [value_name(o) for o in gm.out]
            self.emit(f"# GEMM [{', '.join(gm.mats)}]: {value_name(a)} @ UT{g}, K in chunks of BK")
            for o in outs:
                self.emit(f"{o} = {z('ZT', R)}")
            lo, hi = self.head_range(gm)
            self.emit(f"for k0 in range({lo}, {hi}, BK):")
            self.emit("    kk = k0 + tl.arange(0, BK)")
            self.emit(f"    kmask = kk < {hi}")
            self.emit(f"    a = tl.load({src} + rows[:, None] * {nC} + kk[None, :], "
                      f"mask=rmask[:, None] & kmask[None, :], other=0.0).to(DT)")
            for s, o in enumerate(outs):
                self.emit(f"    w = tl.load({self.arr('UT', g)} + kk[:, None] * ({k} * {nR}) + {s} * {nR} + "
                          f"{z('cols', R)}[None, :], mask=kmask[:, None] & {z('cmask', R)}[None, :], other=0.0)")
                self.emit(f"    {o} = _dot(a, w, {o}, DOT_F32, PREC)")
            for s, o in enumerate(gm.out):
                self.local.add(o)
                if o.attr in self.later:
                    self.emit(f"tl.store({self.arr('RS', g)} + rows[:, None] * ({k} * {nR}) + {s} * {nR} + "
                              f"{z('cols', R)}[None, :], {value_name(o)}, mask={z('m2', R)})")
        else:
            out = value_name(gm.out[0])
            self.emit(f"# GEMM [{'; '.join(gm.mats)}]: dRP{g}[t] @ U{g}, K = {k}*{nR} in chunks of BK")
            self.emit(f"{out} = {z('ZT', C)}")
            lo, hi = self.head_range(gm)
            # with heads, each slot's K range is the heads of this tile (one loop per slot)
            ranges = ([(f"0", f"{k} * {nR}")] if gm.heads == 1
                      else [(f"{j} * {nR} + {lo}", f"{j} * {nR} + {hi}") for j in range(k)])
            for lo_j, hi_j in ranges:
                self.emit(f"for k0 in range({lo_j}, {hi_j}, BK):")
                self.emit("    kk = k0 + tl.arange(0, BK)")
                self.emit(f"    kmask = kk < {hi_j}")
                self.emit(f"    a = tl.load({self.arr('dRP', g)} + {z('ry', R)} * {k} + rows[:, None] * ({k} * {nR}) + "
                          f"kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)")
                self.emit(f"    w = tl.load({self.arr('U', g)} + kk[:, None] * {nC} + {z('cols', C)}[None, :], "
                          f"mask=kmask[:, None] & {z('cmask', C)}[None, :], other=0.0)")
                self.emit(f"    {out} = _dot(a, w, {out}, DOT_F32, PREC)")
            self.local.add(gm.out[0])
            if gm.out[0].attr in self.later:
                self.emit(f"tl.store({self.arr('DV', g)} + {z('obh', C)}, {out}, mask={z('m2', C)})")

    def gemm_persistent(self, gm: Gemm) -> None:
        """One product of a persistent kernel: operands and weights are already on chip."""
        if gm.reduce:
            return self.reduce_persistent(gm)
        g, k = gm.group, len(gm.mats)
        grp = self.p.groups[g]
        z, R, C = self.z, grp.rows, grp.cols
        nR, nC = self.n(R), self.n(C)
        if not gm.transposed:
            a = gm.a[0]
            self.ensure(a)
            wmask = f"mask={z('cmask', C)}[:, None] & {z('cmask', R)}[None, :], other=0.0"
            self.emit(f"# GEMM [{', '.join(gm.mats)}]: {value_name(a)} @ UT{g} (weights in registers)")
            self.emit(f"a = tl.where({z('cmask', C)}[None, :], {value_name(a)}, 0.0).to(DT)")
            for s, o in enumerate(gm.out):
                wn = f"W{g}_{s}"
                self.m.prologue.append(f"{wn} = tl.load({self.arr('UT', g)} + {z('cols', C)}[:, None] * ({k} * {nR}) "
                                       f"+ {s} * {nR} + {z('cols', R)}[None, :], {wmask})")
                self.emit(f"{value_name(o)} = _dot(a, {wn}, {z('ZT', R)}, DOT_F32, PREC)")
                self.local.add(o)
        else:
            out = value_name(gm.out[0])
            wmask = f"mask={z('cmask', R)}[:, None] & {z('cmask', C)}[None, :], other=0.0"
            self.emit(f"# GEMM [{'; '.join(gm.mats)}]: [{', '.join(value_name(a) for a in gm.a)}] @ U{g} "
                      f"(weights in registers)")
            self.emit(f"{out} = {z('ZT', C)}")
            for s, a in enumerate(gm.a):
                self.ensure(a)
                wn = f"V{g}_{s}"
                self.m.prologue.append(f"{wn} = tl.load({self.arr('U', g)} + ({s} * {nR} + {z('cols', R)})[:, None] "
                                       f"* {nC} + {z('cols', C)}[None, :], {wmask})")
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
    segs = segments(stages, lambda gm: gemm_size(program, gm))
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
        extent = block.size if block is not None else gemm_size(program, gemms[0])
        meta = KernelMeta(f"{direction}_step{i}", direction, "step", scalars=scalars,
                          constexprs=["BB", "BH", "BK", "DT", "CT", "DOT_F32", "PREC"], extent=extent)
        kb = _Kernel(program, meta, alias, vec_index, later, persistent=False)
        kb.arr("L")
        if block is not None:
            for p in _params_used([block]):
                kb.ensure(Node("param", (), p))
        for gm in gemms:
            kb.gemm_step(gm)
        if block is not None:
            kb.block(block)
        kb.finish()
        what = " + ".join([f"GEMM[{', '.join(g.mats)}]" for g in gemms] + ([f"block {block.phase}"] if block else []))
        meta.doc = f"{'forward' if direction == 'fwd' else 'backward'} segment {i} of one step: {what}"
        if extent != "H":
            meta.doc += f", tiles over {extent}"
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
            sz = program.state_size(s)
            meta.prologue.append(f"{value_name(st)} = {kb.tile(kb.arr('SQ_', s), size=sz)}")
            kb.local.add(st)
            meta.epilogue.append("if not STORE_TAPE:  # the final state goes to row 1 of the 2-row buffer")
            meta.epilogue.append(f"    tl.store({array_name('SQ_', s)} + {kb.z('BHs', sz)} + {kb.z('obh', sz)}, "
                                 f"{value_name(st)}, mask={kb.z('m2', sz)})")
    else:
        for s in cell.states:   # adjoints of the states, carried backwards in time
            g = ident("gs_", s)
            sz = program.state_size(s)
            meta.prologue.append(f"{g} = {kb.tile(kb.arr('DS_', s), size=sz)}")
            meta.epilogue.append(f"tl.store({array_name('DS_', s)} + {kb.z('obh', sz)}, {g}, mask={kb.z('m2', sz)})")
    for st in stages:
        if isinstance(st, Block):
            kb.block(st)
        else:
            kb.gemm_persistent(st)
    if direction == "bwd":
        first: dict = {}
        for p, a in kb.dp_acc.items():
            first.setdefault(a, p)
        for a, p in first.items():           # one accumulator per shared sum
            meta.prologue.append(f"{a} = tl.zeros([{size_block(kb.psize(p))}], CT)")
        for p, a in kb.dp_acc.items():
            sz = kb.psize(p)
            meta.epilogue.append(f"tl.store({kb.arr('DP')} + pid_b * ({kb.dp_width()}) + {kb.dp_offset(p)} "
                                 f"+ {kb.z('cols', sz)}, {a}, mask={kb.z('cmask', sz)})")
    kb.finish()
    meta.doc = (f"the whole {'forward' if direction == 'fwd' else 'backward'} sequence in one launch: "
                f"one program per BB batch rows owning all H" + (f" (and all of {', '.join(meta.sizes)})"
                                                                   if meta.sizes else ""))
    return meta


def render(program: Program, storage: str, compute: str, key: str = "") -> Rendered:
    """The generated module's source text and the launch metadata of its kernels."""
    alias = program.dxp_alias
    vec_index = {p: i for i, p in enumerate(program.vector_params)}
    fsteps = _step_kernels(program, "fwd", alias, vec_index)
    bsteps = _step_kernels(program, "bwd", alias, vec_index)
    kernels = fsteps + bsteps + [_persistent_kernel(program, "fwd", alias, vec_index),
                                 _persistent_kernel(program, "bwd", alias, vec_index)]
    scratch, scratch_size = {}, {}
    tsize = _temp_sizes(program)
    for k in kernels:
        for a, (prefix, name) in k.array_of.items():
            if ARRAYS[prefix].scratch:
                scratch[a] = len(program.groups[name].mats) if prefix == "RS" else 1
                scratch_size[a] = (program.groups[name].rows if prefix == "RS" else program.groups[name].cols
                                   if prefix == "DV" else tsize.get(("t", name), "H"))
    source = render_template("triton_cell.py.j2", spec=compile_spec(program.cell), cell=program.cell.name, key=key,
                             storage=storage, compute=compute,
                             kernels=kernels, n_fwd=len(fsteps), n_bwd=len(bsteps), prelude=prelude_names(program))
    return Rendered(source=source, kernels={k.name: k for k in kernels}, fwd_steps=[k.name for k in fsteps],
                    bwd_steps=[k.name for k in bsteps], scratch=scratch, alias=alias, vec_index=vec_index,
                    scratch_size=scratch_size,
                    vec_size={p: program.cell.param_sizes.get(p, ("H",))[0] for p in program.vector_params})
