"""Export compiled cells to ONNX (docs/onnx.md): `to_onnx` for a `lstmc.nn.Recurrent`, and the
`lstmc export MODEL.pt --onnx out.onnx` command for a model saved by `lstmc train`.

  graph.py      the graph builder over onnx.helper (names, constants, initializers)
  step.py       the lowered Program's step as a Scan body: one spelling row per primitive
  native.py     the built-ins ONNX's LSTM/GRU operators compute, and their weight layout
  recurrent.py  layers, directions, lengths, states: to_onnx
  model.py      a trained SeqModel (embedding, Recurrent, head) from model.pt; the CLI
"""

from .recurrent import to_onnx
from .step import ExportError

__all__ = ["to_onnx", "ExportError", "export_model", "add_parser", "cli_main"]


def __getattr__(name):      # the CLI half imports lstmc.train only when used
    if name in ("export_model", "add_parser", "cli_main"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
