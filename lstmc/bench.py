"""`lstmc bench`: how fast a cell runs on this machine, against the real alternatives, in one run.

For each cell x backend x size it times forward and forward+backward (median and IQR over repetitions
after a warm-up), converts them to GFLOP/s using the cell's own GEMM count, and relates them to the
machine's sgemm rate measured in the same run. It is honest about a busy machine: a case whose IQR is
above 20% of its median is measured again (up to three rounds, samples pooled) and marked noisy if it
stays so, and a row that contradicts itself (a training step faster than its forward, more than 100%
of the sgemm rate) is flagged with the reason. Baselines in the same run: torch.nn.LSTM / nn.GRU
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
    noisy: bool = False                # IQR above NOISY of the median after MAX_ROUNDS rounds
    problems: list = field(default_factory=list)   # why this row contradicts itself, if it does


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


NOISY = 0.20       # an IQR above this share of the median: measure again
MAX_ROUNDS = 3


def timed(fn, reps: int) -> tuple[float, float, bool]:
    """(median ms, IQR ms, noisy) of `reps` timed calls after a warm-up. While the IQR is above NOISY
    of the median, `reps` more calls are timed (at most MAX_ROUNDS rounds; all samples pooled);
    noisy: it still is after the last round."""
    fn()  # warm-up
    ts: list[float] = []
    for _ in range(MAX_ROUNDS):
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        q1, med, q3 = np.percentile(ts, [25, 50, 75])
        if q3 - q1 <= NOISY * med:
            break
    return float(med) * 1e3, float(q3 - q1) * 1e3, bool(q3 - q1 > NOISY * med)


def _median_iqr(fn, reps: int) -> tuple[float, float]:
    med, iqr, _ = timed(fn, reps)
    return med, iqr


def ratio_text(r: float | None) -> str:
    """A time ratio with three significant digits (0.00412, not 0.00), or a dash."""
    return "—" if r is None else f"{r:.3g}"


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
    import sys

    # no bar where stderr is not a terminal (a log would get one line per update)
    bar = tqdm(jobs, disable=not progress or not sys.stderr.isatty(), desc="lstmc bench", unit="case")
    for cell, backend, B, H in bar:
        name = load(cell).name
        bar.set_postfix_str(f"{name} {backend} B={B} H={H}")
        fwd, train = _runner(cell, backend, T, B, I or H, H, dtype, device)
        f_med, f_iqr, f_noisy = timed(fwd, reps)
        t_med, t_iqr, t_noisy = timed(train, reps)
        flops = forward_flops(cell, T, B, I or H, H)
        m = Measurement(name, backend, T, B, I or H, H, dtype, f_med, f_iqr, t_med, t_iqr,
                        flops / (f_med * 1e-3) / 1e9, 3 * flops / (t_med * 1e-3) / 1e9)
        m.pct_sgemm = 100 * m.train_gflops / result.sgemm_gflops
        m.noisy = f_noisy or t_noisy
        m.problems = consistency(m)
        result.measurements.append(m)
    # ratios against the baselines of the same run
    index = {(m.cell, m.backend, m.B, m.H): m for m in result.measurements}
    for m in result.measurements:
        nat = index.get((m.cell, "torch.nn", m.B, m.H))
        tb = index.get((m.cell, "torch", m.B, m.H))
        m.vs_native = m.train_ms / nat.train_ms if nat else None
        m.vs_torch_backend = m.train_ms / tb.train_ms if tb else None
    return result


def consistency(m: Measurement) -> list[str]:
    """What makes a row impossible: a training step (forward + backward) faster than its forward
    alone, or more than the machine's own sgemm rate."""
    out = []
    if m.train_ms < m.fwd_ms:
        out.append(f"the training step ({m.train_ms:.3g} ms) is faster than its forward alone ({m.fwd_ms:.3g} ms)")
    if m.pct_sgemm > 100:
        out.append(f"{m.pct_sgemm:.0f}% of the sgemm rate measured in this run is more than the machine can do")
    return out


def table(result: BenchResult) -> str:
    """A Markdown table (also readable in a terminal), then what is noisy or contradicts itself."""
    lines = [f"sgemm rate measured in this run: {result.sgemm_gflops:.0f} GFLOP/s "
             f"({result.machine['cpu']}, {result.machine.get('threads')} threads)", "",
             "| cell | backend | T | B | H | fwd ms | train ms (IQR) | train GFLOP/s | % sgemm | "
             "time / torch.nn (<1: faster) | time / torch backend (<1: faster) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    warnings = []
    for m in result.measurements:
        note = "; ".join((["noisy"] if m.noisy else []) + (["impossible: see below"] if m.problems else []))
        lines.append(f"| {m.cell} | {m.backend} | {m.T} | {m.B} | {m.H} | {m.fwd_ms:.3g} | {m.train_ms:.3g} "
                     f"({m.train_iqr_ms:.2g}) | {m.train_gflops:.0f} | {m.pct_sgemm:.0f}% | "
                     f"{ratio_text(m.vs_native)} | {ratio_text(m.vs_torch_backend)} | {note} |")
        warnings += [f"- {m.cell} {m.backend} B={m.B} H={m.H}: {p}" for p in m.problems]
    lines += ["", "Ratios are this row's training-step time (forward + backward) over the baseline's, measured "
              "in the same run: below 1 is faster than the baseline."]
    noisy = sum(m.noisy for m in result.measurements)
    if noisy:
        lines.append(f"{noisy} row(s) stayed noisy (IQR above {NOISY:.0%} of the median after {MAX_ROUNDS} "
                     "rounds): the machine is busy; their ratios are not to be trusted.")
    if warnings:
        lines += ["", "Rows that contradict themselves (the machine was disturbed during the run; rerun):", *warnings]
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none is drawn off a terminal)")
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
    result = run(args.cells, backends, args.T, _ints(args.B, "B"), _ints(args.H, "H"), args.dtype, args.reps,
                 progress=not args.no_progress)
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
