"""`lstmc arena`: ranking and parameter matching on constructed results, and a tiny real run."""

import json
import math
import subprocess
import sys

import pytest

import lstmc
from lstmc import arena
from lstmc.arena import Entry


def E(cell, task, values, hib=False):
    return Entry(cell=cell, task=task, metric="m", higher_is_better=hib, values=values, baseline=1.0,
                 baseline_name="trivial", params=100, hidden=8, steps_per_s=1.0, wall_time=1.0)


def test_rank_lower_is_better_with_ties_and_nan():
    ranked = arena.rank_task([E("a", "t", [0.3, 0.5]), E("b", "t", [0.1]), E("c", "t", [0.4]),
                              E("d", "t", [math.nan]), E("e", "t", [0.1])])
    assert [(r, e.cell) for r, e in ranked] == [(1, "b"), (1, "e"), (3, "a"), (3, "c"), (5, "d")]


def test_rank_higher_is_better():
    ranked = arena.rank_task([E("a", "t", [0.9], hib=True), E("b", "t", [0.95], hib=True)])
    assert [e.cell for _, e in ranked] == ["b", "a"]


def test_overall_mean_rank_and_missing_task():
    entries = [E("a", "t1", [0.1]), E("b", "t1", [0.2]), E("a", "t2", [0.9], hib=True),
               E("b", "t2", [0.95], hib=True), E("c", "t1", [0.05])]
    board = arena.overall(entries)
    # t1: c=1 a=2 b=3; t2: b=1 a=2, c missing -> 3
    assert board == [("a", 2.0, {"t1": 2, "t2": 2}), ("b", 2.0, {"t1": 3, "t2": 1}),
                     ("c", 2.0, {"t1": 1, "t2": 3})]


class _StrictHTML:
    """Parse HTML with the standard library and check that every element is closed in order."""

    VOID = {"meta", "img", "br", "hr"}

    def __init__(self, text):
        from html.parser import HTMLParser

        self.stack, self.counts, self.text = [], {}, []
        outer = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                outer.counts[tag] = outer.counts.get(tag, 0) + 1
                if tag not in outer.VOID:
                    outer.stack.append(tag)

            def handle_endtag(self, tag):
                assert outer.stack and outer.stack[-1] == tag, f"</{tag}> closes {outer.stack[-1:]}"
                outer.stack.pop()

            def handle_data(self, data):
                outer.text.append(data)

        P().feed(text)
        assert not self.stack, f"unclosed: {self.stack}"


def test_report_html_is_valid_with_one_table_per_markdown_table():
    entries = [E("a", "t1", [0.1, 0.2]), E("b", "t1", [0.15]), E("a", "t2", [0.9], hib=True),
               E("b", "t2", [0.8], hib=True)]
    md = arena.report_md(entries, command="lstmc arena a b --tasks t1,t2")
    page = arena.report_html(md, ["curves_t1.png"])
    doc = _StrictHTML(page)
    separators = [line for line in md.splitlines() if line.startswith("|---")]
    assert doc.counts["table"] == len(separators) == 3          # two tasks and the overall board
    assert doc.counts["th"] > 0 and doc.counts["img"] == 1
    assert "|" not in "".join(doc.text) and "<code>lstmc arena a b --tasks t1,t2</code>" in page


def test_one_seed_has_no_spread_and_ties_share_a_place_everywhere():
    entries = [E("a", "t1", [0.1]), E("b", "t1", [0.2]), E("a", "t2", [0.2]), E("b", "t2", [0.1])]
    md = arena.report_md(entries)
    assert "0.1000 ± n/a" in md and "± 0.0000" not in md
    board = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert len(board) == 2 + 2         # a and b tie overall (mean rank 1.5): both in first place
    assert arena.places([1.0, 1.0, 2.0, 3.0, 3.0]) == [1, 1, 3, 4, 4]


def test_mean_and_std_over_seeds():
    e = E("a", "t", [1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.std == pytest.approx(1.0)
    assert E("a", "t", [1.0]).std == 0.0


def test_match_hidden_finds_the_closest_size():
    counts = {"small": lambda h: 4 * h * h, "big": lambda h: 8 * h * h}
    sizes = arena.match_hidden(["small", "big"], lambda c, h: counts[c](h), target=4 * 64 * 64)
    assert sizes["small"] == 64
    assert sizes["big"] in (45, 46)     # 8 * 45^2 = 16200, 8 * 46^2 = 16928; target 16384
    assert abs(counts["big"](sizes["big"]) - 16384) == min(abs(8 * h * h - 16384) for h in (45, 46))


def test_param_count_of_builtin_cells():
    # lstm: 4 W [H, I], 4 U [H, H], 8 biases [H]
    assert arena.rnn_param_count("lstm", 3, 5) == 4 * 5 * 3 + 4 * 25 + 8 * 5
    assert arena.rnn_param_count("gru", 3, 5) == 3 * 15 + 3 * 25 + 6 * 5


def test_matched_parameter_counts_are_close():
    sizes = arena.match_hidden(["lstm", "gru", "indrnn"], lambda c, h: arena.model_param_count(c, "adding", h),
                               arena.model_param_count("lstm", "adding", 32))
    counts = [arena.model_param_count(c, "adding", h) for c, h in sizes.items()]
    assert max(counts) / min(counts) < 1.1
    assert sizes["gru"] > 32 and sizes["indrnn"] > sizes["gru"]


def test_budget_parsing():
    assert arena._budget("120s") == 120 and arena._budget("2m") == 120 and arena._budget("90") == 90
    with pytest.raises(ValueError, match="--budget"):
        arena._budget("soon")


@pytest.mark.slow
def test_arena_cli_runs_writes_reports_and_resumes(tmp_path):
    cell = tmp_path / "tiny.cell"
    cell.write_text("cell tiny\nstate h\nh' = tanh(W @ x + U @ h + b)\n")
    cmd = [sys.executable, "-m", "lstmc", "arena", "gru", str(cell), "--tasks", "adding,digits", "--steps", "6",
           "--seeds", "2", "--hidden", "8", "--match-params", "--out", str(tmp_path / "a"), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "a"
    data = json.loads((out / "arena.json").read_text())
    assert {(e["cell"], e["task"]) for e in data["entries"]} == {(c, t) for c in ("gru", "tiny")
                                                                 for t in ("adding", "digits")}
    assert all(len(e["values"]) == 2 for e in data["entries"])
    assert [row["cell"] for row in data["overall"]] and (out / "arena.md").exists()
    html = (out / "arena.html").read_text()
    assert "<table>" in html and "curves_adding.png" in html and (out / "curves_adding.png").exists()
    # a second run reuses every finished run: same metrics, no retraining
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")} == stamp
    assert json.loads((out / "arena.json").read_text())["entries"] == data["entries"]


def test_match_hidden_gives_a_cell_with_heads_a_multiple_of_its_heads():
    """slstm_heads (4 heads) has hidden sizes that are multiples of 4 only: matching against lstm
    must not try (or return) any other."""
    heads = "examples/slstm_heads.cell"
    target = arena.model_param_count("lstm", "adding", 64)
    sizes = arena.match_hidden(["lstm", heads], lambda c, h: arena.model_param_count(c, "adding", h), target,
                               multiple_of=lambda c: lstmc.load(c).heads)
    assert sizes["lstm"] == 64 and sizes[heads] % 4 == 0
    near = [arena.model_param_count(heads, "adding", h) for h in (sizes[heads] - 4, sizes[heads], sizes[heads] + 4)]
    assert abs(near[1] - target) == min(abs(n - target) for n in near)
