"""`lstmc tune`: hyperparameter search over cells and training settings with Optuna.

    lstmc tune --task adding --cells lstm,gru,mgu --trials 30 --steps 600
    lstmc tune --task copy --storage postgresql://user@db-host/optuna --trials 20    # on every machine

What is searched (one trial = one in-process `lstmc.train.train` run on the task):

    cell       categorical over --cells (default lstm,gru)
    hidden     integer, log scale, in --hidden-range (default 16..128)
    layers     1 or 2
    dropout    uniform in [0, 0.5], only when layers = 2: dropout acts between recurrent layers, so
               with one layer it would be a parameter with no effect (a conditional parameter: the
               1-layer trials have none, and train with dropout 0)
    lr         log scale in [1e-4, 5e-2]
    clip       gradient-norm clip, log scale in [0.1, 10]
    schedule   none, step, cosine or plateau (lstmc.train.config.SCHEDULES)

Everything else (steps, batch, eval-every, length, optimizer adam, seed) is the same for every
trial: the trials differ only by their hyperparameters, and every trial trains with the same
--seed. The samplers: `tpe` (default, Optuna's TPESampler), `random` (RandomSampler), `grid`
(GridSampler over GRID below, with `hidden` at the two ends of --hidden-range and `cell` over
--cells; 48 points for two cells; the study stops once the grid is done).

The objective is the best validation metric of the run (`TrainResult.val_metric`), minimised or
maximised as the task says (`Task.higher_is_better`); the test metric is only recorded. Pruning:
after every evaluation the run reports its validation metric (`trial.report`) through train's
`on_evaluate` hook; when Optuna's MedianPruner says so (the value is worse than the median of the
earlier trials at the same step; not before 5 trials have finished, nor in the first quarter of the
steps, nor at the last evaluation, which ends the run anyway), the hook stops the run and the trial
ends as PRUNED. A run whose training loss or validation metric becomes NaN/infinite (it diverged:
too high a learning rate, too weak a clip) also ends as PRUNED, with user attr `outcome` =
"diverged" and the reason in `reason`, so that the study goes on and TPE learns to avoid that
region (it ranks pruned trials below completed ones; failed trials it would ignore). A
RuntimeError in training (out of memory, a backend failure) fails that trial only (outcome
"error") and the worker goes on; any other exception is a bug and stops it. Each trial keeps, as
user attrs: `config` (the full resolved TrainConfig as plain data), `test_metric`, `best_step`,
`steps_run`, `outcome` (complete, pruned, diverged, error or interrupted), `reason` and `worker`
(hostname:pid of the process that ran it).

Storage and several workers: the study lives in an Optuna RDB storage, by default the SQLite file
OUT/study.db; `--storage URL` takes any SQLAlchemy URL Optuna accepts. Every process opens the
same study (`load_if_exists=True`) and runs its own --trials against it; Optuna's storage is the
only coordination (trial numbers, the trials' history that the sampler and pruner read). So, to
use 4 cores of one machine, start 4 processes with the same --out (or --storage) and --study; for
several machines, point them all at a PostgreSQL or MySQL database:

    for i in 1 2 3 4; do lstmc tune --task adding --trials 10 --no-progress & done; wait

SQLite serialises writers: its connections wait up to 60 s for a lock (rather than failing with
"database is locked"), and creating the file and the study is done under a file lock so that
workers started together do not race on the tables. A heartbeat (every 60 s) lets Optuna mark the
trials of a worker that was killed as failed after 3 minutes, instead of running for ever; Ctrl-C
fails the current trial (outcome "interrupted"), writes the reports and exits with 130. The study
remembers the task, length, steps and eval-every it was created with and refuses a worker that
asks for different ones.

Seeds: with tpe and random, the sampler of trial n is seeded with (--seed, n). Trial numbers are
unique within a study, so parallel workers started with the same --seed never propose the same
random configurations, and a single-worker study is reproducible. The grid sampler uses --seed as
such (every worker must shuffle the grid the same way: it refers to grid points by index).

Outputs (OUT, written by each worker once its trials end, from the whole study so far, each file
atomically): best.txt (the best trial as a complete `lstmc train ...` command line: same cell,
seed, steps and every chosen hyperparameter; on the CPU it reproduces the trial's validation
metric exactly), summary.md (trial counts, the best trial, the top trials), trials.csv
(`study.trials_dataframe()`), optimization_history.png and param_importances.png (Optuna's
matplotlib plots; the importances need two completed trials whose parameters differ).

optuna is imported inside the functions that use it, so that `lstmc --help` does not pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import shlex
import socket
import sys
import time
import warnings
from pathlib import Path

from .files import atomic_write
from .tasks import TASKS, get_task
from .train import TrainConfig, train
from .train.config import SCHEDULES
from .train.loop import NonFiniteLossWarning

SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "none")

# The continuous search space (tpe and random).
LAYERS = (1, 2)
DROPOUT = (0.0, 0.5)        # only with 2 layers
LR = (1e-4, 5e-2)           # log scale
CLIP = (0.1, 10.0)          # log scale
HIDDEN = (16, 128)          # default --hidden-range, log scale

# The grid (--sampler grid); "cell" is --cells and "hidden" the two ends of --hidden-range. Every
# parameter of the search space is in it (GridSampler needs that); dropout has one value, so that
# the 1-layer points, which do not use it, are not run twice.
GRID = {
    "layers": [1, 2],
    "dropout": [0.2],
    "lr": [1e-3, 3e-3, 1e-2],
    "clip": [1.0],
    "schedule": ["none", "cosine"],
}

WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass
class TuneOptions:
    """What `lstmc tune` runs (the command's options)."""
    task: str
    cells: tuple[str, ...] = ("lstm", "gru")
    trials: int = 20                    # this worker's trials
    steps: int | None = None            # None: the task's default
    length: int | None = None
    eval_every: int | None = None
    hidden_range: tuple[int, int] = HIDDEN
    storage: str | None = None          # None: sqlite:///OUT/study.db
    study: str | None = None            # None: lstmc-TASK
    sampler: str = "tpe"
    pruner: str = "median"
    out: str = "tune"
    seed: int = 0
    timeout: float | None = None        # seconds; no new trial starts after it
    progress: bool = True

    def checked(self) -> "TuneOptions":
        """A copy with the defaults filled in (study name, storage, steps...) and every value checked;
        ValueError or FileNotFoundError (an unknown cell) with a one-line message otherwise."""
        from .build import load

        o = dataclasses.replace(self, cells=tuple(self.cells))
        if o.task not in TASKS:
            raise ValueError(f"unknown task {o.task!r}; choose one of {', '.join(TASKS)}")
        task = get_task(o.task, length=o.length)
        if not o.cells:
            raise ValueError("--cells is empty; give at least one cell, e.g. --cells lstm,gru")
        if len(set(o.cells)) != len(o.cells):
            raise ValueError(f"--cells names a cell twice: {','.join(o.cells)}")
        for cell in o.cells:
            load(cell)                      # FileNotFoundError naming the built-in cells
        if o.trials < 1:
            raise ValueError(f"--trials must be at least 1, got {o.trials}")
        if o.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {o.sampler!r}")
        if o.pruner not in PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)}, got {o.pruner!r}")
        if o.timeout is not None and not o.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {o.timeout}")
        lo, hi = o.hidden_range
        if not 1 <= lo <= hi:
            raise ValueError(f"--hidden-range must be LO,HI with 1 <= LO <= HI, got {lo},{hi}")
        probe = TrainConfig(task=o.task, length=o.length, steps=o.steps, eval_every=o.eval_every).resolved(task)
        o.steps, o.eval_every, o.length = probe.steps, probe.eval_every, probe.length
        o.study = o.study or f"lstmc-{o.task}"
        o.storage = o.storage or f"sqlite:///{Path(o.out) / 'study.db'}"
        return o


