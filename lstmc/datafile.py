"""Training on your own data: a CSV, Parquet or NPZ file read into a `lstmc.tasks.Task`.

    lstmc train --data co2.csv --predict co2 --fillna ffill --length 52 --out runs/co2
    lstmc train --data ecg.csv --sequence patient --label rhythm --out runs/ecg
    task = data_task("co2.csv", predict="co2", fillna="ffill")        # the same from Python

The file's rows are in time order (the file order is the time order; nothing is sorted). Two kinds
of task, chosen from the options (`--label` or `--sequence`, or an NPZ holding `x` and `y`, means
classification; anything else is forecasting):

Forecasting (metric RMSE in the predicted column's own units; baseline persistence):
    --predict COL   the column to forecast (default: the file's only numeric column)
    --inputs A,B    the columns the model reads (default: the predicted column alone, its own past;
                    name it too when adding other columns)
    --length W      the window: W consecutive rows of the inputs (default 20)
    --horizon H     the window ending at row t predicts COL at row t+H (default 1)
    Samples are split chronologically by the row they predict: with --split 0.7,0.15 (the default)
    the first 70% of the rows are training rows, the next 15% validation rows, the rest test rows,
    and a sample belongs to the split of its predicted row. A training sample's window and target
    therefore lie in the training rows; a validation or test window may reach back into earlier rows
    (data known when the forecast is made), never forward. Each input column and the predicted
    column are normalised with the mean and standard deviation of the training rows only (a column
    constant there is only centred); the RMSE is reported in the original units (Task.y_scale).
    Persistence predicts COL[t+H] = COL[t], the last value in the window. A series with a trend
    (statsmodels' co2) leaves its training range in the test rows, where a network extrapolates
    poorly: forecast its differences instead (write `frame.diff()` to the file).

Classification (metric accuracy; baseline the training split's most common class):
    --label COL     the class of each sequence (any values: numbers or names; sorted into classes)
    --sequence ID   rows with the same ID form one sequence (in file order; sequences ordered by
                    their first row); every sequence must have as many rows, and one label
    --inputs A,B    the feature columns (default: every numeric column but the label and ID)
    Without --sequence every row is one univariate sequence whose steps are the --inputs columns in
    order (the layout of the UCR time-series archive: a label column, then the values).
    An NPZ file with arrays `x` [N, T, F] (or [N, T]) and `y` [N] is a classification data set.
    Sequences are split in file order (first 70% train, next 15% validation, the rest test, with
    --split 0.7,0.15); shuffle the file first if its order is not meaningful. Features are
    normalised with the mean and standard deviation of the training sequences only.

NPZ for forecasting: the array `series` (or the file's only array) of shape [N] or [N, F]; its
columns are named by an array `columns` when the file has one, else c0, c1, ...
Parquet needs pyarrow (`pip install pyarrow`).

Missing values: --fillna error (the default: a missing value in a column the task uses is an error
naming the column), ffill (carry the last value forward), interpolate (linear between the
neighbouring values: the next observed value is used to fill a gap, a mild look-ahead) or drop
(drop those rows, closing the gap in time). Rows still missing a value at the start (ffill) or at
either end (interpolate) are dropped. Classification data must have no missing values. Infinite
values are always an error. No NaN ever reaches training.

The task records the file's sha256 (`task.options["sha256"]`; the training config copies it, so
checkpoints and metrics.json hold it and `--resume` refuses a changed file) and what is needed to
apply the model to new data (`task.data_info`: columns, normalisation, classes). Tasks are cached
by (path, file contents, options). Every error is a DataError (a ValueError), one line.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from .tasks import Task, _t

__all__ = ["DataError", "data_task", "FORMATS", "FILLNA", "DEFAULT_SPLIT", "DEFAULT_WINDOW"]

FORMATS = (".csv", ".parquet", ".npz")
FILLNA = ("error", "ffill", "interpolate", "drop")
DEFAULT_SPLIT = "0.7,0.15"
DEFAULT_WINDOW = 20


class DataError(ValueError):
    """A data file lstmc cannot train on, or options that do not fit it (one line: what and why)."""


_cache: dict = {}


def data_task(path, *, length: int | None = None, inputs=None, predict: str | None = None,
              label: str | None = None, sequence: str | None = None, horizon: int | None = None,
              split: str | None = None, fillna: str | None = None) -> Task:
    """The Task of a data file (see the module docstring for the options; None: the default).
    `inputs` is a comma-separated string or a list of column names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        raise DataError(f"data file {str(path)!r} is a directory")
    if not path.is_file():          # a FIFO or a device (/dev/zero): reading it would never end
        raise DataError(f"data file {str(path)!r} is not a regular file; copy the data into a file")
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise DataError(f"data file {path.name!r}: unknown extension {path.suffix!r}; lstmc reads "
                        f"{', '.join(FORMATS)}")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    cols = _columns(inputs)
    fillna = fillna or "error"
    if fillna not in FILLNA:
        raise DataError(f"fillna must be one of {', '.join(FILLNA)}, got {fillna!r}")
    fractions = _split(split)
    options = dict(length=None if length is None else int(length), inputs=cols, predict=predict, label=label,
                   sequence=sequence, horizon=None if horizon is None else int(horizon),
                   split=list(fractions), fillna=fillna)
    key = (str(path.resolve()), sha, repr(sorted(options.items())))
    task = _cache.get(key)
    if task is None:
        task = _cache[key] = _build(path, ext, raw, sha, options)
    return task


