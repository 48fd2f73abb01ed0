"""The code around the time loop, written once (docs/design.md, "Sequence semantics").

Every backend runs the same sequence around its own time loop:

  before the loop   reverse each row within its length (`order_inputs`; the extra inputs:
                    `order_extra`), clear the padding, pack the weights as the GEMM plan uses them
                    (`pack`), and compute the input products of all T·B rows in one GEMM
                    (`input_products`: x's and each extra input's products, and the extra inputs
                    read element-wise, as the Program's input slots say);
  after forward     put the outputs back at their original time positions (`restore_order`);
  after backward    the whole-sequence weight and input GEMMs, scattered by slot to each weight
                    (`weight_grads`), shared bias sums copied and unused parameters' zero
                    gradients filled in (`param_grads`), dx back in time order; the extra
                    inputs' gradients from their slots (`input_grads`).

A backend supplies the few array operations these need as an `ArrayOps` (NumPy here, torch in
torch.py, BLAS-backed NumPy for numba, mixed-precision torch for triton) and keeps only its time
loop: `SequenceDriver` below is the time loop of `reference` and `torch`, which run the Program's
step functions; numba and triton run generated kernels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..program import Program
from .base import Gradients, Tape

# ------------------------------------------------------------------------------------ array ops


class ArrayOps:
    """The array operations of one array library that the code around the time loop uses.
    Subclasses: `NumpyOps` (below), torch.py's `TorchOps`, and the numba and triton backends'."""
    name = "?"

    def zeros(self, shape, like=None):
        raise NotImplementedError

    def where(self, m, a, b):
        raise NotImplementedError

    def cat(self, arrays, axis):
        raise NotImplementedError

    def stack(self, arrays):
        raise NotImplementedError

    def take_rows(self, a, idx):
        """a[idx[t, b], b] for a [T, B, ...] array and an index [T, B] (a NumPy array)."""
        raise NotImplementedError

    def sum0(self, a):
        raise NotImplementedError

    def mask(self, m: np.ndarray, like=None):
        """A NumPy boolean mask as this library's array (on `like`'s device)."""
        raise NotImplementedError

    def block_diag(self, u):
        """[N, d, d] -> the [N*d, N*d] block-diagonal matrix (a cell with `heads N`)."""
        N, d, _ = u.shape
        out = self.zeros((N * d, N * d), like=u)
        for i in range(N):
            out[i * d:(i + 1) * d, i * d:(i + 1) * d] = u[i]
        return out

    def discarded(self):
        """A context for computing values of rows whose results are then discarded (rows past their
        length read saved values that are 0, so 0/0 may occur there): no floating-point warnings."""
        return contextlib.nullcontext()

    def mm(self, a, b, out=None):
        """a @ b for 2-D operands (transposed views included), into `out` when given."""
        if out is None:
            return a @ b
        out[...] = a @ b
        return out

    def mm_grad(self, a, b):
        """a @ b for a weight gradient summed over every row of the sequence (a backend may
        accumulate it in a wider type than its storage)."""
        return self.mm(a, b)

    def grad(self, g):
        """A weight gradient's slice as returned to the caller (a backend may convert or copy it)."""
        return g

    def copy(self, a):
        raise NotImplementedError


class NumpyOps(ArrayOps):
    """NumPy's array operations."""
    name = "numpy"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def discarded(self):
        return np.errstate(divide="ignore", invalid="ignore", over="ignore")

    def zeros(self, shape, like=None):
        return np.zeros(shape, dtype=self.dtype)

    def where(self, m, a, b):
        return np.where(m, a, b)

    def cat(self, arrays, axis):
        return np.concatenate(arrays, axis=axis)

    def stack(self, arrays):
        return np.stack(arrays)

    def take_rows(self, a, idx):
        return a[idx, np.arange(a.shape[1])[None, :]]

    def sum0(self, a):
        return a.sum(axis=0)

    def mask(self, m: np.ndarray, like=None):
        return m

    def copy(self, a):
        return a.copy()