# ------------------------------------------------------------------------------ the search space

def suggest_config(trial, o: TuneOptions) -> TrainConfig:
    """The trial's TrainConfig: its hyperparameters drawn from the search space, the rest from `o`."""
    cell = trial.suggest_categorical("cell", list(o.cells))
    hidden = trial.suggest_int("hidden", o.hidden_range[0], o.hidden_range[1], log=True)
    layers = trial.suggest_int("layers", LAYERS[0], LAYERS[-1])
    dropout = trial.suggest_float("dropout", *DROPOUT) if layers > 1 else 0.0
    lr = trial.suggest_float("lr", *LR, log=True)
    clip = trial.suggest_float("clip", *CLIP, log=True)
    schedule = trial.suggest_categorical("schedule", list(SCHEDULES))
    return TrainConfig(cell=cell, task=o.task, length=o.length, hidden=hidden, layers=layers, dropout=dropout,
                       lr=lr, clip=clip, schedule=schedule, steps=o.steps, eval_every=o.eval_every, seed=o.seed,
                       progress=o.progress)


def grid_space(o: TuneOptions) -> dict:
    """GridSampler's search space: GRID, the cells and the two ends of the hidden range."""
    lo, hi = o.hidden_range
    return {"cell": list(o.cells), "hidden": sorted({lo, hi}), **GRID}


