"""The `reference` backend against independent oracles (docs/design.md, "Validation", rungs 1 and 2).

Four tables, one checker each:

1. `torch.nn.LSTM` / `torch.nn.GRU` in float64: forward, and backward through torch autograd
   (dx, d initial states, every weight and both biases), plain, with `lengths` (packed sequences)
   and reversed (the reverse half of a bidirectional module).
2. `onnx.reference.ReferenceEvaluator` on an ONNX LSTM / GRU node, float64, forward and reverse,
   with initial_h / initial_c. It ignores `input_forget` and `sequence_lens`, so those go to 3.
3. ONNX Runtime (float32 only, see `ORT_TOL`): coupled gate (`input_forget=1`) and `sequence_lens`,
   forward and reverse.
4. Central finite differences in float64 for every built-in cell, over x, each initial state and
   every parameter, with lengths (including 0 and full rows) and reverse.

Parameters, inputs, initial states and cotangents are random (not `init_params`), so every bias and
peephole is nonzero and a swapped gate or bias shows. Seeds come from the case id, so a run is
reproducible.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import lstmc

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

# Sizes (T, B, I, H): odd on purpose (H=7 is not a multiple of 8), plus B=1 and T=1.
SIZES = {
    "std": (5, 3, 4, 7),
    "b1": (5, 1, 4, 7),
    "t1": (1, 3, 4, 7),
    "t1b1": (1, 1, 3, 5),
}


# ------------------------------------------------------------------------------------------ helpers

def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the case, stable across runs and processes (unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random_problem(prog, T, B, I, H, rng, scale=0.6):
    """Random params (every entry nonzero in general), x, initial state, dy and dstate. A cell with
    sized states (lstmp's `state h[P]`) gets 3 for each declared size."""
    cell = prog.cell
    sizes = {k: 3 for k in cell.sizes} or None
    params = {p: rng.uniform(-scale, scale, size=shp) for p, shp in prog.param_shapes(I, H, sizes).items()}
    n = {s: cell.size_value(cell.state_size(s), I, H, sizes) for s in cell.states}
    x = rng.uniform(-1.0, 1.0, size=(T, B, I))
    state = {s: rng.uniform(-1.0, 1.0, size=(B, n[s])) for s in cell.states}
    dy = rng.normal(size=(T, B, n[cell.output]))
    dstate = {s: rng.normal(size=(B, n[s])) for s in cell.states}
    return params, x, state, dy, dstate


def max_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_all(pairs: dict, tol: float, what: str):
    """pairs: name -> (lstmc value, oracle value). Fails listing every array over `tol`."""
    errs = {k: max_err(a, b) for k, (a, b) in pairs.items()}
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, f"{what}: max abs error over {tol:g} in " + ", ".join(f"{k}={e:.3e}" for k, e in bad.items())


def full_lengths(lengths, T, B):
    return np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)


# ================================================================ 1. torch.nn.LSTM / torch.nn.GRU

# Each torch tensor is the row-wise concatenation of lstmc arrays, in torch's gate order.
TORCH_MAP = {
    "lstm": (torch.nn.LSTM, {
        "weight_ih": ["W_i", "W_f", "W_g", "W_o"],
        "weight_hh": ["U_i", "U_f", "U_g", "U_o"],
        "bias_ih": ["b_ii", "b_if", "b_ig", "b_io"],
        "bias_hh": ["b_hi", "b_hf", "b_hg", "b_ho"],
    }),
    "gru": (torch.nn.GRU, {
        "weight_ih": ["W_r", "W_z", "W_n"],
        "weight_hh": ["U_r", "U_z", "U_n"],
        "bias_ih": ["b_ir", "b_iz", "b_in"],
        "bias_hh": ["b_hr", "b_hz", "b_hn"],
    }),
    # nn.LSTM(proj_size=P) (Sak et al. 2014): the lstm gates (weight_hh [4H, P]) and weight_hr [P, H]
    "lstmp": (torch.nn.LSTM, {
        "weight_ih": ["W_i", "W_f", "W_g", "W_o"],
        "weight_hh": ["U_i", "U_f", "U_g", "U_o"],
        "bias_ih": ["b_ii", "b_if", "b_ig", "b_io"],
        "bias_hh": ["b_hi", "b_hf", "b_hg", "b_ho"],
        "weight_hr": ["W_hr"],
    }),
}

