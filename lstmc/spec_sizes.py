"""States of different sizes (`size P`, `state h[P], c`), as a mixin of the parser (lstmc/spec.py):
the `state` line with optional sizes, and the size inference over the step's IR.

Every vector of a step has a size: H (the hidden size, the default), or a declared size. The sizes
are inferred by unification over the IR (docs/design.md, "Sizes"):

  - a state has its declared size (`state h[P]`: P; `state c`: H); x has I; an input its own;
    `input dt` (one number per row) is broadcast over H;
  - an element-wise op, a comparison, `where` and a row reduction (`mean`, `sum`, broadcast back
    over the row) have the size of their vector arguments, which must be equal (constants adapt);
  - `M @ v` has the size of M's rows, which comes from where it is used; M's columns are v's size;
    a matrix used twice has the same shape both times;
  - a per-unit parameter vector has the size of the values it meets;
  - `s' = EXPR` gives EXPR the size of s; a size that nothing fixes is H.

A mismatch is a SpecError at the equation where the two sizes meet, naming both. The result is
`Cell.state_sizes` ({state: size}) and `Cell.param_sizes` ({parameter: its dimensions as size
names}: ("H", "I") for W @ x, ("P", "H") for `h' = W_p @ m`, ("H", "P") for `U @ h`, ("P",) for a
bias added to a P-sized value)."""

from __future__ import annotations

from .ir import Node, to_text
from .spec_errors import did_you_mean, sized_items


