"""The triton kernel writer: KernelWriter builds the lines of one generated kernel from the
Program's stages (loads of leaves on first use, the blocks' lets as tile expressions, the products
as `tl.dot` over tiles, the reductions, the stores), and KernelMeta is what the host needs to
launch it. lstmc/backends/triton/render.py decides which kernels a cell gets (the step design's
segments, the persistent design) and assembles the module from them; docs/triton.md explains
both designs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import Node, var, walk
from ...names import array_name
from ...lower import Block, Gemm, Program
from ..render import ident, is_batched, key_name, past_value, render_expr, value_name
from .spell import SPELL

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


def _leaves(expr: Node) -> list[Node]:
    return [n for n in walk([expr]) if n.is_leaf and n.op != "const"]


def _temp_sizes(program: Program) -> dict:
    """The size of every let by its key (a temporary 't' has its block's)."""
    return {let.key: st.size for st in program.fwd + program.bwd if isinstance(st, Block) for let in st.lets}


def gemm_size(program: Program, gm: Gemm) -> str:
    """The size of a GEMM stage's results: its group's rows forward, its operand's size backward."""
    g = program.groups[gm.group]
    return g.cols if gm.transposed else g.rows


class KernelWriter:
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

    def product_sizes(self, gm: Gemm):
        """(group, k matrices, the per-size namer z, rows R, columns C, their numbers as kernel text)."""
        grp = self.p.groups[gm.group]
        R, C = grp.rows, grp.cols
        return gm.group, len(gm.mats), self.z, R, C, self.n(R), self.n(C)

    def gemm_step(self, gm: Gemm) -> None:
        """One product of a step kernel: K in chunks of BK, every slot of this hidden tile. A group's
        matrices are [k*R, C] (R its rows, C its operand's size): forward [B, C] -> [B, k*R], backward
        [B, k*R] -> [B, C]."""
        if gm.reduce:
            return self.reduce_step(gm)
        g, k, z, R, C, nR, nC = self.product_sizes(gm)
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
            ranges = ([("0", f"{k} * {nR}")] if gm.heads == 1
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
        g, k, z, R, C, nR, nC = self.product_sizes(gm)
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
