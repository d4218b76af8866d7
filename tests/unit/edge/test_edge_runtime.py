"""The onnxruntime session swap: inference never sees a half-loaded or older model."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fedstream.edge import InvalidReleaseError, ModelRuntime, NoModelLoadedError, Prediction
from tests.unit.edge.edge_support import constant_model, make_release


def test_inference_before_any_release_is_a_clear_error() -> None:
    with pytest.raises(NoModelLoadedError, match="wait_for_model"):
        ModelRuntime().predict(np.zeros((1, 4), np.float32))


def test_install_refuses_older_and_equal_versions() -> None:
    runtime = ModelRuntime()
    assert runtime.install(make_release(constant_model(2.0), version=2))
    assert not runtime.install(make_release(constant_model(1.0), version=1))
    assert not runtime.install(make_release(constant_model(9.0), version=2))
    assert runtime.version == 2
    np.testing.assert_array_equal(runtime.predict(np.ones((1, 256), np.float32)), 2.0)


def test_garbage_onnx_is_refused_and_the_old_model_stays() -> None:
    runtime = ModelRuntime()
    runtime.install(make_release(constant_model(1.0), version=1))
    with pytest.raises(InvalidReleaseError, match="onnxruntime"):
        runtime.install(make_release(b"not onnx", version=2))
    assert runtime.version == 1


def test_swap_under_concurrent_inference() -> None:
    """4 threads query while 40 versions are swapped in: every answer comes wholly from one
    version (all outputs equal the version it reports) and no thread sees a version older
    than one it saw before."""
    runtime = ModelRuntime()
    runtime.install(make_release(constant_model(0.0), version=0))
    releases = [make_release(constant_model(float(v)), version=v) for v in range(1, 41)]
    done = threading.Event()
    seen: list[list[Prediction]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    x = np.ones((2, 256), np.float32)

    def query(out: list[Prediction]) -> None:
        try:
            while not done.is_set():
                out.append(runtime.infer(x))
        except BaseException as error:  # surfaced below
            failures.append(error)

    threads = [threading.Thread(target=query, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    try:
        for release in releases:
            assert runtime.install(release)
            # racing installers: an older release never replaces a newer one
            assert not runtime.install(releases[max(0, release.version - 3)])
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert not failures
    assert runtime.version == 40
    for predictions in seen:
        assert predictions
        versions = [p.version for p in predictions]
        assert versions == sorted(versions)
        for p in predictions:
            assert np.all(p.outputs[0] == float(p.version))
    assert len({p.version for s in seen for p in s}) > 2  # swaps really happened meanwhile
