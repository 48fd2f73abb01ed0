"""`lstmc.nn.Recurrent`: an `nn.LSTM`/`nn.GRU`-style PyTorch module for any compiled cell.

    rnn = Recurrent("peephole_lstm", input_size, hidden_size, num_layers=2, bidirectional=True)
    output, state = rnn(input, state=None, lengths=None)     # like nn.LSTM
    rnn = Recurrent.from_torch(torch_lstm_or_gru)            # same numbers as the original
    rnn = Recurrent("examples/conditioned_lstm.cell", I, H, sizes={"K": 8})
    output, state = rnn(input, inputs={"w": w})              # a cell's extra per-step inputs

Its one job is to run compiled cells as torch modules: layers, directions, batch_first,
PackedSequence, inter-layer dropout, state layout and argument checking mirror nn.LSTM; each layer and
direction is one call of the cell's torch custom operator (lstmc/torch_ops.py: numba on CPU, triton
on CUDA; what torch.compile and torch.export record) or, on the torch and reference backends, one
`torch.autograd.Function` (lstmc/autograd.py); either way forward and backward are the compiled
program's (`prog.forward` / `prog.backward`), never autograd through the cell's math. docs/nn.md is
the manual.

Parameters live in one `nn.ParameterDict` per layer and direction, keyed by the cell's own parameter
names: `l0.W_i`, `l1_reverse.U_f`. `bias=False` drops the cell's biases (`bias_params`): per-unit
parameters that only ever enter the cell as a term of a sum; they are fixed at zero.

Backends are chosen per call from the input's device and dtype (`select_backend`): `auto` runs numba
on CPU, triton on CUDA when it imports and compiles the cell, torch otherwise.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .autograd import _CellFunction
from .backends.base import check_lengths
from .build import compile as _compile
from .build import load
from .interop import torch_builtin, torch_layer_weights
from .ir import walk
from .nn_inputs import check_sizes, input_layout, prepare_inputs
from .spec import Cell
from .nn_packed import pack_like, unpack
from .torch_ops import OP_BACKENDS, CellOps, cell_ops, registered_ops

__all__ = ["Recurrent", "bias_params", "select_backend", "BACKEND_CHOICES"]

BACKEND_CHOICES = ("auto", "numba", "triton", "torch", "reference")
_COMPILED_DTYPES = (torch.float32, torch.float64)
_NUMPY_BACKENDS = ("numba", "reference")      # take and return NumPy arrays; CPU only
_ADDITIVE = ("add", "sub")


# ------------------------------------------------------------------------------------- cell facts

def bias_params(cell) -> tuple[str, ...]:
    """The cell's biases: per-unit ([H]) parameters that enter the step only as a term of a sum.

    `W_i @ x + U_i @ h + b_i` makes b_i a bias; a peephole `p_i * c` or IndRNN's recurrent weight
    `u * h` is a factor, so it is not (and stays with `bias=False`). GRU's `r * (U_n @ h + b_hn)`:
    b_hn is a term of the inner sum, so it is a bias, as it is for torch.nn.GRU.
    """
    cell = load(cell)
    parents: dict[str, set] = {}
    for node in walk(list(cell.new.values())):
        for a in node.args:
            if a.op == "param":
                parents.setdefault(a.attr, set()).add(node.op)
    return tuple(p for p, kind in cell.params.items()
                 if kind == "b" and parents.get(p) and parents[p] <= set(_ADDITIVE))


# -------------------------------------------------------------------------------- backend choice

_triton_probe: dict = {}


def _triton_status(cell: Cell, dtype: str) -> tuple[bool, str]:
    """(usable, why not) for the triton backend on this cell and dtype; probed once per process."""
    key = (cell.source or repr(cell), cell.name, dtype)
    if key not in _triton_probe and torch.compiler.is_compiling():
        # no compiling inside a trace: the cell's operator compiles it when it first runs (and says
        # why if it cannot); run the module once eagerly to get the torch fallback instead
        return True, ""
    if key not in _triton_probe:
        try:
            import lstmc.backends.triton  # noqa: F401
        except ImportError as e:
            _triton_probe[key] = (False, f"lstmc.backends.triton does not import ({e})")
        else:
            try:
                _compile(cell, backend="triton", dtype=dtype)
                _triton_probe[key] = (True, "")
            except Exception as e:  # noqa: BLE001 - any failure means: fall back, and say why
                _triton_probe[key] = (False, f"the triton backend failed to compile cell '{cell.name}' "
                                             f"({type(e).__name__}: {e})")
                warnings.warn(f"lstmc.nn: {_triton_probe[key][1]}; using the torch backend on CUDA",
                              RuntimeWarning, stacklevel=3)
    return _triton_probe[key]


def select_backend(backend: str, device, dtype, cell=None) -> str:
    """The backend that runs a call on `device` with `dtype`, or an error saying why `backend` can't.

    auto: numba for CPU float32/float64; triton for CUDA when lstmc.backends.triton imports and
    compiles the cell (else torch); torch for any other device. A named backend is used as is or
    refused with the reason.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKEND_CHOICES))}, got {backend!r}")
    device = torch.device(device)
    dtype_name = str(dtype).replace("torch.", "")
    if dtype not in _COMPILED_DTYPES:
        raise TypeError(f"lstmc backends compile float32 and float64 kernels only, but the input and module are "
                        f"{dtype_name}" + (f" (backend {backend!r})" if backend != "auto" else "")
                        + ": convert both, e.g. module.float() and input.float()")
    if backend == "auto":
        if device.type == "cpu":
            return "numba"
        if device.type == "cuda" and cell is not None and _triton_status(load(cell), dtype_name)[0]:
            return "triton"
        return "torch"
    if backend in _NUMPY_BACKENDS and device.type != "cpu":
        raise RuntimeError(f"backend {backend!r} runs on CPU tensors only (it computes with NumPy), but the input "
                           f"is on {device}: use backend='auto' or 'torch', or move the module and input "
                           f"to the CPU")
    if backend == "triton":
        if device.type != "cuda":
            raise RuntimeError(f"backend 'triton' runs on CUDA tensors only, but the input is on {device}: use "
                               f"backend='auto' (numba on CPU) or move the module and input to a CUDA device")
        if cell is not None:
            ok, why = _triton_status(load(cell), dtype_name)
            if not ok:
                raise RuntimeError(f"backend 'triton' cannot run: {why}; use backend='auto' or 'torch'")
    return backend


