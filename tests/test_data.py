"""`lstmc train --data FILE`: CSV/Parquet/NPZ files read into tasks (lstmc.datafile) — splits, no
leakage, normalisation from training rows, formats agreeing, errors, training, outputs, resume.

Real data: statsmodels' sunspots written to a CSV (it ships inside statsmodels, no download)."""

import hashlib
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from lstmc import cli as lstmc_cli
from lstmc import datafile, tasks
from lstmc.datafile import DataError, data_task
from lstmc.train import TrainConfig, main, train

SMALL = dict(progress=False, hidden=16)
SPLITS = ("train", "val", "test")


def _equal_tasks(a, b):
    for s in SPLITS:
        for u, v in zip(a.data[s], b.data[s]):
            assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v), s
        assert a.baseline(s) == pytest.approx(b.baseline(s), rel=1e-12)
    assert (a.metric, a.n_out, a.input_size, a.y_scale) == (b.metric, b.n_out, b.input_size, b.y_scale)


@pytest.fixture(scope="module")
def sunspots_csv(tmp_path_factory):
    from statsmodels.datasets import sunspots

    path = tmp_path_factory.mktemp("data") / "sunspots.csv"
    sunspots.load_pandas().data.to_csv(path, index=False)       # columns YEAR, SUNACTIVITY
    return path


def _walk(n=120, seed=0):
    """A random walk with two covariates: a frame of n rows."""
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.normal(size=n))
    return pd.DataFrame({"t": np.arange(n), "a": a, "b": rng.normal(size=n), "c": np.sin(np.arange(n) / 5)})


def _write(frame, path):
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------- real data

def test_sunspots_csv_is_the_builtin_sunspots_task(sunspots_csv):
    """The same windows, targets, normalisation and baseline as lstmc.tasks.sunspots, bit for bit;
    and the persistence baseline recomputed independently with pandas."""
    t = data_task(sunspots_csv, predict="SUNACTIVITY")
    _equal_tasks(t, tasks.sunspots())
    s = pd.read_csv(sunspots_csv)["SUNACTIVITY"]
    err = (s - s.shift(1)).to_numpy()
    for split in SPLITS:
        rows = t.index[split]
        assert t.baseline(split) == pytest.approx(np.sqrt(np.mean(err[rows] ** 2)), rel=1e-12)


def test_sunspots_csv_trains_and_writes_its_outputs(sunspots_csv, tmp_path):
    res = train(TrainConfig(data=str(sunspots_csv), predict="SUNACTIVITY", steps=300, eval_every=50,
                            out=str(tmp_path), **SMALL))
    assert np.isfinite(res.test_metric) and res.test_metric < res.baseline    # beats persistence (29.1)
    for f in ("metrics.json", "metrics.csv", "curves.png", "checkpoint.pt", "model.pt"):
        assert (tmp_path / f).stat().st_size > 0
    sha = hashlib.sha256(sunspots_csv.read_bytes()).hexdigest()
    cfg = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert cfg["data"] == str(sunspots_csv) and cfg["data_sha256"] == sha and cfg["task"] == "sunspots.csv"
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["config"]["data_sha256"] == sha and saved["config"]["predict"] == "SUNACTIVITY"
    # model.pt holds what applying the model to new rows needs: columns and the training normalisation
    train_rows = pd.read_csv(sunspots_csv)["SUNACTIVITY"].to_numpy()[:int(0.7 * 309)]
    assert saved["data"]["inputs"] == ["SUNACTIVITY"] and saved["data"]["sha256"] == sha
    assert saved["data"]["mean"] == pytest.approx([train_rows.mean()], rel=1e-12)

    # the reported RMSE is in sunspot numbers: recompute it from the model's predictions
    t = data_task(sunspots_csv, predict="SUNACTIVITY")
    info = t.data_info
    with torch.no_grad():
        pred = res.model.eval()(t.data["test"][0]).double().numpy()[:, 0]
    pred = pred * info["target_std"] + info["target_mean"]
    truth = pd.read_csv(sunspots_csv)["SUNACTIVITY"].to_numpy()[t.index["test"]]
    assert res.test_metric == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), rel=1e-4)


