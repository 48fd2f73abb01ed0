"""The `triton` backend (GPU): generated Triton kernels over the lowered Program, with a schedule
object choosing among designs; tested on the CPU under Triton's interpreter (TRITON_INTERPRET=1).

The recipe (docs/design.md, "Performance notes"; docs/triton.md):
  - the input products of all T·B rows are one GEMM before the time loop (torch.matmul);
  - per step, either one launch per segment (`step` kernels: the recurrent GEMM tile with tl.dot
    and the pointwise block fused as its epilogue, all gate slots of a hidden tile per program), or
    one launch for the whole sequence (`persistent` kernels: one program per batch tile owning all
    H, recurrent weights loaded once into registers, state carried on chip);
  - backward mirrors it in reverse time; the weight and input gradients are whole-sequence GEMMs
    after the loop with float32 accumulation, bias gradients are float32 partial sums per batch tile;
  - on CUDA the step design's time loops are captured once per shape into CUDA graphs over static
    workspaces and replayed (`graphs`, docs/triton.md "CUDA graphs"): one launch per loop, not ~3T.

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
import os
import statistics
import threading
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from ..lower import Program
from .base import CompiledCell, Tape, check_flags, clear_padding, reverse_index
from .cache import build_module, generator_key
from .triton_render import render

_lock = threading.Lock()
VARIANTS = ("persistent", "step")
# storage dtype -> compute dtype
STORAGE = {"float32": "float32", "float64": "float64", "bfloat16": "float32", "float16": "float32"}


# ------------------------------------------------------------------------------------ environment

def _env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")


def interpreting() -> bool:
    """Does Triton run kernels on its CPU interpreter? Triton fixes this when it is first imported
    (its own library, tl.zeros, tl.sum, ..., is decorated then), so this asks the imported Triton;
    TRITON_INTERPRET set after `import triton` does not switch it."""
    try:
        import triton.language as tl
    except Exception:  # noqa: BLE001
        return _env_interpret()
    kind = type(getattr(tl, "zeros", None)).__name__
    if kind in ("InterpretedFunction", "JITFunction"):
        return kind == "InterpretedFunction"
    return bool(triton_knob_interpret())


def triton_knob_interpret() -> bool:
    try:
        import triton

        return bool(triton.knobs.runtime.interpret)
    except Exception:  # noqa: BLE001
        return _env_interpret()


class _InterpretEnv:
    """TRITON_INTERPRET as Triton was imported with, while a generated module is decorated: its
    kernels must be interpreted exactly when Triton's own library functions are."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.prev = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if self.on else "0"

    def __exit__(self, *exc):
        if self.prev is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = self.prev


