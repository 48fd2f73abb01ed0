"""Training runtime: train a model built on any compiled cell on one of the tasks in `lstmc.tasks`.

    from lstmc.train import TrainConfig, train
    result = train(TrainConfig(cell="peephole_lstm", task="adding", steps=1500, out="runs/adding"))
    print(result.test_metric, result.baseline)

The same from the shell: `lstmc train --cell peephole_lstm --task adding --out runs/adding`, and
data-parallel: `torchrun --nproc-per-node 2 -m lstmc train ...` (DDP; gloo on CPU, nccl on GPU).

One loop, in this order per step: read the step's batch (a pure function of seed and step), this
rank's shard of it, forward, loss, backward (DDP averages the gradients), clip, optimizer step,
per-step schedule. Every `eval_every` steps: evaluate the validation split, log, early stopping,
plateau schedule, checkpoint. A checkpoint holds everything the next step depends on (model,
optimizer, scheduler, every RNG state of every rank, the step counter, the loop's bookkeeping), and
is written to a temporary file then renamed, so a killed run resumed with `resume=True` continues
with bit-identical losses. It holds only tensors and plain data, and is read with
torch.load(weights_only=True), so a crafted file cannot run code (load_checkpoint, CheckpointError).
A training loss that becomes NaN or infinite stops the run at that step (TrainResult.diverged).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .files import atomic_write
from .tasks import TASKS, Task, get_task

# torch is imported inside the functions that use it, so that `lstmc --help` and the other
# subcommands do not pay for it when the CLI imports this module to add `train`.

__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "SeqModel", "NativeRecurrent", "evaluate",
           "validate_gradients", "init_distributed", "shard", "load_checkpoint", "add_parser", "cli_main", "demo_run",
           "TrainingInterrupted", "CheckpointError", "NonFiniteLossWarning", "atomic_write"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("none", "step", "cosine", "plateau")
CKPT_VERSION = 2   # 2: RNG states as tensors and plain lists, loadable with weights_only=True


# ------------------------------------------------------------------------------------ configuration

@dataclass
class TrainConfig:
    """Everything a run depends on. `None` means "the task's default" (see `Task.defaults`)."""
    cell: str = "lstm"                  # built-in cell name, path to a .cell file, or a lstmc.Cell
    task: str = "adding"
    length: int | None = None           # adding: T; copy: delay T; charlm: window; sunspots: window
    hidden: int | None = None
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
    threads: int | None = None          # torch and BLAS threads (default: see _thread_budget)
    target: float | None = None         # stop once the validation metric is at least this good
    time_budget: float | None = None    # stop after this many seconds of wall time (not reproducible)

    def resolved(self, task: Task) -> "TrainConfig":
        """A copy with every task default filled in and every value checked."""
        c = dataclasses.replace(self)
        d = task.defaults
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
        return c


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain data (a Cell object is recorded by its name and source text)."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if not isinstance(d["cell"], str):
        d["cell"] = f"{d['cell'].name} (source sha256 {_sha(d['cell'].source or repr(d['cell']))})"
    return d


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


# what may differ between a run and the run it resumes
_RESUME_FREE = {"resume", "out", "stop_at", "progress", "steps", "patience", "validate", "threads", "target",
                "time_budget",
                "eval_every", "checkpoint_every"}


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


# ------------------------------------------------------------------------------------------- model

def _models() -> dict:
    """The nn.Module classes, defined on first use (they need torch)."""
    if _MODELS:
        return _MODELS
    import torch
    from torch import nn

    class NativeRecurrent(nn.Module):
        """torch.nn.LSTM / nn.GRU behind Recurrent's call signature: backend="native", the PyTorch
        baseline to compare with. Only the `lstm` and `gru` cells have one."""

        def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                     dropout=0.0, bidirectional=False, backend="native"):
            super().__init__()
            name = getattr(cell, "name", cell)
            mods = {"lstm": nn.LSTM, "gru": nn.GRU}
            if name not in mods:
                raise ValueError(f"backend 'native' runs torch.nn.LSTM/GRU: only the cells lstm and gru, "
                                 f"got {name!r}")
            self.cell_name = name
            self.rnn = mods[name](input_size, hidden_size, num_layers=num_layers, bias=bias,
                                  batch_first=batch_first, dropout=dropout, bidirectional=bidirectional)

        def forward(self, input, state=None, lengths=None):
            if lengths is not None:
                raise ValueError("NativeRecurrent does not take lengths")
            return self.rnn(input, state)

    class SeqModel(nn.Module):
        """[embedding] → Recurrent → linear head, reading the last step or every step (task.target)."""

        def __init__(self, task: Task, cell, hidden: int, layers: int = 1, dropout: float = 0.0,
                     bidirectional: bool = False, embed: int = 0, backend: str = "auto"):
            super().__init__()
            self.target = task.target
            self.hidden = hidden
            self.dirs = 2 if bidirectional else 1
            if task.inputs == "tokens":
                self.embed = nn.Embedding(task.vocab, embed or 16)
                in_size = self.embed.embedding_dim
            else:
                self.embed = None
                in_size = task.input_size
            self.rnn = recurrent_class(backend)(cell, in_size, hidden, num_layers=layers, batch_first=True,
                                                dropout=dropout, bidirectional=bidirectional, backend=backend)
            self.head = nn.Linear(hidden * self.dirs, task.n_out)

        def forward(self, x):
            if self.embed is not None:
                x = self.embed(x)
            y, _ = self.rnn(x)                                  # [B, T, H*dirs]
            if self.target == "last":
                if self.dirs == 2:     # forward direction's last step, backward direction's first
                    y = torch.cat([y[:, -1, :self.hidden], y[:, 0, self.hidden:]], dim=-1)
                else:
                    y = y[:, -1]
            return self.head(y)

    _MODELS.update(NativeRecurrent=NativeRecurrent, SeqModel=SeqModel)
    return _MODELS


_MODELS: dict = {}


def __getattr__(name):  # lstmc.train.SeqModel, lstmc.train.NativeRecurrent
    if name in ("SeqModel", "NativeRecurrent"):
        return _models()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recurrent_class(backend: str):
    """lstmc.nn.Recurrent, or NativeRecurrent (torch.nn.LSTM/GRU) for backend "native"."""
    if backend == "native":
        return _models()["NativeRecurrent"]
    from .nn import Recurrent

    return Recurrent


def build_model(cfg: TrainConfig, task: Task, backend: str | None = None):
    """The SeqModel a config describes (initialised from torch's RNG: seed it first)."""
    return _models()["SeqModel"](task, cfg.cell, cfg.hidden, cfg.layers, cfg.dropout, cfg.bidirectional,
                                 cfg.embed, backend or cfg.backend)


def count_params(m) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def make_optimizer(cfg: TrainConfig, params):
    import torch

    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, opt, task: Task):
    """(scheduler, per_step): per-step schedules step after every optimizer step; plateau after
    every evaluation, on the validation metric."""
    import torch

    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.steps // 3), gamma=0.1), True
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.01), True
    if cfg.schedule == "plateau":
        mode = "max" if task.higher_is_better else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=2), False
    return None, True


