"""`lstmc tune`'s reports: the line printed for each finished trial (`trial_line`), the `lstmc train`
command that repeats a trial (`train_command`), and the files written from the whole study
(`write_reports`: best.txt, summary.md, trials.csv and Optuna's plots), with the small formatting
helpers they share with lstmc.tune. The search itself is lstmc.tune, the entry point.

Nothing here imports lstmc.tune: the options object `o` handed to `write_reports` is lstmc.tune's
checked TuneOptions, used through its fields and its methods `load_task` (the Task every trial
trains on), `data_options` (--data and the data options as given) and `param_names` (the search
space's parameters, in order). optuna and matplotlib are imported inside the functions.
"""

from __future__ import annotations

import io
import math
import shlex
import warnings
from pathlib import Path

from .files import atomic_write
from .train.config import DATA_OPTIONS

# `lstmc train` options written by train_command, after the cell and the task or data file.
TRAIN_OPTIONS = ("length", "hidden", "layers", "dropout", "steps", "batch", "lr", "optimizer", "clip", "schedule",
                 "weight_decay", "seed", "eval_every")


# --------------------------------------------------------------------------------- small helpers

def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def reason(t) -> str:
    """Why a trial was pruned or failed (user attr `reason`; "" for a trial still running)."""
    return t.user_attrs.get("reason", "")


