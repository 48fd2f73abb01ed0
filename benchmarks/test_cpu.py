"""CPU benchmarks of the numba backend against the real alternatives, in one run (issue #3's table).

    make bench        # = pytest benchmarks --benchmark-json=benchmarks/results.json, then report.py

Every case is float32, 2 threads for every contender (LSTMC_BENCH_THREADS), medians of rounds
after warm-up. A "training step" is forward + backward over the whole sequence.
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lstmc
from lstmc.backends.numba.blas import matmul

from handwritten import HANDWRITTEN, USER_CELL

HERE = Path(__file__).parent
EXTRA = HERE / "extra.json"
ROUNDS = int(os.environ.get("LSTMC_BENCH_ROUNDS", "7"))


def _record(key, value):
    data = json.loads(EXTRA.read_text()) if EXTRA.exists() else {}
    data[key] = value
    EXTRA.write_text(json.dumps(data, indent=1))


def _run(benchmark, fn, **info):
    benchmark.extra_info.update(info)
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def _cell(name):
    if name == "decay_gru":
        return lstmc.parse(USER_CELL)
    if name in ("slstm", "slstm_heads", "layernorm_lstm"):   # the language's second edition (selects, heads, mean)
        return lstmc.load(str(Path(__file__).resolve().parents[1] / "examples" / f"{name}.cell"))
    return lstmc.load(name)


def _problem(cell, T, B, I, H, seed=0):
    nb = lstmc.compile(cell, "numba", "float32")
    params = nb.init_params(I, H, seed=seed)
    x = np.random.default_rng(seed).normal(size=(T, B, I)).astype(np.float32)
    return nb, params, x


def lstmc_step(nb, params, x, train=True):
    if not train:
        return lambda: nb.forward(x, params, need_tape=False)

    def step():
        y, _, tape = nb.forward(x, params)
        nb.backward(tape, np.ones_like(y))
    return step


def torch_step(module, x, train=True):
    xt = torch.from_numpy(x)
    if not train:
        def fwd():
            with torch.no_grad():
                module(xt)
        return fwd

    def step():
        xx = xt.clone().requires_grad_()
        y, _ = module(xx)
        y.backward(torch.ones_like(y))
    return step


# ------------------------------------------------------------------------------ vs nn.LSTM / nn.GRU

NATIVE = [  # group, cell, T, B, I, H, train
    ("lstm-T100-B64-H256-train", "lstm", 100, 64, 256, 256, True),
    ("lstm-T100-B1-H256-fwd", "lstm", 100, 1, 256, 256, False),
    ("gru-T100-B64-H256-train", "gru", 100, 64, 256, 256, True),
]


@pytest.mark.parametrize("who", ["lstmc-numba", "torch-native"])
@pytest.mark.parametrize("case", NATIVE, ids=[c[0] for c in NATIVE])
def test_vs_native(benchmark, case, who, machine):
    group, cell, T, B, I, H, train = case
    benchmark.group = group
    nb, params, x = _problem(cell, T, B, I, H)
    if who == "lstmc-numba":
        fn = lstmc_step(nb, params, x, train)
    else:
        module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H)
        fn = torch_step(module, x, train)
    _run(benchmark, fn, machine=machine)


@pytest.mark.parametrize("who", ["lstmc-numba", "torch-native"])
def test_lstmp_vs_native(benchmark, who, machine):
    """lstmp (P=128) against nn.LSTM(proj_size=128): T=100, B=64, I=H=256, forward + backward."""
    T, B, I, H, P = 100, 64, 256, 256, 128
    benchmark.group = "lstmp-P128-T100-B64-H256-train"
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
    if who == "lstmc-numba":
        nb = lstmc.compile("lstmp", "numba", "float32")
        fn = lstmc_step(nb, nb.init_params(I, H, seed=0, sizes={"P": P}), x)
    else:
        fn = torch_step(torch.nn.LSTM(I, H, proj_size=P), x)
    _run(benchmark, fn, machine=machine)


# ------------------------------------------------------------------- vs eager PyTorch of the same cell

CUSTOM = ["peephole_lstm", "cifg_lstm", "gru_v1", "decay_gru", "slstm", "slstm_heads", "layernorm_lstm"]


@pytest.mark.parametrize("who", ["lstmc-numba", "lstmc-torch-backend", "handwritten-torch"])
@pytest.mark.parametrize("cell", CUSTOM)
def test_vs_eager(benchmark, cell, who, machine):
    T, B, I, H = 100, 64, 256, 256
    benchmark.group = f"{cell}-T100-B64-H256-train"
    nb, params, x = _problem(_cell(cell), T, B, I, H)
    if who == "lstmc-numba":
        fn = lstmc_step(nb, params, x)
    elif who == "lstmc-torch-backend":
        tb = lstmc.compile(_cell(cell), "torch", "float32")
        pt = {k: torch.from_numpy(v) for k, v in params.items()}
        xt = torch.from_numpy(x)

        def fn():
            y, _, tape = tb.forward(xt, pt)
            tb.backward(tape, torch.ones_like(y))
    else:
        pt = {k: torch.from_numpy(v).requires_grad_() for k, v in params.items()}
        xt = torch.from_numpy(x)

        def fn():
            xx = xt.clone().requires_grad_()
            y = HANDWRITTEN[cell](xx, pt)
            y.backward(torch.ones_like(y))
    _run(benchmark, fn, machine=machine)


# ------------------------------------------------------ heads: per-head products vs the dense matrix

@pytest.mark.parametrize("train", [True, False], ids=["train", "fwd"])
@pytest.mark.parametrize("who", ["per-head", "dense-block-diagonal"])
def test_heads_vs_dense(benchmark, who, train, machine):
    """slstm_heads (4 heads: U [4, 64, 64], multiplied head by head) against the same cell without
    `heads` given the dense block-diagonal [256, 256] matrices: the same numbers, 4x the FLOPs."""
    T, B, I, H = 100, 64, 256, 256
    benchmark.group = f"slstm_heads-T100-B64-H256-{'train' if train else 'fwd'}-per-head-vs-dense"
    cell = _cell("slstm_heads")
    nb, params, x = _problem(cell, T, B, I, H)
    if who == "dense-block-diagonal":
        text = (Path(__file__).resolve().parents[1] / "examples" / "slstm_heads.cell").read_text()
        nb = lstmc.compile("\n".join(ln for ln in text.splitlines() if not ln.startswith("heads")), "numba", "float32")
        params = {k: _block_diag(v) if v.ndim == 3 else v for k, v in params.items()}
    _run(benchmark, lstmc_step(nb, params, x, train), machine=machine)


def _block_diag(u):
    N, d, _ = u.shape
    out = np.zeros((N * d, N * d), u.dtype)
    for n in range(N):
        out[n * d:(n + 1) * d, n * d:(n + 1) * d] = u[n]
    return out


# ---------------------------------------------------------------- what the reductions cost in lstmc

@pytest.mark.parametrize("cell", ["lstm", "layernorm_lstm"])
def test_reductions_cost(benchmark, cell, machine):
    """layernorm_lstm (9 layer norms per step: 18 row reductions) against lstm, both lstmc numba."""
    benchmark.group = "reductions-cost-T100-B64-H256-train"
    nb, params, x = _problem(_cell(cell), 100, 64, 256, 256)
    _run(benchmark, lstmc_step(nb, params, x), machine=machine)


# ----------------------------------------------------------------------- vs the machine's sgemm rate

def test_sgemm_rate(benchmark, machine):
    """The ceiling: this machine's sgemm through the BLAS lstmc uses (2048^3, float32)."""
    benchmark.group = "lstm-T100-B64-H512-fwd"
    n = 2048
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    b = np.random.default_rng(1).normal(size=(n, n)).astype(np.float32)
    out = np.empty((n, n), np.float32)
    _run(benchmark, lambda: matmul(a, b, out), flops=2 * n ** 3, machine=machine)


