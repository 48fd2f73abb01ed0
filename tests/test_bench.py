"""`lstmc bench` smoke test: it runs, and its JSON, Markdown and PNG are complete."""

import json
import subprocess
import sys

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
