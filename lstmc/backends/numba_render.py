"""The Numba renderer: the lowered Program -> a Python module of @njit kernels (templates/numba_cell.py.j2).

It spells ops and places loads and stores; it makes no mathematical decisions. Per block it emits
one loop nest `for b in range(b0, b1): for j in range(H):` whose body is the block's lets as scalar
locals (so a block is fused: every intermediate lives in a register), with loads from the arrays
that hold leaves (states, products, the tape) and stores for the values that outlive the block.

float32 kernels use arithmetic-only tanh/sigmoid (a rational approximation, |error| < 4e-7 and
< 3e-7 respectively, tested) so the j-loop vectorises; past the point where float32 rounds the true
value to +-1 they return exactly +-1 (as libm does), so a saturated gate's slope is exactly 0 and
float32 gradients do not grow with |x|. Every literal is `np.float32(...)` so nothing silently
promotes to float64. float64 kernels use libm and match the reference to rounding.
"""

from __future__ import annotations

from ..ir import Node, var, var_name as ir_name, walk
from ..lower import Block, Program
from .render import check_spelling, ident, render_expr, render_template

SPELL = {op: f"_{op}({{0}})" for op in ("exp", "log", "sigmoid", "tanh", "relu", "softplus", "step", "sqrt",
                                         "abs", "sign")}
check_spelling(SPELL, "numba")

# Rational minimax approximation of tanh on [-7.9053, 7.9053] (the coefficients Eigen uses for float):
# tanh(x) ~ x * P(x^2) / Q(x^2); beyond the clamp tanh rounds to +-1 in float32.
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
TANH_CLAMP = 7.90531110763549805
# The smallest float32 x whose correctly rounded tanh(x) / sigmoid(x) is 1.0 (tests/test_numerics.py
# recomputes both). The approximations alone top out at 1 - 2.4e-7 / 1 - 1.2e-7, whose "slope"
# 1 - t^2 (or s(1 - s)) never reaches 0: weight gradients then grow with |x| at saturated gates.
TANH_ONE = 9.010913848876953
SIGMOID_ONE = 17.32868003845215
TANH_MAX_ERROR = 4e-7       # measured 3.4e-7 over a 2M-point grid of [-12, 12]; tests/test_numba.py
SIGMOID_MAX_ERROR = 3e-7    # measured 2.3e-7


def _horner(coeffs, var_name, f) -> str:
    expr = f(coeffs[0])
    for c in coeffs[1:]:
        expr = f"({expr}) * {var_name} + {f(c)}"
    return expr


# helpers whose source is the same for both dtypes but for the spelling of literals ({0}, {1}, {m1})
_COMMON = """
{inl}
def _relu(x):
    return {0} if x < {0} else x          # NaN stays NaN, as in the reference


{inl}
def _step(x):
    return {1} if x > {0} else {0}


{inl}
def _sign(x):
    return {1} if x > {0} else ({m1} if x < {0} else x * {0})   # sign(NaN) is NaN, sign(0) is 0


{inl}
def _abs(x):
    return abs(x)


{inl}
def _exp(x):
    return math.exp(x)


{inl}
def _log(x):
    return math.log(x)


{inl}
def _sqrt(x):
    return math.sqrt(x)


{inl}
def _softplus(x):
    return max(x, {0}) + math.log1p(math.exp(-abs(x)))
"""


def activations(dtype: str) -> str:
    """Source of the inline activation helpers for one dtype."""
    inl = "@njit(inline=\"always\", **_JIT)"
    f = _const(dtype)
    common = _COMMON.format(f(0.0), f(1.0), inl=inl, m1=f(-1.0))
    if dtype == "float32":
        return f'''

# float32: arithmetic-only approximations (no libm call), so loops calling them vectorise.
{inl}
def _tanh(x):
    # |error| < {TANH_MAX_ERROR:g} over all float32 inputs (rational approximation, Eigen's coefficients)
    a = min(max(x, {f(-TANH_CLAMP)}), {f(TANH_CLAMP)})
    a2 = a * a
    p = {_horner(TANH_P, "a2", f)}
    q = {_horner(TANH_Q, "a2", f)}
    r = a * p / q
    # exactly +-1 where float32 tanh rounds there (selects: the loop stays vectorised)
    r = {f(1.0)} if x >= {f(TANH_ONE)} else r
    return {f(-1.0)} if x <= {f(-TANH_ONE)} else r


{inl}
def _sigmoid(x):
    # sigmoid(x) = (1 + tanh(x / 2)) / 2; |error| < {SIGMOID_MAX_ERROR:g}; exactly 1 where float32 rounds there
    s = {f(0.5)} * _tanh({f(0.5)} * x) + {f(0.5)}
    return {f(1.0)} if x >= {f(SIGMOID_ONE)} else s

{common}'''
    return f'''

# float64: libm, matching the reference to rounding.
{inl}
def _tanh(x):
    return math.tanh(x)


{inl}
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)

{common}'''


