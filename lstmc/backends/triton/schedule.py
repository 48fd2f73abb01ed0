"""How the kernels are tiled and which design runs: `Schedule`, the rules for whether the persistent
design's weights fit on chip, the heuristic default, and autotuning (`Scheduling`, mixed into
TritonCell: it times candidates through the cell's own forward and backward)."""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ...lower import Program

VARIANTS = ("persistent", "step")


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
    return HP * HP * sum(len(g.mats) for g in program.weight_groups) * itemsize


def persistent_shared_bytes(program: Program, H: int, itemsize: int, block_b: int = 16) -> int:
    """Estimated shared memory of the persistent kernels. Triton keeps the register-resident weights
    as tl.dot operands in shared memory; compiling every built-in cell ahead of time for sm_90
    (Triton 3.9, BB=16) measured, for the larger of fwd/bwd kernels: float32 1.6-2.0x the weight
    bytes (FMA dots, operands staged twice), 16-bit 1.1-1.2x, plus a few KiB. Row reductions
    (`mean`, `sum`) add scratch to the backward kernel: examples/layernorm_lstm.cell (18 of them)
    measured 1.67 x 18 x BB x HP x 4 bytes more than lstm at H = 32 and 64 (BB = 16); counted here
    as 2x, for the schedule's BB."""
    HP = max(16, _pow2(H))
    reductions = sum(1 for g in program.groups if g.reduce)
    compute = 8 if itemsize == 8 else 4
    return (int(persistent_weight_bytes(program, H, itemsize) * (2.0 if itemsize >= 4 else 1.25)) + 8192
            + 2 * reductions * block_b * HP * compute)


def persistent_fits(program: Program, H: int, itemsize: int, shared_limit: int, block_b: int = 16) -> bool:
    """Do the persistent kernels fit in `shared_limit` bytes (the GPU's opt-in shared memory per
    block, less headroom)? A launch that still runs out of resources falls back to `step`."""
    return persistent_shared_bytes(program, H, itemsize, block_b) <= shared_limit


def persistent_warps(H: int) -> int:
    return 4 if max(16, _pow2(H)) <= 64 else 8


class Scheduling:
    """TritonCell's choice of schedule per call: explicit, tuned, or heuristic (uses the cell's
    program, dtype, device, interpret, torch, schedule, persistent_budget, _too_big and _tuned)."""

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
        if not persistent_fits(self.program, H, item, self.shared_limit(), schedule.block_b if schedule else 16):
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
                # (a cell with sized states is tuned by an explicit autotune(..., sizes=...): H here is
                # the widest size, and the others are not known)
                if key not in self._tuned and not self.interpret and not self.cell.sized:
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
                 seed: int = 0, sizes: dict | None = None) -> Schedule:
        """Time forward+backward of every candidate on random data of this shape (median of `reps`)
        and remember the fastest for (B, H). Meaningful on a GPU; under the interpreter it only
        exercises the machinery. With CUDA graphs on, the step candidates are timed with graphs
        (the first, warm-up call captures them); their workspaces are dropped afterwards. A cell with
        sized states needs `sizes` ({"P": 64}); its schedule is remembered for (B, the widest size)."""
        rng = np.random.default_rng(seed)
        params = {k: self._tensor(f"params['{k}']", v)
                  for k, v in self.init_params(I, H, seed=seed, sizes=sizes).items()}
        dims = self.program.extents(H, sizes)
        out = dims[self.cell.state_size(self.cell.output)]
        x = self._tensor("x", rng.normal(size=(T, B, I)).astype(self.np_dtype))
        dy = self._tensor("dy", rng.normal(size=(T, B, out)).astype(self.np_dtype))
        H = max(dims.values())
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


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
