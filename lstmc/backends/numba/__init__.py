"""The `numba` backend (CPU): generated @njit time loops with BLAS GEMMs and fused, vectorised blocks.

One job per module:
  cell.py         NumbaCell, the CompiledCell API: build, thread plan choice, forward (whole
                  sequence or time chunks), backward, the whole-sequence GEMMs around the loops
  plan.py         Plan, LSTMC_NUMBA_PLAN (parse_plan), row_ranges, run_chunks and its executor
  memory.py       per-thread workspaces and recycled arrays (Recycling, which NumbaCell inherits)
  blas.py         matmul: every GEMM through the one BLAS Numba's np.dot calls
  options.py      JIT, the @njit options (fast-math flags, array-argument noalias)
  render.py       Program -> kernel source (templates/numba_cell.py.j2) ; SPELL, PRELUDE
  prelude_f32.py  the math float32 kernels import (_tanh, _sigmoid, _exp, _log, ..., _mm_nt, _mm_nn),
                  real @njit, arithmetic-only so the fused loops vectorise
  prelude_f64.py  the same for float64 (libm)
  prelude.py      what both share (SMALL_ROWS, _abs, _sqrt, the selects)

This module only re-exports. `render` names the submodule here (its function of the same name is
render.render).
"""

from .blas import matmul
from .cell import NumbaCell
from .memory import Recycling
from .options import FASTMATH, JIT
from .plan import MIN_ROWS, Plan, parse_plan, row_ranges, run_chunks
from .prelude import SMALL_ROWS
from .prelude_f32 import SIGMOID_MAX_ERROR, SIGMOID_ONE, TANH_MAX_ERROR, TANH_ONE
from .render import PRELUDE, SPELL, prelude_names

__all__ = ["FASTMATH", "JIT", "MIN_ROWS", "PRELUDE", "SIGMOID_MAX_ERROR", "SIGMOID_ONE", "SMALL_ROWS", "SPELL",
           "TANH_MAX_ERROR", "TANH_ONE", "NumbaCell", "Plan", "Recycling", "matmul", "parse_plan",
           "prelude_names", "row_ranges", "run_chunks"]
