"""The lowering plan (DESIGN.md §3): what the compiler decides for each cell."""

import pytest

import lstmc
import lstmc.check
from lstmc.lower import Block, Gemm

# cell -> (input-GEMM matrices, [(group phase, operand, matrices)], forward blocks, saved values)
PLANS = {
    "lstm": (["W_i", "W_f", "W_g", "W_o"], [(0, "h", ["U_i", "U_f", "U_g", "U_o"])], 1,
             {"i", "f", "g", "o", "tanh_c1"}),
    "peephole_lstm": (["W_i", "W_f", "W_g", "W_o"], [(0, "h", ["U_i", "U_f", "U_g", "U_o"])], 1,
                      {"i", "f", "g", "o", "tanh_c1"}),
    "gru": (["W_r", "W_z", "W_n"], [(0, "h", ["U_r", "U_z", "U_n"])], 1, {"r", "z", "n", "add"}),
    "gru_v1": (["W_z", "W_r", "W_n"], [(0, "h", ["U_z", "U_r"]), (1, "mul_r_h", ["U_n"])], 2,
               {"z", "r", "n", "mul_r_h"}),
    "mgu": (["W_f", "W_n"], [(0, "h", ["U_f"]), (1, "mul_f_h", ["U_n"])], 2, {"f", "n", "mul_f_h"}),
    "indrnn": (["W"], [], 1, set()),       # relu's derivative reads h', which the tape has
}


def _plan(name):
    prog = lstmc.lower(lstmc.load(name))
    groups = [(g.phase, g.operand.attr if g.operand.op == "state" else g.operand.attr[1], list(g.mats))
              for g in prog.groups]
    blocks = [st for st in prog.fwd if isinstance(st, Block)]
    return prog, groups, blocks


@pytest.mark.parametrize("name", sorted(PLANS))
def test_gemm_plan(name):
    mats, groups, nblocks, saved = PLANS[name]
    prog, got_groups, blocks = _plan(name)
    assert list(prog.input_mats) == mats            # every M @ x in one hoisted GEMM
    assert got_groups == groups                     # recurrent products grouped by operand, staged by phase
    assert len(blocks) == nblocks                   # one fused pointwise block per phase
    assert {n.replace("'", "1") for n, _ in prog.saved} == saved


def test_staged_gemm_order_forward_and_backward():
    prog = lstmc.lower(lstmc.load("gru_v1"))
    kinds = [("G", st.group) if isinstance(st, Gemm) else ("B", st.phase) for st in prog.fwd]
    assert kinds == [("G", 0), ("B", 1), ("G", 1), ("B", 2)]
    bkinds = [("G", st.group) if isinstance(st, Gemm) else ("B", st.phase) for st in prog.bwd]
    assert bkinds == [("B", 0), ("G", 1), ("B", 1), ("G", 0), ("B", 2)]   # reverse phase order


def test_backward_never_recomputes_a_transcendental():
    for name in lstmc.builtin_cells():
        prog = lstmc.lower(lstmc.load(name))
        from lstmc.ir import walk

        for st in prog.bwd:
            if isinstance(st, Block):
                for let in st.lets:
                    ops_used = {n.op for n in walk([let.expr])}
                    assert not ops_used & {"sigmoid", "tanh", "exp"}, (name, let)


def test_user_cell_with_three_phases_is_staged_generically():
    cell = lstmc.parse("""
cell deep
state h
a = sigmoid(U_a @ h + W_a @ x)
b = tanh(U_b @ (a * h))
h' = relu(U_c @ (b * a)) + h
""")
    prog = lstmc.lower(cell)
    assert [g.phase for g in prog.groups] == [0, 1, 2]
    r = lstmc.check.finite_differences(cell)
    assert r.ok, r


def test_program_text_is_deterministic():
    a = lstmc.lower(lstmc.load("peephole_lstm")).text()
    b = lstmc.lower(lstmc.parse(lstmc.load("peephole_lstm").source)).text()
    assert a == b