# Below this many rows a step's recurrent product is a loop in the kernel, not a BLAS call: at
# batch 1 an sgemm call costs ~45 us of overhead for ~5 us of work (U read once from cache).
SMALL_ROWS = 4


def small_products(dtype: str) -> str:
    """Source of the in-kernel products for steps of at most SMALL_ROWS rows."""
    inl = "@njit(inline=\"always\", **_JIT)"
    zero = _const(dtype)(0.0)
    return f'''

SMALL_ROWS = {SMALL_ROWS}   # steps with at most this many batch rows multiply here, not in BLAS


{inl}
def _mm_nt(a, W, out):
    # out = a @ W.T: dot products over contiguous rows of W, four output units at a time (each
    # load of a serves four products)
    n = W.shape[0]
    n4 = n - n % 4
    for b in range(a.shape[0]):
        for k in range(0, n4, 4):
            s0 = {zero}
            s1 = {zero}
            s2 = {zero}
            s3 = {zero}
            for j in range(a.shape[1]):
                v = a[b, j]
                s0 += v * W[k, j]
                s1 += v * W[k + 1, j]
                s2 += v * W[k + 2, j]
                s3 += v * W[k + 3, j]
            out[b, k] = s0
            out[b, k + 1] = s1
            out[b, k + 2] = s2
            out[b, k + 3] = s3
        for k in range(n4, n):
            acc = {zero}
            for j in range(a.shape[1]):
                acc += a[b, j] * W[k, j]
            out[b, k] = acc


{inl}
def _mm_nn(a, W, out):
    # out = a @ W: rows of W scaled and added, contiguous along the output
    for b in range(a.shape[0]):
        for j in range(W.shape[1]):
            out[b, j] = {zero}
        for k in range(W.shape[0]):
            s = a[b, k]
            for j in range(W.shape[1]):
                out[b, j] += s * W[k, j]
'''


def _const(dtype):
    if dtype == "float32":
        return lambda v: f"np.float32({float(v)!r})"
    return lambda v: repr(float(v))


class _Names:
    """Array and local names of the generated kernels."""

    @staticmethod
    def local(key: tuple) -> str:
        kind, *rest = key
        if kind in ("rp", "drp"):
            return ident(f"{kind}{int(rest[0])}_", rest[1])
        if kind == "dv":
            return f"dv{int(rest[0])}_"
        return ident({"s1": "n_", "sv": "sv_", "t": "t_", "ds1": "dn_", "ds": "ds_", "dp": "dp_",
                      "dxp": "dxp_", "xp": "xp_"}[kind], rest[0])


