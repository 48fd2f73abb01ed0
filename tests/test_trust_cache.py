"""Trust in the build cache: only private directories are used (a planted payload never runs), the
fallback is private and fresh, a broken Numba cache entry is rebuilt, and module names change with
the compile options and the generator's own code.

The payloads are real: unpickling one creates a marker file (tests check that it does, when loaded
on purpose, and that lstmc never loads it)."""

import ast
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import lstmc
import lstmc.build
from lstmc.backends import cache
from lstmc.backends.numba.options import JIT

TINY = "cell trust_tiny\nstate h\nh' = tanh(W @ x + U @ h + b)\n"
OTHER_UID = 12345


class Payload:
    """Unpickling this creates `marker`: what an attacker's pickle would do, minus the harm."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _fresh_compile(source=TINY, dtype="float64"):
    """Compile as a new process would: no in-memory cell, the generated module imported again."""
    lstmc.build._memory.clear()
    for name in [m for m in sys.modules if m.startswith("lstmc_generated.numba_trust_tiny")]:
        del sys.modules[name]
    return lstmc.compile(source, "numba", dtype)


def _works(nb):
    x = np.linspace(-1, 1, 12).reshape(3, 2, 2)
    p = nb.init_params(2, 3, seed=1)
    ref = lstmc.compile(TINY, "reference", "float64")
    np.testing.assert_allclose(nb.forward(x, p)[0], ref.forward(x, p)[0], rtol=1e-12, atol=1e-12)


@pytest.fixture
def private_fallback(tmp_path, monkeypatch):
    """A fresh per-process fallback, made under tmp_path/tmp (standing in for the shared /tmp)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(cache, "_fallback", None)
    return tmp


# ------------------------------------------------------------------------------ private directories

@pytest.mark.parametrize("where", ["root", "numba", "__pycache__"])
@pytest.mark.parametrize("problem", ["group-writable", "others-writable", "other owner"])
def test_a_directory_others_can_write_is_not_used(tmp_path, monkeypatch, private_fallback, where, problem):
    root = tmp_path / "cache"
    target = {"root": root, "numba": root / "numba", "__pycache__": root / "numba" / "__pycache__"}[where]
    target.mkdir(parents=True, mode=0o700)
    if problem == "other owner":
        os.chown(target, OTHER_UID, -1)
    else:
        os.chmod(target, 0o770 if problem == "group-writable" else 0o707)
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(root))
    with pytest.warns(RuntimeWarning) as rec:
        got = cache.module_dir("numba")
    msg = str(rec[0].message)
    assert f"not using the cache directory {target}:" in msg
    if problem == "other owner":
        assert f"owned by another user (uid {OTHER_UID}" in msg and "chown" in msg
    else:
        assert f"writable by {'group' if problem == 'group-writable' else 'others'}" in msg and "chmod go-w" in msg
    assert "LSTMC_CACHE_DIR" in msg and "private temporary directory" in msg
    assert root not in got.parents and private_fallback in got.parents


def test_a_private_cache_directory_is_used_and_created_0700(tmp_path, monkeypatch):
    root = tmp_path / "new" / "cache"
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = cache.module_dir("numba")
    assert got == root / "numba"
    for d in (root, root / "numba", root / "numba" / "__pycache__"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_the_fallback_is_fresh_private_and_reused_within_the_process(tmp_path, monkeypatch, private_fallback):
    # the old fallback's predictable name, planted first by "another user" with a payload in it
    planted = private_fallback / f"lstmc-cache-{os.getuid()}"
    (planted / "numba" / "__pycache__").mkdir(parents=True)
    (planted / "numba" / "__pycache__" / "x.nbi").write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
    os.chmod(planted, 0o777)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="not writable"):
        first = cache.module_dir("numba")
    fallback = first.parent
    assert fallback != planted and fallback.parent == private_fallback and fallback.name != planted.name
    st = os.stat(fallback)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert os.listdir(fallback) == ["numba"]                       # made by this process, empty before
    assert cache.module_dir("triton").parent == fallback           # one fallback per process
    assert cache.module_dir("numba") == first
    assert not (tmp_path / "marker").exists()


