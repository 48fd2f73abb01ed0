"""The expressions of a .cell file: the Lark grammar of one equation's right side and its
conversion to IR (`Expressions`, mixed into spec.py's parser), with every check on names,
shapes, calls and comparisons. spec.py walks the statements; this module reads one expression.
"""

from __future__ import annotations

import math

from lark import Lark, Tree

from . import ir
from .ir import Node
from .ops import ARITY, COMPARISONS, FUNCTIONS, LAYERNORM_EPS, REDUCTIONS, mk
from .simplify import simplify
from .spec_errors import did_you_mean

# ----------------------------------------------------------------------------------- the grammar

_GRAMMAR = r"""
start: target "=" expr

target: NAME PRIME?

?expr: sum
    | sum COMPARE sum      -> compare
?sum: product
    | sum "+" product      -> add
    | sum "-" product      -> sub
?product: unary
    | product "*" unary    -> mul
    | product "/" unary    -> div
    | product "@" unary    -> matmul
?unary: atom
    | "-" unary            -> neg
    | "+" unary            -> pos
?atom: NUMBER              -> number
    | NAME PRIME?          -> name
    | NAME "(" [args] ")"  -> call
    | "(" expr ")"
args: arg ("," arg)*
?arg: expr
    | NAME "=" expr        -> kwarg

PRIME: "'"
COMPARE: /[<>]=?/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?/
%ignore /[ \t\f\r]+/
"""

_parser = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


# how a call is written, for error messages
_CALL_FORM = {"where": "where(a > b, IF_TRUE, IF_FALSE)", "max": "max(A, B)", "min": "min(A, B)",
              "layernorm": "layernorm(V) or layernorm(V, 1e-5)"}
# functions over a row (not element-wise): the reductions and layernorm, which is written with them
ROW_FUNCTIONS = (*REDUCTIONS, "layernorm")
ALL_FUNCTIONS = (*FUNCTIONS, *ROW_FUNCTIONS)


def _count(n: int) -> str:
    return "one argument" if n == 1 else f"{n} arguments"


