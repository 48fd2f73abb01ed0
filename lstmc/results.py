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
    params = {k: v.astype(dtype) for k, v in ref.init_params(I, H, seed=seed).items()}
    x = rng.normal(size=(T, B, I)).astype(dtype)
    st = {s: (0.5 * rng.normal(size=(B, H))).astype(dtype) for s in ref.cell.states}
    L = None
    if lengths:
        L = rng.integers(0, T + 1, size=B)
        L[0] = T
        if B > 2:
            L[1] = 0
    dy = rng.normal(size=(T, B, H)).astype(dtype)
    ds = {s: rng.normal(size=(B, H)).astype(dtype) for s in ref.cell.states}
    return x, params, st, L, dy, ds
