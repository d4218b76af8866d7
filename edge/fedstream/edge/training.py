"""The training side of a device: torch <-> ONNX releases, local SGD and the delta.

Needs the ``train`` extra (torch, onnx, onnxscript); inference-only devices never import
this module. The bridge between torch and the job is the *initializer name*: the ONNX
exporter names each weight initializer after the torch parameter it came from
(``"0.weight"``, ``"fc1.bias"``), the registration lists those names in a fixed order
(torch's ``named_parameters`` order), and every flat vector (initial weights, deltas)
follows that order. Released weights are loaded back by the same names, so neither side
ever relies on the position of a tensor in a graph.

Export uses torch's default exporter (``dynamo=True``, torch.export-based; the TorchScript
one is deprecated and prints so). Its weights are embedded in the returned bytes (the
registration must be one self-contained file), and a trainable parameter that does not
survive export as an initializer of the same shape (folded, renamed) is an error, never a
silently un-federated weight.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

try:
    import onnx
    import torch
    from onnx import numpy_helper
except ImportError as error:  # pragma: no cover - exercised in the inference-only wheel test
    raise ImportError(
        "fedstream.edge.training needs torch and onnx: pip install 'fedstream-edge[train]'"
    ) from error

from fedstream.edge.client import EdgeClient
from fedstream.edge.errors import ModelMismatchError
from fedstream.edge.releases import Release
from fedstream.schemas import ModelRegistration, ParameterLayout, UpdateMetrics
from fedstream.schemas.registration import registration_record

__all__ = [
    "LocalResult",
    "LocalTrainer",
    "TorchRegistration",
    "export_onnx",
    "flat_parameters",
    "load_weights",
    "read_initializers",
    "register_torch_model",
    "torch_registration",
    "trainable_layout",
]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, deprecation notes)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    module: torch.nn.Module,
    example_input: torch.Tensor,
    *,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_batch: bool = True,
    dynamo: bool = True,
) -> bytes:
    """`module` as one self-contained ONNX file (weights embedded), exported in eval mode.

    With `dynamic_batch` the first dimension of input and output is symbolic, so one
    release serves any batch size. ``dynamo=False`` selects the legacy TorchScript exporter.
    """
    was_training = module.training
    module.eval()
    x = example_input.detach()
    if dynamic_batch and dynamo and x.shape[0] < 2:
        x = torch.cat([x, x])  # torch.export specializes a batch of 1 to the constant 1
    try:
        with _quiet_exporter(), torch.no_grad():
            if dynamo:
                batch = torch.export.Dim("batch")
                program = torch.onnx.export(
                    module,
                    (x,),
                    dynamo=True,
                    verbose=False,
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_shapes=({0: batch},) if dynamic_batch else None,
                )
                if program is None:  # pragma: no cover - only when given a file
                    raise RuntimeError("torch.onnx.export returned no program")
                proto = program.model_proto
            else:
                import tempfile
                from pathlib import Path

                axes = {input_name: {0: "batch"}, output_name: {0: "batch"}}
                with tempfile.TemporaryDirectory() as folder:
                    path = Path(folder) / "model.onnx"
                    torch.onnx.export(
                        module,
                        (x,),
                        str(path),
                        dynamo=False,
                        input_names=[input_name],
                        output_names=[output_name],
                        dynamic_axes=axes if dynamic_batch else None,
                    )
                    proto = onnx.load(str(path))
    finally:
        module.train(was_training)
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelMismatchError(f"initializer {tensor.name!r} was exported as external data")
    data: bytes = proto.SerializeToString()
    return data


def _initializer_protos(onnx_bytes: bytes) -> dict[str, onnx.TensorProto]:
    model = onnx.load_from_string(onnx_bytes)
    return {t.name: t for t in model.graph.initializer}


def read_initializers(
    onnx_bytes: bytes, names: list[str] | tuple[str, ...]
) -> dict[str, NDArray[np.float32]]:
    """The named initializers of an ONNX file as float32 arrays (`ModelMismatchError` if
    one is missing)."""
    protos = _initializer_protos(onnx_bytes)
    missing = [n for n in names if n not in protos]
    if missing:
        raise ModelMismatchError(f"the ONNX file has no initializers named {missing}")
    return {n: np.array(numpy_helper.to_array(protos[n]), dtype=np.float32) for n in names}


def trainable_layout(module: torch.nn.Module, onnx_bytes: bytes) -> ParameterLayout:
    """The flat-vector layout: every trainable torch parameter, in ``named_parameters``
    order, each of which must be an ONNX initializer of the same name and shape."""
    protos = _initializer_protos(onnx_bytes)
    specs: list[tuple[str, tuple[int, ...]]] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        proto = protos.get(name)
        if proto is None:
            raise ModelMismatchError(
                f"trainable parameter {name!r} is not an initializer of the ONNX graph "
                f"(initializers: {sorted(protos)[:10]}...); it could not be federated"
            )
        if tuple(proto.dims) != tuple(param.shape):
            raise ModelMismatchError(
                f"parameter {name!r} has shape {list(param.shape)} in torch but "
                f"{list(proto.dims)} in the ONNX graph"
            )
        specs.append((name, tuple(int(d) for d in param.shape)))
    if not specs:
        raise ModelMismatchError("the module has no trainable parameters")
    return ParameterLayout(specs)


def flat_parameters(module: torch.nn.Module, layout: ParameterLayout) -> NDArray[np.float32]:
    """The module's current weights as one float32 vector in `layout` order."""
    params = dict(module.named_parameters())
    return layout.flatten({n: params[n].detach().cpu().numpy() for n in layout.names})


