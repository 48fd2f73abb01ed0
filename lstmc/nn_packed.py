"""PackedSequence input and output of lstmc.nn.Recurrent, in tensor operations that torch.compile
(fullgraph=True) traces: pad_packed_sequence and pack_padded_sequence are not traced by Dynamo and
read the lengths as Python numbers, so these compute the same padding and packing by index
arithmetic on `batch_sizes`."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from .torch_ops import packed_lengths

__all__ = ["unpack", "pack_like"]


def unpack(packed: PackedSequence, state=None):
    """(x [T, B, *] zero-padded, lengths [B] int64 on the CPU) of a PackedSequence, rows in its
    sorted order: what pad_packed_sequence gives, computed by index arithmetic on `batch_sizes`,
    so that torch.compile(fullgraph=True) traces it (pad_packed_sequence is not traced, and reads
    the lengths as Python numbers). Under torch.compile B is a shape, never a value read from the
    data: the length of `sorted_indices` when the sequence has them (enforce_sorted=False), else
    the initial state's batch dimension (checked against batch_sizes[0] when the graph runs), else
    an unbacked size (lstmc::packed_lengths); eagerly it is batch_sizes[0]."""
    data, bs = packed.data, packed.batch_sizes
    T = bs.shape[0]
    if packed.sorted_indices is not None:
        B = packed.sorted_indices.shape[0]
        lengths = (torch.arange(B)[None, :] < bs[:, None]).sum(0)
    elif torch.compiler.is_compiling():
        first = state if isinstance(state, torch.Tensor) else (
            state[0] if isinstance(state, (tuple, list)) and state and isinstance(state[0], torch.Tensor) else None)
        lengths = packed_lengths(bs, first.shape[1] if first is not None and first.dim() == 3 else None)
        B = lengths.shape[0]
    else:
        B = int(bs[0])
        lengths = (torch.arange(B)[None, :] < bs[:, None]).sum(0)
    bsd = bs.to(data.device)
    b = torch.arange(B, device=data.device)
    live = b[None, :] < bsd[:, None]                                   # [T, B]
    idx = torch.where(live, (torch.cumsum(bsd, 0) - bsd)[:, None] + b[None, :], 0)
    x = data.index_select(0, idx.reshape(-1)).reshape((T, B) + tuple(data.shape[1:]))
    live = live.reshape((T, B) + (1,) * (data.dim() - 1))
    return torch.where(live, x, x.new_zeros(())), lengths


def pack_like(out: torch.Tensor, packed: PackedSequence) -> PackedSequence:
    """`out` [T, B, *] (rows in `packed`'s sorted order) as a PackedSequence with `packed`'s
    batch_sizes and indices: row n of its data is step t, row b with t, b from the running sums of
    batch_sizes (an index gather, traceable; no lengths read as numbers)."""
    bs = packed.batch_sizes.to(out.device)
    T, B = out.shape[0], out.shape[1]
    ends = torch.cumsum(bs, 0)
    n = torch.arange(packed.data.shape[0], device=out.device)
    t = torch.searchsorted(ends, n, right=True)
    rows = t * B + (n - (ends - bs).index_select(0, t))
    data = out.reshape((T * B,) + tuple(out.shape[2:])).index_select(0, rows)
    # not packed._replace(data=...): torch.compile (2.13) returns an empty tuple for it
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
