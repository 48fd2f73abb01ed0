"""A persistent arena leaderboard in one SQLite file: results of different people, days and machines
accumulate, each with the configuration, the code version and the machine that produced it.

    lstmc arena lstm gru my_cell.cell --tasks adding --steps 300 --db board.sqlite
    lstmc leaderboard --db board.sqlite [--task adding] [--out board.md]

The file holds one table, `runs`: one row per training run (one cell, one task, one seed), written
the moment the run is recorded (an interrupted arena loses nothing). A row carries

- what was trained: the cell's name and the sha256 of its source (two different cells that share a
  name are two entries, shown as `name@sha`), the task, the seed and the hidden size;
- the *setting*: the options that decide whether two results may be compared (the task and its
  length, steps or time budget, batch, optimiser, learning rate, schedule, clipping, layers...). The
  leaderboard ranks cells only against others in the same setting; the cell, seed, hidden size and
  where/how fast it ran are not part of it (the arena chooses the hidden size, --match-params
  included);
- the outcome: test and validation metric, baseline, parameters, steps, steps/s, wall time;
- provenance: UTC time, lstmc version, git commit of the checkout when there is one, user, host and
  the machine description of `lstmc bench`.

A run is identified by a key over (setting, cell source, hidden, seed, machine, version): recording
the same run again (a resumed arena) is a no-op, so numbers are never counted twice. Entries are the
mean over every recorded seed; ranks use the arena's one tie rule (`arena.rank_task`, `places`).

sqlite3 is Python's own; writes are single transactions with a 60 s lock timeout, so several arenas
may record into one file at once. A file that is not an lstmc leaderboard (or is not SQLite at all)
is refused with a one-line error, never modified.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import platform
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
APP_ID = 0x4C53544D          # "LSTM": PRAGMA application_id marks the file as ours

# Options that do not decide comparability: what varies between the entries of one board, where the
# results go and how fast they were produced.
NOT_SETTING = {"cell", "seed", "hidden", "out", "resume", "stop_at", "progress", "threads", "backend", "device",
               "checkpoint_every", "validate", "eval_every"}

_SCHEMA = """
CREATE TABLE runs (
    run_key TEXT PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    task TEXT NOT NULL,
    setting TEXT NOT NULL,          -- canonical JSON of the comparability options
    setting_key TEXT NOT NULL,      -- sha256 of setting, first 12 hex digits
    cell TEXT NOT NULL,
    cell_sha TEXT NOT NULL,
    seed INTEGER NOT NULL,
    hidden INTEGER NOT NULL,
    metric TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    test_metric REAL,
    val_metric REAL,
    baseline REAL,
    baseline_name TEXT,
    params INTEGER,
    steps INTEGER,
    steps_per_s REAL,
    wall_time REAL,
    config TEXT NOT NULL,
    version TEXT NOT NULL,
    git_commit TEXT,
    user TEXT,
    host TEXT,
    machine TEXT NOT NULL
);
CREATE INDEX runs_by_setting ON runs (task, setting_key);
"""


_COLUMNS = [line.split()[0] for line in _SCHEMA.split("CREATE TABLE runs (")[1].split(");")[0].strip().splitlines()]


class LeaderboardError(ValueError):
    """The file is not an lstmc leaderboard, or is of a newer schema."""


def _sha(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _canonical(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)


def setting_of(config: dict) -> dict:
    """The comparability options of a training config (see the module docstring)."""
    return {k: v for k, v in config.items() if k not in NOT_SETTING}


def git_commit() -> str | None:
    """The commit of the checkout lstmc runs from, with '+dirty' when it has uncommitted changes
    (None when it is not a git checkout, e.g. an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) if head else None


