"""`TritonCell`: the CompiledCell API over the generated kernels. It builds (or loads from the
cache) the generated module, converts arguments, launches the kernels eagerly (both designs) or
through the graph workspaces (graphs.py), and does the whole-sequence GEMMs around the time loops.

The recipe (docs/design.md, "Performance notes"; docs/triton.md):
  - the input products of all T·B rows are one GEMM before the time loop (torch.matmul);
  - per step, either one launch per segment (`step` kernels: the recurrent GEMM tile with tl.dot
    and the pointwise block fused as its epilogue, all gate slots of a hidden tile per program), or
    one launch for the whole sequence (`persistent` kernels: one program per batch tile owning all
    H, recurrent weights loaded once into registers, state carried on chip);
  - backward mirrors it in reverse time; the weight and input gradients are whole-sequence GEMMs
    after the loop with float32 accumulation, bias gradients are float32 partial sums per batch tile;
  - on CUDA the step design's time loops are captured once per shape into CUDA graphs over static
    workspaces and replayed (graphs.py, docs/triton.md "CUDA graphs"): one launch per loop, not ~3T.

Storage: `dtype` float32 or float64 (everything in that type), or bfloat16/float16 storage
(`TritonCell(program, "bfloat16")`, or `compile(cell, "triton", "float32", storage="bfloat16")`):
sequences, tape activations and weights in the storage type, arithmetic, accumulation and the
recurrent state (and its tape) in float32. NumPy has no bfloat16: a bfloat16 cell takes float32
NumPy arrays (rounded on entry) and returns float32 NumPy arrays; torch tensors must be bfloat16.

Inputs may be NumPy arrays (copied to the device, results returned as NumPy) or torch tensors on
the kernels' device (CUDA, or CPU under the interpreter), used in place and returned as tensors.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
import weakref

import numpy as np

from ...lower import Program
from ..base import CompiledCell, Gradients, Tape, check_flags
from ..sequence import (dense_weights, input_grads, input_products, order_extra, order_inputs, pack, param_grads,
                        restore_order, weight_grads)
from ..torch import TorchOps
from ..cache import build_module, generator_key
from .environment import _InterpretEnv, _lock, environment
from .graphs import GRAPH_CACHE, GraphWorkspaces, _env_graphs, _Lease, _Workspace
from ...names import array_name
from .kernel import size_arg, size_block
from .render import _param_args, render
from .spell import STORAGE
from .schedule import Schedule, Scheduling, _pow2, triton_cdiv
from .slp import _install_slp_guard, _NoSLP


class TritonCell(Scheduling, GraphWorkspaces, CompiledCell):
    backend = "triton"

    def __init__(self, program: Program, dtype="float32", key: str = "", storage: str | None = None,
                 schedule=None, tf32: bool = False, graphs=None, graph_cache: int = GRAPH_CACHE):
        torch, triton, device, interp = environment()
        if not interp:
            _install_slp_guard()
        self.torch = torch
        self.device = device
        self.interpret = interp
        if isinstance(dtype, str):
            name = dtype
        elif str(dtype).startswith("torch."):
            name = str(dtype)[6:]
        else:
            name = np.dtype(dtype).name
        if name in ("bfloat16", "float16"):
            storage, name = storage or name, "float32"
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32, float64, bfloat16 or float16 for the triton backend, "
                             f"got {dtype!r}")
        storage = storage or name
        if storage not in STORAGE or STORAGE[storage] != name:
            raise ValueError(f"storage {storage!r} does not go with dtype {name!r}: use float32 or float64 storage "
                             f"for those dtypes, or bfloat16/float16 storage with dtype float32")
        self.program = program
        self.key = key
        self.cell = program.cell
        self.dtype = storage                   # what arrays must be (argument checks compare against it)
        self.compute_dtype = name              # arithmetic, accumulation, state
        self.np_dtype = np.dtype(np.float32 if storage == "bfloat16" else storage)
        self.t_storage = getattr(torch, storage)
        self.t_compute = getattr(torch, name)
        tl = triton.language
        self._tl = {"DT": getattr(tl, storage), "CT": getattr(tl, name),
                    # the interpreter's tl.dot multiplies bfloat16 bit patterns (triton issue #11584)
                    "DOT_F32": bool(interp and storage == "bfloat16"),
                    # float32 products: exact ("ieee", default) or TF32 tensor cores (changes results)
                    "PREC": "tf32" if tf32 else "ieee"}
        self.tf32 = bool(tf32)
        self.ops = _TritonOps(self.t_storage, self.t_compute)
        self.rendered = render(program, storage, name, key)
        self.source = self.rendered.source
        digest = hashlib.sha256((self.source + generator_key() + str(interp)).encode()).hexdigest()[:16]
        safe = "".join(ch if ch.isalnum() else "_" for ch in program.cell.name)
        with _lock, _InterpretEnv(interp):
            self.module = build_module(self.source, f"{safe}_{storage}_{'interp_' if interp else ''}{digest}", "triton")
        self.persistent_budget = None          # bytes of shared memory; None: the GPU's (or 160 KiB)
        self._too_big: set = set()             # (direction, H, BB, warps) that ran out of resources
        self._tuned: dict[tuple, Schedule] = {}
        self.schedule = schedule               # default for forward(); None: heuristic, "auto": autotune
        # CUDA graphs of the step design's time loops (docs/triton.md, "CUDA graphs"): None = on for CUDA
        # unless LSTMC_TRITON_GRAPHS=0; "emulate" runs the same static-workspace path without graphs
        # (the interpreter has none: tests use it there)
        if graphs is None:
            graphs = (not interp) and _env_graphs()
        elif graphs not in (True, False, "emulate"):
            raise ValueError(f"graphs must be None, True, False or 'emulate', got {graphs!r}")
        elif graphs is True and interp:
            raise ValueError("graphs=True needs CUDA, and Triton's interpreter runs on the CPU: use graphs=False, "
                             "or graphs='emulate' to exercise the static-workspace path without CUDA graphs")
        if not isinstance(graph_cache, int) or isinstance(graph_cache, bool) or graph_cache < 0:
            raise ValueError(f"graph_cache must be a non-negative integer, got {graph_cache!r}")
        self.graphs = graphs
        self.graph_cache = graph_cache
        self._ws: list[_Workspace] = []        # least recently used first
        self._ws_lock = threading.Lock()       # two threads never take the same workspace
        self.graph_stats = {"captures": 0, "replays": 0, "eager": 0, "capture_failed": 0}

    def __repr__(self):
        extra = f" compute={self.compute_dtype}" if self.compute_dtype != self.dtype else ""
        return f"<TritonCell cell={self.cell.name!r} dtype={self.dtype}{extra} device={self.device}>"

    # --------------------------------------------------------------------------- conversion
    def _tensor(self, name, a):
        """NumPy -> torch on the kernels' device (bfloat16 cells round float32 arrays); tensors pass, and
        so does a NumPy array of any other dtype, for check_inputs to name (with the conversion to make)."""
        torch = self.torch
        if isinstance(a, np.ndarray) and a.dtype == self.np_dtype and a.dtype.isnative:
            t = torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))   # 0-d stays 0-d
            if self.dtype == "bfloat16" and a.dtype == np.float32:
                t = t.to(torch.bfloat16)
            return t.to(self.device)
        return a

    def _check_device(self, named):
        torch = self.torch
        want = "cpu" if self.interpret else "cuda"
        first = None
        for nm, t in named:
            if not isinstance(t, torch.Tensor):
                continue
            if t.device.type != want:
                how = ("the Triton interpreter (TRITON_INTERPRET=1) runs on CPU tensors" if self.interpret
                       else "the triton backend runs on CUDA tensors")
                raise ValueError(f"{nm} is on {t.device}, but {how}: move it with .to('{want}')")
            if first is None:
                first = (nm, t.device)
            elif t.device != first[1]:
                raise ValueError(f"{nm} is on {t.device} but {first[0]} is on {first[1]}: "
                                 f"move all arguments to one device")

    def _out(self, t, numpy_out: bool):
        if not numpy_out:
            return t
        t = t.detach().cpu()
        if t.dtype == self.torch.bfloat16:
            t = t.float()
        return t.numpy()

    # -------------------------------------------------------------------------------- launch
    def _launcher(self, name, env, sched: Schedule, grid, BH, store_tape=None, dims=None):
        """A launch of kernel `name` on `env`'s arrays. `grid`: a grid, or a function of the kernel's
        extent's number (the step kernels: cdiv(B, BB) x cdiv(extent, BH)). `dims`: {size: number};
        a declared size P is the scalar Z_P, and (persistent kernels) the tile width BZ_P >= P."""
        meta = self.rendered.kernels[name]
        dims = dims or {}
        if callable(grid):
            grid = grid(dims.get(meta.extent) if meta.extent != "H" else None)
        fn = getattr(self.module, name)[grid]
        arrays = [env[a] for a in meta.arrays]
        cx = {"BB": sched.block_b, "BH": BH, "BK": sched.block_k, **self._tl, "STORE_TAPE": store_tape,
              **{size_block(z): max(16, _pow2(dims[z])) for z in meta.sizes}}
        consts = {c: cx[c] for c in meta.constexprs}
        opts = {"num_warps": sched.num_warps}
        if sched.num_stages is not None:
            opts["num_stages"] = sched.num_stages
        scalars = meta.scalars
        fixed = {size_arg(z): dims[z] for z in meta.sizes}

        def launch(**sc):
            sc = {**fixed, **sc}
            with _NoSLP():
                fn(*arrays, *[sc[s] for s in scalars], **consts, **opts)
        return launch

    def _grid(self, sched: Schedule, B: int, H: int):
        """The step kernels' grid, per kernel extent (a number; None: H)."""
        nb = triton_cdiv(B, sched.block_b)
        return lambda n: (nb, triton_cdiv(H if n is None else n, sched.block_h))

    def _run_persistent(self, direction, env, sched, T, B, H, store_tape=None, dims=None) -> bool:
        """Launch a persistent kernel; False (nothing ran) when it needs more shared memory or
        registers than the GPU has: the caller then runs the step kernels, and later calls skip it."""
        grid = (triton_cdiv(B, sched.block_b),)
        try:
            self._launcher(f"{direction}_persistent", env, sched, grid, max(16, _pow2(H)),
                           store_tape=store_tape, dims=dims)(T=T, B=B, H=H)
            return True
        except Exception as e:  # noqa: BLE001 - triton.runtime.errors.OutOfResources, raised before it runs
            if type(e).__name__ != "OutOfResources":
                raise
            self._too_big.add((direction, self._widest(dims or {"H": H}), sched.block_b, sched.num_warps))
            warnings.warn(f"lstmc triton: {direction}_persistent for H={H} does not fit this GPU ({e}); "
                          f"using the step kernels", RuntimeWarning, stacklevel=3)
            return False

    def _scratch(self, B, H, env, dims=None):
        torch = self.torch
        dims = dims or {"H": H}
        for nm, slots in self.rendered.scratch.items():
            n = dims[self.rendered.scratch_size.get(nm, "H")]
            env[nm] = torch.empty((B, slots * n), dtype=self.t_compute, device=self.device)

    def _dims(self, dims, H) -> dict:
        return dims or {"H": H}

    @staticmethod
    def _widest(dims: dict) -> int:
        """The number the schedule is chosen by: H, or the widest of the cell's sizes."""
        return max(dims.values())

    def _dp(self, B_tiles: int, dims: dict):
        """DP: per batch tile, every vector parameter's partial sums side by side (render.Rendered.dp_offsets)."""
        _, width = self.rendered.dp_offsets(dims)
        return self.torch.zeros((B_tiles, max(width, 1)), dtype=self.t_compute, device=self.device)

    def _dp_sums(self, DP, dims: dict) -> dict:
        off, _ = self.rendered.dp_offsets(dims)
        dps = DP.sum(0)
        return {p: dps[off[p]:off[p] + dims[self.rendered.vec_size.get(p, "H")]].to(self.t_storage)
                for p in self.program.dp_sums()}

    def _fwd_loop(self, steps, T, B, H, need_tape):
        for t in range(T):
            ci, ni, ti = (t, t + 1, t) if need_tape else (t % 2, (t + 1) % 2, 0)
            for launch in steps:
                launch(t=t, ci=ci, ni=ni, ti=ti, B=B, H=H)

    def _bwd_phases(self, env, sched, grid, DS, DSN, dims=None):
        phases = []
        for cur, nxt in ((DS, DSN), (DSN, DS)):   # the incoming/outgoing adjoint buffers swap each step
            e = dict(env)
            for s in self.program.cell.states:
                e[array_name("DS_", s)] = cur[s]
                e[array_name("DSN_", s)] = nxt[s]
            phases.append([self._launcher(k, e, sched, grid, sched.block_h, dims=dims) for k in self.rendered.bwd_steps])
        return phases

    @staticmethod
    def _bwd_loop(phases, T, B, H):
        for i, t in enumerate(range(T - 1, -1, -1)):
            for launch in phases[i % 2]:
                launch(t=t, B=B, H=H)

    # ------------------------------------------------------------------------------- forward
    def forward(self, x, params, state=None, lengths=None, reverse=False, need_tape=True, schedule=None, inputs=None):
        """Run the sequence. Returns (y [T, B, H], {state: [B, H]} final, tape or None).
        `schedule`: a Schedule (or dict, 'auto', 'persistent', 'step'); default: the cell's.
        `inputs`: the cell's extra inputs, {name: [T, B] or [T, B, n]}."""
        torch = self.torch
        numpy_in = isinstance(x, np.ndarray)
        x = self._tensor("x", x)
        if isinstance(params, dict):
            params = {k: self._tensor(f"params['{k}']", v) for k, v in params.items()}
        if isinstance(state, dict):
            state = {k: self._tensor(f"state['{k}']", v) for k, v in state.items()}
        if isinstance(inputs, dict):
            inputs = {k: self._tensor(f"inputs['{k}']", v) for k, v in inputs.items()}
        T, B, I, H, L = self.check_inputs(x, params, state, lengths, inputs)
        check_flags(reverse=reverse, need_tape=need_tape)
        self._check_device([("x", x)] + [(f"params['{k}']", v) for k, v in params.items()]
                           + [(f"state['{k}']", v) for k, v in (state or {}).items()]
                           + [(f"inputs['{k}']", v) for k, v in (inputs or {}).items()])
        dims = self.dims(params, inputs, H)
        sched = self.resolve(schedule, B, self._widest(dims))
        prog, DT = self.program, self.t_storage
        lease = None
        with torch.no_grad():
            x, rev_idx = order_inputs(self.ops, x, L, reverse)
            ins = order_extra(self.ops, inputs, L, rev_idx)
            params = dense_weights(self.ops, prog, params)
            pk = pack(prog, params, lambda names: torch.cat([params[m] for m in names]).contiguous())
            Wcat, Ucat = pk.W, pk.U
            xin = (ins, pk.V)
            Lcpu = torch.as_tensor(L, dtype=torch.int32)
            ws = None
            if self._graphed(sched, T, B):
                ws = self._acquire(("step", sched, T, B, I, H, bool(need_tape))
                                   + ((tuple(sorted(dims.items())),) if prog.cell.sized else ()))
            try:
                if ws is not None:
                    Y, Sq, SV, Lt = self._forward_graph(ws, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I,
                                                        H, need_tape, xin, dims)
                    last = T if need_tape else T % 2
                    if need_tape:
                        lease = _Lease(ws, ws.gen)
                        ws.lease, ws.released = weakref.ref(lease), False
                else:
                    Y, Sq, SV, Lt, last, sched = self._forward_eager(x, params, state, Wcat, Ucat, Lcpu, sched,
                                                                     T, B, I, H, need_tape, xin, dims)
                final = {s: Sq[s][last].to(DT, copy=True) for s in prog.cell.states}
                if reverse:
                    Y = restore_order(self.ops, Y, rev_idx)
                elif ws is not None:
                    Y = Y.clone()            # the static buffer is overwritten by the next call
            finally:
                if ws is not None:
                    ws.busy = False          # y and the final state are copied out; the tape holds a lease
        tape = None
        if need_tape:
            extra = {"numpy": numpy_in, "schedule": sched}
            if lease is not None:
                extra["graph"] = lease
            tape = Tape(owner=self, x=x, states=Sq, saved=SV, lengths=L, mask=None, reverse=bool(reverse), rev_idx=rev_idx,
                        packed={"Wcat": Wcat, "U": Ucat, "L": Lt,
                                "vecs": {p: params[p] for p in prog.vector_params}},
                        shapes=(T, B, I, H), extra=extra, inputs=ins, vmats=pk.V,
                        dims=dims if prog.cell.sized else {})
        return self._out(Y, numpy_in), {s: self._out(v, numpy_in) for s, v in final.items()}, tape

    def _forward_eager(self, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I, H, need_tape, xin=(None, None),
                       dims=None):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        dims = self._dims(dims, H)
        sz = {s: dims[prog.state_size(s)] for s in prog.cell.states}
        nx = len(prog.input_mats)
        env = {ident_p: params[p].contiguous() for p, ident_p in _param_args(prog)}
        if nx:
            env["XP"] = input_products(self.ops, prog, x, Wcat, H, inputs=xin[0], V=xin[1])
        for g in prog.weight_groups:
            env[array_name("UT", g.index)] = Ucat[g.index].t().contiguous()
        persistent = sched.variant == "persistent"
        rows = T + 1 if need_tape else 2
        Sq, SV = {}, {}
        for s in prog.cell.states:
            Sq[s] = torch.empty((rows, B, sz[s]), dtype=CT, device=dev)
            if state is not None and s in state:
                Sq[s][0] = state[s]
            else:
                Sq[s][0] = 0.0
            env[array_name("SQ_", s)] = Sq[s]
        for n, _ in prog.saved:
            w = dims[prog.saved_sizes.get(n, "H")]
            shape = (T, B, w) if need_tape else ((1, B, w) if not persistent else (1, 1, 1))
            SV[n] = torch.empty(shape, dtype=DT, device=dev)
            env[array_name("SV_", n)] = SV[n]
        Y = torch.empty((T, B, sz[prog.cell.output]), dtype=DT, device=dev)
        env["Y"] = Y
        Lt = Lcpu.to(dev)
        env["L"] = Lt
        if persistent and not self._run_persistent("fwd", env, sched, T, B, H, store_tape=bool(need_tape),
                                                   dims=dims):
            persistent, sched = False, self._step_for(sched, self._widest(dims))
            if not need_tape:   # the 1-row saved buffers of the persistent kernel are too small
                for n, _ in prog.saved:
                    SV[n] = env[array_name("SV_", n)] = torch.empty((1, B, dims[prog.saved_sizes.get(n, "H")]),
                                                                    dtype=DT, device=dev)
        if persistent:
            last = T if need_tape else 1
        else:
            self._scratch(B, H, env, dims)
            grid = self._grid(sched, B, H)
            steps = [self._launcher(k, env, sched, grid, sched.block_h, dims=dims) for k in self.rendered.fwd_steps]
            self._fwd_loop(steps, T, B, H, need_tape)
            last = T if need_tape else T % 2
        return Y, Sq, SV, Lt, last, sched

    # ------------------------------------------------------------------------------ backward
    def backward(self, tape, dy, dstate=None):
        """Gradients (dx, {state: d initial state}, {param: grad}) given dy [T, B, H] and optional dstate."""
        torch = self.torch
        dy = self._tensor("dy", dy)
        if isinstance(dstate, dict):
            dstate = {k: self._tensor(f"dstate['{k}']", v) for k, v in dstate.items()}
        self.check_backward(tape, dy, dstate)
        if "schedule" not in tape.extra:
            raise ValueError("tape must come from this triton program's forward(..., need_tape=True)")
        self._check_device([("dy", dy)] + [(f"dstate['{k}']", v) for k, v in (dstate or {}).items()])
        lease = tape.extra.get("graph")
        if lease is not None and lease.gen != lease.ws.gen:
            raise RuntimeError("this tape's arrays live in a CUDA-graph workspace that a later forward call has "
                               "reused (its backward had already run once); a second backward of an old tape "
                               "needs graphs off: TritonCell(..., graphs=False) or LSTMC_TRITON_GRAPHS=0")
        prog, dev, DT = self.program, self.device, self.t_storage
        T, B, I, H = tape.shapes
        sched = tape.extra["schedule"]
        with torch.no_grad():
            dy = restore_order(self.ops, dy, tape.rev_idx)   # the index is its own inverse: to loop order
            dims = self._dims(tape.dims, H)
            if lease is not None and self.graphs:
                DS, DP, dRP, dXP = self._backward_graph(lease.ws, tape, dy, dstate, sched, T, B, H, dims)
            else:
                DS, DP, dRP, dXP = self._backward_eager(tape, dy, dstate, sched, T, B, H, dims)
            dp = self._dp_sums(DP, dims)
            grads, dx = weight_grads(self.ops, prog, tape, tape.packed["Wcat"], dXP, dRP)
            dx = restore_order(self.ops, dx, tape.rev_idx)
            dinputs = {k: restore_order(self.ops, v, tape.rev_idx)
                       for k, v in input_grads(self.ops, prog, tape, dXP).items()}
            dparams = param_grads(self.ops, prog, grads, dp,
                                  lambda shape: torch.zeros(shape, dtype=DT, device=dev), I, H,
                                  dims if prog.cell.sized else None)
            dS0 = {s: DS[s].to(DT, copy=True) for s in prog.cell.states}   # a copy: DS may be a static buffer
        if lease is not None:
            lease.ws.released = True      # the workspace may serve the next forward call
        numpy_out = bool(tape.extra.get("numpy"))
        return Gradients(self._out(dx, numpy_out), {s: self._out(v, numpy_out) for s, v in dS0.items()},
                         {p: self._out(v, numpy_out) for p, v in dparams.items()},
                         {u: self._out(v, numpy_out) for u, v in dinputs.items()})

    def _backward_eager(self, tape, dy, dstate, sched, T, B, H, dims=None):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        r = self.rendered
        dims = self._dims(dims, H)
        env = {"dY": dy.contiguous(), "L": tape.packed["L"]}
        env.update({a: tape.packed["vecs"][p].contiguous() for p, a in _param_args(prog)})
        for g in prog.weight_groups:
            env[array_name("U", g.index)] = tape.packed["U"][g.index]
        for s in prog.cell.states:
            env[array_name("SQ_", s)] = tape.states[s]
        for n, _ in prog.saved:
            env[array_name("SV_", n)] = tape.saved[n]
        DS = {}
        for s in prog.cell.states:
            if dstate is not None and s in dstate:
                DS[s] = dstate[s].to(CT, copy=True).contiguous()
            else:
                DS[s] = torch.zeros((B, dims[prog.state_size(s)]), dtype=CT, device=dev)
        nx = len(prog.input_mats)
        nbt = triton_cdiv(B, sched.block_b)
        DP = self._dp(nbt, dims)
        env["DP"] = DP
        if nx and r.alias is None:
            env["dXP"] = torch.empty((T, B, nx * H), dtype=DT, device=dev)
        dRP = {g.index: torch.empty((T, B, len(g.mats) * dims[g.rows]), dtype=DT, device=dev) for g in prog.groups}
        for g, a in dRP.items():
            env[array_name("dRP", g)] = a
        wide = self._widest(dims)
        persistent = sched.variant == "persistent" and self._fits(wide, sched)
        if persistent:
            for s in prog.cell.states:
                env[array_name("DS_", s)] = DS[s]
            persistent = self._run_persistent("bwd", env, sched, T, B, H, dims=dims)
        if not persistent:
            sched = self._step_for(sched, wide) if sched.variant == "persistent" else sched
            nbt = triton_cdiv(B, sched.block_b)
            if DP.shape[0] != nbt:
                DP = env["DP"] = self._dp(nbt, dims)
            self._scratch(B, H, env, dims)
            grid = self._grid(sched, B, H)
            DSN = {s: torch.empty((B, dims[prog.state_size(s)]), dtype=CT, device=dev) for s in prog.cell.states}
            self._bwd_loop(self._bwd_phases(env, sched, grid, DS, DSN, dims), T, B, H)
            if T % 2:
                DS = DSN
        dXP = None
        if nx:
            dXP = env["dXP"] if r.alias is None else dRP[r.alias]
        return DS, DP, dRP, dXP


class _TritonOps(TorchOps):
    """torch's array operations with the weight gradients accumulated in the compute type CT and
    returned in the storage type DT (bfloat16/float16 storage: float32 sums)."""
    name = "triton"

    def __init__(self, storage, compute):
        super().__init__(storage)
        self.compute = compute

    def mm_grad(self, a, b):
        import torch

        return _mm_acc(torch, a, b, self.compute)

    def grad(self, g):
        return g.to(self.dtype)


def _mm_acc(torch, a, b, CT):
    """a @ b accumulated and returned in CT (float32 for reduced-precision storage)."""
    if a.dtype == CT and b.dtype == CT:
        return a @ b
    if a.is_cuda:
        try:  # bfloat16/float16 operands, float32 output: no float32 copies of the sequences
            return torch.mm(a, b.to(a.dtype), out_dtype=CT)
        except (TypeError, RuntimeError):
            pass
    return a.to(CT) @ b.to(CT)

