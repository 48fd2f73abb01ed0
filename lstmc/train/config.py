"""The run's description and its outcome: TrainConfig (every option, with the task's defaults filled
in and checked by `resolved`), `task_of` (the Task a config trains on: a built-in task, or a data
file read by lstmc.datafile), `config_dict` (the config as plain data, for checkpoints and
metrics.json) and TrainResult (what `train` returns and metrics.json holds)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..tasks import Task, get_task

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
DEFAULT_TASK = "adding"
DATA_OPTIONS = ("inputs", "predict", "label", "sequence", "horizon", "split", "fillna")
SCHEDULES = ("none", "step", "cosine", "plateau")


@dataclass
class TrainConfig:
    """Everything a run depends on. `None` means "the task's default" (see `Task.defaults`)."""
    cell: str = "lstm"                  # built-in cell name, path to a .cell file, or a lstmc.Cell
    task: str = DEFAULT_TASK
    length: int | None = None           # adding: T; copy: delay T; charlm: window; sunspots: window
    hidden: int | None = None
    sizes: dict | None = None           # a cell's state sizes ({"P": 64} for lstmp); default: hidden // 2
    layers: int = 1
    bidirectional: bool = False
    embed: int | None = None            # embedding size for token tasks
    steps: int | None = None
    batch: int | None = None            # global batch (split across DDP ranks)
    lr: float | None = None
    optimizer: str = "adam"
    clip: float | None = None           # gradient-norm clip; 0 disables
    schedule: str = "none"
    weight_decay: float = 0.0
    dropout: float = 0.0                # between recurrent layers
    seed: int = 0
    backend: str = "auto"               # Recurrent's backend, or "native" (torch.nn.LSTM/GRU)
    device: str = "cpu"                 # cpu, cuda, auto
    eval_every: int | None = None
    checkpoint_every: int | None = None  # default: every evaluation
    patience: int = 0                   # early stopping after this many evaluations without gain; 0: off
    validate: int = 0                   # every N steps: gradients vs the float64 reference; 0: off
    out: str | None = None              # directory for metrics, plot, checkpoints; None: write nothing
    resume: bool = False
    stop_at: int | None = None          # stop after this step as if interrupted (checkpoint written)
    progress: bool = True
    threads: int | None = None          # torch and BLAS threads (default: see placement.thread_budget)
    target: float | None = None         # stop once the validation metric is at least this good
    time_budget: float | None = None    # stop after this many seconds of wall time (not reproducible)
    # Training on a data file (lstmc.datafile; None: its default). With `data`, `task` must be left at
    # its default; `length` is the forecasting window (default 20). `resolved` records the values used
    # (the file name as task, the columns, the split...).
    data: str | None = None             # a .csv, .parquet or .npz file
    inputs: str | None = None           # comma-separated input columns
    predict: str | None = None          # forecasting: the column to predict
    label: str | None = None            # classification: the class column
    sequence: str | None = None         # classification: the column whose values group rows into sequences
    horizon: int | None = None          # forecasting: predict this many rows after the window (1)
    split: str | None = None            # "TRAIN,VAL" fractions, in time/file order; test is the rest (0.7,0.15)
    fillna: str | None = None           # missing values: error (default), ffill, interpolate, drop
    data_sha256: str | None = None      # set by `resolved`: the data file's sha256 (--resume refuses a changed file)

    def resolved(self, task: Task) -> "TrainConfig":
        """A copy with every task default filled in and every value checked."""
        c = dataclasses.replace(self)
        d = task.defaults
        if c.data is not None:
            if c.task not in (DEFAULT_TASK, task.name):
                raise ValueError(f"task {c.task!r} and data {c.data!r} exclude each other: with data, leave "
                                 f"task out")
            sha = task.options["sha256"]
            if c.data_sha256 not in (None, sha):
                raise ValueError(f"data file {c.data} changed: its sha256 is {sha[:12]}..., the config expects "
                                 f"{c.data_sha256[:12]}...")
            c.task, c.data_sha256 = task.name, sha
            o = task.options            # the data options as used (defaults filled in), for the records
            c.predict, c.label, c.sequence = o["predict"], o["label"], o["sequence"]
            c.inputs = ",".join(o["inputs"]) if o["inputs"] is not None else None
            c.horizon = o.get("horizon") if o["kind"] == "forecast" else None
            c.split, c.fillna = ",".join(str(float(v)) for v in o["split"]), o["fillna"]   # exactly (not :g)
        elif c.data_sha256 is not None:
            raise ValueError("data_sha256 is the sha256 of a data file: give the file with data")
        for k in ("hidden", "steps", "batch", "lr", "clip", "eval_every"):
            if getattr(c, k) is None:
                setattr(c, k, d[k])
        if c.embed is None:
            c.embed = task.embed_dim
        if c.checkpoint_every is None:
            c.checkpoint_every = c.eval_every
        if c.length is None:
            c.length = task.options.get("length", task.seq_len())
        for k in ("hidden", "layers", "steps", "batch", "eval_every", "checkpoint_every"):
            v = getattr(c, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k.replace('_', '-')} must be a positive integer, got {v!r}")
        if c.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
        if c.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}")
        if not (c.lr > 0):
            raise ValueError(f"lr must be positive, got {c.lr!r}")
        if c.clip < 0 or c.weight_decay < 0 or not 0 <= c.dropout < 1:
            raise ValueError("clip and weight-decay must be >= 0 and dropout in [0, 1)")
        if c.patience < 0 or c.validate < 0:
            raise ValueError("patience and validate must be >= 0")
        if c.resume and not c.out:
            raise ValueError("resume needs out: the directory holding checkpoint.pt")
        own = _state_only_sizes(c.cell)
        if own:                         # recorded as used (default or given): --resume compares them
            from .inputs import input_plan

            sizes = input_plan(c.cell, task, c.hidden, c.sizes)[2]
            c.sizes = {k: sizes[k] for k in own}
        return c


def _state_only_sizes(cell) -> list[str]:
    """The cell's sizes that no input declares (lstmp's P): the training model chooses them."""
    from ..build import load

    c = load(cell)
    return [k for k in c.sizes if k not in c.inputs.values()]


def task_of(cfg: TrainConfig) -> Task:
    """The Task a config trains on: the data file `cfg.data` (lstmc.datafile) or the built-in `cfg.task`."""
    if cfg.data is None:
        given = [k for k in DATA_OPTIONS if getattr(cfg, k) is not None]
        if given:
            raise ValueError(f"{', '.join(k for k in given)} describe a data file: give it with data (--data FILE)")
        return get_task(cfg.task, length=cfg.length)
    from ..datafile import data_task

    return data_task(cfg.data, length=cfg.length, **{k: getattr(cfg, k) for k in DATA_OPTIONS})


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain data (a Cell object is recorded by its name and source text)."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if not isinstance(d["cell"], str):
        d["cell"] = f"{d['cell'].name} (source sha256 {_sha(d['cell'].source or repr(d['cell']))})"
    return d


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]



@dataclass
class TrainResult:
    config: dict
    task: str
    cell: str
    metric: str
    higher_is_better: bool
    baseline: float                 # the trivial baseline's metric on the test split
    baseline_val: float
    baseline_name: str
    val_metric: float               # best validation metric (the checkpoint used for test)
    test_metric: float              # test metric of the best validation checkpoint (nan if interrupted)
    test_loss: float
    best_step: int
    steps: int                      # steps actually run (counting resumed ones)
    wall_time: float                # seconds, summed over resumed segments
    steps_per_s: float
    params: int                     # trainable parameters of the whole model
    rnn_params: int
    history: list = field(default_factory=list)        # one dict per evaluation
    train_losses: list = field(default_factory=list)   # the loss of every step
    validations: list = field(default_factory=list)    # --validate reports
    stopped_early: bool = False     # by patience or target (stop_reason says which)
    stop_reason: str = ""           # patience / target / "signal" / "stop-at N" / non-finite loss
    interrupted: bool = False
    diverged: bool = False          # stopped because the training loss became NaN or infinite
    world_size: int = 1
    backend: str = ""
    out: str | None = None

    def summary(self) -> str:
        arrow = "higher" if self.higher_is_better else "lower"
        speed = (f"{self.steps} steps in {self.wall_time:.1f} s ({self.steps_per_s:.1f} steps/s, backend "
                 f"{self.backend}); {self.params} parameters")
        if self.diverged:
            tested = (f"test {self.metric} {self.test_metric:.4f} with the weights of the best validation (step "
                      f"{self.best_step})" if not math.isnan(self.test_metric) else "no validation before it: not tested")
            return f"{self.task}/{self.cell}: {self.stop_reason}; {tested}; {speed}"
        if self.interrupted:
            return (f"{self.task}/{self.cell}: interrupted at step {self.steps} (continue with --resume); best "
                    f"validation {self.metric} {self.val_metric:.4f} at step {self.best_step} vs "
                    f"{self.baseline_name} baseline {self.baseline_val:.4f}; {speed}")
        s = (f"{self.task}/{self.cell}: test {self.metric} {self.test_metric:.4f} vs {self.baseline_name} "
             f"baseline {self.baseline:.4f} ({arrow} is better); best validation {self.val_metric:.4f} at step "
             f"{self.best_step}; {speed}")
        if self.stopped_early:
            s += f"; stopped early: {self.stop_reason}"
        if self.validations:
            worst = max(self.validations, key=lambda v: v["max_diff"])
            s += (f"; gradients vs float64 reference: max diff {worst['max_diff']:.1e} over "
                  f"{len(self.validations)} checks")
        return s
