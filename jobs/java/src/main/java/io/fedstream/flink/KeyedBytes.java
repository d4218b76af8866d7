package io.fedstream.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.types.Row;

/**
 * A sink row {@code Row(key BYTES, value BYTES)} from two fields of another row (the key
 * field {@code -1}: no key, an empty array), in the JVM instead of a Python lambda: the job's
 * dead letters and releases leave for their sinks without crossing into Python again.
 */
public final class KeyedBytes implements MapFunction<Row, Row>, ResultTypeQueryable<Row> {
    private static final long serialVersionUID = 1L;
    private static final byte[] NONE = new byte[0];

    private final int keyField;
    private final int valueField;

    /**
     * @param keyField the field holding the Kafka key, or -1 for none
     * @param valueField the field holding the Kafka value
     */
    public KeyedBytes(int keyField, int valueField) {
        if (keyField < -1 || valueField < 0) {
            throw new IllegalArgumentException("bad fields " + keyField + ", " + valueField);
        }
        this.keyField = keyField;
        this.valueField = valueField;
    }

    @Override
    public Row map(Row row) {
        byte[] key = keyField < 0 ? NONE : (byte[]) row.getField(keyField);
        return Row.of(key == null ? NONE : key, row.getField(valueField));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW_NAMED(
                new String[] {"key", "value"},
                Types.PRIMITIVE_ARRAY(Types.BYTE),
                Types.PRIMITIVE_ARRAY(Types.BYTE));
    }
}
