package io.fedstream.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * {@code Row(key, row)} with the key a string field of the row: what PyFlink's
 * {@code key_by} builds in a Python operator (its {@code AddKey}) before keying on field 0,
 * built in the JVM instead, so keying an update by device or model costs no crossing into
 * Python. Same key, same key type ({@code ROW(STRING)}), same key groups: state written by
 * the Python keying restores unchanged. A null field keys as the empty string.
 */
public final class KeyByField implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int field;

    /** @param field the row's string field to key by */
    public KeyByField(int field) {
        if (field < 0) {
            throw new IllegalArgumentException("field must be >= 0, got " + field);
        }
        this.field = field;
    }

    @Override
    public Row map(Row row) {
        Object key = row.getField(field);
        return Row.of(key == null ? "" : key.toString(), row);
    }
}