def make_sampler(o: TuneOptions):
    import numpy as np
    import optuna

    if o.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(o), seed=o.seed)
    cls = optuna.samplers.TPESampler if o.sampler == "tpe" else optuna.samplers.RandomSampler

    class TrialSeeded(optuna.samplers.BaseSampler):
        """`cls`, seeded afresh for every trial with (seed, trial number). TPE and random keep no
        state but their random generator (they read the history from the storage), so this is the
        same search, except that workers sharing a study never draw the same numbers."""

        def __init__(self):
            self.inner = cls(seed=o.seed)

        def before_trial(self, study, trial):
            sub = int(np.random.SeedSequence([o.seed, trial.number]).generate_state(1)[0])
            self.inner = cls(seed=sub)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.inner.reseed_rng()

    return TrialSeeded()


def make_pruner(o: TuneOptions):
    import optuna

    if o.pruner == "none":
        return optuna.pruners.NopPruner()
    # Not before 5 trials have finished (a median of fewer is noise), nor in the first quarter of a
    # run (early validation metrics say little about the end, and the schedules have not yet acted).
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=o.steps // 4)


# ----------------------------------------------------------------------------------- the study

def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        return Path(u.database)
    return None


def display_url(url: str) -> str:
    """The URL without its password (for messages and summary.md)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:   # not a URL at all: show it as given
        return url


@contextlib.contextmanager
def _init_lock(db: Path | None):
    """An exclusive lock beside a SQLite file while the tables and the study are created, so that
    workers started at the same moment do not race on `CREATE TABLE` (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if db is None or fcntl is None:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_study(o: TuneOptions, pruner=None):
    """Create the study or join it (load_if_exists); ValueError with one line when the storage
    cannot be opened or the study was made for other settings. `pruner` replaces make_pruner's."""
    import optuna

    try:
        db = _sqlite_path(o.storage)
    except Exception as e:
        raise ValueError(f"cannot open the storage {display_url(o.storage)}: {_one_line(e)}") from None
    if db is not None and o.storage == f"sqlite:///{Path(o.out) / 'study.db'}":
        db.parent.mkdir(parents=True, exist_ok=True)         # the default place: made for the user
    elif db is not None and not db.parent.is_dir():
        raise ValueError(f"cannot open the storage {display_url(o.storage)}: the directory {db.parent} does not exist")
    engine = {"connect_args": {"timeout": 60}} if db is not None else {"pool_pre_ping": True}
    direction = "maximize" if get_task(o.task, length=o.length).higher_is_better else "minimize"
    with _init_lock(db):
        try:
            # The heartbeat marks the trials of a killed worker (kill -9, a lost machine) as failed
            # after the grace period, instead of leaving them running for ever.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(o.storage, engine_kwargs=engine, heartbeat_interval=60,
                                                     grace_period=180)
            study = optuna.create_study(storage=storage, study_name=o.study, direction=direction,
                                        load_if_exists=True, sampler=make_sampler(o),
                                        pruner=pruner if pruner is not None else make_pruner(o))
        except Exception as e:   # any driver's, SQLAlchemy's or Optuna's error: all mean "cannot open"
            raise ValueError(f"cannot open the storage {display_url(o.storage)}: {_one_line(e)}") from None
        wanted = {"task": o.task, "length": o.length, "steps": o.steps, "eval_every": o.eval_every}
        had = {k: study.user_attrs[k] for k in wanted if k in study.user_attrs}
        if had and had != {k: wanted[k] for k in had}:
            made = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in had.items())
            asked = ", ".join(f"{k.replace('_', '-')} {wanted[k]}" for k in had)
            raise ValueError(f"study {o.study!r} was made for {made}; this run asks for {asked}: give another "
                             f"--study name")
        for k, v in wanted.items():
            if k not in had:
                study.set_user_attr(k, v)
    if study.direction.name.lower() != direction:
        raise ValueError(f"study {o.study!r} is set to {study.direction.name.lower()}, but task {o.task}'s "
                         f"metric is to {direction}: give another --study name")
    return study


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------- the objective