class Expressions:
    """Lark tree -> IR for one statement (needs `err`, `no_bare_x`, `check_name`... of the parser)."""

    _conditions: set   # ids of the comparison trees that are where's first argument
    _inputs: dict      # `input` lines: name -> (size, line, col, size col)
    _used_inputs: set

    def is_vector(self, node: Node) -> bool:
        """Does `node` depend on x, a state or a parameter? (Memoised over the interned nodes, so a long
        chain of intermediates costs linear time, not quadratic.)"""
        memo = self._vector
        stack = [node]
        while stack:
            n = stack[-1]
            if n in memo:
                stack.pop()
                continue
            todo = [a for a in n.args if a not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            memo[n] = n.op in ("state", "param", "input", "matvec") or any(memo[a] for a in n.args)
        return memo[node]

    def expr(self, tree, st, values, state_set, params) -> Node:
        """Lark tree -> IR, iteratively (post-order), checking names and shapes."""
        result: dict[int, Node] = {}
        self._conditions = set()     # ids are only unique while this statement's trees live
        stack = [(tree, False)]
        while stack:
            t, done = stack.pop()
            if done:
                result[id(t)] = self.node(t, result, st, values, state_set, params)
                continue
            stack.append((t, True))
            for c in self.operands(t, st):
                stack.append((c, False))
        return result[id(tree)]

    def operands(self, t: Tree, st) -> list:
        """The sub-expressions of `t` to convert first (checking call syntax on the way down)."""
        if t.data == "matmul":
            return [t.children[1]]          # the left side is a parameter name, checked in node()
        if t.data == "call":
            args = self.call_args(t, st)
            if str(t.children[0]) == "where" and args and isinstance(args[0], Tree) and args[0].data == "compare":
                self._conditions.add(id(args[0]))      # the one place a comparison may stand
            return args
        return [c for c in t.children if isinstance(c, Tree)]

    def call_args(self, t: Tree, st) -> list:
        tok = t.children[0]
        fname = str(tok)
        args = t.children[1].children if len(t.children) > 1 else []
        for a in args:
            if isinstance(a, Tree) and a.data == "kwarg":
                raise self.err("keyword arguments are not part of the cell language", st.lineno,
                               a.children[0].column, fix="pass arguments by position: "
                               + _CALL_FORM.get(fname, f"{fname}(EXPR)"))
        return list(args)

    def _use_param(self, pname, kind, tok, st, params):
        prev = params.get(pname)
        if prev is None:
            if self._declared is not None and pname not in self._declared:
                raise self.err(f"'{pname}' is not declared{did_you_mean(pname, self._known)}", st.lineno, tok.column,
                               fix=f"this cell declares its parameters (`param` on line "
                                   f"{min(v[0] for v in self._declared.values())}): add '{pname}' there, "
                                   "or correct the spelling")
            self.check_name(pname, st.lineno, tok.column, "parameter")
            params[pname] = (kind, st.lineno, tok.column)
            return
        if prev[0] != kind:
            def desc(k):
                if k.startswith("V:"):
                    return f"a matrix applied to the input {k[2:]} ([H, {self._inputs[k[2:]][0]}])"
                return {"W": "a matrix applied to x ([H, I])", "U": "a matrix applied to a hidden vector ([H, H])",
                        "b": "a per-unit vector ([H])"}[k]
            raise self.err(f"parameter '{pname}' is used as {desc(kind)} here but as {desc(prev[0])} on line "
                           f"{prev[1]}", st.lineno, tok.column, fix="use a separate parameter for each role")

    def row_function(self, fname: str, tok, args, result, st) -> Node:
        """mean(v), sum(v): over the hidden axis of one batch row, broadcast back; layernorm(v[, eps]):
        (v - mean(v)) / sqrt(mean((v - mean(v))^2) + eps), eps 1e-5 by default (torch's)."""
        most = 2 if fname == "layernorm" else 1
        if not 1 <= len(args) <= most:
            raise self.err(f"{fname}() takes {'one or two arguments' if most == 2 else 'exactly one argument'}, "
                           f"got {len(args)}", st.lineno, tok.column,
                           fix=f"write {_CALL_FORM.get(fname, fname + '(V)')}")
        v = result[id(args[0])]
        self.no_bare_x(v, st, args[0])
        if not self.is_vector(v):
            raise self.err(f"{fname}() of a constant", st.lineno, self.col_of(args[0], st),
                           fix=f"{fname} reduces a vector over the hidden axis: pass an expression of x, a state "
                               "or a parameter")
        if fname in REDUCTIONS:
            return Node(fname, (v,))
        eps = LAYERNORM_EPS
        if len(args) == 2:
            e = simplify(result[id(args[1])])          # a constant expression (1e-3 * 2) is a number
            if e.op != "const" or not e.attr > 0:
                raise self.err("layernorm's eps must be a positive number", st.lineno, self.col_of(args[1], st),
                               fix="write layernorm(V, 1e-5)")
            eps = e.attr
        centred = mk("sub", v, Node("mean", (v,)))
        return mk("div", centred, mk("sqrt", mk("add", Node("mean", (mk("mul", centred, centred),)), ir.const(eps))))

    def node(self, t: Tree, result, st, values, state_set, params) -> Node:
        d = t.data
        kids = [result.get(id(c)) for c in t.children]
        if d == "number":
            tok = t.children[0]
            v = float(tok)
            if not math.isfinite(v):
                raise self.err(f"the number {tok!s:.20} is too large", st.lineno, tok.column,
                               fix="numbers must be finite in float64 (below about 1.8e308)")
            return ir.const(v)
        if d == "name":
            tok = t.children[0]
            nm = str(tok)
            primed = len(t.children) > 1
            key = nm + ("'" if primed else "")
            if nm == "x":
                if primed:
                    raise self.err("x has no primed value", st.lineno, tok.column, fix="write x")
                return ir.input_()
            if nm in self._inputs:
                if primed:
                    raise self.err(f"the input '{nm}' has no primed value", st.lineno, tok.column,
                                   fix=f"write {nm}: an input is given at every step, never updated")
                self._used_inputs.add(nm)
                return ir.input_(nm)
            if primed:
                if nm not in state_set:
                    raise self.err(f"'{key}' is primed but '{nm}' is not a state", st.lineno, tok.column,
                                   fix="only states have new (primed) values")
                return values[key]
            if nm in state_set:
                return ir.state(nm)
            if key in values:
                return values[key]
            if nm in ALL_FUNCTIONS:
                raise self.err(f"function '{nm}' used without arguments", st.lineno, tok.column,
                               fix=f"call it: {nm}(...)")
            self._use_param(nm, "b", tok, st, params)
            return ir.param(nm)
        if d == "call":
            tok = t.children[0]
            fname = str(tok)
            args = self.call_args(t, st)
            if fname in ROW_FUNCTIONS:
                return self.row_function(fname, tok, args, result, st)
            if fname not in FUNCTIONS:
                known = (fname in values or fname in state_set or fname in params or fname == "x"
                         or fname in self._inputs)
                raise self.err((f"'{fname}' is not a function and cannot be called" if known
                                else f"unknown function '{fname}'{did_you_mean(fname, ALL_FUNCTIONS)}"),
                               st.lineno, tok.column,
                               fix=f"functions are: {', '.join(ALL_FUNCTIONS)}" + ("; to multiply write a * (b)"
                                                                            if known else ""))
            op = FUNCTIONS[fname]
            if len(args) != ARITY[op]:
                n = ARITY[op]
                raise self.err(f"{fname}() takes exactly {_count(n)}, got {len(args)}", st.lineno, tok.column,
                               fix=f"write {_CALL_FORM.get(fname, fname + '(' + ', '.join(['EXPR'] * n) + ')')}")
            if op == "where" and id(args[0]) not in self._conditions:
                raise self.err("where's first argument must be a comparison", st.lineno, self.col_of(args[0], st),
                               fix=f"write {_CALL_FORM['where']}, with one of {', '.join(COMPARISONS.values())}")
            vals = [result[id(a)] for a in args]
            for a, v in zip(args, vals):
                self.no_bare_x(v, st, a)
            return mk(op, *vals)
        if d == "compare":
            if id(t) not in self._conditions:
                raise self.err(f"a comparison ({t.children[1]}) can only be the first argument of where",
                               st.lineno, t.children[1].column,
                               fix=f"write {_CALL_FORM['where']}; to use a comparison as a number, write "
                                   "where(a > b, 1, 0)")
            left, right = kids[0], kids[2]
            self.no_bare_x(left, st, t.children[0])
            self.no_bare_x(right, st, t.children[2])
            op = {sym: name for name, sym in COMPARISONS.items()}[str(t.children[1])]
            return mk(op, left, right)
        if d == "matmul":
            left_tree, right_tree = t.children
            right = result[id(right_tree)]
            lname = (str(left_tree.children[0]) if isinstance(left_tree, Tree) and left_tree.data == "name"
                     and len(left_tree.children) == 1 else None)
            if (lname is None or lname == "x" or lname in state_set or lname in values or lname in FUNCTIONS
                    or lname in self._inputs):
                self.bad_matmul_left(left_tree, lname, st, state_set, values)
            if right.op == "input" and right.attr is not None and self._inputs[right.attr][0] is None:
                raise self.err(f"the input '{right.attr}' is one number per batch row, so a matrix cannot multiply "
                               f"it", st.lineno, self.col_of(right_tree, st),
                               fix=f"scale by it element-wise (p * {right.attr} with p a per-unit parameter), or "
                                   f"declare it with a size (`input {right.attr}[K]` and `size K`) to use "
                                   f"M @ {right.attr}")
            if right.op == "input":
                kind = "W" if right.attr is None else "V:" + right.attr
            elif self.is_vector(right):   # x elsewhere in `right` was already rejected by no_bare_x
                kind = "U"
            else:
                raise self.err("the right side of @ must be a vector (x, a state or a vector expression)",
                               st.lineno, self.col_of(right_tree, st),
                               fix="a constant cannot be multiplied by a matrix")
            self._use_param(lname, kind, left_tree.children[0], st, params)
            return ir.matvec(lname, right)
        if d in ("neg", "pos"):
            self.no_bare_x(kids[0], st, t)
            return mk("neg", kids[0]) if d == "neg" else kids[0]
        if d in ("add", "sub", "mul", "div"):
            for child, k in zip(t.children, kids):
                self.no_bare_x(k, st, child)
            return mk(d, kids[0], kids[1])
        raise self.err(f"unsupported construct '{d}'", st.lineno)  # pragma: no cover
