"""Training tasks: fixed, download-free data sets with a metric and a trivial baseline each.

    task = get_task("adding", length=50)
    idx = task.sampler(seed).indices(step, batch)
    x, y = task.batch("train", idx)             # tensors, batch first
    inputs = task.batch_inputs("train", idx)    # the extra per-step inputs of those rows: {name: tensor}
    task.metric, task.higher_is_better, task.baseline("test")

| task          | input                          | target                   | metric     | trivial baseline            |
|---------------|--------------------------------|--------------------------|------------|-----------------------------|
| adding        | [T, 2] value + marker          | sum of the two marked    | MSE        | predict the mean (≈ 0.167)  |
| copy          | T+20 symbols (embedded)        | the 10 symbols, at end   | CE (nats)  | memoryless 10·ln 8/(T+20)   |
| digits        | 8 rows of 8 pixels             | the digit (10 classes)   | accuracy   | majority class              |
| charlm        | L characters (embedded)        | the next character       | bits/char  | unigram frequencies         |
| sunspots      | a window of W yearly values    | the next year's value    | RMSE       | persistence (last value)    |
| co2_anomaly   | W weekly CO2 differences       | the next week's change   | RMSE (ppm) | persistence (last value)    |
| sunspots_gaps | W irregular observations; dt   | the year after the last  | RMSE       | persistence (last observed) |
| copy_episodes | L symbols (embedded); reset    | each episode's first K,  | CE (nats)  | memoryless E·K·ln 8/L       |
|               |                                | after its delimiter      |            |                             |

Extra per-step inputs (a cell's `input` lines): `task.inputs_data[split]` is {name: tensor [N, T] or
[N, T, n]}, batch first like x, and `task.batch_inputs(split, idx)` reads the rows of `task.batch`.
sunspots_gaps provides `dt` (the gap in years before each observation: examples/tlstm.cell) and
copy_episodes `reset` (1.0 at the first step of each episode: examples/episodic_gru.cell); a model
whose cell reads no input ignores them, so every cell competes on the same data (TASK_INPUTS).

co2_anomaly is the forecaster of `lstmc.anomaly` (weekly Mauna Loa CO2; its test part holds injected
spikes, level shifts and variance changes, labelled per week in `task.kinds`).

Every split is fixed: it depends only on the task's options (never on the training seed), and
the splits never share a sample. (torch is imported only when data is built, so that listing the
tasks costs nothing.) The training order is a pure function of (seed, step) — see
`EpochSampler` — so a resumed run reads exactly the batches an uninterrupted run reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:       # annotations only: torch is imported when data is built
    import torch

__all__ = ["Task", "EpochSampler", "get_task", "TASKS", "TASK_INPUTS", "task_names"]

SPLITS = ("train", "val", "test")


class EpochSampler:
    """The training order as a pure function of (seed, step).

    The stream of sample indices is the concatenation of one permutation per epoch (epoch e is
    shuffled by `default_rng([seed, e])`); the batch of step s is stream[s*B : (s+1)*B]. Nothing
    mutable needs saving to resume: the step counter is the whole data-order state."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the training split is empty")
        self.n = int(n)
        self.seed = int(seed)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        p = self._perms.get(epoch)
        if p is None:
            if len(self._perms) > 4:
                self._perms.clear()
            p = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perms[epoch] = p
        return p

    def indices(self, step: int, batch: int) -> np.ndarray:
        pos = np.arange(step * batch, (step + 1) * batch, dtype=np.int64)
        out = np.empty(batch, dtype=np.int64)
        epochs = pos // self.n
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[pos[sel] % self.n]
        return out

    def epoch(self, step: int, batch: int) -> float:
        return step * batch / self.n

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "kind": "epoch-permutation"}


