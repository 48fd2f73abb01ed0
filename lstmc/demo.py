"""The README's main job (`make demo`): compile every built-in cell, check it, and report."""

from __future__ import annotations

import time


def main(args=None) -> int:
    from . import builtin_cells
    from .build import compile as compile_cell
    from .check import format_table, run_checks

    print("lstmc demo: compile and check every built-in cell\n")
    failed = []
    for name in builtin_cells():
        t0 = time.perf_counter()
        for backend in ("reference", "torch"):
            compile_cell(name, backend, "float64")
        results = run_checks(name)
        print(format_table(name, results))
        print(f"  ({time.perf_counter() - t0:.1f} s)\n")
        if not all(r.ok for r in results):
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(f"all {len(builtin_cells())} built-in cells compiled and passed their checks")
    return 0
