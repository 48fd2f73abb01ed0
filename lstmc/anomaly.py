"""Anomaly detection with a forecaster: flag the points whose one-step forecast error is too large.

    from lstmc.anomaly import detect
    r = detect(cell="lstm", steps=600, out="runs/anomaly")
    print(r.model.f1, r.baseline.f1, r.threshold)

The same from the shell: `lstmc anomaly --cell lstm --out runs/anomaly` (or `python -m lstmc.anomaly`).

Data. No series with labelled anomalies ships offline (statsmodels' `nile` has one documented level
shift, in 1898: one event in 100 points cannot score a detector), so anomalies of documented kinds
are injected into a real series: the weekly Mauna Loa CO2 record 1958-2001
(`statsmodels.datasets.co2`, 2284 weeks, ppm). It was chosen for its length, its clean physical
signal (a trend, a yearly cycle and weather noise) and because a good forecaster's errors on it are
close to the noise, so an error that stands out really means something. 59 weeks are missing (all
before 1986, a 20-week gap in 1964); they are filled by linear interpolation in time, and no
training sample reads a filled week.

The forecasting task (`lstmc.tasks` registers it as `co2_anomaly`, so `lstmc train --task
co2_anomaly` and the arena can use it as a plain forecasting task). The series is differenced
(d[t] = x[t] - x[t-1], the trend removed as in ARIMA's d=1): a window of W weekly differences
predicts the next one, so forecasting d[t] is forecasting the level x[t] from x[..t-1], and the
error of the difference is the error of the level, in ppm. Samples are split chronologically by the
week they predict (70/15/15: train until Nov 1988, validation until Jun 1995, test to Dec 2001);
differences are normalised with the mean and standard deviation of the training part. Metric: RMSE
in ppm; baseline: persistence (next week = this week, i.e. a difference of 0).

Injection (test part only; train and validation stay clean). With sigma = the standard deviation of
the weekly differences of the training part (0.48 ppm) and a fixed seed (0, `seed=` of the task),
the events are placed uniformly at random among the test weeks, at least GAP (10) weeks apart:

    spike        6 events, 1 week each: the value displaced by ±U(4, 6)·sigma (an additive outlier)
    level_shift  2 events, 8 weeks each: the segment offset by ±U(3, 4)·sigma (a temporary level shift)
    variance     2 events, 12 weeks each: Gaussian noise of standard deviation 2·sigma added

Every week an event changes is labelled with its kind (per point); `task.kinds[i]` is "" for a
clean week i. A week is labelled exactly when the injected series differs from the clean one.

Detection. The trained model (the weights of its best validation) forecasts every validation week
from the observed history; the error e = observed - forecast (ppm) becomes a score z = |e - m| / s,
where m and s are the mean and standard deviation of the validation errors. The threshold is fitted
on the validation scores only: z > k (default k = 3), or, with `quantile=q`, z above the q-quantile
of the validation scores. The test weeks are then scanned in order, each forecast and flagged when
its z is above the threshold; a flagged value is replaced by its forecast in the history that later
forecasts read (`scan`), so that a spike does not spoil the next forecast and a level shift keeps
being flagged, for at most MAX_RUN = 4 flagged weeks in a row (about a month: after that the
detector accepts the observed values, so a lasting shift does not keep it alarmed for ever);
`max_run=0` scores plain one-step errors from the observed history. The same rule and scan applied
to the persistence forecast (threshold fitted on its own validation errors) is the baseline
detector, so one can see what the recurrent model adds; "flag everything" is the chance reference.

Metrics, per point over the test weeks: precision = TP / flagged, recall = TP / anomalous, F1 = their
harmonic mean. Empty ratios are vacuously perfect: precision is 1 when nothing is flagged (no false
alarm was raised), recall is 1 when nothing is anomalous (nothing was missed), and F1 is 0 when
precision + recall is 0; so a detector that flags nothing scores F1 0 whenever there is something to
find. Per kind: the recall of that kind's weeks, and how many of its events had at least one week
flagged. Known limits: a level shift longer than MAX_RUN weeks is flagged for MAX_RUN weeks (then
the model follows the new level) and again when it ends; a variance change is only caught at the
weeks whose added noise is large (a small draw changes a week without making it stand out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# the data and the injected anomalies live with the other tasks' data (lstmc/tasks.py)
from .tasks import EVENTS, GAP, KINDS, co2_task, inject, load_co2

__all__ = ["KINDS", "EVENTS", "GAP", "MAX_RUN", "load_co2", "inject", "co2_task", "prf", "Threshold",
           "fit_threshold", "forecast_errors", "persistence_errors", "scan", "model_forecaster",
           "persistence_forecaster", "Score", "score", "AnomalyResult", "detect", "add_parser", "cli_main", "main"]

MAX_RUN = 4         # flagged weeks in a row replaced by their forecasts in the history (see scan)


# --------------------------------------------------------------------------------------- metrics

def prf(flags, labels) -> tuple[float, float, float]:
    """Point-wise (precision, recall, F1) of boolean flags against boolean labels; empty ratios are
    vacuously perfect (precision 1 with nothing flagged, recall 1 with nothing anomalous) and F1 is 0
    when precision + recall is 0."""
    f = np.asarray(flags, dtype=bool)
    lab = np.asarray(labels, dtype=bool)
    if f.shape != lab.shape:
        raise ValueError(f"flags and labels differ in shape: {f.shape} vs {lab.shape}")
    tp = int((f & lab).sum())
    precision = tp / f.sum() if f.any() else 1.0
    recall = tp / lab.sum() if lab.any() else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


@dataclass
class Threshold:
    """z = |e - center| / scale is flagged when z > z_max; center and scale come from validation."""
    center: float           # mean validation error (ppm)
    scale: float            # standard deviation of the validation errors (ppm)
    z_max: float            # the threshold on z
    rule: str               # how z_max was chosen, in words

    @property
    def ppm(self) -> float:
        """The threshold on |e - center|, in ppm."""
        return self.z_max * self.scale

    def z(self, errors) -> np.ndarray:
        return np.abs(np.asarray(errors, dtype=np.float64) - self.center) / self.scale

    def flag(self, errors) -> np.ndarray:
        return self.z(errors) > self.z_max


def fit_threshold(val_errors, k: float | None = None, quantile: float | None = None) -> Threshold:
    """The threshold from validation errors only: z > k (default 3) or z above the `quantile` of
    the validation z scores (give one of the two)."""
    e = np.asarray(val_errors, dtype=np.float64)
    if k is not None and quantile is not None:
        raise ValueError("give either k or quantile for the threshold, not both")
    if e.size < 2 or not np.isfinite(e).all():
        raise ValueError("the threshold needs at least two finite validation errors")
    center, scale = float(e.mean()), float(e.std())
    if scale <= 0:
        raise ValueError("the validation errors are all equal: no scale to fit a threshold to")
    if quantile is not None:
        if not 0 < quantile < 1:
            raise ValueError(f"the threshold quantile must be in (0, 1), got {quantile}")
        z_max = float(np.quantile(np.abs(e - center) / scale, quantile))
        rule = f"the {quantile:g}-quantile of the validation |error - mean| / std"
    else:
        k = 3.0 if k is None else float(k)
        if not 0 < k < math.inf:        # inf would flag nothing, silently
            raise ValueError(f"the threshold k must be positive and finite, got {k}")
        z_max = k
        rule = f"|error - mean| > {k:g} std, mean and std of the validation errors"
    return Threshold(center, scale, z_max, rule)


@dataclass
class Score:
    """One detector on the test weeks."""
    precision: float
    recall: float
    f1: float
    flagged: int
    recall_by_kind: dict = field(default_factory=dict)     # kind -> recall of its weeks
    events_caught: dict = field(default_factory=dict)      # kind -> [events with a week flagged, events]


def score(flags, kinds, events=(), index=None) -> Score:
    """Score boolean flags against per-point kinds ("" = clean); `events` (dicts with start and
    weeks, positions in the series) with `index` (the series position of each point) add, per kind,
    how many events had at least one point flagged."""
    f = np.asarray(flags, dtype=bool)
    kinds = np.asarray(kinds, dtype=object)
    p, r, f1 = prf(f, kinds != "")
    by_kind = {k: prf(f[kinds == k], np.ones(int((kinds == k).sum()), bool))[1] for k in KINDS if (kinds == k).any()}
    caught = {}
    if index is not None:
        pos = {int(i): j for j, i in enumerate(index)}
        for e in events:
            hit = any(f[pos[i]] for i in range(e["start"], e["start"] + e["weeks"]) if i in pos)
            c = caught.setdefault(e["kind"], [0, 0])
            c[0] += int(hit)
            c[1] += 1
    return Score(p, r, f1, int(f.sum()), by_kind, caught)


# ------------------------------------------------------------------------------------ the detector

def forecast_errors(model, task, split: str) -> np.ndarray:
    """observed - forecast of every sample of `split`, in ppm (the model in eval mode, no gradients)."""
    import torch

    x, y = task.data[split]
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(x.to(device)).cpu().double().reshape(y.shape)
    model.train(was)
    return ((y.double() - out) * task.norm[1]).numpy().ravel()


def persistence_errors(task, split: str) -> np.ndarray:
    """observed - last week's value (the persistence forecast), in ppm."""
    i = task.index[split]
    return task.series[i] - task.series[i - 1]