class _BlockRenderer:
    """Renders one Block as a fused loop nest, given how each leaf is loaded and each key stored."""

    def __init__(self, program: Program, dtype: str, direction: str):
        self.p = program
        self.dtype = dtype
        self.dir = direction
        self.const = _const(dtype)
        self.xslot = {m: j for j, m in enumerate(program.input_mats)}
        self.gslot = {(g.index, m): j for g in program.groups for j, m in enumerate(g.mats)}
        self.dxp_alias = dxp_alias(program)

    # loads ----------------------------------------------------------------------------------
    def load(self, node: Node, local: set) -> str:
        if node.op == "param":
            return f"{ident('p_', node.attr)}[j]"
        if node.op == "state":
            return (f"{ident('cur_', node.attr)}[b, j]" if self.dir == "fwd"
                    else f"{ident('Sq_', node.attr)}[t, b, j]")
        key = node.attr
        if key in local:
            return _Names.local(key)
        kind = key[0]
        if kind == "xp":
            return f"XP[t, b, {self.xslot[key[1]]} * H + j]"
        if kind == "rp":
            return f"RP{key[1]}[b, {self.gslot[(key[1], key[2])]} * H + j]"
        if kind == "dv":
            return f"DV{key[1]}[b, j]"
        if kind == "s1":
            return (f"{ident('nxt_', key[1])}[b, j]" if self.dir == "fwd"
                    else f"{ident('Sq_', key[1])}[t + 1, b, j]")
        if kind == "sv":
            return f"{ident('SV_', key[1])}[{'ti' if self.dir == 'fwd' else 't'}, b, j]"
        if kind == "t":
            return f"{ident('BT_', key[1])}[b, j]"
        if kind == "ds1":  # the incoming adjoint of s' (dy added for the output state)
            s = key[1]
            extra = " + dY[t, b, j]" if s == self.p.cell.output else ""
            return f"{ident('dS_', s)}[b, j]{extra}"
        if kind == "drp":
            return f"GR{key[1]}_{self.gslot[(key[1], key[2])]}[b, j]"
        if kind == "dxp":
            return f"GX{self.xslot[key[1]]}[b, j]"
        raise KeyError(key)  # pragma: no cover

    # stores ---------------------------------------------------------------------------------
    def stores(self, key: tuple, name: str, is_buffer: bool) -> list[str]:
        kind = key[0]
        out = []
        if kind == "s1":
            out.append(f"{ident('nxt_', key[1])}[b, j] = {name}")
            if key[1] == self.p.cell.output:
                out.append(f"Y[t, b, j] = {name}")
        elif kind == "sv":
            out.append(f"{ident('SV_', key[1])}[ti, b, j] = {name}")
        elif kind == "t" and is_buffer:
            out.append(f"{ident('BT_', key[1])}[b, j] = {name}")
        elif kind == "drp":  # per-slot scratch (one store stream per array: see _slot_copies)
            out.append(f"GR{key[1]}_{self.gslot[(key[1], key[2])]}[b, j] = {name}")
        elif kind == "dxp" and self.dxp_alias is None:
            out.append(f"GX{self.xslot[key[1]]}[b, j] = {name}")
        elif kind == "ds":
            out.append(f"{ident('dSn_', key[1])}[b, j] = {name}")
        elif kind == "dp":
            out.append(f"{ident('DP_', key[1])}[j] += {name}")
        return out

    def render(self, block: Block) -> list[str]:
        local: set = set()
        body: list[str] = []
        # incoming adjoints of the new states (dy added for the output state), read once per element
        seeds = sorted({n.attr for let in block.lets for n in walk([let.expr]) if n.op == "var" and n.attr[0] == "ds1"})
        for key in seeds:
            body.append(f"{_Names.local(key)} = {self.load(var(*key), local)}")
            local.add(key)
        for let in block.lets:
            rhs = render_expr(let.expr, SPELL, leaf=lambda n, _l=local: self.load(n, _l),
                              const=self.const)
            if let.expr.op == "const":
                rhs = self.const(let.expr.attr)
            name = _Names.local(let.key)
            body.append(f"{name} = {rhs}")
            body.extend(self.stores(let.key, name, let.buffer))
            local.add(let.key)
        # rows past their length: copy states (forward) / pass adjoints through (backward)
        skip = []
        for let in block.lets:
            if self.dir == "fwd" and let.key[0] == "s1":
                s = let.key[1]
                skip.append(f"{ident('nxt_', s)}[b, j] = {ident('cur_', s)}[b, j]")
                if s == self.p.cell.output:
                    skip.append("Y[t, b, j] = " + self.const(0.0))
            if self.dir == "bwd" and let.key[0] == "ds":
                s = let.key[1]
                skip.append(f"{ident('dSn_', s)}[b, j] = {ident('dS_', s)}[b, j]")
            if self.dir == "bwd" and (let.key[0] == "drp" or (let.key[0] == "dxp" and self.dxp_alias is None)):
                skip.append(f"{self.stores(let.key, self.const(0.0), True)[0].split(' = ')[0]} = {self.const(0.0)}")
        lines = [f"# block {block.phase}", "for b in range(b0, b1):", "    if t < L[b]:", "        for j in range(H):"]
        lines += ["            " + ln for ln in body]
        if skip:
            lines += ["    else:", "        for j in range(H):"] + ["            " + ln for ln in skip]
        if self.dir == "bwd":
            lines += self._slot_copies(block)
        return lines

    def _slot_copies(self, block: Block) -> list[str]:
        """Copy the products' adjoints of this block from their per-slot scratch into the sequence
        arrays dRP/dXP. The block itself writes one array per slot: stores into several column
        slots of one array sit a symbolic distance (H) apart, which LLVM cannot vectorise."""
        out = []
        for let in block.lets:
            k = let.key
            if k[0] == "drp":
                g, slot = k[1], self.gslot[(k[1], k[2])]
                out += [f"for b in range(b0, b1):  # {ir_name(k)} -> dRP{g}", "    for j in range(H):",
                        f"        dRP{g}[t, b, {slot} * H + j] = GR{g}_{slot}[b, j]"]
            elif k[0] == "dxp" and self.dxp_alias is None:
                slot = self.xslot[k[1]]
                out += [f"for b in range(b0, b1):  # {ir_name(k)} -> dXP", "    for j in range(H):",
                        f"        dXP[t, b, {slot} * H + j] = GX{slot}[b, j]"]
        return out


