"""How a compiled layer joins torch autograd on the `torch` and `reference` backends:
`_CellFunction` runs one layer and direction of a compiled program forward and backward, and hands
the tape's arrays to torch (zero-copy), so that torch frees them with the graph and reports in-place
changes of an input, as for its own ops. numba (CPU) and triton (CUDA) layers go through the cell's
custom operators instead (lstmc/torch_ops.py), which torch.compile, torch.export and torch.func
can trace. lstmc layers are once-differentiable; a second-order use says so in one sentence
(`ONCE_DIFFERENTIABLE`, shared by both paths).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.autograd.function import once_differentiable

__all__ = ["ONCE_DIFFERENTIABLE"]


class _Slot:
    """Where a tape array went in ctx.saved_tensors (and whether it was a NumPy array)."""
    __slots__ = ("i", "numpy")

    def __init__(self, i: int, numpy: bool):
        self.i, self.numpy = i, numpy


def _stash(obj, out: list):
    """Replace the arrays inside a tape by _Slots, appending them to `out` as tensors (zero-copy), so
    that torch frees them with the graph (after backward unless retain_graph=True)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        return _Slot(len(out) - 1, False)
    if isinstance(obj, np.ndarray):
        if not obj.flags.writeable or obj.dtype.kind not in "biuf":
            return obj
        try:
            t = torch.from_numpy(obj)
        except (TypeError, ValueError):   # e.g. negative strides: keep the array itself
            return obj
        out.append(t)
        return _Slot(len(out) - 1, True)
    if isinstance(obj, dict):
        return {k: _stash(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_stash(v, out) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _stash(getattr(obj, f.name), out)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _unstash(obj, saved):
    if isinstance(obj, _Slot):
        t = saved[obj.i]
        return t.numpy() if obj.numpy else t
    if isinstance(obj, dict):
        return {k: _unstash(v, saved) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unstash(v, saved) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _unstash(getattr(obj, f.name), saved)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


ONCE_DIFFERENTIABLE = ("lstmc layers are once-differentiable: their backward is compiled code, not PyTorch ops, so "
                       "no gradient of their gradient (create_graph=True, gradgradcheck, Hessians) can be taken "
                       "through them; for second-order terms use torch.nn.LSTM/GRU or an eager PyTorch loop")


class _CellFunction(torch.autograd.Function):
    """One layer and direction: forward and backward are the compiled program's.

    The tape's arrays are handed to ctx.save_for_backward (as zero-copy tensors) together with the
    inputs, so torch frees them when it frees the graph and reports in-place changes of an input
    between forward and backward, as it does for its own ops. Arguments after x: the states, the
    parameters (runner.names), then the cell's extra per-step inputs (runner.inputs), whose
    gradients are the backward's `dinputs`.
    """

    @staticmethod
    def forward(ctx, runner, lengths, reverse: bool, x, *rest):
        n, m = len(runner.states), len(runner.names)
        y, finals, tape = runner.forward(x, lengths, reverse, rest[:n], rest[n:n + m], need_tape=True,
                                         inputs=rest[n + m:])
        tensors = [x, *rest]
        ctx.tape = _stash(tape, tensors)
        ctx.runner, ctx.n = runner, n
        ctx.save_for_backward(*tensors)
        return (y, *finals)

    @staticmethod
    def backward(ctx, dy, *dfinal):
        if torch.is_grad_enabled():       # backward(create_graph=True): a gradient of the gradient
            raise RuntimeError(ONCE_DIFFERENTIABLE)
        return _CellFunction._backward(ctx, dy, *dfinal)

    @staticmethod
    @once_differentiable
    def _backward(ctx, dy, *dfinal):
        saved = ctx.saved_tensors         # raises if freed (second backward) or modified in place
        x, runner = saved[0], ctx.runner
        tape = _unstash(ctx.tape, saved)
        dS = {s: runner.arr(d) for s, d in zip(runner.states, dfinal)}
        g = runner.prog.backward(tape, runner.arr(dy), dS)
        dx, ds0, dp = g
        need = ctx.needs_input_grad
        grads = [None, None, None, runner.tensor(dx, x) if need[3] else None]
        grads += [runner.tensor(ds0[s], x) if need[4 + i] else None for i, s in enumerate(runner.states)]
        k = 4 + ctx.n
        grads += [runner.tensor(dp[p], x) if need[k + i] else None for i, p in enumerate(runner.names)]
        k += len(runner.names)
        grads += [runner.tensor(g.dinputs[u], x) if need[k + i] else None for i, u in enumerate(runner.inputs)]
        return tuple(grads)