def connect(path) -> sqlite3.Connection:
    """Open (creating it when absent) the leaderboard at `path`; LeaderboardError for a file that is
    not one."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    if path.is_dir():
        raise LeaderboardError(f"--db {path} is a directory; give a file name such as {path}/board.sqlite")
    if not path.parent.is_dir():
        raise LeaderboardError(f"--db {path}: the directory {path.parent} does not exist")
    try:
        con = sqlite3.connect(str(path), timeout=60)
        if new:
            # One transaction, under SQLite's write lock: of several arenas creating the file at once,
            # the first makes the tables and marks the file; the others wait, then find them.
            con.execute("BEGIN IMMEDIATE")
            if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA application_id = {APP_ID}")
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.commit()
        app = con.execute("PRAGMA application_id").fetchone()[0]
        ver = con.execute("PRAGMA user_version").fetchone()[0]
        columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    except sqlite3.DatabaseError as e:
        raise LeaderboardError(f"{path} is not an lstmc leaderboard ({e}); give a new file name or the file an "
                               f"earlier arena wrote") from None
    if app != APP_ID:
        con.close()
        raise LeaderboardError(f"{path} is an SQLite file but not an lstmc leaderboard (application_id {app:#x}); "
                               f"it was left untouched: give a new file name")
    if ver > SCHEMA_VERSION:
        con.close()
        raise LeaderboardError(f"{path} was written by a newer lstmc (schema {ver}, this one reads {SCHEMA_VERSION}); "
                               f"upgrade lstmc to add to it")
    missing = [c for c in _COLUMNS if c not in columns]
    if missing:
        con.close()
        raise LeaderboardError(f"{path} is marked as an lstmc leaderboard but its table runs lacks "
                               f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; it was left "
                               f"untouched: give a new file name")
    return con


def record(db, row: dict, config: dict, cell_source: str, machine: dict) -> bool:
    """Record one finished run (the arena's per-seed row and the run's config). True when it was new,
    False when the same run was recorded before."""
    from .version import __version__

    setting = _canonical(setting_of(config))
    cell_sha = _sha(cell_source, 16)
    mach = _canonical(machine)
    key = _sha(_canonical([setting, cell_sha, config.get("hidden"), config.get("seed"), mach, __version__]), 32)
    values = dict(
        run_key=key, recorded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=config["task"], setting=setting, setting_key=_sha(setting), cell=row["cell"], cell_sha=cell_sha,
        seed=int(config["seed"]), hidden=int(config["hidden"]), metric=row["metric"],
        higher_is_better=int(bool(row["higher_is_better"])), test_metric=_num(row["test_metric"]),
        val_metric=_num(row["val_metric"]), baseline=_num(row["baseline"]), baseline_name=row["baseline_name"],
        params=int(row["params"]), steps=int(row["steps"]), steps_per_s=_num(row["steps_per_s"]),
        wall_time=_num(row["wall_time"]), config=_canonical(config), version=__version__, git_commit=git_commit(),
        user=_user(), host=platform.node(), machine=mach)
    con = connect(db) if not isinstance(db, sqlite3.Connection) else db
    try:
        with con:
            cur = con.execute(f"INSERT OR IGNORE INTO runs ({', '.join(values)}) VALUES "
                              f"({', '.join('?' * len(values))})", list(values.values()))
        return cur.rowcount == 1
    except sqlite3.DatabaseError as e:      # damaged since it was opened, locked for over 60 s...
        raise LeaderboardError(f"cannot record into the leaderboard {db}: {e}") from None
    finally:
        if con is not db:
            con.close()


def _num(v) -> float | None:
    """SQLite has no NaN: a missing or non-finite number is stored as NULL (and ranks last)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def entries(db, task: str | None = None) -> list[tuple[str, dict, list]]:
    """The board: one (task, setting, [arena.Entry]) per task and setting, the entries averaged over
    every recorded seed of a cell version. A cell name recorded with two different sources is shown
    as name@sha for each."""
    from .board import Entry

    con = connect(db)
    try:
        q = "SELECT * FROM runs" + (" WHERE task = ?" if task else "") + " ORDER BY task, setting_key, cell, seed"
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(q, (task,) if task else ())]
    except sqlite3.DatabaseError as e:
        raise LeaderboardError(f"cannot read the leaderboard {db}: {e}") from None
    finally:
        con.close()
    versions: dict[str, set] = {}
    for r in rows:
        versions.setdefault(r["cell"], set()).add(r["cell_sha"])
    boards: dict[tuple, dict] = {}
    for r in rows:
        name = r["cell"] if len(versions[r["cell"]]) == 1 else f"{r['cell']}@{r['cell_sha'][:8]}"
        group = boards.setdefault((r["task"], r["setting"]), {})
        group.setdefault(name, []).append(r)
    out = []
    for (t, setting), cells in boards.items():
        es = []
        for name, rs in cells.items():
            r0 = rs[0]
            es.append(Entry(cell=name, task=t, metric=r0["metric"], higher_is_better=bool(r0["higher_is_better"]),
                            values=[math.nan if r["test_metric"] is None else r["test_metric"] for r in rs],
                            baseline=r0["baseline"] if r0["baseline"] is not None else math.nan,
                            baseline_name=r0["baseline_name"] or "", params=r0["params"],
                            hidden=r0["hidden"], steps_per_s=_mean(r["steps_per_s"] for r in rs),
                            wall_time=sum(r["wall_time"] or 0.0 for r in rs)))
            es[-1].who = sorted({f"{r['user']}@{r['host']}" for r in rs})
            es[-1].days = sorted({r["recorded_at"][:10] for r in rs})
            es[-1].versions = sorted({r["version"] + (f" ({r['git_commit'][:8]})" if r["git_commit"] else "")
                                      for r in rs})
        out.append((t, json.loads(setting), es))
    return out