# ------------------------------------------------------------------------------ before the loop

def reverse_index(T: int, lengths: np.ndarray) -> np.ndarray:
    """idx[t, b]: the time position row b reads at step t when reversed within its length.
    It is its own inverse, so the same index un-reverses outputs."""
    t = np.arange(T)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t)


def clear_padding(x, lengths: np.ndarray, T: int):
    """x [T, B, I] with every position past its row's length set to 0 (a copy; x is unchanged).

    A row never reads those positions, but the whole-sequence GEMMs do: the hoisted input product,
    and dW = dXP^T x after the loop, where 0 x NaN = NaN would poison every input-weight gradient.
    So padding (NaN, inf, garbage) can never reach a result. (An extra input [T, B] or [T, B, n]
    likewise.)"""
    if bool(np.all(lengths == T)):
        return x
    live = (np.arange(T)[:, None] < lengths[None, :]).reshape((T, lengths.shape[0]) + (1,) * (x.ndim - 2))
    if isinstance(x, np.ndarray):
        return np.where(live, x, x.dtype.type(0))
    import torch

    return torch.where(torch.as_tensor(live, device=x.device), x, torch.zeros((), dtype=x.dtype, device=x.device))


def order_inputs(ops: ArrayOps, x, lengths: np.ndarray, reverse: bool):
    """(x as the time loop reads it, the reverse index or None): with `reverse`, each row reversed
    within its own length (as ONNX Runtime does); then the padding cleared (`clear_padding`)."""
    T = x.shape[0]
    rev_idx = None
    if reverse:
        rev_idx = reverse_index(T, lengths)
        x = ops.take_rows(x, rev_idx)
    return clear_padding(x, lengths, T), rev_idx


def order_extra(ops: ArrayOps, inputs: dict | None, lengths: np.ndarray, rev_idx) -> dict:
    """The extra inputs as the time loop reads them, as `order_inputs` does for x: reversed within
    each row's length when `rev_idx` is given, padding cleared."""
    out = {}
    for name, a in (inputs or {}).items():
        if rev_idx is not None:
            a = ops.take_rows(a, rev_idx)
        out[name] = clear_padding(a, lengths, a.shape[0])
    return out


def restore_order(ops: ArrayOps, a, rev_idx):
    """A [T, B, ...] result of the time loop at the original time positions (`rev_idx` None: as is)."""
    return a if rev_idx is None else ops.take_rows(a, rev_idx)


@dataclass
class Packed:
    """The weights as the GEMM plan uses them."""
    W: object        # [nw*H, I]: the matrices of x stacked (None for a cell without products of x)
    U: list          # per group g: [k_g*H, H], its matrices stacked (index = group index)
    vecs: dict       # vector parameter -> [H]
    V: dict = None   # extra input u -> [k_u*H, K]: the matrices of u stacked (`V @ u`)


def dense_weights(ops: ArrayOps, program: Program, params: dict) -> dict:
    """`params` with each recurrent matrix of a cell with `heads N` ([N, H/N, H/N]) as the dense
    block-diagonal [H, H] matrix it stands for, for a renderer that multiplies whole matrices (the
    triton kernels, the ONNX export: N times the FLOPs of per-head products). Other cells: `params`."""
    if program.cell.heads == 1:
        return params
    return {**params, **{m: ops.block_diag(params[m]) for g in program.weight_groups for m in g.mats}}


