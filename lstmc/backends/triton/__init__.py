"""The `triton` backend (GPU): generated Triton kernels over the lowered Program, tested on the CPU
under Triton's interpreter (TRITON_INTERPRET=1). docs/triton.md describes the design.

One job per module:
  environment.py  interpreter or compiler (fixed at `import triton`), TRITON_INTERPRET, what is missing
  schedule.py     Schedule, the persistent-fit rules, the heuristic default, autotuning
  slp.py          the compiler guard (LLVM's SLP vectorizer off for lstmc's own kernels)
  graphs.py       CUDA-graph workspaces of the step design's time loops
  cell.py         TritonCell, the CompiledCell API: build, convert, launch, GEMMs around the loops
  aot.py          compile_ahead: the real compiler for a GPU that is not here
  render.py       Program -> kernel source (templates/triton_cell.py.j2) + launch metadata: which kernels
                  (the step design's segments, the persistent design) and the module around them
  kernel.py       KernelWriter: one kernel's lines (loads, the blocks' tile expressions, tl.dot products,
                  reductions, stores) and KernelMeta, what the host needs to launch it
  spell.py        SPELL, the op -> Triton text table; STORAGE, the compute type per storage type
  prelude.py      the math the generated kernels import (_sigmoid, _tanh, ..., _dot)

This module only re-exports; importing it imports neither torch nor Triton (they are imported when a
cell is built; prelude.py, which needs Triton, is imported by the generated modules).
"""

from .aot import compile_ahead
from .cell import TritonCell
from .environment import interpreting, triton_knob_interpret
from .graphs import GRAPH_CACHE
from .spell import SPELL, STORAGE
from .schedule import (VARIANTS, Schedule, persistent_fits, persistent_shared_bytes, persistent_warps,
                       persistent_weight_bytes, triton_cdiv)

# `environment` and `render` name the submodules here (their functions of the same names are
# environment.environment and render.render); tests replace `interpreting` here, and the backend
# asks this package's `interpreting` (environment.asked_interpreting).
__all__ = ["GRAPH_CACHE", "SPELL", "STORAGE", "VARIANTS", "Schedule", "TritonCell", "compile_ahead",
           "interpreting", "persistent_fits", "persistent_shared_bytes", "persistent_warps",
           "persistent_weight_bytes", "triton_cdiv", "triton_knob_interpret"]
