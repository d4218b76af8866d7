"""Inference on the newest verified release, swapped in without ever pausing inference.

A device keeps answering queries while new versions arrive. The swap is a single reference
assignment: a new onnxruntime session is built completely (outside any lock), then
`ModelRuntime` replaces its one `_current` attribute with an immutable `LoadedModel`
holding the session *and* the version it belongs to. A query reads that attribute once and
uses what it got, so it runs entirely on the old model or entirely on the new one; there is
no moment at which a half-loaded model, or the session of one version paired with the
version number of another, can be seen. Queries take no lock. Installs serialize on a lock
only to compare versions, so that versions never go backwards even when two threads race
to install (an older release is refused, not installed).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstream.edge.errors import InvalidReleaseError, NoModelLoadedError
from fedstream.edge.releases import Release

__all__ = ["LoadedModel", "ModelRuntime", "Prediction"]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ready onnxruntime session and the release it was built from."""

    release: Release
    session: Any  # onnxruntime.InferenceSession (untyped library)
    input_name: str

    @property
    def version(self) -> int:
        return self.release.version


@dataclass(frozen=True, slots=True)
class Prediction:
    """The outputs of one query and the model version that computed them."""

    version: int
    outputs: list[NDArray[Any]]


def build_session(onnx: bytes, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session from ONNX bytes (raises `InvalidReleaseError`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise InvalidReleaseError(f"onnxruntime cannot load the release: {error}") from error


class ModelRuntime:
    """Holds the current inference session; see the module docstring for the swap rule."""

    def __init__(self, *, threads: int = 1) -> None:
        self._threads = threads
        self._current: LoadedModel | None = None
        self._install_lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def version(self) -> int | None:
        current = self._current
        return None if current is None else current.version

    def install(self, release: Release) -> bool:
        """Build a session for `release` and swap it in if it is newer; True if swapped."""
        current = self._current
        if current is not None and release.version <= current.version:
            return False  # cheap early exit; re-checked under the lock
        session = build_session(release.onnx, threads=self._threads)
        loaded = LoadedModel(release, session, session.get_inputs()[0].name)
        with self._install_lock:
            current = self._current
            if current is not None and release.version <= current.version:
                return False
            self._current = loaded  # the swap: one reference assignment
        return True

    def infer(self, inputs: ArrayLike) -> Prediction:
        """Run the current model on `inputs` (for its first input); lock-free."""
        model = self._current  # read once: everything below uses this one model
        if model is None:
            raise NoModelLoadedError("no release installed yet: call wait_for_model() first")
        array = np.asarray(inputs, dtype=np.float32)
        outputs = model.session.run(None, {model.input_name: array})
        return Prediction(model.version, list(outputs))

    def predict(self, inputs: ArrayLike) -> NDArray[Any]:
        """The first output of the current model on `inputs`."""
        return self.infer(inputs).outputs[0]