def pack(program: Program, params: dict, stack_rows, stack_heads=None) -> Packed:
    """Concatenate weights the way the GEMM plan uses them. `stack_rows(names)` is the backend's
    row-wise concatenation of params[name] for those names (into recycled memory, on a device...).
    A group with `heads N` (Group.heads) is multiplied head by head: `stack_heads(names)`
    concatenates the [N, d, d] blocks along their rows, U[n] = the k matrices' head-n blocks stacked
    ([N, k*d, d]; see heads_nt). Without `stack_heads` the caller has made the matrices dense
    (dense_weights) and its groups are stacked like any other."""
    W = stack_rows(program.x_mats) if program.x_mats else None
    U = [None if g.reduce is not None                                  # a reduction has no weight
         else stack_heads(g.mats) if g.heads > 1 and stack_heads is not None
         else stack_rows(g.mats) for g in program.groups]
    V = {src: stack_rows(names) for src, names, direct, _ in program.input_segments() if src is not None and not direct}
    return Packed(W=W, U=U, vecs={p: params[p] for p in program.vector_params}, V=V)


# ------------------------------------------------------- per-head products of a cell with `heads N`
# A group's k matrices are block-diagonal: matrix j is N blocks [d, d] (d = H/N), and head n of its
# product reads only the operand's units n*d:(n+1)*d. The packed weights are U [N, k*d, d], U[n] the
# k matrices' head-n blocks stacked; the products keep the dense layout every block reads (matrix
# j's product in columns j*H:(j+1)*H). These work on NumPy arrays and torch tensors alike (reshape,
# swapaxes, batched @); the numba renderer writes the same loops per head.

def heads_split(r, N: int, k: int):
    """[R, k*N*d] in the dense layout -> [N, R, k*d], contiguous (one copy): each head's k slots
    side by side, so that head n's products read r[n] whole."""
    R = r.shape[0]
    d = r.shape[1] // (k * N)
    return r.reshape(R, k, N, d).swapaxes(0, 2).swapaxes(1, 2).reshape(N, R, k * d)


def heads_nt(a, U, k: int):
    """The forward products a @ mats[j]^T, head by head: a [B, N*d], U [N, k*d, d] -> [B, k*N*d]."""
    N, _, d = U.shape
    B = a.shape[0]
    r = a.reshape(B, N, d).swapaxes(0, 1) @ U.swapaxes(1, 2)           # [N, B, k*d]
    return r.reshape(N, B, k, d).swapaxes(0, 1).swapaxes(1, 2).reshape(B, k * N * d)


def heads_nn(dr, U, k: int):
    """The backward product concat(dr slots) @ concat(mats), head by head: dr [B, k*N*d] -> [B, N*d]."""
    N, _, d = U.shape
    B = dr.shape[0]
    return (heads_split(dr, N, k) @ U).swapaxes(0, 1).reshape(B, N * d)


def input_products(ops: ArrayOps, program: Program, x, W, H: int, out=None, inputs=None, V=None):
    """XP [T, B, nx*H] for all T·B rows, slot by slot as `program.input_segments()` says: x @ W^T in
    one GEMM, each extra input's u @ V_u^T in one GEMM (`V`: pack's stacked matrices), and each
    input read element-wise copied into its slot (a [T, B] input broadcast over H). `inputs`: the
    extra inputs as `order_extra` returns them; `out`: [T·B, nx*H] to write into. None for a cell
    without input slots."""
    nx = len(program.input_mats)
    if not nx:
        return None
    T, B, I = x.shape
    segs = program.input_segments()
    if len(segs) == 1 and segs[0][0] is None:            # only x's products: one GEMM straight into `out`
        return ops.mm(x.reshape(T * B, I), W.T, out).reshape(T, B, nx * H)
    parts = []
    for src, names, direct, _ in segs:
        if src is None:
            parts.append(ops.mm(x.reshape(T * B, I), W.T))
        elif not direct:
            u = inputs[src]
            parts.append(ops.mm(u.reshape(T * B, u.shape[2]), V[src].T))
        elif inputs[src].ndim == 2:                      # one number per row, broadcast over H
            parts.append(inputs[src].reshape(T * B, 1) + ops.zeros((1, H), like=inputs[src]))
        else:
            parts.append(inputs[src].reshape(T * B, H))
    XP = ops.cat(parts, 1)
    if out is not None:
        out[...] = XP
        XP = out
    return XP.reshape(T, B, nx * H)