# (cell, sizes, lengths or None, reverse)
TORCH_CASES = [
    (cell, size, lengths, reverse)
    for cell in ("lstm", "gru", "lstmp")
    for size, lengths, reverse in [
        ("std", None, False),
        ("b1", None, False),
        ("t1", None, False),
        ("t1b1", None, False),
        ("std", None, True),
        ("b1", None, True),
        ("std", [3, 5, 1], False),   # unsorted, one full row; packed sequences need lengths >= 1
        ("std", [3, 5, 1], True),
    ]
]

# Both sides are float64 and compute the same math; only summation order differs (observed
# ~3e-16 forward, ~1e-15 backward), so these bars leave 5 orders of margin and still catch any
# mapping or derivative error (those are >= 1e-4).
TORCH_FWD_TOL = 1e-10
TORCH_BWD_TOL = 1e-9


@pytest.mark.parametrize("cell,size,lengths,reverse", TORCH_CASES,
                         ids=[f"{c}-{s}-{'len' if l else 'full'}-{'rev' if r else 'fwd'}"
                              for c, s, l, r in TORCH_CASES])
def test_against_torch(cell, size, lengths, reverse):
    """Forward and autograd backward of torch.nn.LSTM/GRU (float64) against lstmc's reference.

    Reverse uses the reverse half of a bidirectional module (torch reverses each packed row within
    its own length, as lstmc does); only that half gets a cotangent, so the forward half's random
    weights do not matter."""
    T, B, I, H = SIZES[size]
    prog = lstmc.compile(cell, backend="reference", dtype="float64")
    rng = rng_for("torch", cell, size, lengths, reverse)
    params, x, state, dy, dstate = random_problem(prog, T, B, I, H, rng)
    states = prog.cell.states                      # ("h", "c") or ("h",)

    # lstmc
    y, fin, tape = prog.forward(x, params, state=state, lengths=lengths, reverse=reverse)
    dx, dstate0, dparams = prog.backward(tape, dy, dstate=dstate)

    # torch
    cls, mapping = TORCH_MAP[cell]
    ndir = 2 if reverse else 1
    d = ndir - 1                                    # the direction lstmc is compared with
    sfx = "_l0_reverse" if reverse else "_l0"
    torch.manual_seed(0)
    proj = {"proj_size": params["W_hr"].shape[0]} if cell == "lstmp" else {}   # random_problem's P
    mod = cls(I, H, num_layers=1, bias=True, bidirectional=reverse, dtype=torch.float64, **proj)
    with torch.no_grad():
        for tname, names in mapping.items():
            getattr(mod, tname + sfx).copy_(torch.from_numpy(np.concatenate([params[n] for n in names], 0)))
    xt = torch.tensor(x, requires_grad=True)
    init = {}
    for s in states:   # [num_directions, B, H]; direction 1 of a bidirectional module is the reverse one
        full = np.stack([rng.uniform(-1, 1, size=state[s].shape), state[s]]) if reverse else state[s][None]
        init[s] = torch.tensor(full, requires_grad=True)
    hx = (init["h"], init["c"]) if cell != "gru" else init["h"]
    if lengths is None:
        yt, fin_t = mod(xt, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
        yp, fin_t = mod(packed, hx)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, total_length=T)
    fin_t = dict(zip(states, fin_t if cell != "gru" else (fin_t,)))
    Hy = y.shape[2]                                 # the output's size (P for lstmp)
    yt = yt[:, :, d * Hy:(d + 1) * Hy]
    loss = (yt * torch.from_numpy(dy)).sum()
    for s in states:
        loss = loss + (fin_t[s][d] * torch.from_numpy(dstate[s])).sum()
    loss.backward()

    fwd = {"y": (y, yt.detach().numpy())}
    fwd.update({f"final {s}": (fin[s], fin_t[s][d].detach().numpy()) for s in states})
    check_all(fwd, TORCH_FWD_TOL, f"{cell} forward vs torch")

    bwd = {"dx": (dx, xt.grad.numpy())}
    bwd.update({f"d{s}0": (dstate0[s], init[s].grad[d].numpy()) for s in states})
    for tname, names in mapping.items():
        g = getattr(mod, tname + sfx).grad.numpy()
        rows = g.shape[0] // len(names)             # H per gate; weight_hr whole
        for j, n in enumerate(names):
            bwd[f"d{n}"] = (dparams[n], g[j * rows:(j + 1) * rows])
    assert set(dparams) == {n for names in mapping.values() for n in names}, "a parameter is not compared"
    check_all(bwd, TORCH_BWD_TOL, f"{cell} backward vs torch autograd")


