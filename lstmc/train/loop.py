"""The training loop: `train` resolves the config, joins the process group and sets the thread budget,
then a `_Loop` runs the steps and returns the TrainResult.

One loop, in this order per step: read the step's batch (a pure function of seed and step; with the
task's extra per-step inputs of the same rows), this rank's shard of it, forward, loss, backward (DDP
averages the gradients), clip, optimizer step, per-step schedule. Every `eval_every` steps: evaluate
the validation split, log, early stopping, plateau schedule, checkpoint. A training loss that becomes
NaN or infinite stops the run before that step's update (TrainResult.diverged, NonFiniteLossWarning).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..tasks import Task
from .checkpoint import gather_rng_states, restore, save, save_model, seed_all
from .config import TrainConfig, TrainResult, config_dict, task_of
from .distributed import Dist, all_mean, any_rank, broadcast, init_distributed, shard
from .evaluation import evaluate as evaluate_split
from .evaluation import validate_gradients
from .models import build_model, count_params
from .optim import make_optimizer, make_scheduler
from .placement import thread_budget, torch_device
from .report import write_outputs
from .signals import StopFlag, TrainingInterrupted


class NonFiniteLossWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite (TrainResult.diverged)."""


def train(config: TrainConfig | None = None, *, on_evaluate=None, **overrides) -> TrainResult:
    """Train as `config` says; returns a TrainResult (metrics history, final val/test metric,
    baseline, steps, wall time, parameter count). Under torchrun (WORLD_SIZE > 1) every process
    calls this; only rank 0 writes files and shows progress; every rank returns the same result.

    `on_evaluate(step, val_metric)` is called after every validation (on every rank, with the same
    numbers); when it returns a string the run stops there with that string as its stop reason
    (`lstmc tune` prunes trials this way). The returned result also carries the trained model, with
    the weights of the best validation, as `result.model` (an attribute, not a field: it is never
    serialised; after an interruption or a divergence, the weights of the last step)."""
    import torch
    import torch.distributed as dist

    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    task = task_of(cfg)     # a built-in task, or the data file cfg.data
    cfg = cfg.resolved(task)
    d = init_distributed(cfg.device)
    threads = torch.get_num_threads()
    try:
        with thread_budget(cfg, d):
            return _train(cfg, task, d, on_evaluate)
    finally:
        torch.set_num_threads(threads)
        if d.owned:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, task: Task, d: Dist, on_evaluate=None) -> TrainResult:
    res = _Loop(cfg, task, d, on_evaluate).run()
    if res.diverged:        # warned here, so that the warning points at the caller of train()
        warnings.warn(res.stop_reason, NonFiniteLossWarning, stacklevel=3)
    return res


def _diverged_message(loss: float, step: int, cfg: TrainConfig) -> str:
    clip = f"clip gradients harder (--clip, now {cfg.clip:g})" if cfg.clip else "clip gradients (--clip 1.0; now off)"
    return (f"training loss became {loss} at step {step}; stopped before its update. Lower the learning rate "
            f"(--lr, now {cfg.lr:g}) or {clip}")


