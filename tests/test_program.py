"""The lowered Program as data: `verify()` accepts every real Program and names what is wrong in a
broken one; the shared decisions (aliases, shared gradient sums, rows past their length, the dy
seed) are made once, in the Program."""

import dataclasses
from pathlib import Path

import pytest

import lstmc
from lstmc.ir import var
from lstmc.program import PAST_LENGTH, Block, Gemm, ProgramError

EXAMPLES = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.cell"))


@pytest.mark.parametrize("cell", lstmc.builtin_cells() + EXAMPLES)
def test_every_lowered_program_verifies(cell):
    prog = lstmc.lower(lstmc.load(cell))
    assert prog.verify() is prog
    assert "decisions:" in prog.text()


DECISIONS = [  # cell, dxp_alias, shared gradient sums
    ("lstm", 0, {"b_hi": "b_ii", "b_hf": "b_if", "b_hg": "b_ig", "b_ho": "b_io"}),
    ("gru", None, {"b_hr": "b_ir", "b_hz": "b_iz"}),     # b_hn sits inside r * (U_n h + b_hn): its own sum
    ("gru_v1", None, {}),                                # U_n @ (r * h): no slot-for-slot alias
    ("peephole_lstm", 0, {}),
    ("indrnn", None, {}),
]


@pytest.mark.parametrize("cell,alias,shared", DECISIONS)
def test_decisions_are_made_in_the_program(cell, alias, shared):
    prog = lstmc.lower(lstmc.load(cell))
    assert prog.dxp_alias == alias
    assert prog.dp_shared == shared
    assert prog.past_length == PAST_LENGTH
    assert prog.dy_state == prog.cell.output
    assert set(prog.dp_sums()) == set(prog.vector_params) - set(shared)


def _drop_let(prog, key):
    fwd = []
    for st in prog.fwd:
        if isinstance(st, Block):
            st = dataclasses.replace(st, lets=tuple(l for l in st.lets if l.key != key))
        fwd.append(st)
    return dataclasses.replace(prog, fwd=tuple(fwd))


def _swap_first_lets(prog):
    """Move a let that reads another let before it."""
    bwd = list(prog.bwd)
    for i, st in enumerate(bwd):
        if isinstance(st, Block):
            lets = list(st.lets)
            keys = {l.key for l in lets}
            for j, l in enumerate(lets):
                reads = [n for n in lstmc.ir.walk([l.expr]) if n.op == "var" and n.attr in keys]
                if reads:
                    k = next(k for k, m in enumerate(lets) if m.key == reads[0].attr)
                    lets[k], lets[j] = lets[j], lets[k]
                    bwd[i] = dataclasses.replace(st, lets=tuple(lets))
                    return dataclasses.replace(prog, bwd=tuple(bwd))
    raise AssertionError("no block with a dependent let")


def _wrong_gemm(prog):
    fwd = [dataclasses.replace(st, mats=st.mats[::-1]) if isinstance(st, Gemm) else st for st in prog.fwd]
    return dataclasses.replace(prog, fwd=tuple(fwd))


def _unknown_kind(prog):
    st = next(s for s in prog.fwd if isinstance(s, Block))
    bad = dataclasses.replace(st, lets=st.lets + (dataclasses.replace(st.lets[0], key=("zz", "q")),))
    return dataclasses.replace(prog, fwd=tuple(bad if s is st else s for s in prog.fwd))


BROKEN = [  # what is broken, how, the message
    ("a state never updated", lambda p: _drop_let(p, ("s1", "h")), r"never defines h'"),
    ("a read before its definition", _swap_first_lets, r"reads .* before it is defined"),
    ("a GEMM on the wrong matrices", _wrong_gemm, r"not its group's matrices"),
    ("saved names repeated", lambda p: dataclasses.replace(p, saved=p.saved + p.saved[:1]), r"saved names repeat"),
    ("an alias to no group", lambda p: dataclasses.replace(p, dxp_alias=7), r"dxp_alias 7 names no group"),
    ("a shared sum with a non-vector", lambda p: dataclasses.replace(p, dp_shared={"b_hi": "W_i"}),
     r"shared gradient sum b_hi = W_i"),
    ("a past-length rule outside keep/zero/pass",
     lambda p: dataclasses.replace(p, past_length={**PAST_LENGTH, "s1": "clamp"}), r"past_length"),
    ("an unknown kind of value", _unknown_kind, r"not a known kind of value"),
    ("a vector that is a matrix", lambda p: dataclasses.replace(p, vector_params=("U_i",)), r"U_i is not a b parameter"),
]