def _columns(inputs) -> list | None:
    if inputs is None:
        return None
    names = [c.strip() for c in inputs.split(",")] if isinstance(inputs, str) else [str(c) for c in inputs]
    if not names or any(not c for c in names):
        raise DataError(f"inputs must name columns separated by commas, got {inputs!r}")
    if len(set(names)) != len(names):
        raise DataError(f"inputs names a column twice: {inputs!r}")
    return names


def _split(split) -> tuple[float, float]:
    text = DEFAULT_SPLIT if split is None else split
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or not all(0 < v < 1 for v in parts) or sum(parts) >= 1:
        raise DataError(f"split must be two fractions TRAIN,VAL (each > 0, summing to less than 1; the test "
                        f"split is the rest), e.g. {DEFAULT_SPLIT}; got {split!r}")
    return parts[0], parts[1]


def _cuts(n: int, fractions) -> tuple[int, int]:
    """The first validation and the first test index of n items split by the fractions."""
    a, b = fractions
    return int(a * n), int(round(a + b, 12) * n)


# --------------------------------------------------------------------------------------- reading

def _build(path: Path, ext: str, raw: bytes, sha: str, opt: dict) -> Task:
    if ext == ".npz":
        arrays = _read_npz(path, raw)
        if "x" in arrays and "y" in arrays:
            used = [k for k in ("inputs", "predict", "label", "sequence", "horizon") if opt[k] is not None]
            if used:
                raise DataError(f"{path.name} holds x and y (sequence classification); "
                                f"{', '.join('--' + k for k in used)} do not apply to it")
            x = arrays["x"]
            if x.ndim == 2:
                x = x[:, :, None]
            if x.ndim != 3 or arrays["y"].ndim != 1 or len(arrays["y"]) != len(x):
                raise DataError(f"{path.name}: x must be [N, T, F] or [N, T] and y [N]; got x "
                                f"{list(arrays['x'].shape)}, y {list(arrays['y'].shape)}")
            if x.dtype.kind not in "iuf":          # not bool, complex, timedelta, strings...
                raise DataError(f"{path.name}: x must be integers or floats, got dtype {x.dtype}")
            names = [f"c{i}" for i in range(x.shape[2])]
            return _classify(path, sha, opt, x.astype(np.float64), arrays["y"], names, "y", npz=True)
        frame = _npz_frame(path, arrays)
    else:
        frame = _read_table(path, ext, raw)
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DataError(f"{path.name} holds no data")
    frame.columns = [str(c) for c in frame.columns]
    twice = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if twice:
        raise DataError(f"{path.name} names a column more than once ({', '.join(map(repr, twice))}); rename them")
    if opt["label"] is not None or opt["sequence"] is not None:
        return _classify_frame(path, sha, opt, frame)
    return _forecast(path, sha, opt, frame)


