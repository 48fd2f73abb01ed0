"""How a training model gets its cell's extra per-step inputs and sizes (`input_plan`): by name
from the task, the zoneout masks drawn by the model when the task has none, and a size of states
only (lstmp's P) from `--size P=N`, by default half the hidden size. Its own module so that both
the config (which records the sizes a run uses) and the models (which use them) can import it."""

from __future__ import annotations

from ..tasks import TASK_INPUTS, Task

# Zoneout rates z (the probability that a unit keeps its previous value) of the masks the model draws
# when the task does not provide them: Krueger et al. 2017's rates for LSTMs (cell 0.5, hidden 0.05).
ZONEOUT = {"keep_c": 0.5, "keep_h": 0.05}


def input_plan(cell, task: Task, hidden: int | None = None, sizes: dict | None = None) -> tuple[tuple, dict, dict]:
    """How a model of `cell` gets each extra input on `task`: (the names read from the task, {name:
    zoneout rate} of the masks the model draws, the cell's sizes {K: number}). A size is the width of
    the task input u[K] that declares it; a size only states have (lstmp's `state h[P]`) is
    `sizes[K]` (`--size P=64`), by default half the hidden size (at least 1). Raises a one-line
    ValueError for an input or size that neither the task nor the model provides."""
    from ..build import load

    c = load(cell)
    given = dict(sizes or {})
    for k, v in given.items():
        if k not in c.sizes:
            raise ValueError(f"--size {k}={v}: cell {c.name} declares " + (
                f"the sizes {', '.join(c.sizes)}" if c.sizes else "no sizes"))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--size {k}: a positive integer, got {v!r}")
    have = task.input_widths()
    from_task, zoneout = [], {}
    for u, size in c.inputs.items():
        if u in have:
            if (size is None) != (have[u] is None):
                raise ValueError(f"cell {c.name} reads input {_label(u, size)}, but task {task.name}'s {u} is "
                                 f"{'[N, T]' if have[u] is None else f'[N, T, {have[u]}]'}")
            from_task.append(u)
        elif size == "H" and u in ZONEOUT:
            zoneout[u] = ZONEOUT[u]
        else:
            why = f" (its size {size} is the width of the task's {u})" if size not in (None, "H") else ""
            raise ValueError(f"cell {c.name} reads input {_label(u, size)}{why}, which task {task.name} does not "
                             f"provide: " + _providers(u))
    sizes = {}
    for k in c.sizes:
        widths = {have[u] for u, size in c.inputs.items() if size == k}
        if not widths:                  # a size of states only: the model chooses it
            if k not in given and hidden is None:
                raise ValueError(f"cell {c.name} declares size {k} for a state: give it with --size {k}=N")
            sizes[k] = given.get(k, max(1, (hidden or 2) // 2))
            continue
        if k in given:
            raise ValueError(f"--size {k}: size {k} of cell {c.name} is the width of task {task.name}'s input, "
                             f"{widths.pop()}; leave it out")
        if len(widths) > 1:
            raise ValueError(f"cell {c.name}'s inputs of size {k} have different widths in task {task.name}: "
                             f"{sorted(widths)}")
        sizes[k] = widths.pop()
    return tuple(from_task), zoneout, sizes


def _label(u: str, size) -> str:
    return u if size is None else f"{u}[{size}]"


def _providers(u: str) -> str:
    """'train it on T, which provides u', or what the built-in tasks provide."""
    tasks = [t for t, names in TASK_INPUTS.items() if u in names]
    if tasks:
        return f"train it on {' or '.join(tasks)}, which provide{'s' if len(tasks) == 1 else ''} {u}"
    offer = "; ".join(f"{t} provides {', '.join(names)}" for t, names in TASK_INPUTS.items())
    return f"no built-in task provides {u} ({offer}; the model draws zoneout masks keep_c[H] and keep_h[H] itself)"
