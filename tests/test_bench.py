"""`lstmc bench` smoke test: it runs, and its JSON, Markdown and PNG are complete."""

import json
import subprocess
import sys

import pytest

import lstmc
from lstmc import bench


def test_flop_count_follows_the_gemm_plan():
    # lstm: 4 input and 4 recurrent products per step; gru_v1: 3 + 3 (two phases)
    assert bench.forward_flops("lstm", 10, 2, 3, 5) == 10 * 2 * 2 * 5 * (4 * 3 + 4 * 5)
    assert bench.forward_flops("gru_v1", 10, 2, 3, 5) == 10 * 2 * 2 * 5 * (3 * 3 + 3 * 5)
    assert bench.forward_flops("indrnn", 10, 2, 3, 5) == 10 * 2 * 2 * 5 * 3


def test_bench_cli_writes_json_markdown_and_plot(tmp_path):
    cell = tmp_path / "mine.cell"
    cell.write_text("cell mine\nstate h\nh' = tanh(W @ x + U @ h + b) * sigmoid(V @ h)\n")
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "lstmc", "bench", "lstm", str(cell), "--backend", "numba,torch",
                        "--T", "3", "--B", "1,2", "--H", "8", "--reps", "1", "--json", str(out),
                        "--md", str(tmp_path / "b.md"), "--plot", str(tmp_path / "b.png")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["sgemm_gflops"] > 0 and data["machine"]["cores"] >= 1
    ms = data["measurements"]
    # lstm: numba, torch, torch.nn; mine: numba, torch — for 2 batch sizes
    assert len(ms) == 2 * (3 + 2)
    for m in ms:
        assert m["fwd_ms"] > 0 and m["train_ms"] > 0 and m["train_gflops"] > 0
        assert m["vs_torch_backend"] is not None
    assert {m["cell"] for m in ms} == {"lstm", "mine"}
    assert all(m["vs_native"] is not None for m in ms if m["cell"] == "lstm")
    assert "| lstm | numba |" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "lstmc", "bench", "lstm", "--B", "0"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "--B takes positive integers" in r.stderr
    r = subprocess.run([sys.executable, "-m", "lstmc", "bench", "lstm", "--backend", "cuda"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "unknown backend" in r.stderr


_ = lstmc


class _Clock:
    """A fake perf_counter: each call of the timed function advances it by the next duration."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, list(durations)

    def perf_counter(self):
        return self.now

    def fn(self):
        self.now += self.durations.pop(0) if self.durations else 0.001


def test_a_noisy_case_is_measured_again_and_flagged_if_it_stays_noisy(monkeypatch):
    steady = _Clock([0.0] + [0.010] * 5)                  # warm-up, then 5 equal calls
    monkeypatch.setattr(bench.time, "perf_counter", steady.perf_counter)
    med, iqr, noisy = bench.timed(steady.fn, 5)
    assert (med, iqr, noisy) == (pytest.approx(10.0), pytest.approx(0.0, abs=1e-9), False) and not steady.durations
    settles = _Clock([0.0] + [0.010, 0.030, 0.010, 0.030, 0.010] + [0.010] * 10)   # a busy first round
    monkeypatch.setattr(bench.time, "perf_counter", settles.perf_counter)
    med, iqr, noisy = bench.timed(settles.fn, 5)
    # the second round settles it (samples pooled): no third round
    assert len(settles.durations) == 5 and med == pytest.approx(10.0) and not noisy
    busy = _Clock([0.0] + [0.010, 0.030] * 8)
    monkeypatch.setattr(bench.time, "perf_counter", busy.perf_counter)
    assert bench.timed(busy.fn, 5)[2] is True                                            # still noisy


def _m(**kw):
    base = dict(cell="lstm", backend="numba", T=10, B=2, I=8, H=8, dtype="float32", fwd_ms=1.0, fwd_iqr_ms=0.1,
                train_ms=3.0, train_iqr_ms=0.1, fwd_gflops=1.0, train_gflops=1.0)
    m = bench.Measurement(**{**base, **kw})
    m.problems = bench.consistency(m)
    return m


def test_rows_that_contradict_themselves_are_flagged_with_the_reason():
    ok, fast, over = _m(), _m(train_ms=0.5), _m(pct_sgemm=250.0)
    assert not ok.problems and "faster than its forward" in fast.problems[0] and "250%" in over.problems[0]
    over.vs_native = 0.00412
    text = bench.table(bench.BenchResult(machine={"cpu": "x", "threads": 2}, sgemm_gflops=10.0,
                                         measurements=[ok, fast, over]))
    assert "0.00412" in text and "(<1: faster)" in text and text.count("impossible: see below") == 2
    assert "- lstm numba B=2 H=8: the training step (0.5 ms) is faster than its forward alone (1 ms)" in text