def _read_table(path: Path, ext: str, raw: bytes):
    import pandas as pd

    if ext == ".csv":
        try:
            frame = pd.read_csv(io.BytesIO(raw))
            header = pd.read_csv(io.BytesIO(raw), header=None, nrows=1, dtype=str).iloc[0].tolist()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"{path.name} is not a readable CSV file ({_first_line(e)})") from None
        if len(frame.columns) == 1 and (sep := next((c for c in ";\t|" if c in str(frame.columns[0])), None)):
            raise DataError(f"{path.name} seems to separate its columns with {sep!r}: lstmc reads comma-separated "
                            f"files; convert it, e.g. pandas.read_csv(f, sep={sep!r}).to_csv(out, index=False)")
        named = [h for h in header if isinstance(h, str)]
        if len(set(named)) != len(named) and len(header) == len(frame.columns):   # pandas renamed the second 'a' 'a.1'
            frame.columns = [h if isinstance(h, str) else c for h, c in zip(header, frame.columns)]
        return frame
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except ImportError:
        raise DataError("reading Parquet files needs pyarrow: pip install pyarrow") from None
    except Exception as e:      # pyarrow's ArrowInvalid & co: not a Parquet file
        raise DataError(f"{path.name} is not a readable Parquet file ({_first_line(e)})") from None


def _read_npz(path: Path, raw: bytes) -> dict:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:      # not a zip, a pickled object array...
        raise DataError(f"{path.name} is not a readable NPZ file of numeric arrays ({_first_line(e)})") from None


def _npz_frame(path: Path, arrays: dict):
    import pandas as pd

    data = [k for k in arrays if k != "columns"]
    if "series" in arrays:
        key = "series"
    elif len(data) == 1:
        key = data[0]
    else:
        raise DataError(f"{path.name}: name the time series 'series' (or store only one array), or store x and y "
                        f"for classification; found arrays {', '.join(data) or 'none'}")
    s = arrays[key]
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise DataError(f"{path.name}: the series {key!r} must be [N] or [N, F], got shape {list(arrays[key].shape)}")
    if "columns" in arrays:
        names = [str(c) for c in arrays["columns"].tolist()]
        if len(names) != s.shape[1] or len(set(names)) != len(names):
            raise DataError(f"{path.name}: 'columns' must name the {s.shape[1]} columns of {key!r} once each, "
                            f"got {names}")
    else:
        names = [f"c{i}" for i in range(s.shape[1])]
    return pd.DataFrame(s, columns=names)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]


# --------------------------------------------------------------------------------------- columns

def _pick(path: Path, frame, names: list, role: str) -> None:
    """Every name a column of the frame, else an error listing the columns."""
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} has no column {', '.join(repr(c) for c in missing)} ({role}); its columns: "
                        f"{', '.join(frame.columns)}")


def _numeric(frame, col: str) -> bool:
    import pandas as pd

    t = pd.api.types
    return t.is_numeric_dtype(frame[col]) and not (t.is_bool_dtype(frame[col]) or t.is_complex_dtype(frame[col]))


def _need_numeric(path: Path, frame, names: list, role: str) -> None:
    bad = [c for c in names if not _numeric(frame, c)]
    if bad:
        kinds = ", ".join(f"{c!r} ({frame[c].dtype})" for c in bad)
        nums = [c for c in frame.columns if _numeric(frame, c)]
        raise DataError(f"{path.name}: {role} must be numeric; not so {kinds}. Numeric columns: "
                        f"{', '.join(nums) or 'none'}")


