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

The package, one job a module (this file only re-exports the public API):

    config       TrainConfig, config_dict, TrainResult
    models       SeqModel, NativeRecurrent, build_model
    optim        make_optimizer, make_scheduler
    distributed  the process group, shard, the collectives
    placement    the torch device and the thread budget
    checkpoint   RNG states, checkpoint files (save, load_checkpoint, restore), CheckpointError
    evaluation   evaluate, validate_gradients
    report       metrics.csv, metrics.json, curves.png
    signals      SIGINT/SIGTERM: stop after a checkpoint, TrainingInterrupted
    loop         train: the training loop, the non-finite-loss stop
    cli          `lstmc train`, `python -m lstmc.train`, the demo's run

torch is imported inside the functions that use it, so that `lstmc --help` and the other
subcommands do not pay for it when the CLI imports this package to add `train`.
"""

from __future__ import annotations

from ..files import atomic_write
from .checkpoint import CKPT_VERSION, CheckpointError, load_checkpoint, rng_state, seed_all, set_rng_state
from .cli import add_parser, cli_main, config_from_args, demo_run, main
from .config import OPTIMIZERS, SCHEDULES, TrainConfig, TrainResult, config_dict
from .distributed import Dist, init_distributed, shard
from .evaluation import evaluate, validate_gradients
from .loop import NonFiniteLossWarning, train
from .models import build_model, count_params, recurrent_class
from .optim import make_optimizer, make_scheduler
from .report import CSV_FIELDS, plot_curves, write_outputs
from .signals import TrainingInterrupted

__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "SeqModel", "NativeRecurrent", "evaluate",
           "validate_gradients", "init_distributed", "shard", "load_checkpoint", "add_parser", "cli_main", "demo_run",
           "TrainingInterrupted", "CheckpointError", "NonFiniteLossWarning", "atomic_write"]


def __getattr__(name):  # lstmc.train.SeqModel, lstmc.train.NativeRecurrent: defined on first use (need torch)
    if name in ("SeqModel", "NativeRecurrent"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
