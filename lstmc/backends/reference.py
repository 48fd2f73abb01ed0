"""The `reference` backend: NumPy (float64 by default) executing the lowered Program step by step.

It interprets the very Program every other backend renders — its blocks through the `ops.EVAL`
table and its GEMMs with `@` — so it is the living definition of what a cell computes. It is
written for clarity, not speed.
"""

from __future__ import annotations

import numpy as np

from ..ir import Node, state, var, walk
from ..lower import Block, Gemm, Program
from ..ops import EVAL
from .base import CompiledCell, check_flags
from .sequence import NumpyOps, SequenceDriver, heads_nn, heads_nt


def evaluate(expr: Node, env: dict, P: dict):
    """Value of `expr` with leaves looked up in `env` (states, vars) and `P` (vector parameters)."""
    vals: dict[Node, object] = {}
    for n in walk([expr]):
        op = n.op
        if op == "const":
            v = n.attr
        elif op == "param":
            v = P[n.attr]
        elif op in ("state", "var"):
            v = env[n]
        else:
            v = EVAL[op](*(vals[a] for a in n.args))
        vals[n] = v
    return vals[expr]


def run_stages(stages, env: dict, P: dict, B: int, H: int, dtype=np.float64, dims: dict | None = None) -> None:
    """Execute blocks and GEMMs in order, writing every defined value into `env` (values computed
    from parameters and constants only take the shape [B, n] of their block's size and `dtype`).
    `dims`: {size name: number} (H only when None)."""
    dims = dims or {"H": H}
    for st in stages:
        if isinstance(st, Block):
            n = dims[st.size]
            for let in st.lets:
                v = evaluate(let.expr, env, P)
                if np.shape(v) != (B, n) or np.result_type(v) != dtype:
                    v = np.broadcast_to(np.asarray(v, dtype=dtype), (B, n))   # parameter- or constant-only
                env[var(*let.key)] = v
        elif isinstance(st, Gemm) and st.reduce:      # mean/sum over the row, broadcast (and its adjoint)
            a = env[st.a[0]]
            r = a.mean(axis=1, keepdims=True) if st.reduce == "mean" else a.sum(axis=1, keepdims=True)
            env[st.out[0]] = np.broadcast_to(r, a.shape)
        elif isinstance(st, Gemm):
            U = P[f"U{st.group}"]
            if st.transposed:
                A = np.concatenate([env[a] for a in st.a], axis=1)
                env[st.out[0]] = A @ U if st.heads == 1 else heads_nn(A, U, len(st.mats))
            else:
                R = env[st.a[0]] @ U.T if st.heads == 1 else heads_nt(env[st.a[0]], U, len(st.mats))
                r = R.shape[1] // len(st.out)          # each product's size (its group's rows)
                for j, o in enumerate(st.out):
                    env[o] = R[:, j * r:(j + 1) * r]
        else:  # pragma: no cover
            raise TypeError(st)


class ReferenceCell(CompiledCell):
    backend = "reference"

    def __init__(self, program: Program, dtype: str = "float64", key: str = ""):
        super().__init__(program, dtype, key)
        self.ops = NumpyOps(self.np_dtype)
        self.driver = SequenceDriver(program, self.ops, self._fwd_step, self._bwd_step)

    def _fwd_step(self, xp_t, S, P):
        prog = self.program
        B = next(iter(S.values())).shape[0]
        H = P["dims"]["H"]
        env = {state(s): S[s] for s in prog.cell.states}
        for j, m in enumerate(prog.input_mats):
            env[var("xp", m)] = xp_t[:, j * H:(j + 1) * H]
        run_stages(prog.fwd, env, P, B, H, self.np_dtype, P["dims"])
        S1 = {s: env[var("s1", s)] for s in prog.cell.states}
        saved = {n: env[var("sv", n)] for n, _ in prog.saved}
        return S1, saved

    def _bwd_step(self, dS1, S, S1, sv, P):
        prog = self.program
        B = next(iter(S.values())).shape[0]
        H = P["dims"]["H"]
        env = {}
        for s in prog.cell.states:
            env[state(s)] = S[s]
            env[var("s1", s)] = S1[s]
            env[var("ds1", s)] = dS1[s]
        for n, v in sv.items():
            env[var("sv", n)] = v
        run_stages(prog.bwd, env, P, B, H, self.np_dtype, P["dims"])
        dS = {s: env[var("ds", s)] for s in prog.cell.states}
        dxp = (np.concatenate([env[var("dxp", m)] for m in prog.input_mats], axis=1)
               if prog.input_mats else None)
        drp = {g.index: np.concatenate([env[var("drp", g.index, m)] for m in g.mats], axis=1) for g in prog.groups}
        dp = {p: env[var("dp", p)] for p in prog.vector_params}
        return dS, dxp, drp, dp

    def forward(self, x, params, state=None, lengths=None, reverse=False, need_tape=True, inputs=None):
        """Run the sequence. Returns (y [T, B, H], {state: [B, H]} final, tape or None). `inputs`: the
        cell's extra inputs, {name: [T, B] or [T, B, n]}."""
        T, B, I, H, lengths = self.check_inputs(x, params, state, lengths, inputs)
        check_flags(reverse=reverse, need_tape=need_tape)
        y, st, tape = self.driver.forward(x, params, state, lengths, bool(reverse), need_tape, T, B, I, H, inputs,
                                          self.dims(params, inputs, H))
        if tape is not None:
            tape.owner = self
        return y, st, tape

    def backward(self, tape, dy, dstate=None):
        """Gradients (dx, {state: d initial state}, {param: grad}) given dy [T, B, H] and optional dstate;
        the extra inputs' gradients are its `.dinputs` (base.Gradients)."""
        self.check_backward(tape, dy, dstate)
        return self.driver.backward(tape, dy, dstate)
