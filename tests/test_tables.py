"""Every rule table and every renderer covers every primitive (docs/design.md, "Pipeline": one table per concern)."""

import numpy as np
import pytest

from lstmc import ops
from lstmc.backends import torch as torch_backend
from lstmc.backends.numba import render as numba_render
from lstmc.backends.triton import render as triton_render
from lstmc.ir import Node, const, param
from lstmc.simplify import simplify


@pytest.mark.parametrize("table", ["ARITY", "EVAL", "DERIV"])
def test_rule_tables_cover_every_primitive(table):
    assert set(getattr(ops, table)) == set(ops.POINTWISE)


@pytest.mark.parametrize("spell", [torch_backend.SPELL, numba_render.SPELL, triton_render.SPELL],
                         ids=["torch", "numba", "triton"])
def test_renderers_spell_every_function_primitive(spell):
    infix = {"add", "sub", "mul", "div", "neg"}
    assert set(spell) | infix == set(ops.POINTWISE)


def test_triton_math_lives_in_its_table_row_or_the_prelude():
    """A Triton SPELL row is one `tl` call or names one prelude function; the prelude holds exactly
    those functions and `_dot`, and the template (kernel shells only) defines no helper of its own."""
    import ast
    import re
    from pathlib import Path

    from lstmc.backends.render import template_dir

    prelude = Path(triton_render.__file__).with_name("prelude.py")
    jitted = {f.name for f in ast.parse(prelude.read_text()).body if isinstance(f, ast.FunctionDef)
              and any(ast.unparse(d) == "triton.jit" for d in f.decorator_list)}
    assert jitted == set(triton_render.prelude_names())
    for op, row in triton_render.SPELL.items():
        args = ", ".join(f"{{{k}}}" for k in range(ops.ARITY[op]))
        assert re.fullmatch(r"(tl\.\w+|_\w+)\(" + re.escape(args) + r"\)", row), (op, row)
    shell = (Path(template_dir()) / "triton_cell.py.j2").read_text()
    assert not re.search(r"^def _", shell, re.M)
    assert "from lstmc.backends.triton.prelude import {{ prelude" in shell


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_math_lives_in_its_prelude(dtype):
    """A numba SPELL row names one prelude function; the prelude of each dtype holds exactly those
    functions, the in-kernel products and SMALL_ROWS, all inlined (inline="always") and compiled with
    the kernels' options; the template (kernel shells only) defines no helper of its own."""
    import importlib
    import re
    from pathlib import Path

    from numba.core.registry import CPUDispatcher

    from lstmc.backends.numba import options, prelude
    from lstmc.backends.render import template_dir

    mod = importlib.import_module(numba_render.PRELUDE[dtype])
    names = numba_render.prelude_names()
    jitted = {k for k, v in vars(mod).items() if isinstance(v, CPUDispatcher)}
    assert jitted == set(names) - {"SMALL_ROWS"} and sorted(mod.__all__) == names
    assert mod.SMALL_ROWS == prelude.SMALL_ROWS
    for k in jitted:
        opts = getattr(mod, k).targetoptions          # (Numba keeps `cache` elsewhere)
        assert opts["inline"] == "always" and all(opts[o] == v for o, v in options.JIT.items() if o != "cache"), k
    for op, row in numba_render.SPELL.items():
        args = ", ".join(f"{{{k}}}" for k in range(ops.ARITY[op]))
        assert re.fullmatch(r"_\w+\(" + re.escape(args) + r"\)", row), (op, row)
    shell = (Path(template_dir()) / "numba_cell.py.j2").read_text()
    assert not re.search(r"^def _", shell, re.M)
    assert "from {{ prelude }} import {{ prelude_names" in shell


def test_numba_products_are_the_same_code_in_both_preludes():
    """_mm_nt/_mm_nn are written once per dtype; they differ only in the type of their zeros."""
    import inspect

    from lstmc.backends.numba import prelude_f32, prelude_f64

    for fn in ("_mm_nt", "_mm_nn"):
        f32 = inspect.getsource(getattr(prelude_f32, fn).py_func)
        f64 = inspect.getsource(getattr(prelude_f64, fn).py_func)
        assert "0.0" not in f32.replace("np.float32(0.0)", "")
        assert f32.replace("np.float32(0.0)", "0.0") == f64