@pytest.mark.parametrize("what,breaks,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_verify_names_what_is_broken(what, breaks, message):
    prog = breaks(lstmc.lower(lstmc.load("lstm")))
    with pytest.raises(ProgramError, match=message):
        prog.verify()


def _example(name):
    return lstmc.load(next(p for p in EXAMPLES if Path(p).stem == name))


def test_step_only_values_are_exactly_the_reduction_operands():
    """layernorm_lstm's 18 reductions read 18 saved values that no backward reads (a reduction has
    no weight gradient): the Program says so once, and every real Program's step_only verifies."""
    prog = lstmc.lower(_example("layernorm_lstm"))
    operands = {g.operand.attr[1] for g in prog.groups if g.reduce and g.operand.op == "var"}
    assert len(operands) == 18 and set(prog.step_only) == operands
    assert "kept for one step only" in prog.text()
    for cell in lstmc.builtin_cells():        # no reductions: nothing is step-only, the text is unchanged
        p = lstmc.lower(lstmc.load(cell))
        assert p.step_only == () and "kept for one step only" not in p.text()


def test_verify_refuses_a_step_only_value_that_backward_reads():
    prog = lstmc.lower(_example("layernorm_lstm"))
    read = next(n for n, _ in prog.saved if n not in prog.step_only)      # a value backward does read
    with pytest.raises(ProgramError, match=f"step-only values \\['{read}'\\]"):
        dataclasses.replace(prog, step_only=prog.step_only + (read,)).verify()
    with pytest.raises(ProgramError, match="step-only values \\['nothing'\\]"):
        dataclasses.replace(prog, step_only=("nothing",)).verify()


def test_row_values_are_the_per_row_statistics():
    """layernorm_lstm's nine sqrt(mean(...) + eps) are one number per row (program.row_values);
    a value that varies along the row (a gate) is refused by verify."""
    prog = lstmc.lower(_example("layernorm_lstm"))
    exprs = dict(prog.saved)
    assert len(prog.row_values) == 9
    assert all(exprs[n].op == "sqrt" for n in prog.row_values)
    assert "one number per row" in prog.text()
    with pytest.raises(ProgramError, match="row values \\['i'\\]"):
        dataclasses.replace(prog, row_values=prog.row_values + ("i",)).verify()
    for cell in lstmc.builtin_cells():
        assert lstmc.lower(lstmc.load(cell)).row_values == ()


def test_recomputed_values_leave_the_tape():
    """(z - mean) / sqrt(var + eps) is one division over two values the tape keeps anyway: backward
    recomputes it, so layernorm_lstm saves 41 values (23 in the tape, 18 step-only) instead of 50;
    no built-in cell's tape changes (each saved value of theirs is transcendental or a GEMM result)."""
    prog = lstmc.lower(_example("layernorm_lstm"))
    assert len(prog.saved) == 41
    assert not [n for n, e in prog.saved if e.op == "div"]
    assert [n for n, _ in lstmc.lower(lstmc.load("lstm")).saved] == ["i", "g", "tanh_c'", "o", "f"]


def test_shared_sums_are_the_same_expression():
    """A shared gradient sum is a decision about the math, not about names: the two backward lets
    are the same interned expression."""
    prog = lstmc.lower(lstmc.load("lstm"))
    adj = {l.key: l.expr for st in prog.bwd if isinstance(st, Block) for l in st.lets}
    for p, q in prog.dp_shared.items():
        assert adj[("dp", p)] is adj[("dp", q)]
    assert adj[("dxp", "W_i")] is var("drp", 0, "U_i")


# A change of the past_length table reaches the generated code of both compiled backends: the
# renderers print the table, they do not decide it. (kind, rule, a numba line, a triton line)
PAST_RULES = [
    ("s1", "zero", "nxt_h[b, j] = np.float32(0.0)", "w_h = tl.where(live, n_h, 0.0)"),
    ("s1", "keep", "nxt_h[b, j] = cur_h[b, j]", "w_h = tl.where(live, n_h, s_h)"),
    ("ds", "zero", "dSn_c[b, j] = np.float32(0.0)", "tl.where(live, ds_c, 0.0)"),
    ("ds", "pass", "dSn_c[b, j] = dS_c[b, j]", "tl.where(live, ds_c, go_c)"),
    ("sv", "zero", "SV_i[ti, b, j] = np.float32(0.0)", "tl.where(live, sv_i, 0.0)"),
]


@pytest.mark.parametrize("kind,rule,numba_line,triton_line", PAST_RULES)
def test_past_length_table_is_printed_by_both_renderers(kind, rule, numba_line, triton_line):
    from lstmc.backends.numba.render import render as numba_render
    from lstmc.backends.triton.render import render as triton_render

    prog = lstmc.lower(lstmc.load("lstm"))
    prog.past_length = {**PAST_LENGTH, kind: rule}
    assert numba_line in numba_render(prog, "float32")
    assert triton_line in triton_render(prog, "float32", "float32").source


@pytest.mark.parametrize("kind", ["y", "sv", "drp", "dp"])
def test_a_rule_that_needs_a_value_before_the_step_is_refused(kind):
    """keep/pass make no sense for a value with nothing before the step: both renderers refuse."""
    from lstmc.backends.numba.render import render as numba_render
    from lstmc.backends.triton.render import render as triton_render

    prog = lstmc.lower(lstmc.load("lstm"))
    prog.past_length = {**PAST_LENGTH, kind: "keep"}
    with pytest.raises(ValueError, match=rf"past_length\['{kind}'\]"):
        numba_render(prog, "float32")
    with pytest.raises(ValueError, match=rf"past_length\['{kind}'\]"):
        triton_render(prog, "float32", "float32")
