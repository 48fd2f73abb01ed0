"""The validation ladder (docs/design.md, "Validation") as a library: what `lstmc check` runs and prints.

Each check returns `Result(name, error, tolerance)`; a check passes when error <= tolerance.
  - finite differences: reference backward vs central differences in float64
  - autograd: the `torch` rendering differentiated by torch vs the derived backward
  - oracles: torch.nn.LSTM/GRU and ONNX (lstmc.oracles) where the cell has an equivalent
  - backend: a compiled backend vs the reference, forward and backward, with lengths and reverse
"""

from __future__ import annotations

import numpy as np

from .build import compile as compile_cell
from .build import load
from .results import Result, max_rel, problem, problem_inputs

__all__ = ["Result", "max_rel", "problem", "finite_differences", "autograd", "backend_vs_reference", "run_checks",
           "format_table"]


def _loss(prog, x, params, st, L, rev, dy, ds, inputs=None):
    y, fin, _ = prog.forward(x, params, state=st, lengths=L, reverse=rev, need_tape=False, inputs=inputs)
    return float(np.sum(y * dy) + sum(np.sum(fin[s] * ds[s]) for s in fin))


def finite_differences(cell, reverse=False, eps=1e-6, samples=6, seed=0) -> Result:
    """Central differences of L = <y, dy> + <state_T, dstate> vs the derived backward (float64), over
    x, the initial state, every parameter and every extra input."""
    ref = compile_cell(cell, "reference", "float64")
    x, params, st, L, dy, ds = problem(cell, seed=seed)
    inputs = problem_inputs(ref.cell, seed=seed)
    _, _, tape = ref.forward(x, params, state=st, lengths=L, reverse=reverse, inputs=inputs)
    grads = ref.backward(tape, dy, ds)
    dx, dst, dp = grads
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    targets = [("x", x, dx)] + [(f"state {s}", st[s], dst[s]) for s in st] + [(p, params[p], dp[p]) for p in params]
    targets += [(f"input {u}", inputs[u], grads.dinputs[u]) for u in inputs or ()]
    for _, arr, grad in targets:
        flat = arr.reshape(-1)
        for idx in rng.choice(flat.size, size=min(samples, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            lp = _loss(ref, x, params, st, L, reverse, dy, ds, inputs)
            flat[idx] = old - eps
            lm = _loss(ref, x, params, st, L, reverse, dy, ds, inputs)
            flat[idx] = old
            fd = (lp - lm) / (2 * eps)
            worst = max(worst, abs(fd - grad.reshape(-1)[idx]) / max(1.0, abs(fd)))
    # central differences have O(eps^2) truncation and O(1e-16/eps) rounding error: ~1e-9 at eps=1e-6
    return Result(f"finite differences{' (reverse)' if reverse else ''}", worst, 1e-6)


def autograd(cell, reverse=False, seed=0) -> Result:
    """torch autograd through the `torch` rendering vs the derived backward of the reference (float64)."""
    import torch

    ref = compile_cell(cell, "reference", "float64")
    tb = compile_cell(cell, "torch", "float64")
    x, params, st, L, dy, ds = problem(cell, seed=seed)
    inputs = problem_inputs(ref.cell, seed=seed) or {}
    _, _, tape = ref.forward(x, params, state=st, lengths=L, reverse=reverse, inputs=inputs or None)
    g0 = ref.backward(tape, dy, ds)
    dx, dst, dp = g0
    xt = torch.tensor(x, requires_grad=True)
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    stt = {k: torch.tensor(v, requires_grad=True) for k, v in st.items()}
    it = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    y, fin, _ = tb.forward(xt, pt, state=stt, lengths=L, reverse=reverse, need_tape=False, inputs=it or None)
    states = list(st)
    ins = [xt] + [stt[s] for s in states] + [pt[k] for k in params] + [it[k] for k in inputs]
    grads = torch.autograd.grad([y] + [fin[s] for s in states], ins,
                                [torch.tensor(dy)] + [torch.tensor(ds[s]) for s in states], allow_unused=True)
    ours = [dx] + [dst[s] for s in states] + [dp[k] for k in params] + [g0.dinputs[k] for k in inputs]
    err = max(max_rel(np.zeros_like(o) if g is None else g.numpy(), o) for g, o in zip(grads, ours))
    return Result(f"torch autograd{' (reverse)' if reverse else ''}", err, 1e-10)


def backend_vs_reference(cell, backend: str, dtype: str = "float64", T=6, B=3, I=5, H=7, reverse=False,
                         seed=0) -> list[Result]:
    """A compiled backend vs the reference (float64) on the same inputs, forward and backward."""
    ref = compile_cell(cell, "reference", "float64")
    other = compile_cell(cell, backend, dtype)
    np_dtype = np.float32 if dtype == "float32" else np.float64
    x, params, st, L, dy, ds = problem(cell, T=T, B=B, I=I, H=H, seed=seed, dtype=np_dtype)
    inputs = problem_inputs(ref.cell, T=T, B=B, H=H, seed=seed, dtype=np_dtype)
    up = lambda a: a.astype(np.float64)  # noqa: E731
    y0, f0, tape0 = ref.forward(up(x), {k: up(v) for k, v in params.items()}, state={k: up(v) for k, v in st.items()},
                                lengths=L, reverse=reverse,
                                inputs=None if inputs is None else {k: up(v) for k, v in inputs.items()})
    g0 = ref.backward(tape0, up(dy), {k: up(v) for k, v in ds.items()})
    y1, f1, tape1 = other.forward(x, params, state=st, lengths=L, reverse=reverse, inputs=inputs)
    g1 = other.backward(tape1, dy, ds)
    # float64: both sides differ only in rounding. float32 (vs the float64 reference): the error of
    # float32 rounding and of the numba backend's activation approximations (< 4e-7). A weight
    # gradient sums T*B terms, and max_rel judges its small elements absolutely, so its rounding grows
    # with T: the backward tolerance is 2e-4 up to T=100 and grows as sqrt(T/100) beyond (a random
    # walk of rounding errors). Measured at T=1000 (janet, whose long memory sums the most terms into
    # its weight gradients): backward 5.1e-5 on an AMD EPYC, 2.3e-4 on an AVX-512 Xeon, whose sgemm
    # sums in another order (dU_g: max |dU_g| 1088, error 5e-7 of it); forward <= 4.1e-7 on both.
    tol_f, tol_b = (1e-10, 1e-10) if dtype == "float64" else (2e-6, 2e-4 * max(1.0, (T / 100) ** 0.5))
    suffix = f" {backend}/{dtype}{' reverse' if reverse else ''}"
    fwd = max([max_rel(y1, y0)] + [max_rel(f1[s], f0[s]) for s in f0])
    bwd = max([max_rel(g1[0], g0[0])] + [max_rel(g1[1][s], g0[1][s]) for s in g0[1]]
              + [max_rel(g1[2][p], g0[2][p]) for p in g0[2]]
              + [max_rel(g1.dinputs[u], g0.dinputs[u]) for u in g0.dinputs])
    return [Result("forward" + suffix, fwd, tol_f), Result("backward" + suffix, bwd, tol_b)]


def run_checks(cell, backend: str | None = None, dtype: str = "float64") -> list[Result]:
    """Everything `lstmc check` runs for one cell."""
    from . import oracles

    cell = load(cell)
    results = [finite_differences(cell), finite_differences(cell, reverse=True),
               autograd(cell), autograd(cell, reverse=True)]
    results += oracles.run(cell)
    backends = [backend] if backend else ["torch"]
    for b in backends:
        if b == "reference":
            continue
        for rev in (False, True):
            results += backend_vs_reference(cell, b, dtype, reverse=rev)
    return results


def format_table(cell_name: str, results: list[Result]) -> str:
    w = max([len(r.name) for r in results] + [5])
    lines = [f"lstmc check {cell_name}", f"  {'check':<{w}}  {'max error':>10}  {'tolerance':>9}  status"]
    for r in results:
        status = "ok" if r.ok else "FAIL"
        lines.append(f"  {r.name:<{w}}  {r.error:10.2e}  {r.tolerance:9.0e}  {status}{'  ' + r.note if r.note else ''}")
    n_bad = sum(not r.ok for r in results)
    lines.append(f"  {len(results) - n_bad} passed, {n_bad} failed")
    return "\n".join(lines)
