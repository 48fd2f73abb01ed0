"""The persistent arena leaderboard (lstmc/leaderboard.py): records accumulate across runs, people
and days without double counting; entries are compared only within one setting; bad files are
refused untouched; several processes can record into one file at once."""

import json
import math
import sqlite3
import subprocess
import sys

import pytest

from lstmc import leaderboard as lb

MACHINE_A = {"cpu": "A", "cores": 2}
MACHINE_B = {"cpu": "B", "cores": 64}


def run(cell, seed, test_metric, steps=100, hidden=8, task="adding", params=100):
    """An arena per-seed row and its training config (what run_arena passes to record)."""
    row = {"cell": cell, "test_metric": test_metric, "val_metric": test_metric, "baseline": 0.17,
           "baseline_name": "predict-the-mean", "metric": "mse", "higher_is_better": False, "params": params,
           "steps": steps, "steps_per_s": 50.0, "wall_time": 2.0}
    config = {"cell": cell, "task": task, "length": 50, "steps": steps, "hidden": hidden, "seed": seed, "lr": 0.01,
              "batch": 64, "optimizer": "adam", "out": None, "progress": False, "threads": None}
    return row, config


def board(db, task=None):
    return {(t, json.dumps(s, sort_keys=True)): {e.cell: e for e in es} for t, s, es in lb.entries(db, task)}


def test_runs_accumulate_over_sessions_and_are_never_counted_twice(tmp_path):
    db = tmp_path / "board.sqlite"
    assert lb.record(db, *run("lstm", 0, 0.01), "src-lstm", MACHINE_A)
    assert lb.record(db, *run("gru", 0, 0.02), "src-gru", MACHINE_A)
    # the same run recorded again (a resumed arena) is a no-op
    assert not lb.record(db, *run("lstm", 0, 0.01), "src-lstm", MACHINE_A)
    # another day, another machine: a second seed of lstm and a new cell join the same board
    assert lb.record(db, *run("lstm", 1, 0.03), "src-lstm", MACHINE_B)
    assert lb.record(db, *run("mine", 0, 0.005), "src-mine", MACHINE_B)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
    (key, cells), = board(db).items()
    assert key[0] == "adding" and set(cells) == {"lstm", "gru", "mine"}
    assert cells["lstm"].values == [0.01, 0.03] and math.isclose(cells["lstm"].mean, 0.02)
    md = lb.report_md(db)
    ranks = [line.split("|")[1:3] for line in md.splitlines() if line.startswith("| ") and "rank" not in line]
    assert [(r.strip(), c.strip()) for r, c in ranks] == [("1", "mine"), ("2", "gru"), ("2", "lstm")]  # a tie


@pytest.mark.parametrize("change, separate", [
    ({"steps": 200}, True),           # a longer budget is another competition
    ({"hidden": 64}, False),          # the arena picks hidden sizes: same board
    ({"seed": 5}, False),
    ({"task": "copy"}, True),
])
def test_only_runs_of_one_setting_are_ranked_together(tmp_path, change, separate):
    db = tmp_path / "b.sqlite"
    lb.record(db, *run("lstm", 0, 0.01), "src", MACHINE_A)
    row, cfg = run("gru", 0, 0.02)
    cfg.update(change)
    lb.record(db, row, cfg, "src2", MACHINE_A)
    assert len(lb.entries(db)) == (2 if separate else 1)


def test_two_cells_sharing_a_name_are_two_entries(tmp_path):
    db = tmp_path / "b.sqlite"
    lb.record(db, *run("tiny", 0, 0.01), "cell tiny\nstate h\nh' = tanh(W @ x + U @ h + b)\n", MACHINE_A)
    lb.record(db, *run("tiny", 0, 0.02), "cell tiny\nstate h\nh' = relu(W @ x + U @ h + b)\n", MACHINE_A)
    (_, cells), = board(db).items()
    assert len(cells) == 2 and all(name.startswith("tiny@") for name in cells)


def test_a_failed_run_is_stored_as_null_and_ranks_last(tmp_path):
    db = tmp_path / "b.sqlite"
    lb.record(db, *run("lstm", 0, float("nan")), "a", MACHINE_A)
    lb.record(db, *run("gru", 0, 0.5), "b", MACHINE_A)
    md = lb.report_md(db)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "rank" not in line]
    assert "gru" in rows[0] and "lstm" in rows[1] and "nan" in rows[1]


def _bytes(p):
    return p.read_bytes()


def _foreign_sqlite(p):
    with sqlite3.connect(p) as con:
        con.execute("CREATE TABLE notes (x TEXT)")
        con.execute("INSERT INTO notes VALUES ('keep me')")


def _newer_board(p):
    lb.connect(p).close()
    with sqlite3.connect(p) as con:
        con.execute(f"PRAGMA user_version = {lb.SCHEMA_VERSION + 1}")


def _marked_but_foreign(p):
    with sqlite3.connect(p) as con:         # our application_id, someone else's table
        con.execute(f"PRAGMA application_id = {lb.APP_ID}")
        con.execute("CREATE TABLE runs (run_key TEXT PRIMARY KEY, note TEXT)")


