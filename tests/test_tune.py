"""`lstmc tune`: workers sharing one SQLite study, the reports, best.txt reproducing the best trial,
the samplers, pruning, diverged trials, tuning on a data file (--data), and the one-line errors.

Every run is small: the adding problem with T=10, 60 steps, a validation every 20 steps, hidden
sizes 8..24 (a trial trains in well under a second once the kernels are compiled); the data file is
statsmodels' yearly sunspots (309 rows) as a CSV, window 10, 40 steps."""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import math
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from lstmc import tune as tune_mod
from lstmc.tasks import TASKS
from lstmc.tune import GRID, TuneOptions, main, open_study, tune, write_reports

SMALL = ["--task", "adding", "--length", "10", "--steps", "60", "--eval-every", "20", "--hidden-range", "8,24",
         "--no-progress"]


def small_options(out: Path, **kw) -> TuneOptions:
    o = dict(task="adding", length=10, steps=60, eval_every=20, hidden_range=(8, 24), progress=False, out=str(out))
    o.update(kw)
    return TuneOptions(**o)


def load(out: Path, name: str = "lstmc-adding"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two `python -m lstmc.tune` processes started together on one SQLite study, 2 trials each."""
    out = tmp_path_factory.mktemp("tune") / "out"
    cmd = [sys.executable, "-m", "lstmc.tune", *SMALL, "--trials", "2", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append(SimpleNamespace(pid=p.pid, rc=p.returncode, stdout=stdout, stderr=stderr))
    return out, results


def test_two_workers_share_one_study(two_workers):
    out, workers = two_workers
    for w in workers:
        assert w.rc == 0, w.stderr
        assert "Traceback" not in w.stderr
    study = load(out)
    trials = study.get_trials()
    assert len(trials) == 4
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    # each trial says which process ran it: both workers ran trials, 2 each
    pids = [int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials]
    assert sorted(pids) == sorted([workers[0].pid, workers[0].pid, workers[1].pid, workers[1].pid])
    # the sampler is seeded per trial number: the two workers (same --seed) did not repeat each other
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    for t in trials:
        cfg = t.user_attrs["config"]
        assert (cfg["task"], cfg["length"], cfg["steps"], cfg["eval_every"], cfg["seed"]) == ("adding", 10, 60, 20, 0)
        assert cfg["cell"] == t.params["cell"] and cfg["hidden"] == t.params["hidden"]
        assert cfg["dropout"] == t.params.get("dropout", 0.0)      # dropout is drawn only with 2 layers
        assert ("dropout" in t.params) == (t.params["layers"] == 2)
        assert 8 <= t.params["hidden"] <= 24
    for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        assert math.isfinite(t.user_attrs["test_metric"]) and t.user_attrs["outcome"] == "complete"
        assert t.value == min(t.intermediate_values.values())     # the objective is the best validation
        assert t.user_attrs["steps_run"] == 60


def test_reports_after_a_run(two_workers):
    out, workers = two_workers
    study = load(out)
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["number"]) for r in rows) == [0, 1, 2, 3]
    summary = (out / "summary.md").read_text()
    assert f"4 trials: {len(complete)} complete" in summary
    assert (out / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if len(complete) >= 2:
        assert (out / "param_importances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for w in workers:
        assert "outputs in" in w.stdout and "summary.md trials.csv" in w.stdout
    if complete:
        assert "best.txt" in workers[0].stdout and (out / "best.txt").exists()


def test_best_command_reproduces_the_best_trial(two_workers):
    """best.txt, parsed by `lstmc train`'s own parser and trained again in this process, gives the
    best trial's validation metric exactly: training on the CPU is bitwise deterministic for a seed
    (the batches are a pure function of seed and step; the same kernels, the same thread budget)."""
    from lstmc.train import train
    from lstmc.train.cli import add_parser, config_from_args

    out, _ = two_workers
    best = load(out).best_trial
    words = shlex.split((out / "best.txt").read_text())
    assert words[:2] == ["lstmc", "train"]
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(words[1:] + ["--no-progress"])
    cfg = config_from_args(args)
    for k, v in best.params.items():
        assert getattr(cfg, k) == v, k
    assert (cfg.steps, cfg.eval_every, cfg.seed, cfg.length) == (60, 20, 0, 10)
    res = train(cfg)
    assert res.val_metric == best.value
    assert res.test_metric == best.user_attrs["test_metric"]


def test_worker_with_other_settings_is_refused(two_workers, capsys):
    out, _ = two_workers
    argv = [*SMALL, "--trials", "1", "--out", str(out)]
    argv[argv.index("--steps") + 1] = "30"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was made for" in err and "steps 60" in err
    assert len(load(out).trials) == 4


def test_grid_sampler(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main([*SMALL, "--sampler", "grid", "--cells", "gru", "--trials", "3", "--out", str(out)]) == 0
    trials = load(out).trials
    assert len(trials) == 3
    assert len({t.system_attrs["grid_id"] for t in trials}) == 3          # three different grid points
    for t in trials:
        assert t.params["cell"] == "gru" and t.params["hidden"] in (8, 24)
        for k in ("layers", "lr", "clip", "schedule"):
            assert t.params[k] in GRID[k]
    assert "best:" in capsys.readouterr().out


def test_random_sampler(tmp_path):
    out = tmp_path / "random"
    assert main([*SMALL, "--sampler", "random", "--pruner", "none", "--trials", "2", "--out", str(out)]) == 0
    trials = load(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params != trials[1].params
    assert (out / "best.txt").exists() and (out / "summary.md").exists()


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trial_stops_its_training(tmp_path):
    o = small_options(tmp_path, trials=2)
    study = tune(o, pruner=AlwaysPrune())
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for t in trials:
        assert t.user_attrs["outcome"] == "pruned" and "step 20" in t.user_attrs["reason"]
        assert t.user_attrs["steps_run"] == 20                 # the run stopped at its first validation
        assert list(t.intermediate_values) == [20]
    lines = write_reports(study, o.checked())
    assert not (tmp_path / "best.txt").exists()
    assert any("no completed trial" in line for line in lines)
    assert "2 pruned" in (tmp_path / "summary.md").read_text()


def test_median_pruner_settings():
    pruner = tune_mod.make_pruner(small_options(Path("unused")).checked())
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert pruner._n_startup_trials == 5 and pruner._n_warmup_steps == 15   # a quarter of 60 steps


def test_diverged_trials_do_not_stop_the_study(tmp_path, monkeypatch):
    """A run whose loss became NaN (result.diverged), or whose validation metric is NaN, ends as a
    pruned trial with outcome "diverged" and the reason; the study goes on to the next trial."""
    seen = []

    def fake_train(cfg, on_evaluate):
        nan = math.nan
        if len(seen) == 0:          # the training loss became NaN before any validation
            seen.append(None)
            return SimpleNamespace(config={"cell": cfg.cell}, test_metric=nan, best_step=0, steps=3, wall_time=0.1,
                                   params=1, diverged=True, val_metric=nan,
                                   stop_reason="training loss became nan at step 3; stopped before its update")
        seen.append(on_evaluate(20, nan))    # the validation metric itself is NaN: the hook stops the run
        return SimpleNamespace(config={"cell": cfg.cell}, test_metric=nan, best_step=0, steps=20, wall_time=0.1,
                               params=1, diverged=False, val_metric=nan, stop_reason=seen[-1])

    monkeypatch.setattr(tune_mod, "train", fake_train)
    study = tune(small_options(tmp_path, trials=2))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert [t.user_attrs["outcome"] for t in trials] == ["diverged", "diverged"]
    assert "loss became nan at step 3" in trials[0].user_attrs["reason"]
    assert seen[1] == trials[1].user_attrs["reason"] and "mse became nan at step 20" in seen[1]


def test_runtime_error_fails_one_trial_only(tmp_path, monkeypatch):
    def failing_train(cfg, on_evaluate):
        raise RuntimeError("CUDA out of memory (pretend)")

    monkeypatch.setattr(tune_mod, "train", failing_train)
    o = small_options(tmp_path, trials=2)
    study = tune(o)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]
    write_reports(study, o.checked())
    summary = (tmp_path / "summary.md").read_text()
    assert "2 failed" in summary and "CUDA out of memory (pretend)" in summary


def test_ctrl_c_fails_the_trial_and_starts_no_other(tmp_path, monkeypatch):
    def interrupted_train(cfg, on_evaluate):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_mod, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        tune(small_options(tmp_path, trials=3))
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs["outcome"] == "interrupted"


@pytest.mark.parametrize("argv, words", [
    (["--task", "nosuch"], "unknown task 'nosuch'"),
    (["--task", "adding", "--cells", "lstm,nosuch"], "no built-in cell or file named 'nosuch'"),
    (["--task", "adding", "--trials", "0"], "--trials must be at least 1"),
    (["--task", "adding", "--storage", "nosuchdb://host/x"], "cannot open the storage nosuchdb://host/x"),
    (["--task", "adding", "--storage", "sqlite:////nonexistent-dir/x/study.db"], "cannot open the storage"),
    (["--task", "adding", "--storage", "postgresql://bob:secret@127.0.0.1:1/db"], "cannot open the storage"),
    (["--task", "adding", "--data", "x.csv"], "--task adding and --data x.csv exclude each other: give one"),
    ([], "nothing to tune for: give --task NAME"),
    (["--task", "adding", "--predict", "y", "--split", "0.5,0.2"], "--predict, --split describe a data file"),
    (["--data", "/nonexistent/x.csv"], "data file '/nonexistent/x.csv' does not exist"),
])
def test_errors_are_one_line(argv, words, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstmc: error: ") and words in lines[0], captured.err
    assert "secret" not in captured.err                   # a password in the URL is never shown
    assert not (tmp_path / "out" / "best.txt").exists()


def test_error_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lstmc.tune", "--task", "nosuch", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"lstmc: error: unknown task 'nosuch'; choose one of {', '.join(TASKS)}"]
    assert not (tmp_path / "study.db").exists()


def test_lstmc_help_does_not_import_optuna():
    code = ("import sys, argparse; from lstmc import tune; p = argparse.ArgumentParser(); "
            "tune.add_parser(p.add_subparsers()); print('optuna' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_open_study_joins_the_existing_one(tmp_path):
    o = small_options(tmp_path).checked()
    a = open_study(o)
    b = open_study(o)
    assert a._study_id == b._study_id and b.user_attrs["steps"] == 60


# ---------------------------------------------------------------------------- --data: your own file

DATA_SMALL = ["--predict", "SUNACTIVITY", "--length", "10", "--steps", "40", "--eval-every", "20",
              "--hidden-range", "8,16", "--cells", "lstm,gru", "--pruner", "none", "--no-progress"]


def write_sunspots(path: Path) -> Path:
    from statsmodels.datasets import sunspots

    path.parent.mkdir(parents=True, exist_ok=True)
    sunspots.load_pandas().data.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """`lstmc tune --data sunspots.csv`, 2 trials, in this process (the cells' kernels are compiled
    already); the CSV, OUT, the exit status and what it printed."""
    root = tmp_path_factory.mktemp("tune-data")
    data = write_sunspots(root / "sunspots.csv")
    out = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["--data", str(data), *DATA_SMALL, "--trials", "2", "--out", str(out)])
    return SimpleNamespace(data=data, out=out, rc=rc, stdout=stdout.getvalue())


def test_data_run_completes(data_run):
    assert data_run.rc == 0, data_run.stdout
    sha = hashlib.sha256(data_run.data.read_bytes()).hexdigest()
    study = load(data_run.out, "lstmc-sunspots")            # the default name: lstmc-<file stem>
    assert study.user_attrs["task"] is None and study.user_attrs["data_sha256"] == sha
    assert (study.user_attrs["predict"], study.user_attrs["inputs"], study.user_attrs["length"]) == (
        "SUNACTIVITY", "SUNACTIVITY", 10)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        cfg = t.user_attrs["config"]
        assert (cfg["data"], cfg["task"], cfg["data_sha256"], cfg["predict"]) == (
            str(data_run.data), "sunspots.csv", sha, "SUNACTIVITY")
        assert (cfg["length"], cfg["steps"], cfg["eval_every"], cfg["horizon"]) == (10, 40, 20, 1)
        assert math.isfinite(t.value) and t.value > 0              # validation RMSE, in sunspot numbers
    summary = (data_run.out / "summary.md").read_text()
    assert f"- data: {data_run.data} (sha256 {sha[:12]}...): forecast SUNACTIVITY" in summary
    assert "best validation rmse (lower is better; persistence baseline" in summary
    assert "reproduce: lstmc train --cell" in data_run.stdout and "outputs in" in data_run.stdout


def test_data_best_command_reproduces_the_best_trial(data_run):
    """best.txt names the file with --data and the data options given to tune, not --task; parsed by
    `lstmc train`'s own parser and trained again, it gives the best trial's metrics exactly."""
    from lstmc.train import train
    from lstmc.train.cli import add_parser, config_from_args

    best = load(data_run.out, "lstmc-sunspots").best_trial
    words = shlex.split((data_run.out / "best.txt").read_text())
    assert words[:2] == ["lstmc", "train"] and "--task" not in words
    at = words.index("--data")
    assert words[at:at + 4] == ["--data", str(data_run.data), "--predict", "SUNACTIVITY"]
    assert "--split" not in words and "--fillna" not in words          # not given: left to their defaults
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    cfg = config_from_args(p.parse_args(words[1:] + ["--no-progress"]))
    assert (cfg.data, cfg.predict, cfg.length, cfg.steps, cfg.eval_every) == (str(data_run.data), "SUNACTIVITY",
                                                                            10, 40, 20)
    for k, v in best.params.items():
        assert getattr(cfg, k) == v, k
    res = train(cfg)
    assert res.val_metric == best.value
    assert res.test_metric == best.user_attrs["test_metric"]


def test_data_worker_with_another_file_or_options_is_refused(data_run, tmp_path, capsys):
    """A worker joining the study with a modified copy of the file (same name, elsewhere) is refused
    by its sha256; with the same file but another column to predict, by that option."""
    changed = write_sunspots(tmp_path / "sunspots.csv")
    changed.write_text(changed.read_text().replace("1701.0,11.0", "1701.0,12.0"))
    assert changed.read_bytes() != data_run.data.read_bytes()
    out = ["--out", str(data_run.out)]
    assert main(["--data", str(changed), *DATA_SMALL, "--trials", "1", *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lstmc: error: data file {changed} is not the one study "
                                               f"'lstmc-sunspots' was made with (sha256 "), err
    other = [*DATA_SMALL, "--trials", "1", *out]
    other[other.index("SUNACTIVITY")] = "YEAR"
    assert main(["--data", str(data_run.data), *other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    asked = "was made for inputs SUNACTIVITY, predict SUNACTIVITY; this run asks for inputs YEAR, predict YEAR"
    assert len(err) == 1 and asked in err[0], err
    assert len(load(data_run.out, "lstmc-sunspots").trials) == 2