# ------------------------------------------------------------------------------- splits, no leakage

@pytest.mark.parametrize("length,horizon,split", [(5, 1, "0.7,0.15"), (7, 3, "0.5,0.25"), (1, 10, "0.6,0.2")])
def test_forecast_split_is_chronological_without_leakage(tmp_path, length, horizon, split):
    frame = _walk()
    path = _write(frame, tmp_path / "walk.csv")
    t = data_task(path, predict="a", inputs="a,b", length=length, horizon=horizon, split=split)
    idx = [t.index[s] for s in SPLITS]
    assert idx[0].max() < idx[1].min() and idx[1].max() < idx[2].min()
    first_val = idx[1].min()
    train_window_rows = idx[0][:, None] - horizon - np.arange(length)[None, :]
    assert train_window_rows.max() < first_val and train_window_rows.min() >= 0
    # every row used by a training sample (window or target) is a training row, whose number the
    # split fraction fixes; and each sample is exactly its window of normalised rows
    f_tr = float(split.split(",")[0])
    assert idx[0].max() < int(f_tr * len(frame)) <= first_val
    x = frame[["a", "b"]].to_numpy()
    train_rows = x[:int(f_tr * len(frame))]
    z = (x - train_rows.mean(0)) / train_rows.std(0)
    for s in SPLITS:
        xs, ys = t.data[s]
        for k in (0, len(t.index[s]) - 1):
            row = t.index[s][k]
            np.testing.assert_allclose(xs[k].numpy(), z[row - horizon - length + 1:row - horizon + 1], rtol=1e-5,
                                       atol=1e-6)
            a = frame["a"].to_numpy()
            assert ys[k, 0].item() == pytest.approx((a[row] - a[:len(train_rows)].mean()) / a[:len(train_rows)].std(),
                                                    rel=1e-5)
    assert sum(t.size(s) for s in SPLITS) == len(frame) - length - horizon + 1


def test_normalisation_uses_training_rows_only(tmp_path):
    frame = _walk()
    base = data_task(_write(frame, tmp_path / "a.csv"), predict="a", inputs="a,b,c")
    late = frame.copy()
    late.loc[len(late) - 3, ["a", "b"]] = 1e6               # a test row
    late.loc[base.index["val"][0], "c"] = -1e6              # a validation row
    changed = data_task(_write(late, tmp_path / "b.csv"), predict="a", inputs="a,b,c")
    for k in ("mean", "std", "target_mean", "target_std"):
        assert changed.data_info[k] == base.data_info[k]
    assert torch.equal(changed.data["train"][0], base.data["train"][0])
    early = frame.copy()
    early.loc[3, "b"] = 50.0                                 # a training row: the statistics move
    moved = data_task(_write(early, tmp_path / "c.csv"), predict="a", inputs="a,b,c")
    assert moved.data_info["mean"][1] != base.data_info["mean"][1]


# ------------------------------------------------------------------------------------------ formats

def test_npz_and_parquet_forecasting_equal_the_csv(tmp_path):
    frame = _walk()[["a", "b"]]
    csv = data_task(_write(frame, tmp_path / "w.csv"), predict="b", inputs="a,b", length=6)
    np.savez(tmp_path / "named.npz", series=frame.to_numpy(), columns=np.array(["a", "b"]))
    _equal_tasks(data_task(tmp_path / "named.npz", predict="b", inputs="a,b", length=6), csv)
    np.savez(tmp_path / "plain.npz", frame.to_numpy())          # one unnamed array: columns c0, c1
    _equal_tasks(data_task(tmp_path / "plain.npz", predict="c1", inputs="c0,c1", length=6), csv)
    np.savez(tmp_path / "one.npz", values=frame["b"].to_numpy())   # the only array, 1-D: column c0
    _equal_tasks(data_task(tmp_path / "one.npz", length=6), data_task(tmp_path / "w.csv", predict="b", length=6))
    pytest.importorskip("pyarrow")
    frame.to_parquet(tmp_path / "w.parquet", index=False)
    _equal_tasks(data_task(tmp_path / "w.parquet", predict="b", inputs="a,b", length=6), csv)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")

    def no_engine(*a, **k):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(DataError, match="pip install pyarrow"):
        data_task(tmp_path / "x.parquet")


