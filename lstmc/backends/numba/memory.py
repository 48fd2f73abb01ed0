"""Memory of the numba backend between calls: per-thread workspaces (scratch reused across calls)
and recycled arrays (tapes, outputs, packed weights handed to the caller, reused once nothing holds
them), bounded in blocks, age and bytes. NumbaCell (cell.py) inherits them from Recycling.
"""

from __future__ import annotations

import sys

import numpy as np


def _refs(pool: list, i: int) -> int:
    return sys.getrefcount(pool[i])


_UNSHARED = _refs([np.empty(1)], 0)   # the count of a pool block nothing else holds, on this interpreter


class Recycling:
    """Workspaces and recycled arrays of a cell; uses its `_local` (a threading.local) and `np_dtype`."""

    def _workspace(self, name: str, shape: tuple, zero: bool = False) -> np.ndarray:
        """A scratch array reused across calls (per thread): large fresh arrays cost page faults that
        BLAS threads writing them concurrently turn into a 2x slower GEMM (measured)."""
        ws = self._local.__dict__.setdefault("ws", {})
        size = int(np.prod(shape))
        a = ws.get(name)
        if a is None or a.size != size:
            a = ws[name] = np.zeros(size, self.np_dtype)
        elif zero:
            a.fill(0)
        return a.reshape(shape)

    def _recycled(self, shape: tuple, zero: bool = False) -> np.ndarray:
        """A new-to-the-caller array (tape, packed weights, outputs), recycled from an earlier call
        once nothing references that one any more: no view, tensor or tape holds it, so its
        refcount is back to that of an unshared block. Fresh memory costs page faults, which are
        dear on VMs: measured here, lstm B=1 T=100 forward spent 0.8 ms of 4.4 packing 1 MiB of
        weights into new memory, against a 1.8 ms time loop. Blocks are reused at the same size
        only; a free block no request has matched for POOL_AGE requests (a shape no longer in use,
        e.g. after T changed) is let go, and the free blocks kept never exceed POOL_BYTES. Per
        thread; empty_cache() lets this thread's pool and workspaces go at once."""
        st = self._local.__dict__
        pool, ages = st.setdefault("pool", []), st.setdefault("ages", [])
        st["tick"] = tick = st.get("tick", 0) + 1
        size = int(np.prod(shape))
        for i in reversed(range(len(pool))):
            if tick - ages[i] > self.POOL_AGE and _refs(pool, i) == _UNSHARED:
                del pool[i], ages[i]
        hit = next((i for i in range(len(pool)) if pool[i].size == size and _refs(pool, i) == _UNSHARED), None)
        if hit is not None:
            a = pool[hit]
            ages[hit] = tick
        else:
            a = np.empty(size, self.np_dtype)
            if len(pool) < self.POOL_BLOCKS and a.nbytes <= self.POOL_BYTES:
                pool.append(a)
                ages.append(tick)
            # memory nothing uses is kept up to POOL_BYTES, least recently used let go first, so what
            # lstmc holds between calls is bounded in bytes, not only in blocks
            free = sorted((ages[i], i) for i in range(len(pool)) if _refs(pool, i) == _UNSHARED)
            excess = sum(pool[i].nbytes for _, i in free) - self.POOL_BYTES
            drop = []
            for _, i in free:
                if excess <= 0:
                    break
                excess -= pool[i].nbytes
                drop.append(i)
            for i in sorted(drop, reverse=True):
                del pool[i], ages[i]
        if zero:
            a.fill(0)
        return a[:].reshape(shape)               # a view: the caller's reference keeps `a` busy

    POOL_BLOCKS = 32
    POOL_AGE = 64
    POOL_BYTES = 128 << 20

    def empty_cache(self) -> None:
        """Let go of this thread's recycled memory and workspaces (see _recycled)."""
        for k in ("pool", "ages", "ws"):
            self._local.__dict__.pop(k, None)

    def _packed(self, params, names) -> np.ndarray:
        """np.concatenate of the named [H, K] matrices into recycled memory."""
        mats = [params[m] for m in names]
        out = self._recycled((sum(a.shape[0] for a in mats), mats[0].shape[1]))
        return np.concatenate(mats, axis=0, out=out)

    def _packed_heads(self, params, names) -> np.ndarray:
        """The named [N, d, d] block-diagonal matrices of a group with `heads N`, each head's blocks
        stacked ([N, k*d, d]: sequence.pack), into recycled memory."""
        mats = [params[m] for m in names]
        N, d, _ = mats[0].shape
        out = self._recycled((N, len(mats) * d, d))
        return np.concatenate(mats, axis=1, out=out)