@dataclass
class Task:
    """A data set with fixed splits, how a model reads it and how it is scored.

    inputs: "float" (x is [N, T, input_size] float32) or "tokens" (x is [N, T] int64 < vocab)
    target: "last" (one prediction from the last step) or "all" (one prediction per step)
    loss:   "mse" (regression, n_out values) or "ce" (classification over n_out classes)
    """
    name: str
    description: str
    inputs: str
    input_size: int
    vocab: int
    target: str
    loss: str
    n_out: int
    metric: str
    higher_is_better: bool
    data: dict                 # split -> (x tensor, y tensor)
    baselines: dict            # split -> float: the trivial baseline's metric
    baseline_name: str
    defaults: dict             # hyper-parameters that work for this task
    options: dict              # the options the data was built from
    y_scale: float = 1.0       # regression targets are normalised; metric = sqrt(mse) * y_scale (rmse)
    embed_dim: int = 0
    inputs_data: dict = field(default_factory=dict)   # split -> {name: [N, T] or [N, T, n] float32}: cell inputs

    def size(self, split: str) -> int:
        return int(self.data[split][0].shape[0])

    def sampler(self, seed: int) -> EpochSampler:
        return EpochSampler(self.size("train"), seed)

    def batch(self, split: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x, y = self.data[split]
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return x[idx], y[idx]

    def batch_inputs(self, split: str, idx) -> dict:
        """The extra per-step inputs of the rows `idx` (those of `batch`): {name: [B, T] or [B, T, n]}."""
        import torch

        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return {k: v[idx] for k, v in self.inputs_data.get(split, {}).items()}

    def input_widths(self) -> dict:
        """The extra inputs the task provides: {name: None for [N, T], n for [N, T, n]}."""
        return {k: None if v.dim() == 2 else int(v.shape[-1]) for k, v in self.inputs_data.get("train", {}).items()}

    def baseline(self, split: str = "test") -> float:
        return self.baselines[split]

    def seq_len(self) -> int:
        return int(self.data["train"][0].shape[1])

    # scoring ------------------------------------------------------------------------------------
    def loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch: MSE over targets, or cross-entropy (nats) over every prediction."""
        import torch

        if self.loss == "mse":
            return torch.nn.functional.mse_loss(out.reshape(y.shape), y)
        return torch.nn.functional.cross_entropy(out.reshape(-1, self.n_out), y.reshape(-1))

    def score_parts(self, out: torch.Tensor, y: torch.Tensor) -> dict:
        """Sums that add up over batches: {"loss": Σ loss, "n": count, "correct": Σ hits}."""
        import torch

        if self.loss == "mse":
            err = (out.reshape(y.shape).double() - y.double()) ** 2
            return {"loss": float(err.sum()), "n": err.numel(), "correct": 0}
        logits = out.reshape(-1, self.n_out)
        yy = y.reshape(-1)
        nll = torch.nn.functional.cross_entropy(logits.double(), yy, reduction="sum")
        return {"loss": float(nll), "n": yy.numel(), "correct": int((logits.argmax(-1) == yy).sum())}

    def metric_from(self, parts: dict) -> tuple[float, float]:
        """(mean loss, metric) from summed score parts."""
        loss = parts["loss"] / parts["n"]
        if self.metric == "mse" or self.metric == "ce":
            return loss, loss
        if self.metric == "rmse":
            return loss, math.sqrt(loss) * self.y_scale
        if self.metric == "bpc":
            return loss, loss / math.log(2)
        if self.metric == "accuracy":
            return loss, parts["correct"] / parts["n"]
        raise ValueError(f"unknown metric {self.metric!r}")

    def better(self, a: float, b: float | None) -> bool:
        """Is metric a better than b (None: nothing yet)?"""
        if b is None or not math.isfinite(b):
            return math.isfinite(a)
        return a > b if self.higher_is_better else a < b

    def summary(self) -> str:
        sizes = "/".join(str(self.size(s)) for s in SPLITS)
        return (f"{self.name}: {self.description}; train/val/test {sizes}; metric {self.metric} "
                f"({'higher' if self.higher_is_better else 'lower'} is better); "
                f"{self.baseline_name} baseline {self.baseline('test'):.4g} on test")


def _t(a, dtype: str):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, dtype))


# ------------------------------------------------------------------------------------------- adding

def adding(length: int = 50, n_train: int = 20000, n_val: int = 1000, n_test: int = 1000) -> Task:
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015).

    Two input channels: values drawn U(0, 1), and a marker channel that is 0 except for two 1s:
    one in the first half of the sequence, one in the second. The target is the sum of the two
    marked values. Predicting the mean (1) scores MSE = Var(u1 + u2) = 2/12 ≈ 0.167."""
    T = int(length)
    if T < 2:
        raise ValueError(f"adding: length must be at least 2, got {T}")
    data, base = {}, {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.default_rng([1, T, k])
        vals = rng.uniform(0.0, 1.0, size=(n, T))
        a = rng.integers(0, T // 2, size=n)
        b = rng.integers(T // 2, T, size=n)
        mark = np.zeros((n, T))
        mark[np.arange(n), a] = 1.0
        mark[np.arange(n), b] = 1.0
        x = np.stack([vals, mark], axis=-1)
        y = vals[np.arange(n), a] + vals[np.arange(n), b]
        data[split] = (_t(x, "float32"), _t(y[:, None], "float32"))
    mean = float(data["train"][1].double().mean())
    for split in SPLITS:
        base[split] = float(((data[split][1].double() - mean) ** 2).mean())
    return Task("adding", f"adding problem, T={T}", "float", 2, 0, "last", "mse", 1, "mse", False,
                data, base, "predict-the-mean",
                dict(hidden=64, steps=1500, batch=64, lr=1e-2, clip=1.0, eval_every=100),
                dict(length=T, n_train=n_train, n_val=n_val, n_test=n_test))


# --------------------------------------------------------------------------------------------- copy

def copy(length: int = 20, n_train: int = 20000, n_val: int = 1000, n_test: int = 1000,
         symbols: int = 8, copy_len: int = 10) -> Task:
    """The copy-memory task (Hochreiter & Schmidhuber 1997; the variant of Arjovsky et al. 2016).

    Alphabet: 0 blank, 1..8 data, 9 delimiter. Input: 10 data symbols, T-1 blanks, the delimiter,
    then 10 blanks (T+20 steps); target: T+10 blanks, then the 10 data symbols. Loss and metric are
    the cross-entropy per step (nats) over all steps; a memoryless model predicts blanks and then
    uniform symbols, scoring 10·ln 8 / (T+20)."""
    T, K, S = int(length), int(copy_len), int(symbols)
    if T < 1:
        raise ValueError(f"copy: length (the delay) must be at least 1, got {T}")
    L = T + 2 * K
    delim = S + 1
    data, base = {}, {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.default_rng([2, T, k])
        seq = rng.integers(1, S + 1, size=(n, K))
        x = np.zeros((n, L), dtype=np.int64)
        x[:, :K] = seq
        x[:, K + T - 1] = delim
        y = np.zeros((n, L), dtype=np.int64)
        y[:, -K:] = seq
        data[split] = (_t(x, "int64"), _t(y, "int64"))
    for split in SPLITS:
        base[split] = K * math.log(S) / L
    return Task("copy", f"copy memory, delay T={T}, {K} symbols of {S}", "tokens", 0, S + 2, "all", "ce",
                S + 2, "ce", False, data, base, "memoryless",
                dict(hidden=64, steps=2000, batch=64, lr=1e-2, clip=1.0, eval_every=100),
                dict(length=T, n_train=n_train, n_val=n_val, n_test=n_test), embed_dim=16)


def copy_episodes(length: int = 48, episodes: int = 3, copy_len: int = 3, symbols: int = 8,
                  n_train: int = 20000, n_val: int = 1000, n_test: int = 1000) -> Task:
    """Copy memory over episodes, with input `reset` (examples/episodic_gru.cell). A sequence of
    `length` steps holds `episodes` episodes of random lengths (at least 2K+1 steps each, K =
    copy_len); `reset` is 1.0 at the first step of each (step 0 included), else 0. An episode reads
    its K symbols to remember, random symbols, the delimiter (S+1), then K more steps during which the
    target is those K symbols, then random symbols to its end. Every input but the delimiter is a
    random data symbol 1..S, so where an episode starts shows only in `reset`. The target is blank
    (0) off the recall steps. Loss and metric: cross-entropy per step (nats). Baseline (memoryless:
    blanks, uniform guesses on the recall steps): E·K·ln S / L. A model that ignores `reset` recalls
    the first episode and can only guess where the later ones start; one that resets can reach 0."""
    L, E, K, S = int(length), int(episodes), int(copy_len), int(symbols)
    if E < 1 or K < 1 or L < E * (2 * K + 1):
        raise ValueError(f"copy_episodes: length {L} must hold {E} episodes of at least 2·{K}+1 steps "
                         f"(episodes and copy_len at least 1)")
    data, inputs = {}, {}
    for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.default_rng([9, L, E, K, S, k])
        x = rng.integers(1, S + 1, size=(n, L))
        y = np.zeros((n, L), dtype=np.int64)
        reset = np.zeros((n, L), dtype=np.float32)
        spare = rng.multinomial(L - E * (2 * K + 1), np.full(E, 1.0 / E), size=n)   # [n, E] extra steps
        delay = rng.integers(0, spare + 1)          # of which before the delimiter; the rest after recall
        starts = np.cumsum(2 * K + 1 + spare, axis=1) - (2 * K + 1 + spare)
        rows = np.arange(n)
        for e in range(E):
            a = starts[:, e]
            d = a + K + delay[:, e]                 # the delimiter
            reset[rows, a] = 1.0
            x[rows, d] = S + 1
            for j in range(K):
                y[rows, d + 1 + j] = x[rows, a + j]
        data[split] = (_t(x, "int64"), _t(y, "int64"))
        inputs[split] = {"reset": _t(reset, "float32")}
    base = {split: E * K * math.log(S) / L for split in SPLITS}
    return Task("copy_episodes", f"copy memory in {E} episodes of {L} steps, {K} symbols of {S}, input reset",
                "tokens", 0, S + 2, "all", "ce", S + 2, "ce", False, data, base, "memoryless",
                dict(hidden=64, steps=2000, batch=64, lr=1e-2, clip=1.0, eval_every=100),
                dict(length=L, episodes=E, copy_len=K, n_train=n_train, n_val=n_val, n_test=n_test),
                embed_dim=16, inputs_data=inputs)


# ------------------------------------------------------------------------------------------- digits

def digits() -> Task:
    """scikit-learn's 8×8 handwritten digits (1797 images) read as 8 rows of 8 pixels (scaled to
    [0, 1]); classify the digit from the last step. Split 70/15/15 by a fixed permutation.
    Baseline: the training set's most common class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).reshape(-1, 8, 8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(3).permutation(len(y))
    n_tr, n_va = int(0.7 * len(y)), int(0.15 * len(y))
    parts = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
    data = {s: (_t(x[i], "float32"), _t(y[i], "int64")) for s, i in parts.items()}
    major = np.bincount(y[parts["train"]]).argmax()
    base = {s: float(np.mean(y[i] == major)) for s, i in parts.items()}
    t = Task("digits", "sklearn 8x8 digits as 8 rows of 8 pixels", "float", 8, 0, "last", "ce", 10,
             "accuracy", True, data, base, "majority-class",
             dict(hidden=64, steps=800, batch=64, lr=5e-3, clip=1.0, eval_every=100), {})
    t.index = parts  # the original sample numbers of each split (for the no-overlap test)
    return t


# ------------------------------------------------------------------------------------------- charlm

def charlm_text() -> str:
    """The text of CPython's pydoc_data.topics (the help() topics), values in sorted key order."""
    import pydoc_data.topics as topics

    return "\n".join(topics.topics[k] for k in sorted(topics.topics))


def charlm(length: int = 100) -> Task:
    """Character-level language model on CPython's pydoc_data/topics.py text (≈ 465k characters;
    the exact text comes with the Python version). Contiguous split 90/5/5; each split is cut into
    non-overlapping windows of `length` characters, the target the next character at every step.
    Metric: bits per character. Baseline: unigram character frequencies of the training text
    (add-one smoothed)."""
    L = int(length)
    if L < 2:
        raise ValueError(f"charlm: length must be at least 2, got {L}")
    text = charlm_text()
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lut[c] for c in text), dtype=np.int64, count=len(text))
    n = len(ids)
    cut = {"train": (0, int(0.9 * n)), "val": (int(0.9 * n), int(0.95 * n)), "test": (int(0.95 * n), n)}
    data = {}
    for s, (a, b) in cut.items():
        seg = ids[a:b]
        m = (len(seg) - 1) // L
        x = seg[:m * L].reshape(m, L)
        y = seg[1:m * L + 1].reshape(m, L)
        data[s] = (_t(x, "int64"), _t(y, "int64"))
    counts = np.bincount(ids[cut["train"][0]:cut["train"][1]], minlength=len(chars)) + 1.0
    logp = np.log2(counts / counts.sum())
    base = {s: float(-logp[data[s][1].numpy().ravel()].mean()) for s in SPLITS}
    t = Task("charlm", f"character LM on pydoc_data.topics, windows of {L}", "tokens", 0, len(chars), "all",
             "ce", len(chars), "bpc", False, data, base, "unigram",
             dict(hidden=128, steps=1500, batch=32, lr=3e-3, clip=1.0, eval_every=250),
             dict(length=L), embed_dim=32)
    t.chars = "".join(chars)
    t.cut = cut
    return t


# ----------------------------------------------------------------------------------------- sunspots

def sunspots(length: int = 20) -> Task:
    """Yearly sunspot numbers 1700-2008 (statsmodels.datasets.sunspots, 309 values): forecast the
    next year from a window of `length` years. Samples are split chronologically by the year they
    predict (70/15/15); values are normalised with the mean and standard deviation of the training
    years. Metric: RMSE in sunspot numbers. Baseline: persistence (next year = this year)."""
    s = _sunspot_series()
    W = int(length)
    if not 1 <= W < len(s) // 2:
        raise ValueError(f"sunspots: length (the window) must be in [1, {len(s) // 2}), got {W}")
    n = len(s)
    targets = np.arange(W, n)                      # sample k predicts s[targets[k]] from s[t-W:t]
    t_tr, t_va = int(0.7 * n), int(0.85 * n)       # split points in years (index into s)
    train_vals = s[:t_tr]
    mu, sd = float(train_vals.mean()), float(train_vals.std())
    z = (s - mu) / sd
    x = np.stack([z[t - W:t] for t in targets])[:, :, None]
    y = z[targets][:, None]
    parts = {"train": targets < t_tr, "val": (targets >= t_tr) & (targets < t_va), "test": targets >= t_va}
    data = {k: (_t(x[m], "float32"), _t(y[m], "float32")) for k, m in parts.items()}
    base = {k: float(np.sqrt(np.mean((s[targets[m]] - s[targets[m] - 1]) ** 2))) for k, m in parts.items()}
    t = Task("sunspots", f"yearly sunspots, window {W}", "float", 1, 0, "last", "mse", 1, "rmse", False,
             data, base, "persistence",
             dict(hidden=32, steps=600, batch=32, lr=5e-3, clip=1.0, eval_every=50),
             dict(length=W), y_scale=sd)
    t.index = {k: targets[m] for k, m in parts.items()}
    t.norm = (mu, sd)
    return t


def _sunspot_series() -> np.ndarray:
    from statsmodels.datasets import sunspots as ss

    return np.asarray(ss.load_pandas().data["SUNACTIVITY"], dtype=np.float64)


def sunspots_gaps(length: int = 20, observed: float = 0.6) -> Task:
    """The yearly sunspots observed irregularly: a fixed seed keeps each year with probability
    `observed` (0.6: 185 of the 309 years). A sample is a window of `length` consecutive observations
    (their values, x) with input `dt`, the gap in years since the observation before (1 = the year
    before; mean 1/observed; in years, the unit of tlstm's decay 1/log(e + dt), not rescaled); its
    target is the value of the year after the window's last observation. Split chronologically by
    that year at the same years as sunspots (70/15/15); values normalised with the observed training
    years. Metric: RMSE in sunspot numbers. Baseline: persistence (the last observed value)."""
    s = _sunspot_series()
    n, W = len(s), int(length)
    if not 0 < observed <= 1:
        raise ValueError(f"sunspots_gaps: observed (the fraction of years kept) must be in (0, 1], got {observed}")
    years = np.flatnonzero(np.random.default_rng(11).random(n) < observed)   # the observed years
    if not 1 <= W < len(years) // 2:
        raise ValueError(f"sunspots_gaps: length (the window, in observations) must be in [1, "
                         f"{len(years) // 2}), got {W}")
    ends = np.arange(W, len(years))                 # sample k reads observations ends[k]-W+1 .. ends[k]
    ends = ends[years[ends] + 1 < n]
    win = np.stack([years[k - W + 1:k + 1] for k in ends])            # [N, W]: the years read
    dt = win - np.stack([years[k - W:k] for k in ends])               # the gap before each of them
    targets = win[:, -1] + 1
    t_tr, t_va = int(0.7 * n), int(0.85 * n)
    seen = s[years[years < t_tr]]
    mu, sd = float(seen.mean()), float(seen.std())
    z = (s - mu) / sd
    x, y = z[win][:, :, None], z[targets][:, None]
    parts = {"train": targets < t_tr, "val": (targets >= t_tr) & (targets < t_va), "test": targets >= t_va}
    data = {k: (_t(x[m], "float32"), _t(y[m], "float32")) for k, m in parts.items()}
    base = {k: float(np.sqrt(np.mean((s[targets[m]] - s[targets[m] - 1]) ** 2))) for k, m in parts.items()}
    t = Task("sunspots_gaps", f"yearly sunspots observed irregularly ({observed:g} of years), window {W}", "float",
             1, 0, "last", "mse", 1, "rmse", False, data, base, "persistence",
             dict(hidden=32, steps=600, batch=32, lr=5e-3, clip=1.0, eval_every=50),
             dict(length=W, observed=float(observed)), y_scale=sd,
             inputs_data={k: {"dt": _t(dt[m], "float32")} for k, m in parts.items()})
    t.index, t.years, t.norm = {k: targets[m] for k, m in parts.items()}, years, (mu, sd)
    return t


# -------------------------------------------------------------------------------------- co2_anomaly

# The anomalies injected into the test weeks (lstmc/anomaly.py's docstring documents them).
KINDS = ("spike", "level_shift", "variance")
EVENTS = {  # kind: (events, weeks each, size range in sigma): see lstmc/anomaly.py
    "spike": (6, 1, (4.0, 6.0)),
    "level_shift": (2, 8, (3.0, 4.0)),
    "variance": (2, 12, (2.0, 2.0)),
}
GAP = 10            # weeks between two events, at least


def load_co2():
    """(weeks as datetime64[D], CO2 in ppm with the missing weeks interpolated, mask of those weeks)."""
    from statsmodels.datasets import co2

    s = co2.load_pandas().data["co2"]
    filled = s.isna().to_numpy()
    values = s.interpolate(method="time").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("co2: a missing week at an end of the series cannot be interpolated")
    return s.index.to_numpy().astype("datetime64[D]"), values, filled


def inject(clean: np.ndarray, start: int, sigma: float, seed: int = 0, events: dict = EVENTS, gap: int = GAP):
    """Inject `events` into clean[start:] with a fixed seed. Returns (series, kinds, placed): the
    changed copy, the kind of every point ("" where unchanged) and one dict per event (kind, start,
    weeks, size in sigma, as placed)."""
    rng = np.random.default_rng([7, int(seed)])
    n = len(clean)
    order = [k for k, (count, _, _) in events.items() for _ in range(count)]
    order = [order[i] for i in rng.permutation(len(order))]
    taken = np.zeros(n, dtype=bool)
    series = np.array(clean, dtype=np.float64)
    kinds = np.full(n, "", dtype=object)
    placed = []
    for kind in order:
        _, weeks, (lo, hi) = events[kind]
        for _ in range(10_000):
            a = int(rng.integers(start, n - weeks + 1))
            if not taken[max(0, a - gap):a + weeks + gap].any():
                break
        else:
            raise ValueError(f"cannot place the anomalies {gap} weeks apart in {n - start} test weeks")
        taken[a:a + weeks] = True
        size = float(rng.uniform(lo, hi))
        if kind == "variance":
            delta = rng.normal(0.0, size * sigma, weeks)
        else:
            delta = np.full(weeks, size * sigma * rng.choice((-1.0, 1.0)))
        series[a:a + weeks] += delta
        kinds[a:a + weeks] = kind
        placed.append({"kind": kind, "start": a, "weeks": weeks, "size_sigma": round(size, 3)})
    placed.sort(key=lambda e: e["start"])
    return series, kinds, placed


def co2_task(length: int = 26, seed: int = 0):
    """The `co2_anomaly` task (the data, the injection and the threshold rule: lstmc/anomaly.py's docstring). Besides the data, it carries for the
    detector: `index` (split -> the week each sample predicts), `times`, `series` (with the
    anomalies), `clean`, `kinds` (per week), `events`, `filled`, `sigma` and `norm`."""
    W = int(length)
    times, clean, filled = load_co2()
    n = len(clean)
    if not 1 <= W <= 104:
        raise ValueError(f"co2_anomaly: length (the window, in weeks) must be in [1, 104], got {W}")
    t_tr, t_va = int(0.7 * n), int(0.85 * n)
    d_clean = np.diff(clean)                        # d_clean[t-1] = clean[t] - clean[t-1]
    ok = ~(filled[1:] | filled[:-1])
    sigma = float(d_clean[:t_tr - 1][ok[:t_tr - 1]].std())
    series, kinds, events = inject(clean, t_va, sigma, seed)

    d = np.concatenate([[np.nan], np.diff(series)])  # d[t] = series[t] - series[t-1]
    targets = np.arange(W + 1, n)                   # sample k predicts d[t] from d[t-W:t], t = targets[k]
    reads_filled = np.array([filled[t - W - 1:t + 1].any() for t in targets])
    parts = {"train": (targets < t_tr) & ~reads_filled, "val": (targets >= t_tr) & (targets < t_va),
             "test": targets >= t_va}
    mu, sd = float(d[targets[parts["train"]]].mean()), float(d[targets[parts["train"]]].std())
    z = (d - mu) / sd
    x = np.stack([z[t - W:t] for t in targets])[:, :, None]
    y = z[targets][:, None]
    data = {k: (_t(x[m], "float32"), _t(y[m], "float32")) for k, m in parts.items()}
    base = {k: float(np.sqrt(np.mean(d[targets[m]] ** 2))) for k, m in parts.items()}
    t = Task("co2_anomaly", f"weekly Mauna Loa CO2 differences, window {W}, anomalies injected into test",
             "float", 1, 0, "last", "mse", 1, "rmse", False, data, base, "persistence",
             dict(hidden=32, steps=600, batch=32, lr=5e-3, clip=1.0, eval_every=50),
             dict(length=W, seed=int(seed)), y_scale=sd)
    t.index = {k: targets[m] for k, m in parts.items()}
    t.times, t.series, t.clean, t.kinds, t.events, t.filled = times, series, clean, kinds, events, filled
    t.sigma, t.norm = sigma, (mu, sd)
    return t


def co2_anomaly(length: int = 26, seed: int = 0) -> Task:
    """Weekly Mauna Loa CO2 1958-2001 (statsmodels.datasets.co2, missing weeks interpolated),
    differenced: forecast next week's change from a window of `length` weekly changes. Chronological
    split 70/15/15 by the predicted week, normalised with the training part; anomalies of three kinds
    (spikes, level shifts, variance changes; fixed `seed`) injected into the test weeks only.
    Metric: RMSE of the level forecast in ppm. Baseline: persistence. lstmc.anomaly detects them."""
    return co2_task(length, seed)


TASKS = {"adding": adding, "copy": copy, "digits": digits, "charlm": charlm, "sunspots": sunspots,
         "co2_anomaly": co2_anomaly, "sunspots_gaps": sunspots_gaps, "copy_episodes": copy_episodes}
TASK_INPUTS = {"sunspots_gaps": ("dt",), "copy_episodes": ("reset",)}   # the extra inputs each task provides
_cache: dict = {}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str, length: int | None = None, **options) -> Task:
    """A task by name. `length` is the sequence length T (adding, copy_episodes), the delay T (copy),
    the window length in characters (charlm), years (sunspots), observations (sunspots_gaps) or weeks
    (co2_anomaly); digits has a fixed length of 8.
    Tasks are cached by their options (the data is immutable)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if length is not None:
        if name == "digits":
            if int(length) != 8:
                raise ValueError("digits: the length is fixed at 8 rows")
        else:
            options["length"] = int(length)
    key = (name, tuple(sorted(options.items())))
    t = _cache.get(key)
    if t is None:
        t = _cache[key] = TASKS[name](**options)
    return t