# ------------------------------------------------------------------------------- after the loop

def group_operand(program: Program, g, states: dict, saved: dict, T: int):
    """The [T, B, H] sequence group g's products read: a state before each step, or a saved value."""
    a = program.groups[g].operand
    return states[a.attr][:T] if a.op == "state" else saved[a.attr[1]]


def tape_dims(tape: Tape) -> dict:
    """{size name: number} of the call that made `tape` (H only for a cell without sized states)."""
    return tape.dims or {"H": tape.shapes[3]}


def weight_grads(ops: ArrayOps, program: Program, tape: Tape, W, dXP, dRP, dx_out=None):
    """The whole-sequence GEMMs after the backward loop: ({weight: gradient}, dx [T, B, I] in loop
    order). dXP [T, B, nx*H]: the input products' adjoints (None without input products); dRP[g]
    [T, B, k_g*H]: group g's product adjoints. Each stacked gradient is scattered to its weights by
    slot. `dx_out`: a [T, B, I] array to write dx into (zeros are written without input products)."""
    T, B, I, H = tape.shapes
    grads = {}
    nx = len(program.input_mats)
    nw = len(program.x_mats)
    if nx:
        dXP2 = dXP.reshape(T * B, nx * H)
        for src, names, direct, j0 in program.input_segments():
            if src is None or direct:
                continue
            u = tape.inputs[src]
            dV = ops.mm_grad(dXP2[:, j0 * H:(j0 + len(names)) * H].T, u.reshape(T * B, u.shape[2]))
            for j, m in enumerate(names):
                grads[m] = ops.grad(dV[j * H:(j + 1) * H])
    if nw:
        dXPx = dXP2 if nw == nx else dXP2[:, :nw * H]     # x's slots come first
        dW = ops.mm_grad(dXPx.T, tape.x.reshape(T * B, I))
        for j, m in enumerate(program.x_mats):
            grads[m] = ops.grad(dW[j * H:(j + 1) * H])
        dx = ops.mm(dXPx, W, None if dx_out is None else dx_out.reshape(T * B, I)).reshape(T, B, I)
    elif dx_out is not None:
        dx_out[...] = 0
        dx = dx_out
    else:
        dx = ops.zeros((T, B, I), like=tape.x)
    dims = tape_dims(tape)
    for g in program.weight_groups:
        V = group_operand(program, g.index, tape.states, tape.saved, T)
        R = dims[g.rows]           # each product's size: [k*R, C] stacked matrices
        dR2 = dRP[g.index].reshape(T * B, -1)
        if g.heads > 1:            # per head: dU_j[n] = dR_j[:, head n]^T @ V[:, head n]
            k, d = len(g.mats), R // g.heads
            dRh, Vh = heads_split(dR2, g.heads, k), heads_split(V.reshape(T * B, R), g.heads, 1)
            dU = ops.stack([ops.mm_grad(dRh[n].T, Vh[n]) for n in range(g.heads)])      # [N, k*d, d]
            for j, m in enumerate(g.mats):
                grads[m] = ops.grad(ops.copy(dU[:, j * d:(j + 1) * d]))   # [N, d, d], contiguous
            continue
        dU = ops.mm_grad(dR2.T, V.reshape(T * B, dims[g.cols]))
        for j, m in enumerate(g.mats):
            grads[m] = ops.grad(dU[j * R:(j + 1) * R])
    return grads, dx


