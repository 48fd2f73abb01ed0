"""How the triton kernels spell the cell language's primitives: SPELL, one row per primitive (a
`tl` call, or a @triton.jit function of prelude.py that the row names; nowhere else), and
STORAGE, the compute type of each storage type."""

from __future__ import annotations

from ..render import check_spelling

# storage dtype -> compute dtype (arithmetic, accumulation, states)
STORAGE = {"float32": "float32", "float64": "float64", "bfloat16": "float32", "float16": "float32"}

# One row per primitive: its Triton math is either the row itself (a `tl` call) or a @triton.jit
# function of prelude.py that the row names (stable forms, no overflow warnings); nowhere else.
SPELL = {
    "exp": "tl.exp({0})",
    "log": "tl.log({0})",
    "sigmoid": "_sigmoid({0})",
    "tanh": "_tanh({0})",
    "relu": "_relu({0})",
    "softplus": "_softplus({0})",
    "step": "_step({0})",
    "sqrt": "tl.sqrt({0})",
    "abs": "tl.abs({0})",
    "sign": "_sign({0})",
    "logsigmoid": "_logsigmoid({0})",
    "max": "_max({0}, {1})",
    "min": "_min({0}, {1})",
    "gt": "_gt({0}, {1})",
    "ge": "_ge({0}, {1})",
    "lt": "_lt({0}, {1})",
    "le": "_le({0}, {1})",
    "where": "_where({0}, {1}, {2})",
}
check_spelling(SPELL, "triton")
