"""The lowering plan (docs/design.md, "Lowering: the Program"): what the compiler decides for each cell."""

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


# ------------------------------------------------------------------------- lowering stays linear

def long_cell(n: int, tag: str = "", seed: int = 0) -> str:
    """A realistic cell of exactly n statements: gates (W @ x + U @ h), staged products (V @ a),
    elementwise work over recent and far intermediates, each line reusing the previous one; states
    updated at the end. `tag` renames every parameter, so two cells share no IR nodes."""
    import random

    rng = random.Random(seed)
    lines = [f"cell long{tag}", "state h, c", "output h"]
    names: list[str] = []
    for k in range(n - 5):
        prev = names[-1] if names else "h"
        near = rng.choice(names[-10:]) if names else "c"
        far = rng.choice(names) if names else "h"
        forms = [f"sigmoid(W{tag}_{k} @ x + U{tag}_{k} @ h + b{tag}_{k} * {prev})",
                 f"tanh(V{tag}_{k} @ {prev} + {near})", f"{prev} * {near} + {far}",
                 f"tanh({prev}) - 0.5 * {near}", f"{prev} * (1 - {near})", f"relu({prev} + p{tag}_{k})",
                 f"sigmoid(-{prev}) * {near}", f"{prev} / (1 + {near} * {near})"]
        form = forms[rng.choices(range(8), weights=[20, 5, 15, 15, 15, 10, 10, 10])[0]]
        names.append(f"a{k}")
        lines.append(f"a{k} = {form}")
    lines += [f"c' = c * sigmoid({names[-1]}) + {names[-2]}", f"h' = tanh(c') * {names[-1]}"]
    return "\n".join(lines) + "\n"


def _lines_run(fn) -> int:
    """How many lines of lstmc's own code `fn()` executes: deterministic work, unlike a timing."""
    import os
    import sys

    pkg = os.path.dirname(lstmc.__file__)
    count = 0

    def local(frame, event, arg):
        nonlocal count
        count += event == "line"
        return local

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename.startswith(pkg) else None)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count


def test_lowering_work_grows_linearly_with_the_number_of_statements():
    # 4x the statements: linear work is 4x, quadratic 16x (the old passes re-walked the whole DAG
    # per statement, per adjoint and per block: 20x from 100 to 400 statements)
    small, large = (lstmc.parse(long_cell(n, tag=f"n{n}")) for n in (200, 800))
    work = [_lines_run(lambda c=c: lstmc.lower(c)) for c in (small, large)]
    assert work[1] / work[0] < 6, work


def test_a_cell_at_the_statement_limit_lowers():
    from lstmc.spec import MAX_STATEMENTS

    cell = lstmc.parse(long_cell(MAX_STATEMENTS, tag="max"))
    prog = lstmc.lower(cell)
    assert len(cell.equations) == MAX_STATEMENTS - 3
    assert {let.key for st in prog.fwd if isinstance(st, Block) for let in st.lets} >= {("s1", "h"), ("s1", "c")}


def test_write_only_adjoints_are_never_read_by_a_later_block():
    # the adjoint of p is also h's (through h + p) and dh needs the GEMM's dv too: a later block.
    # Backends sum dp over the batch and only write ds, so the shared value must be a buffer.
    from lstmc.backends.numba import render as numba_render
    from lstmc.ir import walk

    cell = lstmc.parse("cell t\nstate h\na = relu(h + p)\nh' = tanh(U @ h + W @ x) * a\n")
    for prog in (lstmc.lower(cell), lstmc.lower(lstmc.parse(long_cell(150, tag="wo")))):
        for st in prog.bwd:
            if isinstance(st, Block):
                defined = {let.key for let in st.lets}
                for let in st.lets:
                    reads = {n.attr for n in walk([let.expr]) if n.op == "var" and n.attr[0] in ("dp", "ds")}
                    assert reads <= defined, (let, st.phase)
        numba_render.render(prog, "float32")          # used to raise KeyError('dp', 'p')
    assert lstmc.check.finite_differences(cell).ok
