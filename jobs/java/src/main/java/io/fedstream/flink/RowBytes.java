package io.fedstream.flink;

import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.types.Row;

/**
 * One field of a {@code Row(key BYTES, value BYTES)}, as a Kafka key or value.
 *
 * <p>The job's Python operators emit each output record with its Kafka key already built
 * ({@code fedstream.schemas.keys}); PyFlink's KafkaSink takes the key and the value only as
 * Java {@link SerializationSchema}s over the whole element, so this picks one field. An
 * empty field becomes a null key (a record without a key), never an empty one.
 */
public final class RowBytes implements SerializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    private final int field;

    /** @param field 0 for the key, 1 for the value */
    public RowBytes(int field) {
        if (field < 0) {
            throw new IllegalArgumentException("field must be >= 0, got " + field);
        }
        this.field = field;
    }

    @Override
    public byte[] serialize(Row element) {
        byte[] bytes = (byte[]) element.getField(field);
        return bytes == null || bytes.length == 0 ? null : bytes;
    }
}
