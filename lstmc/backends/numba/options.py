"""The @njit options of the generated kernels and of their prelude, including array-argument `noalias`.

LLVM vectorises a fused block only if it can rule out that its stores overlap its loads. Numba
marks array arguments `noalias` only inside its own parfors; the flag exists in Numba's compiler
(`Flags.noalias`) but is not a public @njit option, so it is registered here. It is sound for
lstmc's kernels: every array a kernel writes is allocated by lstmc for that call, and arrays the
user passes in are only read. If a Numba release drops the flag, kernels still compile, without
it, and tests/test_numba.py::test_float32_pointwise_loops_are_vectorised reports the slowdown.
"""

from __future__ import annotations

# LLVM fast-math flags: the ones that let fused blocks vectorise (contraction into FMA,
# reassociation, reciprocal and approximate functions, signless zeros), but not `nnan`/`ninf`:
# with those LLVM may assume no value is NaN or infinite, and an overflowing exp (1 / (1 + exp(100)))
# or a NaN in the data then turned into NaN or garbage where IEEE arithmetic gives 0 or an honest NaN.
FASTMATH = frozenset({"contract", "reassoc", "arcp", "afn", "nsz"})
JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=set(FASTMATH))

try:  # pragma: no branch
    from numba.core import cpu, options

    if not hasattr(cpu.CPUTargetOptions, "noalias"):
        cpu.CPUTargetOptions.noalias = options._mapping("noalias")
    JIT["noalias"] = True
except (ImportError, AttributeError):  # pragma: no cover - a Numba without the internal flag
    pass
