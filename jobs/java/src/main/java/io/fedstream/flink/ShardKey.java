package io.fedstream.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.types.Row;

/**
 * {@code Row(key, row)} with the key {@code <model_id>#<shard>}, the shard Kafka's murmur2 of
 * the device id modulo the model's shard count ({@code runtime.model_shards}): one model's
 * updates spread over that many keys, and a device's updates always meet on the same one, so
 * its dedupe state is shard-local (README, "Scaling out one model"). Like {@link KeyByField},
 * the key is built in the JVM (no crossing into Python) and keyed as {@code ROW(STRING)}.
 * Shards are integers, so the key splits back at its last {@code #} whatever the model id.
 */
public final class ShardKey implements MapFunction<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final int modelField;
    private final int deviceField;
    private final int shards;

    /**
     * @param modelField the row's model id field
     * @param deviceField the row's device id field (null keys as the empty string)
     * @param shards the number of shards, at least 1
     */
    public ShardKey(int modelField, int deviceField, int shards) {
        if (modelField < 0 || deviceField < 0 || shards < 1) {
            throw new IllegalArgumentException(
                    "bad fields or shards: " + modelField + ", " + deviceField + ", " + shards);
        }
        this.modelField = modelField;
        this.deviceField = deviceField;
        this.shards = shards;
    }

    @Override
    public Row map(Row row) {
        Object device = row.getField(deviceField);
        String text = device == null ? "" : device.toString();
        int shard = shardOf(text.getBytes(StandardCharsets.UTF_8), shards);
        return Row.of(key(row.getField(modelField), shard), row);
    }

    /** The shard of a device: Kafka's default partitioner's choice among {@code shards}. */
    static int shardOf(byte[] deviceId, int shards) {
        return (ModelPartitioner.murmur2(deviceId) & 0x7fffffff) % shards;
    }

    /** A shard's key. */
    static String key(Object modelId, int shard) {
        return (modelId == null ? "" : modelId.toString()) + "#" + shard;
    }

    /** Prints the shard of a device id: {@code ShardKey <device_id> <shards>} (tests). */
    public static void main(String[] args) {
        byte[] device = args[0].getBytes(StandardCharsets.UTF_8);
        System.out.println(shardOf(device, Integer.parseInt(args[1])));
    }
}
