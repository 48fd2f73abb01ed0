"""The Numba renderer: the lowered Program -> a Python module of @njit kernels (templates/numba_cell.py.j2,
the kernel shells), which imports its math from the prelude of its dtype (prelude_f32.py,
prelude_f64.py: PRELUDE, prelude_names).

It spells ops (SPELL, one row per primitive, each naming a prelude function) and places loads and
stores; it makes no mathematical decisions. Per block it emits one loop nest
`for b in range(b0, b1): for j in range(H):` whose body is the block's lets as scalar locals (so a
block is fused: every intermediate lives in a register), with loads from the arrays that hold
leaves (states, products, the tape) and stores for the values that outlive the block. Per step
each recurrent product is `np.dot` (BLAS), or the prelude's `_mm_nt`/`_mm_nn` for steps of at most
SMALL_ROWS rows. Every literal of a float32 kernel is `np.float32(...)` (`_const`), so nothing
silently promotes to float64.
"""

from __future__ import annotations

from ...ir import PRINTED_INFIX, Node, var, var_name as ir_name, walk
from ...ops import ARITY, POINTWISE
from ...lower import Block, Program
from ...names import ident, local_name
from ..render import (check_spelling, compile_spec, ops_used, past_value, render_expr, render_template,
                      spelled_functions)

# One row per primitive: a function of the dtype's prelude (prelude_f32.py / prelude_f64.py), where
# its math lives.
SPELL = {op: f"_{op}({', '.join(f'{{{k}}}' for k in range(ARITY[op]))})" for op in POINTWISE
         if op not in PRINTED_INFIX}
check_spelling(SPELL, "numba")

# the module a generated module of each dtype imports its math from
PRELUDE = {"float32": "lstmc.backends.numba.prelude_f32", "float64": "lstmc.backends.numba.prelude_f64"}


def prelude_names(program: Program | None = None) -> list[str]:
    """What a generated module imports from its prelude: the functions SPELL names (for the
    primitives `program` uses, when given), the in-kernel products `_mm_nt`/`_mm_nn` and SMALL_ROWS
    (the most rows they multiply)."""
    spelled = spelled_functions(SPELL, None if program is None else ops_used(program))
    return sorted(spelled | {"_mm_nn", "_mm_nt", "SMALL_ROWS"})


def extent(size: str) -> str:
    """The kernel local holding a size's number: H, or Z_P for `size P` (docs/design.md, "Sizes")."""
    return "H" if size == "H" else ident("Z_", size)


def _extent_lines(program: Program, out_array: str) -> list[str]:
    """The kernel's first lines: each size's number, read off an argument's shape. A cell without
    sized states: H is the output's last dimension (as it always was)."""
    if not program.cell.sized:
        return [f"H = {out_array}.shape[2]"]
    src = {}
    for s in program.cell.states:                      # the state sequences [T+1, B, n]
        src.setdefault(program.state_size(s), f"{ident('Sq_', s)}.shape[2]")
    for g in program.weight_groups:                    # the stacked matrices [k*R, C]
        src.setdefault(g.cols, f"U{g.index}.shape[1]")
        src.setdefault(g.rows, f"U{g.index}.shape[0] // {len(g.mats)}")
    for p in program.vector_params:
        src.setdefault(program.cell.param_sizes[p][0], f"{ident('p_', p)}.shape[0]")
    if "H" not in src:                                 # pragma: no cover - every sized cell reaches H
        raise NotImplementedError(f"cell {program.cell.name}: no kernel argument has the hidden size")
    return [f"{extent(z)} = {e}" for z, e in src.items()]


def _const(dtype):
    if dtype == "float32":
        return lambda v: f"np.float32({float(v)!r})"
    return lambda v: repr(float(v))


