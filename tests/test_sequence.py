"""The code around the time loop (lstmc/backends/sequence.py), written once and used by every
backend: its pieces on their own, and what every backend returns through it."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest

import lstmc
from lstmc.backends import sequence
from lstmc.backends.sequence import NumpyOps

BACKENDS = ["reference", "torch", "numba", "triton"]


def _available(backend):
    if backend == "triton":
        pytest.importorskip("triton")


@pytest.mark.parametrize("lengths", [[5, 5, 5], [5, 0, 3], [1, 2, 4]])
def test_reverse_order_is_its_own_inverse(lengths):
    L = np.array(lengths)
    x = np.arange(5 * 3 * 2, dtype=np.float64).reshape(5, 3, 2)
    ops = NumpyOps(np.float64)
    xr, idx = sequence.order_inputs(ops, x, L, reverse=True)
    for b, n in enumerate(L):   # row b reversed within its length; padding cleared
        np.testing.assert_array_equal(xr[:n, b], x[:n, b][::-1])
        assert not xr[n:, b].any()
    back = sequence.restore_order(ops, xr, idx)
    for b, n in enumerate(L):
        np.testing.assert_array_equal(back[:n, b], x[:n, b])


def test_padding_never_reaches_the_input_products():
    prog = lstmc.lower(lstmc.load("lstm"))
    ops = NumpyOps(np.float64)
    T, B, I, H = 4, 2, 3, 5
    x = np.random.default_rng(0).standard_normal((T, B, I))
    x[2:, 1] = np.nan
    x, _ = sequence.order_inputs(ops, x, np.array([4, 2]), reverse=False)
    W = np.ones((len(prog.input_mats) * H, I))
    XP = sequence.input_products(ops, prog, x, W, H)
    assert XP.shape == (T, B, len(prog.input_mats) * H) and np.isfinite(XP).all()
    assert not XP[2:, 1].any()


class CountingOps(NumpyOps):
    """NumpyOps that records the shapes of the products it is asked for."""

    def __init__(self):
        super().__init__(np.float64)
        self.calls = []

    def mm(self, a, b, out=None):
        self.calls.append((a.shape, b.shape))
        return super().mm(a, b, out)


def test_weight_gradients_are_one_gemm_per_stacked_weight():
    """After the backward loop: one dW GEMM for all input matrices, one dx GEMM, one dU GEMM per
    group, each scattered to its matrices by slot (the LSTM: 4 W's, 4 U's from 3 products)."""
    prog = lstmc.lower(lstmc.load("lstm"))
    T, B, I, H = 3, 2, 4, 5
    rng = np.random.default_rng(1)
    nx = len(prog.input_mats)
    tape = lstmc.backends.base.Tape(
        x=rng.standard_normal((T, B, I)), states={s: rng.standard_normal((T + 1, B, H)) for s in prog.cell.states},
        saved={}, lengths=np.full(B, T), mask=None, reverse=False, rev_idx=None, packed={}, shapes=(T, B, I, H))
    W = rng.standard_normal((nx * H, I))
    dXP = rng.standard_normal((T, B, nx * H))
    dRP = [rng.standard_normal((T, B, len(g.mats) * H)) for g in prog.groups]
    ops = CountingOps()
    grads, dx = sequence.weight_grads(ops, prog, tape, W, dXP, dRP)
    assert len(ops.calls) == 2 + len(prog.groups)
    dW = dXP.reshape(T * B, -1).T @ tape.x.reshape(T * B, I)
    for j, m in enumerate(prog.input_mats):
        np.testing.assert_allclose(grads[m], dW[j * H:(j + 1) * H])
    np.testing.assert_allclose(dx, (dXP.reshape(T * B, -1) @ W).reshape(T, B, I))
    g = prog.groups[0]
    dU = dRP[0].reshape(T * B, -1).T @ tape.states[g.operand.attr][:T].reshape(T * B, H)
    for j, m in enumerate(g.mats):
        np.testing.assert_allclose(grads[m], dU[j * H:(j + 1) * H])


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_gradient_sums_are_separate_arrays(backend):
    """The LSTM's b_ii and b_hi gradients are one sum (program.dp_shared), accumulated once: every
    backend returns equal values in separate arrays, so updating one in place leaves the other."""
    _available(backend)
    prog = lstmc.compile("lstm", backend, "float32")
    assert prog.program.dp_shared, "the LSTM's bias pairs should share their sums"
    p = prog.init_params(3, 4, seed=2)
    x = np.random.default_rng(3).standard_normal((5, 2, 3)).astype(np.float32)
    y, _, tape = prog.forward(x, p, lengths=[5, 3])
    _, _, dp = prog.backward(tape, np.ones_like(np.asarray(y)))
    for a, b in prog.program.dp_shared.items():
        ga, gb = np.asarray(dp[a]), np.asarray(dp[b])
        np.testing.assert_array_equal(ga, gb)
        before = gb.copy()
        dp[a] += 1
        np.testing.assert_array_equal(np.asarray(dp[b]), before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unused_parameter_gets_zero_gradient(backend):
    """A parameter the cell declares but never reads gets zeros of its shape, on every backend."""
    _available(backend)
    text = "cell unused\nstate h\nh' = tanh(W_z @ x + U_z @ h + b_z + 0 * b_spare + 0 * (U_spare @ h))\n"
    prog = lstmc.compile(lstmc.load(text), backend, "float32")
    p = prog.init_params(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    y, _, tape = prog.forward(x, p)
    _, _, dp = prog.backward(tape, np.ones_like(np.asarray(y)))
    for name in ("b_spare", "U_spare"):
        g = np.asarray(dp[name])
        assert g.shape == p[name].shape and not g.any()
    assert np.asarray(dp["U_z"]).any()
