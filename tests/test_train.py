"""The training runtime and tasks: data, learning, exact resume, DDP, outputs, CLI.

Every run here is short and seeded; models run lstmc.nn.Recurrent on the numba backend (CPU).
"""

import argparse
import csv
import json
import math
import os
import socket
import tempfile

import numpy as np
import pytest
import torch

from lstmc import tasks
from lstmc.train import (TrainConfig, add_parser, build_model, cli_main, config_from_args, init_distributed,
                         load_checkpoint, shard, train)

TASKS = ["adding", "copy", "digits", "charlm", "sunspots"]
SMALL = dict(progress=False, hidden=16)          # fast settings shared by the short runs


# ------------------------------------------------------------------------------------------- data

def _fresh(name, **kw):
    tasks._cache.clear()
    return tasks.get_task(name, **kw)


@pytest.mark.parametrize("name", TASKS)
def test_task_data_is_deterministic(name):
    a = _fresh(name)
    b = _fresh(name)
    for split in ("train", "val", "test"):
        for u, v in zip(a.data[split], b.data[split]):
            assert u.dtype == v.dtype and torch.equal(u, v)
        assert a.baseline(split) == b.baseline(split)


def _rows(t):
    return {r.tobytes() for r in t.reshape(t.shape[0], -1).numpy()}


@pytest.mark.parametrize("name", TASKS)
def test_task_splits_do_not_overlap(name):
    t = tasks.get_task(name)
    sizes = [t.size(s) for s in ("train", "val", "test")]
    assert min(sizes) > 0
    if name in ("digits", "sunspots"):      # disjoint sample numbers / predicted years
        idx = [set(np.asarray(t.index[s]).tolist()) for s in ("train", "val", "test")]
        assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
        assert sum(len(i) for i in idx) == sum(sizes)
        if name == "sunspots":              # chronological: every test year after every training year
            assert max(idx[0]) < min(idx[1]) and max(idx[1]) < min(idx[2])
    elif name == "charlm":                  # contiguous, non-overlapping stretches of the text
        cuts = [t.cut[s] for s in ("train", "val", "test")]
        assert cuts[0][1] <= cuts[1][0] and cuts[1][1] <= cuts[2][0]
    else:                                   # generated: no identical input sequence in two splits
        tr, va, te = (_rows(t.data[s][0]) for s in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)


def test_task_shapes_and_baselines():
    a = tasks.get_task("adding")
    x, y = a.batch("train", [0, 1, 2])
    assert x.shape == (3, 50, 2) and y.shape == (3, 1)
    assert torch.all(x[:, :, 1].sum(1) == 2)                       # two markers
    assert torch.allclose((x[:, :, 0] * x[:, :, 1]).sum(1, keepdim=True), y)
    assert abs(a.baseline("test") - 1 / 6) < 0.02                  # Var(u1 + u2) = 1/6
    c = tasks.get_task("copy", length=30)
    x, y = c.batch("train", [0])
    assert x.shape == (1, 50) and torch.equal(y[0, -10:], x[0, :10]) and x[0, 10 + 29] == 9
    assert c.baseline("test") == pytest.approx(10 * math.log(8) / 50)
    d = tasks.get_task("digits")
    assert d.data["train"][0].shape[1:] == (8, 8) and 0.05 < d.baseline("test") < 0.2
    ch = tasks.get_task("charlm")
    assert 4.0 < ch.baseline("test") < 5.5 and ch.vocab == len(ch.chars)
    s = tasks.get_task("sunspots")
    assert s.baseline("test") > 10
    assert abs(float(s.data["train"][1].mean())) < 0.2             # normalised with training statistics


def test_sampler_is_a_pure_function_of_seed_and_step():
    s1, s2 = tasks.EpochSampler(10, seed=3), tasks.EpochSampler(10, seed=3)
    stream = np.concatenate([s1.indices(k, 4) for k in range(5)])    # 20 = two epochs, batches straddle them
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert np.array_equal(s2.indices(3, 4), stream[12:16])
    assert not np.array_equal(tasks.EpochSampler(10, seed=4).indices(0, 10), stream[:10])


# --------------------------------------------------------------------------------------- learning

LEARN = {  # a few steps with a generous learning rate: the loss must go down
    "adding": dict(steps=40, lr=1e-2, batch=32),
    "copy": dict(steps=30, lr=1e-2, batch=32, length=10),
    "digits": dict(steps=30, lr=1e-2, batch=32),
    "charlm": dict(steps=30, lr=1e-2, batch=16, length=50),
    "sunspots": dict(steps=40, lr=1e-2, batch=16),
}


