"""Trust in training files and runs: a checkpoint is loaded without running code (a planted payload
never runs), a damaged one gives one clear line (no traceback from the CLI), and a loss that
becomes NaN or infinite stops the run at that step, saying what to do."""

import dataclasses
import json
import math
import subprocess
import sys
import warnings

import pytest
import torch

from lstmc.train import CheckpointError, NonFiniteLossWarning, TrainConfig, load_checkpoint, train

SMALL = dict(progress=False, hidden=16)
RUN = dict(task="sunspots", steps=6, eval_every=3, **SMALL)
CLI = ["--task", "sunspots", "--hidden", "16", "--steps", "6", "--eval-every", "3", "--no-progress"]


class Payload:
    """Unpickling this creates `marker`: what an attacker's pickle would do, minus the harm."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _lstmc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lstmc", *args], capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------- checkpoints

def test_a_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    """What train writes loads with weights_only=True and names no global at all (nothing to
    allow-list); RNG states included, as tensors and plain lists."""
    train(TrainConfig(out=str(tmp_path), stop_at=3, layers=2, dropout=0.3, **RUN))
    path = tmp_path / "checkpoint.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    ck = torch.load(path, weights_only=True)
    assert ck["loop"]["step"] == 3 and isinstance(ck["rng"][0]["numpy"][1], list)
    assert load_checkpoint(path)["version"] == ck["version"]


def test_a_planted_checkpoint_payload_never_runs(tmp_path):
    marker = tmp_path / "marker"
    train(TrainConfig(out=str(tmp_path), stop_at=3, **RUN))
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ck["loop"] = Payload(marker)                                  # a well-formed checkpoint, plus a payload
    torch.save(ck, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError) as e:
        train(TrainConfig(out=str(tmp_path), resume=True, **RUN))
    msg = str(e.value)
    assert f"{tmp_path / 'checkpoint.pt'} is not a readable lstmc checkpoint" in msg
    assert "io.open" in msg and "could run code" in msg and "\n" not in msg
    assert not marker.exists()
    r = _lstmc("train", *CLI, "--out", str(tmp_path), "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("lstmc: error: ") and "could run code" in r.stderr
    assert not marker.exists()
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)     # the payload is real: loaded unsafely, it runs
    assert marker.exists()


def _damaged(kind: str, good: bytes) -> bytes:
    return {"truncated": good[: len(good) // 2], "garbage": bytes(range(256)) * 8, "empty": b"",
            "text": b"checkpoint? no\n", "overwritten": good[:100] + b"\x07" * 200 + good[300:]}[kind]


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "text", "overwritten"])
def test_a_damaged_checkpoint_is_one_clear_line(tmp_path, kind):
    train(TrainConfig(out=str(tmp_path), stop_at=3, **RUN))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(_damaged(kind, path.read_bytes()))
    with pytest.raises(CheckpointError) as e:
        train(TrainConfig(out=str(tmp_path), resume=True, **RUN))
    msg = str(e.value)
    assert msg.startswith(f"{path} is not a readable lstmc checkpoint (") and "\n" not in msg
    assert "truncated or corrupted" in msg and "delete it (or choose another --out)" in msg
    assert isinstance(e.value, ValueError)                        # the CLI's error class: no traceback


@pytest.mark.parametrize("content, says", [
    ([1, 2, 3], "not one lstmc train wrote"),
    ({"version": 1, "model": {}}, "format version 1, this lstmc reads version 2"),
    ({"version": 2, "model": {}}, "it lacks config, world_size"),
])
def test_a_foreign_or_old_checkpoint_is_refused_clearly(tmp_path, content, says):
    torch.save(content, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_a_checkpoint_that_does_not_fit_is_one_clear_line(tmp_path):
    train(TrainConfig(out=str(tmp_path), stop_at=3, **RUN))
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ck["model"] = {"not": torch.zeros(1)}
    torch.save(ck, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="its contents do not fit this run"):
        train(TrainConfig(out=str(tmp_path), resume=True, **RUN))


def test_the_cli_says_a_truncated_checkpoint_in_one_line(tmp_path):
    train(TrainConfig(out=str(tmp_path), stop_at=3, **RUN))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    for entry in (["-m", "lstmc", "train"], ["-m", "lstmc.train"]):
        r = subprocess.run([sys.executable, *entry, *CLI, "--out", str(tmp_path), "--resume"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"lstmc: error: {path} is not a readable lstmc checkpoint")


def test_resume_still_continues_bit_for_bit_with_dropout_and_numpy_rng(tmp_path):
    """weights_only checkpoints keep exact resume (the RNG states go through plain lists)."""
    import numpy as np

    cfg = TrainConfig(task="copy", length=5, layers=2, dropout=0.3, steps=12, batch=16, eval_every=4, **SMALL)
    np.random.seed(7)
    full = train(cfg)
    np.random.seed(7)
    train(cfg, out=str(tmp_path), stop_at=5)
    state = np.random.get_state()
    np.random.seed(123)                                            # disturb it: resume must restore it
    rest = train(cfg, out=str(tmp_path), resume=True)
    assert rest.train_losses == full.train_losses
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    name, keys, pos, has_gauss, gauss = ck["rng"][0]["numpy"]
    assert name == state[0] and len(keys) == 624


# --------------------------------------------------------------------------------------- NaN loss

DIVERGE = dict(task="sunspots", steps=200, optimizer="sgd", clip=0.0, **SMALL)


def test_a_non_finite_loss_stops_training_at_that_step(tmp_path):
    """lr 1000 without clipping: the loss overflows within a few steps. Training stops there (not
    200 steps later), before that step's update, warns, and reports the step and what to do; the
    test metric is that of the best validation before it, like any early stop."""
    with pytest.warns(NonFiniteLossWarning) as rec:
        r = train(TrainConfig(lr=1e3, eval_every=5, out=str(tmp_path), **DIVERGE))
    assert r.diverged and r.stopped_early and not r.interrupted
    n = r.steps + 1                                                # the step whose loss was not finite
    assert 5 < n < 200 and len(r.train_losses) == r.steps and all(math.isfinite(v) for v in r.train_losses)
    msg = str(rec[0].message)
    assert msg == r.stop_reason
    assert msg.startswith(f"training loss became ") and f"at step {n};" in msg
    assert "Lower the learning rate (--lr, now 1000)" in msg and "clip gradients (--clip 1.0; now off)" in msg
    assert r.best_step >= 5 and math.isfinite(r.test_metric)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["diverged"] and saved["steps"] == r.steps and (tmp_path / "model.pt").exists()
    assert f"at step {n}" in r.summary()


def test_a_loss_that_is_never_finite_stops_at_once_without_a_test(tmp_path, monkeypatch):
    """NaN targets: the very first loss is NaN. Nothing was validated: no test metric, no model.pt."""
    import lstmc.train.loop as lt          # the module whose train() looks the task up (task_of)
    from lstmc import tasks

    task = tasks.get_task("sunspots")
    x, y = task.data["train"]
    bad = dataclasses.replace(task, data={**task.data, "train": (x, y * float("nan"))})
    monkeypatch.setattr(lt, "task_of", lambda cfg: bad)
    with pytest.warns(NonFiniteLossWarning, match="became nan at step 1;"):
        r = train(TrainConfig(lr=1e-3, eval_every=5, out=str(tmp_path), **DIVERGE))
    assert r.diverged and r.steps == 0 and r.train_losses == [] and math.isnan(r.test_metric)
    assert "no validation before it: not tested" in r.summary()
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "model.pt").exists()


def test_a_finite_run_is_not_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)
        r = train(TrainConfig(**RUN))
    assert not r.diverged and r.steps == 6


def test_the_cli_exits_1_naming_the_step(tmp_path):
    r = _lstmc("train", "--task", "sunspots", "--hidden", "16", "--steps", "200", "--eval-every", "5", "--lr", "1000",
               "--optimizer", "sgd", "--clip", "0", "--no-progress", "--out", str(tmp_path))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "NonFiniteLossWarning" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("lstmc: error: ")]
    assert len(err) == 1 and "training loss became" in err[0] and "at step" in err[0] and "--lr" in err[0]
    steps = json.loads((tmp_path / "metrics.json").read_text())["steps"]
    assert f"at step {steps + 1};" in err[0] and steps < 200
