"""Build: turn a cell (name, path, text or Cell) into a compiled program for one backend and dtype.

`compile` runs the passes (parse -> lower) and hands the Program to a backend. Results are cached in
memory by content: the Program's canonical text, the backend, the dtype and the lstmc version, so
compiling the same cell twice is free.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from pathlib import Path

from .version import __version__
from .lower import Program, lower
from .spec import Cell, SpecError, parse

__all__ = ["load", "compile", "builtin_cells", "BACKENDS", "cache_key"]

BACKENDS = ("reference", "torch", "numba", "triton")
_memory: dict[str, object] = {}


def builtin_cells() -> list[str]:
    """Names of the cells shipped with lstmc."""
    files = importlib.resources.files("lstmc.cells")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".cell"))


def load(cell: str | os.PathLike | Cell) -> Cell:
    """A built-in cell by name (`"lstm"`), a path to a .cell file, or cell text (it contains a newline)."""
    if isinstance(cell, Cell):
        return cell
    if not isinstance(cell, (str, os.PathLike)):
        raise TypeError(f"load() takes a built-in cell name, a path or cell text, got {type(cell).__name__}")
    if isinstance(cell, str) and "\n" in cell.strip():
        return parse(cell)
    name = os.fspath(cell).strip() if isinstance(cell, str) else os.fspath(cell)
    builtin = importlib.resources.files("lstmc.cells") / f"{name}.cell"
    if "/" not in name and not name.endswith(".cell") and _is_file(builtin):
        return parse(builtin.read_text(), filename=f"<builtin {name}.cell>")
    path = Path(name)
    if not _is_file(path):
        raise FileNotFoundError(f"no built-in cell or file named '{name}'; built-in cells: "
                                f"{', '.join(builtin_cells())}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"the file is not UTF-8 text ({e.reason})", filename=str(path), line=1, col=1,
                        fix="save the cell file as UTF-8 text") from None
    return parse(text, filename=str(path))


def _is_file(path) -> bool:
    try:
        return path.is_file()
    except OSError:          # a name too long for the file system (ENAMETOOLONG) is no file either
        return False


def cache_key(program: Program, backend: str, dtype: str, extra: str = "") -> str:
    h = hashlib.sha256()
    for part in (program.text(), backend, dtype, __version__, extra):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def compile(cell, backend: str = "reference", dtype: str = "float64", **options):
    """Compile `cell` (name, path, text containing a newline, or Cell) for `backend`."""
    cell = load(cell)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from .backends.base import check_dtype

    if backend == "triton" and dtype in ("bfloat16", "float16"):
        # 16-bit storage with float32 arithmetic, accumulation and state (the triton backend only)
        options = dict(options, storage=dtype)
        dtype = "float32"
    dtype = check_dtype(dtype)
    program = lower(cell)
    key = cache_key(program, backend, dtype, repr(sorted(options.items())))
    hit = _memory.get(key)
    if hit is not None:
        return hit
    if backend == "reference":
        from .backends.reference import ReferenceCell as cls
    elif backend == "torch":
        from .backends.torch import TorchCell as cls
    elif backend == "numba":
        from .backends.numba import NumbaCell as cls
    else:
        from .backends.triton import TritonCell as cls
    compiled = cls(program, dtype, key=key, **options)
    _memory[key] = compiled
    return compiled
