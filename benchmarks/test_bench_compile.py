"""What the custom-op boundary costs under torch.compile (lstmc/torch_ops.py).

    .venv/bin/python -m pytest benchmarks/test_bench_compile.py -p no:cacheprovider -q -s

One training step of a small model, Recurrent(lstm, numba) -> linear head on the last step -> MSE,
forward + backward + Adam step, float32, T=100, B=64, I=H=256, run eagerly and as
`torch.compile(model, fullgraph=True)` (inductor). The compiled model is checked to give the eager
loss and gradients first; then both are timed (medians of rounds after warm-up; the compile itself
happens in the warm-up). The ratio compiled / eager is printed at the end (target <= 1.05: the
operator boundary should cost nothing against the kernels).
"""

import copy
import os

import pytest
import torch

from lstmc.nn import Recurrent

T, B, H = 100, 64, 256
I = H
ROUNDS = int(os.environ.get("LSTMC_BENCH_ROUNDS", "10"))
MEDIANS: dict = {}


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = Recurrent("lstm", I, H, backend="numba", dtype=torch.float32)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[-1])


def _step_fn(model, x, target):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        return loss

    return step


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(T, B, I, generator=g), torch.randn(B, 1, generator=g)


@pytest.mark.parametrize("who", ["eager", "compiled"])
def test_compile_training_step(benchmark, machine, who):
    torch.manual_seed(0)
    eager = Model()
    x, target = _data()
    model = eager
    if who == "compiled":
        model = torch.compile(copy.deepcopy(eager), fullgraph=True)
        # the same loss and gradients as eager before anything is timed
        for m in (eager, model):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), target).backward()
        for (name, a), b in zip(eager.named_parameters(), model.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name
    benchmark.group = f"compile-lstm-T{T}-B{B}-H{H}"
    benchmark.extra_info.update(machine=machine, who=who)
    benchmark.pedantic(_step_fn(model, x, target), rounds=ROUNDS, warmup_rounds=2, iterations=1)
    MEDIANS[who] = benchmark.stats.stats.median


def test_ratio():
    """compiled / eager median (printed; run with -s to see it)."""
    if len(MEDIANS) < 2:
        pytest.skip("the timing tests did not run")
    print(f"\ntraining step, lstm T={T} B={B} H={H}: eager {MEDIANS['eager'] * 1e3:.1f} ms, "
          f"torch.compile(fullgraph=True) {MEDIANS['compiled'] * 1e3:.1f} ms, "
          f"ratio compiled/eager {MEDIANS['compiled'] / MEDIANS['eager']:.3f}")
