"""What every backend shares: the `CompiledCell` API, argument checking, parameter initialisation and
packing, and the sequence semantics (initial state, `lengths`, `reverse`) that define lstmc.

A backend supplies two step functions over one array library (NumPy or torch):

    fwd_step(xp_t, S, P)            -> (S1, saved)      S, S1: {state: [B, H]}; saved: {name: [B, H]}
    bwd_step(dS1, S, S1, saved, P)  -> (dS, dxp_t, drp_t, dp_t)

and `SequenceDriver` runs them over time exactly as the reference defines it:
  - the input products of all T·B rows are one GEMM before the loop;
  - rows past their length output zeros and keep their state (a length-0 row returns its initial state);
  - `reverse=True` processes each row backwards within its own length (as ONNX Runtime does) and
    writes outputs at the original time positions;
  - backward runs the step functions in reverse time; weight and input gradients are whole-sequence
    GEMMs after the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..lower import Program

DTYPES = {"float64": np.float64, "float32": np.float32}


def check_dtype(dtype) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (the triton backend also takes bfloat16 "
                         f"and float16 storage), got {dtype!r}")
    return name


# ----------------------------------------------------------------------------------- array adaptors

class NumpyOps:
    """The few array operations the driver needs, for NumPy."""
    name = "numpy"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def zeros(self, shape, like=None):
        return np.zeros(shape, dtype=self.dtype)

    def where(self, m, a, b):
        return np.where(m, a, b)

    def cat(self, arrays, axis):
        return np.concatenate(arrays, axis=axis)

    def stack(self, arrays):
        return np.stack(arrays)

    def take_rows(self, a, idx):
        """a[idx[t, b], b] for a [T, B, ...] array and an index [T, B]."""
        return a[idx, np.arange(a.shape[1])[None, :]]

    def sum0(self, a):
        return a.sum(axis=0)

    def mask(self, m: np.ndarray, like=None):
        return m


# -------------------------------------------------------------------------------------- semantics

def reverse_index(T: int, lengths: np.ndarray) -> np.ndarray:
    """idx[t, b]: the time position row b reads at step t when reversed within its length.
    It is its own inverse, so the same index un-reverses outputs."""
    t = np.arange(T)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t)


@dataclass
class Tape:
    """What backward needs from a forward call (arrays of the backend's library)."""
    x: object
    states: dict           # state -> [T+1, B, H]: the state before step t at index t
    saved: dict            # name -> [T, B, H]
    lengths: np.ndarray    # [B] int64
    mask: object           # [T, B, 1] bool (None when every row is full length)
    reverse: bool
    rev_idx: object
    packed: dict           # packed weights used by forward (Wcat, Ucat_g, vectors)
    shapes: tuple          # (T, B, I, H)
    extra: dict = field(default_factory=dict)
    owner: object = None   # the CompiledCell whose forward made this tape (backward refuses others')


class CompiledCell:
    """A cell compiled for one backend and dtype. The API every backend implements (README, "Python API")."""

    backend = "?"

    def __init__(self, program: Program, dtype: str = "float64", key: str = ""):
        self.program = program
        self.key = key
        self.cell = program.cell
        self.dtype = check_dtype(dtype)
        self.np_dtype = np.dtype(DTYPES[self.dtype])

    def __repr__(self):
        return f"<{type(self).__name__} cell={self.cell.name!r} backend={self.backend!r} dtype={self.dtype}>"

    # parameters -----------------------------------------------------------------------------
    def param_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        return {p: self.cell.param_shape(p, input_size, hidden_size) for p in self.cell.params}

    def init_params(self, input_size: int, hidden_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Parameters initialised from the cell's `init` lines; everything else U(-1/sqrt(H), 1/sqrt(H))."""
        for nm, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(hidden_size)
        out = {}
        for p, shape in self.param_shapes(input_size, hidden_size).items():
            how = self.cell.inits.get(p, "uniform")
            out[p] = init_array(how, shape, k, rng).astype(self.np_dtype)
        return out

    # argument checking ----------------------------------------------------------------------
    def _sizes(self, params) -> tuple[int, int]:
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict of arrays (from init_params), got {type(params).__name__}")
        missing = [p for p in self.cell.params if p not in params]
        extra = [p for p in params if p not in self.cell.params]
        if missing or extra:
            msg = []
            if missing:
                msg.append(f"missing {', '.join(missing)}")
            if extra:
                msg.append(f"unexpected {', '.join(map(str, extra))}")
            raise ValueError(f"params for cell '{self.cell.name}': {'; '.join(msg)} "
                             f"(expected: {', '.join(self.cell.params)})")
        H = I = None
        for p, kind in self.cell.params.items():
            shp = tuple(params[p].shape)
            if not shp:
                raise ValueError(f"params['{p}'] must be an array, got a scalar")
            H = H or shp[0]
            if kind == "W":
                I = I or (shp[1] if len(shp) == 2 else None)
        if I is None:  # a cell without input products still takes x; its size comes from x
            I = -1
        return I, H

    def _check_array(self, name, a, shape):
        dt = getattr(a, "dtype", None)
        if dt is None:
            raise ValueError(f"{name} must be an array, got {type(a).__name__}")
        dname = str(dt).replace("torch.", "")
        if dname != self.dtype:
            raise ValueError(f"{name} has dtype {dname}, but this {self.backend} program was compiled for "
                             f"{self.dtype}: convert it (e.g. .astype(np.{self.dtype})) or compile with "
                             f"dtype='{dname}'")
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")

    def check_inputs(self, x, params, state, lengths):
        """Validate every argument; return (T, B, I, H, lengths as int64 array)."""
        if getattr(x, "ndim", None) != 3:
            raise ValueError(f"x must be a 3-D array [T, B, I], got "
                             f"{'shape ' + str(tuple(x.shape)) if hasattr(x, 'shape') else type(x).__name__}")
        T, B, Ix = (int(s) for s in x.shape)
        if T < 1 or B < 1:
            raise ValueError(f"x has shape {tuple(x.shape)}: T and B must be at least 1")
        I, H = self._sizes(params)
        if I == -1:
            I = Ix
        self._check_array("x", x, (T, B, I))
        for p, kind in self.cell.params.items():
            self._check_array(f"params['{p}']", params[p], self.cell.param_shape(p, I, H))
        if state is not None:
            if not isinstance(state, dict):
                raise ValueError(f"state must be a dict {{state name: [B, H] array}} for states "
                                 f"{', '.join(self.cell.states)}, got {type(state).__name__}")
            bad = [k for k in state if k not in self.cell.states]
            if bad:
                raise ValueError(f"state has unknown entries {bad}; the states are {', '.join(self.cell.states)}")
            for s, v in state.items():
                self._check_array(f"state['{s}']", v, (B, H))
        lengths = check_lengths(lengths, T, B)
        return T, B, I, H, lengths


    def check_backward(self, tape, dy, dstate) -> None:
        """Validate backward's arguments against the tape of the forward call."""
        if not isinstance(tape, Tape):
            raise ValueError("tape must be the third value returned by forward(..., need_tape=True)")
        T, B, I, H = tape.shapes
        self._check_array("dy", dy, (T, B, H))
        if dstate is not None:
            if not isinstance(dstate, dict):
                raise ValueError("dstate must be a dict {state name: [B, H] array}")
            for s, v in dstate.items():
                if s not in self.cell.states:
                    raise ValueError(f"dstate has unknown entry '{s}'; the states are {', '.join(self.cell.states)}")
                self._check_array(f"dstate['{s}']", v, (B, H))


def check_lengths(lengths, T: int, B: int) -> np.ndarray:
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    if hasattr(lengths, "detach"):
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.shape[0] != B:
        raise ValueError(f"lengths must be a 1-D array of {B} integers (one per batch row), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got min {arr.min()} max {arr.max()}")
    return arr.astype(np.int64)


def init_array(how, shape, k, rng) -> np.ndarray:
    if isinstance(how, float):
        return np.full(shape, how)
    if how == "zeros":
        return np.zeros(shape)
    if how == "ones":
        return np.ones(shape)
    if how == "uniform":
        return rng.uniform(-k, k, size=shape)
    if how == "normal":
        return rng.normal(0.0, k, size=shape)
    if how == "xavier":
        a = math.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-a, a, size=shape)
    if how == "orthogonal":
        rows, cols = shape
        flat = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat)
        q = q * np.sign(np.diag(r))
        return q if rows >= cols else q.T
    raise ValueError(f"unknown initialisation {how!r}")


