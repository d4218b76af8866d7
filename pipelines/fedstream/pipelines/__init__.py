"""fedstream.pipelines: the pure aggregation core (numpy only) and the thin PyFlink
functions that call it.

Core modules (no pyflink, kafka or avro; `onnx` only in `onnx_release`):
config, update, staleness, validation, windows, clipping, privacy, reducers, optimizers,
lineage, binary_format, accumulator, model_state, aggregator, onnx_release.
Import from the module that holds a name; this package re-exports nothing, so importing
it stays cheap and never pulls in onnx.
"""
