"""`lstmc tune`: hyperparameter search over cells and training settings with Optuna.

    lstmc tune --task adding --cells lstm,gru,mgu --trials 30 --steps 600
    lstmc tune --task copy --storage postgresql://user@db-host/optuna --trials 20    # on every machine
    lstmc tune --data co2.csv --predict co2 --fillna ffill --trials 30              # your own data

What it tunes for: a built-in task (--task NAME) or your own CSV, Parquet or NPZ file (--data FILE,
with `lstmc train`'s data options --inputs --predict --label --sequence --horizon --split --fillna;
see lstmc.datafile), exactly one of the two. Both go through one path: the options make the
TrainConfig every trial shares (`TuneOptions.base_config`) and `lstmc.train.config.task_of` makes
its Task, as for `lstmc train`.

What is searched (one trial = one in-process `lstmc.train.train` run on the task or data file):

    cell       categorical over --cells (default lstm,gru)
    hidden     integer, log scale, in --hidden-range (default 16..128)
    layers     1 or 2
    dropout    uniform in [0, 0.5], only when layers = 2: dropout acts between recurrent layers, so
               with one layer it would be a parameter with no effect (a conditional parameter: the
               1-layer trials have none, and train with dropout 0)
    lr         log scale in [1e-4, 5e-2]
    clip       gradient-norm clip, log scale in [0.1, 10]
    schedule   none, step, cosine or plateau (lstmc.train.config.SCHEDULES)

Everything else (steps, batch, eval-every, length, optimizer adam, seed, the data file and its
options) is the same for every trial: the trials differ only by their hyperparameters, and every
trial trains with the same --seed. The samplers: `tpe` (default, Optuna's TPESampler), `random`
(RandomSampler), `grid` (GridSampler over GRID below, with `hidden` at the two ends of
--hidden-range and `cell` over --cells; 48 points for two cells; the study stops once the grid is
done).

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
asks for different ones; for a data file, it remembers the file's sha256 (not its path, which may
differ from machine to machine) and the data options as resolved (the column predicted, the
split...), and refuses a worker whose file or options differ. Every trial's config also carries the
sha256, so a file changed during the study fails its next trials rather than mixing two data sets.
The default study name is lstmc-TASK, or lstmc-STEM for --data STEM.csv.

Seeds: with tpe and random, the sampler of trial n is seeded with (--seed, n). Trial numbers are
unique within a study, so parallel workers started with the same --seed never propose the same
random configurations, and a single-worker study is reproducible. The grid sampler uses --seed as
such (every worker must shuffle the grid the same way: it refers to grid points by index).

Outputs (OUT, written by each worker once its trials end, from the whole study so far, each file
atomically, by lstmc.tune_report): best.txt (the best trial as a complete `lstmc train ...` command
line: same cell, seed, steps, every chosen hyperparameter, and --task or else --data FILE with the
data options this worker was given; on the CPU it reproduces the trial's validation metric
exactly), summary.md (what was tuned, trial counts, the best trial, the top trials), trials.csv
(`study.trials_dataframe()`), optimization_history.png and param_importances.png (Optuna's
matplotlib plots; the importances need two completed trials whose parameters differ).

optuna is imported inside the functions that use it, so that `lstmc --help` does not pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from .datafile import DEFAULT_WINDOW
from .tasks import TASKS, Task
from .train import TrainConfig, train
from .train.cli import add_data_arguments
from .train.config import DATA_OPTIONS, SCHEDULES, task_of
from .train.loop import NonFiniteLossWarning
from .tune_report import display_url, one_line, plural, train_command, trial_line, write_reports

__all__ = ["TuneOptions", "tune", "open_study", "write_reports", "train_command", "add_parser", "cli_main", "main",
           "GRID", "SAMPLERS", "PRUNERS"]

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
    """What `lstmc tune` runs (the command's options): a built-in `task` or a `data` file (exactly one;
    the data options as for TrainConfig, None: the file's default)."""
    task: str | None = None
    data: str | None = None             # a .csv, .parquet or .npz file (lstmc.datafile)
    inputs: str | None = None
    predict: str | None = None
    label: str | None = None
    sequence: str | None = None
    horizon: int | None = None
    split: str | None = None
    fillna: str | None = None
    cells: tuple[str, ...] = ("lstm", "gru")
    trials: int = 20                    # this worker's trials
    steps: int | None = None            # None: the task's default
    length: int | None = None
    eval_every: int | None = None
    hidden_range: tuple[int, int] = HIDDEN
    storage: str | None = None          # None: sqlite:///OUT/study.db
    study: str | None = None            # None: lstmc-TASK, or lstmc-STEM for a data file
    sampler: str = "tpe"
    pruner: str = "median"
    out: str = "tune"
    seed: int = 0
    timeout: float | None = None        # seconds; no new trial starts after it
    progress: bool = True
    data_sha256: str | None = None      # set by `checked`: the data file's sha256

    def checked(self) -> "TuneOptions":
        """A copy with the defaults filled in (study name, storage, steps...) and every value checked;
        ValueError or FileNotFoundError (an unknown cell or data file) with a one-line message otherwise."""
        from .build import load

        o = dataclasses.replace(self, cells=tuple(self.cells))
        if o.task is not None and o.data is not None:
            raise ValueError(f"--task {o.task} and --data {o.data} exclude each other: give one")
        if o.task is None and o.data is None:
            raise ValueError(f"nothing to tune for: give --task NAME ({', '.join(TASKS)}) or --data FILE")
        given = [f"--{k}" for k in DATA_OPTIONS if getattr(o, k) is not None]
        if o.data is None and given:
            raise ValueError(f"{', '.join(given)} describe a data file: give it with --data FILE, not --task")
        task = o.load_task()        # ValueError for an unknown task, DataError/FileNotFoundError for a file
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
        probe = o.base_config().resolved(task)
        o.steps, o.eval_every, o.length, o.data_sha256 = probe.steps, probe.eval_every, probe.length, probe.data_sha256
        o.study = o.study or f"lstmc-{o.task if o.data is None else Path(o.data).stem}"
        o.storage = o.storage or f"sqlite:///{Path(o.out) / 'study.db'}"
        return o

    def base_config(self) -> TrainConfig:
        """The TrainConfig every trial shares (a trial adds its hyperparameters): the task, or the data
        file with its options (and, once checked, its sha256), length, steps, evaluations, seed."""
        target = {"task": self.task} if self.data is None else {"data": self.data, "data_sha256": self.data_sha256}
        return TrainConfig(**target, **{k: getattr(self, k) for k in DATA_OPTIONS}, length=self.length,
                           steps=self.steps, eval_every=self.eval_every, seed=self.seed, progress=self.progress)

    def load_task(self) -> Task:
        """The Task every trial trains on: the built-in task or the data file, by `task_of` as for
        `lstmc train` (cached: a data file is only read and hashed again, not parsed)."""
        return task_of(self.base_config())

    def data_options(self) -> dict | None:
        """--data FILE and the data options as given ({"data": FILE, option: value}); None for a task."""
        if self.data is None:
            return None
        return {"data": self.data, **{k: getattr(self, k) for k in DATA_OPTIONS if getattr(self, k) is not None}}

    def param_names(self) -> list[str]:
        """The search space's parameters, in order (the columns of summary.md's table)."""
        return list(grid_space(self))


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
    return dataclasses.replace(o.base_config(), cell=cell, hidden=hidden, layers=layers, dropout=dropout, lr=lr,
                               clip=clip, schedule=schedule)


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
        raise ValueError(f"cannot open the storage {display_url(o.storage)}: {one_line(e)}") from None
    if db is not None and o.storage == f"sqlite:///{Path(o.out) / 'study.db'}":
        db.parent.mkdir(parents=True, exist_ok=True)         # the default place: made for the user
    elif db is not None and not db.parent.is_dir():
        raise ValueError(f"cannot open the storage {display_url(o.storage)}: the directory {db.parent} does not exist")
    engine = {"connect_args": {"timeout": 60}} if db is not None else {"pool_pre_ping": True}
    task = o.load_task()
    direction = "maximize" if task.higher_is_better else "minimize"
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
            raise ValueError(f"cannot open the storage {display_url(o.storage)}: {one_line(e)}") from None
        wanted = study_settings(o, task)
        had = {k: study.user_attrs[k] for k in wanted if k in study.user_attrs}
        differ = [k for k in had if had[k] != wanted[k]]
        if had.get("data_sha256") and wanted["data_sha256"] and "data_sha256" in differ:
            raise ValueError(f"data file {o.data} is not the one study {o.study!r} was made with (sha256 "
                             f"{wanted['data_sha256'][:12]}..., the study's {had['data_sha256'][:12]}...): give "
                             f"that file, or another --study name")
        if differ:
            made = ", ".join(_setting(k, had[k]) for k in differ)
            asked = ", ".join(_setting(k, wanted[k]) for k in differ)
            raise ValueError(f"study {o.study!r} was made for {made}; this run asks for {asked}: give another "
                             f"--study name")
        for k, v in wanted.items():
            if k not in had:
                study.set_user_attr(k, v)
        if o.data is not None and "data" not in study.user_attrs:
            study.set_user_attr("data", o.data)         # for the record only: workers may see it by other paths
    if study.direction.name.lower() != direction:
        raise ValueError(f"study {o.study!r} is set to {study.direction.name.lower()}, but {task.name}'s "
                         f"{task.metric} is to {direction}: give another --study name")
    return study


def study_settings(o: TuneOptions, task: Task) -> dict:
    """What a study remembers of the worker that made it, and every later worker must match: the task
    or the data file's sha256 with its data options as resolved, length, steps and eval-every."""
    settings = {"task": o.task, "data_sha256": o.data_sha256}
    if o.data is not None:
        resolved = o.base_config().resolved(task)
        settings.update({k: getattr(resolved, k) for k in DATA_OPTIONS})
    return {**settings, "length": o.length, "steps": o.steps, "eval_every": o.eval_every}


def _setting(key: str, value) -> str:
    if key == "data_sha256":
        return f"data file sha256 {value[:12]}..." if value else "no data file"
    return f"{key.replace('_', '-')} {value}" if value is not None else f"no {key.replace('_', '-')}"


# ------------------------------------------------------------------------------- the objective

def make_objective(o: TuneOptions):
    """The objective of one trial: draw a config, train it in this process, report every validation
    to the pruner (stopping the run when it prunes), return the best validation metric."""
    import optuna

    metric = o.load_task().metric

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
            trial.set_user_attr("reason", one_line(e))
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
    metric = o.load_task().metric
    print(f"study {o.study} in {display_url(o.storage)}: {o.sampler} sampler, {o.pruner} pruner, {o.trials} trials "
          f"by worker {WORKER}; {plural(len(study.trials), 'trial')} there already", flush=True)
    objective = make_objective(o)
    # A RuntimeError in training (out of memory, a backend failure) fails that trial only (the
    # objective records it as outcome "error") and the worker goes on. Other exceptions are bugs: they stop it.
    study.optimize(objective, n_trials=o.trials, timeout=o.timeout, catch=(RuntimeError,),
                   callbacks=[lambda s, t: print(trial_line(t, metric), flush=True)])
    if objective.interrupted:
        raise KeyboardInterrupt
    return study


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
        "tune", help="hyperparameter search (Optuna) over cells and training settings on a task or your data",
        description="Search cell, hidden size, layers, dropout, learning rate, gradient clipping and schedule "
                    "for the best validation metric of a built-in task (--task) or of your own CSV, Parquet or "
                    "NPZ file (--data), with Optuna (TPE and median pruning by default). Every process runs its "
                    "--trials against one shared study: start several with the same --out or --storage to "
                    "search in parallel.",
        epilog="Your own data: `lstmc tune --data co2.csv --predict co2 --fillna ffill --trials 30` searches a "
               "forecaster of the column co2; the data options are `lstmc train`'s (see `lstmc train --help` "
               "and `python -m pydoc lstmc.datafile`), and OUT/best.txt repeats them.")
    p.add_argument("--task", default=None,
                   help=f"the built-in task to tune for: {', '.join(TASKS)}; not with --data")
    p.add_argument("--cells", type=_cells, default=("lstm", "gru"),
                   help="comma-separated cells to choose from: built-in names or .cell files (default lstm,gru)")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs (default 20)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every trial (task default)")
    p.add_argument("--length", type=int, default=None,
                   help=f"the task's sequence length, as for `lstmc train` (task default); with --data, the "
                        f"forecasting window in rows ({DEFAULT_WINDOW})")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between validations, which are also the pruning points (task default)")
    p.add_argument("--hidden-range", type=_hidden_range, default=HIDDEN, metavar="LO,HI",
                   help=f"hidden sizes searched, log scale (default {HIDDEN[0]},{HIDDEN[1]}; grid: the two ends)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna RDB storage URL, e.g. postgresql://user:pw@host/db for several machines "
                        "(default sqlite:///OUT/study.db)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default lstmc-TASK, or lstmc-STEM for --data STEM.csv)")
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
    add_data_arguments(p, "tune")
    p.set_defaults(fn=cli_main)
    return p


def options_from_args(args) -> TuneOptions:
    return TuneOptions(task=args.task, data=args.data, **{k: getattr(args, k) for k in DATA_OPTIONS},
                       cells=args.cells, trials=args.trials, steps=args.steps, length=args.length,
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
    from .subcommand import run_alone

    return run_alone("tune", add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