def _finite(path: Path, frame, names: list) -> None:
    """No missing or infinite value in these columns (else an error naming the first such column)."""
    for c in names:
        v = frame[c].to_numpy(dtype=np.float64, na_value=np.nan) if _numeric(frame, c) else None
        if v is None:
            continue
        nan = np.isnan(v)
        if nan.any():
            raise DataError(f"{path.name}: column {c!r} has {int(nan.sum())} missing values (first at row "
                            f"{int(np.argmax(nan))}, counting data rows from 0); fill them with --fillna "
                            f"{'|'.join(FILLNA[1:])} (forecasting) or clean the file")
        inf = np.isinf(v)
        if inf.any():
            raise DataError(f"{path.name}: column {c!r} has {int(inf.sum())} infinite values (first at row "
                            f"{int(np.argmax(inf))}, counting data rows from 0); clean the file")


def _fill(path: Path, frame, used: list, policy: str):
    """The frame's used columns with missing values handled by the --fillna policy."""
    import pandas as pd

    f = pd.DataFrame({c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in used})
    if policy == "ffill":
        f = f.ffill()
    elif policy == "interpolate":
        f = f.interpolate(method="linear", limit_area="inside")
    if policy != "error":
        f = f.dropna().reset_index(drop=True)      # drop: every such row; else the unfilled ends
        if len(f) == 0:
            raise DataError(f"{path.name}: no row left after --fillna {policy}")
    _finite(path, f, used)
    return f


# ------------------------------------------------------------------------------------- forecasting

def _forecast(path: Path, sha: str, opt: dict, frame) -> Task:
    if opt["horizon"] is not None and opt["horizon"] < 1:
        raise DataError(f"horizon must be at least 1, got {opt['horizon']}")
    predict = opt["predict"]
    if predict is None:
        nums = [c for c in frame.columns if _numeric(frame, c)]
        if len(nums) != 1:
            raise DataError(f"{path.name} has {len(nums)} numeric columns ({', '.join(nums) or 'none'}): name the "
                            f"one to forecast with --predict (or --label COL to classify sequences)")
        predict = nums[0]
    _pick(path, frame, [predict], "--predict")
    _need_numeric(path, frame, [predict], "the predicted column")
    inputs = opt["inputs"] or [predict]
    _pick(path, frame, inputs, "--inputs")
    _need_numeric(path, frame, inputs, "--inputs")
    used = inputs + ([predict] if predict not in inputs else [])
    f = _fill(path, frame, used, opt["fillna"])
    W = DEFAULT_WINDOW if opt["length"] is None else opt["length"]
    H = 1 if opt["horizon"] is None else opt["horizon"]
    if W < 1:
        raise DataError(f"length (the window) must be at least 1, got {W}")

    X = f[inputs].to_numpy(np.float64)                   # [n, F]
    s = f[predict].to_numpy(np.float64)                  # [n]
    n = len(s)
    t_va, t_te = _cuts(n, opt["split"])                # rows [0, t_va) train, [t_va, t_te) val, rest test
    targets = np.arange(W + H - 1, n)                    # sample k predicts s[t] from rows t-H-W+1 .. t-H
    parts = {"train": targets < t_va, "val": (targets >= t_va) & (targets < t_te), "test": targets >= t_te}
    sizes = {k: int(m.sum()) for k, m in parts.items()}
    if min(sizes.values()) < 1:
        raise DataError(f"{path.name}: {n} rows give {sizes['train']}/{sizes['val']}/{sizes['test']} train/val/test "
                        f"samples with window {W} and horizon {H} (split {opt['split'][0]:g},{opt['split'][1]:g}); "
                        f"every split needs one: shorten --length, or use a longer series")

    with np.errstate(all="ignore"):                      # an overflow is caught by _no_overflow below
        mu, sd = X[:t_va].mean(axis=0), X[:t_va].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)                   # a column constant on the training rows: centred
        mu_y, sd_y = float(s[:t_va].mean()), float(s[:t_va].std())
        sd_y = sd_y if sd_y > 0 else 1.0
        z = (X - mu) / sd
        windows = np.lib.stride_tricks.sliding_window_view(z, W, axis=0).transpose(0, 2, 1)   # [n-W+1, W, F]
        x = windows[:len(targets)]                       # window k covers rows k .. k+W-1 = targets[k]-H
        y = ((s[targets] - mu_y) / sd_y)[:, None]
        data = {k: (_t(x[m], "float32"), _t(y[m], "float32")) for k, m in parts.items()}
        base = {k: float(np.sqrt(np.mean((s[targets[m]] - s[targets[m] - H]) ** 2))) for k, m in parts.items()}
    _no_overflow(path, data, [*base.values(), sd_y, mu_y])

    options = dict(opt, data=str(path), sha256=sha, kind="forecast", length=W, horizon=H, inputs=inputs,
                   predict=predict)
    ahead = "the next row" if H == 1 else f"{H} rows ahead"
    t = Task(path.name, f"forecast {predict} {ahead} from {W} rows of {', '.join(inputs)}", "float", len(inputs), 0,
             "last", "mse", 1, "rmse", False, data, base, "persistence",
             dict(hidden=32, steps=600, batch=32, lr=5e-3, clip=1.0, eval_every=50), options, y_scale=sd_y)
    t.index = {k: targets[m] for k, m in parts.items()}  # the row each sample predicts
    t.rows = {"train": (0, t_va), "val": (t_va, t_te), "test": (t_te, n)}
    t.data_info = dict(kind="forecast", data=str(path), sha256=sha, inputs=inputs, predict=predict, length=W,
                       horizon=H, mean=mu.tolist(), std=sd.tolist(), target_mean=mu_y, target_std=sd_y, rows=n)
    return t


