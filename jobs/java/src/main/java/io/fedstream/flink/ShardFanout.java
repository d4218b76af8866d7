package io.fedstream.flink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * One {@code Row(key, row)} per shard of the row's model, keys {@code <model_id>#0} to
 * {@code <model_id>#<shards - 1>} ({@link ShardKey}): every shard of a sharded model gets the
 * model's registration, in the JVM.
 */
public final class ShardFanout implements FlatMapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int modelField;
    private final int shards;

    /**
     * @param modelField the row's model id field
     * @param shards the number of shards, at least 1
     */
    public ShardFanout(int modelField, int shards) {
        if (modelField < 0 || shards < 1) {
            throw new IllegalArgumentException("bad field or shards: " + modelField + ", " + shards);
        }
        this.modelField = modelField;
        this.shards = shards;
    }

    @Override
    public void flatMap(Row row, Collector<Row> out) {
        Object modelId = row.getField(modelField);
        for (int shard = 0; shard < shards; shard++) {
            out.collect(Row.of(ShardKey.key(modelId, shard), row));
        }
    }
}