def _sequences(n=60, T=12, F=2, seed=1):
    """n sequences of T steps: class 1 when the first feature drifts upwards."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, T, F))
    x[:, :, 0] += (2 * y[:, None] - 1) * np.linspace(0, 2, T)[None, :]
    return x, y


def test_classification_from_npz_and_long_and_wide_csv(tmp_path):
    x, y = _sequences()
    np.savez(tmp_path / "seq.npz", x=x, y=y)
    t = data_task(tmp_path / "seq.npz")
    assert (t.metric, t.n_out, t.seq_len(), t.input_size, t.baseline_name) == ("accuracy", 2, 12, 2, "majority-class")
    n_tr, n_va = int(0.7 * len(y)), int(0.85 * len(y))
    major = np.bincount(y[:n_tr]).argmax()
    assert t.baseline("test") == pytest.approx(np.mean(y[n_va:] == major))
    mu, sd = x[:n_tr].reshape(-1, 2).mean(0), x[:n_tr].reshape(-1, 2).std(0)
    np.testing.assert_allclose(t.data["val"][0].numpy(), (x[n_tr:n_va] - mu) / sd, rtol=1e-5, atol=1e-6)
    assert t.data["test"][1].tolist() == y[n_va:].tolist()

    # the same sequences as rows of a long CSV with string ids and class names, the sequences'
    # rows interleaved (step 0 of every sequence, then step 1...): grouped by id, in file order
    names = np.array(["down", "up"])
    long = pd.DataFrame({"id": np.repeat([f"s{i:03d}" for i in range(len(y))], 12), "step": np.tile(np.arange(12), len(y)),
                         "f0": x[:, :, 0].ravel(), "f1": x[:, :, 1].ravel(), "cls": np.repeat(names[y], 12)})
    long = long.sort_values("step", kind="stable").drop(columns="step")
    assert long["id"].iloc[1] == "s001"
    _equal_tasks(data_task(_write(long, tmp_path / "long.csv"), sequence="id", label="cls"), t)
    assert data_task(tmp_path / "long.csv", sequence="id", label="cls").classes == ["down", "up"]

    # one univariate sequence per row (the UCR layout): label, then the values
    wide = pd.DataFrame(x[:, :, 0], columns=[f"v{i}" for i in range(12)])
    wide.insert(0, "label", y)
    np.savez(tmp_path / "uni.npz", x=x[:, :, 0], y=y)
    _equal_tasks(data_task(_write(wide, tmp_path / "wide.csv"), label="label"), data_task(tmp_path / "uni.npz"))


def test_classification_trains(tmp_path):
    x, y = _sequences(n=80)
    rows = pd.DataFrame({"id": np.repeat(np.arange(len(y)), 12), "f0": x[:, :, 0].ravel(),
                         "f1": x[:, :, 1].ravel(), "cls": np.repeat(y, 12)})
    path = _write(rows, tmp_path / "seq.csv")
    res = train(TrainConfig(data=str(path), sequence="id", label="cls", steps=40, eval_every=20, batch=16, lr=1e-2,
                            **SMALL))
    assert res.metric == "accuracy" and 0 <= res.test_metric <= 1 and np.isfinite(res.test_loss)
    assert res.history[-1]["val_metric"] > 0.6          # the drift is easy to see


# ------------------------------------------------------------------------------------------ errors

def _nan_frame():
    f = _walk()
    f.loc[[10, 40], "b"] = np.nan
    return f


def _long(lengths=(4, 4, 3), labels=(0, 1, 1)):
    ids = np.repeat(np.arange(len(lengths)), lengths)
    return pd.DataFrame({"id": ids, "v": np.arange(len(ids), dtype=float),
                         "cls": np.repeat(labels, lengths)})


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_rows = "\n".join(f"{i};{i % 7}" for i in range(60)).encode()

ERRORS = [
    # (frame or file bytes, file name, options, phrase)
    (b"a,a\n" + _rows.replace(b";", b","), "w.csv", dict(predict="a"), r"names a column more than once \('a'\)"),
    (b"a;b\n" + _rows, "w.csv", dict(), "separate its columns with ';': lstmc reads comma-separated"),
    (b"a\n" + b"\n".join(b"%de307" % (9 * (-1) ** i) for i in range(60)), "w.csv", dict(), "too large to normalise"),
    (_npz(x=np.zeros((0, 5)), y=np.zeros(0)), "s.npz", dict(), r"holds no data: x has shape \[0, 5, 1\]"),
    (_npz(x=np.zeros((20, 5)), y=np.linspace(0, 1, 20)), "s.npz", dict(), "not a whole number"),
    (_npz(x=np.ones((20, 5), complex), y=np.arange(20) % 2), "s.npz", dict(), "must be integers or floats"),
    (_npz(x=np.ones((20, 5)) * np.arange(20)[:, None] * 1e300, y=np.arange(20) % 2), "s.npz", dict(),
     "too large to normalise"),
    (_nan_frame(), "w.csv", dict(predict="a", inputs="a,b"), r"column 'b' has 2 missing values \(first at row 10"),
    (_walk(), "w.csv", dict(predict="zz"), r"no column 'zz' \(--predict\); its columns: t, a, b, c"),
    (_walk(), "w.csv", dict(predict="a", inputs="a,q"), r"no column 'q' \(--inputs\); its columns: t, a, b, c"),
    (_walk(), "w.csv", dict(), "4 numeric columns .* name the one to forecast with --predict"),
    (_walk().assign(day="mon"), "w.csv", dict(predict="a", inputs="a,day"), r"not so 'day'"),
    (_walk(10), "w.csv", dict(predict="a", length=8), "10 rows give 0/0/2 train/val/test samples with window 8"),
    (_walk(), "w.csv", dict(predict="a", split="0.9,0.2"), "split must be two fractions"),
    (_walk(), "w.csv", dict(predict="a", fillna="mean"), "fillna must be one of"),
    (_walk(), "w.csv", dict(predict="a", horizon=0), "horizon must be at least 1"),
    (_walk().assign(b=np.inf), "w.csv", dict(predict="a", inputs="a,b"), "column 'b' has 120 infinite values"),
    (_walk(), "w.txt", dict(), "unknown extension '.txt'"),
    (b"not a zip", "w.npz", dict(), "not a readable NPZ"),
    (_long(), "s.csv", dict(sequence="id", label="cls"), r"equal lengths; most have 4 rows, but 2 has 3"),
    (_long((3, 3, 3), (0, 1, 1)).assign(cls=[0, 0, 1, 1, 1, 1, 1, 1, 1]), "s.csv", dict(sequence="id", label="cls"),
     "sequence 0 has more than one 'cls' value"),
    (_long((3, 3, 3)), "s.csv", dict(sequence="id", label="cls", inputs="v,cls"), "label column 'cls' cannot be an input"),
    (_long((3, 3, 3)), "s.csv", dict(sequence="id"), "name their class column with --label"),
    (_long((3, 3, 3)), "s.csv", dict(label="cls", sequence="id", horizon=2), "--horizon applies to forecasting"),
    (_long((3, 3, 3)), "s.csv", dict(label="cls", sequence="id", length=5), "have 3 steps; leave --length out"),
]


@pytest.mark.parametrize("content,name,options,phrase", ERRORS)
def test_bad_data_is_a_clear_error(tmp_path, content, name, options, phrase):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content.to_csv(path, index=False)
    with pytest.raises(DataError, match=phrase):
        data_task(path, **options)


def test_nan_in_npz_classification_and_missing_file(tmp_path):
    x, y = _sequences(n=10)
    x[3, 2, 1] = np.nan
    np.savez(tmp_path / "s.npz", x=x, y=y)
    with pytest.raises(DataError, match="1 missing or infinite"):
        data_task(tmp_path / "s.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_task(tmp_path / "nope.csv")


@pytest.mark.parametrize("entry", [main, lambda argv: lstmc_cli.main(["train", *argv])])
def test_cli_errors_are_one_line(tmp_path, capsys, entry):
    path = _write(_nan_frame(), tmp_path / "w.csv")
    cases = [(["--data", str(path), "--predict", "b"], "column 'b' has 2 missing values"),
             (["--data", str(path), "--predict", "nope"], "its columns: t, a, b, c"),
             (["--data", str(path), "--task", "digits"], "--task digits and --data"),
             (["--predict", "a"], "predict describe a data file"),
             (["--data", str(tmp_path / "gone.csv")], "does not exist")]
    for argv, phrase in cases:
        assert entry([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lstmc: error:") and phrase in err and "\n" not in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_is_refused_not_read_for_ever(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(DataError, match="is not a regular file"):
        data_task(tmp_path / "pipe.csv")


def test_fillna_policies(tmp_path):
    f = _walk(60)
    f.loc[[0, 1, 20, 21], "a"] = np.nan          # two leading values, and a gap
    path = _write(f, tmp_path / "gaps.csv")
    a = f["a"].to_numpy()
    for policy, rows in (("ffill", 58), ("interpolate", 58), ("drop", 56)):
        t = data_task(path, predict="a", fillna=policy, length=4)
        assert t.data_info["rows"] == rows
        assert all(torch.isfinite(v).all() for s in SPLITS for v in t.data[s])
    t = data_task(path, predict="a", fillna="ffill", length=4, split="0.9,0.05")
    # row 20 (row 18 once the two leading rows are dropped) carries row 19's value forward
    info = t.data_info
    k = int(np.flatnonzero(t.index["train"] == 18)[0])
    assert t.data["train"][1][k, 0].item() * info["target_std"] + info["target_mean"] == pytest.approx(a[19], rel=1e-5)


# ------------------------------------------------------------------------------------------ resume

def test_resume_continues_exactly_and_refuses_a_changed_file(sunspots_csv, tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(sunspots_csv.read_bytes())
    cfg = TrainConfig(data=str(path), predict="SUNACTIVITY", steps=24, eval_every=8, length=10, **SMALL)
    full = train(cfg)
    out = tmp_path / "run"
    part = train(cfg, out=str(out), stop_at=11)
    assert part.interrupted and part.steps == 11
    rest = train(cfg, out=str(out), resume=True)
    assert rest.steps == 24 and rest.train_losses == full.train_losses
    assert rest.test_metric == full.test_metric

    frame = pd.read_csv(path)
    frame.loc[5, "SUNACTIVITY"] += 1.0
    frame.to_csv(path, index=False)
    datafile._cache.clear()
    with pytest.raises(ValueError, match=r"data file .*s\.csv changed since the checkpoint"):
        train(cfg, out=str(out), resume=True, steps=30)


@pytest.mark.parametrize("make,options", [
    ("walk.csv", dict(predict="a", inputs="a,b", horizon=2)),
    ("walk.csv", dict(predict="a")),
    ("seq.npz", dict()),
    ("long.csv", dict(sequence="id", label="cls")),
    ("walk.csv", dict(predict="a", split="0.712345678,0.1")),     # recorded exactly, not as 0.712346
])
def test_resolved_config_records_the_options_used_and_rebuilds_the_task(tmp_path, make, options):
    """The config a run records (metrics.json, checkpoints) names the columns, horizon and split it
    used, and trains on the same task when fed back."""
    from lstmc.train.config import task_of

    x, y = _sequences(n=20, T=4)
    files = {"walk.csv": lambda p: _write(_walk(), p), "seq.npz": lambda p: np.savez(p, x=x, y=y),
             "long.csv": lambda p: _write(pd.DataFrame({"id": np.repeat(np.arange(20), 4), "v": x[:, :, 0].ravel(),
                                                        "cls": np.repeat(y, 4)}), p)}
    path = tmp_path / make
    files[make](path)
    cfg = TrainConfig(data=str(path), **options)
    task = task_of(cfg)
    r = cfg.resolved(task)
    assert r.task == make and r.split == options.get("split", "0.7,0.15") and r.fillna == "error" and r.data_sha256 is not None
    if make == "walk.csv":
        assert r.predict == "a" and r.inputs == options.get("inputs", "a") and r.horizon == options.get("horizon", 1)
    again = task_of(r)
    _equal_tasks(again, task)
    assert again.options["kind"] == task.options["kind"]
