"""Lowering: plan the matrix products and pointwise blocks of one step, forward and backward.

The result is a `Program` (lstmc/program.py) that every backend renders (docs/design.md, "Lowering"):

1. every `M @ x` is hoisted into one input GEMM over all T·B rows (`xp`, one column slot per M),
   and so is every `V @ u` of an extra input `u[K]`; an extra input read element-wise (`dt`,
   `keep[H]`) is a slot of its own holding the input itself (a scalar broadcast over H), so every
   backend reads extra inputs exactly as it reads input products, and their adjoints (dxp) are the
   inputs' gradients;
2. recurrent products are grouped by operand: all `M @ v` with the same v are one GEMM per step;
3. a product whose operand depends on this step's GEMM results is staged into a later phase;
4. the pointwise work between GEMMs is fused into one `Block` per phase;
5. backward mirrors the plan: the adjoints are derived symbolically (grad.py), the recurrent
   GEMMs run transposed in reverse phase order, and weight/input gradients are whole-sequence
   GEMMs after the time loop;
6. the saved-activation policy decides what the forward tape keeps (see `_Saver`);
7. the decisions every backend shares are made on the result (`program.decide`).

The value names of blocks are listed in lstmc/program.py.
"""

from __future__ import annotations

from . import ir
from .grad import differentiate
from .ir import Node, var, walk
from .names import mangle
from .ops import REDUCTIONS, TRANSCENDENTAL
from .program import Block, Gemm, Group, Let, Program, decide
from .simplify import simplify
from .spec import Cell
from .spec_sizes import new_nodes

__all__ = ["Program", "Block", "Gemm", "Let", "lower"]


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
    bwd_roots = saver.recompute(bwd_roots, {g["operand"] for g in prod.groups})
    for name, node in saver.saved:
        fwd_roots[("sv", name)] = node
    sizes = prod.sizes
    saved_sizes = {name: sizes.of(node) or "H" for name, node in saver.saved}
    sizes.saved = saved_sizes
    groups = []
    for gi, g in enumerate(prod.groups):
        operand = g["operand"] if g["operand"].op == "state" else var("sv", saver.names[g["operand"]])
        heads = cell.heads if g.get("reduce") is None else 1      # a reduction has no matrix to split
        groups.append(Group(gi, operand, tuple(g["mats"]), g["phase"], g.get("reduce"), g["rows"], g["cols"], heads))
    fwd_gemms = [Gemm(g.index, (g.operand,), g.mats, tuple(var("rp", g.index, m) for m in g.mats), False, g.reduce,
                      g.heads) for g in groups]
    # forward: operand values are computed under their sv name; the gemm reads that var
    fwd = _schedule(fwd_roots, fwd_gemms, prod.names, sizes, operand_nodes={
        var("sv", saver.names[g["operand"]]): g["operand"] for g in prod.groups if g["operand"].op != "state"})
    bwd_gemms = [Gemm(g.index, tuple(var("drp", g.index, m) for m in g.mats), g.mats, (var("dv", g.index),), True,
                      g.reduce, g.heads) for g in groups]
    bwd_names = {}
    for k, n in bwd_roots.items():
        bwd_names.setdefault(n, ir.var_name(k))
    bwd = _schedule(bwd_roots, bwd_gemms, bwd_names, sizes, operand_nodes={
        var("drp", g.index, m): bwd_roots[("drp", g.index, m)] for g in groups for m in g.mats}, reverse=True)
    vec = tuple(p for p, k in cell.params.items() if k == "b")
    return decide(Program(cell=cell, input_mats=tuple(prod.input_mats), groups=tuple(groups), fwd=tuple(fwd),
                          bwd=tuple(bwd), saved=tuple(saver.saved), vector_params=vec,
                          saved_sizes=saved_sizes))


class _Sizes:
    """The size of every lowered value (docs/design.md, "Sizes"): a leaf's by its kind (a state's
    declared size, a product's rows, a group operand's adjoint its columns, ...), an element-wise
    node's the size of its vector arguments (the parser checked they agree), None for constants."""

    def __init__(self, cell: Cell, groups: list):
        self.cell = cell
        self.groups = groups       # the planner's group dicts (rows, cols)
        self.saved: dict = {}
        self.memo: dict = {}

    def key(self, key: tuple) -> str | None:
        kind = key[0]
        if kind in ("s1", "ds1", "ds"):
            return self.cell.state_size(key[1])
        if kind in ("xp", "dxp"):
            return "H"
        if kind in ("rp", "drp"):
            return self.groups[key[1]]["rows"]
        if kind == "dv":
            return self.groups[key[1]]["cols"]
        if kind == "dp":
            return self.cell.param_sizes.get(key[1], ("H",))[0]
        if kind == "sv":
            return self.saved.get(key[1])
        return None

    def of(self, node: Node) -> str | None:
        memo = self.memo
        for n in new_nodes(node, memo):
            if n.op == "const":
                memo[n] = None
            elif n.op == "state":
                memo[n] = self.cell.state_size(n.attr)
            elif n.op == "param":
                memo[n] = self.cell.param_sizes.get(n.attr, ("H",))[0]
            elif n.op == "var":
                memo[n] = self.key(n.attr)
            else:
                memo[n] = next((memo[a] for a in n.args if memo[a] is not None), None)
        return memo[node]


