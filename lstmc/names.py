"""One naming table for the compiler and the backends.

- VALUES: the kinds of values a lowered Program's blocks define and read (the `var` keys of
  lstmc/program.py), each with the arity of its key, what it means and the prefix of its local in
  generated code. `program.verify` checks keys against it; every renderer names locals with
  `local_name`.
- ARRAYS: the arrays a generated Triton kernel takes, each with its role, its dtype class (the
  storage dtype, the compute dtype or an index) and what its name carries after the prefix. The
  renderer names kernel arguments with `array_name`, the host (triton/cell.py, triton/graphs.py)
  names the tensors it passes the same way, and the ahead-of-time compiler reads each argument's
  dtype from the table (`array_dtype`) instead of guessing it from the name.

Every identifier built here is a fixed prefix plus a spec name checked to be a plain identifier
(`ident`), so a spec can never shadow an import, a builtin or a keyword of the generated module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ValueKind", "VALUES", "LEAVES", "ArrayKind", "ARRAYS", "ident", "mangle", "local_name",
           "array_name", "array_dtype"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def mangle(name) -> str:
    """A spec name as an identifier part (a prime becomes 1: c' -> c1)."""
    return str(name).replace("'", "1")


def ident(prefix: str, name) -> str:
    """`prefix` + a spec name, checked to be a plain identifier."""
    out = prefix + mangle(name)
    if not _IDENT.match(out):  # pragma: no cover - spec.py only admits identifiers
        raise ValueError(f"refusing to emit identifier {out!r}")
    return out


# ------------------------------------------------------------------------------- Program values

@dataclass(frozen=True)
class ValueKind:
    kind: str        # the first element of a var key
    arity: int       # how many parts follow it: (name,) or (group, name)
    meaning: str
    prefix: str      # its local in generated code: prefix + name, or prefix + group [+ "_" + name]
    grouped: bool = False   # the key's first part is a GEMM group index


VALUES = {k.kind: k for k in (
    ValueKind("xp", 1, "input product M @ x_t", "xp_"),
    ValueKind("rp", 2, "recurrent product M @ v_g", "rp", grouped=True),
    ValueKind("s1", 1, "new state s'", "n_"),
    ValueKind("sv", 1, "a value saved in the tape", "sv_"),
    ValueKind("t", 1, "a temporary", "t_"),
    ValueKind("ds1", 1, "incoming adjoint of s'", "dn_"),
    ValueKind("dv", 1, "adjoint of group g's operand", "dv", grouped=True),
    ValueKind("drp", 2, "adjoint of a recurrent product", "drp", grouped=True),
    ValueKind("dxp", 1, "adjoint of an input product", "dxp_"),
    ValueKind("ds", 1, "adjoint of the state before the step", "ds_"),
    ValueKind("dp", 1, "gradient of a vector parameter", "dp_"),
)}

# IR leaves that are not vars: their locals
LEAVES = {"state": "s_", "param": "p_"}


def local_name(key: tuple) -> str:
    """The generated-code local of a var key: ('s1', 'h') -> n_h, ('rp', 0, 'U_i') -> rp0_U_i, ('dv', 1) -> dv1."""
    k = VALUES[key[0]]
    if len(key) != k.arity + 1:
        raise ValueError(f"a {k.kind} key has {k.arity} part(s) after the kind, got {key!r}")
    if not k.grouped:
        return ident(k.prefix, key[1])
    group = f"{k.prefix}{int(key[1])}"
    return ident(group + "_", key[2]) if k.arity == 2 else group


# ------------------------------------------------------------------------------- kernel arrays

@dataclass(frozen=True)
class ArrayKind:
    prefix: str
    role: str
    dtype: str       # "storage" (the cell's dtype), "compute" (its arithmetic dtype) or "index" (int32)
    named: str       # what follows the prefix: "" nothing, "group" a GEMM group index, "name" a spec name
    scratch: bool = False   # per-step scratch of the step kernels ([B, slots*H], compute dtype)


ARRAYS = {a.prefix: a for a in (
    ArrayKind("XP", "input products of every step [T, B, nx*H]", "storage", ""),
    ArrayKind("Y", "the output sequence [T, B, H]", "storage", ""),
    ArrayKind("dY", "the output's adjoints [T, B, H]", "storage", ""),
    ArrayKind("L", "the rows' lengths [B]", "index", ""),
    ArrayKind("SQ_", "a state's sequence [T+1, B, H] (or a ring of two rows)", "compute", "name"),
    ArrayKind("SV_", "a saved value's sequence, the tape [T, B, H]", "storage", "name"),
    ArrayKind("P_", "a vector parameter [H]", "storage", "name"),
    ArrayKind("UT", "group g's matrices, transposed side by side [H, k*H]", "storage", "group"),
    ArrayKind("U", "group g's matrices stacked [k*H, H]", "storage", "group"),
    ArrayKind("RS", "group g's products of this step", "compute", "group", scratch=True),
    ArrayKind("DV", "the adjoint of group g's operand at this step", "compute", "group", scratch=True),
    ArrayKind("BT_", "a temporary a later segment of the step reads", "compute", "name", scratch=True),
    ArrayKind("DS_", "a state's incoming adjoint [B, H]", "compute", "name"),
    ArrayKind("DSN_", "a state's outgoing adjoint [B, H]", "compute", "name"),
    ArrayKind("DP", "vector-parameter gradients, partial sums per row block [nb, nvec, H]", "compute", ""),
    ArrayKind("dRP", "group g's product adjoints of every step [T, B, k*H]", "storage", "group"),
    ArrayKind("dXP", "the input products' adjoints of every step [T, B, nx*H]", "storage", ""),
)}


def array_name(prefix: str, name=None) -> str:
    """A kernel array's argument name: ("SQ_", "c") -> SQ_c, ("UT", 0) -> UT0, ("XP",) -> XP."""
    a = ARRAYS[prefix]
    if a.named == "":
        if name is not None:
            raise ValueError(f"array {prefix} takes no name, got {name!r}")
        return prefix
    if a.named == "group":
        return f"{prefix}{int(name)}"
    return ident(prefix, name)


def array_dtype(kind: ArrayKind, storage: str, compute: str) -> str:
    """The dtype of an array of `kind` in a kernel of this storage/compute pair."""
    return {"storage": storage, "compute": compute, "index": "int32"}[kind.dtype]
