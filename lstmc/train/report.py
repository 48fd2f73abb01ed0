"""A run's files for people: metrics.csv (one row per evaluation), metrics.json (the TrainResult)
and curves.png (training and validation loss, validation metric), each written atomically."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .config import TrainResult

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
