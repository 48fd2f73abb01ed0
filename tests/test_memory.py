"""Memory of the numba backend: inference without a tape is the output plus a bounded workspace, and
what lstmc keeps between calls is bounded in bytes.

Before: lstm float32 B=16 I=H=128 T=10,000 with need_tape=False peaked at 432 MB (the hoisted
[T, B, 4H] input-product buffer) against nn.LSTM's 164 MB; the recycling pool was bounded by count
only, so a T that changes every call piled up blocks of stale sizes.
"""

import subprocess
import sys

import numpy as np
import pytest

import lstmc

# peak resident memory one no-tape forward adds, in its own process (the high-water mark reset by
# /proc/self/clear_refs after the kernels are loaded, as benchmarks/test_cpu.py measures it)
_PEAK = r"""
import sys
import numpy as np
import lstmc

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

T, B, I, H = int(sys.argv[1]), 16, 128, 128
x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
nb = lstmc.compile("lstm", "numba", "float32")
p = nb.init_params(I, H)
nb.forward(x[:2], p, need_tape=False)
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
y, _, _ = nb.forward(x, p, need_tape=False)
print(status("VmHWM") - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_inference_peak_memory_is_the_output_plus_a_bounded_workspace():
    T = 10_000
    out = subprocess.run([sys.executable, "-c", _PEAK, str(T)], capture_output=True, text=True, check=True)
    peak = int(out.stdout.split()[-1])
    output = T * 16 * 128 * 4                    # 78 MiB; the input-product buffer alone was 4x that
    # measured 88 MiB; allow the workspace (4 MiB), packed weights and allocator slack
    assert peak < output + (32 << 20), f"peak {peak / 2**20:.0f} MiB for a {output / 2**20:.0f} MiB output"


CASES = [  # cell, lengths, reverse, chunk budget in steps
    ("lstm", None, False, 1),
    ("lstm", [13, 0, 5, 12, 1], True, 2),
    ("gru_v1", [13, 0, 5, 12, 1], False, 3),     # a staged (second-phase) product
    ("gru_v1", None, True, 4),
    ("indrnn", [7, 13, 1, 0, 2], True, 1),       # no recurrent GEMM
    ("mgu", [13, 13, 13, 13, 2], False, 5),
]


@pytest.mark.parametrize("cell,lengths,reverse,steps", CASES)
def test_chunked_inference_equals_the_whole_sequence(cell, lengths, reverse, steps, monkeypatch):
    """need_tape=False over time chunks gives the outputs and final states of one whole-sequence call
    (with odd and even chunk sizes, lengths that end inside and before a chunk, reverse)."""
    nb = lstmc.compile(cell, "numba", "float32")
    ref = lstmc.compile(cell, "reference", "float64")
    T, B, I, H = 13, 5, 6, 7
    rng = np.random.default_rng(0)
    p = nb.init_params(I, H, seed=2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    st = {s: rng.standard_normal((B, H)).astype(np.float32) for s in nb.cell.states}
    L = None if lengths is None else np.array(lengths)
    want_y, want_s, _ = ref.forward(x.astype(np.float64), {k: v.astype(np.float64) for k, v in p.items()},
                                    {k: v.astype(np.float64) for k, v in st.items()}, L, reverse, need_tape=False)
    seen = []
    real = type(nb)._workspace

    def workspace(self, name, shape, zero=False):
        seen.append((name, shape))
        return real(self, name, shape, zero)

    monkeypatch.setattr(type(nb), "_workspace", workspace)
    nx = len(nb.program.input_mats)
    monkeypatch.setattr(nb, "INFER_BYTES", steps * B * max(nx, 1) * H * 4, raising=False)
    y, final, tape = nb.forward(x, p, st, L, reverse, need_tape=False)
    assert tape is None
    assert ("big", (T * B, nx * H)) not in seen                   # no whole-sequence input products
    assert all(shape[0] <= steps * B for name, shape in seen if name == "xpc")
    np.testing.assert_allclose(y, want_y, atol=2e-6)
    for s in want_s:
        np.testing.assert_allclose(final[s], want_s[s], atol=2e-6)
    y1, f1, _ = nb.forward(x, p, st, L, reverse, need_tape=True)  # and what a tape-making call computes
    np.testing.assert_allclose(y, y1, atol=1e-6)


def test_recycled_memory_is_bounded_in_bytes(monkeypatch):
    """With a T that changes every call, the free blocks the pool keeps stay under POOL_BYTES."""
    nb = lstmc.compile("lstm", "numba", "float32")
    monkeypatch.setattr(nb, "POOL_BYTES", 1 << 20, raising=False)
    nb.empty_cache()
    p = nb.init_params(8, 32)
    rng = np.random.default_rng(0)
    for T in rng.integers(50, 400, size=30):
        x = rng.standard_normal((int(T), 4, 8)).astype(np.float32)
        y, _, tape = nb.forward(x, p)
        nb.backward(tape, np.ones_like(y))
    del y, tape
    y1, _, _ = nb.forward(x[:1], p, need_tape=False)   # the bound is applied when a block is taken
    pool = nb._local.__dict__["pool"]
    free = sum(a.nbytes for a in pool if sys.getrefcount(a) <= 3)
    assert free <= 1 << 20, f"{free / 2**20:.1f} MiB of unused blocks kept"
    assert len(pool) >= 1     # it still recycles


@pytest.mark.parametrize("lengths,reverse", [(None, False), ([7, 3, 0], True)])
def test_values_no_backward_reads_are_not_in_the_tape(lengths, reverse):
    """layernorm_lstm's reduction operands (program.step_only: 18 of its saved values) live in one
    [1, B, H] row reused every step, not in the [T, B, H] tape, and its nine sqrt(var + eps) (one
    number per row: program.row_values) are [T, B, 1]; the gradients still equal the float64
    reference's, with lengths and reverse."""
    from pathlib import Path
    cell = lstmc.load(str(Path(__file__).resolve().parents[1] / "examples" / "layernorm_lstm.cell"))
    nb, ref = lstmc.compile(cell, "numba", "float64"), lstmc.compile(cell, "reference", "float64")
    T, B, I, H = 7, 3, 5, 6
    p = nb.init_params(I, H, seed=1)
    x = np.random.default_rng(2).standard_normal((T, B, I))
    L = None if lengths is None else np.array(lengths)
    y, _, tape = nb.forward(x, p, None, L, reverse)
    step_only, rows = set(nb.program.step_only), set(nb.program.row_values)
    assert len(step_only) == 18 and len(rows) == 9 and not step_only & rows
    assert {n: a.shape for n, a in tape.saved.items()} == {
        n: ((1 if n in step_only else T), B, (1 if n in rows else H)) for n in tape.saved}
    dy = np.random.default_rng(3).standard_normal(y.shape)
    dx, ds, grads = nb.backward(tape, dy)
    yr, _, tr = ref.forward(x, p, None, L, reverse)
    dxr, dsr, want = ref.backward(tr, dy)
    np.testing.assert_allclose(y, yr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, dxr, rtol=1e-8, atol=1e-10)
    for k in dsr:
        np.testing.assert_allclose(ds[k], dsr[k], rtol=1e-8, atol=1e-10, err_msg=k)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-8, atol=1e-10, err_msg=k)
