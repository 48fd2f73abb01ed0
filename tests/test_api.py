"""Bad arguments get a ValueError that names the argument (every backend)."""

import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

import lstmc

BACKENDS = ["reference", "torch"]


def _args(prog, T=3, B=2, I=4, H=5):
    p = prog.init_params(I, H)
    x = np.zeros((T, B, I), dtype=prog.np_dtype)
    return x, p


BAD = [  # (description, mutate(x, params) -> kwargs for forward, phrase in the message)
    ("2-D x", lambda x, p: dict(x=x[0], params=p), "x must be a 3-D array"),
    ("wrong dtype", lambda x, p: dict(x=x.astype(np.float32), params=p), "x has dtype float32"),
    ("wrong I", lambda x, p: dict(x=np.zeros((3, 2, 7)), params=p), "x has shape"),
    ("missing param", lambda x, p: dict(x=x, params={k: v for k, v in p.items() if k != "U_i"}), "missing U_i"),
    ("extra param", lambda x, p: dict(x=x, params=p | {"zzz": p["b_ii"]}), "unexpected zzz"),
    ("bad param shape", lambda x, p: dict(x=x, params=p | {"U_f": np.zeros((5, 4))}), "params['U_f'] has shape"),
    ("params not dict", lambda x, p: dict(x=x, params=[1, 2]), "params must be a dict"),
    ("state shape", lambda x, p: dict(x=x, params=p, state={"h": np.zeros((3, 5))}), "state['h'] has shape"),
    ("unknown state", lambda x, p: dict(x=x, params=p, state={"q": np.zeros((2, 5))}), "unknown entries"),
    ("lengths too long", lambda x, p: dict(x=x, params=p, lengths=[4, 1]), "lengths must lie in [0, T=3]"),
    ("negative length", lambda x, p: dict(x=x, params=p, lengths=[-1, 1]), "lengths must lie"),
    ("lengths wrong count", lambda x, p: dict(x=x, params=p, lengths=[1, 1, 1]), "one per batch row"),
    ("fractional lengths", lambda x, p: dict(x=x, params=p, lengths=[1.5, 1]), "lengths must be integers"),
    ("empty sequence", lambda x, p: dict(x=np.zeros((0, 2, 4)), params=p), "T and B must be at least 1"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("desc, mutate, phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_forward_arguments(backend, desc, mutate, phrase):
    prog = lstmc.compile("lstm", backend)
    x, p = _args(prog)
    with pytest.raises(ValueError) as e:
        prog.forward(**mutate(x, p))
    assert phrase in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_backward_arguments(backend):
    prog = lstmc.compile("gru", backend)
    x, p = _args(prog)
    y, st, tape = prog.forward(x, p)
    with pytest.raises(ValueError, match="dy has shape"):
        prog.backward(tape, np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="tape must be"):
        prog.backward(None, np.zeros_like(y))
    with pytest.raises(ValueError, match="dstate has unknown entry 'c'"):
        prog.backward(tape, np.zeros_like(y), {"c": np.zeros((2, 5))})


def test_bad_compile_arguments():
    with pytest.raises(ValueError, match="unknown backend"):
        lstmc.compile("lstm", backend="cuda")
    with pytest.raises(ValueError, match="dtype must be one of"):
        lstmc.compile("lstm", dtype="int8")
    with pytest.raises(FileNotFoundError, match="built-in cells: cifg_lstm"):
        lstmc.load("no_such_cell")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        lstmc.compile("lstm").init_params(3, 0)


def test_load_takes_names_paths_and_text_alike(tmp_path):
    text = (Path(lstmc.__file__).parent / "cells" / "gru.cell").read_text()
    f = tmp_path / "mine.cell"
    f.write_text(text)
    for how in ("gru", "gru\n", str(f), f, text):
        assert lstmc.load(how).name == "gru"
    # a name longer than the file system allows is "not found", not an OSError from stat()
    with pytest.raises(FileNotFoundError, match="no built-in cell or file named"):
        lstmc.load("x" * 300)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lstmc", *args], capture_output=True, text=True, timeout=300)


def test_cli_show_prints_every_stage():
    r = _cli("show", "gru_v1")
    assert r.returncode == 0
    for phrase in ("equations:", "n = tanh(W_n @ x + U_n @ (r * h) + b_n)", "U_n          [H, H]",
                   "backward", "GEMM [rp[1,U_n]] = mul_r_h @ [U_n]^T", "saved per step: z, n, r, mul_r_h"):
        assert phrase in r.stdout, phrase


def test_cli_spec_error_exits_2_without_traceback(tmp_path):
    f = tmp_path / "bad.cell"
    f.write_text("cell bad\nstate h\nh' = tanh(h @ x)\n")
    r = _cli("show", str(f))
    assert r.returncode == 2
    assert "bad.cell:3:11: error: the left side of @ must be a parameter" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_check_exit_status(tmp_path):
    r = _cli("check", "indrnn")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finite differences" in r.stdout and "0 failed" in r.stdout


def test_cli_compile_emit_writes_readable_source(tmp_path):
    r = _cli("compile", "mgu", "--backend", "torch", "--emit", str(tmp_path))
    assert r.returncode == 0, r.stderr
    src = (tmp_path / "mgu_torch_float32.py").read_text()
    assert "Generated by lstmc" in src and "cell `mgu`" in src
    assert "def fwd_step" in src and "def bwd_step" in src


def test_cli_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lstmc {lstmc.__version__}"


def test_cli_check_compares_numba_by_default():
    r = _cli("check", "indrnn")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "numba/float64" in r.stdout


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU: the triton backend runs")
def test_cli_triton_without_a_gpu_is_one_line_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "lstmc", "compile", "lstm", "--backend", "triton"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 2
    assert r.stderr.startswith("lstmc: error: the triton backend needs a CUDA GPU") and "Traceback" not in r.stderr


def test_emitted_header_regenerates_a_file_cell(tmp_path):
    cell = tmp_path / "mine.cell"
    cell.write_text("cell mine\nstate h\nh' = tanh(W @ x + U @ h + b)\n")
    r = _cli("compile", str(cell), "--backend", "numba", "--emit", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    src = (tmp_path / "out" / "mine_numba_float32.py").read_text()
    assert "regenerate with `lstmc compile mine.cell --backend numba --dtype float32 --emit DIR`" in src