def load_weights(
    module: torch.nn.Module, onnx_bytes: bytes, layout: ParameterLayout | None = None
) -> ParameterLayout:
    """Copy the released weights into `module`, matched by initializer name.

    Raises `ModelMismatchError` if a parameter is missing or shaped differently, before
    changing anything (no half-loaded module). Returns the layout used.
    """
    layout = layout or trainable_layout(module, onnx_bytes)
    arrays = read_initializers(onnx_bytes, layout.names)
    params = dict(module.named_parameters())
    for name, shape in layout:
        if name not in params:
            raise ModelMismatchError(f"the module has no parameter {name!r}")
        if tuple(params[name].shape) != shape or arrays[name].shape != shape:
            raise ModelMismatchError(
                f"parameter {name!r}: module {list(params[name].shape)}, release "
                f"{list(arrays[name].shape)}, layout {list(shape)}"
            )
    with torch.no_grad():
        for name in layout.names:
            params[name].copy_(torch.from_numpy(arrays[name]))
    return layout


@dataclass(frozen=True, slots=True)
class TorchRegistration:
    """A registration built from a torch module, with what the device keeps of it."""

    record: ModelRegistration
    layout: ParameterLayout
    onnx: bytes


def torch_registration(
    model_id: str,
    module: torch.nn.Module,
    example_input: torch.Tensor,
    aggregation: Mapping[str, Any] | None = None,
    *,
    dynamo: bool = True,
) -> TorchRegistration:
    """Export `module` and build its ModelRegistration (initial weights = its weights)."""
    onnx_bytes = export_onnx(module, example_input, dynamo=dynamo)
    layout = trainable_layout(module, onnx_bytes)
    params = dict(module.named_parameters())
    initial = [(n, params[n].detach().cpu().numpy()) for n in layout.names]
    record = registration_record(model_id, onnx_bytes, initial, aggregation)
    return TorchRegistration(record, layout, onnx_bytes)


def register_torch_model(
    client: EdgeClient,
    module: torch.nn.Module,
    example_input: torch.Tensor,
    aggregation: Mapping[str, Any] | None = None,
) -> TorchRegistration:
    """Export, build and send the registration of `client.model_id`."""
    registration = torch_registration(client.model_id, module, example_input, aggregation)
    client.register(registration.record)
    return registration


@dataclass(frozen=True, slots=True)
class LocalResult:
    """One round of local training: the delta and how it was obtained."""

    delta: NDArray[np.float32]
    base_version: int
    num_samples: int
    loss: float
    steps: int
    duration_ms: int

    def metrics(self) -> UpdateMetrics:
        return {"loss": self.loss, "steps": self.steps, "duration_ms": self.duration_ms}


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(output, target)


class LocalTrainer:
    """Plain local SGD on a device's data, against the release it started from.

    `load_release` puts a release's weights into the module and remembers them as the
    base; `fit` trains `epochs` passes of mini-batch SGD and returns
    ``delta = w_local - w_base`` in the registration's layout. The module is left holding
    the locally trained weights (the next `load_release` replaces them).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        lr: float = 0.05,
        epochs: int = 1,
        batch_size: int = 32,
        momentum: float = 0.0,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _cross_entropy,
        seed: int = 0,
    ) -> None:
        if lr <= 0 or epochs < 1 or batch_size < 1:
            raise ValueError("lr must be > 0, epochs and batch_size >= 1")
        self.module = module
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.momentum = momentum
        self.loss_fn = loss_fn
        self.layout: ParameterLayout | None = None
        self.base_version: int | None = None
        self._base: NDArray[np.float32] | None = None
        self._generator = torch.Generator().manual_seed(seed)

    def load_release(self, release: Release) -> None:
        """Load `release`'s weights (by initializer name) and make them the base."""
        self.layout = load_weights(self.module, release.onnx, self.layout)
        self._base = flat_parameters(self.module, self.layout)
        self.base_version = release.version

    def fit(self, x: torch.Tensor | NDArray[Any], y: torch.Tensor | NDArray[Any]) -> LocalResult:
        """Train on (x, y) and return the delta against the loaded release."""
        if self.layout is None or self._base is None or self.base_version is None:
            raise RuntimeError("call load_release() before fit()")
        inputs = torch.as_tensor(x, dtype=torch.float32)
        targets = torch.as_tensor(y)
        n = int(inputs.shape[0])
        if n == 0 or int(targets.shape[0]) != n:
            raise ValueError(f"need as many targets as inputs (> 0), got {n}, {targets.shape[0]}")
        started = time.perf_counter()
        optimizer = torch.optim.SGD(self.module.parameters(), lr=self.lr, momentum=self.momentum)
        self.module.train()
        steps, last_epoch_loss = 0, 0.0
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=self._generator)
            total = 0.0
            for start in range(0, n, self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = self.loss_fn(self.module(inputs[batch]), targets[batch])
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * int(batch.shape[0])
                steps += 1
            last_epoch_loss = total / n
        delta = flat_parameters(self.module, self.layout) - self._base
        return LocalResult(
            delta=delta.astype(np.float32),
            base_version=self.base_version,
            num_samples=n,
            loss=last_epoch_loss,
            steps=steps,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
