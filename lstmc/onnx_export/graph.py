"""A small builder for ONNX graphs over `onnx.helper`: nodes named after what they compute, unique
names across the whole model (the main graph and every Scan body share one name space, so no
subgraph value shadows an outer one), scalar constants made once, and weights as initializers.

Every other module of lstmc.onnx_export emits nodes through `Graph.op`; none builds protobufs itself.
"""

from __future__ import annotations

import re

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


class Names:
    """The model's value names: `fresh(base)` returns base, or base_2, base_3, ... if it is taken."""

    def __init__(self):
        self.taken: set[str] = set()

    def fresh(self, base: str) -> str:
        base = _UNSAFE.sub("_", base.replace("'", "1"))     # c' -> c1 (lstmc.names.mangle's rule)
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def claim(self, name: str) -> str:
        """Reserve an exact name (a graph input or output): it must be free."""
        if name in self.taken:
            raise ValueError(f"ONNX value name {name!r} is used twice")
        self.taken.add(name)
        return name


class Graph:
    """One graph being built: its nodes, and (for the main graph) the model's initializers.

    A Scan body is a `Graph` with `parent` set: its constants and weights are created in the main
    graph and read from the body as outer-scope values, which ONNX allows and ONNX Runtime supports.
    """

    def __init__(self, dtype, opset: int | None = None, names: Names | None = None, parent: "Graph | None" = None):
        self.dtype = np.dtype(dtype)
        self.opset = opset if parent is None else parent.opset
        self.elem = ELEM[self.dtype]
        self.names = names if names is not None else Names()
        self.parent = parent
        self.nodes: list = []
        self.initializers: list = []
        self._consts: dict = {}

    @property
    def root(self) -> "Graph":
        return self if self.parent is None else self.parent.root

    def op(self, op_type: str, inputs, name: str | None = None, outputs=1, exact: bool = False, **attrs):
        """Add one node; returns its output name (or a list of names when `outputs` > 1 or is a list).
        The node and its first output are named `name` (default: the op type), made unique; with
        `outputs` a list of names, the outputs are named by it and the node `name`. `exact`: one output
        named exactly `name` (a graph output; an error if the name is taken)."""
        base = name or op_type
        if exact:                   # a graph output: exactly this name
            outs = [self.names.claim(base)]
            node_name = outs[0]
        elif isinstance(outputs, int):
            outs = [self.names.fresh(base if i == 0 else f"{base}:{i}") for i in range(outputs)]
            node_name = outs[0]
        else:                       # outputs named after what they hold; the node after what it does
            outs = [self.names.fresh(o) for o in outputs]
            node_name = self.names.fresh(base)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if isinstance(outputs, int) and outputs == 1 else outs

    def initializer(self, name: str, array, exact: bool = False) -> str:
        """A tensor of the model (a weight, a constant): created in the main graph, returned by name."""
        root = self.root
        name = root.names.claim(name) if exact else root.names.fresh(name)
        root.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, value, dtype=None) -> str:
        """A scalar constant (the graph's float dtype unless `dtype`), made once per value and dtype."""
        dt = np.dtype(dtype) if dtype is not None else self.dtype
        root = self.root
        key = (float(value) if dt.kind == "f" else int(value), dt.str)
        if key not in root._consts:
            text = repr(key[0]).replace("-", "neg").replace(".", "_").replace("+", "")
            root._consts[key] = self.initializer(f"const_{text}" + ("" if dt == self.dtype else f"_{dt.name}"),
                                                 np.array(value, dtype=dt))
        return root._consts[key]

    def ints(self, values, name: str = "ints") -> str:
        """A constant int64 vector (shapes, axes, split sizes), made once per value (named by its first use)."""
        root = self.root
        key = ("ints", tuple(int(v) for v in values))
        if key not in root._consts:
            root._consts[key] = self.initializer(name, np.asarray(key[1], dtype=np.int64))
        return root._consts[key]

    def value_info(self, name: str, shape, elem=None):
        return helper.make_tensor_value_info(name, self.elem if elem is None else elem, shape)