def scan(forecast, series, targets, threshold: Threshold, max_run: int = MAX_RUN):
    """Flag `targets` (increasing positions in `series`) one after the other, each forecast from a
    cleaned history: a flagged value is replaced by its forecast in the history later forecasts read,
    for at most `max_run` flagged weeks in a row (then the detector accepts the new level).
    `forecast(history, t)` returns the forecast of series[t] from history[:t]. Returns (errors, flags):
    observed - forecast, and whether each target is flagged."""
    if max_run < 0:
        raise ValueError(f"max_run must be >= 0, got {max_run}")
    history = np.array(series, dtype=np.float64)
    errors = np.empty(len(targets))
    flags = np.zeros(len(targets), dtype=bool)
    run = 0
    for j, t in enumerate(targets):
        f = forecast(history, int(t))
        errors[j] = series[t] - f
        flags[j] = bool(threshold.flag(errors[j]))
        run = run + 1 if flags[j] else 0
        if flags[j] and run <= max_run:
            history[t] = f
    return errors, flags


def model_forecaster(model, task):
    """forecast(history, t) for `scan`: the model's forecast of the level at t from the last W weekly
    differences of history[:t]."""
    import torch

    W = task.options["length"]
    mu, sd = task.norm
    device = next(model.parameters()).device
    model.eval()

    def forecast(history, t):
        z = (np.diff(history[t - W - 1:t]) - mu) / sd
        with torch.no_grad():
            out = model(torch.as_tensor(z, dtype=torch.float32).reshape(1, W, 1).to(device))
        return history[t - 1] + float(out.reshape(())) * sd + mu

    return forecast


