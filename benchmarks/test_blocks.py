"""The float32 fused pointwise blocks alone, before and after the numerics fixes of the "Trust" issue.

    pytest benchmarks/test_blocks.py        (also part of `make bench`)

"before" is the generated kernel as it was: LLVM fast-math with `nnan`/`ninf`, and tanh/sigmoid
approximations that never reach +-1. "after" is today's: those two flags dropped, exact saturation
by two selects. Both are the same generated kernels with the recurrent products stubbed out (at
B <= SMALL_ROWS the products are the prelude's in-kernel loops, rebound here to a no-op), so what
is timed is the time loop's pointwise blocks: the kernels called directly, no packing, no input
GEMM. "before"'s activations are the prelude's (lstmc/backends/numba/prelude_f32.py) without the
saturation selects.
"""

import importlib.util
import re
import types

import numpy as np
import pytest

from numba import njit

import lstmc
from lstmc.backends.numba import SMALL_ROWS, prelude_f32

ROUNDS = 15
T, B, I, H = 400, SMALL_ROWS, 8, 1024


@njit(inline="always")
def _no_product(a, W, out):
    pass


def _load(src: str, path: str, name: str) -> types.ModuleType:
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"{name}_{abs(hash(src))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _before_prelude(tmp: str) -> types.ModuleType:
    """The float32 prelude without the exact saturation of tanh/sigmoid."""
    with open(prelude_f32.__file__) as f:
        src = f.read()
    src, n0 = re.subn(r"^from \.", "from lstmc.backends.numba.", src, flags=re.M)   # a module of its own
    src, n1 = re.subn(r"^    r = np\.float32\(1\.0\) if x >= .* else r\n", "", src, flags=re.M)
    src, n2 = re.subn(r"^    return np\.float32\(-1\.0\) if x <= .* else r$", "    return r", src, flags=re.M)
    src, n3 = re.subn(r"^    return np\.float32\(1\.0\) if x >= .* else s$", "    return s", src, flags=re.M)
    assert n0 >= 1 and (n1, n2, n3) == (1, 1, 1)
    return _load(src, f"{tmp}/prelude_before.py", "lstmc_prelude_before")


def _variant(source: str, variant: str, tmp: str) -> types.ModuleType:
    opts = "cache=False" + (", fastmath=True" if variant == "before" else "")
    src, n = re.subn(r"^from lstmc\.backends\.numba\.options import JIT as _JIT.*$",
                     f"from lstmc.backends.numba.options import JIT as _J\n_JIT = dict(_J, {opts})", source, flags=re.M)
    assert n == 1
    mod = _load(src, f"{tmp}/blocks_{variant}.py", f"lstmc_blocks_{variant}")
    # rebound before the kernels compile (Numba reads their globals then): no products, and for
    # "before" the activations as they were
    assert mod._mm_nt is prelude_f32._mm_nt and mod._mm_nn is prelude_f32._mm_nn
    mod._mm_nt = mod._mm_nn = _no_product
    if variant == "before":
        before = _before_prelude(tmp)
        mod._tanh, mod._sigmoid = before._tanh, before._sigmoid
    return mod


def _captured_calls(nb, mod):
    """The arguments forward() and backward() pass to the kernels, captured once."""
    calls = {}

    def capture(name):
        def run(*args):
            calls[name] = args
            return getattr(mod, name)(*args)
        return run

    clone = object.__new__(type(nb))
    clone.__dict__.update(nb.__dict__)
    clone.module = types.SimpleNamespace(forward=capture("forward"), backward=capture("backward"))
    params = nb.init_params(I, H, seed=0)
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32) * 3
    y, _, tape = clone.forward(x, params)
    clone.backward(tape, np.ones_like(y))
    return calls


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("variant", ["before", "after"])
@pytest.mark.parametrize("cell", ["lstm", "gru_v1"])
def test_float32_blocks(benchmark, machine, tmp_path, cell, variant, direction):
    nb = lstmc.compile(cell, "numba", "float32")
    mod = _variant(nb.source, variant, str(tmp_path))
    args = _captured_calls(nb, mod)[direction]
    fn = getattr(mod, direction)
    benchmark.group = f"blocks-{cell}-{direction}-T{T}-B{B}-H{H}"
    benchmark.extra_info.update(machine=machine, who=variant)
    benchmark.pedantic(lambda: fn(*args), rounds=ROUNDS, warmup_rounds=2, iterations=1)