@pytest.mark.parametrize("plant, says", [
    (_marked_but_foreign, "its table runs lacks recorded_at, task, setting"),
    (lambda p: p.write_bytes(b"\x00garbage, not a database" * 100), "not an lstmc leaderboard"),
    (lambda p: p.write_text("a,b\n1,2\n"), "not an lstmc leaderboard"),
    (_foreign_sqlite, "not an lstmc leaderboard"),
    (_newer_board, "newer lstmc"),
])
def test_a_file_that_is_not_a_leaderboard_is_refused_untouched(tmp_path, plant, says):
    p = tmp_path / "board.sqlite"
    plant(p)
    before = _bytes(p)
    with pytest.raises(lb.LeaderboardError, match=says):
        lb.record(p, *run("lstm", 0, 0.1), "src", MACHINE_A)
    with pytest.raises(lb.LeaderboardError, match=says):
        lb.entries(p)
    assert _bytes(p) == before


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(lb.LeaderboardError, match="is a directory"):
        lb.connect(tmp_path)
    with pytest.raises(lb.LeaderboardError, match="does not exist"):
        lb.connect(tmp_path / "nowhere" / "b.sqlite")
    r = subprocess.run([sys.executable, "-m", "lstmc", "leaderboard", "--db", str(tmp_path / "none.sqlite")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no leaderboard at" in r.stderr


_WRITER = """
import sys
from lstmc import leaderboard as lb
db, who = sys.argv[1], sys.argv[2]
for seed in range(40):
    row = {"cell": who, "test_metric": 0.1, "val_metric": 0.1, "baseline": 0.2, "baseline_name": "b", "metric": "mse",
           "higher_is_better": False, "params": 1, "steps": 1, "steps_per_s": 1.0, "wall_time": 1.0}
    cfg = {"cell": who, "task": "adding", "steps": 10, "hidden": 4, "seed": seed}
    assert lb.record(db, row, cfg, who, {"cpu": who})
"""


def test_two_processes_record_into_one_file_at_once(tmp_path):
    db = tmp_path / "shared.sqlite"
    lb.connect(db).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), who], stderr=subprocess.PIPE, text=True)
             for who in ("alice", "bob")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    (_, cells), = board(db).items()
    assert {c: len(e.values) for c, e in cells.items()} == {"alice": 40, "bob": 40}


_CREATOR = """
import sys, time
from lstmc import leaderboard as lb
db, who, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
row = {"cell": who, "test_metric": 0.1, "val_metric": 0.1, "baseline": 0.2, "baseline_name": "b", "metric": "mse",
       "higher_is_better": False, "params": 1, "steps": 1, "steps_per_s": 1.0, "wall_time": 1.0}
assert lb.record(db, row, {"cell": who, "task": "adding", "steps": 10, "hidden": 4, "seed": 0}, who, {"cpu": who})
"""


def test_processes_creating_one_new_file_at_once_all_record(tmp_path):
    """Arenas started together on a --db that does not exist yet: one creates the tables, the others
    wait for it and record (before, the others failed with 'table runs already exists')."""
    import time

    for round_ in range(3):
        db = tmp_path / f"new{round_}.sqlite"
        start = time.time() + 4.0               # past every process's imports: they open the file together
        procs = [subprocess.Popen([sys.executable, "-c", _CREATOR, str(db), who, str(start)], stderr=subprocess.PIPE,
                                  text=True) for who in ("a", "b", "c", "d")]
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()[-500:]
        (_, cells), = board(db).items()
        assert sorted(cells) == ["a", "b", "c", "d"]


@pytest.mark.slow
def test_arena_db_accumulates_two_arenas_and_the_cli_prints_the_board(tmp_path):
    from test_arena import _StrictHTML

    db = tmp_path / "board.sqlite"
    cell = tmp_path / "tiny.cell"
    cell.write_text("cell tiny\nstate h\nh' = tanh(W @ x + U @ h + b)\n")
    common = ["--tasks", "adding", "--steps", "6", "--seeds", "1", "--hidden", "8", "--no-progress", "--db", str(db)]
    first = [sys.executable, "-m", "lstmc", "arena", "gru", str(cell), "--out", str(tmp_path / "a"), *common]
    second = [sys.executable, "-m", "lstmc", "arena", "lstm", "--out", str(tmp_path / "b"), *common]
    for cmd in (first, second, first):           # the third resumes the first: nothing is recorded twice
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT cell, version, config FROM runs ORDER BY cell").fetchall()
    assert [c for c, _, _ in rows] == ["gru", "lstm", "tiny"]
    assert all(json.loads(cfg)["steps"] == 6 for _, _, cfg in rows)
    arena_a = json.loads((tmp_path / "a" / "arena.json").read_text())
    (_, cells), = board(db).items()
    for e in arena_a["entries"]:                  # the board holds exactly what the arena measured
        assert cells[e["cell"]].values == e["values"]
    r = subprocess.run([sys.executable, "-m", "lstmc", "leaderboard", "--db", str(db), "--out",
                        str(tmp_path / "board")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert all(c in r.stdout for c in ("gru", "lstm", "tiny")) and "Setting: `" in r.stdout
    doc = _StrictHTML((tmp_path / "board.html").read_text())
    assert doc.counts["table"] == 1 and "|" not in "".join(doc.text)