def input_grads(ops: ArrayOps, program: Program, tape: Tape, dXP) -> dict:
    """{extra input: gradient} in loop order, each the shape of its input: du = dxp_u @ V_u for the
    products `V @ u` (tape.vmats: pack's V), an element-wise input's slot of dXP (summed over H for
    a [T, B] input), both added when an input is used both ways. Rows past their length get 0 (the
    Program's past_length for dxp)."""
    T, B, I, H = tape.shapes
    if not program.cell.inputs:
        return {}
    nx = len(program.input_mats)
    dXP2 = None if dXP is None else dXP.reshape(T * B, nx * H)
    out = {}
    for src, names, direct, j0 in program.input_segments():
        if src is None:
            continue
        d = dXP2[:, j0 * H:(j0 + len(names)) * H]
        u = tape.inputs[src]
        if not direct:
            g = ops.mm(d, tape.vmats[src]).reshape(u.shape)
        elif u.ndim == 2:
            g = d.sum(1).reshape(T, B)
        else:
            g = ops.copy(d).reshape(T, B, H)
        out[src] = g if src not in out else out[src] + g
    return out


def param_grads(ops: ArrayOps, program: Program, grads: dict, dp: dict, zeros, I: int, H: int,
                dims: dict | None = None) -> dict:
    """{parameter: gradient} in the cell's order: the weight gradients, the vector parameters'
    sums `dp` (one per program.dp_sums(), copied to the parameters that share it: each gradient is
    its own array, so updating one in place leaves the other alone), and `zeros(shape)` for a
    parameter the cell never reads."""
    dp = {**dp, **{p: ops.copy(dp[q]) for p, q in program.dp_shared.items()}}
    out = {}
    for p in program.cell.params:
        g = grads.get(p, dp.get(p))
        out[p] = g if g is not None else zeros(program.cell.param_shape(p, I, H, dims))
    return out


# ---------------------------------------------------------------- the time loop of reference/torch

