"""The command line: `lstmc train` (add_parser, config_from_args, cli_main), the standalone entry
`python -m lstmc.train` (main) and the demo's training part (demo_run)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import warnings
from dataclasses import asdict

from ..datafile import DEFAULT_SPLIT, DEFAULT_WINDOW, FILLNA
from ..tasks import TASKS
from .config import DEFAULT_TASK, OPTIMIZERS, SCHEDULES, TrainConfig
from .loop import NonFiniteLossWarning, train
from .signals import TrainingInterrupted


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `train` to the `lstmc` command's subparsers (sets fn=cli_main)."""
    p = subparsers.add_parser(
        "train", help="train a model on a built-in task or your own data file with a compiled cell",
        description="Train [embedding] -> Recurrent(CELL) -> linear head on a built-in task or on a CSV, Parquet "
                    "or NPZ file (--data). Options left out take the task's defaults. Under torchrun, trains "
                    "data-parallel (DDP).",
        epilog="Your own data: `lstmc train --data co2.csv --predict co2 --fillna ffill` forecasts a column "
               "(RMSE vs persistence); `lstmc train --data runs.csv --sequence id --label cls` classifies "
               "sequences (accuracy vs the majority class). Rows are in time order; splits are chronological "
               "and normalisation uses the training rows only. See `python -m pydoc lstmc.datafile`.")
    p.add_argument("--cell", default="lstm", help="built-in cell name or path to a .cell file (default lstm)")
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help=f"a built-in task (default {DEFAULT_TASK}); not with --data")
    p.add_argument("--length", type=int, default=None,
                   help="adding: sequence length T (50); copy: delay T (20); charlm: window (100); "
                        f"sunspots: window (20); --data forecasting: window in rows ({DEFAULT_WINDOW})")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (task default)")
    p.add_argument("--size", action="append", default=None, metavar="NAME=N", dest="sizes",
                   help="a size of the cell's states, e.g. --size P=32 for lstmp's projection (default: half "
                        "the hidden size); repeat for several")
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
    add_data_arguments(p, "train")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON (without per-step losses)")
    p.set_defaults(fn=cli_main)
    return p


def add_data_arguments(p, verb: str) -> None:
    """The options that describe a data file (--data and the rest of lstmc/datafile.py's options),
    shared by `lstmc train` and `lstmc tune` (`verb`: what the command does with the file)."""
    g = p.add_argument_group("your own data (--data)")
    g.add_argument("--data", default=None, metavar="FILE",
                   help=f"{verb} on a .csv, .parquet (needs pyarrow) or .npz file instead of --task; its rows in "
                        f"time order")
    g.add_argument("--predict", default=None, metavar="COL",
                   help="forecasting: the column to predict (default: the only numeric column)")
    g.add_argument("--horizon", type=int, default=None, metavar="H",
                   help="forecasting: predict COL H rows after the window's last row (default 1)")
    g.add_argument("--label", default=None, metavar="COL",
                   help="classification: the column holding each sequence's class (names or numbers)")
    g.add_argument("--sequence", default=None, metavar="COL",
                   help="classification: rows with the same value in COL form one sequence (file order); "
                        "without it each row is one sequence of its --inputs values")
    g.add_argument("--inputs", default=None, metavar="A,B,...",
                   help="the input columns (default: forecasting, the predicted column alone; classification, "
                        "every numeric column but --label and --sequence)")
    g.add_argument("--split", default=None, metavar="TRAIN,VAL",
                   help=f"chronological (file-order) train and validation fractions; test is the rest "
                        f"(default {DEFAULT_SPLIT})")
    g.add_argument("--fillna", default=None, choices=FILLNA,
                   help="forecasting: missing values are an error (default), carried forward (ffill), linearly "
                        "interpolated (uses the next value) or their rows dropped")


def parse_sizes(items) -> dict | None:
    """--size NAME=N options as {NAME: N} (None without any); a malformed one is a ValueError."""
    if not items:
        return None
    out = {}
    for item in items:
        name, eq, n = item.partition("=")
        if not eq or not name.strip().isidentifier() or not n.strip().isdigit() or int(n) < 1:
            raise ValueError(f"--size {item}: write NAME=N with a positive whole number, e.g. --size P=32")
        if name.strip() in out:
            raise ValueError(f"--size {name.strip()} is given twice ({name.strip()}={out[name.strip()]} and {item}): "
                             f"give each size once")
        out[name.strip()] = int(n)
    return out


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    if "sizes" in kw:
        kw["sizes"] = parse_sizes(kw["sizes"])
    kw["progress"] = not args.no_progress
    if kw.get("task") is None:
        kw.pop("task", None)
    elif kw.get("data") is not None:
        raise ValueError(f"--task {kw['task']} and --data {kw['data']} exclude each other: give one")
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
    """`python -m lstmc.train ...`: `lstmc train ...` without the rest of the CLI (the word `train` may
    be left out). Exit status 2, with one line on stderr, when an option value, a file or a
    checkpoint is wrong (ValueError, FileNotFoundError, CheckpointError)."""
    from ..subcommand import run_alone

    return run_alone("train", add_parser, argv)