# ===================================================================== ONNX LSTM / GRU node helpers

# Per cell: the ONNX op, W and R as lstmc names in ONNX gate order (None = a gate ONNX computes but
# the cell does not have: filled with random values that must not matter), the bias as
# (Wb, Rb) pairs per gate (the same name twice = the cell has one bias, split randomly between Wb and
# Rb since ONNX adds them), peepholes, and node attributes.
ONNX_MAP = {
    "lstm": dict(op="LSTM",
                 W=["W_i", "W_o", "W_f", "W_g"], R=["U_i", "U_o", "U_f", "U_g"],
                 B=[("b_ii", "b_hi"), ("b_io", "b_ho"), ("b_if", "b_hf"), ("b_ig", "b_hg")]),
    "peephole_lstm": dict(op="LSTM",
                          W=["W_i", "W_o", "W_f", "W_g"], R=["U_i", "U_o", "U_f", "U_g"],
                          B=[("b_i", "b_i"), ("b_o", "b_o"), ("b_f", "b_f"), ("b_g", "b_g")],
                          P=["p_i", "p_o", "p_f"]),
    "cifg_lstm": dict(op="LSTM",
                      W=["W_i", "W_o", None, "W_g"], R=["U_i", "U_o", None, "U_g"],
                      B=[("b_i", "b_i"), ("b_o", "b_o"), None, ("b_g", "b_g")],
                      attrs=dict(input_forget=1)),
    "gru_v1": dict(op="GRU",
                   W=["W_z", "W_r", "W_n"], R=["U_z", "U_r", "U_n"],
                   B=[("b_z", "b_z"), ("b_r", "b_r"), ("b_n", "b_n")],
                   attrs=dict(linear_before_reset=0)),
    "gru": dict(op="GRU",
                W=["W_z", "W_r", "W_n"], R=["U_z", "U_r", "U_n"],
                B=[("b_iz", "b_hz"), ("b_ir", "b_hr"), ("b_in", "b_hn")],
                attrs=dict(linear_before_reset=1)),
}

ONNX_OPSET = 14          # LSTM-14 / GRU-14 (adds `layout`); run by every ORT >= 1.8
ONNX_IR_VERSION = 8      # what opset 14 shipped with; every ORT in range loads it