def dxp_alias(program: Program):
    """The group whose product adjoints equal the input products' adjoints slot for slot (the LSTM:
    d(W_i x) = d(U_i h) = dG_i), so dXP need not be stored; None when there is no such group."""
    adj = {let.key: let.expr for st in program.bwd if isinstance(st, Block) for let in st.lets}
    for g in program.groups:
        if len(g.mats) != len(program.input_mats) or not program.input_mats:
            continue
        if all(adj.get(("dxp", m)) is var("drp", g.index, gm) for m, gm in zip(program.input_mats, g.mats)):
            return g.index
    return None


def render(program: Program, dtype: str, key: str = "") -> str:
    """The generated module's source text."""
    cell = program.cell
    np_dt = f"np.{dtype}"
    vec = list(program.vector_params)
    states = list(cell.states)
    saved = [n for n, _ in program.saved]

    # buffers crossing blocks ('t' lets that are buffers)
    def cross(stages):
        return [let.key[1] for st in stages if isinstance(st, Block) for let in st.lets
                if let.key[0] == "t" and let.buffer]

    # ---- forward
    fwd_args = (["XP"] + [f"U{g.index}" for g in program.groups] + [ident("p_", p) for p in vec] + ["L"]
                + [ident("Sq_", s) for s in states] + [ident("SV_", n) for n in saved] + ["Y", "stride", "b0", "b1"])
    fr = _BlockRenderer(program, dtype, "fwd")
    fwd_alloc = [f"RP{g.index} = np.empty((B, {len(g.mats)} * H), dtype={np_dt})" for g in program.groups]
    fwd_alloc += [f"{ident('BT_', n)} = np.empty((B, H), dtype={np_dt})" for n in cross(program.fwd)]
    fwd_body = []
    for s in states:
        fwd_body += [f"{ident('cur_', s)} = {ident('Sq_', s)}[ci]", f"{ident('nxt_', s)} = {ident('Sq_', s)}[ni]"]
    for st in program.fwd:
        if isinstance(st, Block):
            fwd_body += fr.render(st)
        else:
            a = st.a[0]
            operand = (f"{ident('cur_', a.attr)}[b0:b1]" if a.op == "state" else f"{ident('SV_', a.attr[1])}[ti, b0:b1]")
            fwd_body += [f"if b1 - b0 <= SMALL_ROWS:  # [{', '.join(st.mats)}]^T",
                         f"    _mm_nt({operand}, U{st.group}, RP{st.group}[b0:b1])",
                         "else:",
                         f"    np.dot({operand}, U{st.group}.T, RP{st.group}[b0:b1])"]
    # ---- backward
    bwd_args = (["dY"] + [f"U{g.index}" for g in program.groups] + [ident("p_", p) for p in vec] + ["L"]
                + [ident("Sq_", s) for s in states] + [ident("SV_", n) for n in saved]
                + [ident("dS_", s) for s in states] + [ident("dSn_", s) for s in states]
                + ["dXP"] + [f"dRP{g.index}" for g in program.groups] + [ident("DP_", p) for p in vec]
                + [f"GR{g.index}_{k}" for g in program.groups for k in range(len(g.mats))]
                + ([f"GX{k}" for k in range(len(program.input_mats))] if dxp_alias(program) is None else [])
                + ["b0", "b1"])
    br = _BlockRenderer(program, dtype, "bwd")
    bwd_alloc = [f"DV{g.index} = np.empty((B, H), dtype={np_dt})" for g in program.groups]
    bwd_alloc += [f"{ident('BT_', n)} = np.empty((B, H), dtype={np_dt})" for n in cross(program.bwd)]
    bwd_body = []
    for st in program.bwd:
        if isinstance(st, Block):
            bwd_body += br.render(st)
        else:
            bwd_body += [f"if b1 - b0 <= SMALL_ROWS:  # [{'; '.join(st.mats)}]",
                         f"    _mm_nn(dRP{st.group}[t, b0:b1], U{st.group}, DV{st.group}[b0:b1])",
                         "else:",
                         f"    np.dot(dRP{st.group}[t, b0:b1], U{st.group}, DV{st.group}[b0:b1])"]
    # (a copy, not a swap of the two arrays: LLVM must see distinct arrays to vectorise the blocks)
    bwd_swap = [f"{ident('dS_', s)}[b0:b1, :] = {ident('dSn_', s)}[b0:b1]" for s in states]
    return render_template("numba_cell.py.j2", cell=cell.name, key=key, dtype=dtype,
                           activations=activations(dtype) + small_products(dtype), fwd_args=", ".join(fwd_args), fwd_alloc=fwd_alloc,
                           fwd_body=fwd_body, bwd_args=", ".join(bwd_args), bwd_alloc=bwd_alloc,
                           bwd_body=bwd_body, bwd_swap=bwd_swap)

