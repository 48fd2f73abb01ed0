"""`lstmc export MODEL.pt --onnx OUT`: the command line of the ONNX export. It imports onnx (and the
rest of the exporter) only when it runs, so that `lstmc --help` does not pay for it."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `export` to the `lstmc` command's subparsers (sets fn=cli_main)."""
    p = subparsers.add_parser(
        "export", help="export a model saved by `lstmc train` (model.pt) to ONNX",
        description="Write the whole trained model ([embedding] -> Recurrent -> linear head, eval mode) as one "
                    "ONNX graph with input `input` ([B, T, I] floats or [B, T] token ids; B and T dynamic) and "
                    "output `output`. Built-in lstm, gru, gru_v1, peephole_lstm and cifg_lstm become ONNX's "
                    "LSTM/GRU operators; every other cell a Scan over its compiled step. See docs/onnx.md.")
    p.add_argument("model", help="model.pt written by `lstmc train --out DIR`")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--generic", action="store_true",
                   help="the generic Scan form even where a native ONNX LSTM/GRU operator applies")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.set_defaults(fn=cli_main)
    return p


def cli_main(args) -> int:
    from onnx import TensorProto

    from .model import export_model
    from .step import ExportError

    try:
        model = export_model(args.model, args.onnx, native=False if args.generic else "auto", opset=args.opset)
    except ExportError as e:
        print(f"lstmc export: error: {e}", file=sys.stderr)
        return 2
    g = model.graph
    shape = lambda v: "[" + ", ".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim) + "]"  # noqa: E731
    print(f"wrote {args.onnx}: {g.name}, opset {model.opset_import[0].version}")
    for kind, vals in (("input", g.input), ("output", g.output)):
        for v in vals:
            print(f"  {kind:6} {v.name} {shape(v)} {TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()}")
    return 0