def make_objective(o: TuneOptions):
    """The objective of one trial: draw a config, train it in this process, report every validation
    to the pruner (stopping the run when it prunes), return the best validation metric."""
    import optuna

    metric = get_task(o.task, length=o.length).metric

    def objective(trial) -> float:
        cfg = suggest_config(trial, o)
        trial.set_user_attr("worker", WORKER)
        stop = {}                           # why on_evaluate stopped the run: "pruned" or "diverged"

        def on_evaluate(step: int, value: float):
            if not math.isfinite(value):
                stop["diverged"] = f"validation {metric} became {value} at step {step}"
                return stop["diverged"]
            trial.report(value, step)
            if step < o.steps and trial.should_prune():     # the last evaluation ends the run anyway
                stop["pruned"] = f"pruned at step {step}: validation {metric} {value:.4g} is worse than the median"
                return stop["pruned"]
            return None

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonFiniteLossWarning)   # recorded below, as the trial's outcome
                res = train(cfg, on_evaluate=on_evaluate)
        except KeyboardInterrupt:       # Ctrl-C: this trial fails (nan), no other starts, tune() re-raises
            trial.set_user_attr("outcome", "interrupted")
            trial.set_user_attr("reason", "interrupted (SIGINT)")
            objective.interrupted = True
            trial.study.stop()
            return math.nan
        except RuntimeError as e:       # recorded here; Optuna fails the trial and logs the traceback
            trial.set_user_attr("outcome", "error")
            trial.set_user_attr("reason", _one_line(e))
            raise
        for k, v in (("config", res.config), ("test_metric", res.test_metric), ("best_step", res.best_step),
                     ("steps_run", res.steps), ("wall_time", round(res.wall_time, 3)), ("params", res.params)):
            trial.set_user_attr(k, v)
        if res.diverged or "diverged" in stop or not math.isfinite(res.val_metric):
            reason = (res.stop_reason if res.diverged else stop.get("diverged")
                      or f"no finite validation {metric} (best {res.val_metric})")
            trial.set_user_attr("outcome", "diverged")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        if "pruned" in stop:
            trial.set_user_attr("outcome", "pruned")
            trial.set_user_attr("reason", stop["pruned"])
            raise optuna.TrialPruned(stop["pruned"])
        trial.set_user_attr("outcome", "complete")
        trial.set_user_attr("reason", res.stop_reason)
        return float(res.val_metric)

    objective.interrupted = False
    return objective


def tune(options: TuneOptions, pruner=None):
    """Run this worker's trials against the (shared) study; returns the study. Reports are written
    by `write_reports`. `pruner` replaces the --pruner one (tests use one that always prunes)."""
    import optuna

    o = options.checked()
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # one line per trial is printed below
    study = open_study(o, pruner=pruner)
    metric = get_task(o.task, length=o.length).metric
    print(f"study {o.study} in {display_url(o.storage)}: {o.sampler} sampler, {o.pruner} pruner, {o.trials} trials "
          f"by worker {WORKER}; {_count(len(study.trials), 'trial')} there already", flush=True)
    objective = make_objective(o)
    # A RuntimeError in training (out of memory, a backend failure) fails that trial only (the
    # objective records it as outcome "error") and the worker goes on. Other exceptions are bugs: they stop it.
    study.optimize(objective, n_trials=o.trials, timeout=o.timeout, catch=(RuntimeError,),
                   callbacks=[lambda s, t: print(trial_line(t, metric), flush=True)])
    if objective.interrupted:
        raise KeyboardInterrupt
    return study


