"""lstmc: a compiler for recurrent neural-network cells.

    cell = lstmc.load("peephole_lstm")          # or a path to a .cell file, or lstmc.parse(text)
    prog = lstmc.compile(cell, backend="reference", dtype="float64")
    params = prog.init_params(input_size=I, hidden_size=H, seed=0)
    y, state, tape = prog.forward(x, params)
    dx, dstate0, dparams = prog.backward(tape, dy)
"""

from .version import __version__  # noqa: E402
from .spec import Cell, SpecError, parse  # noqa: E402
from .build import builtin_cells, compile, load  # noqa: E402
from .lower import Program, lower  # noqa: E402
from .threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["Cell", "SpecError", "parse", "load", "compile", "builtin_cells", "Program", "lower", "set_num_threads",
           "get_num_threads", "__version__"]
