"""The Triton renderer: the lowered Program -> a Python module of @triton.jit kernels
(templates/triton_cell.py.j2, the kernel shells), which imports its math from prelude.py.

It decides which kernels a cell gets and assembles the module; each kernel's lines are written by
kernel.py's KernelWriter (loads and stores, ops spelled by spell.py's SPELL, one row per
primitive). Neither makes mathematical decisions. Every kernel works on tiles of [BB batch rows x BH hidden units],
elementwise code is the Program's blocks rendered as tile expressions, and the recurrent GEMMs are
`tl.dot` (prelude `_dot`) over those tiles. Two designs, both from the same stages (lstmc/lower.py):

- **step** kernels (`fwd_step{i}`, `bwd_step{i}`): the host loops over time; per step it launches
  one kernel per *segment*, a segment being the recurrent GEMM(s) of one phase followed by the next
  pointwise block as their fused epilogue (the first segment may be a block alone). A program
  computes every gate slot of its hidden tile (`acc` per slot), then runs the block on registers.
  Values that a later segment of the same step reads go through global memory (the tape, or
  per-step scratch `RS*`/`DV*`/`BT_*`), since the next GEMM needs them from every program.
- **persistent** kernels (`fwd_persistent`, `bwd_persistent`): one launch runs the whole time loop;
  one program per BB batch rows owns all H (BH >= H), loads the recurrent weights once into
  registers, and carries the states (forward) or their adjoints (backward) from step to step on
  chip. A multi-phase step needs no grid-wide sync because each program owns whole rows.

Conventions inside kernels: locals and arrays are named by the naming table, lstmc/names.py:
locals s_h, xp_W_i, rp0_U_i, sv_g, dn_h, drp0_U_i, dv0, ...; arrays are upper-case (XP, Y, L, SQ_h,
SV_g, UT0, U0, P_b, dY, DS_h, DSN_h, dXP, dRP0, DP, scratch). Masks: `m2` = valid element,
`live` = valid and t < length[row]. States are stored in the compute type CT (float32 for float32/bfloat16/float16 storage), every
[T, B, *] sequence and the weights in the storage type DT, and `tl.dot` accumulates in CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...ir import Node
from ...lower import Block, Gemm, Program
from ...names import ARRAYS, array_name
from ..render import compile_spec, ident, ops_used, render_template, spelled_functions, value_name
from .kernel import KernelMeta, KernelWriter, _leaves, _temp_sizes, gemm_size, size_block
from .spell import SPELL

def prelude_names(program: Program | None = None) -> list[str]:
    """What a generated module imports from prelude.py: the functions SPELL names (for the
    primitives `program` uses, when given), and `_dot`."""
    return sorted(spelled_functions(SPELL, None if program is None else ops_used(program)) | {"_dot"})


def _param_args(program: Program):
    """(vector parameter, its kernel argument P_<name>), in DP row order."""
    return [(p, array_name("P_", p)) for p in program.vector_params]


@dataclass
class Rendered:
    source: str
    kernels: dict[str, KernelMeta]
    fwd_steps: list[str]                 # step kernels of one forward step, in launch order
    bwd_steps: list[str]
    scratch: dict[str, int]              # step-variant scratch array -> slots (shape [B, slots * size], CT)
    alias: int | None                    # program.dxp_alias: dXP is dRP[alias]
    vec_index: dict[str, int]            # vector parameter -> its place in the DP partial sums
    scratch_size: dict = field(default_factory=dict)   # scratch array -> the size of its slots ("H", "P")
    vec_size: dict = field(default_factory=dict)       # vector parameter -> its size

    def dp_offsets(self, dims: dict) -> tuple[dict, int]:
        """({vector parameter: its first column in a row of DP}, the row's width) for `dims`: the
        vector parameters side by side, each as wide as its size ([nb, nvec * H] without sizes)."""
        off, n = {}, 0
        for p in self.vec_index:
            off[p] = n
            n += dims[self.vec_size.get(p, "H")]
        return off, n


def segments(stages, size_of=None) -> list[tuple[list[Gemm], Block | None]]:
    """Split a step into launchable segments: the GEMMs of one phase, then the block they feed.
    With sizes (`size_of(gemm)`: the size of its results) a phase may have one block per size: each
    block takes the phase's GEMMs of its size, and GEMMs no block of the phase reads in their size
    are segments of their own (their results go to scratch for a later phase)."""
    out, pending = [], []

    def flush():
        by = {}
        for g in pending:
            by.setdefault(size_of(g) if size_of else "H", []).append(g)
        out.extend((gs, None) for gs in by.values())
        pending.clear()

    last_block = False
    for st in stages:
        if isinstance(st, Gemm):
            if last_block and pending:      # the previous phase's GEMMs no block of it took
                flush()
            pending.append(st)
            last_block = False
        else:
            mine = [g for g in pending if size_of is None or size_of(g) == st.size]
            pending[:] = [g for g in pending if g not in mine]
            out.append((mine, st))
            last_block = True
    if pending:
        flush()
    return out


def _produced(seg) -> set:
    gemms, block = seg
    keys = {o.attr for g in gemms for o in g.out}
    if block is not None:
        keys |= {let.key for let in block.lets}
    return keys


def _read(seg) -> set:
    gemms, block = seg
    keys = set()
    if block is not None:
        keys = {n.attr for let in block.lets for n in _leaves(let.expr) if n.op == "var"}
    return keys


def _params_used(stages) -> list[str]:
    out = []
    for st in stages:
        if isinstance(st, Block):
            for let in st.lets:
                for n in _leaves(let.expr):
                    if n.op == "param" and n.attr not in out:
                        out.append(n.attr)
    return out


def _step_kernels(program: Program, direction: str, alias, vec_index) -> list[KernelMeta]:
    stages = program.fwd if direction == "fwd" else program.bwd
    segs = segments(stages, lambda gm: gemm_size(program, gm))
    # values read by a later segment than the one producing them
    produced_by = {}
    for i, seg in enumerate(segs):
        for k in _produced(seg):
            produced_by.setdefault(k, i)
    later = set()
    for i, seg in enumerate(segs):
        for k in _read(seg):
            if produced_by.get(k, i) < i:
                later.add(k)
    out = []
    for i, seg in enumerate(segs):
        gemms, block = seg
        scalars = ["t", "ci", "ni", "ti", "B", "H"] if direction == "fwd" else ["t", "B", "H"]
        extent = block.size if block is not None else gemm_size(program, gemms[0])
        meta = KernelMeta(f"{direction}_step{i}", direction, "step", scalars=scalars,
                          constexprs=["BB", "BH", "BK", "DT", "CT", "DOT_F32", "PREC"], extent=extent)
        kb = KernelWriter(program, meta, alias, vec_index, later, persistent=False)
        kb.arr("L")
        if block is not None:
            for p in _params_used([block]):
                kb.ensure(Node("param", (), p))
        for gm in gemms:
            kb.gemm_step(gm)
        if block is not None:
            kb.block(block)
        kb.finish()
        what = " + ".join([f"GEMM[{', '.join(g.mats)}]" for g in gemms] + ([f"block {block.phase}"] if block else []))
        meta.doc = f"{'forward' if direction == 'fwd' else 'backward'} segment {i} of one step: {what}"
        if extent != "H":
            meta.doc += f", tiles over {extent}"
        out.append(meta)
    return out


def _persistent_kernel(program: Program, direction: str, alias, vec_index) -> KernelMeta:
    stages = program.fwd if direction == "fwd" else program.bwd
    cx = ["BB", "BH", "DT", "CT", "DOT_F32", "PREC"] + (["STORE_TAPE"] if direction == "fwd" else [])
    meta = KernelMeta(f"{direction}_persistent", direction, "persistent", scalars=["T", "B", "H"], constexprs=cx)
    kb = KernelWriter(program, meta, alias, vec_index, set(), persistent=True)
    kb.arr("L")
    for p in _params_used(stages):
        meta.prologue.append(f"{value_name(Node('param', (), p))} = {kb.load_expr(Node('param', (), p))}")
        kb.local.add(Node("param", (), p))
    cell = program.cell
    if direction == "fwd":
        for s in cell.states:   # the states live in registers for the whole sequence
            st = Node("state", (), s)
            sz = program.state_size(s)
            meta.prologue.append(f"{value_name(st)} = {kb.tile(kb.arr('SQ_', s), size=sz)}")
            kb.local.add(st)
            meta.epilogue.append("if not STORE_TAPE:  # the final state goes to row 1 of the 2-row buffer")
            meta.epilogue.append(f"    tl.store({array_name('SQ_', s)} + {kb.z('BHs', sz)} + {kb.z('obh', sz)}, "
                                 f"{value_name(st)}, mask={kb.z('m2', sz)})")
    else:
        for s in cell.states:   # adjoints of the states, carried backwards in time
            g = ident("gs_", s)
            sz = program.state_size(s)
            meta.prologue.append(f"{g} = {kb.tile(kb.arr('DS_', s), size=sz)}")
            meta.epilogue.append(f"tl.store({array_name('DS_', s)} + {kb.z('obh', sz)}, {g}, mask={kb.z('m2', sz)})")
    for st in stages:
        if isinstance(st, Block):
            kb.block(st)
        else:
            kb.gemm_persistent(st)
    if direction == "bwd":
        first: dict = {}
        for p, a in kb.dp_acc.items():
            first.setdefault(a, p)
        for a, p in first.items():           # one accumulator per shared sum
            meta.prologue.append(f"{a} = tl.zeros([{size_block(kb.psize(p))}], CT)")
        for p, a in kb.dp_acc.items():
            sz = kb.psize(p)
            meta.epilogue.append(f"tl.store({kb.arr('DP')} + pid_b * ({kb.dp_width()}) + {kb.dp_offset(p)} "
                                 f"+ {kb.z('cols', sz)}, {a}, mask={kb.z('cmask', sz)})")
    kb.finish()
    meta.doc = (f"the whole {'forward' if direction == 'fwd' else 'backward'} sequence in one launch: "
                f"one program per BB batch rows owning all H" + (f" (and all of {', '.join(meta.sizes)})"
                                                                   if meta.sizes else ""))
    return meta


def render(program: Program, storage: str, compute: str, key: str = "") -> Rendered:
    """The generated module's source text and the launch metadata of its kernels."""
    alias = program.dxp_alias
    vec_index = {p: i for i, p in enumerate(program.vector_params)}
    fsteps = _step_kernels(program, "fwd", alias, vec_index)
    bsteps = _step_kernels(program, "bwd", alias, vec_index)
    kernels = fsteps + bsteps + [_persistent_kernel(program, "fwd", alias, vec_index),
                                 _persistent_kernel(program, "bwd", alias, vec_index)]
    scratch, scratch_size = {}, {}
    tsize = _temp_sizes(program)
    for k in kernels:
        for a, (prefix, name) in k.array_of.items():
            if ARRAYS[prefix].scratch:
                scratch[a] = len(program.groups[name].mats) if prefix == "RS" else 1
                scratch_size[a] = (program.groups[name].rows if prefix == "RS" else program.groups[name].cols
                                   if prefix == "DV" else tsize.get(("t", name), "H"))
    source = render_template("triton_cell.py.j2", spec=compile_spec(program.cell), cell=program.cell.name, key=key,
                             storage=storage, compute=compute,
                             kernels=kernels, n_fwd=len(fsteps), n_bwd=len(bsteps), prelude=prelude_names(program))
    return Rendered(source=source, kernels={k.name: k for k in kernels}, fwd_steps=[k.name for k in fsteps],
                    bwd_steps=[k.name for k in bsteps], scratch=scratch, alias=alias, vec_index=vec_index,
                    scratch_size=scratch_size,
                    vec_size={p: program.cell.param_sizes.get(p, ("H",))[0] for p in program.vector_params})
