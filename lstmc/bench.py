"""`lstmc bench`: how fast a cell runs on this machine, against the real alternatives, in one run.

For each cell x backend x size it times forward and forward+backward (median and IQR over repetitions
after a warm-up), converts them to GFLOP/s using the cell's own GEMM count, and relates them to the
machine's sgemm rate measured in the same run. Baselines in the same run: torch.nn.LSTM / nn.GRU
where the cell is one of them (cuDNN on CUDA, oneDNN/MKL on CPU), and eager PyTorch of the same cell
(the `torch` backend) for every cell.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .build import compile as compile_cell
from .build import load
from .interop import torch_equivalent, torch_module_class
from .lower import lower


@dataclass
class Measurement:
    cell: str
    backend: str            # numba | torch | triton | torch.nn
    T: int
    B: int
    I: int
    H: int
    dtype: str
    fwd_ms: float
    fwd_iqr_ms: float
    train_ms: float
    train_iqr_ms: float
    fwd_gflops: float
    train_gflops: float
    pct_sgemm: float = 0.0
    vs_native: float | None = None     # train time / torch.nn.LSTM|GRU train time
    vs_torch_backend: float | None = None


@dataclass
class BenchResult:
    machine: dict
    sgemm_gflops: float
    measurements: list[Measurement] = field(default_factory=list)
    command: str = ""


def forward_flops(cell, T, B, I, H) -> float:
    """GEMM FLOPs of one forward pass: the input products plus every recurrent product per step."""
    prog = lower(load(cell))
    per_step = 2 * B * H * (len(prog.input_mats) * I + sum(len(g.mats) for g in prog.weight_groups) * H)
    return float(per_step * T)


def machine_description() -> dict:
    import numba
    import threadpoolctl
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    d = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
         "numba": numba.__version__, "torch": torch.__version__,
         "threads": torch.get_num_threads(),
         "blas": sorted({f"{x['internal_api']} {x.get('version')}" for x in threadpoolctl.threadpool_info()})}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d


def _median_iqr(fn, reps: int) -> tuple[float, float]:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    q1, med, q3 = np.percentile(ts, [25, 50, 75])
    return float(med) * 1e3, float(q3 - q1) * 1e3


def sgemm_rate(n: int = 1024, reps: int = 5) -> float:
    """This machine's float32 GEMM rate (GFLOP/s) through the BLAS the CPU backend uses."""
    from .backends.numba.blas import matmul

    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    b = np.random.default_rng(1).normal(size=(n, n)).astype(np.float32)
    out = np.empty((n, n), np.float32)
    med, _ = _median_iqr(lambda: matmul(a, b, out), reps)
    return 2 * n ** 3 / (med * 1e-3) / 1e9


def _native_equivalent(cell) -> str | None:
    return torch_equivalent(cell)


def _runner(cell, backend, T, B, I, H, dtype, device):
    """(forward fn, train fn) for one contender."""
    x = np.random.default_rng(0).normal(size=(T, B, I)).astype(dtype)
    if backend == "torch.nn":
        import torch

        native = _native_equivalent(cell)
        m = torch_module_class(native)(I, H).to(device=device, dtype=getattr(torch, dtype))
        xt = torch.from_numpy(x).to(device)

        def fwd():
            with torch.no_grad():
                m(xt)
            _sync(device)

        def train():
            xx = xt.clone().requires_grad_()
            y, _ = m(xx)
            y.backward(torch.ones_like(y))
            _sync(device)
        return fwd, train
    prog = compile_cell(cell, backend, dtype)
    params = prog.init_params(I, H, seed=0)
    if backend in ("torch", "triton"):
        import torch

        x = torch.from_numpy(x).to(device)
        params = {k: torch.from_numpy(v).to(device) for k, v in params.items()}

    def fwd():
        prog.forward(x, params, need_tape=False)
        _sync(device)

    def train():
        y, _, tape = prog.forward(x, params)
        prog.backward(tape, y * 0 + 1)
        _sync(device)
    return fwd, train