_EAGER_ONLY = ("lstmc's torch and reference backends run eagerly only (a graph break; fullgraph=True fails): build "
               "the Recurrent with backend='auto', 'numba' (CPU) or 'triton' (CUDA), whose layers are PyTorch custom "
               "operators that torch.compile and torch.export trace")


@torch.compiler.disable(reason=_EAGER_ONLY)
def _eager_runner(module, backend: str, dtype):
    """The torch or reference backend's runner (compiling the cell on first use), outside what
    torch.compile traces."""
    return _Runner(module._program(backend, dtype), backend, module.cell, tuple(module.cell.params))


@torch.compiler.disable(reason=_EAGER_ONLY)
def _run_eager(runner, x, lengths, reverse: bool, s0, params, extra, grad: bool):
    """One layer and direction on the torch or reference backend: an autograd Function over the
    backend's own forward and backward, which torch.compile does not trace (a graph break)."""
    if grad:
        y, *fin = _CellFunction.apply(runner, lengths, reverse, x, *s0, *params, *extra)
        return y, fin
    y, fin, _ = runner.forward(x, lengths, reverse, s0, params, need_tape=False, inputs=extra)
    return y, fin


# ------------------------------------------------------------------------ one layer and direction

class _Runner:
    """A compiled program plus the conversions between torch tensors and its arrays."""

    def __init__(self, prog, backend: str, cell: Cell, names: tuple[str, ...]):
        self.prog = prog
        self.backend = backend
        self.numpy = backend in _NUMPY_BACKENDS
        self.states = cell.states
        self.names = names         # parameter order of the autograd Function's arguments
        self.inputs = tuple(cell.inputs)   # the extra inputs' order, after the parameters

    def arr(self, t: torch.Tensor):
        """A tensor as the backend takes it: a zero-copy NumPy view when it can be one."""
        t = t.detach()
        if not self.numpy:
            return t
        if not t.is_contiguous():
            t = t.contiguous()
        return t.numpy()

    @staticmethod
    def tensor(a, like: torch.Tensor) -> torch.Tensor:
        if isinstance(a, np.ndarray):
            return torch.from_numpy(a if a.flags.writeable else a.copy())
        return a.to(like.device) if a.device != like.device else a

    def forward(self, x, lengths, reverse, states, params, need_tape, inputs=()):
        S = {s: self.arr(v) for s, v in zip(self.states, states)}
        P = {n: self.arr(v) for n, v in zip(self.names, params)}
        U = {u: self.arr(v) for u, v in zip(self.inputs, inputs)} if self.inputs else None
        y, final, tape = self.prog.forward(self.arr(x), P, S, lengths=lengths, reverse=reverse, need_tape=need_tape,
                                           inputs=U)
        y = self.tensor(y, x)
        outs = [self.tensor(final[s], x) for s in self.states]
        if not self.numpy:  # a length-0 row can hand back the very tensor it was given
            ins = {id(v) for v in list(S.values()) + [x]}
            outs = [o.clone() if id(o) in ins else o for o in outs]
        return y, outs, tape


