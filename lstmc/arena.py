"""`lstmc arena`: train every cell on every task with the same budget, optimiser, schedule and seeds,
and rank them — fairly, reproducibly, resumably.

    lstmc arena lstm gru my_cell.cell --tasks adding,digits --steps 300 --seeds 3 --match-params --out arena/

Each run is one `lstmc.train.train(...)` call whose result is stored as DIR/runs/TASK/CELL/seedS.json
the moment it finishes; a restarted arena skips every run that already has its file. `--match-params`
picks each cell's hidden size so every model has about as many parameters as the first cell's at
`--hidden`, so no cell wins by being bigger. A task's extra per-step inputs (sunspots_gaps' `dt`,
copy_episodes' `reset`) reach the cells that read them; the others ignore them and compete on the same
data; a cell that reads an input a task lacks is an error before any run starts. The report:
DIR/arena.md, DIR/arena.json and DIR/arena.html (learning curves as PNGs beside it; opens in a browser
without a server).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# Entry, the ranking with its one tie rule, and the markdown-to-HTML page live in lstmc/board.py,
# which the persistent leaderboard (lstmc/leaderboard.py) shares.
from .board import Entry, overall, places, rank_task, report_html  # noqa: F401


# --------------------------------------------------------------------------- parameter matching

def rnn_param_count(cell, input_size: int, hidden: int, sizes: dict | None = None) -> int:
    """Parameters of one recurrent layer of `cell`: the product of each parameter's shape as
    init_params makes it (W: H*I, U: H*H, or H*H/N with `heads N`, vectors: H; V (`V @ u`): H*K; a
    cell with sized states: its inferred shapes, e.g. lstmp's W_p [P, H]), with the sizes of
    `sizes` ({"P": 64, "K": 8})."""
    from .build import load

    c = load(cell)
    return sum(int(np.prod(c.param_shape(p, input_size, hidden, sizes))) for p in c.params)


def match_hidden(cells, count, target: int, lo: int = 2, hi: int = 4096, multiple_of=None) -> dict:
    """For each cell the hidden size whose parameter count `count(cell, H)` is closest to `target`
    (counts grow with H, so a bisection finds the crossing), among the multiples of
    `multiple_of(cell)` (a cell with `heads N` has no other hidden sizes; default 1)."""
    out = {}
    for cell in cells:
        n = multiple_of(cell) if multiple_of else 1
        a, b = -(-lo // n), max(-(-lo // n), hi // n)          # multiples m of n: H = m * n
        while b - a > 1:
            mid = (a + b) // 2
            if count(cell, mid * n) < target:
                a = mid
            else:
                b = mid
        out[cell] = min((a * n, b * n), key=lambda h: (abs(count(cell, h) - target), h))
    return out


def model_param_count(cell, task_name: str, hidden: int, layers: int = 1) -> int:
    """Trainable parameters of the whole training model (embedding, recurrent layers, head); a cell's
    sizes (`input w[K]`) are the widths of the task's inputs, as the model takes them."""
    from .build import load
    from .tasks import get_task
    from .train.inputs import input_plan

    task = get_task(task_name)
    sizes = input_plan(cell, task, hidden)[2]
    c = load(cell)
    out = c.size_value(c.state_size(c.output), 0, hidden, sizes)      # the output state's size (H, or P)
    in_size = (task.embed_dim or 16) if task.inputs == "tokens" else task.input_size
    n = sum(rnn_param_count(cell, in_size if layer == 0 else out, hidden, sizes) for layer in range(layers))
    n += (out + 1) * task.n_out
    if task.inputs == "tokens":
        n += task.vocab * in_size
    return n


# ------------------------------------------------------------------------------------------ runs

def run_arena(cells, tasks, seeds=3, steps=None, budget=None, hidden=None, match_params=False, out="arena",
              progress=True, extra=None, db=None) -> list[Entry]:
    """Train every cell on every task `seeds` times; with `db`, also record every run in that
    persistent leaderboard file (lstmc.leaderboard), including runs resumed from DIR/runs."""
    from .build import load
    from .tasks import get_task
    from .train import TrainConfig, config_dict, train

    out = Path(out)
    names, sources = {}, {}
    for c in cells:
        cell = load(c)
        n = cell.name
        if n in names.values():
            raise ValueError(f"two cells are named '{n}': give each cell file its own `cell` name")
        names[c] = n
        sources[c] = cell.source or repr(cell)
    if db is not None:
        from . import leaderboard
        from .bench import machine_description

        leaderboard.connect(db).close()            # a bad file fails before hours of training, not after
        machine = machine_description()
    from .build import load
    from .train.inputs import input_plan

    for t in tasks:         # a cell that reads an input a task lacks fails now, before any training
        for c in cells:
            input_plan(c, get_task(t), hidden or get_task(t).defaults["hidden"])
    entries = []
    for t in tasks:
        task = get_task(t)
        H0 = hidden or task.defaults["hidden"]
        if match_params:
            target = model_param_count(cells[0], t, H0)
            sizes = match_hidden(cells, lambda c, h: model_param_count(c, t, h), target,
                                 multiple_of=lambda c: load(c).heads)
        else:
            sizes = {c: H0 for c in cells}
        for c in cells:
            results = []
            for s in range(seeds):
                path = out / "runs" / t / names[c] / f"seed{s}.json"
                cfg = TrainConfig(cell=c, task=t, hidden=sizes[c], seed=s, steps=steps, progress=progress,
                                  **(extra or {}))
                if budget:
                    cfg.time_budget = budget
                if path.exists():                       # finished before an interruption: keep it
                    row = json.loads(path.read_text())
                    results.append(row)
                    if db is not None:
                        leaderboard.record(db, dict(row, cell=names[c]),
                                           row.get("config") or config_dict(cfg.resolved(task)), sources[c], machine)
                    continue
                res = train(cfg)
                row = {"test_metric": res.test_metric, "val_metric": res.val_metric, "baseline": res.baseline,
                       "baseline_name": res.baseline_name, "metric": res.metric,
                       "higher_is_better": res.higher_is_better, "params": res.params, "steps": res.steps,
                       "steps_per_s": res.steps_per_s, "wall_time": res.wall_time,
                       "curve": [(h.get("step"), h.get("val_metric")) for h in res.history], "config": res.config}
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(row))
                os.replace(tmp, path)
                results.append(row)
                if db is not None:
                    leaderboard.record(db, dict(row, cell=names[c]), res.config, sources[c], machine)
            r0 = results[0]
            entries.append(Entry(cell=names[c], task=t, metric=r0["metric"], higher_is_better=r0["higher_is_better"],
                                 values=[r["test_metric"] for r in results], baseline=r0["baseline"],
                                 baseline_name=r0["baseline_name"], params=r0["params"], hidden=sizes[c],
                                 steps_per_s=float(np.mean([r["steps_per_s"] for r in results])),
                                 wall_time=float(np.sum([r["wall_time"] for r in results])),
                                 curves=[r["curve"] for r in results]))
    return entries


