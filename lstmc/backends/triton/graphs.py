"""CUDA graphs of the step design's time loops: static workspaces per shape (`_Workspace`), leases
that keep a tape's buffers from reuse (`_Lease`), capture and replay (`_Graph`), and the graph
paths of TritonCell's forward and backward (`GraphWorkspaces`, mixed into TritonCell).
docs/triton.md, "CUDA graphs"."""

from __future__ import annotations

import os
import warnings

from ..sequence import input_products
from ...names import array_name
from .render import _param_args
from .schedule import Schedule, triton_cdiv

GRAPH_CACHE = 8   # workspaces (static buffers + captured graphs) one cell keeps, least recently used first out


def _env_graphs() -> bool:
    """LSTMC_TRITON_GRAPHS=0 turns CUDA graphs off for cells built afterwards (default on)."""
    return os.environ.get("LSTMC_TRITON_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off", "n")


class _Lease:
    """Held by a tape whose arrays live in a graph workspace: while it is alive and its backward has
    not run, no other forward call may reuse the workspace. `gen` tells a stale tape (its workspace
    was reused after its backward) from a current one."""
    __slots__ = ("ws", "gen", "__weakref__")

    def __init__(self, ws, gen):
        self.ws, self.gen = ws, gen


class _Workspace:
    """Static buffers of one step-design shape, and the CUDA graphs of its forward and backward time
    loops (captured on first use; their kernels read and write these buffers and no others).

    Memory: XP (forward) and dRP/dXP (backward) share one arena, Y (forward) and dY (backward) one
    buffer; the states and saved values (the tape, T+1 and T rows) are handed to the caller's tape,
    not copied."""

    def __init__(self, key):
        self.key = key
        self.env: dict = {}
        self.fwd = None          # _Graph of the forward loop
        self.bwd = None          # _Graph of the backward loop
        self.gen = 0
        self.lease = None        # weakref to the _Lease of the tape that owns the buffers
        self.released = True     # that tape's backward has run (the buffers may be reused)
        self.busy = False        # a forward call is filling it (set by _acquire, under the cell's lock)

    def free(self) -> bool:
        return not self.busy and (self.released or self.lease is None or self.lease() is None)

    def nbytes(self) -> int:
        seen, n = set(), 0
        for t in self.env.values():
            st = t.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                n += st.nbytes()
        return n


class _Graph:
    """A captured torch.cuda.CUDAGraph, or (graphs="emulate", for tests on the interpreter) the launch
    sequence itself, re-run eagerly on the same static buffers."""

    def __init__(self, graph, run):
        self.graph, self.run = graph, run

    def replay(self):
        if self.graph is None:
            self.run()
        else:
            self.graph.replay()


def _put(env, name, src):
    """Copy `src` into the static buffer `name` (allocated on first use, before any capture)."""
    buf = env.get(name)
    if buf is None:
        env[name] = buf = src.new_empty(src.shape)        # contiguous
    buf.copy_(src)


