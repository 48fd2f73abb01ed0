"""NumbaCell, the numba backend's CompiledCell: renders the Program (render.py), builds and imports
the generated module (lstmc/backends/cache.py), chooses a thread plan (plan.py), and runs the
kernels: the input-product GEMM before the time loop, forward (whole sequence, or time chunks
without a tape), backward and the whole-sequence weight and input GEMMs after it.

The recipe (docs/design.md, "Performance notes"): the input products of all T·B rows are one GEMM before the loop; per
step, each recurrent GEMM is one BLAS call (`np.dot(a, b, out)`, SciPy's OpenBLAS) into a
preallocated buffer, and each phase's pointwise work is one fused loop nest; backward writes the
products' adjoints for every step, and the weight and input gradients are whole-sequence GEMMs after
the reverse loop. The generated source is a real file in the cache directory (so Numba's own
`cache=True` works across processes); see `build_module`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings

import numpy as np

from ...lower import Program
from ...threads import budget
from ..base import CompiledCell, Gradients, Tape, check_flags
from ..cache import build_module, forget_numba_cache, generator_key, options_key
from ..sequence import (clear_padding, input_grads, input_products, order_extra, order_inputs, pack,
                        param_grads, restore_order, reverse_index, weight_grads)
from .blas import BlasOps
from .memory import Recycling
from .options import JIT
from .plan import MIN_ROWS, Plan, parse_plan, row_ranges, run_chunks
from .render import render

_lock = threading.Lock()   # one module build at a time in this process


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()   # a build another thread of the parent was in does not exist in the child


os.register_at_fork(after_in_child=_after_fork_in_child)


def _require_c(name: str, a) -> None:
    if not isinstance(a, np.ndarray):
        fix = (f"pass {name}.detach().cpu().numpy(), or compile for backend='torch', which takes tensors"
               if hasattr(a, "detach") else f"convert it with np.asarray({name})")
        raise ValueError(f"{name} must be a NumPy array for the numba backend, got {type(a).__name__}: {fix}")
    if not a.flags.c_contiguous:
        how = "has negative strides (a reversed view)" if any(s < 0 for s in a.strides) else "is not C-contiguous"
        raise ValueError(f"{name} {how}: pass np.ascontiguousarray({name}), a C-contiguous copy (the numba "
                         f"backend reads arrays in place, without copies, in row-major order)")


class NumbaCell(Recycling, CompiledCell):
    backend = "numba"

    def __init__(self, program: Program, dtype: str = "float32", key: str = ""):
        super().__init__(program, dtype, key)
        self.source = render(program, self.dtype, key)
        self.dxp_alias = program.dxp_alias
        self.ops = BlasOps(self.np_dtype)
        self._local = threading.local()
        self.plans: dict[tuple, Plan] = {}     # (B, H, budget) -> the plan "auto" measured for it
        # the name covers what the source text does not: the generator's code and the @njit options
        digest = hashlib.sha256((self.source + generator_key() + options_key(JIT)).encode()).hexdigest()[:16]
        safe = "".join(ch if ch.isalnum() else "_" for ch in program.cell.name)
        name = f"{safe}_{self.dtype}_{digest}"
        with _lock:
            self.module = build_module(self.source, name, "numba")
        try:
            self.warm()
        except Exception as e:
            # A Numba cache entry that fails to load (truncated, garbage, empty) fails every compile
            # of this module, the next save included: delete the module's cache files, import it
            # afresh and compile again. Nothing to delete: a real error, raised as it is.
            gone = forget_numba_cache(self.module)
            if not gone:
                raise
            with _lock:
                self.module = build_module(self.source, name, "numba", fresh=True)
            self.warm()
            why = f"{type(e).__name__}: {e}"
            warnings.warn(f"lstmc: the Numba cache of cell {program.cell.name!r} ({self.dtype}) could not be loaded "
                          f"({why[:200]}); deleted its {len(gone)} cache files in {gone[0].parent} and compiled it "
                          f"again", RuntimeWarning, stacklevel=2)

    def warm(self) -> None:
        """Compile both kernels now (from Numba's cache when it has them) on a tiny problem."""
        H = 3 * self.cell.heads                                  # a multiple of the heads
        sizes = {k: 2 for k in self.cell.sizes} or None
        p = self.init_params(2, H, seed=0, sizes=sizes)
        x = np.zeros((2, 1, 2), dtype=self.np_dtype)
        ins = {u: np.zeros(shp, self.np_dtype) for u, shp in self.input_shapes(2, 1, H, sizes).items()} or None
        y, _, tape = self.forward(x, p, inputs=ins)
        self.backward(tape, np.zeros_like(y))

    def plan(self, B: int, H: int) -> Plan:
        """The thread plan for a batch of B rows, from LSTMC_NUMBA_PLAN (see parse_plan).

        "auto" measures, once per (B, H, budget), a 12-step forward of this cell under each of:
        every step GEMM on the whole budget, on one thread, and batch-row chunks of at least
        MIN_ROWS rows on one thread each. Which wins depends on the machine: on the 2-vCPU VM of
        benchmarks/RESULTS.md, whose vCPUs share one core's vector units, the default wins (lstm
        T=100 B=64 H=256 fwd+bwd: 160 ms; one BLAS thread 193 ms; two row chunks 201 ms)."""
        n = budget()
        choice = parse_plan(os.environ.get("LSTMC_NUMBA_PLAN", "default"))
        if isinstance(choice, Plan):
            return Plan(min(choice.chunks, B), choice.blas)
        if choice == "default" or n == 1:
            return Plan(1, n)
        key = (B, H, n)
        if key not in self.plans:
            cands = [Plan(1, n), Plan(1, 1)]
            if B >= 2 * MIN_ROWS:
                cands.append(Plan(min(n, B // MIN_ROWS), 1))
            self.plans[key] = min(cands, key=lambda pl: self._time_plan(pl, B, H))
        return self.plans[key]

    def _time_plan(self, plan: Plan, B: int, H: int, T: int = 12) -> float:
        """Best of 3 forward calls (after a warm-up: pool threads, page faults) under `plan`."""
        x = np.random.default_rng(0).standard_normal((T, B, H)).astype(self.np_dtype)
        sizes = {k: H for k in self.cell.sizes} or None
        params = self.init_params(H, H, seed=0, sizes=sizes)
        ins = {u: np.ones(shp, self.np_dtype) for u, shp in self.input_shapes(T, B, H, sizes).items()} or None
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            self.forward(x, params, inputs=ins, _plan=plan)
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    # ------------------------------------------------------------------------------------------
    def _check_numba_inputs(self, x, params, state, inputs=None):
        _require_c("x", x)
        for k, v in (inputs or {}).items():
            _require_c(f"inputs['{k}']", v)
        for k, v in params.items():
            _require_c(f"params['{k}']", v)
        for k, v in (state or {}).items():
            _require_c(f"state['{k}']", v)

    def _saved_shape(self, name: str, T: int, B: int, dims: dict) -> tuple:
        """The array of saved value `name`: Program.tape_shape's compact form (numba keeps step-only
        values in one reused row and row values in one column)."""
        prog = self.program
        return prog.tape_shape(name, T, B, dims[prog.saved_sizes.get(name, "H")], compact=True)

    def forward(self, x, params, state=None, lengths=None, reverse=False, need_tape=True, inputs=None, _plan=None):
        """Run the sequence. Returns (y [T, B, H], {state: [B, H]} final, tape or None). `inputs`: the
        cell's extra inputs. `_plan` (internal: plan measurement) overrides the thread plan."""
        T, B, I, H, L = self.check_inputs(x, params, state, lengths, inputs)
        check_flags(reverse=reverse, need_tape=need_tape)
        self._check_numba_inputs(x, params, state, inputs)
        prog, ops = self.program, self.ops
        dims = self.dims(params, inputs, H)
        sz = {s: dims[prog.state_size(s)] for s in prog.cell.states}
        dt = self.np_dtype
        nx = len(prog.input_mats)
        pk = pack(prog, params, lambda names: self._packed(params, names),
                  lambda names: self._packed_heads(params, names))
        Wcat = pk.W if nx else np.zeros((0, I), dt)
        Ucat = [u for u in pk.U if u is not None]   # [k*H, H] per weight group ([N, k*H/N, H/N] with heads N)
        vecs = list(pk.vecs.values())
        plan = _plan or self.plan(B, H)
        steps = max(1, self.INFER_BYTES // max(1, B * nx * H * dt.itemsize))
        if not need_tape and steps < T:
            rev_idx = reverse_index(T, L) if reverse else None
            return self._forward_in_chunks(x, L, rev_idx, state, Wcat, Ucat, vecs, plan, steps, H, inputs, pk.V, dims)
        x, rev_idx = order_inputs(ops, x, L, reverse)
        ins = order_extra(ops, inputs, L, rev_idx)
        # XP is dead once the kernel returns: backward reuses its memory for dRP0 (same size for LSTM/GRU)
        XP = input_products(ops, prog, x, Wcat, H, self._workspace("big", (T * B, nx * H)) if nx else None,
                            inputs=ins, V=pk.V)
        if XP is None:
            XP = np.zeros((T, B, 0), dt)
        rows = T + 1 if need_tape else 2
        Sq = {}
        for s in prog.cell.states:
            Sq[s] = self._recycled((rows, B, sz[s]))
            Sq[s][0] = state[s] if state is not None and s in state else 0.0
        # saved values of rows past their length are never written (nor read): zeros keep them finite
        short = not bool(np.all(L == T))
        SV = {n: self._recycled(self._saved_shape(n, T if need_tape else 1, B, dims), zero=short) for n, _ in prog.saved}
        Y = self._recycled((T, B, sz[prog.cell.output]))
        run_chunks(self.module.forward, plan, B,
                   lambda c: (XP, *Ucat, *vecs, L, *Sq.values(), *SV.values(), Y, 1 if need_tape else 0))
        last = T if need_tape else T % 2
        final = {s: Sq[s][last].copy() for s in prog.cell.states}
        Y = restore_order(ops, Y, rev_idx)
        tape = None
        if need_tape:
            tape = Tape(owner=self, x=x, states=Sq, saved=SV, lengths=L, mask=None, reverse=bool(reverse), rev_idx=rev_idx,
                        packed={"Wcat": Wcat, "vecs": vecs, "U": Ucat},
                        shapes=(T, B, I, H), extra={"plan": plan}, inputs=ins, vmats=pk.V, dims=dims)
        return Y, final, tape

    # Without a tape, the input products are computed a time chunk at a time into a workspace of at
    # most this many bytes (at least one step), so inference memory is the output plus a bounded
    # workspace instead of a [T, B, nx*H] buffer (4x the output for an LSTM).
    INFER_BYTES = 4 << 20

    def _forward_in_chunks(self, x, L, rev_idx, state, Wcat, Ucat, vecs, plan, steps, H, inputs=None, V=None,
                           dims=None):
        """forward(need_tape=False) over time chunks of `steps` steps: each chunk's input products,
        then the kernel on that chunk, its state carried to the next in the kernel's ring of two."""
        prog, ops = self.program, self.ops
        T, B, I = x.shape
        nx = len(prog.input_mats)
        dims = dims or {"H": H}
        Sq = {}
        for s in prog.cell.states:
            Sq[s] = self._recycled((2, B, dims[prog.state_size(s)]))
            Sq[s][0] = state[s] if state is not None and s in state else 0.0
        SV = {n: self._recycled(self._saved_shape(n, 1, B, dims), zero=True) for n, _ in prog.saved}
        Hy = dims[prog.state_size(prog.cell.output)]
        Y = self._recycled((T, B, Hy))
        cols = np.arange(B)[None, :]
        for t0 in range(0, T, steps):
            n = min(steps, T - t0)
            Lc = np.clip(L - t0, 0, n)                   # each row's remaining length within the chunk
            xc = ops.take_rows(x, rev_idx[t0:t0 + n]) if rev_idx is not None else x[t0:t0 + n]
            xc = clear_padding(xc, Lc, n)
            ic = {u: clear_padding(ops.take_rows(a, rev_idx[t0:t0 + n]) if rev_idx is not None else a[t0:t0 + n], Lc, n)
                  for u, a in (inputs or {}).items()}
            XP = input_products(ops, prog, xc, Wcat, H, self._workspace("xpc", (n * B, nx * H)) if nx else None,
                                inputs=ic, V=V)
            if XP is None:
                XP = np.zeros((n, B, 0), self.np_dtype)
            Yc = self._workspace("yc", (n, B, Hy)) if rev_idx is not None else Y[t0:t0 + n]
            run_chunks(self.module.forward, plan, B, lambda c: (XP, *Ucat, *vecs, Lc, *Sq.values(), *SV.values(), Yc, 0))
            if n % 2:                                   # the chunk ended in ring row 1: the next starts from row 0
                for s in prog.cell.states:
                    Sq[s][0] = Sq[s][1]
            if rev_idx is not None:
                Y[rev_idx[t0:t0 + n], cols] = Yc         # back to the original time positions
        return Y, {s: Sq[s][0].copy() for s in prog.cell.states}, None

    def backward(self, tape, dy, dstate=None):
        """Gradients (dx, {state: d initial state}, {param: grad}) given dy [T, B, H] and optional dstate."""
        self.check_backward(tape, dy, dstate)
        _require_c("dy", dy)
        prog, ops = self.program, self.ops
        T, B, I, H = tape.shapes
        dt = self.np_dtype
        dy = restore_order(ops, dy, tape.rev_idx)     # the index is its own inverse: to loop order
        dims = tape.dims or {"H": H}
        sz = {s: dims[prog.state_size(s)] for s in prog.cell.states}
        dS = {s: (np.array(dstate[s], dtype=dt, copy=True) if dstate is not None and s in dstate
                  else np.zeros((B, sz[s]), dt)) for s in prog.cell.states}
        dSn = {s: np.empty((B, sz[s]), dt) for s in prog.cell.states}
        nx = len(prog.input_mats)
        # every element of dXP/dRP is written unless some row is shorter than T (then zeros stay)
        zero = not bool(np.all(tape.lengths == T))
        # a reduction's product adjoints are read only by its own step (no weight gradient): the kernel
        # reduces them from its per-step slot scratch, and its dRP argument is a placeholder
        dRP = [self._workspace("big" if g.index == 0 else f"dRP{g.index}", (T, B, len(g.mats) * dims[g.rows]), zero)
               if g.reduce is None else np.zeros((1, 1, 1), dt) for g in prog.groups]
        alias = self.dxp_alias
        # with an alias the input products' adjoints are dRP[alias]: no dXP at all
        dXP = self._workspace("dXP", (T, B, nx * H), zero) if alias is None else np.zeros((0, 0, 0), dt)
        plan = tape.extra.get("plan") or self.plan(B, H)
        nch = len(row_ranges(B, min(plan.chunks, B)))
        # per chunk: its own bias-gradient sums (float64) and slot scratch; everything else is
        # shared, each chunk touching only its own rows
        dps = [{p: np.zeros(dims[prog.cell.param_sizes.get(p, ("H",))[0]], np.float64) for p in prog.dp_sums()}
               for _ in range(nch)]   # shared sums once
        widths = ([dims[g.rows] for g in prog.groups for _ in g.mats]
                  + ([H] * len(prog.input_mats) if alias is None else []))
        scratch = [[np.zeros((B, w), dt) for w in widths] for _ in range(nch)]
        run_chunks(self.module.backward, plan, B,
                   lambda c: (dy, *tape.packed["U"], *tape.packed["vecs"], tape.lengths, *tape.states.values(),
                              *tape.saved.values(), *dS.values(), *dSn.values(), dXP, *dRP, *dps[c].values(),
                              *scratch[c]))
        dp = {p: sum(d[p] for d in dps).astype(dt) for p in prog.dp_sums()}
        if alias is not None:
            dXP = dRP[alias]
        grads, dx = weight_grads(ops, prog, tape, tape.packed["Wcat"], dXP if nx else None, dRP,
                                 dx_out=self._recycled((T, B, I)))
        dx = restore_order(ops, dx, tape.rev_idx)
        dinputs = {k: restore_order(ops, v, tape.rev_idx)
                   for k, v in input_grads(ops, prog, tape, dXP if nx else None).items()}
        return Gradients(dx, dS, param_grads(ops, prog, grads, dp, lambda shape: np.zeros(shape, dt), I, H, dims),
                         dinputs)
