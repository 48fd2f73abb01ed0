"""`heads N`: block-diagonal recurrent matrices multiplied head by head.

The oracle is the same cell without `heads`, whose recurrent matrices are the dense block-diagonal
[H, H] matrices, run by the reference backend's first-edition path (one dense product per group):
a cell with heads must give the same outputs, states and input gradients, and its matrices'
gradients must be the diagonal blocks of the dense gradients."""

from __future__ import annotations

import os
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc.backends.sequence import heads_nn, heads_nt  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SLSTM_HEADS = (EXAMPLES / "slstm_heads.cell").read_text()
# a GRU-like cell with 2 heads and a dependent product (U_n @ (r * h): a group whose operand is saved)
GRU_HEADS = """cell gru_heads
heads 2
state h
r = sigmoid(W_r @ x + U_r @ h + b_r)
z = sigmoid(W_z @ x + U_z @ h + b_z)
n = tanh(W_n @ x + U_n @ (r * h) + b_n)
h' = (1 - z) * n + z * h
"""
CELLS = {"slstm_heads": SLSTM_HEADS, "gru_heads": GRU_HEADS}


def _without_heads(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("heads"))


def _block_diag(u: np.ndarray) -> np.ndarray:
    N, d, _ = u.shape
    out = np.zeros((N * d, N * d))
    for n in range(N):
        out[n * d:(n + 1) * d, n * d:(n + 1) * d] = u[n]
    return out


def _blocks(g: np.ndarray, N: int) -> np.ndarray:
    d = g.shape[0] // N
    return np.stack([g[n * d:(n + 1) * d, n * d:(n + 1) * d] for n in range(N)])


def _as(backend, a, dtype):
    a = np.ascontiguousarray(a, dtype=dtype)
    return torch.from_numpy(a) if backend == "triton" else a


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# B = 3: numba multiplies in its kernel (at most SMALL_ROWS rows); B = 40: through BLAS. Triton runs
# under its CPU interpreter in CI, at the small size only.
RUNS = [(b, B) for b in ("reference", "torch", "numba") for B in (3, 40)] + [("triton", 3)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend,B", RUNS, ids=[f"{b}-B{B}" for b, B in RUNS])
@pytest.mark.parametrize("name", list(CELLS))
def test_heads_equal_the_dense_block_diagonal_cell(name, backend, B, dtype):
    if backend == "triton":
        pytest.importorskip("triton")
    _check(CELLS[name], lstmc.compile(CELLS[name], backend, dtype), backend, dtype, B,
           4 * lstmc.parse(CELLS[name]).heads)


@pytest.mark.parametrize("H", [40, 64], ids=["H40-tiles-straddle-heads", "H64-tiles-inside-heads"])
@pytest.mark.parametrize("name", list(CELLS))
def test_triton_step_kernels_read_only_their_heads(name, H):
    """The step design with 16-wide hidden tiles: each program's products run K over the heads its
    tile belongs to (H = 40, 4 heads of 10: tiles straddle heads; H = 64: a tile inside one head)."""
    pytest.importorskip("triton")
    from lstmc.backends.triton import Schedule

    cc = lstmc.compile(CELLS[name], "triton", "float32")
    assert "klo = (pid_h * BH) // HD * HD" in cc.source
    old = cc.schedule
    cc.schedule = Schedule("step", block_b=16, block_h=16, block_k=16)
    try:
        _check(CELLS[name], cc, "triton", "float32", 3, H)
    finally:
        cc.schedule = old


def _check(text, cell, backend, dtype, B, H):
    N = lstmc.parse(text).heads
    T, I = 4, 5
    dense = lstmc.compile(_without_heads(text), "reference", "float64")
    rng = np.random.default_rng(0)
    params = cell.init_params(I, H, seed=3)
    params = {k: np.asarray(_np(v), np.float64) for k, v in params.items()}
    dparams = {k: _block_diag(v) if v.ndim == 3 else v for k, v in params.items()}
    x = rng.standard_normal((T, B, I))
    L = rng.integers(1, T + 1, B)
    state = {s: 0.5 * rng.standard_normal((B, H)) for s in dense.cell.states}
    if "n" in state:                           # sLSTM's normaliser starts positive
        state["n"] = np.abs(state["n"]) + 1.0
    for reverse in (False, True):
        y0, s0, tape0 = dense.forward(x, dparams, state=state, lengths=L, reverse=reverse)
        dy = rng.standard_normal(y0.shape)
        g0 = dense.backward(tape0, dy)
        y, s, tape = cell.forward(_as(backend, x, dtype), {k: _as(backend, v, dtype) for k, v in params.items()},
                                  state={k: _as(backend, v, dtype) for k, v in state.items()}, lengths=L,
                                  reverse=reverse)
        g = cell.backward(tape, _as(backend, dy, dtype))
        tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(_np(y), y0, **tol)
        for k in s0:
            np.testing.assert_allclose(_np(s[k]), s0[k], **tol)
        np.testing.assert_allclose(_np(g.dx), g0.dx, **tol)
        for k in g0.dstate:
            np.testing.assert_allclose(_np(g.dstate[k]), g0.dstate[k], **tol)
        for k, v in params.items():
            want = _blocks(g0.dparams[k], N) if v.ndim == 3 else g0.dparams[k]
            got = _np(g.dparams[k])
            assert got.shape == v.shape, (k, got.shape)
            np.testing.assert_allclose(got, want, err_msg=k, **tol)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_per_head_products_are_the_block_diagonal_products(lib):
    """heads_nt / heads_nn (shared by reference and torch; the numba renderer writes the same loops)
    against the dense block-diagonal matrices, for k = 3 stacked matrices of N = 4 heads."""
    rng = np.random.default_rng(1)
    N, d, k, B = 4, 3, 3, 5
    H = N * d
    mats = [rng.standard_normal((N, d, d)) for _ in range(k)]
    U = np.concatenate(mats, axis=1)                       # pack's layout: [N, k*d, d]
    dense = np.concatenate([_block_diag(m) for m in mats], axis=0)       # [k*H, H]
    a, dr = rng.standard_normal((B, H)), rng.standard_normal((B, k * H))
    conv = torch.from_numpy if lib == "torch" else (lambda v: v)
    np.testing.assert_allclose(_np(heads_nt(conv(a), conv(U), k)), a @ dense.T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_np(heads_nn(conv(dr), conv(U), k)), dr @ dense, rtol=1e-13, atol=1e-13)


def test_the_program_and_the_numba_kernel_multiply_head_by_head():
    """The Program marks the groups (a reduction never), `lstmc show` says so, the numba kernel loops
    over heads with [B, H/N] x [H/N, k*H/N] products, and its packed weights are [N, k*H/N, H/N]:
    N times fewer multiply-adds than the dense [B, H] x [H, k*H] product."""
    prog = lstmc.lower(lstmc.parse(SLSTM_HEADS))
    assert [g.heads for g in prog.groups] == [4]
    assert "multiplied head by head" in prog.text()
    cc = lstmc.compile(SLSTM_HEADS, "numba", "float32")
    assert "for n in range(4):  # [U_i, U_f, U_z, U_o]^T, 4 heads" in cc.source
    assert "np.dot(AH0[b0:b1], U0[n].T, RH0[b0:b1])" in cc.source
    assert "np.dot(cur_h[b0:b1], U0.T" not in cc.source           # no dense product left
    x = np.zeros((2, 9, 3), np.float32)
    params = cc.init_params(3, 8)
    _, _, tape = cc.forward(x, params)
    assert tape.packed["U"][0].shape == (4, 4 * 2, 2)