def pack(program: Program, params: dict, cat, H: int) -> dict:
    """Concatenate weights the way the GEMM plan uses them: Wcat [nx*H, I], U{g} [k*H, H]."""
    P = {p: params[p] for p in program.vector_params}
    if program.input_mats:
        P["Wcat"] = cat([params[m] for m in program.input_mats], 0)
    for g in program.groups:
        P[f"U{g.index}"] = cat([params[m] for m in g.mats], 0)
    return P


class SequenceDriver:
    """Runs a backend's step functions over a sequence (shared by `reference` and `torch`)."""

    def __init__(self, program: Program, ops, fwd_step, bwd_step):
        self.program = program
        self.ops = ops
        self.fwd_step = fwd_step
        self.bwd_step = bwd_step

    def forward(self, x, params, state, lengths, reverse, need_tape, T, B, I, H):
        prog, ops = self.program, self.ops
        cell = prog.cell
        full = bool(np.all(lengths == T))
        rev_idx = None
        if reverse:
            rev_idx = reverse_index(T, lengths)
            x = ops.take_rows(x, rev_idx)
        P = pack(prog, params, ops.cat, H)
        nx = len(prog.input_mats)
        XP = (x.reshape(T * B, I) @ P["Wcat"].T).reshape(T, B, nx * H) if nx else None
        S = {s: (state[s] if state is not None and s in state else ops.zeros((B, H), like=x)) for s in cell.states}
        mask = None if full else ops.mask((np.arange(T)[:, None] < lengths[None, :])[:, :, None], like=x)
        ys = []
        Sseq = {s: [S[s]] for s in cell.states} if need_tape else None
        saved = {n: [] for n, _ in prog.saved} if need_tape else None
        for t in range(T):
            S1, sv = self.fwd_step(XP[t] if nx else None, S, P)
            if mask is None:
                S = S1
                ys.append(S1[cell.output])
            else:
                m = mask[t]
                S = {s: ops.where(m, S1[s], S[s]) for s in cell.states}
                ys.append(ops.where(m, S1[cell.output], 0.0))
            if need_tape:
                for s in cell.states:
                    Sseq[s].append(S[s])
                for n in saved:
                    saved[n].append(sv[n])
        y = ops.stack(ys)
        if reverse:
            y = ops.take_rows(y, rev_idx)
        tape = None
        if need_tape:
            tape = Tape(x=x, states={s: ops.stack(v) for s, v in Sseq.items()},
                        saved={n: ops.stack(v) for n, v in saved.items()}, lengths=lengths, mask=mask,
                        reverse=reverse, rev_idx=rev_idx, packed=P, shapes=(T, B, I, H))
        return y, dict(S), tape

    def backward(self, tape: Tape, dy, dstate):
        prog, ops = self.program, self.ops
        cell = prog.cell
        T, B, I, H = tape.shapes
        P = tape.packed
        if tape.reverse:
            dy = ops.take_rows(dy, tape.rev_idx)
        dS = {s: (dstate[s] if dstate is not None and s in dstate else ops.zeros((B, H), like=dy))
              for s in cell.states}
        nx = len(prog.input_mats)
        dXP = [None] * T
        dRP = {g.index: [None] * T for g in prog.groups}
        dp = {p: ops.zeros((H,), like=dy) for p in prog.vector_params}
        mask = tape.mask
        for t in range(T - 1, -1, -1):
            m = None if mask is None else mask[t]
            if m is None:
                dS[cell.output] = dS[cell.output] + dy[t]
                seeds = dS
            else:
                dS[cell.output] = dS[cell.output] + ops.where(m, dy[t], 0.0)
                seeds = {s: ops.where(m, dS[s], 0.0) for s in cell.states}
            S = {s: tape.states[s][t] for s in cell.states}
            S1 = {s: tape.states[s][t + 1] for s in cell.states}
            sv = {n: tape.saved[n][t] for n in tape.saved}
            dprev, dxp_t, drp_t, dp_t = self.bwd_step(seeds, S, S1, sv, P)
            dS = dprev if m is None else {s: ops.where(m, dprev[s], dS[s]) for s in cell.states}
            dXP[t] = dxp_t
            for g in prog.groups:
                dRP[g.index][t] = drp_t[g.index]
            for p in prog.vector_params:
                dp[p] = dp[p] + ops.sum0(dp_t[p])
        grads = dict(dp)
        x = tape.x
        dx = ops.zeros((T, B, I), like=dy)
        if nx:
            dXPa = ops.stack(dXP).reshape(T * B, nx * H)
            dW = dXPa.T @ x.reshape(T * B, I)
            for j, mname in enumerate(prog.input_mats):
                grads[mname] = dW[j * H:(j + 1) * H]
            dx = (dXPa @ P["Wcat"]).reshape(T, B, I)
        for g in prog.groups:
            k = len(g.mats)
            dR = ops.stack(dRP[g.index]).reshape(T * B, k * H)
            if g.operand.op == "state":
                V = tape.states[g.operand.attr][:T]
            else:
                V = tape.saved[g.operand.attr[1]]
            dU = dR.T @ V.reshape(T * B, H)
            for j, mname in enumerate(g.mats):
                grads[mname] = dU[j * H:(j + 1) * H]
        if tape.reverse:
            dx = ops.take_rows(dx, tape.rev_idx)
        dparams = {p: grads[p] if p in grads else ops.zeros(self._shape(p, I, H), like=dy) for p in cell.params}
        return dx, dS, dparams

    def _shape(self, p, I, H):
        return self.program.cell.param_shape(p, I, H)