def display_url(url: str) -> str:
    """The URL without its password (for messages and summary.md)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # not a URL at all: show it as given
        return url


def trial_line(t, metric: str) -> str:
    """One line about a finished trial."""
    params = " ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
    if t.state.name == "COMPLETE":
        what = f"validation {metric} {t.value:.4g} (test {t.user_attrs.get('test_metric', math.nan):.4g})"
    else:
        what = f"{t.state.name.lower()}: {reason(t)}"
    took = f" [{t.duration.total_seconds():.1f} s]" if t.duration else ""
    return f"trial {t.number} {what}; {params}{took}"


# ----------------------------------------------------------------------------------- best.txt

def train_command(config: dict, data: dict | None = None) -> str:
    """`lstmc train ...` that repeats a trial: every option its TrainConfig (as plain data) depends
    on, floats written exactly (repr). A trial on a data file gets --data FILE and no --task; its
    data options are `data` ({"data": FILE, option: value} as given to `lstmc tune`, see
    TuneOptions.data_options) or, without it, those of the config as resolved (the same data)."""
    def val(v):
        return repr(float(v)) if isinstance(v, float) else str(v)

    args = ["lstmc", "train", "--cell", val(config["cell"])]
    if config.get("data") is None:
        args += ["--task", val(config["task"])]
    else:
        given = data if data is not None else {k: config[k] for k in ("data", *DATA_OPTIONS)}
        args += ["--data", str(given["data"])]
        for key in DATA_OPTIONS:
            if given.get(key) is not None:
                args += [f"--{key}", val(given[key])]
    for key in TRAIN_OPTIONS:
        args += [f"--{key.replace('_', '-')}", val(config[key])]
    if config.get("embed"):
        args += ["--embed", val(config["embed"])]
    if config.get("bidirectional"):
        args.append("--bidirectional")
    if config.get("backend", "auto") != "auto":
        args += ["--backend", config["backend"]]
    return shlex.join(args)


# -------------------------------------------------------------------------------------- reports

def target_line(o, task) -> str:
    """What the study tunes for (summary.md): the task and its length, or the data file."""
    if o.data is None:
        return f"task: {o.task} (length {o.length})"
    return f"data: {o.data} (sha256 {o.data_sha256[:12]}...): {task.description}"


def write_reports(study, o) -> list[str]:
    """best.txt, summary.md, trials.csv and the plots in OUT, from the whole study; the lines to
    print. `o` is the worker's checked TuneOptions."""
    from optuna.trial import TrialState

    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    task = o.load_task()
    trials = study.get_trials(deepcopy=False)
    by = {s: [t for t in trials if t.state == s] for s in TrialState}
    complete = by[TrialState.COMPLETE]
    diverged = sum(t.user_attrs.get("outcome") == "diverged" for t in by[TrialState.PRUNED])
    counts = (f"{plural(len(trials), 'trial')}: {len(complete)} complete, {len(by[TrialState.PRUNED])} pruned "
              f"({diverged} of them diverged), {len(by[TrialState.FAIL])} failed, "
              f"{len(by[TrialState.RUNNING])} running")
    arrow = "higher" if task.higher_is_better else "lower"
    lines = [f"study {study.study_name}: {counts}"]
    md = [f"# lstmc tune: {study.study_name}", "",
          f"- {target_line(o, task)}",
          f"- {o.steps} steps, evaluation every {o.eval_every} steps, seed {o.seed}",
          f"- objective: best validation {task.metric} ({arrow} is better; {task.baseline_name} baseline "
          f"{task.baseline('val'):.4g})",
          f"- storage: {display_url(o.storage)}",
          f"- {counts}", ""]
    files = ["summary.md", "trials.csv"]
    if complete:
        best = study.best_trial
        cmd = train_command(best.user_attrs["config"], o.data_options())
        atomic_write(out / "best.txt", (cmd + "\n").encode())
        files.insert(0, "best.txt")
        lines.append(f"best: trial {best.number}, validation {task.metric} {best.value:.4g} (test "
                     f"{best.user_attrs['test_metric']:.4g}; {task.baseline_name} baseline "
                     f"{task.baseline('test'):.4g})")
        lines.append(f"reproduce: {cmd}")
        md += ["## Best trial", "",
               f"Trial {best.number}: validation {task.metric} {best.value:.6g}, test {task.metric} "
               f"{best.user_attrs['test_metric']:.6g} (worker {best.user_attrs.get('worker', '?')}).", "",
               "| parameter | value |", "|---|---|"]
        md += [f"| {k} | {fmt(v)} |" for k, v in best.params.items()]
        md += ["", "Reproduce it:", "", "```", cmd, "```", "", "## Top trials", ""]
        names = sorted({k for t in complete for k in t.params}, key=o.param_names().index)
        md += ["| rank | trial | validation | test | " + " | ".join(names) + " | seconds | worker |",
               "|---" * (len(names) + 6) + "|"]
        ranked = sorted(complete, key=lambda t: -t.value if task.higher_is_better else t.value)
        for i, t in enumerate(ranked[:10], 1):
            cells = " | ".join(fmt(t.params[k]) if k in t.params else "–" for k in names)
            md.append(f"| {i} | {t.number} | {t.value:.4g} | {t.user_attrs.get('test_metric', math.nan):.4g} | "
                      f"{cells} | {t.duration.total_seconds():.1f} | {t.user_attrs.get('worker', '?')} |")
    else:
        lines.append("no completed trial yet: no best.txt")
        md.append("No completed trial yet.")
    stopped = by[TrialState.PRUNED] + by[TrialState.FAIL]
    if stopped:
        md += ["", "## Trials that did not complete", "", "| trial | state | outcome | reason |", "|---|---|---|---|"]
        md += [f"| {t.number} | {t.state.name.lower()} | {t.user_attrs.get('outcome', '')} | {reason(t)} |"
               for t in sorted(stopped, key=lambda t: t.number)]
    atomic_write(out / "summary.md", ("\n".join(md) + "\n").encode())
    atomic_write(out / "trials.csv", study.trials_dataframe().to_csv(index=False).encode())
    plotted, skipped = _plots(study, f"validation {task.metric}", out, complete)
    files += plotted
    lines += [f"no {name}: {why}" for name, why in skipped]
    lines.append(f"outputs in {out}: {' '.join(files)}")
    return lines


def _plots(study, target: str, out: Path, complete) -> tuple[list[str], list[tuple[str, str]]]:
    """Optuna's matplotlib plots as PNG files (Agg), `target` naming the objective; the files
    written, and (file, why) for the skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    plots = [("optimization_history.png", ovm.plot_optimization_history,
              None if complete else "no completed trial")]
    common = set.intersection(*(set(t.params) for t in complete)) if complete else set()
    varied = [k for k in sorted(common) if len({repr(t.params[k]) for t in complete}) > 1]
    why = ("parameter importances need at least 2 completed trials" if len(complete) < 2 else
           None if varied else "the completed trials all have the same parameters")
    plots.append(("param_importances.png", ovm.plot_param_importances, why))
    written, skipped = [], []
    for name, plot, why in plots:
        if why is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    ax = plot(study, target_name=target)
                fig = ax.figure
                buf = io.BytesIO()
                fig.set_size_inches(8, 5)
                fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
                plt.close(fig)
                atomic_write(out / name, buf.getvalue())
                written.append(name)
                continue
            except (ValueError, RuntimeError, ZeroDivisionError) as e:   # e.g. importances of a degenerate study
                why = one_line(e)
        skipped.append((name, why))
    return written, skipped
