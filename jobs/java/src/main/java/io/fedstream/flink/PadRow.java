package io.fedstream.flink;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * A row padded with null fields to a width: the device gate's routed rows (7 fields) and the
 * registry join's (8: the device's registry record attached, {@link DeviceJoin}) meet in one
 * union of one row type before the shards and the aggregate. A row as wide already is handed
 * on as it is.
 */
public final class PadRow implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int width;

    /** @param width the arity of every row out */
    public PadRow(int width) {
        if (width < 1) {
            throw new IllegalArgumentException("width must be >= 1, got " + width);
        }
        this.width = width;
    }

    @Override
    public Row map(Row row) {
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