class _Products:
    """The product plan, filled by _plan_products: input_mats, groups, new (lowered s'), phase,
    memo (spec IR -> lowered IR), names (lowered node -> spec name), fwd_nodes."""


def _plan_products(cell: Cell) -> _Products:
    """Pass 1-3: replace every matvec by a leaf var; hoist input products; group recurrent ones."""
    p = _Products()
    p.input_mats = []
    p.groups = []            # dicts: operand (lowered node), mats, phase
    by_operand: dict[Node, int] = {}
    by_reduction: dict[tuple[Node, str], int] = {}
    seen_mats: set[tuple] = set()   # ("x", M) and (group, M) already given a slot (lists keep the order)
    memo: dict[Node, Node] = {}
    phase: dict[Node, int] = {}
    # simplify first (constant folding, identities); CSE is already given by interning
    simple = {node: simplify(node) for _, node in cell.equations}
    roots = [simple[node] for _, node in cell.equations]       # source order: slots follow the spec
    p.sizes = sizes = _Sizes(cell, p.groups)
    for n in walk(roots):
        args = tuple(memo[a] for a in n.args)
        if n.op == "matvec":
            (v,) = args
            if n.args[0].op == "input":       # M @ x, or V @ u of an extra input: hoisted
                if ("x", n.attr) not in seen_mats:
                    seen_mats.add(("x", n.attr))
                    p.input_mats.append(n.attr)
                m = var("xp", n.attr)
                phase[m] = 0
            else:      # one group per operand and size of the products (its matrices' rows)
                rows = cell.param_sizes.get(n.attr, ("H", "H"))[0]
                gi = by_operand.get((v, rows))
                if gi is None:
                    gi = by_operand[(v, rows)] = len(p.groups)
                    p.groups.append({"operand": v, "mats": [], "phase": phase[v], "rows": rows,
                                     "cols": sizes.of(v) or "H"})
                if (gi, n.attr) not in seen_mats:
                    seen_mats.add((gi, n.attr))
                    p.groups[gi]["mats"].append(n.attr)
                m = var("rp", gi, n.attr)
                phase[m] = phase[v] + 1
        elif n.op in REDUCTIONS:        # a reduction over the row: a stage of its own, like a product
            (v,) = args
            gi = by_reduction.get((v, n.op))
            if gi is None:
                gi = by_reduction[(v, n.op)] = len(p.groups)
                vs = sizes.of(v) or "H"
                p.groups.append({"operand": v, "mats": [n.op], "phase": phase[v], "reduce": n.op, "rows": vs,
                                 "cols": vs})
            m = var("rp", gi, n.op)
            phase[m] = phase[v] + 1
        elif n.op == "input" and n.attr is not None:     # an extra input read element-wise: its own slot
            m = var("xp", n.attr)
            phase[m] = 0
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
    # the slots in the order the sequence code fills them: x's products, each input's V products
    # (in declaration order), then the inputs read element-wise
    direct = [u for u in cell.inputs if var("xp", u) in p.fwd_nodes]
    by_input = {u: [m for m in p.input_mats if cell.param_inputs.get(m) == u] for u in cell.inputs}
    p.input_mats = ([m for m in p.input_mats if m not in cell.param_inputs]
                    + [m for u in cell.inputs for m in by_input[u]] + direct)
    for u in direct:
        p.names.setdefault(var("xp", u), u)
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


def _fresh(base: str, taken: set, next_index: dict) -> str:
    """The first of base, base_2, base_3, ... whose identifier form (names.mangle: h' -> h1) is not in
    `taken` (which it joins): two names must not become one identifier in generated code (the saved
    h' and an intermediate h1). `next_index` remembers where each base's search stopped: `taken`
    only grows, so the search resumes there and naming many values after one op ("mul", "add")
    stays linear instead of re-testing every earlier suffix."""
    k = next_index.get(base, 1)
    name = base if k == 1 else f"{base}_{k}"
    while mangle(name) in taken:
        k += 1
        name = f"{base}_{k}"
    next_index[base] = k
    taken.add(mangle(name))
    return name


