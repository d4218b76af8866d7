"""fedstream.pipelines: the pure aggregation core (numpy only) and the thin PyFlink
functions that call it.

Core modules (numpy only: no pyflink, kafka, avro or onnx):
config, update, staleness, validation, windows, clipping, privacy, reducers, optimizers,
lineage, binary_format, accumulator, model_state, aggregator, protobuf_wire, onnx_release.
Import from the module that holds a name; this package re-exports nothing, so importing
it stays cheap. `onnx_release` edits ONNX bytes on the protobuf wire format itself: the
onnx package must not be imported by the job (it aborts PyFlink's thread mode).
"""