def onnx_inputs(cell, params, x, state, lengths, rng, dtype):
    """Feeds for an ONNX node computing `cell` with lstmc's `params`."""
    spec = ONNX_MAP[cell]
    H = next(iter(state.values())).shape[1]
    I = x.shape[2]

    def rows(names, cols):
        return np.concatenate([params[n] if n else rng.uniform(-3, 3, size=(H, cols)) for n in names], 0)

    wb, rb = [], []
    for pair in spec["B"]:
        if pair is None:
            wb.append(rng.uniform(-3, 3, size=H))
            rb.append(rng.uniform(-3, 3, size=H))
        elif pair[0] == pair[1]:
            r = rng.uniform(-0.5, 0.5, size=H)
            wb.append(params[pair[0]] - r)
            rb.append(r)
        else:
            wb.append(params[pair[0]])
            rb.append(params[pair[1]])
    feeds = {
        "X": x,
        "W": rows(spec["W"], I)[None],
        "R": rows(spec["R"], H)[None],
        "B": np.concatenate(wb + rb)[None],
        "initial_h": state["h"][None],
    }
    if spec["op"] == "LSTM":
        feeds["initial_c"] = state["c"][None]
        feeds["P"] = (np.concatenate([params[n] for n in spec["P"]]) if "P" in spec
                      else np.zeros(3 * H))[None]
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    return {k: (v.astype(dtype) if k != "sequence_lens" else v) for k, v in feeds.items()}