def trial_line(t, metric: str) -> str:
    """One line about a finished trial."""
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    if t.state.name == "COMPLETE":
        what = f"validation {metric} {t.value:.4g} (test {t.user_attrs.get('test_metric', math.nan):.4g})"
    else:
        what = f"{t.state.name.lower()}: {reason(t)}"
    took = f" [{t.duration.total_seconds():.1f} s]" if t.duration else ""
    return f"trial {t.number} {what}; {params}{took}"


def reason(t) -> str:
    """Why a trial was pruned or failed (user attr `reason`; "" for a trial still running)."""
    return t.user_attrs.get("reason", "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------- reports

def train_command(config: dict) -> str:
    """`lstmc train ...` that repeats a trial: every option its TrainConfig (as plain data) depends
    on, floats written exactly (repr)."""
    def val(v):
        return repr(float(v)) if isinstance(v, float) else str(v)

    args = ["lstmc", "train"]
    for key in ("cell", "task", "length", "hidden", "layers", "dropout", "steps", "batch", "lr", "optimizer",
                "clip", "schedule", "weight_decay", "seed", "eval_every"):
        args += [f"--{key.replace('_', '-')}", val(config[key])]
    if config.get("embed"):
        args += ["--embed", val(config["embed"])]
    if config.get("bidirectional"):
        args.append("--bidirectional")
    if config.get("backend", "auto") != "auto":
        args += ["--backend", config["backend"]]
    return shlex.join(args)


def write_reports(study, o: TuneOptions) -> list[str]:
    """best.txt, summary.md, trials.csv and the plots in OUT, from the whole study; the lines to print."""
    from optuna.trial import TrialState

    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(o.task, length=o.length)
    trials = study.get_trials(deepcopy=False)
    by = {s: [t for t in trials if t.state == s] for s in TrialState}
    complete = by[TrialState.COMPLETE]
    diverged = sum(t.user_attrs.get("outcome") == "diverged" for t in by[TrialState.PRUNED])
    counts = (f"{_count(len(trials), 'trial')}: {len(complete)} complete, {len(by[TrialState.PRUNED])} pruned "
              f"({diverged} of them diverged), {len(by[TrialState.FAIL])} failed, "
              f"{len(by[TrialState.RUNNING])} running")
    arrow = "higher" if task.higher_is_better else "lower"
    lines = [f"study {study.study_name}: {counts}"]
    md = [f"# lstmc tune: {study.study_name}", "",
          f"- task: {o.task} (length {o.length}), {o.steps} steps, evaluation every {o.eval_every} steps, "
          f"seed {o.seed}",
          f"- objective: best validation {task.metric} ({arrow} is better; {task.baseline_name} baseline "
          f"{task.baseline('val'):.4g})",
          f"- storage: {display_url(o.storage)}",
          f"- {counts}", ""]
    files = ["summary.md", "trials.csv"]
    if complete:
        best = study.best_trial
        cmd = train_command(best.user_attrs["config"])
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
        md += [f"| {k} | {_fmt(v)} |" for k, v in best.params.items()]
        md += ["", "Reproduce it:", "", "```", cmd, "```", "", "## Top trials", ""]
        names = sorted({k for t in complete for k in t.params}, key=list(grid_space(o)).index)
        md += ["| rank | trial | validation | test | " + " | ".join(names) + " | seconds | worker |",
               "|---" * (len(names) + 6) + "|"]
        ranked = sorted(complete, key=lambda t: -t.value if task.higher_is_better else t.value)
        for i, t in enumerate(ranked[:10], 1):
            cells = " | ".join(_fmt(t.params[k]) if k in t.params else "–" for k in names)
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
    plotted, skipped = _plots(study, o, out, complete)
    files += plotted
    lines += [f"no {name}: {why}" for name, why in skipped]
    lines.append(f"outputs in {out}: {' '.join(files)}")
    return lines


def _plots(study, o: TuneOptions, out: Path, complete) -> tuple[list[str], list[tuple[str, str]]]:
    """Optuna's matplotlib plots as PNG files (Agg); the files written, and (file, why) for the skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    target = f"validation {get_task(o.task, length=o.length).metric}"
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
                why = _one_line(e)
        skipped.append((name, why))
    return written, skipped


# ------------------------------------------------------------------------------- command line

def _cells(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _hidden_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two integers), got {text!r}") from None
    return lo, hi


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `tune` to the `lstmc` command's subparsers (sets fn=cli_main)."""
    p = subparsers.add_parser(
        "tune", help="hyperparameter search (Optuna) over cells and training settings on a task",
        description="Search cell, hidden size, layers, dropout, learning rate, gradient clipping and schedule "
                    "for the best validation metric of a task, with Optuna (TPE and median pruning by "
                    "default). Every process runs its --trials against one shared study: start several "
                    "with the same --out or --storage to search in parallel.")
    p.add_argument("--task", required=True, help=f"the task to tune for: {', '.join(TASKS)}")
    p.add_argument("--cells", type=_cells, default=("lstm", "gru"),
                   help="comma-separated cells to choose from: built-in names or .cell files (default lstm,gru)")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs (default 20)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every trial (task default)")
    p.add_argument("--length", type=int, default=None,
                   help="the task's sequence length, as for `lstmc train` (task default)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between validations, which are also the pruning points (task default)")
    p.add_argument("--hidden-range", type=_hidden_range, default=HIDDEN, metavar="LO,HI",
                   help=f"hidden sizes searched, log scale (default {HIDDEN[0]},{HIDDEN[1]}; grid: the two ends)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna RDB storage URL, e.g. postgresql://user:pw@host/db for several machines "
                        "(default sqlite:///OUT/study.db)")
    p.add_argument("--study", default=None, metavar="NAME", help="study name (default lstmc-TASK)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (default): Optuna's TPE; random; grid: a small fixed grid (see lstmc.tune.GRID)")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="median (default): stop trials worse than the median of earlier ones at the same step; "
                        "none")
    p.add_argument("--out", default="tune", metavar="DIR",
                   help="directory for study.db, best.txt, summary.md, trials.csv and the plots (default tune)")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of every trial, and the sampler's seed (default 0)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="start no new trial after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for each trial's training")
    p.set_defaults(fn=cli_main)
    return p