class _BlockRenderer:
    """Renders one Block as a fused loop nest, given how each leaf is loaded and each key stored."""

    def __init__(self, program: Program, dtype: str, direction: str):
        self.p = program
        self.dtype = dtype
        self.dir = direction
        self.const = _const(dtype)
        self.xslot = {m: j for j, m in enumerate(program.input_mats)}
        self.gslot = {(g.index, m): j for g in program.groups for j, m in enumerate(g.mats)}
        self.dxp_alias = program.dxp_alias        # decided in the Program (lstmc/program.py)

    # loads ----------------------------------------------------------------------------------
    def load(self, node: Node, local: set) -> str:
        if node.op == "param":
            return f"{ident('p_', node.attr)}[j]"
        if node.op == "state":
            return (f"{ident('cur_', node.attr)}[b, j]" if self.dir == "fwd"
                    else f"{ident('Sq_', node.attr)}[t, b, j]")
        key = node.attr
        if key in local:
            return local_name(key)
        kind = key[0]
        if kind == "xp":
            return f"XP[t, b, {self.xslot[key[1]]} * H + j]"
        if kind in ("rp", "dv") and self.p.groups[key[1]].reduce:   # a reduction: one number per row
            return f"{'RP' if kind == 'rp' else 'DV'}{key[1]}[b]"
        if kind == "rp":
            return f"RP{key[1]}[b, {self.gslot[(key[1], key[2])]} * {extent(self.p.groups[key[1]].rows)} + j]"
        if kind == "dv":
            return f"DV{key[1]}[b, j]"
        if kind == "s1":
            return (f"{ident('nxt_', key[1])}[b, j]" if self.dir == "fwd"
                    else f"{ident('Sq_', key[1])}[t + 1, b, j]")
        if kind == "sv":
            return self.saved_element(key[1])
        if kind == "t":
            return f"{ident('BT_', key[1])}[b, j]"
        if kind == "ds1":  # the incoming adjoint of s' (dy added for the output state)
            s = key[1]
            extra = " + dY[t, b, j]" if s == self.p.dy_state else ""
            return f"{ident('dS_', s)}[b, j]{extra}"
        if kind == "drp":
            return f"GR{key[1]}_{self.gslot[(key[1], key[2])]}[b, j]"
        if kind == "dxp":
            return f"GX{self.xslot[key[1]]}[b, j]"
        raise KeyError(key)  # pragma: no cover

    def tape_row(self, name: str) -> str:
        """The row of saved value `name`'s array that this step uses: its step's tape row; row 0 of a
        [1, B, n] buffer for a value no backward reads (program.step_only), reused at every step."""
        if name in self.p.step_only:
            return "0"
        return "ti" if self.dir == "fwd" else "t"

    def saved_element(self, name: str) -> str:
        """Saved value `name` at this step, row b, unit j; a value that is one number per row
        (program.row_values: layernorm's sqrt(var + eps)) has one column, [T, B, 1]."""
        return f"{ident('SV_', name)}[{self.tape_row(name)}, b, {'0' if name in self.p.row_values else 'j'}]"

    # stores ---------------------------------------------------------------------------------
    def dests(self, key: tuple, is_buffer: bool) -> list[tuple[str | None, str, str | None]]:
        """Where the value `key` is stored: (its kind in program.past_length or None, the array
        element, the element's value before the step for rows past their length)."""
        kind, name = key[0], key[1]
        if kind == "s1":
            out = [("s1", f"{ident('nxt_', name)}[b, j]", f"{ident('cur_', name)}[b, j]")]
            return out + ([("y", "Y[t, b, j]", None)] if name == self.p.cell.output else [])
        if kind == "sv":
            return [("sv", self.saved_element(name), None)]
        if kind == "t" and is_buffer:      # read only by later blocks of the same row
            return [(None, f"{ident('BT_', name)}[b, j]", None)]
        if kind == "drp":  # per-slot scratch (one store stream per array: see _slot_copies)
            return [("drp", f"GR{name}_{self.gslot[(name, key[2])]}[b, j]", None)]
        if kind == "dxp" and self.dxp_alias is None:
            return [("dxp", f"GX{self.xslot[name]}[b, j]", None)]
        if kind == "ds":
            return [("ds", f"{ident('dSn_', name)}[b, j]", f"{ident('dS_', name)}[b, j]")]
        return []

    def stores(self, let, name: str) -> list[str]:
        key = let.key
        out = [f"{dst} = {name}" for _, dst, _ in self.dests(key, let.buffer)]
        if key[0] == "dp" and key[1] not in self.p.dp_shared:   # a shared sum is accumulated once
            src = self.dp_source(let)
            if src.startswith("GD_"):
                out.append(f"{src} = {name}")
            self.sums.append((key[1], src))
        return out

    def dp_source(self, let) -> str:
        """Where a vector parameter's per-element gradient of this step is read from by its sum
        (`_param_sums`): the scratch array of the product adjoint it equals (a bias: b_i's gradient
        is its gate's), or a scratch array of its own (a peephole's dg * c)."""
        e = let.expr
        if e.op == "var" and e.attr[0] in ("drp", "dxp"):
            dst = self.dests(e.attr, False)
            if dst:
                return dst[0][1]
        return f"{ident('GD_', let.key[1])}[b, j]"

    def render(self, block: Block) -> list[str]:
        local: set = set()
        body: list[str] = []
        self.sums: list[tuple[str, str]] = []      # (vector parameter, where its step gradient is read)
        # incoming adjoints of the new states (dy added for the output state), read once per element
        seeds = sorted({n.attr for let in block.lets for n in walk([let.expr]) if n.op == "var" and n.attr[0] == "ds1"})
        for key in seeds:
            body.append(f"{local_name(key)} = {self.load(var(*key), local)}")
            local.add(key)
        per_row: list[str] = []        # values of one number per row: computed once per row, before j
        for let in block.lets:
            rhs = render_expr(let.expr, SPELL, leaf=lambda n, _l=local: self.load(n, _l),
                              const=self.const)
            if let.expr.op == "const":
                rhs = self.const(let.expr.attr)
            name = local_name(let.key)
            row = let.key[0] == "sv" and let.key[1] in self.p.row_values and all(
                n.op == "const" or (n.op == "var" and n.attr[0] == "rp") for n in walk([let.expr]) if n.is_leaf)
            (per_row if row else body).append(f"{name} = {rhs}")
            (per_row if row else body).extend(self.stores(let, name))
            local.add(let.key)
        # rows past their length get what the Program's past_length table says (keep / zero / pass);
        # a vector parameter's gradient sum skips them (past_value checks that the table says zero)
        zero = self.const(0.0)
        skip = []
        for let in block.lets:
            for kind, dst, before in self.dests(let.key, let.buffer):
                if kind is not None:
                    skip.append(f"{dst} = {past_value(self.p, kind, before, zero)}")
            if let.key[0] == "dp":
                past_value(self.p, "dp", None, zero)
        n = extent(block.size)
        lines = [f"# block {block.phase}", "for b in range(b0, b1):", "    if t < L[b]:"]
        lines += ["        " + ln for ln in per_row] + [f"        for j in range({n}):"]
        lines += ["            " + ln for ln in body or ["pass"]]
        if skip:
            lines += ["    else:", f"        for j in range({n}):"] + ["            " + ln for ln in skip]
        if self.dir == "bwd":
            lines += self._slot_copies(block) + self._param_sums()
        return lines

    def _param_sums(self) -> list[str]:
        """Add this step's gradients of the vector parameters into their float64 sums DP_*, one
        loop per parameter after the block. (Inside the block, these read-modify-writes of float64
        arrays kept LLVM from vectorising the whole block on an AVX-512 Xeon; the summation order,
        b then j, is the same.)"""
        out = []
        for p, src in self.sums:
            n = extent(self.p.cell.param_sizes.get(p, ("H",))[0])
            out += [f"for b in range(b0, b1):  # the gradient of {p}, summed over rows and steps",
                    "    if t < L[b]:", f"        for j in range({n}):", f"            {ident('DP_', p)}[j] += {src}"]
        return out

    def scratch(self, stages) -> list[tuple[str, str]]:
        """The per-step scratch arrays GD_* of the vector parameters whose gradient is no product
        adjoint (see dp_source), with their extents."""
        names = []
        for st in stages:
            if isinstance(st, Block):
                for let in st.lets:
                    if let.key[0] == "dp" and let.key[1] not in self.p.dp_shared:
                        src = self.dp_source(let)
                        if src.startswith("GD_"):
                            names.append((src.split("[")[0], extent(st.size)))
        return names

    def _slot_copies(self, block: Block) -> list[str]:
        """Copy the products' adjoints of this block from their per-slot scratch into the sequence
        arrays dRP/dXP. The block itself writes one array per slot: stores into several column
        slots of one array sit a symbolic distance (H) apart, which LLVM cannot vectorise."""
        out = []
        for let in block.lets:
            k = let.key
            if k[0] == "drp" and not self.p.groups[k[1]].reduce:   # a reduction reads its scratch in place
                g, slot = k[1], self.gslot[(k[1], k[2])]
                r = extent(self.p.groups[g].rows)
                out += [f"for b in range(b0, b1):  # {ir_name(k)} -> dRP{g}", f"    for j in range({r}):",
                        f"        dRP{g}[t, b, {slot} * {r} + j] = GR{g}_{slot}[b, j]"]
            elif k[0] == "dxp" and self.dxp_alias is None:
                slot = self.xslot[k[1]]
                out += [f"for b in range(b0, b1):  # {ir_name(k)} -> dXP", "    for j in range(H):",
                        f"        dXP[t, b, {slot} * H + j] = GX{slot}[b, j]"]
        return out


