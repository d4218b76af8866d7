package io.fedstream.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.apache.flink.connector.kafka.sink.KafkaPartitioner;
import org.apache.flink.types.Row;

/**
 * Every chunk of every release of a model in one partition: the partition Kafka's default
 * partitioner gives the key {@code model_id}.
 *
 * <p>A release record's key is {@code <model_id>#<chunk_index>} ({@code
 * fedstream.schemas.keys.release_key}): one key per chunk, so that compaction keeps every
 * chunk of a model's newest release. Kafka's default partitioner would hash those keys
 * apart; this one hashes only the model id (murmur2, like Kafka's and kafka-python's
 * default partitioners on the key {@code model_id}, which registrations carry), so the
 * chunks of a release stay together and in order, and a model's releases land in the
 * partition its registrations do when both topics have as many partitions. A key without
 * {@code #} is hashed whole.
 */
public final class ModelPartitioner implements KafkaPartitioner<Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public int partition(Row record, byte[] key, byte[] value, String topic, int[] partitions) {
        if (partitions.length == 0) {
            throw new IllegalArgumentException("topic " + topic + " has no partitions");
        }
        if (key == null) {
            return partitions[0];
        }
        return partitions[(murmur2(modelId(key)) & 0x7fffffff) % partitions.length];
    }

    /** The key up to its last '#': the model id of a release key. */
    static byte[] modelId(byte[] key) {
        for (int i = key.length - 1; i >= 0; i--) {
            if (key[i] == '#') {
                return Arrays.copyOfRange(key, 0, i);
            }
        }
        return key;
    }

    /** Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), seed 0x9747b28c. */
    static int murmur2(byte[] data) {
        int length = data.length;
        int seed = 0x9747b28c;
        final int m = 0x5bd1e995;
        final int r = 24;
        int h = seed ^ length;
        int length4 = length / 4;
        for (int i = 0; i < length4; i++) {
            final int i4 = i * 4;
            int k = (data[i4] & 0xff) + ((data[i4 + 1] & 0xff) << 8)
                    + ((data[i4 + 2] & 0xff) << 16) + ((data[i4 + 3] & 0xff) << 24);
            k *= m;
            k ^= k >>> r;
            k *= m;
            h *= m;
            h ^= k;
        }
        switch (length % 4) {
            case 3:
                h ^= (data[(length & ~3) + 2] & 0xff) << 16;
            case 2:
                h ^= (data[(length & ~3) + 1] & 0xff) << 8;
            case 1:
                h ^= data[length & ~3] & 0xff;
                h *= m;
            default:
                break;
        }
        h ^= h >>> 13;
        h *= m;
        h ^= h >>> 15;
        return h;
    }

    /** For a check from the command line: the partition of a key among n. */
    public static void main(String[] args) {
        byte[] key = args[0].getBytes(StandardCharsets.UTF_8);
        System.out.println((murmur2(modelId(key)) & 0x7fffffff) % Integer.parseInt(args[1]));
    }
}