class _Loop:
    """One run: the model, optimizer, schedule and sampler, and the bookkeeping a checkpoint saves
    (`self.loop`: the step counter, history, losses, best metric...). `__init__` builds them all
    (and restores them on resume), `run` steps until the end or a stop, then `finish` tests the
    best weights and writes the outputs."""

    def __init__(self, cfg: TrainConfig, task: Task, d: Dist, on_evaluate=None):
        from torch import nn

        self.cfg, self.task, self.d = cfg, task, d
        self.on_evaluate = on_evaluate
        self.device = torch_device(cfg.device, d)
        self.out = out = Path(cfg.out) if cfg.out else None
        self.write = out is not None and d.main         # only rank 0 writes files
        if self.write:
            out.mkdir(parents=True, exist_ok=True)
        if cfg.batch % d.world:
            raise ValueError(f"batch {cfg.batch} must be a multiple of the number of processes ({d.world})")

        # Same initial weights on every rank; then each rank its own dropout stream.
        seed_all(cfg.seed)
        self.model = model = build_model(cfg, task).to(self.device)
        if d.rank:
            seed_all(cfg.seed + 1_000_003 * d.rank)
        self.net = model
        if d.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = make_optimizer(cfg, model.parameters())
        self.sched, self.per_step = make_scheduler(cfg, self.opt, task)
        self.sampler = task.sampler(cfg.seed)
        self.cell_name = getattr(model.rnn, "cell_name", None) or model.rnn.cell.name
        if cfg.validate and not hasattr(model.rnn, "cell_params"):
            raise ValueError("--validate compares lstmc's compiled cell with its float64 reference; backend 'native' "
                             "(torch.nn) has none")

        self.loop = {"step": 0, "history": [], "train_losses": [], "best_metric": None, "best_step": 0,
                     "bad_evals": 0, "validations": [], "elapsed": 0.0, "train_time": 0.0, "stop_reason": None}
        self.best_state = None          # the weights of the best validation so far
        self.ckpt_path = out / "checkpoint.pt" if out else None
        if cfg.resume and self.ckpt_path.exists():
            self.loop, self.best_state = restore(self.ckpt_path, cfg, d, model, self.opt, self.sched)
            if d.main and cfg.progress:
                print(f"resuming from {self.ckpt_path} at step {self.loop['step']}", file=sys.stderr)
        elif cfg.resume and d.main and cfg.progress:
            print(f"no checkpoint in {out}: starting from step 0", file=sys.stderr)
        if self.loop["history"]:    # resumed: the stopping rules may have changed (patience and target may)
            self.loop["stop_reason"] = self.stop_reason(self.loop["history"][-1]["val_metric"])

        self.interrupted = ""   # why the loop stopped before its end: "signal" or "stop-at N"
        self.diverged = ""      # the message, once the training loss became NaN or infinite
        self.last_val = None    # the latest validation metric, for the progress bar

    # ---------------------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg, loop = self.cfg, self.loop
        self.bar = tqdm(total=cfg.steps, initial=loop["step"], disable=not (self.d.main and cfg.progress),
                        unit="step", dynamic_ncols=True, desc=f"{self.task.name}/{self.cell_name}", file=sys.stderr,
                        mininterval=0.25)
        self.t_start = time.perf_counter()
        self.elapsed0 = loop["elapsed"]         # wall time of the segments before a resume
        self.seg_t0 = time.perf_counter()       # steps/s is measured between evaluations
        self.seg_steps = 0
        self.net.train()
        with StopFlag(enabled=self.out is not None) as flag:
            while loop["step"] < cfg.steps and not loop["stop_reason"] and not self.interrupted:
                self.step(flag)
        self.bar.close()
        loop["elapsed"] = self.elapsed0 + time.perf_counter() - self.t_start
        return self.finish()

    def step(self, flag: StopFlag) -> None:
        """One optimizer step, then whatever falls due after it: gradient check, validation,
        checkpoint, progress. Sets loop["stop_reason"] or self.interrupted to end the loop."""
        import torch

        cfg, task, d, loop = self.cfg, self.task, self.d, self.loop
        step = loop["step"]
        t0 = time.perf_counter()
        idx = self.sampler.indices(step, cfg.batch)
        x, y = task.batch("train", idx)
        x, y = shard(x, d.rank, d.world).to(self.device), shard(y, d.rank, d.world).to(self.device)
        u = {k: shard(v, d.rank, d.world).to(self.device) for k, v in task.batch_inputs("train", idx).items()}
        loss = task.loss_fn(self.net(x, u), y)
        step_loss = all_mean(float(loss.detach()), d)     # the same on every rank
        if not math.isfinite(step_loss):
            # stop before this step's update (the weights stay the last finite ones), like Keras'
            # TerminateOnNaN; no checkpoint of this step: the last one stays the last good state
            loop["stop_reason"] = self.diverged = _diverged_message(step_loss, step + 1, cfg)
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.opt.step()
        if self.sched is not None and self.per_step:
            self.sched.step()
        loop["train_losses"].append(step_loss)
        loop["step"] = step = step + 1
        loop["train_time"] += time.perf_counter() - t0
        self.seg_steps += 1

        if cfg.validate and step % cfg.validate == 0 and d.main:
            self.check_gradients(x, y, u, step)

        loop["elapsed"] = self.elapsed0 + time.perf_counter() - self.t_start
        over = bool(cfg.time_budget) and loop["elapsed"] >= cfg.time_budget
        stop_req, over = any_rank([flag.set, over], d)     # every rank decides the same

        evaluated = step % cfg.eval_every == 0 or step == cfg.steps or over
        if evaluated:
            self.evaluate(step, over)
        at_stop = cfg.stop_at is not None and step >= cfg.stop_at
        if stop_req or at_stop:
            self.interrupted = "signal" if stop_req else f"stop-at {cfg.stop_at}"
        ckpt_due = self.out is not None and (step % cfg.checkpoint_every == 0 or self.interrupted
                                             or loop["stop_reason"] or step == cfg.steps)
        loop["elapsed"] = self.elapsed0 + time.perf_counter() - self.t_start
        if ckpt_due:
            self.checkpoint()
            if self.write and evaluated:
                write_outputs(self.out, self.result(), plot=False)
        self.progress(step, evaluated)

    def check_gradients(self, x, y, inputs: dict, step: int) -> None:
        """--validate: this batch's gradients against the float64 reference backend's (rank 0)."""
        v = validate_gradients(self.model, self.task, x, y, inputs)
        v["step"] = step
        self.loop["validations"].append(v)
        if self.cfg.progress:
            self.bar.write(f"step {step}: {v['backend']} gradients vs float64 reference: max diff "
                           f"{v['max_diff']:.2e} ({v['param']}), loss diff {v['loss_diff']:.1e}",
                           file=sys.stderr)

    def evaluate(self, step: int, over: bool) -> None:
        """Validate, log a history row, keep the best weights, step a plateau schedule and decide
        on early stopping (`over`: the time budget is used up)."""
        cfg, task, loop = self.cfg, self.task, self.loop
        vl, vm = evaluate_split(self.model, task, "val", self.device)
        vl, vm = broadcast([vl, vm], self.d)
        self.last_val = vm
        now = time.perf_counter()
        since = loop["train_losses"][loop["history"][-1]["step"] if loop["history"] else 0:]
        row = {"step": step, "epoch": round(self.sampler.epoch(step, cfg.batch), 4),
               "train_loss": float(np.mean(since)) if since else math.nan, "val_loss": vl,
               "val_metric": vm, "lr": self.opt.param_groups[0]["lr"],
               "elapsed_s": round(self.elapsed0 + now - self.t_start, 3),
               "steps_per_s": round(self.seg_steps / max(now - self.seg_t0, 1e-9), 3),
               "grad_check": loop["validations"][-1]["max_diff"] if loop["validations"] else ""}
        loop["history"].append(row)
        self.seg_t0, self.seg_steps = now, 0
        if task.better(vm, loop["best_metric"]):
            loop["best_metric"], loop["best_step"], loop["bad_evals"] = vm, step, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            loop["bad_evals"] += 1
        if self.sched is not None and not self.per_step:
            self.sched.step(vm)
        loop["stop_reason"] = self.stop_reason(vm)
        if self.on_evaluate is not None and not loop["stop_reason"]:
            why = self.on_evaluate(step, vm)
            if why:
                loop["stop_reason"] = str(why)
        if over and not loop["stop_reason"]:
            loop["stop_reason"] = f"time budget of {cfg.time_budget:g} s used"

    def stop_reason(self, vm) -> str | None:
        """Early stopping: patience exhausted, or the target reached (None: go on)."""
        cfg, task, loop = self.cfg, self.task, self.loop
        if cfg.patience and loop["bad_evals"] >= cfg.patience:
            return f"no better validation {task.metric} in {cfg.patience} evaluations"
        if cfg.target is not None and vm is not None and not task.better(cfg.target, vm):
            return f"validation {task.metric} reached the target {cfg.target:g}"
        if cfg.time_budget and loop["elapsed"] >= cfg.time_budget:
            return f"time budget of {cfg.time_budget:g} s used"
        return None

    def checkpoint(self) -> None:
        """Every rank's RNG states gathered (a collective), then rank 0 writes checkpoint.pt."""
        rngs = gather_rng_states(self.d)
        if not self.write:
            return
        save(self.ckpt_path, self.cfg, self.d, self.model, self.opt, self.sched, self.sampler, self.loop,
             self.best_state, rngs)

    def progress(self, step: int, evaluated: bool) -> None:
        if self.d.main and self.cfg.progress:
            self.bar.update(1)
            if step % 10 == 0 or evaluated:
                post = {"loss": f"{np.mean(self.loop['train_losses'][-50:]):.4f}"}
                if self.last_val is not None:
                    post[f"val_{self.task.metric}"] = f"{self.last_val:.4f}"
                self.bar.set_postfix(post, refresh=False)

    # -------------------------------------------------------------------------------- the end

    def finish(self) -> TrainResult:
        """The result once the loop ended: interrupted (checkpoint written; TrainingInterrupted for a
        signal), diverged before any validation (nothing to test), or tested with the best weights."""
        out, loop, cfg = self.out, self.loop, self.cfg
        if self.interrupted:
            res = self.result(interrupted=self.interrupted)
            if self.write:
                write_outputs(out, res)
                print(f"stopped at step {loop['step']}; checkpoint {self.ckpt_path} (continue with --resume)",
                      file=sys.stderr)
            if self.interrupted == "signal":
                raise TrainingInterrupted(res)
            return res

        if self.diverged and self.best_state is None:    # no validated weights to test, nor to save as model.pt
            res = self.result()
            if self.write:
                write_outputs(out, res)
            return res
        model = self.model
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        test = evaluate_split(model, self.task, "test", self.device)
        test = tuple(broadcast(list(test), self.d))
        res = self.result(test=test)
        if self.write:
            save_model(out / "model.pt", cfg, model, loop["best_step"], task=self.task)
            write_outputs(out, res)
        return res

    def result(self, interrupted: str = "", test=(math.nan, math.nan)) -> TrainResult:
        cfg, task, loop, model = self.cfg, self.task, self.loop, self.model
        tt = loop["train_time"]
        res = TrainResult(
            config=config_dict(cfg), task=task.name, cell=self.cell_name,
            metric=task.metric, higher_is_better=task.higher_is_better, baseline=task.baseline("test"),
            baseline_val=task.baseline("val"), baseline_name=task.baseline_name,
            val_metric=loop["best_metric"] if loop["best_metric"] is not None else math.nan,
            test_metric=test[1], test_loss=test[0], best_step=loop["best_step"], steps=loop["step"],
            wall_time=loop["elapsed"], steps_per_s=(loop["step"] / tt if tt > 0 else 0.0),
            params=count_params(model), rnn_params=count_params(model.rnn), history=list(loop["history"]),
            train_losses=list(loop["train_losses"]), validations=list(loop["validations"]),
            stopped_early=loop["stop_reason"] is not None, stop_reason=interrupted or loop["stop_reason"] or "",
            interrupted=bool(interrupted), diverged=bool(self.diverged), world_size=self.d.world,
            backend=str(getattr(model.rnn, "last_backend", None) or cfg.backend),
            out=str(self.out) if self.out else None)
        res.model = model    # not a field (never serialised); after a test it holds the best validation's weights
        return res
