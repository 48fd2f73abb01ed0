"""The closed set of primitives and their rule tables: one row per primitive in each table.

Tables:
  ARITY   how many arguments
  EVAL    float64/float32 NumPy evaluation (the reference semantics)
  DERIV   the vector-Jacobian rule: (node, g) -> one adjoint per argument, as IR (never numbers or text)
  FUNCTIONS  the names a .cell file may call, mapped to their primitive

sigmoid, tanh, exp and relu differentiate through their *output* (`node`), which the forward pass
has already computed and the tape saves, so backward never recomputes a transcendental it can read.
Adding a primitive is one row in each table (and one in each backend's spelling table); the tests
check that every table covers every primitive.
"""

from __future__ import annotations

import numpy as np

from . import ir
from .ir import Node, const

UNARY = ("neg", "exp", "log", "sigmoid", "tanh", "relu", "softplus", "step", "sqrt", "abs", "sign", "logsigmoid")
BINARY = ("add", "sub", "mul", "div", "max", "min", "gt", "ge", "lt", "le")
TERNARY = ("where",)
POINTWISE = UNARY + BINARY + TERNARY

ARITY = {**{op: 1 for op in UNARY}, **{op: 2 for op in BINARY}, **{op: 3 for op in TERNARY}}

# Reductions over the hidden axis of one batch row: structural ops like M @ v (not pointwise), a
# per-row scalar that broadcasts back to [H]. The lowering turns each into a reduction stage between
# pointwise blocks (lstmc/lower.py); `layernorm` is written with them by the parser.
REDUCTIONS = ("mean", "sum")
LAYERNORM_EPS = 1e-5      # torch.nn.functional.layer_norm's default

# Comparisons: a mask of 1.0 where the comparison holds, else 0.0. The language allows them only as
# where's first argument (spec.py); where(c, p, q) is p where c != 0, else q (a select: the branch
# not taken never reaches the result, even when it is inf or NaN).
COMPARISONS = ir.COMPARISONS      # op -> its symbol in the language

# spec-language function name -> primitive
FUNCTIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "exp": "exp",
    "log": "log",
    "softplus": "softplus",
    "sqrt": "sqrt",
    "abs": "abs",
    "logsigmoid": "logsigmoid",
    "max": "max",
    "min": "min",
    "where": "where",
}


def mk(op: str, *args: Node) -> Node:
    """Build a pointwise node (no simplification; see simplify.py)."""
    assert op in ARITY and len(args) == ARITY[op], (op, args)
    return Node(op, tuple(args))


def _sigmoid(a):
    # stable for large |a|: never exp of a large positive number
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(a):
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def _mask(cmp):
    """A comparison's mask: 1.0 where it holds, else 0.0 (a float, so a tape can hold it)."""
    return lambda a, b: np.where(cmp(a, b), 1.0, 0.0).astype(np.result_type(a, b))


EVAL = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "softplus": _softplus,
    "step": lambda a: (a > 0).astype(a.dtype) if hasattr(a, "astype") else float(a > 0),
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sign": np.sign,
    "logsigmoid": lambda a: -_softplus(-a),
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": lambda a, b: np.where(a >= b, a, b),     # ties: the first argument (its gradient too)
    "min": lambda a, b: np.where(a <= b, a, b),
    "gt": _mask(np.greater),
    "ge": _mask(np.greater_equal),
    "lt": _mask(np.less),
    "le": _mask(np.less_equal),
    "where": lambda c, p, q: np.where(c != 0, p, q),
}

ONE = const(1.0)
ZERO = const(0.0)

def _select(cond: Node, g: Node) -> tuple[Node, Node]:
    """The adjoints of a select's two branches: g where cond holds / 0, and 0 / g."""
    return mk("where", cond, g, ZERO), mk("where", cond, ZERO, g)


DERIV = {
    # node is the forward node (its value is the op's output), g the adjoint flowing into it
    "neg": lambda n, g: (mk("neg", g),),
    "exp": lambda n, g: (mk("mul", g, n),),
    "log": lambda n, g: (mk("div", g, n.args[0]),),
    "sigmoid": lambda n, g: (mk("mul", g, mk("mul", n, mk("sub", ONE, n))),),
    "tanh": lambda n, g: (mk("mul", g, mk("sub", ONE, mk("mul", n, n))),),
    "relu": lambda n, g: (mk("mul", g, mk("step", n)),),  # relu(a) > 0 exactly when a > 0
    "softplus": lambda n, g: (mk("mul", g, mk("sigmoid", n.args[0])),),
    "step": lambda n, g: (ZERO,),
    "sqrt": lambda n, g: (mk("div", g, mk("mul", const(2.0), n)),),
    "abs": lambda n, g: (mk("mul", g, mk("sign", n.args[0])),),
    "sign": lambda n, g: (ZERO,),
    "add": lambda n, g: (g, g),
    "sub": lambda n, g: (g, mk("neg", g)),
    "mul": lambda n, g: (mk("mul", g, n.args[1]), mk("mul", g, n.args[0])),
    "div": lambda n, g: (mk("div", g, n.args[1]), mk("neg", mk("mul", g, mk("div", n, n.args[1])))),
    "logsigmoid": lambda n, g: (mk("mul", g, mk("sigmoid", mk("neg", n.args[0]))),),
    # max/min: the adjoint goes to the chosen side (ties: the first), as the forward chooses
    "max": lambda n, g: _select(mk("ge", *n.args), g),
    "min": lambda n, g: _select(mk("le", *n.args), g),
    "gt": lambda n, g: (ZERO, ZERO),
    "ge": lambda n, g: (ZERO, ZERO),
    "lt": lambda n, g: (ZERO, ZERO),
    "le": lambda n, g: (ZERO, ZERO),
    "where": lambda n, g: (ZERO, *_select(n.args[0], g)),
}

# ops whose outputs backward reads rather than recomputes (the saved-activation policy, lower.py)
TRANSCENDENTAL = frozenset({"exp", "log", "sigmoid", "tanh", "softplus", "sqrt", "logsigmoid"})
