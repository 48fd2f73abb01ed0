"""The `lstmc` command line: show, check, compile, bench, arena, train, demo.

Spec errors print the SpecError message (file:line:col, the line, a caret, a fix) without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ir
from .backends.base import BackendUnavailable
from .spec import SpecError


def _named_text(node, names: dict, own: str) -> str:
    """`node` printed with every other named intermediate shown by its name."""
    memo = {}
    for n in ir.walk([node]):
        if n is not node and names.get(n) not in (None, own):
            memo[n] = ir.var("t", names[n])
            continue
        args = tuple(memo[a] for a in n.args)
        memo[n] = n if args == n.args else ir.Node(n.op, args, n.attr)
    return ir.to_text(memo[node])


def cmd_show(args) -> int:
    from .build import load
    from .lower import lower

    cell = load(args.cell)
    prog = lower(cell)
    print(f"cell {cell.name}   ({cell.filename})")
    states = [s if cell.state_size(s) == "H" else f"{s}[{cell.state_size(s)}]" for s in cell.states]
    print(f"  states: {', '.join(states)}   output: {cell.output}")
    if cell.inputs:
        print("\nextra inputs (given at every step: forward(..., inputs={name: array})):")
        for u, size in cell.inputs.items():
            shape = "[T, B]" if size is None else f"[T, B, {size}]"
            what = ("one number per batch row" if size is None else "hidden size" if size == "H"
                    else f"size {size}, given at run time")
            print(f"  {u:<12} {shape:<10} {what}")
    for k in cell.sizes:
        print(f"  size {k}: given at run time (init_params(..., sizes={{'{k}': 8}}), Recurrent(..., sizes=...))")
    print("\nequations:")
    for target, node in cell.equations:
        print(f"  {target} = {_named_text(node, cell.names, target)}")
    print("\nparameters:")
    for p, k in cell.params.items():
        init = cell.inits.get(p, "uniform(-1/sqrt(H), 1/sqrt(H))")
        dims = cell.param_dims(p)
        print(f"  {p:<12} {dims:<7} init {init}" + (f"   ({p} @ {cell.param_inputs[p]})" if k == "V" else ""))
    print("\nbackward (adjoints of one step; dv[g] = adjoint of GEMM group g's operand):")
    for st in prog.bwd:
        if hasattr(st, "lets"):
            for let in st.lets:
                print(f"  {ir.var_name(let.key)} = {ir.to_text(let.expr)}")
    print("\nlowered program:")
    print(prog.text())
    prog.verify()
    print("  verified: every value defined before it is read, every state updated, the decisions consistent")
    return 0


def cmd_check(args) -> int:
    from .build import load
    from .check import format_table, run_checks

    status = 0
    for name in args.cells:
        cell = load(name)
        results = run_checks(cell, backend=args.backend, dtype=args.dtype)
        print(format_table(cell.name, results))
        if not all(r.ok for r in results):
            status = 1
    return status


def cmd_compile(args) -> int:
    from .build import compile as compile_cell

    prog = compile_cell(args.cell, backend=args.backend, dtype=args.dtype)
    print(f"compiled {prog.cell.name} for {prog.backend}/{prog.dtype} (key {prog.key})")
    if args.emit:
        out = Path(args.emit)
        out.mkdir(parents=True, exist_ok=True)
        written = emit(prog, out)
        for w in written:
            print(f"  wrote {w}")
    return 0


def emit(prog, out: Path) -> list[Path]:
    """Write the generated source of a compiled program (the Program text for the reference)."""
    name = prog.cell.name
    if getattr(prog, "source", None):
        path = out / f"{name}_{prog.backend}_{prog.dtype}.py"
        path.write_text(prog.source)
    else:
        path = out / f"{name}_program.txt"
        path.write_text(prog.program.text() + "\n")
    return [path]


def cmd_demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    from .build import BACKENDS

    from .version import __version__

    p = argparse.ArgumentParser(prog="lstmc", description="A compiler for recurrent neural-network cells.")
    p.add_argument("--version", action="version", version=f"lstmc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="print the parsed equations, parameter shapes, backward and lowered program")
    s.add_argument("cell", help="a built-in cell name or a path to a .cell file")
    s.set_defaults(fn=cmd_show)
    c = sub.add_parser("check", help="gradient checks and oracle comparisons; exit 0 only if all pass")
    c.add_argument("cells", nargs="+", help="built-in cell names or .cell paths")
    c.add_argument("--backend", choices=BACKENDS, default="numba",
                   help="compare this backend with the reference too, forward and backward (default: numba, the CPU "
                        "default); `reference` runs the ladder alone")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="dtype of the compared backend (default: float64)")
    c.set_defaults(fn=cmd_check)
    k = sub.add_parser("compile", help="compile a cell; --emit DIR writes the generated source")
    k.add_argument("cell", help="a built-in cell name or a path to a .cell file")
    k.add_argument("--backend", choices=BACKENDS, default="torch", help="the code generator (default: torch)")
    k.add_argument("--dtype", choices=("float64", "float32"), default="float32", help="(default: float32)")
    k.add_argument("--emit", metavar="DIR", default=None, help="write the generated source into DIR")
    k.set_defaults(fn=cmd_compile)
    from . import arena, bench

    bench.add_parser(sub)
    arena.add_parser(sub)
    from . import leaderboard

    leaderboard.add_parser(sub)
    from . import anomaly

    anomaly.add_parser(sub)
    from . import tune

    tune.add_parser(sub)
    from .onnx_export import cli as onnx_cli

    onnx_cli.add_parser(sub)
    from . import train

    train.add_parser(sub)
    d = sub.add_parser("demo", help="the main job: compile, check, train and benchmark the built-in cells")
    d.add_argument("--quick", action="store_true",
                   help="a shorter run: 1,000 training steps instead of 2,000, and T=50 instead of 100 in the "
                        "speed stage")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, BackendUnavailable) as e:
        print(f"lstmc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
