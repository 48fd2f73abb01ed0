"""The extra per-step inputs and named sizes of `lstmc.nn.Recurrent` (docs/nn.md, "Extra inputs"):
checking `sizes=` at construction and `inputs=` at every call, and turning the inputs into the
time-major `[T, B]` / `[T, B, n]` tensors every layer and direction of the network reads.

    rnn = Recurrent("examples/conditioned_lstm.cell", 32, 64, sizes={"K": 8}, batch_first=True)
    y, (h, c) = rnn(x, inputs={"w": w})          # x [B, T, 32], w [B, T, 8]

The layout of an input follows the module's input: `[T, B(, n)]`, `[B, T(, n)]` with batch_first,
`[T(, n)]` for an unbatched input. With a PackedSequence input, each extra input is a padded tensor
in that same layout and in the caller's batch order (the order of `pad_packed_sequence(packed,
batch_first=rnn.batch_first)`), at least as long as the longest sequence (later steps are not read).
"""

from __future__ import annotations

import difflib
import numbers

import torch

__all__ = ["check_sizes", "input_layout", "prepare_inputs"]


def check_sizes(cell, sizes) -> dict:
    """The values of the cell's `size` lines as {name: int}: every declared size given, nothing else,
    each a positive integer (errors say which and how to fix it)."""
    if sizes is None:
        sizes = {}
    if not isinstance(sizes, dict):
        raise TypeError(f"sizes must be a dict {{size name: int}} (e.g. sizes={{'K': 8}}), got {type(sizes).__name__}")
    unknown = [k for k in sizes if k not in cell.sizes]
    if unknown:
        have = (f"its sizes are {', '.join(cell.sizes)}" if cell.sizes
                else "it declares none (no `size` line), so leave sizes out")
        raise ValueError(f"sizes has unknown entries {unknown} for cell '{cell.name}': {have}")
    missing = [k for k in cell.sizes if k not in sizes]
    if missing:
        k = missing[0]
        users = [u for u, s in cell.inputs.items() if s == k]
        raise ValueError(f"cell '{cell.name}' declares `size {k}`" + (f" (for `input {users[0]}[{k}]`)" if users else "")
                         + f": pass its value, e.g. Recurrent(..., sizes={{{k!r}: 8}})")
    out = {}
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"sizes[{k!r}] must be a positive integer, got {v!r}")
        out[k] = int(v)
    return out


def input_layout(unbatched: bool, batch_first: bool) -> str:
    """How the caller's extra inputs are laid out: 'unbatched' ([T(, n)]), 'batch_first' ([B, T(, n)])
    or 'time_first' ([T, B(, n)]), as the module's input is."""
    return "unbatched" if unbatched else "batch_first" if batch_first else "time_first"


def _dims(layout: str, feat: str | None) -> list[str]:
    dims = {"unbatched": ["T"], "batch_first": ["B", "T"], "time_first": ["T", "B"]}[layout]
    return dims + ([feat] if feat is not None else [])


def _describe(t) -> str:
    return f"a {type(t).__name__}" if not isinstance(t, torch.Tensor) else f"a tensor of shape {tuple(t.shape)}"


def prepare_inputs(cell, inputs, hidden: int, sizes: dict, *, T, B, layout: str, dtype, device,
                   packed: bool = False, sorted_idx=None) -> list:
    """The extra inputs in the cell's declaration order, each a time-major `[T, B]` or `[T, B, n]`
    tensor (a view where possible: autograd reaches the caller's tensors). `layout`: input_layout's;
    `packed`: the input was a PackedSequence (padded inputs at least T long, in the caller's batch
    order: reordered here by `sorted_idx`). Missing, unknown and misshapen inputs, wrong dtypes and
    devices raise errors naming the input and the expected shape."""
    names = tuple(cell.inputs)
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs must be a dict {{input name: tensor}}, got {type(inputs).__name__}")
    if not names:
        if inputs:
            raise ValueError(f"inputs has entries {list(inputs)}, but cell '{cell.name}' has no extra inputs "
                             f"(declare them in the cell, e.g. `input dt`, or leave inputs out)")
        return []
    bad = [k for k in inputs if k not in names]
    if bad:
        close = difflib.get_close_matches(str(bad[0]), names, n=1, cutoff=0.6)
        raise ValueError(f"inputs has unknown entries {bad}; the inputs of cell '{cell.name}' are "
                         f"{', '.join(names)}" + (f" (did you mean '{close[0]}'?)" if close else ""))
    feats = {u: cell.input_size_of(u, hidden, sizes) for u in names}
    missing = [u for u in names if u not in inputs]
    if missing:
        want = ", ".join(f"'{u}': [{', '.join(_dims(layout, None if feats[u] is None else cell.inputs[u]))}]"
                         for u in names)
        raise ValueError(f"cell '{cell.name}' reads extra inputs at every step, and inputs is missing "
                         f"{', '.join(repr(u) for u in missing)}: pass inputs={{{want}}}")
    out = []
    for u in names:
        t = inputs[u]
        label = f"inputs['{u}']"
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{label} must be a Tensor, got {_describe(t)}")
        if t.dtype != dtype:
            raise ValueError(f"{label} has dtype {t.dtype} but the input and module are {dtype}: convert it with "
                             f"{label}.to({dtype})" + (" (a mask or reset flag is read as a number)"
                                                       if not t.is_floating_point() else ""))
        if t.device != device:
            raise RuntimeError(f"{label} is on {t.device} but the input is on {device}: move it there")
        n = feats[u]
        size = cell.inputs[u]
        dims = _dims(layout, None if n is None else size)
        want = {"T": T, "B": B, **({} if n is None else {size: n})}
        got = tuple(t.shape)
        ok = len(got) == len(dims) and all(
            (g >= want[d]) if (d == "T" and packed) else (g == want[d]) for g, d in zip(got, dims))
        if not ok:
            where = (f"`input {u}`: one number per batch row and step" if size is None else
                     f"`input {u}[H]`, H=hidden_size={n}" if size == "H" else
                     f"`input {u}[{size}]`, {size}={n} from sizes=")
            src = ("the padded length of the PackedSequence (or more)" if packed else "input")
            expected = tuple(want[d] for d in dims)
            raise ValueError(f"{label} has shape {got}, expected {expected} = [{', '.join(dims)}] ({where}; T={T} "
                             f"from {src}, B={B}" + (", batch first as the module is" if layout == "batch_first"
                                                     else "") + ")")
        if layout == "unbatched":
            t = t.unsqueeze(1)
        elif layout == "batch_first":
            t = t.transpose(0, 1)
        if packed:
            t = t[:T]
            if sorted_idx is not None:
                t = t.index_select(1, sorted_idx)
        out.append(t)
    return out