def persistence_forecaster(history, t):
    """forecast(history, t) for `scan`: last week's value."""
    return history[t - 1]


@dataclass
class AnomalyResult:
    task: str
    cell: str
    steps: int
    hidden: int
    seed: int
    threshold_rule: str
    max_run: int                    # flagged weeks in a row replaced by their forecasts in the history
    model: Score                    # the trained forecaster's detector
    baseline: Score                 # the same rule on persistence-forecast errors
    flag_all: Score                 # flag every test week (the chance reference)
    threshold: float                # z threshold of the model's detector
    threshold_ppm: float            # ... as |error - mean| in ppm
    threshold_center_ppm: float     # the mean validation error (ppm)
    baseline_threshold_ppm: float
    test_rmse: float                # the forecaster's test RMSE (ppm, with the anomalies)
    baseline_rmse: float            # persistence's
    val_rmse: float
    anomalous: int                  # labelled test weeks
    test_weeks: int
    events: list = field(default_factory=list)
    out: str | None = None

    def table(self) -> str:
        rows = [("detector", "precision", "recall", "F1", "flagged")]
        for name, s in ((f"{self.cell} forecast", self.model), ("persistence", self.baseline),
                        ("flag everything", self.flag_all)):
            rows.append((name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.flagged)))
        w = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        lines.append("recall by kind (events with a week flagged):")
        m, b = self.model, self.baseline
        for k in KINDS:
            if k in m.recall_by_kind:
                mc, bc = "/".join(map(str, m.events_caught[k])), "/".join(map(str, b.events_caught[k]))
                lines.append(f"  {k:<12} {self.cell} {m.recall_by_kind[k]:.3f} ({mc})"
                             f"   persistence {b.recall_by_kind[k]:.3f} ({bc})")
        return "\n".join(lines)

    def summary(self) -> str:
        head = (f"{self.task}/{self.cell}: {self.anomalous} of {self.test_weeks} test weeks anomalous "
                f"({len(self.events)} injected events); one-step test RMSE {self.test_rmse:.3f} ppm vs persistence "
                f"{self.baseline_rmse:.3f}")
        thr = (f"threshold: {self.threshold_rule}, fitted on validation only: z > {self.threshold:.3f} "
               f"(|error - mean| > {self.threshold_ppm:.3f} ppm; persistence {self.baseline_threshold_ppm:.3f} ppm)")
        how = (f"test weeks scanned in order; a flagged week's forecast replaces it in later forecasts' history, "
               f"at most {self.max_run} weeks in a row" if self.max_run else
               "test weeks scored by plain one-step errors from the observed history (max-run 0)")
        return f"{head}\n{thr}\n{how}\n\n{self.table()}"


