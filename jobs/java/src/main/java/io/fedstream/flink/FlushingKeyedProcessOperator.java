package io.fedstream.flink;

import java.util.HashSet;
import java.util.Set;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.functions.python.DataStreamPythonFunctionInfo;
import org.apache.flink.streaming.api.operators.python.embedded.AbstractEmbeddedDataStreamPythonFunctionOperator;
import org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import pemja.core.object.PyIterator;

/**
 * PyFlink's thread-mode keyed operator ({@link EmbeddedPythonKeyedProcessOperator}) with one
 * addition: a flush call into the Python function, for every key it processed since the last
 * one, before each checkpoint barrier (and when the input ends).
 *
 * <p>Why: the aggregate's Python function keeps a model's open window in memory and writes it
 * to keyed state only when Flink is about to snapshot it, instead of after every update (a
 * 0.4-4 MB sealed copy, pickled and handed to the JVM each time). PyFlink 2.2's Python API has
 * no snapshot hook, so the JVM operator calls one: for each key it sets the key, then calls the
 * function's {@code on_timer} with {@link #FLUSH_TIMESTAMP}, a time no processing-time timer
 * can have; the function writes that model's window to state there and emits nothing. The
 * writes land before {@code super.prepareSnapshotPreBarrier}, so the snapshot holds every update
 * whose source offset it holds. A function that does not defer its writes treats the call as
 * a timer that is not its own and does nothing.
 *
 * <p>Everything else is the parent's: the same state, timers and uid, so a checkpoint of the
 * plain operator restores into this one and back.
 */
public class FlushingKeyedProcessOperator<K, IN, OUT>
        extends EmbeddedPythonKeyedProcessOperator<K, IN, OUT> {

    private static final long serialVersionUID = 1L;

    /** The {@code on_timer} time that means "write this key's deferred state now". */
    public static final long FLUSH_TIMESTAMP = Long.MIN_VALUE;

    private final TypeInformation<IN> input;

    /** Keys processed since the last flush (copies: a key object may be reused). */
    private transient Set<Object> touched;

    public FlushingKeyedProcessOperator(
            Configuration config,
            DataStreamPythonFunctionInfo pythonFunctionInfo,
            TypeInformation<IN> inputTypeInfo,
            TypeInformation<OUT> outputTypeInfo) {
        super(config, pythonFunctionInfo, inputTypeInfo, outputTypeInfo);
        this.input = inputTypeInfo;
    }

    @Override
    public void open() throws Exception {
        touched = new HashSet<>();
        super.open();
    }

    @Override
    public void processElement(StreamRecord<IN> element) throws Exception {
        super.processElement(element);
        touched.add(getKeyedStateBackend().getKeySerializer().copy(getCurrentKey()));
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    /** Calls the function's flush for each touched key, with that key current. */
    private void flush() throws Exception {
        if (touched.isEmpty()) {
            return;
        }
        Object previous = getCurrentKey();
        for (Object key : touched) {
            setCurrentKey(key);
            PyIterator out =
                    (PyIterator) interpreter.invokeMethod("operation", "on_timer", FLUSH_TIMESTAMP);
            try {
                if (out.hasNext()) {
                    throw new IllegalStateException("a flush must not emit records");
                }
            } finally {
                out.close();
            }
        }
        touched.clear();
        if (previous != null) {
            setCurrentKey(previous);
        }
    }

    @Override
    public <T> AbstractEmbeddedDataStreamPythonFunctionOperator<T> copy(
            DataStreamPythonFunctionInfo pythonFunctionInfo, TypeInformation<T> outputTypeInfo) {
        return new FlushingKeyedProcessOperator<>(config, pythonFunctionInfo, input, outputTypeInfo);
    }
}