def _no_overflow(path: Path, data: dict, numbers) -> None:
    """The normalised data and its statistics are finite: values near the float64 limit (1e308)
    overflow in the mean or standard deviation, and NaN would reach training."""
    if not (all(bool(v.isfinite().all()) for xy in data.values() for v in xy) and np.isfinite(list(numbers)).all()):
        raise DataError(f"{path.name}: its values are too large to normalise (the mean or standard deviation "
                        f"overflows, or a normalised value exceeds float32); rescale the columns, e.g. divide "
                        f"them by a power of ten")


# ---------------------------------------------------------------------------------- classification

def _classify_frame(path: Path, sha: str, opt: dict, frame) -> Task:
    import pandas as pd

    label, seq = opt["label"], opt["sequence"]
    if label is None:
        raise DataError("--sequence groups rows into sequences to classify: name their class column with --label")
    if opt["predict"] is not None:
        raise DataError("--predict (forecasting) and --label (classification) exclude each other")
    if opt["horizon"] is not None:
        raise DataError("--horizon applies to forecasting, not to classification (--label)")
    _pick(path, frame, [label] + ([seq] if seq else []), "--label/--sequence")
    if seq == label:
        raise DataError("--sequence and --label must be different columns")
    inputs = opt["inputs"]
    if inputs is None:
        inputs = [c for c in frame.columns if c not in (label, seq) and _numeric(frame, c)]
        if not inputs:
            raise DataError(f"{path.name} has no numeric column besides the label and sequence columns")
    _pick(path, frame, inputs, "--inputs")
    for c, role in ((label, "label"), (seq, "sequence")):
        if c in inputs:
            raise DataError(f"the {role} column {c!r} cannot be an input: it would give the answer away"
                            if role == "label" else f"the sequence column {c!r} cannot be an input")
    _need_numeric(path, frame, inputs, "--inputs")
    if frame[label].isna().any() or (seq and frame[seq].isna().any()):
        bad = label if frame[label].isna().any() else seq
        raise DataError(f"{path.name}: column {bad!r} has {int(frame[bad].isna().sum())} missing values")
    _finite(path, frame, inputs)
    if seq is None:                                      # one row = one univariate sequence
        x = frame[inputs].to_numpy(np.float64)[:, :, None]
        return _classify(path, sha, opt, x, frame[label].to_numpy(), ["value"], label, steps=inputs)

    codes, ids = pd.factorize(frame[seq])                # sequence ids in order of first appearance
    ids = ids.tolist()
    lengths = np.bincount(codes)
    if len(set(lengths.tolist())) > 1:
        common = np.bincount(lengths).argmax()
        odd = [f"{ids[i]!r} has {lengths[i]}" for i in np.flatnonzero(lengths != common)[:3]]
        raise DataError(f"{path.name}: the sequences ({seq!r}) must have equal lengths; most have {common} rows, but "
                        f"{', '.join(odd)}{' ...' if (lengths != common).sum() > 3 else ''}")
    order = np.argsort(codes, kind="stable")             # rows grouped by sequence, in file order within each
    T = int(lengths[0])
    x = frame[inputs].to_numpy(np.float64)[order].reshape(len(ids), T, len(inputs))
    labels = frame[label].to_numpy()[order].reshape(len(ids), T)
    mixed = np.flatnonzero((labels != labels[:, :1]).any(axis=1))
    if len(mixed):
        raise DataError(f"{path.name}: sequence {ids[mixed[0]]!r} has more than one {label!r} value; each sequence "
                        f"needs one label")
    return _classify(path, sha, opt, x, labels[:, 0], inputs, label, ids=ids)


