"""Turn one benchmark run (results.json from pytest-benchmark, extra.json) into benchmarks/RESULTS.md.

    python benchmarks/report.py benchmarks/results.json > benchmarks/RESULTS.md
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent

TARGETS = {  # group -> (contender, baseline, target ratio contender/baseline, "<=" or ">=" on speedup)
    "lstm-T100-B64-H256-train": ("lstmc-numba", "torch-native", 1.0),
    "lstm-T100-B1-H256-fwd": ("lstmc-numba", "torch-native", 0.8),
    "gru-T100-B64-H256-train": ("lstmc-numba", "torch-native", 0.8),
}


def main(path):
    data = json.loads(Path(path).read_text())
    extra = json.loads((HERE / "extra.json").read_text()) if (HERE / "extra.json").exists() else {}
    groups = {}
    machine = None
    for b in data["benchmarks"]:
        params = b.get("params") or {}
        who = params.get("who") or params.get("variant") or (f"{params['n']} statements" if "n" in params else None)
        who = who or b["name"].split("[")[0].replace("test_", "")
        groups.setdefault(b["group"], {})[who] = b
        machine = machine or b["extra_info"].get("machine")
    out = ["# Benchmark results", ""]
    if machine:
        out += [f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads for every "
                f"contender; Python {machine['python']}, NumPy {machine['numpy']}, Numba {machine['numba']}, "
                f"PyTorch {machine['torch']}; BLAS: {'; '.join(machine['blas'])}.", ""]
    out += [f"Run: {data.get('datetime', '?')} — `make bench` (pytest-benchmark, float32, medians of "
            f"{next((b for b in data['benchmarks'] if b['group'] == 'lstm-T100-B64-H256-train'), data['benchmarks'][0])['stats']['rounds']} rounds "
            f"after one warm-up (the blocks-only cases 15, compile time 3); ratios from the same run).", ""]
    out += ["| case | lstmc numba (ms) | baseline | baseline (ms) | ratio lstmc/baseline | target | met |",
            "|---|---|---|---|---|---|---|"]
    for g, (who, base, target) in TARGETS.items():
        if g in groups and who in groups[g] and base in groups[g]:
            a = groups[g][who]["stats"]["median"] * 1e3
            b = groups[g][base]["stats"]["median"] * 1e3
            out.append(f"| {g} | {a:.1f} | {base} | {b:.1f} | {a / b:.2f} | <= {target} | "
                       f"{'yes' if a / b <= target else 'no'} |")
    for g in sorted(groups):
        if g.endswith("-train") and "lstmc-torch-backend" in groups[g]:
            a = groups[g]["lstmc-numba"]["stats"]["median"] * 1e3
            for base in ("lstmc-torch-backend", "handwritten-torch"):
                b = groups[g][base]["stats"]["median"] * 1e3
                out.append(f"| {g} | {a:.1f} | {base} | {b:.1f} | {a / b:.2f} (speed-up {b / a:.1f}x) | "
                           f"speed-up >= 3x | {'yes' if b / a >= 3 else 'no'} |")
    g = groups.get("lstm-T100-B64-H512-fwd", {})
    if "sgemm_rate" in g and "lstm_h512_forward" in g:
        s = g["sgemm_rate"]
        f = g["lstm_h512_forward"]
        rate = s["extra_info"]["flops"] / s["stats"]["median"] / 1e9
        ours = f["extra_info"]["flops"] / f["stats"]["median"] / 1e9
        out.append(f"| lstm-T100-B64-H512-fwd | {f['stats']['median'] * 1e3:.1f} | sgemm 2048^3 | "
                   f"{s['stats']['median'] * 1e3:.1f} | {ours:.0f} of {rate:.0f} GFLOP/s = {ours / rate:.0%} | "
                   f">= 70% | {'yes' if ours / rate >= 0.7 else 'no'} |")
    if "compile" in extra:
        c = extra["compile"]
        out.append(f"| compile a new cell (numba) | cold {c['cold_s']:.1f} s / warm {c['warm_s']:.2f} s | | | | "
                   f"<= 10 s / <= 1 s | {'yes' if c['cold_s'] <= 10 and c['warm_s'] <= 1 else 'no'} |")
    if "memory" in extra:
        m = extra["memory"]
        a, b = m["lstmc_T1000"]["peak_bytes"] / 2**20, m["torch_T1000"]["peak_bytes"] / 2**20
        t5, t10 = m["lstmc_T500"]["tape_bytes"] / 2**20, m["lstmc_T1000"]["tape_bytes"] / 2**20
        out.append(f"| peak RSS, lstm T=1000 B=64 train | {a:.0f} MiB | torch nn.LSTM | {b:.0f} MiB | {a / b:.2f} | "
                   f"<= 1.0 | {'yes' if a <= b else 'no'} |")
        out.append(f"| tape size T=500 / T=1000 | {t5:.0f} / {t10:.0f} MiB | | | {t10 / t5:.2f} | linear (2.0) | "
                   f"{'yes' if abs(t10 / t5 - 2) < 0.01 else 'no'} |")
    if "inference_memory" in extra:
        m = extra["inference_memory"]
        for T in (1000, 10000):
            a, b, o = (m[f"{k}_T{T}"] / 2**20 for k in ("lstmc", "torch", "output"))
            out.append(f"| peak RSS, lstm T={T} B=16 H=128 inference (no tape) | {a:.0f} MiB | torch nn.LSTM no_grad | "
                       f"{b:.0f} MiB | {a / b:.2f} (output {o:.0f} MiB) | <= 1.0 | {'yes' if a <= b else 'no'} |")
    blocks = {g: v for g, v in groups.items() if g.startswith("blocks-")}
    if blocks:
        out += ["", "float32 pointwise blocks alone (benchmarks/test_blocks.py): 'before' = LLVM fast-math with "
                "nnan/ninf and activations that never reach +-1; 'after' = today's kernels.", "",
                "| blocks | before (ms) | after (ms) | after / before |", "|---|---|---|---|"]
        for g in sorted(blocks):
            by = {b["params"]["variant"]: b["stats"]["median"] * 1e3 for b in data["benchmarks"] if b["group"] == g}
            if {"before", "after"} <= set(by):
                out.append(f"| {g} | {by['before']:.2f} | {by['after']:.2f} | {by['after'] / by['before']:.3f} |")
    out += ["", "All medians (ms):", "", "| group | contender | median | IQR |", "|---|---|---|---|"]
    for g in sorted(groups):
        for who, b in sorted(groups[g].items()):
            st = b["stats"]
            out.append(f"| {g} | {who} | {st['median'] * 1e3:.2f} | {st['iqr'] * 1e3:.2f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE / "results.json")
