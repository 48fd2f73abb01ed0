"""What a new primitive costs: its rows in the rule tables of lstmc/ops.py plus one spelling row per
backend, nothing else. This test adds `cube(a) = a^3` that way (test-local rows, undone after the
test) and checks a cell using it through the whole ladder on every backend."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
if "triton" not in sys.modules and not torch.cuda.is_available():   # as tests/test_triton.py does
    os.environ["TRITON_INTERPRET"] = "1"

import lstmc  # noqa: E402
from lstmc import ops  # noqa: E402
from lstmc.check import backend_vs_reference, run_checks  # noqa: E402

# the primitive: its ops rows ...
OPS_ROWS = {
    "ARITY": 1,
    "EVAL": lambda a: a * a * a,
    "DERIV": lambda n, g: (ops.mk("mul", g, ops.mk("mul", ops.const(3.0), ops.mk("mul", n.args[0], n.args[0]))),),
    "FUNCTIONS": "cube",
}
# ... and one spelling row per backend (module, table)
SPELLING = {
    "torch": ("lstmc.backends.torch", "SPELL", "({0} * {0} * {0})"),
    "numba": ("lstmc.backends.numba.render", "SPELL", "({0} * {0} * {0})"),
    "triton": ("lstmc.backends.triton.render", "SPELL", "({0} * {0} * {0})"),
}

CELL = """
# a leaky cell whose candidate is a cube: c' = f * c + (1 - f) * cube(tanh(...))
cell cubic
state h, c
f  = sigmoid(W_f @ x + U_f @ h + b_f)
c' = f * c + (1 - f) * cube(tanh(W_c @ x + U_c @ h + b_c))
h' = tanh(c')
"""


@pytest.fixture
def cube(monkeypatch):
    tables = {}
    for backend, (module, table, row) in SPELLING.items():   # imported before any row is added
        if backend == "triton":
            pytest.importorskip("triton")
        tables[backend] = getattr(__import__(module, fromlist=[table]), table)
    for table, row in OPS_ROWS.items():
        monkeypatch.setitem(getattr(ops, table), "cube", row)
    monkeypatch.setattr(ops, "UNARY", ops.UNARY + ("cube",))
    monkeypatch.setattr(ops, "POINTWISE", ops.POINTWISE + ("cube",))
    for backend, (module, table, row) in SPELLING.items():
        monkeypatch.setitem(tables[backend], "cube", row)
    lstmc.build._memory.clear()
    yield
    lstmc.build._memory.clear()


def test_a_new_primitive_is_its_table_rows(cube):
    results = run_checks(CELL, backend="numba", dtype="float32")     # the ladder: FD, autograd, numba
    bad = [(r.name, r.error, r.tolerance) for r in results if not r.ok]
    assert not bad, bad
    for backend in ("torch", "triton"):
        for reverse in (False, True):
            for r in backend_vs_reference(CELL, backend, "float64", reverse=reverse):
                assert r.ok, (backend, r.name, r.error)