def _postorder(root: Node, memo: dict, leaf) -> None:
    """Fill memo for root's DAG bottom-up without descending into nodes already in memo.
    `leaf(n)` returns n's value when n is not to be descended into (else None); otherwise
    memo[n] is n rebuilt over its args' values. Shared by the passes that run once per
    root/value over DAGs that overlap: each node is then visited once overall, not once per root."""
    stack = [root]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        v = leaf(n)
        if v is not None:
            memo[n] = v
            stack.pop()
            continue
        todo = [a for a in n.args if a not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        args = tuple(memo[a] for a in n.args)
        memo[n] = n if args == n.args else ir.Node(n.op, args, n.attr)


class _Saver:
    """Pass 6, the saved-activation policy: which forward values the tape keeps.

    Backward reads forward values through the derivative rules. For each one:
      - states at t-1 and t, parameters and constants are always available (no saving);
      - outputs of transcendental ops (sigmoid, tanh, exp, ...) are saved, never recomputed;
      - arithmetic over available/saved values is recomputed in the backward block (cheap);
      - arithmetic that would need a GEMM result (a pre-activation) is saved as a whole;
      - ... unless, once every backward expression is resolved, it is one arithmetic op over values
        the tape keeps anyway (layernorm's `(z - mean) / sqrt(var + eps)` over the saved
        `z - mean` and `sqrt(...)`): then backward recomputes it (`recompute`), one op per element
        instead of one more [T, B, H] array written and read back.

    The backward roots share most of their DAG (every adjoint reads the chain of adjoints after it),
    so every per-node decision and rewrite is memoised across `resolve` calls.
    """

    def __init__(self, cell: Cell, prod: _Products):
        self.prod = prod
        self.new_of = {prod.new[s]: s for s in cell.states}
        self.inputs = set(cell.inputs)
        self.saved: list[tuple[str, Node]] = []
        self.names: dict[Node, str] = {}
        self.used_names = {mangle(n) for n in (*cell.params, *cell.states, "x")}
        self._next_index: dict[str, int] = {}
        self._seen: set[Node] = set()          # nodes whose read/rebuild decision is made
        self._stop: dict[Node, Node] = {}      # node -> what backward reads for it
        self._rebuilt: dict[Node, Node] = {}   # node -> its rewrite over read values
        self._reaches: dict[Node, bool] = {}   # memo of _reach

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
        return _fresh(base, self.used_names, self._next_index)

    def save(self, node: Node) -> Node:
        if node not in self.names:
            name = self._name_for(node)
            self.names[node] = name
            self.saved.append((name, node))
        return var("sv", self.names[node])

    def _reach(self, node: Node) -> bool:
        """Does `node` read a GEMM result (xp/rp) other than through a transcendental or a new state?"""
        memo = self._reaches
        stack = [node]
        while stack:
            n = stack[-1]
            if n in memo:
                stack.pop()
                continue
            if n.op == "var" and n.attr[0] in ("xp", "rp") and not (n.attr[0] == "xp" and n.attr[1] in self.inputs):
                memo[n] = True           # (an extra input's slot is no product: it is saved itself, and
                                         # arithmetic over it recomputed, as over a state)
            elif n.op in TRANSCENDENTAL or n in self.new_of:
                memo[n] = False
            else:
                todo = [a for a in n.args if a not in memo]
                if todo:
                    stack.extend(todo)
                    continue
                memo[n] = any(memo[a] for a in n.args)
            stack.pop()
        return memo[node]

    def resolve(self, expr: Node) -> Node:
        """Rewrite a backward expression so it reads only available or saved forward values."""
        # top-down: find the nodes to rebuild, stopping at values that are read (saved or available).
        # The visiting order fixes the order (and so the names) of saved values; a node seen by an
        # earlier call had everything below it decided then, so skipping it changes nothing.
        stop = self._stop
        stack, seen = [expr], self._seen
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
                stack.extend(n.args)
        _postorder(expr, self._rebuilt, stop.get)
        return simplify(self._rebuilt[expr])

    CHEAP = ("add", "sub", "mul", "div", "neg")

    def recompute(self, roots: dict, keep: set) -> dict:
        """Drop from the tape each saved value that is one cheap op over other saved values (or
        states, parameters, constants), and rewrite `roots` (the resolved backward expressions) to
        recompute it from them. `keep`: nodes that stay saved (GEMM operands, read after the loop)."""
        saved = dict(self.saved)
        swap: dict[Node, Node] = {}
        height: dict[Node, int] = {}
        for n in walk([v for _, v in self.saved]):          # walk lists arguments before their users
            height[n] = 1 + max((height[a] for a in n.args), default=0)
        # lower values first: a value whose argument was dropped stays saved (no chains of recomputes)
        for name, node in sorted(self.saved, key=lambda nv: height[nv[1]]):
            if node.op not in self.CHEAP or node in keep:
                continue
            args = []
            for a in node.args:
                if a in self.new_of:
                    args.append(var("s1", self.new_of[a]))
                elif a.op in ("state", "param", "const"):
                    args.append(a)
                elif a in self.names and self.names[a] in saved:
                    args.append(var("sv", self.names[a]))
                else:
                    break
            else:
                swap[var("sv", name)] = ir.Node(node.op, tuple(args), node.attr)
                del saved[name]
        if not swap:
            return roots
        self.saved = [(n, v) for n, v in self.saved if n in saved]
        memo: dict = {}
        for expr in roots.values():
            _postorder(expr, memo, swap.get)
        return {k: simplify(memo[e]) for k, e in roots.items()}


# Adjoints the backends only write (a parameter's is summed over the batch, a state's goes to the
# next step): no later block can read them back, so a value they share with later work is a buffer.
_WRITE_ONLY = ("dp", "ds")


def _schedule(roots: dict[tuple, Node], gemms: list[Gemm], names: dict[Node, str], sizes: _Sizes,
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
        """node's phase, memoised; a GEMM output depends on its GEMM's operands (iterative, so deep
        chains of staged GEMMs need no recursion, and nodes already placed are not walked again)."""
        stack = [node]
        while stack:
            n = stack[-1]
            if n in phase:
                stack.pop()
                continue
            g = out_of.get(n)
            deps = n.args if g is None else () if g.group in gphase else [operand_nodes.get(a, a) for a in g.a]
            todo = [d for d in deps if d not in phase]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            if g is None:
                phase[n] = max((phase[a] for a in n.args), default=0)
            else:
                if g.group not in gphase:
                    gphase[g.group] = max(phase[d] for d in deps)
                phase[n] = gphase[g.group] + 1
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
    taken = {mangle(k[1]) for k in targets if len(k) == 2 and isinstance(k[1], str)}
    next_index: dict[str, int] = {}
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
        if n.is_leaf:
            continue
        ps = parents.get(n, set())
        cross = any(place[q] != place[n] for q in ps)
        if n in key_of:
            if not (cross and key_of[n][0] in _WRITE_ONLY):
                continue
            # a later block reads this adjoint: it gets a buffer, and the target becomes a copy of it
            key_of[n] = ("t", _fresh("_".join(key_of[n]), taken, next_index))
            buffers.add(key_of[n])
            continue
        if len(ps) > 1 or n in names or cross:
            key_of[n] = ("t", _fresh((names.get(n) or n.op).replace("'", "1"), taken, next_index))
            if cross:
                buffers.add(key_of[n])

    def body(n: Node) -> Node:
        """n's expression with every other named node replaced by its var (not walking past them:
        each unnamed node has one consumer, so all bodies together visit each node about once)."""
        memo: dict[Node, Node] = {}
        _postorder(n, memo, lambda m: var(*key_of[m]) if m is not n and m in key_of else m if m.is_leaf else None)
        return memo[n]

    done_targets = set()
    let_size: dict[tuple, str] = {}
    for n in order:
        if n in key_of and not n.is_leaf:
            k = key_of[n]
            is_buf = k[0] != "t" or k in buffers or any(place[q] != place[n] for q in parents.get(n, ()))
            lets_by_phase[place[n]].append(Let(k, body(n), is_buf))
            let_size[k] = sizes.key(k) or sizes.of(n) or "H"
            done_targets.add(k)
    # targets that are leaves or that alias another target's node: copies
    for k, n in targets.items():
        if k in done_targets:
            continue
        src = var(*key_of[n]) if n in key_of else n
        lets_by_phase[phase.get(n, 0)].append(Let(k, src, True))
        let_size[k] = sizes.key(k) or sizes.of(n) or "H"
    gemms_by_phase: dict[int, list[Gemm]] = {}
    for g in sorted(gemms, key=lambda g: g.group):
        gemms_by_phase.setdefault(gphase[g.group], []).append(g)
    stages: list = []
    for p in range(nphase):
        # one block per size of its values (a loop has one extent; values of different sizes only
        # meet through a product or a reduction, which ends a phase: docs/design.md, "Sizes")
        by_size: dict[str, list[Let]] = {}
        for let in lets_by_phase[p]:
            by_size.setdefault(let_size[let.key], []).append(let)
        for size, lets in by_size.items():
            stages.append(Block(p, tuple(lets), size))
        stages.extend(gemms_by_phase.get(p, ()))
    return stages