def _reduce_rows(op: str, rows: str, out: str, zero: str, width: str, n: str = "H") -> list[str]:
    """A reduction stage: the mean or sum of each row of `rows` ([b1 - b0, H]) over the hidden axis,
    into `out[b]` (one number per row, which the next blocks read for every j). `zero` is the
    dtype's 0 literal and `width` H in the dtype, which a mean divides by (no float64 promotion)."""
    scale = f" / {width}" if op == "mean" else ""
    return [f"# {op} over each row of {rows}, into {out}[b]",
            f"red_rows = {rows}",
            "for b in range(b0, b1):",
            f"    acc = {zero}",
            f"    for j in range({n}):",
            "        acc += red_rows[b - b0, j]",
            f"    {out}[b] = acc{scale}"]


def _width(dtype: str, n: str) -> str:
    """A row's length `n` in the kernel's dtype (a mean divides by it without promoting)."""
    return f"np.float32({n})" if dtype == "float32" else n


def _heads_alloc(program: Program, np_dt: str, fwd: bool) -> list[str]:
    """The per-head buffers of the groups with `heads N` (HD = H/N units per head): forward, the
    head's operand columns (AH) and its k products (RH); backward, the head's k adjoint slots (DH)
    and its operand adjoint (DVH)."""
    out = []
    for g in program.weight_groups:
        if g.heads > 1:
            k = len(g.mats)
            names = ((f"AH{g.index}", "HD"), (f"RH{g.index}", f"{k} * HD")) if fwd else (
                (f"DH{g.index}", f"{k} * HD"), (f"DVH{g.index}", "HD"))
            out += [f"{n} = np.empty((B, {z}), dtype={np_dt})" for n, z in names]
    if out:
        out.insert(0, f"HD = H // {program.cell.heads}  # units per head")
    return out


