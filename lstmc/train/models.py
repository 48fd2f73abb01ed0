"""The model trained: SeqModel ([embedding] -> Recurrent -> linear head) and NativeRecurrent
(torch.nn.LSTM/GRU behind Recurrent's call signature, the PyTorch baseline), built from a config.

A cell's extra per-step inputs (`input dt`, `input keep_c[H]`, `input w[K]`) come from the task
(`task.batch_inputs`), by name; the task's inputs that the cell does not read are not passed. Two
exceptions and one rule (`input_plan`): the zoneout masks `keep_c[H]` and `keep_h[H]`, when the task
does not provide them, are drawn by the model from torch's seeded RNG (Bernoulli(z) per row, step and
unit in training, z at evaluation: Krueger et al. 2017; z in ZONEOUT); a cell's `size K` is the width
of the task input `u[K]` that declares it, and a size of states only (lstmp's P) is `--size P=N`,
by default half the hidden size. Anything else missing is a one-line error naming the input
(or size) and the tasks that provide it.

The nn.Module classes need torch, so they are defined on first use (`_models`); the module-level
`__getattr__` makes `SeqModel` and `NativeRecurrent` reachable as attributes all the same."""

from __future__ import annotations

from ..interop import TORCH_MODULES, torch_module_class
from ..tasks import Task
from .config import TrainConfig
from .inputs import input_plan

def _models() -> dict:
    """The nn.Module classes, defined on first use (they need torch)."""
    if _MODELS:
        return _MODELS
    import torch
    from torch import nn

    class NativeRecurrent(nn.Module):
        """torch.nn.LSTM / nn.GRU behind Recurrent's call signature: backend="native", the PyTorch
        baseline to compare with. Only the `lstm` and `gru` cells have one."""

        def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                     dropout=0.0, bidirectional=False, backend="native"):
            super().__init__()
            name = getattr(cell, "name", cell)
            if name not in TORCH_MODULES:
                raise ValueError(f"backend 'native' runs torch.nn.LSTM/GRU: only the cells "
                                 f"{' and '.join(TORCH_MODULES)}, got {name!r}")
            self.cell_name = name
            self.output_size = hidden_size
            self.rnn = torch_module_class(name)(input_size, hidden_size, num_layers=num_layers, bias=bias,
                                  batch_first=batch_first, dropout=dropout, bidirectional=bidirectional)

        def forward(self, input, state=None, lengths=None):
            if lengths is not None:
                raise ValueError("NativeRecurrent does not take lengths")
            return self.rnn(input, state)

    class SeqModel(nn.Module):
        """[embedding] → Recurrent → linear head, reading the last step or every step (task.target)."""

        def __init__(self, task: Task, cell, hidden: int, layers: int = 1, dropout: float = 0.0,
                     bidirectional: bool = False, embed: int = 0, backend: str = "auto",
                     state_sizes: dict | None = None):
            super().__init__()
            self.target = task.target
            self.hidden = hidden
            self.dirs = 2 if bidirectional else 1
            self.from_task, self.zoneout, sizes = input_plan(cell, task, hidden, state_sizes)
            if task.inputs == "tokens":
                self.embed = nn.Embedding(task.vocab, embed or 16)
                in_size = self.embed.embedding_dim
            else:
                self.embed = None
                in_size = task.input_size
            kw = dict(sizes=sizes) if sizes else {}
            self.rnn = recurrent_class(backend)(cell, in_size, hidden, num_layers=layers, batch_first=True,
                                                dropout=dropout, bidirectional=bidirectional, backend=backend, **kw)
            self.head = nn.Linear(self.rnn.output_size * self.dirs, task.n_out)   # H, or P for lstmp

        def forward(self, x, inputs=None):
            """x [B, T(, I)]; inputs: the batch's extra inputs {name: [B, T(, n)]} (task.batch_inputs)."""
            if self.embed is not None:
                x = self.embed(x)
            if self.from_task or self.zoneout:
                y, _ = self.rnn(x, inputs=self.cell_inputs(x, inputs or {}))
            else:
                y, _ = self.rnn(x)                              # [B, T, H*dirs]
            if self.target == "last":
                if self.dirs == 2:     # forward direction's last step, backward direction's first
                    n = self.rnn.output_size
                    y = torch.cat([y[:, -1, :n], y[:, 0, n:]], dim=-1)
                else:
                    y = y[:, -1]
            return self.head(y)

        def cell_inputs(self, x, given: dict) -> dict:
            """The inputs the cell reads, in x's dtype and device: the task's, and the zoneout masks
            (drawn from torch's RNG in training, their expectation z in eval mode: no random numbers)."""
            missing = [u for u in self.from_task if u not in given]
            if missing:
                raise ValueError(f"the cell reads input {missing[0]}: call model(x, inputs={{'{missing[0]}': "
                                 f"...}}) with the batch's task.batch_inputs")
            out = {u: given[u].to(device=x.device, dtype=x.dtype) for u in self.from_task}
            shape = (x.shape[0], x.shape[1], self.hidden)
            for u, z in self.zoneout.items():
                out[u] = ((torch.rand(shape, device=x.device, dtype=x.dtype) < z).to(x.dtype) if self.training
                          else torch.full(shape, z, device=x.device, dtype=x.dtype))
            return out

    _MODELS.update(NativeRecurrent=NativeRecurrent, SeqModel=SeqModel)
    return _MODELS


_MODELS: dict = {}


def __getattr__(name):  # models.SeqModel, models.NativeRecurrent (and lstmc.train.X, which asks here)
    if name in ("SeqModel", "NativeRecurrent"):
        return _models()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recurrent_class(backend: str):
    """lstmc.nn.Recurrent, or NativeRecurrent (torch.nn.LSTM/GRU) for backend "native"."""
    if backend == "native":
        return _models()["NativeRecurrent"]
    from ..nn import Recurrent

    return Recurrent


def build_model(cfg: TrainConfig, task: Task, backend: str | None = None):
    """The SeqModel a config describes (initialised from torch's RNG: seed it first)."""
    return _models()["SeqModel"](task, cfg.cell, cfg.hidden, cfg.layers, cfg.dropout, cfg.bidirectional,
                                 cfg.embed, backend or cfg.backend, cfg.sizes)


def count_params(m) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)