class SequenceDriver:
    """Runs a backend's step functions over a sequence (the time loop of `reference` and `torch`):

        fwd_step(xp_t, S, P)            -> (S1, saved)      S, S1: {state: [B, H]}; saved: {name: [B, H]}
        bwd_step(dS1, S, S1, saved, P)  -> (dS, dxp_t, drp_t, dp_t)

    Rows past their length follow program.past_length; the output state's adjoint receives dy
    (program.dy_state)."""

    def __init__(self, program: Program, ops: ArrayOps, fwd_step, bwd_step):
        self.program = program
        self.ops = ops
        self.fwd_step = fwd_step
        self.bwd_step = bwd_step

    def _packed(self, params, dims) -> dict:
        """The step functions' P: vector parameters by name, U{g} per group, the sizes ("dims")."""
        pk = pack(self.program, params, lambda names: self.ops.cat([params[m] for m in names], 0),
                  lambda names: self.ops.cat([params[m] for m in names], 1))
        return {**pk.vecs, **{f"U{i}": u for i, u in enumerate(pk.U)}, "Wcat": pk.W, "V": pk.V, "dims": dims}

    def forward(self, x, params, state, lengths, reverse, need_tape, T, B, I, H, inputs=None, dims=None):
        prog, ops = self.program, self.ops
        cell = prog.cell
        full = bool(np.all(lengths == T))
        x, rev_idx = order_inputs(ops, x, lengths, reverse)
        inputs = order_extra(ops, inputs, lengths, rev_idx)
        dims = dims or {"H": H}
        P = self._packed(params, dims)
        XP = input_products(ops, prog, x, P["Wcat"], H, inputs=inputs, V=P["V"])
        S = {s: (state[s] if state is not None and s in state else ops.zeros((B, dims[cell.state_size(s)]), like=x))
             for s in cell.states}
        mask = None if full else ops.mask((np.arange(T)[:, None] < lengths[None, :])[:, :, None], like=x)
        ys = []
        Sseq = {s: [S[s]] for s in cell.states} if need_tape else None
        saved = {n: [] for n, _ in prog.saved} if need_tape else None
        out = cell.output
        for t in range(T):
            S1, sv = self.fwd_step(None if XP is None else XP[t], S, P)
            if mask is None:
                S = S1
                ys.append(S1[out])
            else:                      # rows past their length: prog.past_length decides
                m = mask[t]
                S = {s: self._past("s1", m, S1[s], S[s]) for s in cell.states}
                ys.append(self._past("y", m, S1[out], None))
            if need_tape:
                for s in cell.states:
                    Sseq[s].append(S[s])
                for n in saved:
                    saved[n].append(sv[n] if mask is None else self._past("sv", mask[t], sv[n], None))
        y = restore_order(ops, ops.stack(ys), rev_idx)
        tape = None
        if need_tape:
            tape = Tape(x=x, states={s: ops.stack(v) for s, v in Sseq.items()},
                        saved={n: ops.stack(v) for n, v in saved.items()}, lengths=lengths, mask=mask,
                        reverse=reverse, rev_idx=rev_idx, packed=P, shapes=(T, B, I, H), inputs=inputs,
                        vmats=P["V"], dims=dims)
        return y, dict(S), tape

    def _past(self, kind: str, m, new, old):
        """The value a row past its length gets, as the Program's past_length table says."""
        rule = self.program.past_length[kind]
        return self.ops.where(m, new, 0.0 if rule == "zero" else old)

    def backward(self, tape: Tape, dy, dstate):
        prog, ops = self.program, self.ops
        cell = prog.cell
        T, B, I, H = tape.shapes
        P = tape.packed
        dy = restore_order(ops, dy, tape.rev_idx)      # the index is its own inverse: to loop order
        dims = tape_dims(tape)
        dS = {s: (dstate[s] if dstate is not None and s in dstate else ops.zeros((B, dims[cell.state_size(s)]), like=dy))
              for s in cell.states}
        dXP = [None] * T
        dRP = {g.index: [None] * T for g in prog.groups}
        sums = prog.dp_sums()          # a shared gradient sum is accumulated once (prog.dp_shared)
        dp = {p: ops.zeros((dims[cell.param_sizes.get(p, ("H",))[0]],), like=dy) for p in sums}
        mask = tape.mask
        seed = prog.dy_state
        for t in range(T - 1, -1, -1):
            m = None if mask is None else mask[t]
            # a row past its length gets no dy; what its step's adjoints become is selected below
            dS[seed] = dS[seed] + (dy[t] if m is None else ops.where(m, dy[t], 0.0))
            S = {s: tape.states[s][t] for s in cell.states}
            S1 = {s: tape.states[s][t + 1] for s in cell.states}
            sv = {n: tape.saved[n][t] for n in tape.saved}
            with (contextlib.nullcontext() if m is None else ops.discarded()):
                dprev, dxp_t, drp_t, dp_t = self.bwd_step(dS, S, S1, sv, P)
            if m is None:
                dS = dprev
            else:                      # a row past its length: prog.past_length decides
                dS = {s: self._past("ds", m, dprev[s], dS[s]) for s in cell.states}
                dxp_t = None if dxp_t is None else self._past("dxp", m, dxp_t, None)
                drp_t = {g: self._past("drp", m, v, None) for g, v in drp_t.items()}
                dp_t = {p: self._past("dp", m, dp_t[p], None) for p in sums}
            dXP[t] = dxp_t
            for g in prog.groups:
                dRP[g.index][t] = drp_t[g.index]
            for p in sums:
                dp[p] = dp[p] + ops.sum0(dp_t[p])
        dXPs = ops.stack(dXP) if prog.input_mats else None
        grads, dx = weight_grads(ops, prog, tape, P["Wcat"], dXPs, {g: ops.stack(v) for g, v in dRP.items()})
        dx = restore_order(ops, dx, tape.rev_idx)
        dinputs = {k: restore_order(ops, v, tape.rev_idx) for k, v in input_grads(ops, prog, tape, dXPs).items()}
        return Gradients(dx, dS, param_grads(ops, prog, grads, dp, lambda shape: ops.zeros(shape, like=dy), I, H,
                                             dims), dinputs)