def _heads_product(g: int, mats, N: int, operand: str, transposed: bool) -> list[str]:
    # operand: the text that indexes the [B, H] (or [B, k*H]) operand up to its rows, e.g. "cur_h["
    """One step's product of a group with `heads N`, head by head (U{g} is [N, k*HD, HD], U{g}[n]
    the k matrices' head-n blocks stacked: lstmc/backends/sequence.py heads_nt/heads_nn say the
    same in array code). Forward: operand [rows, H] -> RP{g} [rows, k*H] in the dense layout;
    backward: dRP{g}[t] -> DV{g}. N times fewer FLOPs than the dense block-diagonal product."""
    k = len(mats)
    cols = "n * HD:(n + 1) * HD"
    slot = "s * H + n * HD:s * H + (n + 1) * HD"
    if not transposed:
        return [f"for n in range({N}):  # [{', '.join(mats)}]^T, {N} heads",
                f"    AH{g}[b0:b1] = {operand}b0:b1, {cols}]",
                "    if b1 - b0 <= SMALL_ROWS:",
                f"        _mm_nt(AH{g}[b0:b1], U{g}[n], RH{g}[b0:b1])",
                "    else:",
                f"        np.dot(AH{g}[b0:b1], U{g}[n].T, RH{g}[b0:b1])",
                f"    for s in range({k}):",
                f"        RP{g}[b0:b1, {slot}] = RH{g}[b0:b1, s * HD:(s + 1) * HD]"]
    return [f"for n in range({N}):  # [{'; '.join(mats)}], {N} heads",
            f"    for s in range({k}):",
            f"        DH{g}[b0:b1, s * HD:(s + 1) * HD] = {operand}b0:b1, {slot}]",
            "    if b1 - b0 <= SMALL_ROWS:",
            f"        _mm_nn(DH{g}[b0:b1], U{g}[n], DVH{g}[b0:b1])",
            "    else:",
            f"        np.dot(DH{g}[b0:b1], U{g}[n], DVH{g}[b0:b1])",
            f"    DV{g}[b0:b1, {cols}] = DVH{g}[b0:b1]"]