@pytest.mark.parametrize("name", TASKS)
def test_each_task_learns(name):
    r = train(TrainConfig(task=name, eval_every=10, **SMALL, **LEARN[name]))
    tl = r.train_losses
    assert len(tl) == LEARN[name]["steps"] and all(math.isfinite(v) for v in tl)
    assert np.mean(tl[-5:]) < 0.9 * np.mean(tl[:5])
    assert math.isfinite(r.test_metric) and r.backend == "numba"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_adding_problem_is_solved(cell):
    """T=50; stops once validation MSE < 0.01 (lstm: 400-750 steps, gru: ~250, a few seconds each)."""
    r = train(TrainConfig(cell=cell, task="adding", length=50, hidden=32, lr=2e-2, batch=64, steps=1500,
                          eval_every=50, target=0.01, progress=False))
    assert r.test_metric < 0.05, r.summary()
    assert r.baseline > 0.15


def test_validate_compares_with_the_float64_reference():
    r = train(TrainConfig(task="adding", length=10, steps=10, validate=5, **SMALL))
    assert [v["step"] for v in r.validations] == [5, 10]
    for v in r.validations:
        assert v["max_diff"] < 1e-4 and v["loss_diff"] < 1e-5 and v["backend"] == "numba"


# ----------------------------------------------------------------------------- checkpoint / resume

@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_continues_bit_for_bit(tmp_path, schedule):
    """Stop after k steps (as a kill would, between checkpoints' steps), resume, and compare every
    following loss with an uninterrupted run: identical bits. Two layers with dropout draw random
    numbers every step; --validate must not disturb them either."""
    cfg = TrainConfig(task="copy", length=5, layers=2, dropout=0.3, steps=24, batch=16, eval_every=4,
                      schedule=schedule, optimizer="adam", **SMALL)
    full = train(cfg)
    part = train(cfg, out=str(tmp_path), stop_at=10, validate=3)
    assert part.interrupted and part.steps == 10 and math.isnan(part.test_metric)
    assert part.train_losses == full.train_losses[:10]
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["loop"]["step"] == 10
    rest = train(cfg, out=str(tmp_path), resume=True)
    assert rest.steps == 24 and not rest.interrupted
    assert rest.train_losses == full.train_losses                  # exact float equality, every step
    assert rest.test_metric == full.test_metric
    assert [h["val_metric"] for h in rest.history] == [h["val_metric"] for h in full.history]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]   # no temporary files left


def test_ctrl_c_writes_a_checkpoint_and_resume_continues_exactly(tmp_path):
    """`lstmc train` stopped by SIGINT mid-run: exit status 130, a checkpoint at the step it reached;
    resumed, the losses equal those of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    args = ["--task", "sunspots", "--hidden", "16", "--eval-every", "10", "--out", str(tmp_path), "--no-progress"]
    p = subprocess.Popen([sys.executable, "-m", "lstmc.train", *args, "--steps", "1000000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / "checkpoint.pt").exists() and time.time() - t0 < 60:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted at step" in out
    k = load_checkpoint(tmp_path / "checkpoint.pt")["loop"]["step"]
    n = k + 15
    p = subprocess.run([sys.executable, "-m", "lstmc.train", *args, "--steps", str(n), "--resume", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    full = train(TrainConfig(task="sunspots", eval_every=10, steps=n, **SMALL))
    assert resumed["steps"] == n and resumed["train_losses"] == full.train_losses


def test_resume_refuses_a_different_run(tmp_path):
    cfg = TrainConfig(task="sunspots", steps=6, eval_every=3, **SMALL)
    train(cfg, out=str(tmp_path), stop_at=3)
    with pytest.raises(ValueError, match="hidden"):
        train(cfg, out=str(tmp_path), resume=True, hidden=8)


# ----------------------------------------------------------------------------------------- outputs

def test_outputs_are_written(tmp_path):
    r = train(TrainConfig(task="sunspots", steps=20, eval_every=5, out=str(tmp_path), **SMALL))
    assert {"metrics.csv", "metrics.json", "curves.png", "checkpoint.pt", "model.pt"} <= set(os.listdir(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(math.isfinite(float(row["val_metric"])) for row in rows)
    js = json.loads((tmp_path / "metrics.json").read_text())
    assert js["test_metric"] == pytest.approx(r.test_metric) and len(js["train_losses"]) == 20
    assert js["baseline_name"] == "persistence" and js["params"] == r.params > 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    cfg = TrainConfig(**saved["config"])
    m = build_model(cfg, tasks.get_task("sunspots", length=cfg.length))
    m.load_state_dict(saved["model"])


def test_training_tools():
    """Optimizers, schedules, weight decay, early stopping, target and time budget do what they say."""
    base = dict(task="sunspots", eval_every=5, **SMALL)
    r = train(TrainConfig(steps=30, optimizer="sgd", schedule="step", weight_decay=1e-4, clip=0.5, **base))
    # StepLR: x0.1 every steps//3 = 10 steps; a row shows the lr after that step
    assert [h["lr"] for h in r.history] == pytest.approx([5e-3, 5e-4, 5e-4, 5e-5, 5e-5, 5e-6])
    r = train(TrainConfig(steps=20, optimizer="rmsprop", schedule="cosine", lr=1e-3, **base))
    assert r.history[-1]["lr"] == pytest.approx(1e-5)
    # SGD with a learning rate far below float32 resolution: nothing improves, patience stops it
    r = train(TrainConfig(steps=100, optimizer="sgd", lr=1e-30, patience=2, **base))
    assert r.stopped_early and r.steps == 15 and r.best_step == 5
    r = train(TrainConfig(steps=100, target=1e6, **base))
    assert r.stopped_early and r.steps == 5 and "target" in r.stop_reason
    r = train(TrainConfig(steps=10**6, time_budget=0.5, **base))
    assert r.stopped_early and "time budget" in r.stop_reason and r.steps < 10**6
    assert r.history[-1]["step"] == r.steps and math.isfinite(r.test_metric)


# ------------------------------------------------------------------------------------------- DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, outdir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = init_distributed("cpu")
    task = tasks.get_task("adding", length=12)
    cfg = TrainConfig(task="adding", length=12, hidden=8).resolved(task)
    torch.manual_seed(0)
    model = build_model(cfg, task).double()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, y = task.batch("train", np.arange(8))
    loss = task.loss_fn(ddp(shard(x, d.rank, d.world).double()), shard(y, d.rank, d.world).double())
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    # and the whole training loop, data-parallel (the process group is reused, not re-created)
    r = train(TrainConfig(task="sunspots", steps=6, batch=8, eval_every=3, seed=1, **SMALL))
    if rank == 0:
        torch.save({"grads": grads, "losses": r.train_losses, "test": r.test_metric, "world": r.world_size},
                   os.path.join(outdir, "ddp.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_gradients_equal_the_combined_batch():
    """2 gloo processes, each on half of a batch of 8: DDP's averaged gradients equal one process's
    gradients of the whole batch (float64), and a DDP training run follows the single-process one."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as outdir:
        mp.spawn(_ddp_worker, args=(2, _free_port(), outdir), nprocs=2, join=True)
        got = torch.load(os.path.join(outdir, "ddp.pt"), weights_only=False)
    task = tasks.get_task("adding", length=12)
    cfg = TrainConfig(task="adding", length=12, hidden=8).resolved(task)
    torch.manual_seed(0)
    model = build_model(cfg, task).double()
    x, y = task.batch("train", np.arange(8))
    task.loss_fn(model(x.double()), y.double()).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][k], p.grad, rtol=1e-12, atol=1e-14)
    single = train(TrainConfig(task="sunspots", steps=6, batch=8, eval_every=3, seed=1, **SMALL))
    assert got["world"] == 2
    np.testing.assert_allclose(got["losses"], single.train_losses, rtol=1e-5)
    assert got["test"] == pytest.approx(single.test_metric, rel=1e-4)