def test_lstm_h512_forward(benchmark, machine):
    benchmark.group = "lstm-T100-B64-H512-fwd"
    T, B, I, H = 100, 64, 512, 512
    nb, params, x = _problem("lstm", T, B, I, H)
    _run(benchmark, lstmc_step(nb, params, x, train=False), flops=8 * B * H * (I + H) * T, machine=machine)


# ------------------------------------------------------------------------------------- compile time

_COMPILE = """
import sys, time
t = time.perf_counter()
import lstmc
t_import = time.perf_counter() - t
t = time.perf_counter()
lstmc.compile(lstmc.parse(sys.argv[1]), "numba", "float32")
print(time.perf_counter() - t, t_import)
"""


def test_compile_time(tmp_path):
    """A cell never seen before: cold (empty cache) and warm (a second process, same cache)."""
    text = USER_CELL.replace("0.9 * m", f"{float(0.9 + np.random.default_rng().integers(1, 10**6) * 1e-9)!r} * m")
    env = os.environ | {"LSTMC_CACHE_DIR": str(tmp_path)}
    run = lambda: subprocess.run([sys.executable, "-c", _COMPILE, text], capture_output=True, text=True,  # noqa
                                 env=env, check=True).stdout.split()
    cold, imp = map(float, run())
    warm, _ = map(float, run())
    _record("compile", {"cold_s": cold, "warm_s": warm, "import_s": imp})