# ---------------------------------------------------------------------------------------- report

def report_md(entries: list[Entry], command: str = "", machine: dict | None = None) -> str:
    lines = ["# lstmc arena", ""]
    if command:
        lines += [f"`{command}`", ""]
    if machine:
        lines += [f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; torch {machine.get('torch')}.", ""]
    for t in sorted({e.task for e in entries}):
        ranked = rank_task([e for e in entries if e.task == t])
        e0 = ranked[0][1]
        arrow = "higher" if e0.higher_is_better else "lower"
        lines += [f"## {t} — test {e0.metric} ({arrow} is better; {e0.baseline_name} baseline "
                  f"{e0.baseline:.4f})", "",
                  "| rank | cell | test metric (mean ± std) | seeds | params | hidden | steps/s | wall time |",
                  "|---|---|---|---|---|---|---|---|"]
        for r, e in ranked:
            spread = f"{e.std:.4f}" if len(e.values) > 1 else "n/a"      # one seed has no spread
            lines.append(f"| {r} | {e.cell} | {e.mean:.4f} ± {spread} | {len(e.values)} | {e.params} | {e.hidden} | "
                         f"{e.steps_per_s:.1f} | {e.wall_time:.0f} s |")
        lines.append("")
    lines += ["## Overall (mean rank over tasks)", "", "| place | cell | mean rank | ranks |", "|---|---|---|---|"]
    board = overall(entries)
    for place, (c, mr, rs) in zip(places([mr for _, mr, _ in board]), board):
        lines.append(f"| {place} | {c} | {mr:.2f} | {', '.join(f'{t}: {r}' for t, r in sorted(rs.items()))} |")
    return "\n".join(lines) + "\n"


def plot_curves(entries: list[Entry], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for t in sorted({e.task for e in entries}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for e in [e for e in entries if e.task == t]:
            for k, curve in enumerate(e.curves):
                pts = [(s, v) for s, v in curve if s is not None and v is not None]
                if pts:   # few evaluations: markers, so that one point is not an invisible line
                    ax.plot(*zip(*pts), color=f"C{sorted({x.cell for x in entries}).index(e.cell)}",
                            alpha=0.8, label=e.cell if k == 0 else None, marker="o" if len(pts) <= 20 else None,
                            markersize=4)
            ax.axhline(e.baseline, color="gray", ls="--", lw=1)
        e0 = next(e for e in entries if e.task == t)
        ax.set_title(f"{t}: validation {e0.metric} (dashed: {e0.baseline_name} baseline)")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"curves_{t}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def write_reports(entries: list[Entry], out: Path, command: str = "") -> None:
    from .bench import machine_description
    from .files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    md = report_md(entries, command, machine)
    atomic_write(out / "arena.md", md.encode())
    data = {"command": command, "machine": machine,
            "entries": [dict(e.__dict__, mean=e.mean, std=e.std) for e in entries],
            "overall": [{"cell": c, "mean_rank": mr, "ranks": rs} for c, mr, rs in overall(entries)]}
    atomic_write(out / "arena.json", json.dumps(data, indent=1).encode())
    images = plot_curves(entries, out)
    atomic_write(out / "arena.html", report_html(md, images).encode())


# ------------------------------------------------------------------------------------------- CLI

def _budget(s: str) -> float:
    s = s.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(s[-1:], None)
    try:
        v = float(s[:-1]) * mult if mult else float(s)
    except ValueError:
        raise ValueError(f"--budget takes seconds such as 120s, 2m or 90, got {s!r}") from None
    if v <= 0:
        raise ValueError(f"--budget must be positive, got {s!r}")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser("arena", help="train cells on tasks with one budget and rank them")
    p.add_argument("cells", nargs="+", help="built-in names or .cell paths")
    from .tasks import TASKS

    p.add_argument("--tasks", default="adding,copy,digits,charlm,sunspots",
                   help=f"comma-separated tasks, from: {', '.join(TASKS)} (default: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget", default=None, help="wall time per run, e.g. 120s (not reproducible: steps vary)")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps per run (reproducible)")
    p.add_argument("--seeds", type=int, default=3, help="training runs per cell and task (default: 3)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (of the first cell with --match-params)")
    p.add_argument("--match-params", action="store_true", help="pick hidden sizes so parameter counts match")
    p.add_argument("--out", default="arena", help="output directory (default: arena)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.add_argument("--db", default=None, metavar="FILE",
                   help="also record every run in this persistent SQLite leaderboard (created when absent; "
                        "results of other runs, people and days accumulate: see `lstmc leaderboard`)")
    p.set_defaults(fn=cli_main)


def cli_main(args) -> int:
    import sys

    from .tasks import task_names

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in task_names()]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; choose from {', '.join(task_names())}")
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    budget = _budget(args.budget) if args.budget else None
    entries = run_arena(args.cells, tasks, seeds=args.seeds, steps=args.steps, budget=budget, hidden=args.hidden,
                        match_params=args.match_params, out=args.out, progress=not args.no_progress, db=args.db)
    command = "lstmc arena " + " ".join(sys.argv[2:])
    write_reports(entries, Path(args.out), command)
    print(report_md(entries, command))
    print(f"wrote {args.out}/arena.md, arena.json, arena.html")
    if args.db:
        from .leaderboard import report_md as board_md

        print(board_md(args.db, tasks[0] if len(tasks) == 1 else None))
        print(f"recorded in {args.db} (the whole board: lstmc leaderboard --db {args.db})")
    return 0
