package io.fedstream.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * {@code Row(key, row)} with the key a string field of the row: what PyFlink's
 * {@code key_by} builds in a Python operator (its {@code AddKey}) before keying on field 0,
 * built in the JVM instead, so keying an update by device or model costs no crossing into
 * Python. Same key, same key type ({@code ROW(STRING)}), same key groups: state written by
 * the Python keying restores unchanged. A null field keys as the empty string.
 *
 * <p>With a {@code width}, a shorter row is padded with null fields to it, so that streams of
 * narrower rows (the device gate's routed rows) and wider ones (DeviceJoin's, which carry a
 * registry record) meet in one union of one row type.
 */
public final class KeyByField implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int field;
    private final int width;

    /** @param field the row's string field to key by */
    public KeyByField(int field) {
        this(field, 0);
    }

    /**
     * @param field the row's string field to key by
     * @param width the arity every keyed row is padded to (0: rows are kept as they are)
     */
    public KeyByField(int field, int width) {
        if (field < 0 || width < 0) {
            throw new IllegalArgumentException("field and width must be >= 0: " + field + ", " + width);
        }
        this.field = field;
        this.width = width;
    }

    @Override
    public Row map(Row row) {
        Object key = row.getField(field);
        return Row.of(key == null ? "" : key.toString(), padded(row));
    }

    private Row padded(Row row) {
        int arity = row.getArity();
        if (arity >= width) {
            return row;
        }
        Row wide = new Row(row.getKind(), width);
        for (int i = 0; i < arity; i++) {
            wide.setField(i, row.getField(i));
        }
        return wide;
    }
}