def test_every_spec_function_is_a_primitive():
    assert set(ops.FUNCTIONS.values()) <= set(ops.POINTWISE)


@pytest.mark.parametrize("op", [op for op in ops.POINTWISE if op not in ("step", "sign")])
def test_derivative_rules_match_numerical_derivatives(op):
    """Each DERIV row, evaluated, equals a central difference of the EVAL row."""
    rng = np.random.default_rng(0)
    n = ops.ARITY[op]
    xs = [rng.uniform(0.3, 1.7, size=5) for _ in range(n)]  # positive: log and sqrt are defined
    args = [param(f"a{k}") for k in range(n)]
    node = ops.mk(op, *args)
    g = param("g")
    rules = ops.DERIV[op](node, g)
    env = {f"a{k}": xs[k] for k in range(n)} | {"g": np.ones(5)}

    def ev(expr):
        vals = {}
        from lstmc.ir import walk

        for m in walk([expr]):
            vals[m] = (m.attr if m.op == "const" else env[m.attr] if m.op == "param"
                       else ops.EVAL[m.op](*(vals[a] for a in m.args)))
        return vals[expr]

    for k in range(n):
        eps = 1e-6
        up = [x.copy() for x in xs]
        dn = [x.copy() for x in xs]
        up[k] += eps
        dn[k] -= eps
        fd = (ops.EVAL[op](*up) - ops.EVAL[op](*dn)) / (2 * eps)
        np.testing.assert_allclose(ev(rules[k]), fd, rtol=1e-6, atol=1e-8)


def test_nodes_are_interned_so_cse_is_free():
    a = ops.mk("mul", param("p"), const(2.0))
    b = ops.mk("mul", param("p"), const(2.0))
    assert a is b
    assert ops.mk("sigmoid", a) is ops.mk("sigmoid", b)


def test_nodes_are_immutable():
    with pytest.raises(AttributeError):
        param("p").op = "x"


IDENTITIES = [
    (lambda p: ops.mk("add", p, const(0)), lambda p: p),
    (lambda p: ops.mk("add", const(0), p), lambda p: p),
    (lambda p: ops.mk("sub", p, const(0)), lambda p: p),
    (lambda p: ops.mk("sub", const(0), p), lambda p: ops.mk("neg", p)),
    (lambda p: ops.mk("sub", p, p), lambda p: const(0)),
    (lambda p: ops.mk("mul", p, const(1)), lambda p: p),
    (lambda p: ops.mk("mul", const(0), p), lambda p: const(0)),
    (lambda p: ops.mk("mul", p, const(-1)), lambda p: ops.mk("neg", p)),
    (lambda p: ops.mk("neg", ops.mk("neg", p)), lambda p: p),
    (lambda p: ops.mk("div", p, const(1)), lambda p: p),
    (lambda p: ops.mk("add", p, ops.mk("neg", param("q"))), lambda p: ops.mk("sub", p, param("q"))),
    (lambda p: ops.mk("mul", ops.mk("add", const(1), const(2)), p), lambda p: ops.mk("mul", const(3), p)),
    (lambda p: ops.mk("mul", ops.mk("neg", p), ops.mk("neg", p)), lambda p: ops.mk("mul", p, p)),
    (lambda p: ops.mk("add", ops.mk("mul", p, const(1)), ops.mk("mul", const(0), p)), lambda p: p),
]


@pytest.mark.parametrize("before, after", IDENTITIES)
def test_simplify_identities(before, after):
    p = param("p")
    assert simplify(before(p)) is after(p)


def test_simplify_handles_deep_chains_without_recursion():
    n = param("p")
    for _ in range(20000):
        n = ops.mk("add", n, const(0))
    assert simplify(n) is param("p")


def test_text_printer_is_canonical_and_minimal():
    from lstmc.ir import matvec, state, to_text

    e = ops.mk("mul", ops.mk("sub", const(1), param("z")), ops.mk("add", matvec("U", state("h")), param("b")))
    assert to_text(e) == "(1 - z) * (U @ h + b)"
    assert to_text(ops.mk("sub", param("a"), ops.mk("sub", param("b"), param("c")))) == "a - (b - c)"
    assert isinstance(Node.__reduce__(e)[1], tuple)
