"""The order in which named parameters are concatenated into one flat vector.

Updates and initial weights travel as ONE flat float32 vector (one TensorPayload, one
compression decision, one norm) instead of a map of tensors; the ModelRegistration's
``parameters`` list fixes the order. The device flattens its torch state in that order, the
job unflattens to write ONNX initializers, and both must agree to the element, so the
mapping lives here, next to the schema, with strict checks: a missing, extra or misshaped
parameter is a `LayoutError` (reason BAD_SHAPE), never a silent reshape or broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstream.schemas.errors import BadDtypeError, LayoutError
from fedstream.schemas.records import ParameterSpec

__all__ = ["ParameterLayout"]


def _real_array(value: ArrayLike, what: str) -> NDArray[Any]:
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise BadDtypeError(f"{what}: cannot convert to an array: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise BadDtypeError(f"{what}: must be real-valued, got dtype {arr.dtype}")
    return arr


class ParameterLayout:
    """Names and shapes of the trainable parameters, in flat-vector order. Immutable."""

    __slots__ = ("_index", "_names", "_offsets", "_shapes", "_size")

    def __init__(self, specs: Iterable[tuple[str, Sequence[int]]]) -> None:
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        offsets: list[int] = [0]
        for name, shape in specs:
            if not isinstance(name, str) or not name:
                raise LayoutError(f"parameter name must be a non-empty string, got {name!r}")
            if name in names:
                raise LayoutError(f"parameter {name!r} listed twice")
            dims = tuple(shape)
            if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) for d in dims):
                raise LayoutError(f"parameter {name!r}: shape {list(dims)} must be integers")
            if any(d < 0 for d in dims):
                raise LayoutError(
                    f"parameter {name!r}: shape {list(dims)} has a negative dimension"
                )
            dims = tuple(int(d) for d in dims)
            names.append(name)
            shapes.append(dims)
            offsets.append(offsets[-1] + math.prod(dims))
        self._names = tuple(names)
        self._shapes = tuple(shapes)
        self._offsets = tuple(offsets)
        self._size = offsets[-1]
        self._index = {name: i for i, name in enumerate(names)}

    @classmethod
    def from_registration(cls, parameters: Iterable[Mapping[str, Any]]) -> ParameterLayout:
        """From ModelRegistration.parameters (a list of ``{"name", "shape"}`` records)."""
        try:
            specs = [(p["name"], p["shape"]) for p in parameters]
        except (KeyError, TypeError) as exc:
            raise LayoutError(f"parameter specs need 'name' and 'shape': {exc!r}") from None
        return cls(specs)

    def to_registration(self) -> list[ParameterSpec]:
        """The ModelRegistration.parameters value for this layout."""
        return [
            {"name": n, "shape": list(s)} for n, s in zip(self._names, self._shapes, strict=True)
        ]

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return self._shapes

    @property
    def size(self) -> int:
        """Total number of elements: the length of the flat vector."""
        return self._size

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        return iter(zip(self._names, self._shapes, strict=True))

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParameterLayout):
            return NotImplemented
        return self._names == other._names and self._shapes == other._shapes

    def __hash__(self) -> int:
        return hash((self._names, self._shapes))

    def __repr__(self) -> str:
        items = ", ".join(f"{n}{list(s)}" for n, s in self)
        return f"ParameterLayout([{items}], size={self._size})"

    def slice_of(self, name: str) -> slice:
        """Where parameter `name` lives in the flat vector."""
        try:
            i = self._index[name]
        except KeyError:
            raise LayoutError(f"no parameter {name!r} in the layout") from None
        return slice(self._offsets[i], self._offsets[i + 1])

    def flatten(self, params: Mapping[str, ArrayLike]) -> NDArray[np.float32]:
        """Concatenate `params` (exactly the layout's names, exact shapes) into float32 1-D."""
        missing = [n for n in self._names if n not in params]
        extra = sorted(str(n) for n in params if n not in self._index)
        if missing or extra:
            raise LayoutError(
                f"parameters do not match the layout: missing {missing}, extra {extra}"
            )
        out = np.empty(self._size, dtype=np.float32)
        for i, (name, shape) in enumerate(self):
            arr = _real_array(params[name], f"parameter {name!r}")
            if arr.shape != shape:
                raise LayoutError(
                    f"parameter {name!r} has shape {list(arr.shape)}, layout says {list(shape)}"
                )
            out[self._offsets[i] : self._offsets[i + 1]] = arr.reshape(-1)
        return out

    def unflatten(self, vector: ArrayLike) -> dict[str, NDArray[np.float32]]:
        """Split a flat vector into named float32 arrays of the layout's shapes.

        The arrays are views into one fresh float32 copy of `vector`: writing to them never
        changes the caller's vector.
        """
        arr = _real_array(vector, "flat vector")
        if arr.ndim != 1 or arr.shape[0] != self._size:
            raise LayoutError(
                f"flat vector has shape {list(arr.shape)}, layout needs [{self._size}]"
            )
        flat = arr.astype(np.float32, copy=True)
        return {
            name: flat[self._offsets[i] : self._offsets[i + 1]].reshape(shape)
            for i, (name, shape) in enumerate(self)
        }
