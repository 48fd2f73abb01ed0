"""Writing files so that a reader never sees half of one: the one atomic writer lstmc uses, for
training outputs (lstmc.train) and generated source in the build cache (lstmc.backends.cache).

It has no dependencies on the rest of lstmc, so both the backends and the training runtime can
import it without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, write, mode: int | None = None) -> None:
    """Call write(file) on a temporary file beside `path`, flush it to disk, then rename it over
    `path`: a reader (a resumed run, another process importing a generated module) sees the old
    file or the new one, never half of one, even after a crash or kill -9.

    `write` is a callable taking a binary file, or bytes. `mode`: the new file's permissions; None
    gives the usual ones (0o666 less the umask). The temporary file is removed on any error."""
    path = Path(path)
    if isinstance(write, (bytes, bytearray)):
        data = bytes(write)
        write = lambda f: f.write(data)  # noqa: E731
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)   # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort: not every file system allows it."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