def options_from_args(args) -> TuneOptions:
    return TuneOptions(task=args.task, cells=args.cells, trials=args.trials, steps=args.steps, length=args.length,
                       eval_every=args.eval_every, hidden_range=args.hidden_range, storage=args.storage,
                       study=args.study, sampler=args.sampler, pruner=args.pruner, out=args.out, seed=args.seed,
                       timeout=args.timeout, progress=not args.no_progress)


def cli_main(args) -> int:
    """`lstmc tune`: run this worker's trials, write the reports, print a summary. 0 when the study has
    a best trial, 1 when none of its trials completed, 130 after Ctrl-C (the reports of the trials
    so far are written). Wrong options raise ValueError / FileNotFoundError (one line, exit 2)."""
    o = options_from_args(args).checked()
    status = 0
    t0 = time.perf_counter()
    try:
        study = tune(o)
    except KeyboardInterrupt:
        print("interrupted: writing the reports of the trials so far", file=sys.stderr)
        study = open_study(o)
        status = 130
    lines = write_reports(study, o)
    print("\n".join(lines))
    print(f"this worker: {time.perf_counter() - t0:.1f} s")
    if status == 0 and not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        status = 1
    return status


def main(argv=None) -> int:
    """`python -m lstmc.tune ...`: `lstmc tune ...` without the rest of the CLI (the word `tune` may be
    left out). Exit status 2, with one line on stderr, when an option is wrong."""
    p = argparse.ArgumentParser(prog="lstmc")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv if argv[:1] == ["tune"] else ["tune", *argv])
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"lstmc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
