"""What every backend shares: the `CompiledCell` API, argument checking (each error names the
argument, what was expected and the fix), parameter initialisation and the `Tape`.

The sequence semantics (initial state, `lengths`, `reverse`) and the code around the time loop
are in sequence.py; the decisions every backend follows (rows past their length, the dy seed,
shared gradient sums) are in the lowered Program (lstmc/program.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..lower import Program

DTYPES = {"float64": np.float64, "float32": np.float32}


def check_dtype(dtype) -> str:
    """The canonical name ('float32', 'float64') of a dtype lstmc compiles: given as a name, a NumPy
    dtype or scalar type, or a torch dtype; anything else is a ValueError saying what is supported."""
    name = None
    if isinstance(dtype, str):
        name = dtype
        if dtype not in DTYPES:
            try:
                name = np.dtype(dtype).name    # NumPy's spellings of the same types: 'f4', 'double'
            except TypeError:
                pass
    elif type(dtype).__module__ == "torch":
        name = str(dtype).replace("torch.", "")
    elif dtype is not None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (the triton backend also takes bfloat16 "
                         f"and float16 storage), got {dtype!r}: lstmc compiles floating-point kernels only; "
                         f"compile for float32 or float64 and convert the data to that dtype")
    return name


class BackendUnavailable(RuntimeError):
    """A backend that this machine cannot run (the triton backend without a CUDA GPU): an expected
    condition, which the command line reports in one line rather than with a traceback."""


@dataclass
class Tape:
    """What backward needs from a forward call (arrays of the backend's library)."""
    x: object
    states: dict           # state -> [T+1, B, H]: the state before step t at index t
    saved: dict            # name -> [T, B, H]
    lengths: np.ndarray    # [B] int64
    mask: object           # [T, B, 1] bool (None when every row is full length)
    reverse: bool
    rev_idx: object
    packed: dict           # packed weights used by forward (Wcat, Ucat_g, vectors)
    shapes: tuple          # (T, B, I, H)
    extra: dict = field(default_factory=dict)
    owner: object = None   # the CompiledCell whose forward made this tape (backward refuses others')
    inputs: dict = field(default_factory=dict)   # extra input -> [T, B(, n)] in loop order, padding cleared
    vmats: dict = field(default_factory=dict)    # extra input u -> its matrices V stacked [k*H, K]
    dims: dict = field(default_factory=dict)     # size name -> number ({"H": H, "P": P}; {} means H only)


class Gradients(tuple):
    """What backward returns: the triple (dx, dstate0, dparams), so `dx, dstate0, dparams =
    prog.backward(tape, dy)` works as it always has, and, as the attribute `dinputs`, the gradients
    of the extra inputs (`input dt`, `input keep[H]`, `input u[K]`): {name: array of the input's
    shape ([T, B] or [T, B, n]), at the original time positions, 0 past each row's length}
    ({} for a cell without extra inputs)."""

    def __new__(cls, dx, dstate, dparams, dinputs=None):
        g = super().__new__(cls, (dx, dstate, dparams))
        g.dinputs = dict(dinputs or {})
        return g

    def __getnewargs__(self):          # pickle and copy rebuild it with its dinputs
        return (*self, self.dinputs)

    dx = property(lambda self: self[0])
    dstate = property(lambda self: self[1])
    dparams = property(lambda self: self[2])


class CompiledCell:
    """A cell compiled for one backend and dtype. The API every backend implements (README, "Python API")."""

    backend = "?"

    def __init__(self, program: Program, dtype: str = "float64", key: str = ""):
        self.program = program
        self.key = key
        self.cell = program.cell
        if not self.cell.params:
            # forward reads hidden_size off the parameters: without any, it could not (numba's warm-up
            # failed with a TypeError, forward with "hidden_size=None")
            raise ValueError(f"cell '{self.cell.name}' has no parameters, so hidden_size cannot be read off them at "
                             f"run time (and there is nothing to learn): use a parameter in an equation, e.g. "
                             f"{self.cell.output}' = tanh(W @ x + U @ {self.cell.output} + b)")
        self.dtype = check_dtype(dtype)
        self.np_dtype = np.dtype(DTYPES[self.dtype])

    def __repr__(self):
        return f"<{type(self).__name__} cell={self.cell.name!r} backend={self.backend!r} dtype={self.dtype}>"

    # parameters -----------------------------------------------------------------------------
    def param_shapes(self, input_size: int, hidden_size: int, sizes: dict | None = None) -> dict[str, tuple[int, ...]]:
        """{parameter: shape}; `sizes` gives the cell's `size` lines their values ({"K": 8})."""
        self._check_sizes(sizes)
        return {p: self.cell.param_shape(p, input_size, hidden_size, sizes) for p in self.cell.params}

    def input_shapes(self, T: int, B: int, hidden_size: int, sizes: dict | None = None) -> dict[str, tuple]:
        """{extra input: the shape forward's `inputs` must have}: [T, B], [T, B, H] or [T, B, K]."""
        self._check_sizes(sizes)
        out = {}
        for u in self.cell.inputs:
            n = self.cell.input_size_of(u, hidden_size, sizes)
            out[u] = (T, B) if n is None else (T, B, n)
        return out

    def _check_sizes(self, sizes) -> None:
        if sizes is None:
            return
        if not isinstance(sizes, dict):
            raise ValueError(f"sizes must be a dict {{size name: int}}, got {self._describe(sizes)}")
        bad = [k for k in sizes if k not in self.cell.sizes]
        if bad:
            have = (f"its sizes are {', '.join(self.cell.sizes)}" if self.cell.sizes
                    else "it declares none (no `size` line)")
            raise ValueError(f"sizes has unknown entries {bad} for cell '{self.cell.name}': {have}")

    def init_params(self, input_size: int, hidden_size: int, seed: int = 0,
                    sizes: dict | None = None) -> dict[str, np.ndarray]:
        """Parameters initialised from the cell's `init` lines; everything else U(-1/sqrt(H), 1/sqrt(H)).
        `sizes`: the values of the cell's `size` lines ({"K": 8}), needed when it has any."""
        for nm, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(hidden_size)
        out = {}
        for p, shape in self.param_shapes(input_size, hidden_size, sizes).items():
            how = self.cell.inits.get(p, "uniform")
            out[p] = init_array(how, shape, k, rng).astype(self.np_dtype)
        return out

    # argument checking ----------------------------------------------------------------------
    def _sizes(self, params, Ix: int | None = None) -> tuple[int | None, int | None]:
        """(input_size, hidden_size) by majority over the parameters' shapes (each W votes its rows for H
        and its columns for I, each U both dimensions for H, each b its length for H; x's feature count
        `Ix` votes for I, after the W's, so a lone W it disagrees with wins the tie): one parameter of
        the wrong shape is then the one blamed. H is None when no parameter has a usable shape; I is
        Ix (or -1) for a cell without input weights."""
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict {{name: array}} (from init_params), got "
                             f"{self._describe(params)}")
        missing = [p for p in self.cell.params if p not in params]
        extra = [p for p in params if p not in self.cell.params]
        if missing or extra:
            msg = []
            if missing:
                msg.append(f"missing {', '.join(missing)}")
            if extra:
                msg.append(f"unexpected {', '.join(map(str, extra))}")
            raise ValueError(f"params for cell '{self.cell.name}': {'; '.join(msg)} "
                             f"(expected: {', '.join(self.cell.params)})")
        votes_h: dict[int, int] = {}
        votes_i: dict[int, int] = {}

        def vote(votes, n):
            votes[n] = votes.get(n, 0) + 1

        for p, kind in self.cell.params.items():
            shp = self._shape_of(params[p])
            if shp is None:
                continue
            if self.cell.sized and kind != "V":       # states of other sizes: each dimension by its name
                dims = self.cell.param_sizes[p]
                if len(shp) == len(dims):
                    for d, n in zip(dims, shp):
                        if d in ("H", "I"):
                            vote(votes_h if d == "H" else votes_i, n)
                continue
            if kind == "b" and len(shp) == 1:
                vote(votes_h, shp[0])
            elif kind == "U" and len(shp) == 2 and self.cell.heads == 1:
                vote(votes_h, shp[0])
                vote(votes_h, shp[1])
            elif kind == "U" and len(shp) == 3 and shp[0] == self.cell.heads:   # heads N: [N, H/N, H/N]
                vote(votes_h, shp[0] * shp[1])
                vote(votes_h, shp[0] * shp[2])
            elif kind == "W" and len(shp) == 2:
                vote(votes_h, shp[0])
                vote(votes_i, shp[1])
            elif kind == "V" and len(shp) == 2:
                vote(votes_h, shp[0])
        has_w = "W" in self.cell.params.values()
        if Ix is not None and votes_i:
            vote(votes_i, Ix)
        # max() keeps the first of equal counts: insertion order, i.e. the cell's parameter order
        H = max(votes_h, key=votes_h.get) if votes_h else None
        if votes_i:
            I = max(votes_i, key=votes_i.get)
        else:   # every input weight is malformed (each will say so), or a cell without input products
            I = Ix if Ix is not None else (None if has_w else -1)   # still takes x: its size comes from x
        return I, H

    @staticmethod
    def _describe(a) -> str:
        """What a value is, for messages: 'None', 'a list', 'a torch.Tensor'."""
        if a is None:
            return "None"
        t = type(a)
        mod = t.__module__.split(".")[0]
        nm = t.__name__ if mod == "builtins" else f"{'np' if mod == 'numpy' else mod}.{t.__name__}"
        return f"{'an' if nm[0] in 'aeiouAEIOU' else 'a'} {nm}"

    @staticmethod
    def _shape_of(a):
        """The shape of a NumPy array or tensor as a tuple of ints; None for anything else."""
        if isinstance(a, np.ndarray):
            return a.shape
        import sys

        torch = sys.modules.get("torch")     # a tensor can only exist once torch is imported
        return tuple(a.shape) if torch is not None and isinstance(a, torch.Tensor) else None

    def _check_array(self, name, a, shape, why=""):
        """`a` must be an array this backend takes (NumPy for reference and numba; NumPy or torch for torch
        and triton), of this program's dtype and, unless `shape` is None, of `shape` (`why`, a string or
        a function making one: where that shape comes from, for the message). Every failure is a
        ValueError naming `name` and the fix. The common case (a NumPy array of the right dtype and
        shape) costs ~1 us: it runs for every argument of every call."""
        is_np = isinstance(a, np.ndarray)
        if is_np and a.dtype.type is DTYPES.get(self.dtype) and a.dtype.isnative:
            if shape is None or a.shape == tuple(shape):
                return
        want = self.dtype
        got = self._shape_of(a)
        is_torch = not is_np and got is not None
        of = "" if shape is None else f" of shape {tuple(shape)}"
        if self.backend in ("reference", "numba"):
            if not is_np:
                fix = (f"pass {name}.detach().cpu().numpy(), or compile for backend='torch', which takes tensors"
                       if is_torch else f"convert it with np.asarray({name}, dtype=np.{want})")
                raise ValueError(f"{name} must be a NumPy array{of} ({want}) for the {self.backend} backend, "
                                 f"got {self._describe(a)}: {fix}")
        elif not (is_np or is_torch):
            raise ValueError(f"{name} must be a torch.Tensor or NumPy array{of} ({want}), got {self._describe(a)}: "
                             f"convert it with torch.as_tensor({name}, dtype=torch.{want})")
        dt = a.dtype
        dname = str(dt).replace("torch.", "")
        if dname != want:
            plain = dname
            if is_np and not dt.isnative:
                plain = dt.newbyteorder("=").name
                dname = f"{dt.str} ({plain} in non-native byte order)"
            if not is_np:
                conv = f"{name}.to(torch.{want})"
            elif want == "bfloat16":
                conv = f"{name}.astype(np.float32) (float32 arrays are rounded to bfloat16 on the way in)"
            else:
                conv = f"{name}.astype(np.{want})"
            supported = ("float32", "float64") + (("float16", "bfloat16") if self.backend == "triton" else ())
            alt = ""
            if plain in supported and plain != want and (not is_np or dt.isnative):
                alt = f", or compile the cell for {plain}: lstmc.compile(cell, '{self.backend}', dtype='{plain}')"
            raise ValueError(f"{name} has dtype {dname}, but this {self.backend} program was compiled for {want}: "
                             f"convert it with {conv}{alt}")
        if shape is not None and got != tuple(shape):
            raise ValueError(f"{name} has shape {got}, expected {tuple(shape)}{why() if callable(why) else why}")

    def check_inputs(self, x, params, state, lengths, inputs=None):
        """Validate every argument; return (T, B, I, H, lengths as int64 array). Each error names the
        argument, what was expected (shapes derived from the cell: `param_shapes`) and the fix."""
        if inputs is not None and not isinstance(inputs, dict):
            raise ValueError(f"inputs must be a dict {{input name: array}}, got {self._describe(inputs)}")
        if self.cell.inputs or inputs:
            self._check_input_names(inputs or {})
        self._check_array("x", x, None)
        xs = self._shape_of(x)
        if len(xs) != 3:
            hint = (": for one sequence [T, input_size] add a batch axis, x[:, None, :]" if len(xs) == 2 else "")
            raise ValueError(f"x must be a 3-D array [T, B, input_size] (time, batch, features), got shape {xs}{hint}")
        T, B, Ix = xs
        if T < 1 or B < 1:
            raise ValueError(f"x has shape {xs}: T and B must be at least 1 (x is [T, B, input_size]: "
                             f"{'an empty sequence' if T < 1 else 'an empty batch'} has nothing to run)")
        I, H = self._sizes(params, Ix)
        sizes = self._sizes_from(params, inputs or {}, H)
        dims = {"W": "[hidden_size, input_size]", "b": "[hidden_size]", "V": "[hidden_size, K]",
                "U": "[hidden_size, hidden_size]" if self.cell.heads == 1 else
                     f"[{self.cell.heads}, hidden_size/{self.cell.heads}, hidden_size/{self.cell.heads}] (heads)"}
        for p, kind in self.cell.params.items():
            name = f"params['{p}']"
            if H is None or (kind == "W" and I is None):
                self._check_array(name, params[p], None)
                raise ValueError(f"{name} has shape {self._shape_of(params[p])}, expected {dims[kind]}, and no "
                                 f"other parameter has the shape its kind needs to tell the sizes: make the "
                                 f"parameters with init_params(input_size, hidden_size) (shapes: "
                                 f"param_shapes(input_size, hidden_size))")
            if kind == "V":
                u = self.cell.param_inputs[p]
                n = self.cell.input_size_of(u, H, sizes)
                self._check_array(name, params[p], (H, n), lambda p=p, u=u, n=n: (
                    f": {p} is [hidden_size, {self.cell.inputs[u]}] (the cell's {p} @ {u}), and the other "
                    f"parameters give hidden_size={H}, " + (f"{self.cell.inputs[u]}={n}" if self.cell.inputs[u] != "H"
                                                             else "")))
                continue
            if self.cell.sized:
                self._check_array(name, params[p], self.cell.param_shape(p, I, H, sizes), lambda p=p: (
                    f": {p} is {self.cell.param_dims(p)}, and x and the other parameters give "
                    + ", ".join(f"{k}={v}" for k, v in {"H": H, "I": I, **sizes}.items())))
                continue
            self._check_array(name, params[p], self.cell.param_shape(p, I, H), lambda p=p, kind=kind: (
                f": {p} is {dims[kind]}, and " + (f"x and the other parameters give hidden_size={H}, input_size={I}"
                                                  if kind == "W" else f"the other parameters give hidden_size={H}")))
        if I != Ix:
            w = next(p for p, k in self.cell.params.items() if k == "W" and self._shape_of(params[p])[1] == I)
            raise ValueError(f"x has shape {xs}, expected {(T, B, I)}: its last dimension is input_size, and "
                             f"params['{w}'] of shape {self._shape_of(params[w])} (the cell's W @ x) takes "
                             f"input_size={I}; pass x with {I} features, or parameters for input_size={Ix} "
                             f"(init_params({Ix}, {H}))")
        if state is not None:
            if not isinstance(state, dict):
                raise ValueError(f"state must be a dict {{state name: [B, H] array}} for states "
                                 f"{', '.join(self.cell.states)}, got {self._describe(state)}")
            bad = [k for k in state if k not in self.cell.states]
            if bad:
                raise ValueError(f"state has unknown entries {bad}; the states of cell '{self.cell.name}' are "
                                 f"{', '.join(self.cell.states)} (leave one out for zeros)")
            for s, v in state.items():
                z = self.cell.state_size(s)
                n = H if z == "H" else self.cell.size_value(z, I, H, sizes)
                self._check_array(f"state['{s}']", v, (B, n),
                                  f" = [batch, hidden_size]: B={B} from x, hidden_size={H} from params" if z == "H"
                                  else f" = [batch, {z}] (`state {s}[{z}]`): B={B} from x, {z}={n} from params")
        for u, shape in self.input_shapes(T, B, H, sizes).items():
            size = self.cell.inputs[u]
            self._check_array(f"inputs['{u}']", inputs[u], shape, (
                f" = [T, B] (`input {u}`: one number per batch row and step)" if size is None else
                f" = [T, B, hidden_size] (`input {u}[H]`)" if size == "H" else
                f" = [T, B, {size}] (`input {u}[{size}]`, {size}={shape[2]} from the parameters)")
                + f"; T={T} and B={B} from x")
        lengths = check_lengths(lengths, T, B)
        return T, B, I, H, lengths

    def _check_input_names(self, inputs: dict) -> None:
        cell = self.cell
        if not cell.inputs:
            raise ValueError(f"inputs has entries {list(inputs)}, but cell '{cell.name}' has no extra inputs "
                             f"(declare them in the cell: `input dt`, `input keep[H]`)")
        missing = [u for u in cell.inputs if u not in inputs]
        if missing:
            u = missing[0]
            size = cell.inputs[u]
            shape = "[T, B]" if size is None else f"[T, B, {size}]"
            raise ValueError(f"inputs is missing '{u}': cell '{cell.name}' declares `input {u}"
                             f"{'' if size is None else f'[{size}]'}`; pass inputs={{'{u}': array {shape}, ...}} "
                             f"(its inputs: {', '.join(cell.inputs)})")
        bad = [k for k in inputs if k not in cell.inputs]
        if bad:
            raise ValueError(f"inputs has unknown entries {bad}; the inputs of cell '{cell.name}' are "
                             f"{', '.join(cell.inputs)}{did_you_mean_any(bad[0], cell.inputs)}")

    def dims(self, params: dict, inputs: dict | None, H: int) -> dict:
        """{size name: number} for a call whose arguments check_inputs accepted: H and each declared
        size (docs/design.md, "Sizes")."""
        return self.program.extents(H, self._sizes_from(params, inputs or {}, H))

    def _sizes_from(self, params: dict, inputs: dict, H) -> dict:
        """The values of the cell's `size` lines, read off the parameters (the first V of an input
        sized K with two dimensions gives K, the first parameter with a dimension of a state's size
        gives that size), else off the input itself ([T, B, K])."""
        sizes = {}
        if self.cell.sized:
            for p, dims in self.cell.param_sizes.items():
                shp = self._shape_of(params[p])
                if shp is None or len(shp) != len(dims) or self.cell.params[p] == "V":
                    continue
                for d, n in zip(dims, shp):
                    if d not in ("H", "I") and d not in sizes:
                        sizes[d] = n
        for p, u in self.cell.param_inputs.items():
            k = self.cell.inputs[u]
            shp = self._shape_of(params[p])
            if k not in (None, "H") and k not in sizes and shp is not None and len(shp) == 2:
                sizes[k] = shp[1]
        for u, k in self.cell.inputs.items():
            shp = self._shape_of(inputs.get(u))
            if k not in (None, "H") and k not in sizes and shp is not None and len(shp) == 3:
                sizes[k] = shp[2]
        return sizes

    def check_backward(self, tape, dy, dstate) -> None:
        """Validate backward's arguments against the tape of the forward call."""
        if tape is None:
            raise ValueError("tape must be the third value returned by forward(..., need_tape=True), got None: "
                             "forward(..., need_tape=False) keeps no tape; call forward with need_tape=True (the "
                             "default) to run backward")
        if not isinstance(tape, Tape):
            raise ValueError(f"tape must be the third value returned by forward(..., need_tape=True), got "
                             f"{self._describe(tape)}")
        if tape.owner is not self:
            made = "no recorded program" if tape.owner is None else repr(tape.owner)
            same = (" (another compiled object of the same cell, backend and dtype: use the very object whose "
                    "forward made the tape)" if tape.owner is not None and repr(tape.owner) == repr(self) else "")
            raise ValueError(f"tape must come from this program's forward, but this tape was made by {made}"
                             f"{same}: pass it to that program's backward (this program is {self!r})")
        T, B, I, H = tape.shapes
        dims = tape.dims or {"H": H}
        out = self.cell.state_size(self.cell.output)
        self._check_array("dy", dy, (T, B, dims[out]), " = [T, B, hidden_size], the shape of forward's y" if out == "H"
                          else f" = [T, B, {out}], the shape of forward's y (the output state's size)")
        if dstate is not None:
            if not isinstance(dstate, dict):
                raise ValueError(f"dstate must be a dict {{state name: [B, H] array}} for states "
                                 f"{', '.join(self.cell.states)}, got {self._describe(dstate)}")
            for s, v in dstate.items():
                if s not in self.cell.states:
                    raise ValueError(f"dstate has unknown entry '{s}'; the states of cell '{self.cell.name}' are "
                                     f"{', '.join(self.cell.states)}")
                self._check_array(f"dstate['{s}']", v, (B, dims[self.cell.state_size(s)]),
                                  f" = [batch, {self.cell.state_size(s).replace('H', 'hidden_size')}], the shape of "
                                  f"forward's final state['{s}']")