def new_nodes(root: Node, done) -> list[Node]:
    """The nodes under `root` not in `done` (a set or dict), children first, each once; nothing below
    a node in `done` is visited, so walking every equation of a long chain stays linear."""
    out: list[Node] = []
    seen: set = set()
    stack = [(root, False)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            out.append(n)
            continue
        if n in done or id(n) in seen:
            continue
        seen.add(id(n))
        stack.append((n, True))
        stack.extend((a, False) for a in reversed(n.args) if a not in done and id(a) not in seen)
    return out


def _short(node: Node, names: dict | None = None) -> str:
    """A node as the message names it: its spec name, or its text (cut to 40 characters)."""
    if names and node in names:
        return names[node]
    if sum(1 for _ in zip(range(200), new_nodes(node, ()))) >= 200:   # a huge DAG's text may be huger
        return f"an expression of {node.op}"
    t = to_text(node)
    return t if len(t) <= 40 else t[:37] + "..."


class SizedStates:
    """`state h[P], c` and the size inference (needs the parser's `err`, `check_name`, `_sizes`)."""

    def d_state(self, rest, lineno, line):
        """`state h[P], c`: (name, col, size or None, size's col) per item."""
        out = sized_items(self, rest, lineno, line, "state",
                          "state names are letters, digits and _, separated by commas; a state of another size "
                          "is written `h[P]` with `size P` declared",
                          lambda name: f"declare a named size (`size P`) and write `state {name}[P]`")
        return self.stmt("state", lineno, line, out)

    def check_state_sizes(self, states, sizes, heads) -> dict:
        """{state: size name} for the `state` line's items; a size must be H or declared."""
        out = {}
        for s, col, size, scol in states:
            if size is None or size == "H":
                out[s] = "H"
                continue
            if size not in sizes:
                same = [k for k in (*sizes, "H") if k.lower() == size.lower()]
                why = ("; I is the input size, which no state can have" if size == "I" else
                       f" (did you mean `{same[0]}`?)" if same else did_you_mean(size, [*sizes, "H"]))
                raise self.err(f"state '{s}' has size '{size}', which is not declared{why}", self._state_line, scol,
                               fix=f"add a line `size {size}` (its value is given at run time: "
                                   f"sizes={{'{size}': 64}}), or write `state {s}` for the hidden size H")
            if heads:
                raise self.err(f"state '{s}' has size {size}, and `heads` with states of other sizes is not "
                               "supported yet", self._state_line, scol,
                               fix="remove `heads`, or give every state the hidden size H")
            out[s] = size
        return out

    def infer_sizes(self, order, values, assigns, state_sizes: dict):
        """Unify the sizes of every node of the step (see the module docstring). Returns
        (param_sizes, node_size: {spec IR node: size name})."""
        parent: dict = {}
        known: dict = {}            # class root -> size name
        scalar: set = set()         # constants and expressions of constants only
        mats: dict = {}             # matrix -> (rows node, operand node)

        def find(n):
            while parent.get(n, n) is not n:
                parent[n] = parent.get(parent[n], parent[n])
                n = parent[n]
            return n

        def size(n):
            return known.get(find(n))

        def union(a, b, problem):
            ra, rb = find(a), find(b)
            if ra is rb:
                return
            sa, sb = known.get(ra), known.get(rb)
            if sa is not None and sb is not None and sa != sb:
                raise problem(sa, sb)
            parent[ra] = rb
            if sb is None and sa is not None:
                known[rb] = sa

        def fix_size(n, s, problem):
            r = find(n)
            if known.get(r) is None:
                known[r] = s
            elif known[r] != s:
                raise problem(known[r], s)

        named = {}
        for key in order:
            named.setdefault(values[key], key)
        for key in order:
            tree, st = assigns[key]
            line, col = st.lineno, tree.children[0].children[0].column

            def mismatch(a, b):
                return lambda sa, sb: self.err(
                    f"sizes differ in {_short(b, named)}: {_short(a, named)} has size {sa} and the rest has size {sb}",
                    line, col,
                    fix="element-wise operations need vectors of one size; a matrix changes the size "
                        "(W @ v has the size of W's rows, which the use decides)")

            node = values[key]
            for n in new_nodes(node, parent):
                if n in scalar:
                    continue
                parent[n] = n
                op = n.op
                if op == "const":
                    del parent[n]
                    scalar.add(n)
                elif op == "input":
                    known[n] = "I" if n.attr is None else (self._inputs[n.attr][0] or "H")
                elif op == "state":
                    known[n] = state_sizes[n.attr]
                elif op == "param":
                    pass
                elif op == "matvec":
                    (v,) = n.args
                    prev = mats.get(n.attr)
                    if prev is None:
                        mats[n.attr] = (n, v)
                    else:
                        union(n, prev[0], lambda sa, sb, m=n.attr: self.err(
                            f"matrix '{m}' gives a value of size {sa} here and of size {sb} elsewhere: its rows "
                            f"cannot be both", line, col, fix="use a separate matrix for each size"))
                        union(v, prev[1], lambda sa, sb, m=n.attr: self.err(
                            f"matrix '{m}' multiplies a vector of size {sa} here and of size {sb} elsewhere: its "
                            f"columns cannot be both", line, col, fix="use a separate matrix for each size"))
                else:
                    vec = [a for a in n.args if a not in scalar]
                    if not vec:
                        del parent[n]
                        scalar.add(n)
                        continue
                    for a in vec:
                        union(a, n, mismatch(a, n))
            if node in scalar:
                continue
            if key.endswith("'"):
                s = key[:-1]
                shared = (f" (matrix '{node.attr}' is used elsewhere, so its rows have size {size(node)})"
                          if node.op == "matvec" and mats[node.attr][0] is not node else "")
                fix_size(node, state_sizes[s], lambda sa, sb: self.err(
                    f"{key} must have size {sb} (state {s}{'' if sb == 'H' else f'[{sb}]'}), but its expression "
                    f"has size {sa}{shared}", line, col,
                    fix=f"a matrix changes the size: W @ v has the size of W's rows (e.g. {key} = W_p @ v makes "
                        f"W_p [{sb}, {sa}])"))
        # a matrix of an input product is [H, ...]: the hoisted input GEMM has H-wide slots
        for m, (rows, v) in mats.items():
            if v.op == "input" and size(rows) not in (None, "H"):
                pline = self._param_lines.get(m, 1)
                raise self.err(f"'{m} @ {to_text(v)}' has size {size(rows)}: a product of an input of a size "
                               f"other than H is not supported yet", pline[0], pline[1],
                               fix=f"multiply the input into the hidden size first (a = {m} @ {to_text(v)}), "
                                   f"then change the size with a recurrent matrix (W_p @ a)")
        node_size = {n: (size(n) or "H") for n in parent if n not in scalar}
        psizes = {}
        for n in parent:
            if n.op == "param" and n not in scalar:
                psizes[n.attr] = (node_size[n],)
        for m, (rows, v) in mats.items():
            psizes[m] = (node_size[rows], node_size[v])
        # forward reads each size's value off the parameters (backends/base.py, _sizes_from): a size
        # that no parameter has could not be told at run time
        carried = {d for dims in psizes.values() for d in dims}
        sized = [s for s, z in state_sizes.items() if z != "H"]
        if sized and "H" not in carried:
            raise self.err("no parameter has the hidden size H (every state has a size of its own, and nothing "
                           "multiplies x), so hidden_size cannot be read off the parameters at run time",
                           self._state_line, 1,
                           fix=f"give one state the hidden size (`state {sized[0]}` for "
                               f"`state {sized[0]}[{state_sizes[sized[0]]}]`)")
        for sname, (sline, scol) in self._sizes.items():
            if sname in carried:
                continue
            users = [s for s, z in state_sizes.items() if z == sname]
            what = f"the size of state {users[0]}" if users else "declared"
            raise self.err(f"size '{sname}' is {what}, but no parameter has a dimension of size {sname}, so its "
                           f"value cannot be read off the parameters at run time", sline, scol,
                           fix=(f"let a parameter meet {users[0]}' (e.g. `{users[0]}' = ... + b_{users[0]}` makes "
                                f"b_{users[0]} [{sname}]), or give {users[0]} the hidden size (`state {users[0]}`)"
                                if users else f"use it in a product (`V @ u` with `input u[{sname}]`)"))
        return psizes, node_size
