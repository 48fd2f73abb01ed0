"""Anomaly detection (lstmc.anomaly): the injected data, the threshold, the metrics, the scan, an
end-to-end run and the CLI. Short, seeded runs on the numba backend (CPU)."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from lstmc import anomaly, tasks
from lstmc.anomaly import EVENTS, GAP, KINDS, Threshold, fit_threshold, prf, scan, score
from lstmc.train import TrainConfig, build_model


@pytest.fixture(scope="module")
def task():
    return tasks.get_task("co2_anomaly")


# ------------------------------------------------------------------------------------------ data

def test_labels_are_exactly_the_changed_weeks(task):
    changed = task.series != task.clean
    labelled = task.kinds != ""
    assert changed.any() and np.array_equal(changed, labelled)
    for kind, (count, weeks, (lo, hi)) in EVENTS.items():
        events = [e for e in task.events if e["kind"] == kind]
        assert len(events) == count and int((task.kinds == kind).sum()) == count * weeks
        for e in events:
            seg = slice(e["start"], e["start"] + e["weeks"])
            assert e["weeks"] == weeks and set(task.kinds[seg]) == {kind}
            delta = (task.series - task.clean)[seg]
            if kind != "variance":      # a constant offset of the documented size
                assert np.allclose(delta, delta[0])
                assert lo - 1e-9 <= abs(delta[0]) / task.sigma <= hi + 1e-9
    starts = sorted((e["start"], e["start"] + e["weeks"]) for e in task.events)
    assert all(b0 + GAP <= a1 for (_, b0), (a1, _) in zip(starts, starts[1:]))


def test_only_the_test_weeks_hold_anomalies_and_the_splits_do_not_leak(task):
    W = task.options["length"]
    first_anomaly = int(np.flatnonzero(task.kinds != "").min())
    idx = task.index
    assert first_anomaly >= idx["test"].min()
    # every week a training or validation sample reads (window and target) is clean
    for split in ("train", "val"):
        assert not (task.kinds[idx[split].max() - W - 1: idx[split].max() + 1] != "").any()
        assert idx[split].max() < first_anomaly
    # chronological: training samples read nothing at or after the first validation target
    assert idx["train"].max() < idx["val"].min() and idx["val"].max() < idx["test"].min()
    assert not any(task.filled[t - W - 1:t + 1].any() for t in idx["train"])
    # the tensors are the documented differences: y = (d[t] - mu) / sd, x = the W before
    mu, sd = task.norm
    for split in ("train", "val", "test"):
        x, y = task.data[split]
        t = idx[split]
        d = task.series[t] - task.series[t - 1]
        assert np.allclose(y.numpy().ravel() * sd + mu, d, atol=1e-4)
        j = len(t) // 2
        window = np.diff(task.series[t[j] - W - 1:t[j]])
        assert np.allclose(x[j, :, 0].numpy() * sd + mu, window, atol=1e-4)


def test_injection_is_seeded_and_bounded():
    clean = np.linspace(0.0, 1.0, 400)
    a = anomaly.inject(clean, 200, 0.1, seed=0)
    b = anomaly.inject(clean, 200, 0.1, seed=0)
    c = anomaly.inject(clean, 200, 0.1, seed=1)
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    assert [e["start"] for e in a[2]] != [e["start"] for e in c[2]]
    assert not (a[0][:200] != clean[:200]).any()
    with pytest.raises(ValueError, match="cannot place"):
        anomaly.inject(clean, 350, 0.1)


# ------------------------------------------------------------------------------------- threshold

def test_threshold_depends_on_the_validation_split_only(task):
    torch.manual_seed(0)
    model = build_model(TrainConfig(task="co2_anomaly", hidden=8).resolved(task), task)
    other = copy.copy(task)
    rng = np.random.default_rng(0)
    x, y = task.data["test"]
    other.data = dict(task.data, test=(torch.randn_like(x), torch.randn_like(y)))
    other.series = task.series.copy()
    other.series[task.index["test"]] += rng.normal(0, 5, len(task.index["test"]))

    def thresholds(t):
        return (fit_threshold(anomaly.forecast_errors(model, t, "val")),
                fit_threshold(anomaly.persistence_errors(t, "val"), quantile=0.99))

    assert thresholds(other) == thresholds(task)
    # ... and a change to the validation split does move it (the comparison above can fail)
    xv, yv = task.data["val"]
    other.data = dict(task.data, val=(xv, yv + 1.0))
    assert thresholds(other)[0] != thresholds(task)[0]


def test_threshold_rules():
    e = np.random.default_rng(1).normal(0.5, 2.0, 10_000)
    t = fit_threshold(e, k=2.5)
    assert t.z_max == 2.5 and abs(t.center - 0.5) < 0.1 and abs(t.scale - 2.0) < 0.1
    assert math.isclose(t.ppm, 2.5 * t.scale)
    assert 0.005 < t.flag(e).mean() < 0.02                 # |N(0,1)| > 2.5: 1.2 %
    q = fit_threshold(e, quantile=0.9)
    assert abs(q.flag(e).mean() - 0.1) < 0.002
    assert fit_threshold(e).z_max == 3.0
    for bad in (dict(k=2, quantile=0.9), dict(k=0), dict(quantile=1.0), dict(quantile=0)):
        with pytest.raises(ValueError):
            fit_threshold(e, **bad)
    with pytest.raises(ValueError, match="all equal"):
        fit_threshold([1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------- metrics

PRF_CASES = [  # flags, labels, (precision, recall, F1)
    ([1, 0, 1, 0], [1, 1, 0, 0], (0.5, 0.5, 0.5)),
    ([1, 1, 1, 0, 0], [1, 0, 0, 0, 1], (1 / 3, 0.5, 0.4)),
    ([1, 0, 0], [1, 0, 0], (1.0, 1.0, 1.0)),
    ([1, 1, 1, 1], [1, 0, 0, 0], (0.25, 1.0, 0.4)),        # flag everything: precision = prevalence
    ([0, 0, 0], [0, 1, 1], (1.0, 0.0, 0.0)),                # nothing flagged: no false alarm, nothing found
    ([1, 0], [0, 0], (0.0, 1.0, 0.0)),                      # no anomalies: every flag a false alarm
    ([0, 0], [0, 0], (1.0, 1.0, 1.0)),                      # nothing to find, nothing flagged
    ([], [], (1.0, 1.0, 1.0)),
]


@pytest.mark.parametrize("flags,labels,expected", PRF_CASES)
def test_precision_recall_f1(flags, labels, expected):
    assert prf(flags, labels) == pytest.approx(expected)


def test_prf_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        prf([1, 0], [1, 0, 0])


def test_score_by_kind():
    kinds = np.array(["", "spike", "level_shift", "level_shift", "", "variance"], dtype=object)
    flags = np.array([0, 1, 0, 1, 1, 0], bool)
    events = [{"kind": "spike", "start": 11, "weeks": 1}, {"kind": "level_shift", "start": 12, "weeks": 2},
              {"kind": "variance", "start": 15, "weeks": 1}]
    s = score(flags, kinds, events, index=np.arange(10, 16))
    assert (s.precision, s.recall, s.flagged) == pytest.approx((2 / 3, 0.5, 3))
    assert s.recall_by_kind == {"spike": 1.0, "level_shift": 0.5, "variance": 0.0}
    assert s.events_caught == {"spike": [1, 1], "level_shift": [1, 1], "variance": [0, 1]}


# ------------------------------------------------------------------------------------------- scan

def test_scan_replaces_flagged_values_in_the_history():
    """Persistence on a ramp (error 0.1 a week): a spike at 20 and a 3-week shift at 40..42."""
    series = 0.1 * np.arange(60)
    series[20] += 5
    series[40:43] += 5
    thr = Threshold(center=0.1, scale=0.1, z_max=5.0, rule="test")       # |e - 0.1| > 0.5
    targets = np.arange(1, 60)
    flagged = {k: set(targets[scan(anomaly.persistence_forecaster, series, targets, thr, k)[1]])
               for k in (0, 1, 4)}
    assert flagged[0] == {20, 21, 40, 43}        # plain one-step errors: the week after each jump too
    assert flagged[4] == {20, 40, 41, 42}        # cleaned history: exactly the changed weeks
    assert flagged[1] == {20, 40, 41, 43, 44}    # one replacement, then the shifted level is accepted


def test_scan_without_replacement_is_the_plain_forecast(task):
    torch.manual_seed(0)
    model = build_model(TrainConfig(task="co2_anomaly", hidden=8).resolved(task), task)
    idx = task.index["test"]
    thr = Threshold(0.0, 1.0, 1e9, "never")
    errors, flags = scan(anomaly.model_forecaster(model, task), task.series, idx, thr, 0)
    assert not flags.any()
    assert np.allclose(errors, anomaly.forecast_errors(model, task, "test"), atol=1e-4)


# ------------------------------------------------------------------------------------ end to end

def test_detect_end_to_end(tmp_path):
    r = anomaly.detect(steps=150, hidden=16, seed=0, out=str(tmp_path))
    for s in (r.model, r.baseline, r.flag_all):
        assert all(math.isfinite(v) for v in (s.precision, s.recall, s.f1))
    assert r.anomalous == sum(c * w for c, w, _ in EVENTS.values()) and r.test_weeks == 343
    assert r.flag_all.recall == 1.0 and r.flag_all.precision == pytest.approx(r.anomalous / r.test_weeks)
    # better than chance by a clear margin, and better than the same rule on persistence forecasts
    assert r.model.f1 > r.flag_all.f1 + 0.1, r.summary()
    assert r.model.f1 > r.baseline.f1, r.summary()
    assert r.model.events_caught["spike"][0] >= 5, r.summary()
    assert r.test_rmse < r.baseline_rmse
    for name in ("anomaly.png", "anomaly.json", "anomaly.md"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "anomaly.json").read_text())
    assert saved["model"]["f1"] == r.model.f1 and saved["threshold"] == r.threshold
    assert (tmp_path / "anomaly.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(r.model.recall_by_kind) == set(KINDS)


def test_the_task_trains_as_a_plain_forecasting_task():
    from lstmc.train import train

    r = train(TrainConfig(task="co2_anomaly", steps=40, lr=1e-2, batch=16, hidden=16, eval_every=10,
                          progress=False))
    assert math.isfinite(r.test_metric) and r.baseline_name == "persistence"
    assert np.mean(r.train_losses[-5:]) < np.mean(r.train_losses[:5])


# ------------------------------------------------------------------------------------------- CLI

def test_cli_prints_the_table(capsys, tmp_path):
    rc = anomaly.main(["--steps", "20", "--hidden", "8", "--no-progress", "--threshold-quantile", "0.99",
                       "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    for word in ("precision", "recall", "F1", "lstm forecast", "persistence", "flag everything", "level_shift",
                 "0.99-quantile", "fitted on validation only", "anomaly.png"):
        assert word in out, out


@pytest.mark.parametrize("argv,message", [
    (["--threshold-quantile", "1.5"], "quantile must be in (0, 1)"),
    (["--k", "-1"], "k must be positive"),
    (["--k", "0"], "k must be positive"),
    (["--k", "inf"], "k must be positive and finite, got inf"),
    (["--threshold-quantile", "1"], "quantile must be in (0, 1)"),
    (["--max-run", "-1"], "max-run must be >= 0"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--cell", "no_such_cell_here"], ""),
])
def test_cli_bad_values_are_one_line_errors(capsys, argv, message):
    rc = anomaly.main([*argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("lstmc: error: ") and message in err, err


def test_cli_exclusive_threshold_options(capsys):
    with pytest.raises(SystemExit) as e:
        anomaly.main(["--k", "2", "--threshold-quantile", "0.9"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
