"""The float32 fused pointwise blocks alone, before and after the numerics fixes of the "Trust" issue.

    pytest benchmarks/test_blocks.py        (also part of `make bench`)

"before" is the generated kernel as it was: LLVM fast-math with `nnan`/`ninf`, and tanh/sigmoid
approximations that never reach +-1. "after" is today's: those two flags dropped, exact saturation
by two selects. Both are the same generated kernels with the recurrent products stubbed out (at
B <= SMALL_ROWS the products are in-kernel loops, replaced here by `pass`), so what is timed is the
time loop's pointwise blocks: the kernels called directly, no packing, no input GEMM.
"""

import importlib.util
import re
import types

import numpy as np
import pytest

import lstmc
from lstmc.backends import numba_render

ROUNDS = 15
T, B, I, H = 400, numba_render.SMALL_ROWS, 8, 1024


def _variant(source: str, variant: str, tmp: str) -> types.ModuleType:
    src, n = re.subn(r"def _mm_(nt|nn)\(a, W, out\):.*?(?=\n\n\n)", r"def _mm_\1(a, W, out):\n    pass",
                     source, flags=re.S)
    assert n == 2
    opts = "cache=False" + (", fastmath=True" if variant == "before" else "")
    src, n = re.subn(r"^from lstmc\.backends\.numba_options import JIT as _JIT.*$",
                     f"from lstmc.backends.numba_options import JIT as _J\n_JIT = dict(_J, {opts})", src, flags=re.M)
    assert n == 1
    if variant == "before":   # the activations without their exact saturation
        src, n1 = re.subn(r"^    r = np\.float32\(1\.0\) if x >= .* else r\n", "", src, flags=re.M)
        src, n2 = re.subn(r"^    return np\.float32\(-1\.0\) if x <= .* else r$", "    return r", src, flags=re.M)
        src, n3 = re.subn(r"^    return np\.float32\(1\.0\) if x >= .* else s$", "    return s", src, flags=re.M)
        assert (n1, n2, n3) == (1, 1, 1)
    path = f"{tmp}/blocks_{variant}.py"
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"lstmc_blocks_{variant}_{abs(hash(src))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