def render(program: Program, dtype: str, key: str = "") -> str:
    """The generated module's source text."""
    cell = program.cell
    np_dt = f"np.{dtype}"
    vec = list(program.vector_params)
    states = list(cell.states)
    saved = [n for n, _ in program.saved]

    # buffers crossing blocks ('t' lets that are buffers), with their extents
    def cross(stages):
        return [(let.key[1], extent(st.size)) for st in stages if isinstance(st, Block) for let in st.lets
                if let.key[0] == "t" and let.buffer]

    # ---- forward
    zero = _const(dtype)(0.0)
    width = "np.float32(H)" if dtype == "float32" else "H"     # H in the kernel's dtype
    fwd_args = (["XP"] + [f"U{g.index}" for g in program.weight_groups] + [ident("p_", p) for p in vec] + ["L"]
                + [ident("Sq_", s) for s in states] + [ident("SV_", n) for n in saved] + ["Y", "stride", "b0", "b1"])
    fr = _BlockRenderer(program, dtype, "fwd")
    fwd_alloc = [f"RP{g.index} = np.empty((B, {len(g.mats)} * {extent(g.rows)}), dtype={np_dt})" if g.reduce is None
                 else f"RP{g.index} = np.empty(B, dtype={np_dt})  # {g.reduce} of each row" for g in program.groups]
    fwd_alloc += [f"{ident('BT_', n)} = np.empty((B, {z}), dtype={np_dt})" for n, z in cross(program.fwd)]
    fwd_alloc += _heads_alloc(program, np_dt, True)
    fwd_body = []
    for s in states:
        fwd_body += [f"{ident('cur_', s)} = {ident('Sq_', s)}[ci]", f"{ident('nxt_', s)} = {ident('Sq_', s)}[ni]"]
    for st in program.fwd:
        if isinstance(st, Block):
            fwd_body += fr.render(st)
        else:
            a = st.a[0]
            operand = (f"{ident('cur_', a.attr)}[b0:b1]" if a.op == "state"
                       else f"{ident('SV_', a.attr[1])}[{fr.tape_row(a.attr[1])}, b0:b1]")
            if st.reduce:
                g = program.groups[st.group]
                fwd_body += _reduce_rows(st.reduce, operand, f"RP{st.group}", zero,
                                         width if g.cols == "H" else _width(dtype, extent(g.cols)), extent(g.cols))
                continue
            if st.heads > 1:
                base = (f"{ident('cur_', a.attr)}[" if a.op == "state"
                        else f"{ident('SV_', a.attr[1])}[{fr.tape_row(a.attr[1])}, ")
                fwd_body += _heads_product(st.group, st.mats, st.heads, base, False)
                continue
            fwd_body += [f"if b1 - b0 <= SMALL_ROWS:  # [{', '.join(st.mats)}]^T",
                         f"    _mm_nt({operand}, U{st.group}, RP{st.group}[b0:b1])",
                         "else:",
                         f"    np.dot({operand}, U{st.group}.T, RP{st.group}[b0:b1])"]
    # ---- backward
    bwd_args = (["dY"] + [f"U{g.index}" for g in program.weight_groups] + [ident("p_", p) for p in vec] + ["L"]
                + [ident("Sq_", s) for s in states] + [ident("SV_", n) for n in saved]
                + [ident("dS_", s) for s in states] + [ident("dSn_", s) for s in states]
                + ["dXP"] + [f"dRP{g.index}" for g in program.groups] + [ident("DP_", p) for p in program.dp_sums()]
                + [f"GR{g.index}_{k}" for g in program.groups for k in range(len(g.mats))]
                + ([f"GX{k}" for k in range(len(program.input_mats))] if program.dxp_alias is None else [])
                + ["b0", "b1"])
    br = _BlockRenderer(program, dtype, "bwd")
    bwd_alloc = [f"DV{g.index} = np.empty((B, {extent(g.cols)}), dtype={np_dt})" if g.reduce is None
                 else f"DV{g.index} = np.empty(B, dtype={np_dt})  # {g.reduce} of each row's adjoint"
                 for g in program.groups]
    bwd_alloc += [f"{ident('BT_', n)} = np.empty((B, {z}), dtype={np_dt})" for n, z in cross(program.bwd)]
    bwd_alloc += [f"{n} = np.empty((B, {z}), dtype={np_dt})" for n, z in br.scratch(program.bwd)]
    bwd_alloc += _heads_alloc(program, np_dt, False)
    bwd_body = []
    for st in program.bwd:
        if isinstance(st, Block):
            bwd_body += br.render(st)
        elif st.reduce:        # the adjoint of a row's mean/sum is the same reduction of its adjoint
            g = program.groups[st.group]
            bwd_body += _reduce_rows(st.reduce, f"GR{st.group}_0[b0:b1]", f"DV{st.group}", zero,
                                     width if g.cols == "H" else _width(dtype, extent(g.cols)), extent(g.cols))
        elif st.heads > 1:
            bwd_body += _heads_product(st.group, st.mats, st.heads, f"dRP{st.group}[t, ", True)
        else:
            bwd_body += [f"if b1 - b0 <= SMALL_ROWS:  # [{'; '.join(st.mats)}]",
                         f"    _mm_nn(dRP{st.group}[t, b0:b1], U{st.group}, DV{st.group}[b0:b1])",
                         "else:",
                         f"    np.dot(dRP{st.group}[t, b0:b1], U{st.group}, DV{st.group}[b0:b1])"]
    # (a copy, not a swap of the two arrays: LLVM must see distinct arrays to vectorise the blocks)
    bwd_swap = [f"{ident('dS_', s)}[b0:b1, :] = {ident('dSn_', s)}[b0:b1]" for s in states]
    return render_template("numba_cell.py.j2", spec=compile_spec(program.cell), cell=cell.name, key=key, dtype=dtype,
                           prelude=PRELUDE[dtype],
                           prelude_names=prelude_names(program), fwd_args=", ".join(fwd_args), fwd_alloc=fwd_alloc,
                           fwd_body=fwd_body, bwd_args=", ".join(bwd_args), bwd_alloc=bwd_alloc,
                           fwd_dims=_extent_lines(program, "Y"), bwd_dims=_extent_lines(program, "dY"),
                           bwd_body=bwd_body, bwd_swap=bwd_swap)