# ------------------------------------------------------------------------------------- the module

def _as_dtype(dtype):
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype.isidentifier() else None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (or their names), got {dtype!r}")
    return dtype


def _shape(t) -> tuple:
    return tuple(int(s) for s in t.shape)


class Recurrent(nn.Module):
    """A multi-layer, optionally bidirectional recurrent network of any lstmc cell.

    Args:
        cell: a built-in cell name ("lstm", "gru", "peephole_lstm", ...), a path to a .cell file, or a Cell.
        input_size, hidden_size: feature sizes of the input and of every state.
        num_layers: stacked layers; layer k > 0 reads layer k-1's output (both directions concatenated).
        bias: False drops the cell's biases (`bias_params(cell)`) and fixes them at zero.
        batch_first: input and output are [B, T, *] instead of [T, B, *] (states stay [L*D, B, H]).
        dropout: dropout probability on the outputs of every layer but the last, in training mode only.
        bidirectional: run a reverse direction too; outputs are concatenated to [T, B, 2H].
        backend: "auto" (numba on CPU, triton on CUDA when available, torch otherwise), or one of
            "numba", "triton", "torch", "reference" (refused, with the reason, where it cannot run).
        dtype, device: of the parameters (default: torch's default dtype, CPU); float32 or float64.
        sizes: the values of the cell's `size` lines ({"K": 8}); required when it has any.
    """

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 backend: str = "auto", dtype=None, device=None, sizes=None):
        super().__init__()
        self.cell = load(cell)
        self.sizes = check_sizes(self.cell, sizes)
        for nm, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (a probability), got {dropout!r}")
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKEND_CHOICES))}, got {backend!r}")
        dtype = _as_dtype(dtype)
        if dtype not in _COMPILED_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64 (lstmc compiles float32 and float64 "
                            f"kernels), got {dtype}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1",
                          UserWarning, stacklevel=2)
        if backend == "triton":
            ok, why = _triton_status(self.cell, str(dtype).replace("torch.", ""))
            if not ok and "does not import" in why:
                raise RuntimeError(f"backend 'triton' cannot run: {why}; use backend='auto' or 'torch'")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.backend = backend
        self.state_names = self.cell.states
        self.output_size = self._state_size(self.cell.output)   # per direction: H, or P for `state h[P]`
        self.biases = bias_params(self.cell)
        self.trainable = tuple(p for p in self.cell.params if self.bias or p not in self.biases)
        self.last_backend = None          # the backend that ran the latest forward
        self._programs = {}               # (backend, dtype) -> compiled program; not state
        self._op_name = cell_ops(self.cell).name   # its torch custom operators (lstmc/torch_ops.py)
        num_dir = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self._in_size(self._key(layer, 0))
            for d in range(num_dir):
                shapes = {p: self.cell.param_shape(p, in_size, self.hidden_size, self.sizes) for p in self.trainable}
                pd = nn.ParameterDict()           # filled one by one: keeps the cell's order (a dict would sort)
                for p, s in shapes.items():
                    pd[p] = nn.Parameter(torch.empty(s, dtype=dtype, device=device))
                self.add_module(self._key(layer, d), pd)
        self.reset_parameters()

    # naming ---------------------------------------------------------------------------------
    @staticmethod
    def _key(layer: int, direction: int) -> str:
        return f"l{layer}" + ("_reverse" if direction else "")

    def cell_params(self, layer: int = 0, reverse: bool = False) -> nn.ParameterDict:
        """The ParameterDict of one layer and direction, keyed by the cell's parameter names."""
        if not 0 <= layer < self.num_layers or (reverse and not self.bidirectional):
            raise IndexError(f"no layer {layer}{' reverse direction' if reverse else ''} in {self!r}")
        return getattr(self, self._key(layer, int(bool(reverse))))

    def extra_repr(self) -> str:
        s = f"{self.cell.name!r}, {self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for nm, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                            ("backend", "auto")):
            if getattr(self, nm) != default:
                s += f", {nm}={getattr(self, nm)!r}"
        return s + (f", sizes={self.sizes!r}" if self.sizes else "")

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_programs"] = {}               # compiled kernels are rebuilt (from the cache) where needed
        return d

    def __setstate__(self, d):
        d.setdefault("sizes", {})         # a module pickled before sizes= existed
        d.setdefault("output_size", d.get("hidden_size"))
        super().__setstate__(d)
        self._op_name = cell_ops(self.cell).name   # a new process: register the cell's operators again

    # initialisation -------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise from the cell's `init` lines (others U(-1/sqrt(H), 1/sqrt(H))), one seed per layer and
        direction drawn from torch's RNG, so torch.manual_seed makes it reproducible."""
        ref = _compile(self.cell, backend="reference", dtype="float64")
        for name, pd in self._directions():
            if not len(pd):
                continue
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
            vals = ref.init_params(self._in_size(name), self.hidden_size, seed=seed, sizes=self.sizes)
            for p, param in pd.items():
                param.copy_(torch.from_numpy(vals[p]))

    def _in_size(self, key: str) -> int:
        """The input size of a layer: input_size, or the output state's size times the directions."""
        layer = int(key[1:].split("_")[0])
        return self.input_size if layer == 0 else self.output_size * (2 if self.bidirectional else 1)

    def _state_size(self, s: str) -> int:
        """The size of state `s`: hidden_size, or its declared size's value (`state h[P]`, sizes={"P": 8})."""
        size = getattr(self.cell, "state_sizes", {}).get(s, "H")
        return self.hidden_size if size == "H" else self.sizes[size]

    def _directions(self):
        num_dir = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            for d in range(num_dir):
                k = self._key(layer, d)
                yield k, getattr(self, k)

    def flatten_parameters(self) -> None:
        """No-op, for code written for nn.LSTM (cuDNN's weight flattening has no meaning here)."""

    # backend --------------------------------------------------------------------------------
    def _program(self, backend: str, dtype: torch.dtype):
        key = (backend, dtype)
        prog = self._programs.get(key)
        if prog is None:
            prog = _compile(self.cell, backend=backend, dtype=str(dtype).replace("torch.", ""))
            self._programs[key] = prog
        return prog

    def _param_dtype_device(self):
        for p in self.parameters():
            return p.dtype, p.device
        return torch.get_default_dtype(), torch.device("cpu")   # a cell whose every parameter is a bias

    # forward --------------------------------------------------------------------------------
    def forward(self, input, state=None, lengths=None, inputs=None):
        """output, state = rnn(input, state=None, lengths=None, inputs=None).

        input: [T, B, I] ([B, T, I] with batch_first), [T, I] unbatched, or a PackedSequence.
        state: the initial state in the cell's state order: a tensor for a one-state cell, else a tuple;
            each [num_layers * num_directions, B, H] ([.., H] unbatched); None means zeros.
        lengths: with a padded tensor input, the valid length of each batch row (0..T): outputs past
            a row's length are zero and its final state is the one at its length.
        inputs: the cell's extra per-step inputs (`input dt`, `input keep[H]`, `input u[K]`), a dict
            name -> [T, B] or [T, B, n] tensor, laid out as `input` is ([B, T, ...] with batch_first,
            [T, ...] unbatched; with a PackedSequence, padded tensors in the caller's batch order).
            Every layer reads the same inputs; the reverse direction reads them reversed with x.
        """
        dtype, pdevice = self._param_dtype_device()
        packed = isinstance(input, PackedSequence)
        unbatched = False
        sorted_idx = unsorted_idx = None
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (it carries its lengths)")
            sorted_idx, unsorted_idx = input.sorted_indices, input.unsorted_indices
            self._check_input_tensor(input.data, dtype, pdevice)
            x, lengths = unpack(input, state)
            if not torch.compiler.is_compiling():
                lengths = lengths.numpy()
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"input must have 3 dimensions ([T, B, I]{', batch_first' if self.batch_first else ''}"
                                 f") or 2 for an unbatched sequence ([T, I]), got {input.dim()}")
            self._check_input_tensor(input, dtype, pdevice)
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            if x.shape[0] == 0:
                raise ValueError(f"input must have at least one time step, got shape {_shape(input)}")
            if x.shape[1] == 0:
                raise ValueError(f"input must have at least one batch row, got shape {_shape(input)}")
            if lengths is not None:
                if unbatched:
                    lengths = [lengths] if np.ndim(lengths) == 0 else lengths
                src = "input" + (" (unbatched)" if unbatched else ", batch_first" if self.batch_first else "")
                if torch.compiler.is_compiling() and isinstance(lengths, torch.Tensor):
                    lengths = lengths.reshape(-1)     # checked by the operator, on the real values
                else:
                    lengths = check_lengths(lengths, int(x.shape[0]), int(x.shape[1]), source=src)
        B = x.shape[1]                    # not int(): torch.export keeps B symbolic
        states = self._check_state(state, B, dtype, x.device, unbatched)
        extra = prepare_inputs(self.cell, inputs, self.hidden_size, self.sizes, T=x.shape[0], B=B,
                               layout=input_layout(unbatched, self.batch_first), dtype=dtype, device=x.device,
                               packed=packed, sorted_idx=sorted_idx)
        if states is not None and sorted_idx is not None:
            states = [s.index_select(1, sorted_idx) for s in states]

        backend = select_backend(self.backend, x.device, dtype, self.cell)
        self.last_backend = backend
        if backend == OP_BACKENDS.get(x.device.type):
            # the cell's custom operators (lstmc/torch_ops.py): what torch.compile and torch.export trace;
            # registered by __init__ / __setstate__ (a lookup: cell_ops would lower the cell again)
            runner = registered_ops(self._op_name)
            if not torch.compiler.is_compiling():
                self._programs[(backend, dtype)] = runner.compiled(x.device, dtype)
        else:
            runner = _eager_runner(self, backend, dtype)
        if isinstance(lengths, np.ndarray) and isinstance(runner, CellOps):
            lengths = torch.from_numpy(lengths)
        zero = None
        H, num_dir = self.hidden_size, 2 if self.bidirectional else 1
        finals = [[] for _ in self.state_names]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(num_dir):
                pd = getattr(self, self._key(layer, d))
                if zero is None and len(pd) < len(self.cell.params):   # biases dropped by bias=False
                    zero = {p: torch.zeros(self.cell.param_shape(p, 1, H, self.sizes), dtype=dtype, device=x.device)
                            for p in self.cell.params if p not in pd}
                params = [pd[p] if p in pd else zero[p] for p in self.cell.params]
                k = layer * num_dir + d
                s0 = ([s[k] for s in states] if states is not None
                      else [torch.zeros(B, self._state_size(s), dtype=dtype, device=x.device) for s in self.state_names])
                try:
                    y, fin = self._run(runner, layer_in, lengths, bool(d), s0, params, extra)
                except (ValueError, TypeError, RuntimeError):
                    try:      # a parameter changed after construction? then name it (module.l0.W_i)
                        self._check_parameters(dtype, pdevice)
                    except (ValueError, RuntimeError) as named:
                        raise named from None
                    raise
                outs.append(y)
                for i, f in enumerate(fin):
                    finals[i].append(f)
            layer_in = outs[0] if num_dir == 1 else torch.cat(outs, 2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out = layer_in
        final = [torch.stack(f, 0) for f in finals]
        if packed:
            out = pack_like(out, input)
            if unsorted_idx is not None:
                final = [f.index_select(1, unsorted_idx) for f in final]
        elif unbatched:
            out = out.squeeze(1)
            final = [f.squeeze(1) for f in final]
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (final[0] if len(final) == 1 else tuple(final))

    def _run(self, runner, x, lengths, reverse: bool, s0, params, extra):
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *s0, *params, *extra))
        if isinstance(runner, CellOps):
            return runner(x, s0, params, lengths, reverse, grad, extra)
        return _run_eager(runner, x, lengths, reverse, s0, params, extra, grad)


    # argument checks (errors name the argument, as nn.LSTM's do) -----------------------------
    def _check_parameters(self, dtype, device):
        """Every parameter must have the first one's dtype and device and its cell shape (they can be
        swapped after construction: `module.l0.W_i.data = ...`); errors name the parameter. Run only
        when a layer fails (it costs ~5 us a parameter), to turn the program's message into this one."""
        if dtype not in _COMPILED_DTYPES:
            return                        # select_backend refuses it, saying how to convert the module
        for key, pd in self._directions():
            in_size = self._in_size(key)
            for p, param in pd.items():
                nm = f"parameter {key}.{p}"
                if param.dtype != dtype:
                    raise ValueError(f"{nm} has dtype {param.dtype} but the module's other parameters are {dtype}: "
                                     f"convert the whole module, module.to({dtype})")
                if param.device != device:
                    raise RuntimeError(f"{nm} is on {param.device} but the module's other parameters are on "
                                       f"{device}: move the whole module, module.to('{device}')")
                want = self.cell.param_shape(p, in_size, self.hidden_size, self.sizes)
                if _shape(param) != want:
                    raise RuntimeError(f"{nm} has shape {_shape(param)}, expected {want} (cell '{self.cell.name}', "
                                       f"input size {in_size}, hidden_size {self.hidden_size})")

    def _check_input_tensor(self, t, dtype, pdevice):
        if t.dtype != dtype:
            # suggest only what runs: lstmc compiles float32 and float64 kernels
            fix = (f"convert the input (input.to({dtype})) or the module (module.to({t.dtype}))"
                   if t.dtype in _COMPILED_DTYPES else
                   f"convert the input with input.to({dtype}) (lstmc runs float32 and float64 modules only)")
            raise ValueError(f"input has dtype {t.dtype} but the module's parameters are {dtype}: {fix}")
        if t.device != pdevice:
            raise RuntimeError(f"input is on {t.device} but the module's parameters are on {pdevice}: move one "
                               f"of them (input.to('{pdevice}') or module.to('{t.device}'))")
        if t.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {int(t.shape[-1])}")

    def _check_state(self, state, B, dtype, device, unbatched):
        if state is None:
            return None
        n = len(self.state_names)
        names = ", ".join(self.state_names)
        if isinstance(state, torch.Tensor):
            if n != 1:
                raise TypeError(f"state must be a tuple of {n} tensors ({names}) for cell '{self.cell.name}', "
                                f"got a single Tensor")
            state = (state,)
        elif isinstance(state, (tuple, list)):
            if len(state) != n or not all(isinstance(s, torch.Tensor) for s in state):
                want = "a Tensor" if n == 1 else f"a tuple of {n} tensors ({names})"
                raise TypeError(f"state must be {want} for cell '{self.cell.name}', got a {type(state).__name__} of "
                                f"{len(state)} " + ", ".join(type(s).__name__ for s in state))
        else:
            raise TypeError(f"state must be {'a Tensor' if n == 1 else 'a tuple of tensors'} ({names}) or None, "
                            f"got {type(state).__name__}")
        LD = self.num_layers * (2 if self.bidirectional else 1)
        out = []
        for i, (s, nm) in enumerate(zip(state, self.state_names)):
            label = "state" if n == 1 else f"state[{i}] ({nm})"
            want = (LD, self._state_size(nm)) if unbatched else (LD, B, self._state_size(nm))
            if unbatched and s.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, {label} should also be 2-D but got {s.dim()}-D")
            if tuple(s.shape) != want:
                raise RuntimeError(f"Expected {label} size {want}, got {_shape(s)}")
            if s.dtype != dtype:
                raise ValueError(f"{label} has dtype {s.dtype} but the input and module are {dtype}: "
                                 f"convert it with .to({dtype})")
            if s.device != device:
                raise RuntimeError(f"{label} is on {s.device} but the input is on {device}: move it there")
            out.append(s.unsqueeze(1) if unbatched else s)
        return out

    # interoperation -------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module, backend: str = "auto") -> "Recurrent":
        """A Recurrent computing exactly what `module` (nn.LSTM or nn.GRU) computes, with copies of its weights.

        nn.LSTM -> built-in cell "lstm", gate order i, f, g, o (with proj_size=P: "lstmp", sizes
        {"P": P}, weight_hr -> W_hr); nn.GRU -> "gru", gate order r, z, n:
        weight_ih_l{k}[j*H:(j+1)*H] -> l{k}.W_<gate j>, weight_hh -> U_<gate>, bias_ih -> b_i<gate>,
        bias_hh -> b_h<gate>; the suffix _reverse maps to l{k}_reverse (lstmc.interop.torch_layer_weights).
        """
        found = torch_builtin(module)
        if found is None:
            raise TypeError(f"from_torch takes an nn.LSTM or nn.GRU, got {type(module).__name__}")
        cell, sizes = found
        w = module.weight_ih_l0
        rnn = cls(cell, module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=0.0, bidirectional=module.bidirectional,
                  backend=backend, dtype=w.dtype, device=w.device, sizes=sizes or None)
        rnn.dropout = float(module.dropout)       # set after construction: no single-layer warning twice
        with torch.no_grad():
            for key, pd in rnn._directions():
                for name, t in torch_layer_weights(module, cell, key[1:]).items():   # l1_reverse -> "1_reverse"
                    pd[name].copy_(t)
        rnn.train(module.training)
        return rnn


    def to_onnx(self, path, example_input, *, lengths: bool = False, initial_states: bool = False,
                native="auto", opset: int | None = None):
        """Write this module as an ONNX model that ONNX Runtime runs without lstmc (and return it):
        inputs `input` ([T, B, I], or batch-first; T and B dynamic), with lengths=True `lengths` ([B],
        int64) and with initial_states=True one `[layers·directions, B, n]` input per state (n: its size), named
        after the cell's states; outputs `output` and the final states `<state>_n`. Each layer and
        direction is an ONNX Scan over the cell's step, or the native LSTM/GRU operator for the
        built-ins whose math it is (native="auto"; False forces the Scan form). See docs/onnx.md."""
        from .onnx_export.recurrent import to_onnx

        return to_onnx(self, path, example_input, lengths=lengths, initial_states=initial_states, native=native,
                       opset=opset)