def _mean(xs) -> float:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else math.nan


def report_md(db, task: str | None = None) -> str:
    """The leaderboard as markdown: per task and setting, the cells ranked by mean test metric over all
    recorded seeds, with who ran them, when and on which code version."""
    from .board import rank_task

    boards = entries(db, task)
    lines = [f"# lstmc leaderboard ({Path(db).name})", ""]
    if not boards:
        return "\n".join(lines + ["No runs recorded" + (f" for task {task}" if task else "") + " yet.", ""])
    for t, setting, es in sorted(boards, key=lambda b: (b[0], _canonical(b[1]))):
        e0 = es[0]
        arrow = "higher" if e0.higher_is_better else "lower"
        shown = {k: v for k, v in setting.items() if v is not None and k != "task"}
        lines += [f"## {t} — test {e0.metric} ({arrow} is better; {e0.baseline_name} baseline {e0.baseline:.4f})",
                  "", "Setting: `" + " ".join(f"{k}={v}" for k, v in sorted(shown.items())) + "`", "",
                  "| rank | cell | test metric (mean ± std) | seeds | params | hidden | steps/s | by | days | version |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r, e in rank_task(es):
            spread = f"{e.std:.4f}" if len(e.values) > 1 else "n/a"
            lines.append(f"| {r} | {e.cell} | {e.mean:.4f} ± {spread} | {len(e.values)} | {e.params} | {e.hidden} | "
                         f"{e.steps_per_s:.1f} | {', '.join(e.who)} | {', '.join(e.days)} | "
                         f"{', '.join(e.versions)} |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- CLI

def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="print the persistent leaderboard an arena recorded with --db",
                       description="Rank every cell recorded in a leaderboard file (lstmc arena ... --db FILE), "
                                   "per task and setting, over all recorded seeds, people and days.")
    p.add_argument("--db", required=True, help="the SQLite file lstmc arena --db wrote")
    p.add_argument("--task", default=None, help="only this task (default: every task in the file)")
    p.add_argument("--out", default=None, help="also write the board as markdown (FILE.md) and HTML (FILE.html)")
    p.set_defaults(fn=cli_main)


def cli_main(args) -> int:
    if not Path(args.db).is_file():
        raise FileNotFoundError(f"no leaderboard at {args.db}: an arena run with --db {args.db} creates it")
    md = report_md(args.db, args.task)
    print(md)
    if args.out:
        from .board import report_html

        from .files import atomic_write

        base = Path(args.out)
        atomic_write(base.with_suffix(".md"), md.encode())
        atomic_write(base.with_suffix(".html"), report_html(md, [], title="lstmc leaderboard").encode())
        print(f"wrote {base.with_suffix('.md')} and {base.with_suffix('.html')}")
    return 0