def detect(cell: str = "lstm", steps: int | None = None, hidden: int | None = None, seed: int = 0,
           k: float | None = None, quantile: float | None = None, out: str | None = None, length: int | None = None,
           lr: float | None = None, backend: str = "auto", device: str = "cpu", progress: bool = False,
           threads: int | None = None, max_run: int = MAX_RUN) -> AnomalyResult:
    """Train a forecaster on `co2_anomaly` (options left None take the task's defaults), fit the
    threshold on its validation errors (z > k, default 3, or the `quantile` of the validation
    scores), flag the test weeks and score them, the persistence detector and "flag everything".
    With `out`: anomaly.png, anomaly.json and anomaly.md there."""
    from .tasks import get_task
    from .train import TrainConfig, train

    fit_threshold([0.0, 1.0], k, quantile)      # a wrong rule fails here, before training
    if max_run < 0:
        raise ValueError(f"max-run must be >= 0, got {max_run}")
    task = get_task("co2_anomaly", length=length)
    res = train(TrainConfig(cell=cell, task="co2_anomaly", length=length, steps=steps, hidden=hidden, lr=lr,
                            seed=seed, backend=backend, device=device, progress=progress, threads=threads))
    if res.diverged or not math.isfinite(res.test_metric):
        raise ValueError(f"training did not finish: {res.stop_reason or 'no test metric'}")
    thr = fit_threshold(forecast_errors(res.model, task, "val"), k, quantile)
    bthr = fit_threshold(persistence_errors(task, "val"), k, quantile)
    idx = task.index["test"]
    kinds = task.kinds[idx]
    test_err, flags = scan(model_forecaster(res.model, task), task.series, idx, thr, max_run)
    base_flags = scan(persistence_forecaster, task.series, idx, bthr, max_run)[1]
    result = AnomalyResult(
        task=task.name, cell=res.cell, steps=res.steps, hidden=int(res.config["hidden"]), seed=seed,
        threshold_rule=thr.rule, model=score(flags, kinds, task.events, idx),
        baseline=score(base_flags, kinds, task.events, idx), max_run=max_run,
        flag_all=score(np.ones(len(idx), bool), kinds, task.events, idx),
        threshold=thr.z_max, threshold_ppm=thr.ppm, threshold_center_ppm=thr.center, baseline_threshold_ppm=bthr.ppm,
        test_rmse=res.test_metric, baseline_rmse=res.baseline, val_rmse=res.val_metric,
        anomalous=int((kinds != "").sum()), test_weeks=len(idx), events=list(task.events), out=out)
    if out:
        write_outputs(Path(out), result, task, test_err, flags)
    return result


# --------------------------------------------------------------------------------------- outputs

def write_outputs(out: Path, result: AnomalyResult, task, test_err, flags) -> None:
    """anomaly.json (the result), anomaly.md (the table) and anomaly.png (the plot)."""
    from .files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "anomaly.json", lambda f: f.write(json.dumps(asdict(result), indent=1).encode()))
    md = (f"# Anomaly detection: {result.task} / {result.cell}\n\n```\n{result.summary()}\n```\n\n"
          f"Injected events (sigma = {task.sigma:.3f} ppm, the std of the training part's weekly differences):\n\n"
          "| kind | first week | weeks | size (sigma) |\n|---|---|---|---|\n"
          + "".join(f"| {e['kind']} | {task.times[e['start']]} | {e['weeks']} | {e['size_sigma']} |\n"
                    for e in result.events))
    atomic_write(out / "anomaly.md", lambda f: f.write(md.encode()))
    plot(out / "anomaly.png", result, task, test_err, flags)


