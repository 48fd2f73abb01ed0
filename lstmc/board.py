"""What the arena and the persistent leaderboard share: `Entry` (one cell on one task, over seeds),
the ranking with its one tie rule (`rank_task`, `places`, `overall`) and `report_html` (a markdown
report as a standalone HTML page). Pure logic, no training, no files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Entry:
    """One cell on one task: the aggregate over seeds."""
    cell: str
    task: str
    metric: str
    higher_is_better: bool
    values: list[float]                 # test metric per seed
    baseline: float
    baseline_name: str
    params: int
    hidden: int
    steps_per_s: float
    wall_time: float
    curves: list = field(default_factory=list)    # per seed: [(step, val_metric)]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


# ------------------------------------------------------------------------------ ranking (pure logic)

def rank_task(entries: list[Entry]) -> list[tuple[int, Entry]]:
    """Rank the entries of one task by mean test metric (ties share a rank; NaN ranks last)."""
    if not entries:
        return []
    hib = entries[0].higher_is_better

    def key(e):
        m = e.mean
        if math.isnan(m):
            return math.inf
        return -m if hib else m

    ordered = sorted(entries, key=lambda e: (key(e), e.cell))
    return list(zip(places([key(e) for e in ordered]), ordered))


def places(sorted_keys: list) -> list[int]:
    """1-based places of sorted keys, equal keys sharing the first place of their run (1, 1, 3):
    the one tie rule of every arena table (per task and overall)."""
    out, place, prev = [], 0, object()
    for i, k in enumerate(sorted_keys):
        if k != prev:
            place, prev = i + 1, k
        out.append(place)
    return out


def overall(entries: list[Entry]) -> list[tuple[str, float, dict]]:
    """Mean rank over tasks per cell (a cell missing a task gets that task's last rank + 1)."""
    tasks = sorted({e.task for e in entries})
    cells = sorted({e.cell for e in entries})
    ranks = {c: {} for c in cells}
    for t in tasks:
        ranked = rank_task([e for e in entries if e.task == t])
        worst = max((r for r, _ in ranked), default=0) + 1
        for c in cells:
            ranks[c][t] = next((r for r, e in ranked if e.cell == c), worst)
    board = [(c, float(np.mean(list(ranks[c].values()))), ranks[c]) for c in cells]
    return sorted(board, key=lambda row: (row[1], row[0]))


def report_html(md: str, images: list[str], title: str = "lstmc arena") -> str:
    """The markdown report as a standalone HTML page: headings, paragraphs (inline `code` kept) and
    each markdown table as one <table> with a header row (tests/test_arena.py parses the result)."""
    import html
    import re

    def inline(text: str) -> str:
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))

    def table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
        body = "\n".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"

    blocks, rows = [], None
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):      # the |---| separator row
                rows = (rows or []) + [[c.strip() for c in line.strip().strip("|").split("|")]]
            continue
        if rows:
            blocks.append(table(rows))
            rows = None
        if line.startswith("## "):
            blocks.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            blocks.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.strip():
            blocks.append(f"<p>{inline(line)}</p>")
    text = "\n".join(blocks)
    imgs = "\n".join(f'<figure><img src="{html.escape(i)}" alt="{html.escape(i)}"></figure>' for i in images)
    curves = f"<h2>Learning curves</h2>\n{imgs}\n" if images else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
            f"{text}\n{curves}</body></html>\n")
