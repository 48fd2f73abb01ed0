"""GPU benchmark of the triton backend: the table of issue 5, forward+backward medians, fp32 and bf16.

    python benchmarks/bench_triton.py                  # the full table (a few minutes on one GPU)
    python benchmarks/bench_triton.py --quick          # T=64, fewer repetitions: a smoke run
    python benchmarks/bench_triton.py --out benchmarks/RESULTS.md   # also append the table there

Every figure is compared in the same run against:
  - cuDNN through torch.nn.LSTM / torch.nn.GRU (same sizes, same dtype, fwd+bwd with autograd);
  - the `torch` backend (the same cell rendered as eager PyTorch ops) for cells cuDNN lacks.
fp32 rows run cuDNN with TF32 off (lstmc.oracles.torch_fp32_precision: since PyTorch 2.9 the legacy
allow_tf32 flag alone leaves cuDNN RNNs on TF32) so both sides do IEEE float32 products, as the
triton backend does by default; --tf32 turns TF32 on for both.
lstmc runs its autotuned schedule for each shape (TritonCell.autotune on T=min(T, 128)), shown in
the table; step schedules replay CUDA graphs of their time loops (the default on CUDA; --no-graphs
turns them off). Memory is torch.cuda.max_memory_allocated over two fwd+bwd calls, above what the
inputs and parameters held before the first: so it counts what a call keeps allocated afterwards
(lstmc's cached graph workspace), which the note column shows as "resident". Without a CUDA device
the script prints why and exits with status 0.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

# user-written cell for the "custom cell" row: a multiplicative LSTM (Krause et al. 2016), whose
# gates read U @ m with m = (W_m x) * (U_m h), a second GEMM phase per step
MLSTM = (Path(__file__).resolve().parents[1] / "examples" / "mlstm.cell").read_text()

# (case, cell, T, B, H, baseline, target): target is on lstmc/baseline time (cuDNN rows) or
# baseline/lstmc speed-up (torch-backend rows), or lstmc/baseline peak memory ("memory" rows)
CASES = [
    ("lstm H=256", "lstm", 512, 16, 256, "cudnn", ("time <=", 1.25)),
    ("lstm H=128", "lstm", 512, 16, 128, "cudnn", ("time <=", 1.0)),
    ("lstm H=64", "lstm", 512, 16, 64, "cudnn", ("time <=", 1.0)),
    ("peephole_lstm H=256", "peephole_lstm", 512, 16, 256, "torch", ("speed-up >=", 20.0)),
    ("gru_v1 H=256", "gru_v1", 512, 16, 256, "torch", ("speed-up >=", 20.0)),
    ("user cell (mlstm) H=256", MLSTM, 512, 16, 256, "torch", ("speed-up >=", 20.0)),
    ("gru B=64 H=512", "gru", 512, 64, 512, "cudnn", ("time <=", 1.5)),
    ("memory: lstm T=4096 H=256", "lstm", 4096, 16, 256, "cudnn-memory", ("memory <=", 1.2)),
]


def machine(torch, triton) -> list[str]:
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        driver = "unknown (nvidia-smi not available)"
    return [f"- GPU: {torch.cuda.get_device_name(0)} (compute capability "
            f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))})",
            f"- driver {driver}, CUDA runtime {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
            f"- PyTorch {torch.__version__}, Triton {triton.__version__}, Python {platform.python_version()}",
            f"- date {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`"]


def median_ms(torch, fn, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_bytes(torch, fn) -> tuple[int, int]:
    """(peak, resident) bytes above what was allocated before the first call: the first call compiles,
    builds lstmc's graph workspace (kept: it is resident) and cuDNN's plans, the second is a steady one."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base, torch.cuda.memory_allocated() - base


def lstmc_step(torch, cell, storage, T, B, H, autotune: bool, tf32: bool, graphs: bool = True):
    """A closure running lstmc forward+backward on CUDA tensors, its schedule, and the compiled cell."""
    import lstmc

    tdt = getattr(torch, storage)
    opts = {"storage": storage} if storage != "float32" else {}
    if tf32:
        opts["tf32"] = True
    if not graphs:
        opts["graphs"] = False
    prog = lstmc.compile(cell, "triton", "float32", **opts)
    I = H
    params = {k: torch.from_numpy(v).to("cuda", tdt) for k, v in prog.init_params(I, H, seed=0).items()}
    x = torch.randn(T, B, I, device="cuda", dtype=tdt)
    dy = torch.randn(T, B, H, device="cuda", dtype=tdt)
    sched = prog.autotune(T=min(T, 128), B=B, I=I, H=H) if autotune else prog.resolve(None, B, H)

    def run():
        _, _, tape = prog.forward(x, params, schedule=sched)
        prog.backward(tape, dy)
    return run, sched, prog


def torch_backend_step(torch, cell, T, B, H):
    import lstmc

    prog = lstmc.compile(cell, "torch", "float32")
    params = {k: torch.from_numpy(v).cuda() for k, v in prog.init_params(H, H, seed=0).items()}
    x = torch.randn(T, B, H, device="cuda")
    dy = torch.randn(T, B, H, device="cuda")

    def run():
        _, _, tape = prog.forward(x, params)
        prog.backward(tape, dy)
    return run