def plot(path: Path, result: AnomalyResult, task, test_err, flags) -> None:
    """Top: the test weeks (clean series dotted), true anomalies and flagged weeks marked; bottom: the
    error score z with the threshold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    idx = task.index["test"]
    t, x = task.times[idx], task.series[idx]
    kinds = task.kinds[idx]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    a1.plot(t, task.clean[idx], ":", color="gray", lw=1, label="clean series")
    a1.plot(t, x, color="C0", lw=1, label="series with injected anomalies")
    for kind, color in zip(KINDS, ("C1", "C2", "C4")):
        m = kinds == kind
        if m.any():
            a1.scatter(t[m], x[m], s=40, facecolors="none", edgecolors=color, lw=1.5, label=f"true: {kind}")
    a1.scatter(t[flags], x[flags], marker="x", s=30, color="red", lw=1.5, zorder=3,
               label=f"flagged ({int(flags.sum())})")
    a1.set_ylabel("CO2 (ppm)")
    a1.set_title(f"{result.task} / {result.cell}: precision {result.model.precision:.2f}, recall "
                 f"{result.model.recall:.2f}, F1 {result.model.f1:.2f} (persistence F1 {result.baseline.f1:.2f})")
    a1.legend(fontsize=8, ncol=2)
    a2.plot(t, test_err, color="C0", lw=1, label="forecast error (ppm)")
    c, h = result.threshold_center_ppm, result.threshold_ppm
    a2.axhline(c + h, color="red", ls="--", lw=1, label=f"threshold: validation mean ± {h:.2f} ppm")
    a2.axhline(c - h, color="red", ls="--", lw=1)
    a2.scatter(t[flags], test_err[flags], marker="x", s=20, color="red")
    a2.set_ylabel("error (ppm)")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


# ------------------------------------------------------------------------------------------- CLI

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `anomaly` to the `lstmc` command's subparsers (sets fn=cli_main)."""
    p = subparsers.add_parser(
        "anomaly", help="detect anomalies injected into the weekly Mauna Loa CO2 series with a trained forecaster",
        description="Train a forecaster (CELL) on weekly CO2 differences, fit an error threshold on the clean "
                    "validation weeks, flag the test weeks (which hold injected spikes, level shifts and variance "
                    "changes) and score the flags against the labels, beside the same rule on persistence "
                    "forecasts.")
    p.add_argument("--cell", default="lstm", help="built-in cell name or path to a .cell file (default lstm)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the task's 600)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default: the task's 32)")
    p.add_argument("--length", type=int, default=None, help="window of weekly differences read per forecast (26)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's 5e-3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--k", type=float, default=None,
                   help="flag |error - mean| > K std, mean and std of the validation errors (default 3)")
    g.add_argument("--threshold-quantile", type=float, default=None, metavar="Q",
                   help="flag scores above the Q-quantile (0 < Q < 1) of the validation scores instead")
    p.add_argument("--max-run", type=int, default=MAX_RUN, metavar="N",
                   help=f"replace at most N flagged weeks in a row by their forecasts in the history later "
                        f"forecasts read (default {MAX_RUN}; 0: plain one-step errors)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the injected anomalies are fixed)")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "triton", "torch", "reference", "native"),
                   help="Recurrent's backend; 'native' runs torch.nn.LSTM/GRU (lstm and gru only)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: as lstmc train)")
    p.add_argument("--out", default=None, help="directory for anomaly.png, anomaly.json and anomaly.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cli_main)
    return p


def cli_main(args) -> int:
    """`lstmc anomaly`: train, detect, print the summary and the table. Wrong values raise ValueError
    (the CLI prints it as one line and exits 2)."""
    for name in ("steps", "hidden", "length"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} must be a positive integer, got {v}")
    r = detect(cell=args.cell, steps=args.steps, hidden=args.hidden, seed=args.seed, k=args.k,
               quantile=args.threshold_quantile, out=args.out, length=args.length, lr=args.lr, backend=args.backend,
               device=args.device, progress=not args.no_progress, threads=args.threads, max_run=args.max_run)
    print(r.summary())
    if r.out:
        print(f"\noutputs in {r.out}: anomaly.png anomaly.json anomaly.md")
    return 0


def main(argv=None) -> int:
    """`python -m lstmc.anomaly ...`: `lstmc anomaly ...` alone. Exit status 2, with one line on stderr,
    when an option value or a file is wrong."""
    from .subcommand import run_alone

    return run_alone("anomaly", add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
