"""Export a torch module to self-contained ONNX bytes with either exporter (tests only).

The legacy TorchScript exporter and the dynamo exporter write different graphs (dynamo
adds constant initializers such as `val_5`, and may put weights in external data unless
told not to); the job must handle the output of both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def export(model: torch.nn.Module, example: torch.Tensor, dynamo: bool, folder: Path) -> bytes:
    """ONNX bytes of `model` (in eval mode) with input "x" and output "y", batch dynamic."""
    model.eval()
    path = folder / f"model-{'dynamo' if dynamo else 'legacy'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation, torchvision notices
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
            assert program is not None
            program.save(str(path), external_data=False)  # embedded: self-contained bytes
        else:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
    return path.read_bytes()