def did_you_mean_any(word, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_flags(**flags) -> None:
    """reverse / need_tape must be booleans: a string such as "no" is truthy and would silently
    run the other way."""
    for name, v in flags.items():
        if not isinstance(v, (bool, np.bool_)) and not (isinstance(v, (int, np.integer)) and v in (0, 1)):
            raise ValueError(f"{name} must be True or False, got {v!r} ({type(v).__name__})")


def check_lengths(lengths, T: int, B: int, source: str = "x") -> np.ndarray:
    """`lengths` as an int64 array [B] of values in [0, T] (None: every row has length T), or a
    ValueError saying what is wrong with it. Takes sequences, NumPy arrays and tensors; whole floats
    (3.0) pass, fractions, booleans and anything else do not. `source`: what T and B were read from."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    want = f"a 1-D array of {B} integer{'s' if B != 1 else ''} in [0, T={T}], one per batch row"

    def show(a) -> str:
        v = a.ravel().tolist()
        return str(v[:8])[:-1] + ", ...]" if len(v) > 8 else str(v)

    if hasattr(lengths, "detach"):
        try:
            lengths = lengths.detach().cpu().numpy()
        except Exception as e:  # noqa: BLE001 - e.g. a meta tensor has no values to read
            raise ValueError(f"lengths must be {want}, but the tensor given (on {lengths.device}) cannot be read "
                             f"({type(e).__name__}: {e}): pass a CPU tensor or a list") from None
    if isinstance(lengths, (str, bytes, dict, set)):
        raise ValueError(f"lengths must be {want}, got {CompiledCell._describe(lengths)} {lengths!r:.60}")
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError) as e:
        raise ValueError(f"lengths must be {want}, got {lengths!r:.80} ({e})") from None
    if arr.ndim == 0:
        raise ValueError(f"lengths must be {want}, got the scalar {lengths!r:.40}"
                         + (f": pass [{lengths!r:.40}]" if B == 1 else ""))
    if arr.ndim != 1 or arr.shape[0] != B:
        raise ValueError(f"lengths must be {want} (B={B} from {source}), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "b":
            raise ValueError(f"lengths must be integers (a count of steps per batch row), got booleans {show(arr)}: "
                             f"for a [T, B] mask of valid steps pass mask.sum(0)")
        else:
            raise ValueError(f"lengths must be integers, got {show(arr)} (dtype {arr.dtype})")
    bad = np.flatnonzero((arr < 0) | (arr > T))
    if bad.size:
        raise ValueError(f"lengths must lie in [0, T={T}] (T from {source}), got {arr[bad[0]].item()} for batch row "
                         f"{bad[0]} (min {arr.min()}, max {arr.max()})")
    return arr.astype(np.int64)


def init_array(how, shape, k, rng) -> np.ndarray:
    if len(shape) == 3:      # a block-diagonal matrix of a cell with heads: each block on its own
        return np.stack([init_array(how, shape[1:], k, rng) for _ in range(shape[0])])
    if isinstance(how, float):
        return np.full(shape, how)
    if how == "zeros":
        return np.zeros(shape)
    if how == "ones":
        return np.ones(shape)
    if how == "uniform":
        return rng.uniform(-k, k, size=shape)
    if how == "normal":
        return rng.normal(0.0, k, size=shape)
    if how == "xavier":
        a = math.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-a, a, size=shape)
    if how == "orthogonal":
        rows, cols = shape
        flat = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat)
        q = q * np.sign(np.diag(r))
        return q if rows >= cols else q.T
    raise ValueError(f"unknown initialisation {how!r}")
