"""The file-backed build cache shared by the generated backends (numba, triton).

Generated source is written atomically to LSTMC_CACHE_DIR/<backend>/<name>.py and imported from
there: a real file, so Numba's `cache=True` and Triton's own cache (both keyed by the source file)
work across processes. A file whose content differs from the source (corrupted, half-written by a
killed process) is rewritten; two processes building the same module both succeed (each writes a
private temporary file, then renames it atomically); an unwritable cache directory falls back to a
temporary one with a warning.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path


def cache_dir() -> Path:
    """LSTMC_CACHE_DIR, else $XDG_CACHE_HOME/lstmc, else ~/.cache/lstmc."""
    env = os.environ.get("LSTMC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstmc"


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}-{threading.get_ident()}"
        probe.write_text("ok")
        probe.unlink()
        return path
    except OSError as e:
        fallback = Path(tempfile.gettempdir()) / f"lstmc-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        warnings.warn(f"lstmc cache directory {path} is not writable ({e.strerror}); using {fallback} instead. "
                      f"Set LSTMC_CACHE_DIR to choose another.", RuntimeWarning, stacklevel=3)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def build_module(source: str, name: str, subdir: str):
    """Write `source` atomically to <cache>/<subdir>/<name>.py (unless identical) and import it."""
    directory = _writable_dir(cache_dir() / subdir)
    path = directory / f"{name}.py"
    data = source.encode()
    try:
        current = path.read_bytes()
    except OSError:
        current = None
    if current != data:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    # The module's name is derived from its file name alone: Numba's cache records it and imports
    # it by that name when it loads a compiled function, so the name of a file must never change
    # meaning (its content hash is part of the file name).
    if "lstmc_generated" not in sys.modules:
        pkg = types.ModuleType("lstmc_generated")
        pkg.__path__ = []
        sys.modules["lstmc_generated"] = pkg
    modname = f"lstmc_generated.{subdir}_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[modname]
        raise
    return mod