def _classify(path: Path, sha: str, opt: dict, x: np.ndarray, labels: np.ndarray, inputs: list, label: str,
              steps=None, ids=None, npz=False) -> Task:
    if opt["fillna"] != "error":
        raise DataError("--fillna applies to forecasting; classification data must have no missing values")
    if not np.isfinite(x).all():
        raise DataError(f"{path.name}: x has {int((~np.isfinite(x)).sum())} missing or infinite values; clean the file")
    N, T, F = x.shape
    if x.size == 0:
        raise DataError(f"{path.name} holds no data: x has shape {list(x.shape)}")
    if opt["length"] is not None and opt["length"] != T:
        raise DataError(f"length: the sequences of {path.name} have {T} steps; leave --length out")
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise DataError(f"{path.name}: the labels ({label!r}) have missing values")
    if labels.dtype.kind == "f" and (frac := labels[labels != np.round(labels)]).size:
        raise DataError(f"{path.name}: the labels ({label!r}) are classes, but {frac[0].item()!r} is not a whole number; "
                        f"give class names or integers (to predict a number, forecast it with --predict)")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{path.name}: every sequence has the label {classes[0]!r}: nothing to classify")
    a, b = _cuts(N, opt["split"])
    parts = {"train": np.arange(0, a), "val": np.arange(a, b), "test": np.arange(b, N)}
    sizes = {k: len(v) for k, v in parts.items()}
    if min(sizes.values()) < 1:
        raise DataError(f"{path.name}: {N} sequences give {sizes['train']}/{sizes['val']}/{sizes['test']} "
                        f"train/val/test (split {opt['split'][0]:g},{opt['split'][1]:g}); every split needs one")
    train_x = x[:a].reshape(-1, F)
    with np.errstate(all="ignore"):                      # an overflow is caught by _no_overflow below
        mu, sd = train_x.mean(axis=0), train_x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        z = (x - mu) / sd
        data = {k: (_t(z[i], "float32"), _t(y[i], "int64")) for k, i in parts.items()}
    _no_overflow(path, data, [*mu, *sd])
    major = int(np.bincount(y[:a], minlength=len(classes)).argmax())
    base = {k: float(np.mean(y[i] == major)) for k, i in parts.items()}
    options = dict(opt, data=str(path), sha256=sha, kind="classify", length=T)
    if not npz:                                          # an NPZ's x and y are not chosen by options
        options.update(inputs=inputs, label=label)
    what = f"{T} steps of {', '.join(inputs)}" if steps is None else f"rows of {T} values ({steps[0]}..{steps[-1]})"
    t = Task(path.name, f"classify {label} ({len(classes)} classes) from {what}", "float", F, 0, "last", "ce",
             len(classes), "accuracy", True, data, base, "majority-class",
             dict(hidden=64, steps=800, batch=64, lr=5e-3, clip=1.0, eval_every=100), options)
    t.index = parts                                      # sequence numbers (file order) of each split
    t.classes = classes.tolist()
    t.data_info = dict(kind="classify", data=str(path), sha256=sha, inputs=inputs, label=label, length=T,
                       classes=t.classes, mean=mu.tolist(), std=sd.tolist(), sequences=N)
    t.ids = ids                                          # the --sequence ids, in sequence order (or None)
    return t