# ------------------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False     # did we create the process group (and so destroy it)?

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)
    when WORLD_SIZE > 1: gloo for CPU training, nccl for CUDA. One process: nothing to do."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank, world, local, owned=True)


def shard(x, rank: int, world: int):
    """This rank's contiguous share of a global batch (the batch must divide evenly, so that DDP's
    average of per-rank mean gradients is the mean gradient of the whole batch)."""
    B = x.shape[0]
    if B % world:
        raise ValueError(f"batch {B} does not split evenly over {world} processes")
    n = B // world
    return x[rank * n:(rank + 1) * n]


def _all_mean(v: float, d: Dist) -> float:
    if d.world == 1:
        return v
    import torch
    import torch.distributed as dist

    t = torch.tensor([v], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / d.world


def _any(flags: list[bool], d: Dist) -> list[bool]:
    """Each flag true on any rank (a signal or a time budget on one rank stops all of them)."""
    if d.world == 1:
        return [bool(f) for f in flags]
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _broadcast(vals: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return vals
    import torch
    import torch.distributed as dist

    t = torch.tensor(vals, dtype=torch.float64)
    dist.broadcast(t, 0)
    return t.tolist()


# ------------------------------------------------------------------------------------ RNG and files

def rng_state() -> dict:
    """Every RNG state as tensors and plain Python data (what torch.load(weights_only=True) reads)."""
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    s = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
         "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    import torch

    torch.set_rng_state(s["torch"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class CheckpointError(ValueError):
    """A checkpoint file lstmc cannot or will not load (truncated, corrupted, not lstmc's, or
    holding objects that unpickling would have to run code for). The message is one line: which
    file, what is wrong, what to do."""


_CKPT_KEYS = ("version", "config", "world_size", "model", "optimizer", "scheduler", "rng", "sampler", "loop",
              "best_model")


def load_checkpoint(path) -> dict:
    """A checkpoint.pt as a dict, loaded with torch.load(weights_only=True): tensors and plain
    Python data only, so a crafted file cannot run code while it is read. Anything else, and any
    file that is not a complete checkpoint of this format, raises CheckpointError."""
    import pickle
    import re
    import zipfile

    import torch

    path = Path(path)
    not_ours = f"{path} is not a readable lstmc checkpoint"
    fresh = "delete it (or choose another --out) to start afresh"
    try:
        size = path.stat().st_size
        complete = zipfile.is_zipfile(path)     # torch.save writes a zip archive; its directory comes last
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CheckpointError(f"{not_ours} ({_first_line(e)}); check its permissions") from None
    if not complete:
        what = "an empty file" if size == 0 else f"{size} bytes, not a complete PyTorch file"
        raise CheckpointError(f"{not_ours} ({what}): it is truncated or corrupted; {fresh}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(f"{not_ours}: it holds Python objects other than tensors and plain data "
                                  f"({', '.join(sorted(set(found)))}), which could run code when loaded, so lstmc "
                                  f"refuses it. Load only checkpoints you wrote; one from an older lstmc cannot be "
                                  f"resumed: {fresh}") from None
        raise CheckpointError(f"{not_ours} ({_first_line(e)}): it is truncated or corrupted; {fresh}") from None
    except Exception as e:      # torch's zip reader, EOFError, KeyError...: a damaged or foreign file
        raise CheckpointError(f"{not_ours} ({_first_line(e)}): it is truncated or corrupted; {fresh}") from None
    if not isinstance(ck, dict) or "version" not in ck:
        raise CheckpointError(f"{not_ours}: it is a PyTorch file, but not one lstmc train wrote; {fresh}")
    if ck["version"] != CKPT_VERSION:
        raise CheckpointError(f"{not_ours}: it has format version {ck['version']!r}, this lstmc reads version "
                              f"{CKPT_VERSION}; {fresh}")
    missing = [k for k in _CKPT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(f"{not_ours}: it lacks {', '.join(missing)}; {fresh}")
    return ck


def _first_line(e: BaseException) -> str:
    """An exception as a short phrase: its type and the first sentence of its message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.split(". ")[0][:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _plain(obj):
    """`obj` with NumPy scalars and arrays turned into Python numbers and lists (exactly), so that a
    checkpoint holds nothing torch.load(weights_only=True) would refuse."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


# ------------------------------------------------------------------------------------- evaluation

def evaluate(model, task: Task, split: str, device, batch: int = 512) -> tuple[float, float]:
    """(mean loss, metric) of `model` on a whole split, in eval mode. Consumes no random numbers."""
    import torch

    was = model.training
    model.eval()
    parts = {"loss": 0.0, "n": 0, "correct": 0}
    n = task.size(split)
    with torch.no_grad():
        for a in range(0, n, batch):
            x, y = task.batch(split, np.arange(a, min(n, a + batch)))
            out = model(x.to(device))
            for k, v in task.score_parts(out.cpu(), y).items():
                parts[k] += v
    model.train(was)
    return task.metric_from(parts)


def validate_gradients(model, task: Task, x, y) -> dict:
    """One batch's gradients from the training model and from a float64 copy of it whose Recurrent
    runs the `reference` backend (NumPy, the living definition of the cell), compared parameter by
    parameter with lstmc.check.max_rel (absolute below 1, relative above). Both run in eval mode (no
    dropout) through torch.autograd.grad, so the training state (.grad, every RNG) is untouched."""
    import torch

    from .check import max_rel

    if not hasattr(model.rnn, "cell_params"):
        raise ValueError("--validate compares lstmc's compiled cell with its reference; backend 'native' "
                         "(torch.nn) has none")
    device = next(model.parameters()).device
    ref = copy.deepcopy(model).cpu().double()       # deepcopy: no initialisation, no random numbers
    ref.rnn.backend = "reference"
    grads = {}
    was = model.training
    try:
        for name, m, xx, yy in (("model", model, x.to(device), y.to(device)), ("ref", ref, x.cpu(), y.cpu())):
            m.eval()
            if name == "ref":
                xx = xx.double() if xx.is_floating_point() else xx
                yy = yy.double() if yy.is_floating_point() else yy
            named = [(k, p) for k, p in m.named_parameters() if p.requires_grad]
            loss = task.loss_fn(m(xx), yy)
            g = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            grads[name] = ({k: (gi.detach().cpu().double().numpy() if gi is not None else np.zeros(tuple(p.shape)))
                            for (k, p), gi in zip(named, g)}, float(loss.detach()))
    finally:
        model.train(was)
    worst, worst_name = 0.0, ""
    for k, g in grads["ref"][0].items():
        e = max_rel(grads["model"][0][k], g)
        if e >= worst:
            worst, worst_name = e, k
    return {"max_diff": worst, "param": worst_name, "loss": grads["model"][1],
            "loss_diff": abs(grads["model"][1] - grads["ref"][1]),
            "backend": getattr(model.rnn, "last_backend", None)}


# --------------------------------------------------------------------------------------- outputs

CSV_FIELDS = ("step", "epoch", "train_loss", "val_loss", "val_metric", "lr", "elapsed_s", "steps_per_s", "grad_check")


def write_outputs(out: Path, res: TrainResult, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def csv_writer(f):
        import io
        s = io.StringIO()
        w = csv.DictWriter(s, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in res.history:
            w.writerow(row)
        f.write(s.getvalue().encode())

    atomic_write(out / "metrics.csv", csv_writer)
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(asdict(res), indent=1, default=float).encode()))
    if plot:
        plot_curves(out / "curves.png", res)


def plot_curves(path: Path, res: TrainResult) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    tl = np.asarray(res.train_losses, dtype=np.float64)
    if len(tl):
        k = max(1, len(tl) // 100)
        sm = np.convolve(tl, np.ones(k) / k, mode="valid")
        a1.plot(np.arange(1, len(tl) + 1), tl, color="C0", alpha=0.25, lw=0.7)
        a1.plot(np.arange(k, len(tl) + 1), sm, color="C0", label="train")
    if res.history:
        a1.plot([h["step"] for h in res.history], [h["val_loss"] for h in res.history], "o-", color="C1",
                ms=3, label="validation")
        a2.plot([h["step"] for h in res.history], [h["val_metric"] for h in res.history], "o-", color="C1",
                ms=3, label=f"validation {res.metric}")
    a2.axhline(res.baseline_val, color="gray", ls="--", label=f"{res.baseline_name} baseline (val)")
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a1.set_title(f"{res.task} / {res.cell}: loss")
    if len(tl) and np.all(tl > 0):
        a1.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel(res.metric)
    a2.set_title(f"validation {res.metric}")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:    # a run stopped before its first step has no curve
            a.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ------------------------------------------------------------------------------------------ signals

class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped training after a checkpoint was written; `.result` is the partial result."""

    def __init__(self, result: TrainResult):
        super().__init__(f"training stopped by a signal at step {result.steps}; the checkpoint in {result.out} "
                         f"continues it (resume)")
        self.result = result


class _StopFlag:
    """With a checkpoint to write: SIGINT/SIGTERM ask the loop to stop after the current step, write
    the checkpoint and raise TrainingInterrupted; a second SIGINT interrupts at once. Without one
    (no out directory) the signals keep their usual effect."""

    def __init__(self, enabled: bool):
        self.set = False
        self.old = {}
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: no handlers
            self.old = {}
        return self

    def _handle(self, signum, frame):
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------- training

def _check_resume(saved: dict, cfg: TrainConfig) -> None:
    now = config_dict(cfg)
    diff = [k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        what = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(f"--resume: the checkpoint was written by a different run ({what}); "
                         f"use the same options or another --out")


def _device(name: str, d: Dist):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but torch sees no CUDA GPU")
        return torch.device("cuda", d.local_rank if d.world > 1 else (torch.device(name).index or 0))
    return torch.device(name)


def train(config: TrainConfig | None = None, **overrides) -> TrainResult:
    """Train as `config` says; returns a TrainResult (metrics history, final val/test metric,
    baseline, steps, wall time, parameter count). Under torchrun (WORLD_SIZE > 1) every process
    calls this; only rank 0 writes files and shows progress; every rank returns the same result."""
    import torch
    import torch.distributed as dist

    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    task = get_task(cfg.task, length=cfg.length)
    cfg = cfg.resolved(task)
    d = init_distributed(cfg.device)
    threads = torch.get_num_threads()
    try:
        with _thread_budget(cfg, d):
            return _train(cfg, task, d)
    finally:
        torch.set_num_threads(threads)
        if d.owned:
            dist.destroy_process_group()


def _thread_budget(cfg: TrainConfig, d: Dist):
    """Threads for a CPU run of a compiled cell (a context that restores the BLAS pools after).

    The compiled kernels call OpenBLAS for their GEMMs; torch runs the rest (head, loss, Adam) on its
    own pool. Measured on 2 cores: torch's pool spinning beside BLAS made steps 3x slower, and with one
    core busy elsewhere, 2 BLAS threads made steps 10-36x slower than 1 (idle, 2 threads gained at
    most 1.3x). So by default torch gets 1 thread and BLAS half the cores per process (1 on 2 cores);
    --threads N gives both N. torch.nn ("native") and GPU runs keep the libraries' defaults."""
    import contextlib

    import scipy.linalg  # noqa: F401 - loads the OpenBLAS that Numba's np.dot calls, so the limit reaches it
    import torch
    from threadpoolctl import threadpool_limits

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        return threadpool_limits(limits=cfg.threads, user_api="blas")
    if cfg.backend == "native" or _device(cfg.device, d).type != "cpu":
        return contextlib.nullcontext()
    torch.set_num_threads(1)
    return threadpool_limits(limits=max(1, (os.cpu_count() or 1) // (2 * d.world)), user_api="blas")


def _train(cfg: TrainConfig, task: Task, d: Dist) -> TrainResult:
    import torch
    import torch.distributed as dist
    from torch import nn
    from tqdm import tqdm

    device = _device(cfg.device, d)
    out = Path(cfg.out) if cfg.out else None
    write = out is not None and d.main
    if write:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.batch % d.world:
        raise ValueError(f"batch {cfg.batch} must be a multiple of the number of processes ({d.world})")

    # Same initial weights on every rank; then each rank its own dropout stream.
    seed_all(cfg.seed)
    model = build_model(cfg, task).to(device)
    if d.rank:
        seed_all(cfg.seed + 1_000_003 * d.rank)
    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(cfg, model.parameters())
    sched, per_step = make_scheduler(cfg, opt, task)
    sampler = task.sampler(cfg.seed)
    cell_name = getattr(model.rnn, "cell_name", None) or model.rnn.cell.name
    if cfg.validate and not hasattr(model.rnn, "cell_params"):
        raise ValueError("--validate compares lstmc's compiled cell with its float64 reference; backend 'native' "
                         "(torch.nn) has none")

    loop = {"step": 0, "history": [], "train_losses": [], "best_metric": None, "best_step": 0,
            "bad_evals": 0, "validations": [], "elapsed": 0.0, "train_time": 0.0, "stop_reason": None}
    best_state = None
    ckpt_path = out / "checkpoint.pt" if out else None
    if cfg.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)      # CheckpointError (one line) for anything but a good checkpoint
        _check_resume(ck["config"], cfg)
        if ck["world_size"] != d.world:
            raise ValueError(f"{ckpt_path} was written by {ck['world_size']} processes; resume with as many "
                             f"(now {d.world}) to continue exactly")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if sched is not None and ck["scheduler"] is not None:
                sched.load_state_dict(ck["scheduler"])
            loop = ck["loop"]
            best_state = ck["best_model"]
            set_rng_state(ck["rng"][d.rank])
            if not isinstance(loop, dict) or not {"step", "history", "train_losses"} <= loop.keys():
                raise KeyError("loop: the training loop's bookkeeping")
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{ckpt_path} is not a readable lstmc checkpoint: its contents do not fit this "
                                  f"run ({_first_line(e)}); delete it (or choose another --out) to start "
                                  f"afresh") from None
        if d.main and cfg.progress:
            print(f"resuming from {ckpt_path} at step {loop['step']}", file=sys.stderr)
    elif cfg.resume and d.main and cfg.progress:
        print(f"no checkpoint in {out}: starting from step 0", file=sys.stderr)

    def stop_reason(vm):
        """Early stopping: patience exhausted, or the target reached (None: go on)."""
        if cfg.patience and loop["bad_evals"] >= cfg.patience:
            return f"no better validation {task.metric} in {cfg.patience} evaluations"
        if cfg.target is not None and vm is not None and not task.better(cfg.target, vm):
            return f"validation {task.metric} reached the target {cfg.target:g}"
        if cfg.time_budget and loop["elapsed"] >= cfg.time_budget:
            return f"time budget of {cfg.time_budget:g} s used"
        return None

    if loop["history"]:     # resumed: the stopping rules may have changed (patience and target may)
        loop["stop_reason"] = stop_reason(loop["history"][-1]["val_metric"])

    def result(interrupted="", test=(math.nan, math.nan)) -> TrainResult:
        tt = loop["train_time"]
        return TrainResult(
            config=config_dict(cfg), task=task.name, cell=cell_name,
            metric=task.metric, higher_is_better=task.higher_is_better, baseline=task.baseline("test"),
            baseline_val=task.baseline("val"), baseline_name=task.baseline_name,
            val_metric=loop["best_metric"] if loop["best_metric"] is not None else math.nan,
            test_metric=test[1], test_loss=test[0], best_step=loop["best_step"], steps=loop["step"],
            wall_time=loop["elapsed"], steps_per_s=(loop["step"] / tt if tt > 0 else 0.0),
            params=count_params(model), rnn_params=count_params(model.rnn), history=list(loop["history"]),
            train_losses=list(loop["train_losses"]), validations=list(loop["validations"]),
            stopped_early=loop["stop_reason"] is not None, stop_reason=interrupted or loop["stop_reason"] or "",
            interrupted=bool(interrupted), diverged=bool(diverged), world_size=d.world,
            backend=str(getattr(model.rnn, "last_backend", None) or cfg.backend), out=str(out) if out else None)

    def checkpoint():
        rngs = [rng_state()]
        if d.world > 1:
            rngs = [None] * d.world
            dist.all_gather_object(rngs, rng_state())
        if not write:
            return
        ck = {"version": CKPT_VERSION, "config": config_dict(cfg), "world_size": d.world,
              "model": model.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict() if sched is not None else None,
              "rng": rngs, "sampler": sampler.state_dict(), "loop": _plain(loop), "best_model": best_state}
        atomic_write(ckpt_path, lambda f: torch.save(ck, f))

    bar = tqdm(total=cfg.steps, initial=loop["step"], disable=not (d.main and cfg.progress), unit="step",
               dynamic_ncols=True, desc=f"{task.name}/{cell_name}", file=sys.stderr, mininterval=0.25)
    t_start = time.perf_counter()
    elapsed0 = loop["elapsed"]
    seg_t0 = time.perf_counter()
    seg_steps = 0
    last_val = None
    interrupted = ""      # why the loop stopped before its end: "signal" or "stop-at N"
    diverged = ""         # the message, once the training loss became NaN or infinite
    net.train()
    with _StopFlag(enabled=out is not None) as flag:
        while loop["step"] < cfg.steps and not loop["stop_reason"]:
            step = loop["step"]
            t0 = time.perf_counter()
            x, y = task.batch("train", sampler.indices(step, cfg.batch))
            x, y = shard(x, d.rank, d.world).to(device), shard(y, d.rank, d.world).to(device)
            loss = task.loss_fn(net(x), y)
            step_loss = _all_mean(float(loss.detach()), d)     # the same on every rank
            if not math.isfinite(step_loss):
                # stop before this step's update (the weights stay the last finite ones), like Keras'
                # TerminateOnNaN; no checkpoint of this step: the last one stays the last good state
                loop["stop_reason"] = diverged = _diverged_message(step_loss, step + 1, cfg)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            if sched is not None and per_step:
                sched.step()
            loop["train_losses"].append(step_loss)
            loop["step"] = step = step + 1
            loop["train_time"] += time.perf_counter() - t0
            seg_steps += 1

            if cfg.validate and step % cfg.validate == 0 and d.main:
                v = validate_gradients(model, task, x, y)
                v["step"] = step
                loop["validations"].append(v)
                if cfg.progress:
                    bar.write(f"step {step}: {v['backend']} gradients vs float64 reference: max diff "
                              f"{v['max_diff']:.2e} ({v['param']}), loss diff {v['loss_diff']:.1e}",
                              file=sys.stderr)

            loop["elapsed"] = elapsed0 + time.perf_counter() - t_start
            over = bool(cfg.time_budget) and loop["elapsed"] >= cfg.time_budget
            stop_req, over = _any([flag.set, over], d)     # every rank decides the same

            evaluated = False
            if step % cfg.eval_every == 0 or step == cfg.steps or over:
                vl, vm = evaluate(model, task, "val", device)
                vl, vm = _broadcast([vl, vm], d)
                evaluated = True
                last_val = vm
                now = time.perf_counter()
                since = loop["train_losses"][loop["history"][-1]["step"] if loop["history"] else 0:]
                row = {"step": step, "epoch": round(sampler.epoch(step, cfg.batch), 4),
                       "train_loss": float(np.mean(since)) if since else math.nan, "val_loss": vl,
                       "val_metric": vm, "lr": opt.param_groups[0]["lr"],
                       "elapsed_s": round(elapsed0 + now - t_start, 3),
                       "steps_per_s": round(seg_steps / max(now - seg_t0, 1e-9), 3),
                       "grad_check": loop["validations"][-1]["max_diff"] if loop["validations"] else ""}
                loop["history"].append(row)
                seg_t0, seg_steps = now, 0
                if task.better(vm, loop["best_metric"]):
                    loop["best_metric"], loop["best_step"], loop["bad_evals"] = vm, step, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    loop["bad_evals"] += 1
                if sched is not None and not per_step:
                    sched.step(vm)
                loop["stop_reason"] = stop_reason(vm)
                if over and not loop["stop_reason"]:
                    loop["stop_reason"] = f"time budget of {cfg.time_budget:g} s used"
            at_stop = cfg.stop_at is not None and step >= cfg.stop_at
            if stop_req or at_stop:
                interrupted = "signal" if stop_req else f"stop-at {cfg.stop_at}"
            ckpt_due = out is not None and (step % cfg.checkpoint_every == 0 or interrupted
                                            or loop["stop_reason"] or step == cfg.steps)
            loop["elapsed"] = elapsed0 + time.perf_counter() - t_start
            if ckpt_due:
                checkpoint()
                if write and evaluated:
                    write_outputs(out, result(), plot=False)
            if d.main and cfg.progress:
                bar.update(1)
                if step % 10 == 0 or evaluated:
                    post = {"loss": f"{np.mean(loop['train_losses'][-50:]):.4f}"}
                    if last_val is not None:
                        post[f"val_{task.metric}"] = f"{last_val:.4f}"
                    bar.set_postfix(post, refresh=False)
            if interrupted or loop["stop_reason"]:
                break
    bar.close()
    loop["elapsed"] = elapsed0 + time.perf_counter() - t_start

    if interrupted:
        res = result(interrupted=interrupted)
        if write:
            write_outputs(out, res)
            print(f"stopped at step {loop['step']}; checkpoint {ckpt_path} (continue with --resume)",
                  file=sys.stderr)
        if interrupted == "signal":
            raise TrainingInterrupted(res)
        return res

    if diverged and best_state is None:     # no validated weights to test, nor to save as model.pt
        res = result()
        if write:
            write_outputs(out, res)
        warnings.warn(diverged, NonFiniteLossWarning, stacklevel=3)
        return res
    if best_state is not None:
        final_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
    test = evaluate(model, task, "test", device)
    test = tuple(_broadcast(list(test), d))
    res = result(test=test)
    if write:
        atomic_write(out / "model.pt", lambda f: torch.save({"config": config_dict(cfg), "model": model.state_dict(),
                                                            "step": loop["best_step"]}, f))
        write_outputs(out, res)
    if best_state is not None:
        model.load_state_dict(final_state)
    if diverged:
        warnings.warn(diverged, NonFiniteLossWarning, stacklevel=3)
    return res


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite (TrainResult.diverged)."""


def _diverged_message(loss: float, step: int, cfg: TrainConfig) -> str:
    clip = f"clip gradients harder (--clip, now {cfg.clip:g})" if cfg.clip else "clip gradients (--clip 1.0; now off)"
    return (f"training loss became {loss} at step {step}; stopped before its update. Lower the learning rate "
            f"(--lr, now {cfg.lr:g}) or {clip}")


# ----------------------------------------------------------------------------------------------- CLI

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `train` to the `lstmc` command's subparsers (sets fn=cli_main)."""
    p = subparsers.add_parser(
        "train", help="train a model on one of the built-in tasks with a compiled cell",
        description="Train [embedding] -> Recurrent(CELL) -> linear head on a task. Options left out take "
                    "the task's defaults. Under torchrun, trains data-parallel (DDP).")
    p.add_argument("--cell", default="lstm", help="built-in cell name or path to a .cell file (default lstm)")
    p.add_argument("--task", default="adding", choices=list(TASKS))
    p.add_argument("--length", type=int, default=None,
                   help="adding: sequence length T (50); copy: delay T (20); charlm: window (100); "
                        "sunspots: window (20)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (task default)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--embed", type=int, default=None, help="embedding size for token tasks (copy, charlm)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (task default)")
    p.add_argument("--batch", type=int, default=None, help="global batch size, split across processes")
    p.add_argument("--lr", type=float, default=None, help="learning rate (task default)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--clip", type=float, default=None, help="gradient-norm clip, 0 = off (default 1.0)")
    p.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: step (x0.1 every steps/3), cosine (to lr/100), "
                        "plateau (x0.5 after 3 evaluations without gain)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.0, help="dropout between recurrent layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "triton", "torch", "reference", "native"),
                   help="Recurrent's backend; 'native' runs torch.nn.LSTM/GRU (lstm and gru only)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--eval-every", type=int, default=None, help="steps between validation evaluations")
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: eval-every)")
    p.add_argument("--patience", type=int, default=0,
                   help="early stopping: evaluations without a better validation metric (0 = off)")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="every N steps compare one batch's gradients with the float64 reference backend")
    p.add_argument("--out", default=None, help="directory for metrics.csv/json, curves.png, checkpoint.pt, model.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (writes the checkpoint)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and BLAS threads per process (default for a compiled cell on CPU: torch 1, "
                        "BLAS half the cores per process)")
    p.add_argument("--target", type=float, default=None,
                   help="stop once the validation metric reaches this value (e.g. 0.01 for adding's MSE)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this much wall time (steps then vary from run to run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON (without per-step losses)")
    p.set_defaults(fn=cli_main)
    return p


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    kw["progress"] = not args.no_progress
    return TrainConfig(**kw)


def cli_main(args) -> int:
    """`lstmc train`: run and print a summary (rank 0). Exit status 0, also after --stop-at; 130 when
    a signal (Ctrl-C, SIGTERM) stopped it (the checkpoint is written: continue with --resume); 1
    when the training loss became NaN or infinite (the message says at which step, on stderr). A
    checkpoint that cannot be loaded raises CheckpointError, which the CLI prints as one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteLossWarning)   # said below, as an error line
            res = train(config_from_args(args))
    except TrainingInterrupted as e:
        res = e.result
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        if getattr(args, "json", False):
            d = asdict(res)
            d.pop("train_losses")
            print(json.dumps(d, indent=1, default=float))
        else:
            print(res.summary())
            if res.out:
                print(f"outputs in {res.out}: metrics.csv metrics.json curves.png checkpoint.pt"
                      + ("" if res.interrupted or math.isnan(res.test_metric) else " model.pt"))
    if res.diverged:
        if rank == 0:
            print(f"lstmc: error: {res.stop_reason}", file=sys.stderr)
        return 1
    return 130 if res.stop_reason == "signal" else 0


def demo_run(cell: str = "peephole_lstm", quick: bool = False) -> int:
    """The demo's training part: `cell` on the adding problem (T=50) with the progress bar and a
    gradient check against the float64 reference, until the validation MSE is below 0.01 (the
    trivial baseline scores 0.167). 0 when the test MSE clearly beats the baseline (< 0.05)."""
    cfg = TrainConfig(cell=cell, task="adding", length=50, hidden=32, lr=2e-2, batch=64,
                      steps=1000 if quick else 2000, eval_every=50, target=0.01, validate=250)
    print(f"training {cell} on the adding problem (T=50): stops once the validation MSE is below 0.01; "
          f"predicting the mean scores 0.167", flush=True)
    res = train(cfg)
    print(res.summary())
    ok = res.test_metric < 0.05
    print(f"  {'beats' if ok else 'does NOT clearly beat'} the trivial baseline: test MSE {res.test_metric:.4f} vs "
          f"{res.baseline:.4f} ({res.baseline / max(res.test_metric, 1e-12):.0f}x lower)\n", flush=True)
    return 0 if ok else 1


def main(argv=None) -> int:
    """Standalone entry (`python -m lstmc.train ...`) until `lstmc train` is wired into the CLI."""
    p = argparse.ArgumentParser(prog="lstmc")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = p.parse_args(argv if argv is not None and argv[:1] == ["train"] else ["train", *(argv or sys.argv[1:])])
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"lstmc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
