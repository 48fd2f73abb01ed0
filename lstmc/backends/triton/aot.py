"""Ahead-of-time compiling: the generated kernels through Triton's real compiler for an NVIDIA GPU
that is not here (`compile_ahead`), to catch what the interpreter cannot."""

from __future__ import annotations

import hashlib

from ...lower import Program
from ..cache import build_module, generator_key
from .environment import _InterpretEnv, _lock, asked_interpreting
from ...names import ARRAYS, array_dtype
from .kernel import KernelMeta, size_block
from .render import render
from .spell import STORAGE
from .schedule import _pow2, persistent_warps
from .slp import _install_slp_guard, _NoSLP


_SHORT = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "float16": "fp16", "int32": "i32"}


def signature(meta: KernelMeta, storage: str, compute: str) -> dict:
    """Triton's signature of one generated kernel: each pointer's dtype from the naming table
    (names.ARRAYS: storage, compute or index), runtime ints, constexprs."""
    sig = {a: "*" + _SHORT[array_dtype(ARRAYS[meta.array_of[a][0]], storage, compute)] for a in meta.arrays}
    sig.update({sc: "i32" for sc in meta.scalars})
    sig.update({c: "constexpr" for c in meta.constexprs})
    return sig


def compile_ahead(program: Program, storage: str = "float32", H: int = 64, capability: int = 90,
                  kernels=None, tf32: bool = False, block_b: int = 16, block_h: int = 32, block_k: int = 32,
                  num_warps: int | None = None, sizes: dict | None = None) -> dict:
    """Compile the generated kernels with Triton's real compiler for an NVIDIA GPU of compute
    `capability` (90: H100), without one: `triton.compile` with a GPUTarget (ptxas ships in the
    Triton wheel). Catches what the interpreter cannot: type errors of loop-carried values,
    compiler crashes, shared-memory needs. Returns {kernel: {"shared": bytes, "mma": number of
    mma instructions in the PTX, "spills": number of .local declarations}}. The interpreter must
    be off (TRITON_INTERPRET unset). Run it in a subprocess where a compiler abort must not kill you.
    `sizes`: the numbers of a cell's declared sizes ({"P": 32}; default H each), for the persistent
    kernels' tiles of those sizes.
    """
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if asked_interpreting():
        raise RuntimeError("compile_ahead needs Triton's compiler: unset TRITON_INTERPRET")
    _install_slp_guard()
    compute = STORAGE[storage]
    rendered = render(program, storage, compute, "ahead-of-time")
    digest = hashlib.sha256((rendered.source + generator_key()).encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() else "_" for ch in program.cell.name)
    with _lock, _InterpretEnv(False):
        mod = build_module(rendered.source, f"{safe}_{storage}_aot_{digest}", "triton")
    cx = {"BB": block_b, "BH": block_h, "BK": block_k, "DT": getattr(tl, storage), "CT": getattr(tl, compute),
          "DOT_F32": False, "PREC": "tf32" if tf32 else "ieee", "STORE_TAPE": True}
    out = {}
    for name, meta in rendered.kernels.items():
        if kernels is not None and name not in kernels:
            continue
        sig = signature(meta, storage, compute)
        blocks = {size_block(z): max(16, _pow2((sizes or {}).get(z, H))) for z in meta.sizes}
        consts = {c: {**cx, **blocks}[c] for c in meta.constexprs}
        if meta.variant == "persistent":
            consts["BH"] = max(16, _pow2(H))
        warps = num_warps or (persistent_warps(H) if meta.variant == "persistent" else 4)
        with _NoSLP():
            k = triton.compile(ASTSource(fn=getattr(mod, name), signature=sig, constexprs=consts),
                               target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})
        ptx = k.asm.get("ptx", "")
        out[name] = {"shared": int(k.metadata.shared), "mma": ptx.count("mma."), "spills": ptx.count(".local")}
    return out
