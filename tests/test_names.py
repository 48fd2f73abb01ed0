"""The naming table (lstmc/names.py): one place names the Program's values and the kernels'
arrays; renderers, hosts and the ahead-of-time compiler read it."""

import pytest

import lstmc
from lstmc.names import ARRAYS, VALUES, array_dtype, array_name, local_name
from lstmc.program import KINDS

LOCALS = [  # var key, its local in generated code
    (("s1", "h"), "n_h"),
    (("s1", "c'"), "n_c1"),
    (("sv", "tanh_c'"), "sv_tanh_c1"),
    (("xp", "W_i"), "xp_W_i"),
    (("rp", 0, "U_i"), "rp0_U_i"),
    (("drp", 2, "U_z"), "drp2_U_z"),
    (("dv", 1), "dv1"),
    (("ds1", "h"), "dn_h"),
    (("ds", "c"), "ds_c"),
    (("dp", "b_i"), "dp_b_i"),
    (("dxp", "W_f"), "dxp_W_f"),
    (("t", "add"), "t_add"),
]


@pytest.mark.parametrize("key,name", LOCALS)
def test_local_names(key, name):
    assert local_name(key) == name


@pytest.mark.parametrize("key", [("s1",), ("rp", "U_i"), ("dv", 0, "x")])
def test_a_key_of_the_wrong_arity_is_refused(key):
    with pytest.raises(ValueError, match="part"):
        local_name(key)


ARRAY_NAMES = [(("SQ_", "c'"), "SQ_c1"), (("UT", 0), "UT0"), (("dRP", 1), "dRP1"), (("XP",), "XP"),
               (("P_", "b_hi"), "P_b_hi"), (("DSN_", "h"), "DSN_h"), (("L",), "L")]


@pytest.mark.parametrize("args,name", ARRAY_NAMES)
def test_array_names(args, name):
    assert array_name(*args) == name


def test_program_kinds_are_the_tables():
    assert KINDS == {k: (v.arity, v.meaning) for k, v in VALUES.items()}


def _guessed(arg: str, storage: str, compute: str) -> str:
    """The rule aot.py used before the table: a pointer's dtype guessed from its name's prefix."""
    if arg == "L":
        return "int32"
    if arg.startswith(("SQ_", "DS_", "DSN_", "DP", "RS", "DV", "BT_")):
        return compute
    return storage


@pytest.mark.parametrize("cell", lstmc.builtin_cells())
@pytest.mark.parametrize("storage,compute", [("float32", "float32"), ("bfloat16", "float32"), ("float64", "float64")])
def test_every_kernel_argument_is_in_the_table_with_the_dtype_it_always_had(cell, storage, compute):
    from lstmc.backends.triton.aot import signature
    from lstmc.backends.triton.render import render

    short = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "int32": "i32"}
    rendered = render(lstmc.lower(lstmc.load(cell)), storage, compute)
    for meta in rendered.kernels.values():
        sig = signature(meta, storage, compute)
        for a in meta.arrays:
            prefix, _ = meta.array_of[a]
            assert a.startswith(prefix)
            assert array_dtype(ARRAYS[prefix], storage, compute) == _guessed(a, storage, compute), a
            assert sig[a] == "*" + short[_guessed(a, storage, compute)]
        assert list(sig)[:len(meta.arrays)] == meta.arrays