# ------------------------------------------------------------------------------------------- memory

_MEMORY = """
import sys, numpy as np, torch
T, B, I, H = int(sys.argv[2]), 64, 256, 256
torch.set_num_threads(2)


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


def start():
    # the peak must be the step's own: reset the high-water mark (VmHWM) to the current RSS (Linux
    # >= 4.0, '5' to clear_refs); without that, ru_maxrss keeps the peak of imports or compilation
    open("/proc/self/clear_refs", "w").write("5")
    return status("VmRSS")


x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
if sys.argv[1] == "lstmc":
    import lstmc
    nb = lstmc.compile("lstm", "numba", "float32"); p = nb.init_params(I, H)
    nb.forward(x[:2], p)
    base = start()
    y, _, tape = nb.forward(x, p); nb.backward(tape, np.ones_like(y))
    tape_bytes = sum(a.nbytes for a in list(tape.states.values()) + list(tape.saved.values()))
else:
    m = torch.nn.LSTM(I, H); xt = torch.from_numpy(x)
    m(xt[:2])
    base = start()
    xx = xt.clone().requires_grad_(); y, _ = m(xx); y.backward(torch.ones_like(y))
    tape_bytes = 0
print(status("VmHWM") - base, tape_bytes)
"""


def test_peak_memory():
    """Peak resident memory added by one training step, T=1000 B=64 I=H=256 (and T=500: linear in T)."""
    out = {}
    for who in ("lstmc", "torch"):
        # a first process fills the compile cache, so the measured ones only load the kernels
        subprocess.run([sys.executable, "-c", _MEMORY, who, "2"], capture_output=True, check=True)
        for T in (500, 1000):
            r = subprocess.run([sys.executable, "-c", _MEMORY, who, str(T)], capture_output=True, text=True,
                               check=True)
            peak, tape = map(int, r.stdout.split())
            out[f"{who}_T{T}"] = {"peak_bytes": peak, "tape_bytes": tape}
    _record("memory", out)


_INFER = r"""
import sys
import numpy as np
import torch

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

T, B, I, H = int(sys.argv[2]), 16, 128, 128
x = np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32)
if sys.argv[1] == "lstmc":
    import lstmc
    nb = lstmc.compile("lstm", "numba", "float32"); p = nb.init_params(I, H)
    nb.forward(x[:2], p, need_tape=False)
    open("/proc/self/clear_refs", "w").write("5"); base = status("VmRSS")
    y, _, _ = nb.forward(x, p, need_tape=False)
else:
    m = torch.nn.LSTM(I, H); xt = torch.from_numpy(x)
    with torch.no_grad():
        m(xt[:2])
        open("/proc/self/clear_refs", "w").write("5"); base = status("VmRSS")
        y, _ = m(xt)
print(status("VmHWM") - base)
"""


def test_inference_peak_memory():
    """Peak resident memory added by one inference call (no tape / no_grad), lstm B=16 I=H=128, at
    T=1,000 and 10,000: lstmc computes input products in time chunks, so it is the output plus a
    bounded workspace."""
    out = {}
    for who in ("lstmc", "torch"):
        subprocess.run([sys.executable, "-c", _INFER, who, "2"], capture_output=True, check=True)
        for T in (1000, 10000):
            r = subprocess.run([sys.executable, "-c", _INFER, who, str(T)], capture_output=True, text=True, check=True)
            out[f"{who}_T{T}"] = int(r.stdout.split()[-1])
    out["output_T1000"], out["output_T10000"] = 1000 * 16 * 128 * 4, 10000 * 16 * 128 * 4
    _record("inference_memory", out)


_ = (resource, time)