class GraphWorkspaces:
    """TritonCell's CUDA-graph workspaces (uses the cell's graphs, graph_cache, _ws, _ws_lock,
    graph_stats, and its launch helpers _launcher, _scratch, _fwd_loop, _bwd_phases, _bwd_loop)."""

    def _graphed(self, sched: Schedule, T: int, B: int) -> bool:
        return bool(self.graphs) and sched.variant == "step" and T > 0 and B > 0

    def _acquire(self, key) -> "_Workspace | None":
        """A free workspace for `key` (most recently used last), a new one, or None (every cached one
        is still owned by a live tape and the cache is full: the call runs without graphs). The one
        returned is busy until the caller's forward is done with it, and its generation moves on at
        once, so an older tape of it is stale even if this forward fails half-way."""
        with self._ws_lock:
            ws = next((w for w in self._ws if w.key == key and w.free()), None)
            if ws is not None:
                self._ws.remove(ws)
            else:
                if len(self._ws) >= self.graph_cache:
                    victim = next((w for w in self._ws if w.free()), None)
                    if victim is None:
                        self.graph_stats["eager"] += 1
                        return None
                    self._ws.remove(victim)       # its memory goes when no tape refers to it any more
                ws = _Workspace(key)
            self._ws.append(ws)
            ws.busy = True
            ws.gen += 1
            return ws

    def _new_buffers(self, ws, sched, T, B, H, need_tape, dims=None):
        torch, prog, dev, DT, CT = self.torch, self.program, self.device, self.t_storage, self.t_compute
        dims = dims or {"H": H}
        sz = {s: dims[prog.state_size(s)] for s in prog.cell.states}
        e = {}                  # filled completely before it becomes ws.env (an allocation may fail)
        nx = len(prog.input_mats)
        al = lambda n: -(-n // 128) * 128          # noqa: E731 - sub-arrays start 128 elements apart (aligned)
        parts = []
        if need_tape:
            parts = [(array_name("dRP", g.index), len(g.mats) * dims[g.rows]) for g in prog.groups]
            if nx and self.rendered.alias is None:
                parts.append(("dXP", nx * H))
        size = max(al(T * B * nx * H), sum(al(T * B * w) for _, w in parts), 1)
        arena = torch.empty(size, dtype=DT, device=dev)
        if nx:
            e["XP"] = arena[:T * B * nx * H].view(T, B, nx * H)
        off = 0
        for nm, w in parts:                         # backward: the forward's XP is dead by then
            e[nm] = arena[off:off + T * B * w].view(T, B, w)
            off += al(T * B * w)
        # Y is copied out before backward
        e["Y"] = e["dY"] = torch.empty((T, B, sz[prog.cell.output]), dtype=DT, device=dev)
        rows = T + 1 if need_tape else 2
        for s in prog.cell.states:
            e[array_name("SQ_", s)] = torch.empty((rows, B, sz[s]), dtype=CT, device=dev)
        for n, _ in prog.saved:
            e[array_name("SV_", n)] = torch.empty((T if need_tape else 1, B, dims[prog.saved_sizes.get(n, "H")]),
                                                  dtype=DT, device=dev)
        e["L"] = torch.empty((B,), dtype=torch.int32, device=dev)
        self._scratch(B, H, e, dims)
        if need_tape:
            for s in prog.cell.states:
                e[array_name("DS_", s)] = torch.empty((B, sz[s]), dtype=CT, device=dev)
                e[array_name("DSN_", s)] = torch.empty((B, sz[s]), dtype=CT, device=dev)
            e["DP"] = self._dp(triton_cdiv(B, sched.block_b), dims)
        ws.env = e

    def _capture(self, run) -> "_Graph | None":
        """Capture `run` (a time loop over static buffers, which has just run eagerly, so every kernel is
        compiled) into a CUDA graph. None when capture fails: graphs are then off for this cell, with a
        warning, and the eager result already in the buffers stands."""
        if self.graphs == "emulate":
            return _Graph(None, run)
        torch = self.torch
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, capture_error_mode="thread_local"):   # other threads may use CUDA meanwhile
                run()
        except Exception as e:  # noqa: BLE001 - e.g. a Triton/driver combination that cannot be captured
            self.graphs = False
            self.graph_stats["capture_failed"] += 1
            warnings.warn(f"lstmc triton: CUDA graph capture failed ({type(e).__name__}: {e}); this cell runs "
                          f"without graphs from now on", RuntimeWarning, stacklevel=3)
            return None
        self.graph_stats["captures"] += 1
        return _Graph(g, run)

    def _replay(self, graph):
        graph.replay()
        self.graph_stats["replays"] += 1

    def graph_bytes(self) -> int:
        """Device memory held by this cell's cached graph workspaces (docs/triton.md, "CUDA graphs")."""
        return sum(ws.nbytes() for ws in self._ws)

    def clear_graphs(self) -> None:
        """Drop the cached workspaces and graphs (memory goes once no tape refers to it)."""
        self._ws.clear()

    def _forward_graph(self, ws, x, params, state, Wcat, Ucat, Lcpu, sched, T, B, I, H, need_tape, xin=(None, None),
                       dims=None):
        """The step design on a workspace's static buffers: inputs are copied in, the captured time
        loop replays. The tape's states and saved values are the workspace's own arrays."""
        prog = self.program
        e = ws.env
        if not e:
            self._new_buffers(ws, sched, T, B, H, need_tape, dims)
            e = ws.env
        nx = len(prog.input_mats)
        if nx:
            input_products(self.ops, prog, x, Wcat, H, out=e["XP"].view(T * B, nx * H), inputs=xin[0], V=xin[1])
        for g in prog.weight_groups:
            _put(e, array_name("UT", g.index), Ucat[g.index].t())
        for p, a in _param_args(prog):
            _put(e, a, params[p])
        e["L"].copy_(Lcpu)

        def initial_state():
            for s in prog.cell.states:
                row = e[array_name("SQ_", s)][0]
                if state is not None and s in state:
                    row.copy_(state[s])
                else:
                    row.zero_()
        initial_state()
        if ws.fwd is None:
            grid = self._grid(sched, B, H)
            steps = [self._launcher(k, e, sched, grid, sched.block_h, dims=dims) for k in self.rendered.fwd_steps]

            def run():
                self._fwd_loop(steps, T, B, H, need_tape)
            run()                                   # compiles the kernels; the result is this call's
            ws.fwd = self._capture(run)
            if ws.fwd is not None and not need_tape:
                initial_state()                     # the ring of two state rows overwrote row 0
        if ws.fwd is not None:
            self._replay(ws.fwd)                    # (on first use too: every result comes from the graph)
        return (e["Y"], {s: e[array_name("SQ_", s)] for s in prog.cell.states},
                {n: e[array_name("SV_", n)] for n, _ in prog.saved}, e["L"])


    def _backward_graph(self, ws, tape, dy, dstate, sched, T, B, H, dims=None):
        """The backward time loop of a graph tape, on its workspace (the tape's arrays are its buffers)."""
        prog = self.program
        e = ws.env
        states = prog.cell.states
        DS = {s: e[array_name("DS_", s)] for s in states}
        DSN = {s: e[array_name("DSN_", s)] for s in states}
        for g in prog.weight_groups:
            _put(e, array_name("U", g.index), tape.packed["U"][g.index])

        def prepare():
            e["dY"].copy_(dy)
            for s in states:
                if dstate is not None and s in dstate:
                    DS[s].copy_(dstate[s])
                else:
                    DS[s].zero_()
            e["DP"].zero_()
        prepare()
        if ws.bwd is None:
            phases = self._bwd_phases(e, sched, self._grid(sched, B, H), DS, DSN, dims)

            def run():
                self._bwd_loop(phases, T, B, H)
            run()                              # compiles the kernels; the result is this call's
            ws.bwd = self._capture(run)
            if ws.bwd is not None:
                prepare()                      # the eager run consumed DS and accumulated into DP
        if ws.bwd is not None:
            self._replay(ws.bwd)
        dRP = {g.index: e[array_name("dRP", g.index)] for g in prog.groups}
        dXP = None
        if prog.input_mats:
            dXP = e["dXP"] if self.rendered.alias is None else dRP[self.rendered.alias]
        return (DSN if T % 2 else DS), e["DP"], dRP, dXP