def cudnn_step(torch, cell, T, B, H, storage):
    tdt = getattr(torch, storage)
    mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(H, H).to("cuda", tdt)
    mod.flatten_parameters()       # after a dtype change cuDNN would otherwise re-pack the weights every call
    x = torch.randn(T, B, H, device="cuda", dtype=tdt, requires_grad=True)
    dy = torch.randn(T, B, H, device="cuda", dtype=tdt)

    def run():
        y, _ = mod(x)
        y.backward(dy)
        x.grad = None                  # like lstmc's run, keep no gradient between calls
        for p in mod.parameters():
            p.grad = None
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T=64 (T=512 for the memory row), 5 repetitions")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    ap.add_argument("--no-autotune", action="store_true", help="use the heuristic schedule")
    ap.add_argument("--tf32", action="store_true", help="TF32 products in fp32 rows, for cuDNN and lstmc")
    ap.add_argument("--no-graphs", action="store_true", help="step schedules without CUDA graphs")
    ap.add_argument("--out", default=None, help="also append the Markdown report to this file")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("bench_triton: PyTorch is not installed; nothing to measure.", file=sys.stderr)
        return 0
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on"):
        print("bench_triton: TRITON_INTERPRET is set; interpreter timings mean nothing. Unset it and run on "
              "a CUDA GPU.", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():
        print("bench_triton: no CUDA device is available (torch.cuda.is_available() is False), so the GPU "
              "table cannot be measured here. Run this script on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 0
    import triton

    from lstmc.oracles import torch_fp32_precision

    torch_fp32_precision(bool(args.tf32)).__enter__()      # for the whole run
    reps = 5 if args.quick else args.reps
    rows = []
    for name, cell, T, B, H, base, (kind, target) in CASES:
        if args.cases and not any(c.strip() and c.strip() in name for c in args.cases.split(",")):
            continue
        if args.quick:
            T = 512 if base == "cudnn-memory" else 64
        for storage in args.dtypes.split(","):
            print(f"  {name} {storage} ...", file=sys.stderr, flush=True)
            note = ""
            try:
                ours, sched, prog = lstmc_step(torch, cell, storage, T, B, H, not args.no_autotune,
                                               args.tf32 and storage == "float32", not args.no_graphs)
                graphed = bool(prog.graphs) and sched.variant == "step"
                note = "CUDA graphs" if graphed else ""
                if base == "cudnn-memory":
                    cudnn = cudnn_step(torch, cell, T, B, H, storage)
                    (a, ra), (b, rb) = peak_bytes(torch, ours), peak_bytes(torch, cudnn)
                    a, b = a / 2**20, b / 2**20
                    note = (f"{note + '; ' if note else ''}resident after the calls: lstmc {ra / 2**20:.0f} MiB "
                            f"(graph workspace {prog.graph_bytes() / 2**20:.0f} MiB), cuDNN {rb / 2**20:.0f} MiB")
                    rows.append((name, storage, T, f"{a:.0f} MiB", "cuDNN", f"{b:.0f} MiB", a / b, kind, target,
                                 sched.text(), note))
                    prog.clear_graphs()
                    continue
                a = median_ms(torch, ours, reps, args.warmup)
                if base == "cudnn":
                    b = median_ms(torch, cudnn_step(torch, cell, T, B, H, storage), reps, args.warmup)
                    ratio, label = a / b, "cuDNN"
                else:
                    if storage != "float32":
                        note += ("; " if note else "") + ("torch backend compiles float32/float64 only: baseline "
                                                          "is its float32 run")
                    b = median_ms(torch, torch_backend_step(torch, cell, T, B, H), max(3, reps // 4), 1)
                    ratio, label = b / a, "torch backend"
                rows.append((name, storage, T, f"{a:.3f} ms", label, f"{b:.3f} ms", ratio, kind, target,
                             sched.text(), note))
                prog.clear_graphs()        # the next rows' memory is theirs
            except Exception as e:  # noqa: BLE001 - one failing row must not hide the others
                rows.append((name, storage, T, "error", "", "", float("nan"), kind, target, "",
                             f"{type(e).__name__}: {str(e)[:120]}"))
            r = rows[-1]
            print(f"    {r[3]} vs {r[4]} {r[5]}: ratio {r[6]:.3f} ({r[7]} {r[8]}) schedule {r[9]} {r[10]}",
                  file=sys.stderr, flush=True)     # each row as it lands: a run cut short keeps its figures
            torch.cuda.empty_cache()

    def met(r):
        ratio, kind, target = r[6], r[7], r[8]
        if ratio != ratio:
            return "n/a"
        return "yes" if (ratio >= target if kind.startswith("speed") else ratio <= target) else "**no**"

    out = ["## triton backend vs cuDNN / eager PyTorch (forward+backward, median)", ""] + machine(torch, triton)
    out += [f"- TF32: {'on' if args.tf32 else 'off'} for fp32 rows; CUDA graphs "
            f"{'off' if args.no_graphs else 'on'} for step schedules; {reps} repetitions after {args.warmup} warm-ups"
            f"{'; --quick (short sequences: not the issue table)' if args.quick else ''}", "",
            "| case | dtype | T | lstmc | baseline | baseline figure | ratio | target | met | lstmc schedule | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r[6]:.2f}" if r[6] == r[6] else "-"
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {ratio} | {r[7]} {r[8]} | {met(r)} "
                   f"| {r[9]} | {r[10]} |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
