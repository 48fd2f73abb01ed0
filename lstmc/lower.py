"""Lowering: plan the matrix products and pointwise blocks of one step, forward and backward.

The result is a `Program` that every backend renders (DESIGN.md §3):

1. every `M @ x` is hoisted into one input GEMM over all T·B rows (`xp`, one column slot per M);
2. recurrent products are grouped by operand: all `M @ v` with the same v are one GEMM per step;
3. a product whose operand depends on this step's GEMM results is staged into a later phase;
4. the pointwise work between GEMMs is fused into one `Block` per phase;
5. backward mirrors the plan: the adjoints are derived symbolically (grad.py), the recurrent
   GEMMs run transposed in reverse phase order, and weight/input gradients are whole-sequence
   GEMMs after the time loop;
6. the saved-activation policy decides what the forward tape keeps (see `_Saver`).

Value names (`var` keys) used in blocks:
  ('xp', M)          input product M @ x_t              ('rp', g, M)   recurrent product M @ v_g
  ('s1', s)          new state s'                        ('sv', name)   a value saved in the tape
  ('t', name)        a temporary inside/between blocks   ('ds1', s)     adjoint of s' (input to a bwd step)
  ('dv', g)          adjoint of group g's operand, from a transposed GEMM
  ('drp', g, M), ('dxp', M), ('ds', s), ('dp', p)   adjoints written by backward blocks
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ir
from .grad import differentiate
from .ir import Node, var, walk
from .ops import TRANSCENDENTAL
from .simplify import simplify
from .spec import Cell

__all__ = ["Program", "Block", "Gemm", "Let", "lower"]


@dataclass(frozen=True)
class Let:
    key: tuple          # the var key this assignment defines
    expr: Node          # IR over leaves and earlier lets' vars
    buffer: bool        # True: an array that outlives the block (state, tape, GEMM operand, output)


@dataclass(frozen=True)
class Block:
    """Fused pointwise work of one phase: straight-line lets, elementwise over [B, H]."""
    phase: int
    lets: tuple[Let, ...]


@dataclass(frozen=True)
class Gemm:
    """One matrix product per step. Forward: out[:, slot j] = A @ mats[j]^T (A is [B, H]).
    Backward: out = concat(A slots) @ concat(mats) (A is [B, k*H], out [B, H])."""
    group: int
    a: tuple[Node, ...]      # leaf nodes whose values form A's column slots
    mats: tuple[str, ...]
    out: tuple[Node, ...]    # the var leaves this GEMM defines
    transposed: bool         # False: forward (A @ W^T), True: backward (dA @ W)


@dataclass(frozen=True)
class Group:
    """A recurrent GEMM group: operand v (a state or a saved value) times each matrix in `mats`."""
    index: int
    operand: Node            # state(s) or var('sv', name)
    mats: tuple[str, ...]
    phase: int


@dataclass
class Program:
    """The lowered step, shared by every backend. See the module docstring for the value names."""
    cell: Cell
    input_mats: tuple[str, ...]
    groups: tuple[Group, ...]
    fwd: tuple                 # Block | Gemm, in execution order
    bwd: tuple
    saved: tuple[tuple[str, Node], ...]   # (name, forward node) kept in the tape at every step
    vector_params: tuple[str, ...]

    @property
    def states(self):
        return self.cell.states

    def text(self) -> str:
        """A readable, canonical description (used by `lstmc show` and as part of cache keys)."""
        out = [f"program {self.cell.name}", f"  states: {', '.join(self.cell.states)}   output: {self.cell.output}"]
        out.append("  params: " + ", ".join(f"{p}:{k}" for p, k in self.cell.params.items()))
        if self.cell.inits:
            out.append("  init: " + ", ".join(f"{p}={v}" for p, v in self.cell.inits.items()))
        out.append("  input GEMM (hoisted, all T*B rows): xp = x @ [" + ", ".join(self.input_mats) + "]^T"
                   if self.input_mats else "  input GEMM: none")
        out.append("  saved per step: " + (", ".join(n for n, _ in self.saved) or "(states only)"))
        for title, stages in (("forward step", self.fwd), ("backward step", self.bwd)):
            out.append(f"  {title}:")
            for st in stages:
                out.extend("    " + line for line in describe(st))
        out.append("  after the loop: dW = dxp^T @ x, dU_g = drp_g^T @ v_g, dx = dxp @ W (whole-sequence GEMMs)")
        return "\n".join(out)


def describe(stage) -> list[str]:
    if isinstance(stage, Gemm):
        a = ", ".join(ir.to_text(n) for n in stage.a)
        if stage.transposed:
            return [f"GEMM {ir.to_text(stage.out[0])} = [{a}] @ [{'; '.join(stage.mats)}]"]
        outs = ", ".join(ir.to_text(n) for n in stage.out)
        return [f"GEMM [{outs}] = {a} @ [{', '.join(stage.mats)}]^T"]
    lines = [f"block {stage.phase}:"]
    for let in stage.lets:
        lines.append(f"  {ir.var_name(let.key)}{'' if let.buffer else ' (local)'} = {ir.to_text(let.expr)}")
    return lines


# ------------------------------------------------------------------------------------- the passes

def lower(cell: Cell) -> Program:
    """Cell -> Program: the named passes, in order."""
    prod = _plan_products(cell)
    bwd_adj = _differentiate_step(cell, prod)
    saver = _Saver(cell, prod)
    bwd_roots = {k: saver.resolve(n) for k, n in bwd_adj.items()}
    fwd_roots = {("s1", s): prod.new[s] for s in cell.states}
    # group operands that are not plain states are saved (backward needs them for dU)
    for g in prod.groups:
        if g["operand"].op != "state":
            saver.save(g["operand"])
    for name, node in saver.saved:
        fwd_roots[("sv", name)] = node
    groups = []
    for gi, g in enumerate(prod.groups):
        operand = g["operand"] if g["operand"].op == "state" else var("sv", saver.names[g["operand"]])
        groups.append(Group(gi, operand, tuple(g["mats"]), g["phase"]))
    fwd_gemms = [Gemm(g.index, (g.operand,), g.mats, tuple(var("rp", g.index, m) for m in g.mats), False)
                 for g in groups]
    # forward: operand values are computed under their sv name; the gemm reads that var
    fwd = _schedule(fwd_roots, fwd_gemms, prod.names, operand_nodes={
        var("sv", saver.names[g["operand"]]): g["operand"] for g in prod.groups if g["operand"].op != "state"})
    bwd_gemms = [Gemm(g.index, tuple(var("drp", g.index, m) for m in g.mats), g.mats, (var("dv", g.index),), True)
                 for g in groups]
    bwd_names = {}
    for k, n in bwd_roots.items():
        bwd_names.setdefault(n, ir.var_name(k))
    bwd = _schedule(bwd_roots, bwd_gemms, bwd_names, operand_nodes={
        var("drp", g.index, m): bwd_roots[("drp", g.index, m)] for g in groups for m in g.mats}, reverse=True)
    vec = tuple(p for p, k in cell.params.items() if k == "b")
    return Program(cell=cell, input_mats=tuple(prod.input_mats), groups=tuple(groups), fwd=tuple(fwd),
                   bwd=tuple(bwd), saved=tuple(saver.saved), vector_params=vec)


class _Products:
    """The product plan, filled by _plan_products: input_mats, groups, new (lowered s'), phase,
    memo (spec IR -> lowered IR), names (lowered node -> spec name), fwd_nodes."""


def _plan_products(cell: Cell) -> _Products:
    """Pass 1-3: replace every matvec by a leaf var; hoist input products; group recurrent ones."""
    p = _Products()
    p.input_mats = []
    p.groups = []            # dicts: operand (lowered node), mats, phase
    by_operand: dict[Node, int] = {}
    memo: dict[Node, Node] = {}
    phase: dict[Node, int] = {}
    # simplify first (constant folding, identities); CSE is already given by interning
    simple = {node: simplify(node) for _, node in cell.equations}
    roots = [simple[node] for _, node in cell.equations]       # source order: slots follow the spec
    for n in walk(roots):
        args = tuple(memo[a] for a in n.args)
        if n.op == "matvec":
            (v,) = args
            if v.op == "input":
                if n.attr not in p.input_mats:
                    p.input_mats.append(n.attr)
                m = var("xp", n.attr)
                phase[m] = 0
            else:
                gi = by_operand.get(v)
                if gi is None:
                    gi = by_operand[v] = len(p.groups)
                    p.groups.append({"operand": v, "mats": [], "phase": phase[v]})
                if n.attr not in p.groups[gi]["mats"]:
                    p.groups[gi]["mats"].append(n.attr)
                m = var("rp", gi, n.attr)
                phase[m] = phase[v] + 1
        else:
            m = n if args == n.args else ir.Node(n.op, args, n.attr)
            phase[m] = max((phase[a] for a in args), default=0)
        memo[n] = m
    p.new = {s: memo[simple[cell.new[s]]] for s in cell.states}
    p.phase = phase
    p.memo = memo
    # readable names for lowered nodes: the spec's names, and s' for new states
    p.names = {}
    for s in cell.states:
        p.names.setdefault(p.new[s], s + "'")
    for node, name in cell.names.items():
        if simple.get(node) in memo:
            p.names.setdefault(memo[simple[node]], name)
    p.fwd_nodes = set(walk(list(p.new.values()) + [g["operand"] for g in p.groups]))
    return p


def _differentiate_step(cell: Cell, prod: _Products) -> dict[tuple, Node]:
    """Pass 5: adjoints of every leaf of the step, given ds' seeds and the transposed-GEMM results dv_g."""
    seeds = [(prod.new[s], var("ds1", s)) for s in cell.states]
    seeds += [(g["operand"], var("dv", gi)) for gi, g in enumerate(prod.groups)]
    wrt_keys: list[tuple[tuple, Node]] = []
    for gi, g in enumerate(prod.groups):
        wrt_keys += [(("drp", gi, m), var("rp", gi, m)) for m in g["mats"]]
    wrt_keys += [(("dxp", m), var("xp", m)) for m in prod.input_mats]
    wrt_keys += [(("ds", s), ir.state(s)) for s in cell.states]
    wrt_keys += [(("dp", p), ir.param(p)) for p, k in cell.params.items() if k == "b"]
    adj = differentiate(seeds, [n for _, n in wrt_keys])
    return {k: adj[n] for k, n in wrt_keys}


class _Saver:
    """Pass 6, the saved-activation policy: which forward values the tape keeps.

    Backward reads forward values through the derivative rules. For each one:
      - states at t-1 and t, parameters and constants are always available (no saving);
      - outputs of transcendental ops (sigmoid, tanh, exp, ...) are saved, never recomputed;
      - arithmetic over available/saved values is recomputed in the backward block (cheap);
      - arithmetic that would need a GEMM result (a pre-activation) is saved as a whole.
    """

    def __init__(self, cell: Cell, prod: _Products):
        self.prod = prod
        self.new_of = {prod.new[s]: s for s in cell.states}
        self.saved: list[tuple[str, Node]] = []
        self.names: dict[Node, str] = {}
        self.memo: dict[Node, Node] = {}
        self.used_names = set(cell.params) | set(cell.states) | {"x"}

    def _name_for(self, node: Node) -> str:
        base = self.prod.names.get(node)
        if base is None:
            argnames = [self.prod.names.get(a) or self.names.get(a) or (a.attr if a.op in ("state", "param") else None)
                        for a in node.args]
            if node.args and all(argnames):
                base = f"{node.op}_" + "_".join(argnames)
            elif node.op == "var":
                base = "_".join(str(k) for k in node.attr)
            else:
                base = node.op
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

    def save(self, node: Node) -> Node:
        if node not in self.names:
            name = self._name_for(node)
            self.names[node] = name
            self.saved.append((name, node))
        return var("sv", self.names[node])

    def _reach(self, node: Node) -> bool:
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.op == "var" and n.attr[0] in ("xp", "rp"):
                return True
            if n.op in TRANSCENDENTAL or n in self.new_of:
                continue
            stack.extend(n.args)
        return False

    def resolve(self, expr: Node) -> Node:
        """Rewrite a backward expression so it reads only available or saved forward values."""
        # top-down: find the nodes to rebuild, stopping at values that are read (saved or available)
        stop: dict[Node, Node] = {}
        visit: list[Node] = []
        stack, seen = [expr], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.new_of:
                stop[n] = var("s1", self.new_of[n])
            elif n.op in ("state", "param", "const") or (n.op == "var" and n.attr[0] in ("ds1", "dv")):
                stop[n] = n
            elif n.op == "var":                                   # a GEMM result read directly
                stop[n] = self.save(n)
            elif n in self.prod.fwd_nodes and (n.op in TRANSCENDENTAL or self._reach(n)):
                stop[n] = self.save(n)
            else:
                visit.append(n)
                stack.extend(n.args)
        memo = dict(stop)
        for n in walk([expr]):
            if n in memo:
                continue
            args = tuple(memo[a] for a in n.args)
            memo[n] = n if args == n.args else ir.Node(n.op, args, n.attr)
        return simplify(memo[expr])


def _schedule(roots: dict[tuple, Node], gemms: list[Gemm], names: dict[Node, str],
              operand_nodes: dict[Node, Node], reverse: bool = False) -> list:
    """Passes 3-4: assign every value a phase and fuse each phase's pointwise work into one Block.

    `roots` are the values the step must produce (key -> IR); `gemms` are the per-step products,
    whose `out` vars depend on the values behind their `a` operands (`operand_nodes`).
    The phase of a value is the number of GEMMs that must run before it can be computed.
    """
    out_of = {o: g for g in gemms for o in g.out}
    phase: dict[Node, int] = {}
    gphase: dict[int, int] = {}

    def ph(node: Node) -> int:
        for n in walk([node]):
            if n in phase:
                continue
            if n in out_of:
                g = out_of[n]
                if g.group not in gphase:
                    gphase[g.group] = max(ph(operand_nodes.get(a, a)) for a in g.a)
                phase[n] = gphase[g.group] + 1
            else:
                phase[n] = max((phase[a] for a in n.args), default=0)
        return phase[node]

    # the values each stage must define: roots, plus GEMM operands that are not plain leaves
    targets: dict[tuple, Node] = dict(roots)
    for g in gemms:
        for a in g.a:
            if a in operand_nodes:
                targets.setdefault(a.attr, operand_nodes[a])
    for n in targets.values():
        ph(n)
    for g in gemms:
        if g.group not in gphase:
            gphase[g.group] = max(ph(operand_nodes.get(a, a)) for a in g.a)
    nphase = max([phase[n] for n in targets.values()] + [gphase[g.group] + 1 for g in gemms], default=0) + 1

    # which interior nodes get a name: shared ones, named ones, and ones crossing a phase boundary
    parents: dict[Node, set] = {}
    for n in walk(list(targets.values())):
        for a in set(n.args):
            parents.setdefault(a, set()).add(n)
    key_of: dict[Node, tuple] = {}
    lets_by_phase: dict[int, list[Let]] = {p: [] for p in range(nphase)}
    taken = set(k[1] for k in targets if len(k) == 2 and isinstance(k[1], str))
    buffers: set[tuple] = set()
    for k, n in targets.items():
        if n not in key_of and not n.is_leaf:
            key_of[n] = k
    order = walk(list(targets.values()))
    # placement: targets as soon as possible; interior values as late as possible (in the block of
    # their first consumer), so fewer values cross a GEMM boundary through memory
    target_nodes = {n for n in targets.values()}
    place: dict[Node, int] = {}
    for n in reversed(order):
        ps = parents.get(n, ())
        place[n] = phase[n] if (n in target_nodes or not ps) else min(place[q] for q in ps)
    for n in order:
        if n.is_leaf or n in key_of:
            continue
        ps = parents.get(n, set())
        cross = any(place[q] != place[n] for q in ps)
        if len(ps) > 1 or n in names or cross:
            base = (names.get(n) or n.op).replace("'", "1")
            nm, i = base, 1
            while nm in taken:
                i += 1
                nm = f"{base}_{i}"
            taken.add(nm)
            key_of[n] = ("t", nm)
            if cross:
                buffers.add(key_of[n])

    def body(n: Node) -> Node:
        """n's expression with every other named node replaced by its var."""
        memo: dict[Node, Node] = {}
        for m in walk([n]):
            if m is not n and m in key_of:
                memo[m] = var(*key_of[m])
                continue
            if m.is_leaf:
                memo[m] = m
                continue
            args = tuple(memo[a] for a in m.args)
            memo[m] = m if args == m.args else ir.Node(m.op, args, m.attr)
        return memo[n]

    done_targets = set()
    for n in order:
        if n in key_of and not n.is_leaf:
            k = key_of[n]
            is_buf = k[0] != "t" or k in buffers or any(place[q] != place[n] for q in parents.get(n, ()))
            lets_by_phase[place[n]].append(Let(k, body(n), is_buf))
            done_targets.add(k)
    # targets that are leaves or that alias another target's node: copies
    for k, n in targets.items():
        if k in done_targets:
            continue
        src = var(*key_of[n]) if n in key_of else n
        lets_by_phase[phase.get(n, 0)].append(Let(k, src, True))
    stages: list = []
    for p in range(nphase):
        if lets_by_phase[p]:
            stages.append(Block(p, tuple(lets_by_phase[p])))
        for g in sorted((g for g in gemms if gphase[g.group] == p), key=lambda g: g.group):
            stages.append(g)
    return stages