def onnx_model(cell, feeds, direction, elem_type):
    """A one-node model whose inputs are exactly `feeds` (shapes included)."""
    spec = ONNX_MAP[cell]
    T, B, _ = feeds["X"].shape
    H = feeds["R"].shape[-1]
    with_lengths = "sequence_lens" in feeds
    lstm = spec["op"] == "LSTM"
    names = ["X", "W", "R", "B", "sequence_lens" if with_lengths else "", "initial_h"]
    if lstm:
        names += ["initial_c", "P"]
    outs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    node = helper.make_node(spec["op"], names, outs, hidden_size=H, direction=direction,
                            **spec.get("attrs", {}))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else elem_type,
                                            feeds[n].shape)
              for n in names if n]
    out_shapes = {"Y": (T, 1, B, H), "Y_h": (1, B, H), "Y_c": (1, B, H)}
    outputs = [helper.make_tensor_value_info(n, elem_type, out_shapes[n]) for n in outs]
    graph = helper.make_graph([node], f"{cell}_{direction}", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def onnx_outputs(cell, outs):
    """Y [T, 1, B, H] -> [T, B, H]; Y_h / Y_c [1, B, H] -> {state: [B, H]}."""
    fin = {"h": outs[1][0]}
    if ONNX_MAP[cell]["op"] == "LSTM":
        fin["c"] = outs[2][0]
    return outs[0][:, 0], fin


# ======================================================================== 2. onnx.reference (float64)

ONNX_REF_CELLS = ("lstm", "peephole_lstm", "gru_v1", "gru")
ONNX_REF_CASES = [(cell, size, direction)
                  for cell in ONNX_REF_CELLS
                  for size in ("std", "b1", "t1")
                  for direction in ("forward", "reverse")]
ONNX_REF_TOL = 1e-10   # both float64; only summation order differs (observed ~1e-15)


@pytest.mark.parametrize("cell,size,direction", ONNX_REF_CASES,
                         ids=[f"{c}-{s}-{d}" for c, s, d in ONNX_REF_CASES])
def test_against_onnx_reference(cell, size, direction):
    from onnx.reference import ReferenceEvaluator

    T, B, I, H = SIZES[size]
    prog = lstmc.compile(cell, backend="reference", dtype="float64")
    rng = rng_for("onnx-ref", cell, size, direction)
    params, x, state, _, _ = random_problem(prog, T, B, I, H, rng)
    y, fin, _ = prog.forward(x, params, state=state, reverse=direction == "reverse", need_tape=False)

    feeds = onnx_inputs(cell, params, x, state, None, rng, np.float64)
    model = onnx_model(cell, feeds, direction, elem_type=TensorProto.DOUBLE)
    y_o, fin_o = onnx_outputs(cell, ReferenceEvaluator(model).run(None, feeds))
    pairs = {"Y": (y, y_o)}
    pairs.update({f"Y_{s}": (fin[s], fin_o[s]) for s in prog.cell.states})
    check_all(pairs, ONNX_REF_TOL, f"{cell} vs onnx.reference ({direction})")


# ============================================================================ 3. ONNX Runtime (float32)

# ORT's CPU LSTM and GRU kernels are float32 only ("LSTM operator does not support double yet"), so
# lstmc runs in float64 on the float32-rounded inputs and the difference is ORT's float32 arithmetic
# (and its MLAS sigmoid/tanh approximations): values are O(1), float32 eps is 6e-8, and rounding
# accumulates over T steps and I+H-term dot products; errors observed are ~1e-7, and 1e-5 still
# catches any mapping or semantic mistake (those are O(0.1)).
ORT_TOL = 1e-5

ORT_SIZES = {"std": (5, 3, 4, 7), "len": (5, 4, 4, 7)}
ORT_LENGTHS = [2, 5, 0, 1]      # partial, full, empty, single step
ORT_CASES = [
    ("cifg_lstm", "std", None, "forward"),
    ("cifg_lstm", "std", None, "reverse"),
    ("cifg_lstm", "len", ORT_LENGTHS, "forward"),
    ("lstm", "len", ORT_LENGTHS, "forward"),
    ("lstm", "len", ORT_LENGTHS, "reverse"),
    ("peephole_lstm", "len", ORT_LENGTHS, "forward"),
    ("peephole_lstm", "len", ORT_LENGTHS, "reverse"),
    ("gru_v1", "len", ORT_LENGTHS, "forward"),
    ("gru_v1", "len", ORT_LENGTHS, "reverse"),
    ("gru", "len", ORT_LENGTHS, "forward"),
    ("gru", "len", ORT_LENGTHS, "reverse"),
]


@pytest.mark.parametrize("cell,size,lengths,direction", ORT_CASES,
                         ids=[f"{c}-{'len' if l else 'full'}-{d}" for c, s, l, d in ORT_CASES])
def test_against_onnxruntime(cell, size, lengths, direction):
    ort = pytest.importorskip("onnxruntime")
    T, B, I, H = ORT_SIZES[size]
    prog = lstmc.compile(cell, backend="reference", dtype="float64")
    rng = rng_for("ort", cell, size, lengths, direction)
    params, x, state, _, _ = random_problem(prog, T, B, I, H, rng)
    # Round every input to float32 first, so both sides see the same numbers.
    r32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    params = {k: r32(v) for k, v in params.items()}
    x, state = r32(x), {s: r32(v) for s, v in state.items()}
    y, fin, _ = prog.forward(x, params, state=state, lengths=lengths, reverse=direction == "reverse",
                             need_tape=False)

    feeds = onnx_inputs(cell, params, x, state, lengths, rng, np.float32)
    model = onnx_model(cell, feeds, direction, elem_type=TensorProto.FLOAT)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_o, fin_o = onnx_outputs(cell, sess.run(None, feeds))
    # A length-0 row: lstmc returns its initial state (its documented contract), while ORT 1.32
    # writes zeros to Y_h / Y_c for that row even when initial_h / initial_c are given (the ONNX
    # spec does not say). That is a convention difference, not an error on either side: check
    # lstmc's rule exactly and compare the other rows with ORT.
    L = full_lengths(lengths, T, B)
    rows = L > 0
    pairs = {"Y": (y, y_o)}
    pairs.update({f"Y_{s}": (fin[s][rows], fin_o[s][rows]) for s in prog.cell.states})
    check_all(pairs, ORT_TOL, f"{cell} vs onnxruntime float32 ({direction}, lengths={lengths})")
    for s in prog.cell.states:
        np.testing.assert_array_equal(fin[s][~rows], state[s][~rows])
    # Outputs past a row's length are exactly zero on both sides.
    pad = np.arange(T)[:, None] >= L[None, :]
    assert not np.any(y[pad]) and not np.any(y_o[pad])


# ===================================================================== 4. central finite differences

FD_EPS = 1e-6
# Central differences have truncation error ~eps^2 * |L'''| ~ 1e-12 and rounding error
# ~ 1e-16 * |L| / eps ~ 1e-10 * |L| with |L| = O(10) here, so a correct gradient agrees to ~1e-9;
# the bar below is 1e-6 (relative for entries larger than 1), far above that noise and far below any
# real derivative mistake (a wrong term is O(0.01) or more).
FD_ATOL = 1e-6
FD_RTOL = 1e-6
FD_SAMPLES = 20   # entries per array; arrays with fewer entries are checked entirely

FD_VARIANTS = [
    ("std", None, False),
    ("std", None, True),
    ("std", [5, 0, 3], False),   # full, empty, partial
    ("std", [2, 5, 0], True),
    ("t1b1", None, False),
    ("b1", [4], True),
]
FD_CASES = [(cell, *v) for cell in lstmc.builtin_cells() for v in FD_VARIANTS]


@pytest.mark.parametrize("cell,size,lengths,reverse", FD_CASES,
                         ids=[f"{c}-{s}-{'len' if l else 'full'}-{'rev' if r else 'fwd'}"
                              for c, s, l, r in FD_CASES])
def test_finite_differences(cell, size, lengths, reverse):
    """d/dθ of L = sum(y * dy) + sum_s sum(final_s * dstate_s), lstmc backward vs central differences."""
    T, B, I, H = SIZES[size]
    prog = lstmc.compile(cell, backend="reference", dtype="float64")
    rng = rng_for("fd", cell, size, lengths, reverse)
    params, x, state, dy, dstate = random_problem(prog, T, B, I, H, rng)

    y, fin, tape = prog.forward(x, params, state=state, lengths=lengths, reverse=reverse)
    dx, dstate0, dparams = prog.backward(tape, dy, dstate=dstate)

    # The inputs as one flat dict; perturbing an entry in place then restoring it leaves them intact.
    arrays = {"x": x, **{f"state {s}": state[s] for s in state}, **{f"param {p}": params[p] for p in params}}
    grads = {"x": dx, **{f"state {s}": dstate0[s] for s in state}, **{f"param {p}": dparams[p] for p in params}}
    assert set(dparams) == set(params)

    def loss():
        y, fin, _ = prog.forward(x, params, state=state, lengths=lengths, reverse=reverse, need_tape=False)
        return float(np.sum(y * dy) + sum(np.sum(fin[s] * dstate[s]) for s in fin))

    failures = []

    def compare(what, an, fd):
        if not abs(fd - an) <= FD_ATOL + FD_RTOL * abs(fd):
            failures.append(f"{what}: backward {an:.9g} vs fd {fd:.9g}")

    for name, a in arrays.items():
        g = np.asarray(grads[name])
        assert g.shape == a.shape, f"{name}: gradient shape {g.shape} vs {a.shape}"
        flat = a.reshape(-1)   # a view: writes go to the array the forward reads
        assert np.shares_memory(flat, a)
        # Sampled entries, one at a time ...
        idx = np.arange(flat.size) if flat.size <= FD_SAMPLES else rng.choice(flat.size, FD_SAMPLES, replace=False)
        for k in idx:
            old = flat[k]
            flat[k] = old + FD_EPS
            lp = loss()
            flat[k] = old - FD_EPS
            lm = loss()
            flat[k] = old
            compare(f"{name}[{np.unravel_index(k, a.shape)}]", g.reshape(-1)[k], (lp - lm) / (2 * FD_EPS))
        # ... and one random unit direction over the whole array, so no entry goes unchecked.
        v = rng.normal(size=a.shape)
        v /= np.linalg.norm(v)
        orig = a.copy()
        a += FD_EPS * v
        lp = loss()
        a[...] = orig - FD_EPS * v
        lm = loss()
        a[...] = orig
        compare(f"{name} along a random direction", float(np.sum(g * v)), (lp - lm) / (2 * FD_EPS))
    assert not failures, f"{cell}: {len(failures)} gradient entries off:\n  " + "\n  ".join(failures[:20])


def test_fd_case_table_covers_every_builtin_cell():
    assert {c for c, *_ in FD_CASES} == set(lstmc.builtin_cells())
