"""One expression printer (ir.print_infix) for the IR's text and every backend's generated code:
the same tree prints with the same parentheses in both."""

import pytest

from lstmc import ir
from lstmc.backends.render import render_expr

h, c, b = ir.state("h"), ir.state("c"), ir.param("b")


def N(op, *args):
    return ir.Node(op, tuple(args))


CASES = [  # expression, its IR text
    (N("add", h, N("mul", c, b)), "h + c * b"),
    (N("mul", N("add", h, c), b), "(h + c) * b"),
    (N("sub", h, N("sub", c, b)), "h - (c - b)"),
    (N("sub", N("sub", h, c), b), "h - c - b"),
    (N("div", h, N("mul", c, b)), "h / (c * b)"),
    (N("div", N("div", h, c), b), "h / c / b"),
    (N("neg", N("add", h, c)), "-(h + c)"),
    (N("neg", N("neg", h)), "-(-h)"),
    (N("mul", N("neg", h), c), "-h * c"),
    (N("add", N("sigmoid", N("add", h, b)), ir.const(1.0)), "sigmoid(h + b) + 1"),
]


@pytest.mark.parametrize("expr,text", CASES, ids=[t for _, t in CASES])
def test_ir_text_and_generated_code_share_one_printer(expr, text):
    assert ir.to_text(expr) == text
    spell = {"sigmoid": "sigmoid({0})"}
    code = render_expr(expr, spell, leaf=lambda n: n.attr, const=lambda v: ir.to_text(ir.const(v)))
    assert code == text


def test_a_negative_constant_is_parenthesised_in_code():
    e = N("mul", h, ir.const(-0.5))
    assert render_expr(e, {}, leaf=lambda n: n.attr, const=repr) == "h * (-0.5)"


def test_text_is_cached_on_shared_subexpressions():
    inner = N("add", h, c)
    ir.to_text(N("mul", inner, b))
    assert inner._text == "h + c"
