"""ONNX Runtime running lstmc's ONNX exports (lstmc/onnx_export) against lstmc's own numba forward.

    .venv/bin/python -m pytest benchmarks/test_bench_onnx.py -p no:cacheprovider -q

Inference only (a forward over the whole sequence, no tape), float32, T=100, B=16, I=H=128, one
direction, 2 threads for every contender (LSTMC_BENCH_THREADS; ONNX Runtime's intra-op pool gets the
same), medians of rounds after warm-up. Two exports: the generic Scan form of `gru_v1` (its step is
two dependent GEMM phases) and the native ONNX `LSTM` of `lstm`; each contender computes the same
numbers (checked before timing). The ratio ONNX Runtime / numba is printed at the end (target for the
generic form: <= 3x).
"""

import os

import numpy as np
import pytest
import torch

from conftest import THREADS

ort = pytest.importorskip("onnxruntime")

from lstmc.nn import Recurrent  # noqa: E402
from lstmc.onnx_export import to_onnx  # noqa: E402

T, B, H = 100, 16, 128
I = H
ROUNDS = int(os.environ.get("LSTMC_BENCH_ROUNDS", "15"))
CASES = [("gru_v1", False), ("lstm", True)]       # (cell, native)
MEDIANS: dict = {}


def _setup(cell):
    torch.manual_seed(0)
    rnn = Recurrent(cell, I, H, backend="numba", dtype=torch.float32).eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(T, B, I)).astype(np.float32))
    return rnn, x


def _session(rnn, x, native):
    """An ONNX Runtime session of the export, checked against lstmc before it is timed. Its pool does
    not spin between runs (spinning threads would take the cores from whatever runs next)."""
    model = to_onnx(rnn, None, x, native=native)
    assert any(n.op_type == ("LSTM" if native else "Scan") for n in model.graph.node)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"input": x.numpy()}
    with torch.no_grad():
        want = rnn(x)[0].numpy()
    assert np.max(np.abs(sess.run(["output"], feeds)[0] - want)) < 1e-4, "the export and lstmc disagree"
    return sess, feeds


@pytest.mark.parametrize("who", ["lstmc-numba", "onnxruntime"])
@pytest.mark.parametrize("cell, native", CASES, ids=[f"{c}-{'native' if n else 'scan'}" for c, n in CASES])
def test_onnx_forward(benchmark, machine, cell, native, who):
    rnn, x = _setup(cell)
    if who == "onnxruntime":
        sess, feeds = _session(rnn, x, native)
        fn = lambda: sess.run(["output"], feeds)  # noqa: E731
    else:
        def fn():
            with torch.no_grad():
                rnn(x)
    benchmark.group = f"onnx-{cell}-{'native' if native else 'scan'}-T{T}-B{B}-H{H}"
    benchmark.extra_info.update(machine=machine, who=who, form="native" if native else "scan")
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    MEDIANS[(cell, who)] = (benchmark.stats.stats.median, benchmark.stats.stats.min)


def test_ratios():
    """ONNX Runtime's median over lstmc numba's, per case (printed; run with -s to see it)."""
    lines = []
    for cell, native in CASES:
        if (cell, "onnxruntime") in MEDIANS and (cell, "lstmc-numba") in MEDIANS:
            (o, omin), (n, nmin) = MEDIANS[(cell, "onnxruntime")], MEDIANS[(cell, "lstmc-numba")]
            lines.append(f"{cell} ({'native' if native else 'Scan'}): median onnxruntime {o * 1e3:.2f} ms, "
                         f"lstmc numba {n * 1e3:.2f} ms, ratio {o / n:.2f}; min {omin * 1e3:.2f} / "
                         f"{nmin * 1e3:.2f} ms, ratio {omin / nmin:.2f}")
    print("\n" + "\n".join(lines))
    if not lines:
        pytest.skip("the timing tests did not run")