def test_a_planted_numba_index_never_runs(tmp_path, monkeypatch, private_fallback):
    """End to end: Numba's cache index of a real generated module replaced by a payload. In a
    group-writable or foreign-owned cache, compiling falls back (the payload never runs); the same
    file in a private cache is trusted and does run (so the check is what stops it)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(root))
    nb = _fresh_compile()
    marker = tmp_path / "marker"
    indexes = list((root / "numba" / "__pycache__").glob(f"{Path(nb.module.__file__).stem}.*.nbi"))
    assert len(indexes) == 2                                       # forward and backward
    for f in indexes:
        f.write_bytes(pickle.dumps(Payload(marker)))
    for make_unsafe in (lambda: os.chmod(root, 0o775), lambda: os.chown(root, OTHER_UID, -1)):
        make_unsafe()
        with pytest.warns(RuntimeWarning, match="not using the cache directory"):
            nb2 = _fresh_compile()
        assert not marker.exists()
        assert root not in Path(nb2.module.__file__).parents
        _works(nb2)
        os.chown(root, os.getuid(), -1)
        os.chmod(root, 0o700)
    _fresh_compile()                                               # now private: its index is loaded
    assert marker.exists()


# ------------------------------------------------------------------------------ broken Numba cache

def _damage(how: str, data: bytes) -> bytes:
    return {"truncated": data[: len(data) // 2], "garbage": b"\x00not a pickle\xff" * 40, "empty": b""}[how]


@pytest.mark.parametrize("kind", ["nbi", "nbc"])
@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_a_broken_numba_cache_entry_is_rebuilt(tmp_path_factory, monkeypatch, kind, how):
    root = tmp_path_factory.getbasetemp() / "broken-numba-cache"     # shared: compiled cold only once
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(root))
    nb = _fresh_compile()
    files = [f for f in cache.numba_cache_files(nb.module) if f.suffix == f".{kind}"]
    assert files
    for f in files:
        f.write_bytes(_damage(how, f.read_bytes()))
    with pytest.warns(RuntimeWarning, match=r"(?s)could not be loaded \(.*\); deleted its \d+ cache files .* compiled it again"):
        nb2 = _fresh_compile()
    _works(nb2)
    rebuilt = cache.numba_cache_files(nb2.module)
    assert {f.suffix for f in rebuilt} == {".nbi", ".nbc"}
    assert all(f.stat().st_size > 0 for f in rebuilt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # rebuilt once: loads silently now
        _works(_fresh_compile())


def test_a_broken_cache_no_longer_breaks_later_processes(tmp_path):
    """The reported failure: every later process failed with UnpicklingError until the file was
    deleted by hand. Now the first process rebuilds it (saying so) and the next is silent."""
    code = ("import lstmc, numpy as np; nb = lstmc.compile(%r, 'numba', 'float64');"
            "print(nb.forward(np.ones((3, 1, 2)), nb.init_params(2, 3))[0].sum())") % TINY
    env = os.environ | {"LSTMC_CACHE_DIR": str(tmp_path)}

    def run():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)

    first = run()
    assert first.returncode == 0, first.stderr
    for f in (tmp_path / "numba" / "__pycache__").glob("*forward*.nbi"):
        f.write_bytes(f.read_bytes()[:30])
    second = run()
    assert second.returncode == 0, second.stderr
    assert "could not be loaded (UnpicklingError" in second.stderr and "compiled it again" in second.stderr
    assert second.stdout == first.stdout
    third = run()
    assert third.returncode == 0 and "could not be loaded" not in third.stderr and third.stdout == first.stdout


def test_a_real_compile_error_is_not_hidden_by_the_rebuild(tmp_path, monkeypatch):
    """No cache files to blame: the error is raised as it is."""
    from lstmc.backends import numba as nbmod

    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))

    def broken_warm(self):
        raise TypeError("typing failed")

    monkeypatch.setattr(nbmod.NumbaCell, "warm", broken_warm)
    with pytest.raises(TypeError, match="typing failed"):
        _fresh_compile()


# ------------------------------------------------------------------------------------- cache keys

def test_changing_the_jit_options_changes_the_module(tmp_path, monkeypatch):
    """fastmath lives in numba.options.JIT, not in the generated text: a change must still give a
    new module (and so a new Numba cache), not the stale kernel compiled with the old options."""
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    before = Path(_fresh_compile().module.__file__)
    monkeypatch.setitem(JIT, "fastmath", False)
    after = Path(_fresh_compile().module.__file__)
    assert before.read_text() == after.read_text() and before != after
    monkeypatch.setitem(JIT, "fastmath", {"nsz", "arcp", "contract"})
    assert cache.options_key(JIT) == cache.options_key(dict(JIT, fastmath={"contract", "arcp", "nsz"}))


def test_the_options_key_is_the_same_in_every_process():
    """A set's repr depends on the process's string hash seed; the key must not."""
    code = "from lstmc.backends.cache import options_key; print(options_key({'fastmath': {'afn', 'nsz', 'arcp', 'reassoc'}}))"
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                           env=os.environ | {"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3, 4)}
    assert len(keys) == 1


def test_the_generator_key_follows_the_generator_sources_and_templates(tmp_path, monkeypatch):
    from lstmc.backends import render

    original = cache.generator_key()
    assert cache.generator_key() is original                       # computed once per process
    copy = tmp_path / "templates"
    copy.mkdir()
    for t in Path(render.template_dir()).glob("*.j2"):
        (copy / t.name).write_text(t.read_text())
    template = copy / "numba_cell.py.j2"
    text = template.read_text()
    monkeypatch.setattr(render, "template_dir", lambda: copy)
    try:
        cache.generator_key.cache_clear()
        assert cache.generator_key() == original                   # same content, same key
        template.write_text(text + "\n# changed\n")
        cache.generator_key.cache_clear()
        assert cache.generator_key() != original                   # a template changed
        template.write_text(text)
        monkeypatch.setattr(cache, "GENERATOR_FILES", cache.GENERATOR_FILES[:-1])
        cache.generator_key.cache_clear()
        assert cache.generator_key() != original                   # one source file fewer hashed
    finally:
        monkeypatch.undo()
        cache.generator_key.cache_clear()
    assert cache.generator_key() == original


def _lstmc_imports(package: Path, rel: str) -> set:
    """The lstmc source files (relative to the package) that the module `rel` imports."""
    here = list(Path(rel).parent.parts)
    found = set()
    for node in ast.walk(ast.parse((package / rel).read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - (node.level - 1)]
        elif (node.module or "").split(".")[0] == "lstmc":
            base, node.module = [], ".".join(node.module.split(".")[1:]) or None
        else:
            continue
        mod = base + (node.module.split(".") if node.module else [])
        names = [[]] if node.module else [[a.name] for a in node.names]
        for extra in names:
            if not node.module and extra == ["__version__"]:
                continue                                           # the version: in the key itself
            parts = mod + extra
            f = "/".join(parts) + ".py"
            found.add(f if (package / f).exists() else "/".join(mod + ["__init__.py"]))
    return found


def test_the_generator_files_include_every_lstmc_module_they_import():
    """GENERATOR_FILES is a list by hand: an lstmc module a generator imports must be on it too."""
    package = Path(cache.__file__).resolve().parents[1]
    listed = set(cache.GENERATOR_FILES)
    for rel in listed:
        missing = _lstmc_imports(package, rel) - listed
        assert not missing, f"{rel} imports {missing}, which GENERATOR_FILES does not list"
    assert "ir.py" in _lstmc_imports(package, "backends/render.py")   # the resolution itself works
    for t in ("numba_cell.py.j2", "triton_cell.py.j2"):
        src = (package.parent / "templates" / t).read_text()
        imported = {line.split()[1] for line in src.splitlines() if line.startswith(("from lstmc", "import lstmc"))}
        assert {m.replace(".", "/")[len("lstmc/"):] + ".py" for m in imported} <= listed
    # numba modules import the prelude of their dtype (`from {{ prelude }} import ...`): and the
    # modules those import (prelude.py, options.py) are checked above, through the preludes' own imports
    from lstmc.backends.numba.render import PRELUDE

    assert {m.replace(".", "/")[len("lstmc/"):] + ".py" for m in PRELUDE.values()} <= listed


def test_no_hand_bumped_template_version_is_left():
    from lstmc.backends import numba as nbmod

    assert not hasattr(nbmod, "TEMPLATE_VERSION")
    text = "".join(f.read_text() for f in sorted((Path(cache.__file__).parent / "triton").glob("*.py")))
    assert "TEMPLATE_VERSION" not in text and text.count("generator_key()") >= 2     # cell.py and aot.py


# ------------------------------------------------------------------------------------------ writes

def test_one_atomic_writer_and_it_never_leaves_half_a_file(tmp_path):
    import lstmc.files
    import lstmc.train

    assert lstmc.train.atomic_write is lstmc.files.atomic_write is cache.atomic_write
    path = tmp_path / "f.bin"
    lstmc.files.atomic_write(path, b"old")

    def crash(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        lstmc.files.atomic_write(path, crash)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    lstmc.files.atomic_write(path, lambda f: f.write(b"new"), mode=0o600)
    assert path.read_bytes() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_generated_source_files_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMC_CACHE_DIR", str(tmp_path))
    path = Path(_fresh_compile().module.__file__)
    assert path.parent == tmp_path / "numba" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
