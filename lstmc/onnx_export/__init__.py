"""Export compiled cells to ONNX (docs/onnx.md): `to_onnx` for a `lstmc.nn.Recurrent`, and the
`lstmc export MODEL.pt --onnx out.onnx` command for a model saved by `lstmc train`.

  graph.py      the graph builder over onnx.helper (names, constants, initializers)
  step.py       the lowered Program's step as a Scan body: one spelling row per primitive
  native.py     the built-ins ONNX's LSTM/GRU operators compute, and their weight layout
  recurrent.py  layers, directions, lengths, states: to_onnx
  model.py      a trained SeqModel (embedding, Recurrent, head) from model.pt: export_model
  cli.py        `lstmc export` (add_parser, cli_main)

Every name is imported on first use, so that importing the package (the CLI does, to add
`export`) costs nothing and imports neither onnx nor lstmc.nn.
"""

__all__ = ["to_onnx", "ExportError", "export_model", "add_parser", "cli_main"]

_HOME = {"to_onnx": "recurrent", "ExportError": "step", "export_model": "model", "add_parser": "cli",
         "cli_main": "cli"}


def __getattr__(name):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
