"""What validation compares with: `Result` (an error against a tolerance), `max_rel`, and the random
test problems every check uses. Both the ladder (check.py) and the oracles (oracles.py) build on it,
so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .build import compile as compile_cell


@dataclass
class Result:
    name: str
    error: float
    tolerance: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.tolerance


def max_rel(a, b) -> float:
    """max |a - b| / max(1, |b|): absolute for small values, relative for large ones."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def problem(cell, T=4, B=3, I=3, H=5, seed=0, lengths=True, dtype=np.float64):
    """A random test problem: (x, params, state0, lengths, dy, dstate) for `cell`. For a cell with
    `heads N`, H is rounded up to a multiple of N."""
    rng = np.random.default_rng(seed)
    ref = compile_cell(cell, "reference", "float64")
    H = -(-H // ref.cell.heads) * ref.cell.heads
    params = {k: v.astype(dtype) for k, v in ref.init_params(I, H, seed=seed, sizes=problem_sizes(ref.cell)).items()}
    x = rng.normal(size=(T, B, I)).astype(dtype)
    n = {s: ref.cell.size_value(ref.cell.state_size(s), I, H, problem_sizes(ref.cell)) for s in ref.cell.states}
    st = {s: (0.5 * rng.normal(size=(B, n[s]))).astype(dtype) for s in ref.cell.states}
    L = None
    if lengths:
        L = rng.integers(0, T + 1, size=B)
        L[0] = T
        if B > 2:
            L[1] = 0
    dy = rng.normal(size=(T, B, n[ref.cell.output])).astype(dtype)
    ds = {s: rng.normal(size=(B, n[s])).astype(dtype) for s in ref.cell.states}
    return x, params, st, L, dy, ds


PROBLEM_SIZE = 4     # the value of every `size` line in a test problem


def problem_sizes(cell) -> dict | None:
    """The sizes of a test problem: PROBLEM_SIZE for each of the cell's `size` lines (None: none)."""
    return {k: PROBLEM_SIZE for k in cell.sizes} or None


def problem_inputs(cell, T=4, B=3, H=5, seed=0, dtype=np.float64) -> dict | None:
    """The extra inputs of a test problem for `cell` (None for a cell without any): uniform in
    [0, 1.5) (non-negative, as time gaps, masks and resets are), drawn from their own generator so
    the values `problem` draws are the same with or without them. H as `problem` rounds it."""
    if not cell.inputs:
        return None
    rng = np.random.default_rng(seed + 7919)
    H = -(-H // cell.heads) * cell.heads
    out = {}
    for u, size in cell.inputs.items():
        shape = (T, B) if size is None else (T, B, H if size == "H" else PROBLEM_SIZE)
        out[u] = rng.uniform(0.0, 1.5, size=shape).astype(dtype)
    return out