def test_shard_needs_an_even_split():
    assert shard(torch.arange(8), 1, 2).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="split evenly"):
        shard(torch.arange(7), 0, 2)


# ------------------------------------------------------------------------------------------- CLI

def test_cli_train(tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["train", "--cell", "gru", "--task", "digits", "--steps", "10", "--hidden", "8",
                         "--eval-every", "5", "--optimizer", "rmsprop", "--schedule", "plateau", "--lr", "3e-3",
                         "--out", str(tmp_path), "--no-progress"])
    cfg = config_from_args(args)
    assert cfg.cell == "gru" and cfg.hidden == 8 and cfg.schedule == "plateau" and not cfg.progress
    assert args.fn(args) == 0
    out = capsys.readouterr().out
    assert "digits/gru: test accuracy" in out and "majority-class baseline" in out
    assert (tmp_path / "metrics.json").exists()
    assert args.fn is cli_main


@pytest.mark.parametrize("kw, phrase", [
    (dict(optimizer="lbfgs"), "optimizer must be one of"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(hidden=0), "hidden must be a positive integer"),
    (dict(resume=True), "resume needs out"),
    (dict(task="mnist"), "unknown task 'mnist'"),
])
def test_bad_config(kw, phrase):
    with pytest.raises(ValueError, match=phrase):
        train(TrainConfig(**{"progress": False, **kw}))


def test_a_new_cell_from_text_trains(tmp_path):
    """Any cell: one written here (a minimal gated unit), passed as a Cell object."""
    import lstmc

    cell = lstmc.parse("cell tiny_gate\nstate h\nz = sigmoid(W_z @ x + U_z @ h + b_z)\n"
                       "n = tanh(W_n @ x + U_n @ h + b_n)\nh' = z * h + (1 - z) * n\n")
    r = train(TrainConfig(cell=cell, task="sunspots", steps=40, eval_every=20, lr=1e-2, out=str(tmp_path),
                          validate=20, **SMALL))
    assert r.cell == "tiny_gate" and r.validations[-1]["max_diff"] < 1e-4
    assert np.mean(r.train_losses[-5:]) < np.mean(r.train_losses[:5])
    js = json.loads((tmp_path / "metrics.json").read_text())
    assert js["config"]["cell"].startswith("tiny_gate (source sha256 ")