def _sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run(cells, backends, T, Bs, Hs, dtype="float32", reps=5, I=None, progress=True) -> BenchResult:
    """Measure every cell x backend x (B, H); I defaults to H."""
    from tqdm import tqdm

    device = "cuda" if "triton" in backends else "cpu"
    result = BenchResult(machine=machine_description(), sgemm_gflops=sgemm_rate())
    jobs = []
    for cell in cells:
        extra = ["torch.nn"] if _native_equivalent(cell) else []
        for B in Bs:
            for H in Hs:
                for backend in list(backends) + extra:
                    jobs.append((cell, backend, B, H))
    bar = tqdm(jobs, disable=not progress, desc="lstmc bench", unit="case")
    for cell, backend, B, H in bar:
        name = load(cell).name
        bar.set_postfix_str(f"{name} {backend} B={B} H={H}")
        fwd, train = _runner(cell, backend, T, B, I or H, H, dtype, device)
        f_med, f_iqr = _median_iqr(fwd, reps)
        t_med, t_iqr = _median_iqr(train, reps)
        flops = forward_flops(cell, T, B, I or H, H)
        m = Measurement(name, backend, T, B, I or H, H, dtype, f_med, f_iqr, t_med, t_iqr,
                        flops / (f_med * 1e-3) / 1e9, 3 * flops / (t_med * 1e-3) / 1e9)
        m.pct_sgemm = 100 * m.train_gflops / result.sgemm_gflops
        result.measurements.append(m)
    # ratios against the baselines of the same run
    index = {(m.cell, m.backend, m.B, m.H): m for m in result.measurements}
    for m in result.measurements:
        nat = index.get((m.cell, "torch.nn", m.B, m.H))
        tb = index.get((m.cell, "torch", m.B, m.H))
        m.vs_native = m.train_ms / nat.train_ms if nat else None
        m.vs_torch_backend = m.train_ms / tb.train_ms if tb else None
    return result


def table(result: BenchResult) -> str:
    """A Markdown table (also readable in a terminal)."""
    lines = [f"sgemm rate measured in this run: {result.sgemm_gflops:.0f} GFLOP/s "
             f"({result.machine['cpu']}, {result.machine.get('threads')} threads)", "",
             "| cell | backend | T | B | H | fwd ms | train ms (IQR) | train GFLOP/s | % sgemm | vs torch.nn | "
             "vs torch backend |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result.measurements:
        r1 = f"{m.vs_native:.2f}" if m.vs_native is not None else "—"
        r2 = f"{m.vs_torch_backend:.2f}" if m.vs_torch_backend is not None else "—"
        lines.append(f"| {m.cell} | {m.backend} | {m.T} | {m.B} | {m.H} | {m.fwd_ms:.1f} | {m.train_ms:.1f} "
                     f"({m.train_iqr_ms:.1f}) | {m.train_gflops:.0f} | {m.pct_sgemm:.0f}% | {r1} | {r2} |")
    lines += ["", "Ratios are time / baseline time for a training step (forward + backward): below 1 is faster."]
    return "\n".join(lines)


def plot(result: BenchResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Bs = sorted({m.B for m in result.measurements})
    fig, axes = plt.subplots(1, len(Bs), figsize=(5 * len(Bs), 4), squeeze=False)
    for ax, B in zip(axes[0], Bs):
        for key in sorted({(m.cell, m.backend) for m in result.measurements if m.B == B}):
            ms = sorted((m for m in result.measurements if m.B == B and (m.cell, m.backend) == key),
                        key=lambda m: m.H)
            ax.plot([m.H for m in ms], [m.train_ms for m in ms], marker="o", label=f"{key[0]} / {key[1]}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden size H")
        ax.set_ylabel("training step (ms)")
        ax.set_title(f"B={B}, T={result.measurements[0].T}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed of cells x backends x sizes against PyTorch and the sgemm rate")
    p.add_argument("cells", nargs="*", default=["lstm", "gru"], help="built-in names or .cell paths")
    p.add_argument("--backend", default="numba,torch", help="comma-separated: numba,torch,triton")
    p.add_argument("--T", type=int, default=50, help="sequence length (default: 50)")
    p.add_argument("--B", default="1,16,64", help="comma-separated batch sizes")
    p.add_argument("--H", default="128,256,512", help="comma-separated hidden sizes")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--reps", type=int, default=3,
                   help="timed repetitions per case; the median is reported (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="thread budget for every contender")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--md", dest="md_path", metavar="FILE", help="also write the table as markdown")
    p.add_argument("--plot", dest="plot_path", metavar="FILE", help="also write a plot (PNG)")
    p.set_defaults(fn=cli_main)


def _ints(s: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} takes comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"--{what} takes positive integers, got {s!r}")
    return vals


def cli_main(args) -> int:
    import sys

    import torch

    from .threads import set_num_threads

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("numba", "torch", "triton", "reference")]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; choose from numba, torch, triton")
    if "triton" in backends and not torch.cuda.is_available():
        raise ValueError("--backend triton needs a CUDA GPU, and none is available")
    if args.threads:
        set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    for c in args.cells:
        load(c)  # fail early on a bad cell
    result = run(args.cells, backends, args.T, _ints(args.B, "B"), _ints(args.H, "H"), args.dtype, args.reps)
    result.command = "lstmc bench " + " ".join(sys.argv[2:])
    text = table(result)
    print(text)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"machine": result.machine, "sgemm_gflops": result.sgemm_gflops, "command": result.command,
                       "measurements": [asdict(m) for m in result.measurements]}, f, indent=1)
    if args.md_path:
        with open(args.md_path, "w") as f:
            f.write(f"# lstmc bench\n\n`{result.command}`\n\nMachine: {json.dumps(result.machine)}\n\n{text}\n")
    if args.plot_path:
        plot(result, args.plot_path)
    return 0
