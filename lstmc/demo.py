"""The README's main job (`make demo`): compile every built-in cell for the CPU, check it, train a
peephole LSTM on the adding problem, and compare speed with PyTorch."""

from __future__ import annotations

import time

import numpy as np


def check_builtins() -> list[str]:
    from . import builtin_cells
    from .build import compile as compile_cell
    from .check import format_table, run_checks

    failed = []
    for name in builtin_cells():
        t0 = time.perf_counter()
        compile_cell(name, "numba", "float32")
        results = run_checks(name, backend="numba", dtype="float32")
        print(format_table(name, results))
        print(f"  (compiled and checked in {time.perf_counter() - t0:.1f} s)\n")
        if not all(r.ok for r in results):
            failed.append(name)
    return failed


def speed(T=100, B=64, I=256, H=256) -> None:
    import torch

    from .build import compile as compile_cell
    from .interop import TORCH_MODULES, torch_module_class

    from .bench import NOISY, ratio_text, timed

    print(f"speed: one training step (forward + backward), T={T} B={B} I=H={H}, float32, "
          f"{torch.get_num_threads()} threads, median of 5 (of up to 15 when the machine is noisy); "
          f"ratio = lstmc time / torch time, below 1 is faster")
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
    for cell in TORCH_MODULES:
        module = torch_module_class(cell)
        nb = compile_cell(cell, "numba", "float32")
        p = nb.init_params(I, H)

        def ours():
            y, _, tape = nb.forward(x, p)
            nb.backward(tape, np.ones_like(y))

        m = module(I, H)
        xt = torch.from_numpy(x)

        def theirs():
            xx = xt.clone().requires_grad_()
            y, _ = m(xx)
            y.backward(torch.ones_like(y))

        (a, _, noisy_a), (b, _, noisy_b) = timed(ours, 5), timed(theirs, 5)
        note = (f"   (noisy: IQR above {NOISY:.0%} of the median; the machine is busy, do not trust this ratio)"
                if noisy_a or noisy_b else "")
        print(f"  {cell:5s} lstmc numba {a:7.1f} ms   torch.nn.{module.__name__} {b:7.1f} ms   "
              f"ratio {ratio_text(a / b)}{note}")


def main(args=None) -> int:
    """`--quick` (args.quick): half the training steps and a shorter sequence in the speed stage."""
    quick = bool(getattr(args, "quick", False))
    t0 = time.perf_counter()
    print("lstmc demo 1/3: compile every built-in cell for the CPU (numba) and check it\n")
    failed = check_builtins()
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("lstmc demo 2/3: train\n")
    try:
        from .train import demo_run
    except ImportError:
        print("  (training runtime not installed in this build)\n")
    else:
        if demo_run(quick=quick) != 0:
            return 1
    print("\nlstmc demo 3/3: speed against PyTorch\n")
    speed(T=50 if quick else 100)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return 0