def environment():
    """(torch, triton, device, interpreting), or a RuntimeError saying what is missing and what to do."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"the triton backend needs PyTorch, which failed to import ({type(e).__name__}: {e}); "
                           f"install torch, or use backend='numba' (CPU) or 'reference'") from None
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"the triton backend needs Triton, which failed to import ({type(e).__name__}: {e}); "
                           f"install it (pip install triton; Linux x86-64/aarch64), or use backend='numba' (CPU) "
                           f"or 'torch'") from None
    if interpreting():
        if not triton_knob_interpret():
            raise RuntimeError("Triton was first imported with TRITON_INTERPRET=1 (its CPU interpreter), and the "
                               "interpreter needs the variable to stay set, but it is unset now: leave "
                               "TRITON_INTERPRET=1 in the environment for the whole process")
        return torch, triton, "cpu", True
    if torch.cuda.is_available():
        return torch, triton, "cuda", False
    if _env_interpret():
        raise RuntimeError("TRITON_INTERPRET=1 is set, but only after `import triton` ran: Triton chooses between "
                           "its CPU interpreter and the GPU compiler when it is first imported. Set it before "
                           "Python starts (TRITON_INTERPRET=1 python ...) or before the first `import triton`.")
    raise RuntimeError("the triton backend needs a CUDA GPU, and torch.cuda.is_available() is False here. "
                       "To run its kernels on the CPU (slowly; meant for tests) start Python with "
                       "TRITON_INTERPRET=1 in the environment; otherwise use backend='numba' on the CPU.")


# --------------------------------------------------------------------------------------- schedule

def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Schedule:
    """How the kernels are tiled and which design runs. Scheduling never changes results beyond
    float rounding (tests/test_triton.py checks two schedules against each other).

    variant    "persistent": one launch per sequence, programs own all H of BB batch rows, the
               recurrent weights stay in registers (only where they fit; else falls back to "step").
               "step": one launch per segment per step, grid (B/BB, H/BH), K chunks of BK.
    block_b    BB, batch rows per program (>= 16: tl.dot's smallest M)
    block_h    BH, hidden units per program (step variant; persistent uses all of H)
    block_k    BK, K chunk of the step kernels' GEMMs
    num_warps, num_stages   Triton launch options (num_stages None: Triton's default)
    """
    variant: str = "persistent"
    block_b: int = 16
    block_h: int = 32
    block_k: int = 32
    num_warps: int = 4
    num_stages: int | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"schedule variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        for nm in ("block_b", "block_h", "block_k"):
            v = getattr(self, nm)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"schedule {nm} must be a power of two >= 16 (tl.dot tiles), got {v!r}")
        if self.num_warps not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"schedule num_warps must be a power of two <= 32, got {self.num_warps!r}")

    def text(self) -> str:
        if self.variant == "persistent":
            return f"persistent(BB={self.block_b}, warps={self.num_warps})"
        return f"step(BB={self.block_b}, BH={self.block_h}, BK={self.block_k}, warps={self.num_warps})"


def persistent_weight_bytes(program: Program, H: int, itemsize: int) -> int:
    """Bytes of recurrent weights one persistent program keeps on chip (padded to the tile)."""
    HP = max(16, _pow2(H))
    return HP * HP * sum(len(g.mats) for g in program.groups) * itemsize


def persistent_shared_bytes(program: Program, H: int, itemsize: int) -> int:
    """Estimated shared memory of the persistent kernels. Triton keeps the register-resident weights
    as tl.dot operands in shared memory; compiling every built-in cell ahead of time for sm_90
    (Triton 3.9, BB=16) measured, for the larger of fwd/bwd kernels: float32 1.6-2.0x the weight
    bytes (FMA dots, operands staged twice), 16-bit 1.1-1.2x, plus a few KiB."""
    return int(persistent_weight_bytes(program, H, itemsize) * (2.0 if itemsize >= 4 else 1.25)) + 8192


def persistent_fits(program: Program, H: int, itemsize: int, shared_limit: int) -> bool:
    """Do the persistent kernels fit in `shared_limit` bytes (the GPU's opt-in shared memory per
    block, less headroom)? A launch that still runs out of resources falls back to `step`."""
    return persistent_shared_bytes(program, H, itemsize) <= shared_limit


def persistent_warps(H: int) -> int:
    return 4 if max(16, _pow2(H)) <= 64 else 8


# ------------------------------------------------------------------------------ compiler guard

_slp = threading.local()


def _install_slp_guard() -> None:
    """Compile lstmc's kernels with LLVM's SLP vectorizer off.

    LLVM's SLP vectorizer in Triton 3.9 hits crash-on-valid assertions (llvm-project issues #220475,
    #218850, #223139: "must be scheduled at this point") on some float32 persistent kernels for
    sm_90 (found compiling every generated kernel ahead of time: lstm and a multiplicative LSTM,
    bwd_persistent). An LLVM assertion aborts the Python process, so it cannot be caught. Triton
    already turns SLP off for sm_80 (make_llir's disable_slp_vectorizer); this wrapper asks for the
    same while one of lstmc's launches compiles (a thread-local flag), and leaves every other
    compilation alone. Set LSTMC_TRITON_SLP=1 to keep SLP on.
    """
    if os.environ.get("LSTMC_TRITON_SLP", "0") == "1":
        return
    try:
        from triton._C.libtriton import llvm
    except Exception:  # noqa: BLE001 - another Triton layout: nothing to guard
        return
    orig = getattr(llvm, "optimize_module", None)
    if orig is None or getattr(orig, "_lstmc_guard", False):
        return

    def optimize_module(*args, **kwargs):
        if getattr(_slp, "off", False) and not getattr(optimize_module, "_no_kwarg", False):
            try:
                return orig(*args, **{**kwargs, "disable_slp_vectorizer": True})
            except TypeError as e:       # an older Triton without the flag: compile as it would
                if "disable_slp_vectorizer" not in str(e) and "keyword" not in str(e):
                    raise
                optimize_module._no_kwarg = True
        return orig(*args, **kwargs)

    optimize_module._lstmc_guard = True
    llvm.optimize_module = optimize_module


class _NoSLP:
    def __enter__(self):
        self.prev = getattr(_slp, "off", False)
        _slp.off = True

    def __exit__(self, *exc):
        _slp.off = self.prev


# ------------------------------------------------------------------------------------ CUDA graphs

GRAPH_CACHE = 8   # workspaces (static buffers + captured graphs) one cell keeps, least recently used first out


def _env_graphs() -> bool:
    """LSTMC_TRITON_GRAPHS=0 turns CUDA graphs off for cells built afterwards (default on)."""
    return os.environ.get("LSTMC_TRITON_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off", "n")


class _Lease:
    """Held by a tape whose arrays live in a graph workspace: while it is alive and its backward has
    not run, no other forward call may reuse the workspace. `gen` tells a stale tape (its workspace
    was reused after its backward) from a current one."""
    __slots__ = ("ws", "gen", "__weakref__")

    def __init__(self, ws, gen):
        self.ws, self.gen = ws, gen


class _Workspace:
    """Static buffers of one step-design shape, and the CUDA graphs of its forward and backward time
    loops (captured on first use; their kernels read and write these buffers and no others).

    Memory: XP (forward) and dRP/dXP (backward) share one arena, Y (forward) and dY (backward) one
    buffer; the states and saved values (the tape, T+1 and T rows) are handed to the caller's tape,
    not copied."""

    def __init__(self, key):
        self.key = key
        self.env: dict = {}
        self.fwd = None          # _Graph of the forward loop
        self.bwd = None          # _Graph of the backward loop
        self.gen = 0
        self.lease = None        # weakref to the _Lease of the tape that owns the buffers
        self.released = True     # that tape's backward has run (the buffers may be reused)
        self.busy = False        # a forward call is filling it (set by _acquire, under the cell's lock)

    def free(self) -> bool:
        return not self.busy and (self.released or self.lease is None or self.lease() is None)

    def nbytes(self) -> int:
        seen, n = set(), 0
        for t in self.env.values():
            st = t.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                n += st.nbytes()
        return n


class _Graph:
    """A captured torch.cuda.CUDAGraph, or (graphs="emulate", for tests on the interpreter) the launch
    sequence itself, re-run eagerly on the same static buffers."""

    def __init__(self, graph, run):
        self.graph, self.run = graph, run

    def replay(self):
        if self.graph is None:
            self.run()
        else:
            self.graph.replay()


def _put(env, name, src):
    """Copy `src` into the static buffer `name` (allocated on first use, before any capture)."""
    buf = env.get(name)
    if buf is None:
        env[name] = buf = src.new_empty(src.shape)        # contiguous
    buf.copy_(src)

# ------------------------------------------------------------------------------------------ cell

class TritonCell(CompiledCell):
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

    # ------------------------------------------------------------------------------ schedules
    def shared_limit(self) -> int:
        """Shared memory a persistent program may use: `persistent_budget`, else the GPU's opt-in
        limit per block less 16 KiB, else (interpreter) 160 KiB."""
        if self.persistent_budget is not None:
            return self.persistent_budget
        if self.device == "cuda":
            props = self.torch.cuda.get_device_properties(self.torch.cuda.current_device())
            limit = getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024
            return limit - 16 * 1024
        return 160 * 1024

    def _fits(self, H: int, schedule: "Schedule | None" = None) -> bool:
        item = np.dtype(np.float16).itemsize if self.dtype in ("bfloat16", "float16") else self.np_dtype.itemsize
        if not persistent_fits(self.program, H, item, self.shared_limit()):
            return False
        if schedule is not None:
            for d in ("fwd", "bwd"):
                if (d, H, schedule.block_b, schedule.num_warps) in self._too_big:
                    return False
        return True

    def default_schedule(self, B: int, H: int) -> Schedule:
        """The heuristic choice: persistent where the weights fit on chip, else per-step kernels."""
        if self._fits(H):
            return Schedule("persistent", block_b=16, num_warps=persistent_warps(H))
        # step tiles from autotuning with CUDA graphs on an H100 (benchmarks/RESULTS.md): float32 at
        # B <= 16 wants many small programs (BH=16: each step is latency-bound, not FLOP-bound); 16-bit
        # storage and larger batches wanted BH=32 with 8 warps; BK=64 halves the K loop's round trips
        if H > 512:
            return Schedule("step", block_b=16 if B <= 16 else 32, block_h=64, block_k=32, num_warps=4)
        if B <= 16 and self.dtype in ("float32", "float64"):
            return Schedule("step", block_b=16, block_h=16, block_k=64, num_warps=4)
        return Schedule("step", block_b=16 if B <= 16 else 32, block_h=32, block_k=64, num_warps=8)

    def candidates(self, B: int, H: int) -> list[Schedule]:
        """Schedules worth timing for batch B, hidden H (autotune)."""
        out = []
        bbs = [b for b in (16, 32, 64) if b == 16 or b <= _pow2(B)]
        if self._fits(H):
            for bb in bbs:
                for w in (4, 8) if H <= 64 else (8, 16):
                    out.append(Schedule("persistent", block_b=bb, num_warps=w))
        for bb in bbs:
            for bh in (16, 32, 64, 128):
                if bh > max(16, _pow2(H)):
                    continue
                for bk in (32, 64):
                    for w in (4, 8):
                        out.append(Schedule("step", block_b=bb, block_h=bh, block_k=bk, num_warps=w))
        return out

    def resolve(self, schedule, B: int, H: int) -> Schedule:
        """The schedule a call runs: explicit, tuned, or heuristic; persistent falls back to step
        where its weights would not fit on chip."""
        if schedule is None:
            schedule = self.schedule
        if isinstance(schedule, dict):
            schedule = Schedule(**schedule)
        elif isinstance(schedule, str):
            if schedule == "auto":
                key = (B, H)
                if key not in self._tuned and not self.interpret:
                    self.autotune(T=32, B=B, I=H, H=H)
                schedule = self._tuned.get(key) or self.default_schedule(B, H)
            elif schedule in VARIANTS:
                base = self.default_schedule(B, H)
                schedule = base if base.variant == schedule else Schedule(schedule, block_b=base.block_b)
            else:
                raise ValueError(f"schedule must be a Schedule, a dict, 'auto' or one of {', '.join(VARIANTS)}, "
                                 f"got {schedule!r}")
        elif schedule is None:
            schedule = self._tuned.get((B, H)) or self.default_schedule(B, H)
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a Schedule, a dict, 'auto' or a variant name, got "
                             f"{type(schedule).__name__}")
        if schedule.variant == "persistent" and not self._fits(H, schedule):
            schedule = self._step_for(schedule, H)
        return schedule

    @staticmethod
    def _step_for(schedule: Schedule, H: int) -> Schedule:
        return Schedule("step", block_b=schedule.block_b, block_h=32 if H <= 512 else 64, block_k=32,
                        num_warps=4, num_stages=schedule.num_stages)

    def autotune(self, T: int, B: int, I: int, H: int, candidates=None, reps: int = 5, warmup: int = 1,
                 seed: int = 0) -> Schedule:
        """Time forward+backward of every candidate on random data of this shape (median of `reps`)
        and remember the fastest for (B, H). Meaningful on a GPU; under the interpreter it only
        exercises the machinery. With CUDA graphs on, the step candidates are timed with graphs
        (the first, warm-up call captures them); their workspaces are dropped afterwards."""
        rng = np.random.default_rng(seed)
        params = {k: self._tensor(f"params['{k}']", v) for k, v in self.init_params(I, H, seed=seed).items()}
        x = self._tensor("x", rng.normal(size=(T, B, I)).astype(self.np_dtype))
        dy = self._tensor("dy", rng.normal(size=(T, B, H)).astype(self.np_dtype))
        results = []
        before = {id(ws) for ws in self._ws}
        try:
            results = self._time_candidates(candidates or self.candidates(B, H), x, params, dy, B, H, reps, warmup)
        finally:   # the graph workspaces of the timing runs are not kept
            self._ws = [ws for ws in self._ws if id(ws) in before]
        if not results:
            raise RuntimeError("autotune: no candidate schedule ran")
        best = min(results, key=lambda r: r[0])[1]
        self._tuned[(B, H)] = best
        self.tuning = sorted(results, key=lambda r: r[0])
        return best

    def _time_candidates(self, candidates, x, params, dy, B, H, reps, warmup):
        torch = self.torch
        results = []
        for sched in candidates:
            sched = self.resolve(sched, B, H)
            times = []
            try:
                for i in range(warmup + reps):
                    if self.device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    _, _, tape = self.forward(x, params, schedule=sched)
                    self.backward(tape, dy)
                    if self.device == "cuda":
                        torch.cuda.synchronize()
                    if i >= warmup:
                        times.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - a schedule that fails to compile (resources) is skipped
                warnings.warn(f"autotune: {sched.text()} failed ({type(e).__name__}: {e}); skipped",
                              RuntimeWarning, stacklevel=3)
                continue
            results.append((statistics.median(times), sched))
        return results

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

    def _take_rows(self, a, idx):
        torch = self.torch
        return a[idx, torch.arange(a.shape[1], device=a.device)[None, :]]

    # -------------------------------------------------------------------------------- launch
    def _launcher(self, name, env, sched: Schedule, grid, BH, store_tape=None):
        meta = self.rendered.kernels[name]
        fn = getattr(self.module, name)[grid]
        arrays = [env[a] for a in meta.arrays]
        cx = {"BB": sched.block_b, "BH": BH, "BK": sched.block_k, **self._tl, "STORE_TAPE": store_tape}
        consts = {c: cx[c] for c in meta.constexprs}
        opts = {"num_warps": sched.num_warps}
        if sched.num_stages is not None:
            opts["num_stages"] = sched.num_stages
        scalars = meta.scalars

        def launch(**sc):
            with _NoSLP():
                fn(*arrays, *[sc[s] for s in scalars], **consts, **opts)
        return launch

    def _run_persistent(self, direction, env, sched, T, B, H, store_tape=None) -> bool:
        """Launch a persistent kernel; False (nothing ran) when it needs more shared memory or
        registers than the GPU has: the caller then runs the step kernels, and later calls skip it."""
        grid = (triton_cdiv(B, sched.block_b),)
        try:
            self._launcher(f"{direction}_persistent", env, sched, grid, max(16, _pow2(H)),
                           store_tape=store_tape)(T=T, B=B, H=H)
            return True
        except Exception as e:  # noqa: BLE001 - triton.runtime.errors.OutOfResources, raised before it runs
            if type(e).__name__ != "OutOfResources":
                raise
            self._too_big.add((direction, H, sched.block_b, sched.num_warps))
            warnings.warn(f"lstmc triton: {direction}_persistent for H={H} does not fit this GPU ({e}); "
                          f"using the step kernels", RuntimeWarning, stacklevel=3)
            return False

    def _scratch(self, B, H, env):
        torch = self.torch
        for nm, slots in self.rendered.scratch.items():
            env[nm] = torch.empty((B, slots * H), dtype=self.t_compute, device=self.device)

    # --------------------------------------------------------------------------- CUDA graphs
    def _graphed(self, sched: Schedule, T: int, B: int) -> bool:
        return bool(self.graphs) and sched.variant == "step" and T > 0 and B > 0

    def _acquire(self, key) -> "_Workspace | None":
        """A free workspace for `key` (most recently used last), a new one, or None (every cached one
        is still owned by a live tape and the cache is full: the call runs without graphs). The one
        returned is busy until the caller's forward is done with it, and its generation moves on at
        once, so an older tape of it is stale even if this forward fails half-way."""
        with self._ws_lock:
            ws = next((w for w in self._ws if w.key == key and w.free()), None)
            if ws is not None:
                self._ws.remove(ws)
            else:
                if len(self._ws) >= self.graph_cache:
                    victim = next((w for w in self._ws if w.free()), None)
                    if victim is None:
                        self.graph_stats["eager"] += 1
                        return None
                    self._ws.remove(victim)       # its memory goes when no tape refers to it any more
                ws = _Workspace(key)
            self._ws.append(ws)
            ws.busy = True
            ws.gen += 1
            return ws

    def _new_buffers(self, ws, sched, T, B, H, need_tape):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        e = {}                  # filled completely before it becomes ws.env (an allocation may fail)
        nx = len(prog.input_mats)
        al = lambda n: -(-n // 128) * 128          # noqa: E731 - sub-arrays start 128 elements apart (aligned)
        parts = []
        if need_tape:
            parts = [(f"dRP{g.index}", len(g.mats) * H) for g in prog.groups]
            if nx and self.rendered.alias is None:
                parts.append(("dXP", nx * H))
        size = max(al(T * B * nx * H), sum(al(T * B * w) for _, w in parts), 1)
        arena = torch.empty(size, dtype=DT, device=dev)
        if nx:
            e["XP"] = arena[:T * B * nx * H].view(T, B, nx * H)
        off = 0
        for nm, w in parts:                         # backward: the forward's XP is dead by then
            e[nm] = arena[off:off + T * B * w].view(T, B, w)
            off += al(T * B * w)
        e["Y"] = e["dY"] = torch.empty((T, B, H), dtype=DT, device=dev)   # Y is copied out before backward
        rows = T + 1 if need_tape else 2
        for s in prog.cell.states:
            e[f"SQ_{_mangle(s)}"] = torch.empty((rows, B, H), dtype=CT, device=dev)
        for n, _ in prog.saved:
            e[f"SV_{_mangle(n)}"] = torch.empty((T if need_tape else 1, B, H), dtype=DT, device=dev)
        e["L"] = torch.empty((B,), dtype=torch.int32, device=dev)
        self._scratch(B, H, e)
        if need_tape:
            for s in prog.cell.states:
                e[f"DS_{_mangle(s)}"] = torch.empty((B, H), dtype=CT, device=dev)
                e[f"DSN_{_mangle(s)}"] = torch.empty((B, H), dtype=CT, device=dev)
            e["DP"] = torch.empty((triton_cdiv(B, sched.block_b), max(len(prog.vector_params), 1), H), dtype=CT,
                                  device=dev)
        ws.env = e

    def _capture(self, run) -> "_Graph | None":
        """Capture `run` (a time loop over static buffers, which has just run eagerly, so every kernel is
        compiled) into a CUDA graph. None when capture fails: graphs are then off for this cell, with a
        warning, and the eager result already in the buffers stands."""
        if self.graphs == "emulate":
            return _Graph(None, run)
        torch = self.torch
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, capture_error_mode="thread_local"):   # other threads may use CUDA meanwhile
                run()
        except Exception as e:  # noqa: BLE001 - e.g. a Triton/driver combination that cannot be captured
            self.graphs = False
            self.graph_stats["capture_failed"] += 1
            warnings.warn(f"lstmc triton: CUDA graph capture failed ({type(e).__name__}: {e}); this cell runs "
                          f"without graphs from now on", RuntimeWarning, stacklevel=3)
            return None
        self.graph_stats["captures"] += 1
        return _Graph(g, run)

    def _replay(self, graph):
        graph.replay()
        self.graph_stats["replays"] += 1

    def graph_bytes(self) -> int:
        """Device memory held by this cell's cached graph workspaces (docs/triton.md, "CUDA graphs")."""
        return sum(ws.nbytes() for ws in self._ws)

    def clear_graphs(self) -> None:
        """Drop the cached workspaces and graphs (memory goes once no tape refers to it)."""
        self._ws.clear()

    def _fwd_loop(self, steps, T, B, H, need_tape):
        for t in range(T):
            ci, ni, ti = (t, t + 1, t) if need_tape else (t % 2, (t + 1) % 2, 0)
            for launch in steps:
                launch(t=t, ci=ci, ni=ni, ti=ti, B=B, H=H)

    def _bwd_phases(self, env, sched, grid, DS, DSN):
        phases = []
        for cur, nxt in ((DS, DSN), (DSN, DS)):   # the incoming/outgoing adjoint buffers swap each step
            e = dict(env)
            for s in self.program.cell.states:
                e[f"DS_{_mangle(s)}"] = cur[s]
                e[f"DSN_{_mangle(s)}"] = nxt[s]
            phases.append([self._launcher(k, e, sched, grid, sched.block_h) for k in self.rendered.bwd_steps])
        return phases

    @staticmethod
    def _bwd_loop(phases, T, B, H):
        for i, t in enumerate(range(T - 1, -1, -1)):
            for launch in phases[i % 2]:
                launch(t=t, B=B, H=H)

    # ------------------------------------------------------------------------------- forward
    def forward(self, x, params, state=None, lengths=None, reverse=False, need_tape=True, schedule=None):
        """Run the sequence. Returns (y [T, B, H], {state: [B, H]} final, tape or None).
        `schedule`: a Schedule (or dict, 'auto', 'persistent', 'step'); default: the cell's."""
        torch = self.torch
        numpy_in = isinstance(x, np.ndarray)
        x = self._tensor("x", x)
        if isinstance(params, dict):
            params = {k: self._tensor(f"params['{k}']", v) for k, v in params.items()}
        if isinstance(state, dict):
            state = {k: self._tensor(f"state['{k}']", v) for k, v in state.items()}
        T, B, I, H, L = self.check_inputs(x, params, state, lengths)
        check_flags(reverse=reverse, need_tape=need_tape)
        self._check_device([("x", x)] + [(f"params['{k}']", v) for k, v in params.items()]
                           + [(f"state['{k}']", v) for k, v in (state or {}).items()])
        sched = self.resolve(schedule, B, H)
        prog, dev, DT = self.program, self.device, self.t_storage
        lease = None
        with torch.no_grad():
            rev_idx = None
            if reverse:
                rev_idx = torch.as_tensor(reverse_index(T, L), device=dev)
                x = self._take_rows(x, rev_idx)
            x = clear_padding(x, L, T)
            nx = len(prog.input_mats)
            Wcat = torch.cat([params[m] for m in prog.input_mats]) if nx else None
            Ucat = {g.index: torch.cat([params[m] for m in g.mats]).contiguous() for g in prog.groups}
            Lcpu = torch.as_tensor(L, dtype=torch.int32)
            ws = None
            if self._graphed(sched, T, B):
                ws = self._acquire(("step", sched, T, B, I, H, bool(need_tape)))
            try:
                if ws is not None:
                    Y, Sq, SV, Lt = self._forward_graph(ws, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I,
                                                        H, need_tape)
                    last = T if need_tape else T % 2
                    if need_tape:
                        lease = _Lease(ws, ws.gen)
                        ws.lease, ws.released = weakref.ref(lease), False
                else:
                    Y, Sq, SV, Lt, last, sched = self._forward_eager(x, params, state, Wcat, Ucat, Lcpu, sched,
                                                                     T, B, I, H, need_tape)
                final = {s: Sq[s][last].to(DT, copy=True) for s in prog.cell.states}
                if reverse:
                    Y = self._take_rows(Y, rev_idx)
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
                        shapes=(T, B, I, H), extra=extra)
        return self._out(Y, numpy_in), {s: self._out(v, numpy_in) for s, v in final.items()}, tape

    def _forward_graph(self, ws, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I, H, need_tape):
        """The step design on a workspace's static buffers: inputs are copied in, the captured time
        loop replays. The tape's states and saved values are the workspace's own arrays."""
        torch, prog = self.torch, self.program
        e = ws.env
        if not e:
            self._new_buffers(ws, sched, T, B, H, need_tape)
            e = ws.env
        nx = len(prog.input_mats)
        if nx:
            torch.mm(x.reshape(T * B, I), Wcat.t(), out=e["XP"].view(T * B, nx * H))
        for g in prog.groups:
            _put(e, f"UT{g.index}", Ucat[g.index].t())
        for p, a in _param_args(prog):
            _put(e, a, params[p])
        e["L"].copy_(Lcpu)

        def initial_state():
            for s in prog.cell.states:
                row = e[f"SQ_{_mangle(s)}"][0]
                if state is not None and s in state:
                    row.copy_(state[s])
                else:
                    row.zero_()
        initial_state()
        if ws.fwd is None:
            grid = (triton_cdiv(B, sched.block_b), triton_cdiv(H, sched.block_h))
            steps = [self._launcher(k, e, sched, grid, sched.block_h) for k in self.rendered.fwd_steps]

            def run():
                self._fwd_loop(steps, T, B, H, need_tape)
            run()                                   # compiles the kernels; the result is this call's
            ws.fwd = self._capture(run)
            if ws.fwd is not None and not need_tape:
                initial_state()                     # the ring of two state rows overwrote row 0
        if ws.fwd is not None:
            self._replay(ws.fwd)                    # (on first use too: every result comes from the graph)
        return (e["Y"], {s: e[f"SQ_{_mangle(s)}"] for s in prog.cell.states},
                {n: e[f"SV_{_mangle(n)}"] for n, _ in prog.saved}, e["L"])

    def _forward_eager(self, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I, H, need_tape):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        nx = len(prog.input_mats)
        env = {ident_p: params[p].contiguous() for p, ident_p in _param_args(prog)}
        if nx:
            env["XP"] = (x.reshape(T * B, I) @ Wcat.t()).reshape(T, B, nx * H)
        for g in prog.groups:
            env[f"UT{g.index}"] = Ucat[g.index].t().contiguous()
        persistent = sched.variant == "persistent"
        rows = T + 1 if need_tape else 2
        Sq, SV = {}, {}
        for s in prog.cell.states:
            Sq[s] = torch.empty((rows, B, H), dtype=CT, device=dev)
            if state is not None and s in state:
                Sq[s][0] = state[s]
            else:
                Sq[s][0] = 0.0
            env[f"SQ_{_mangle(s)}"] = Sq[s]
        for n, _ in prog.saved:
            shape = (T, B, H) if need_tape else ((1, B, H) if not persistent else (1, 1, 1))
            SV[n] = torch.empty(shape, dtype=DT, device=dev)
            env[f"SV_{_mangle(n)}"] = SV[n]
        Y = torch.empty((T, B, H), dtype=DT, device=dev)
        env["Y"] = Y
        Lt = Lcpu.to(dev)
        env["L"] = Lt
        if persistent and not self._run_persistent("fwd", env, sched, T, B, H, store_tape=bool(need_tape)):
            persistent, sched = False, self._step_for(sched, H)
            if not need_tape:   # the 1-row saved buffers of the persistent kernel are too small
                for n, _ in prog.saved:
                    SV[n] = env[f"SV_{_mangle(n)}"] = torch.empty((1, B, H), dtype=DT, device=dev)
        if persistent:
            last = T if need_tape else 1
        else:
            self._scratch(B, H, env)
            grid = (triton_cdiv(B, sched.block_b), triton_cdiv(H, sched.block_h))
            steps = [self._launcher(k, env, sched, grid, sched.block_h) for k in self.rendered.fwd_steps]
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
        prog, dev, DT, CT = self.program, self.device, self.t_storage, self.t_compute
        T, B, I, H = tape.shapes
        sched = tape.extra["schedule"]
        r = self.rendered
        with torch.no_grad():
            if tape.reverse:
                dy = self._take_rows(dy, tape.rev_idx)
            if lease is not None and self.graphs:
                DS, DP, dRP, dXP = self._backward_graph(lease.ws, tape, dy, dstate, sched, T, B, H)
            else:
                DS, DP, dRP, dXP = self._backward_eager(tape, dy, dstate, sched, T, B, H)
            grads = {}
            dps = DP.sum(0)
            for p, i in r.vec_index.items():
                grads[p] = dps[i].to(DT)
            x2 = tape.x.reshape(T * B, I)
            dx = torch.zeros((T, B, I), dtype=DT, device=dev)
            nx = len(prog.input_mats)
            if nx:
                dXP2 = dXP.reshape(T * B, nx * H)
                dW = _mm_acc(torch, dXP2.t(), x2, CT)
                for j, m in enumerate(prog.input_mats):
                    grads[m] = dW[j * H:(j + 1) * H].to(DT)
                dx = (dXP2 @ tape.packed["Wcat"]).reshape(T, B, I)
            for g in prog.groups:
                a = g.operand
                V = tape.states[a.attr][:T] if a.op == "state" else tape.saved[a.attr[1]]
                dU = _mm_acc(torch, dRP[g.index].reshape(T * B, -1).t(), V.reshape(T * B, H), CT)
                for j, m in enumerate(g.mats):
                    grads[m] = dU[j * H:(j + 1) * H].to(DT)
            if tape.reverse:
                dx = self._take_rows(dx, tape.rev_idx)
            dparams = {p: grads[p] if p in grads else torch.zeros(self.cell.param_shape(p, I, H), dtype=DT, device=dev)
                       for p in self.cell.params}
            dS0 = {s: DS[s].to(DT, copy=True) for s in prog.cell.states}   # a copy: DS may be a static buffer
        if lease is not None:
            lease.ws.released = True      # the workspace may serve the next forward call
        numpy_out = bool(tape.extra.get("numpy"))
        return (self._out(dx, numpy_out), {s: self._out(v, numpy_out) for s, v in dS0.items()},
                {p: self._out(v, numpy_out) for p, v in dparams.items()})

    def _backward_graph(self, ws, tape, dy, dstate, sched, T, B, H):
        """The backward time loop of a graph tape, on its workspace (the tape's arrays are its buffers)."""
        prog = self.program
        e = ws.env
        states = prog.cell.states
        DS = {s: e[f"DS_{_mangle(s)}"] for s in states}
        DSN = {s: e[f"DSN_{_mangle(s)}"] for s in states}
        for g in prog.groups:
            _put(e, f"U{g.index}", tape.packed["U"][g.index])

        def prepare():
            e["dY"].copy_(dy)
            for s in states:
                if dstate is not None and s in dstate:
                    DS[s].copy_(dstate[s])
                else:
                    DS[s].zero_()
            e["DP"].zero_()
        prepare()
        if ws.bwd is None:
            grid = (triton_cdiv(B, sched.block_b), triton_cdiv(H, sched.block_h))
            phases = self._bwd_phases(e, sched, grid, DS, DSN)

            def run():
                self._bwd_loop(phases, T, B, H)
            run()                              # compiles the kernels; the result is this call's
            ws.bwd = self._capture(run)
            if ws.bwd is not None:
                prepare()                      # the eager run consumed DS and accumulated into DP
        if ws.bwd is not None:
            self._replay(ws.bwd)
        dRP = {g.index: e[f"dRP{g.index}"] for g in prog.groups}
        dXP = None
        if prog.input_mats:
            dXP = e["dXP"] if self.rendered.alias is None else dRP[self.rendered.alias]
        return (DSN if T % 2 else DS), e["DP"], dRP, dXP

    def _backward_eager(self, tape, dy, dstate, sched, T, B, H):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        r = self.rendered
        env = {"dY": dy.contiguous(), "L": tape.packed["L"]}
        env.update({a: tape.packed["vecs"][p].contiguous() for p, a in _param_args(prog)})
        for g in prog.groups:
            env[f"U{g.index}"] = tape.packed["U"][g.index]
        for s in prog.cell.states:
            env[f"SQ_{_mangle(s)}"] = tape.states[s]
        for n, _ in prog.saved:
            env[f"SV_{_mangle(n)}"] = tape.saved[n]
        DS = {}
        for s in prog.cell.states:
            if dstate is not None and s in dstate:
                DS[s] = dstate[s].to(CT, copy=True).contiguous()
            else:
                DS[s] = torch.zeros((B, H), dtype=CT, device=dev)
        nx = len(prog.input_mats)
        nbt = triton_cdiv(B, sched.block_b)
        nvec = len(prog.vector_params)
        DP = torch.zeros((nbt, max(nvec, 1), H), dtype=CT, device=dev)
        env["DP"] = DP
        if nx and r.alias is None:
            env["dXP"] = torch.empty((T, B, nx * H), dtype=DT, device=dev)
        dRP = {g.index: torch.empty((T, B, len(g.mats) * H), dtype=DT, device=dev) for g in prog.groups}
        for g, a in dRP.items():
            env[f"dRP{g}"] = a
        persistent = sched.variant == "persistent" and self._fits(H, sched)
        if persistent:
            for s in prog.cell.states:
                env[f"DS_{_mangle(s)}"] = DS[s]
            persistent = self._run_persistent("bwd", env, sched, T, B, H)
        if not persistent:
            sched = self._step_for(sched, H) if sched.variant == "persistent" else sched
            nbt = triton_cdiv(B, sched.block_b)
            if DP.shape[0] != nbt:
                DP = env["DP"] = torch.zeros((nbt, max(nvec, 1), H), dtype=CT, device=dev)
            self._scratch(B, H, env)
            grid = (nbt, triton_cdiv(H, sched.block_h))
            DSN = {s: torch.empty((B, H), dtype=CT, device=dev) for s in prog.cell.states}
            self._bwd_loop(self._bwd_phases(env, sched, grid, DS, DSN), T, B, H)
            if T % 2:
                DS = DSN
        dXP = None
        if nx:
            dXP = env["dXP"] if r.alias is None else dRP[r.alias]
        return DS, DP, dRP, dXP


def compile_ahead(program: Program, storage: str = "float32", H: int = 64, capability: int = 90,
                  kernels=None, tf32: bool = False, block_b: int = 16, block_h: int = 32, block_k: int = 32,
                  num_warps: int | None = None) -> dict:
    """Compile the generated kernels with Triton's real compiler for an NVIDIA GPU of compute
    `capability` (90: H100), without one: `triton.compile` with a GPUTarget (ptxas ships in the
    Triton wheel). Catches what the interpreter cannot: type errors of loop-carried values,
    compiler crashes, shared-memory needs. Returns {kernel: {"shared": bytes, "mma": number of
    mma instructions in the PTX, "spills": number of .local declarations}}. The interpreter must
    be off (TRITON_INTERPRET unset). Run it in a subprocess where a compiler abort must not kill you.
    """
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreting():
        raise RuntimeError("compile_ahead needs Triton's compiler: unset TRITON_INTERPRET")
    _install_slp_guard()
    compute = STORAGE[storage]
    rendered = render(program, storage, compute, "ahead-of-time")
    digest = hashlib.sha256((rendered.source + generator_key()).encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() else "_" for ch in program.cell.name)
    with _lock, _InterpretEnv(False):
        mod = build_module(rendered.source, f"{safe}_{storage}_aot_{digest}", "triton")
    short = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "float16": "fp16"}
    cx = {"BB": block_b, "BH": block_h, "BK": block_k, "DT": getattr(tl, storage), "CT": getattr(tl, compute),
          "DOT_F32": False, "PREC": "tf32" if tf32 else "ieee", "STORE_TAPE": True}
    out = {}
    for name, meta in rendered.kernels.items():
        if kernels is not None and name not in kernels:
            continue
        sig = {}
        for a in meta.arrays:
            if a == "L":
                sig[a] = "*i32"
            elif a.startswith(("SQ_", "DS_", "DSN_", "DP", "RS", "DV", "BT_")):
                sig[a] = "*" + short[compute]
            else:
                sig[a] = "*" + short[storage]
        sig.update({sc: "i32" for sc in meta.scalars})
        sig.update({c: "constexpr" for c in meta.constexprs})
        consts = {c: cx[c] for c in meta.constexprs}
        if meta.variant == "persistent":
            consts["BH"] = max(16, _pow2(H))
        warps = num_warps or (persistent_warps(H) if meta.variant == "persistent" else 4)
        with _NoSLP():
            k = triton.compile(ASTSource(fn=getattr(mod, name), signature=sig, constexprs=consts),
                               target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})
        ptx = k.asm.get("ptx", "")
        out[name] = {"shared": int(k.metadata.shared), "mma": ptx.count("mma."), "spills": ptx.count(".local")}
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _mangle(name: str) -> str:
    return str(name).replace("'", "1")


def _param_args(program: Program):
    return [(p, f"P_{_mangle(p)}") for p in program.vector_params]


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

