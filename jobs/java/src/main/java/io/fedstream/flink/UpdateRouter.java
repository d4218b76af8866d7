package io.fedstream.flink;

import java.util.HashSet;
import java.util.Set;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.types.Row;

/**
 * Routes the common records, well-formed updates and device keys, without crossing into Python.
 *
 * <p>Input: the Kafka source's rows {@code (value, topic, partition, offset)}. Output: the job's
 * routed rows {@code (model_id, kind, value, topic, partition, offset, device_id)}. An update
 * only needs its {@code model_id} and {@code device_id} to be keyed; they are the second and
 * third fields of every GradientUpdate schema version (after {@code update_id}), so this reads
 * the single-object header and three Avro strings, and nothing of the delta. A device key (a
 * DeviceKey registry record) is keyed by its first field, {@code device_id}, and a fragment of
 * a large update (RecordFragment) by its second, {@code signer}. A record on the
 * updates (devices) topic whose writer fingerprint is one of the given GradientUpdate
 * (DeviceKey) fingerprints, and whose ids are valid UTF-8 within {@code maxIdBytes} (model id
 * and a device key's device id non-empty), leaves as kind {@code "update"} ({@code "device"}).
 * Everything else leaves as kind {@code "raw"} for the Python route, which decodes it whole
 * and writes the dead letter with its exact reason. The rest of an update's or key's body is
 * decoded (and refused when broken) by the device gate, which decodes both anyway.
 *
 * <p>Both kinds the gate receives take this one path, so a device's key and its updates
 * reach the gate in the order they were read (a key routed by Python would trail the updates
 * read after it, and those would wait for it or be refused).
 *
 * <p>Why: the Python route cost one JVM-to-Python crossing of every update (its 0.4 to 4 MB
 * value converted each way) only to read two short strings.
 */
public final class UpdateRouter implements MapFunction<Row, Row>, ResultTypeQueryable<Row> {
    private static final long serialVersionUID = 1L;
    /** What the Python route (and the rest of the job) handles. */
    public static final String RAW = "raw";

    public static final String UPDATE = "update";
    public static final String DEVICE = "device";

    private final String updatesTopic;
    private final String devicesTopic;
    private final HashSet<Long> updateFingerprints;
    private final HashSet<Long> fragmentFingerprints;
    private final HashSet<Long> deviceFingerprints;
    private final int maxIdBytes;

    /**
     * @param updatesTopic the topic devices write updates to
     * @param updateFingerprints the GradientUpdate writer fingerprints (unsigned, as 16 hex
     *     digits, comma-separated) whose schema starts with update_id, device_id, model_id
     *     strings
     * @param fragmentFingerprints the RecordFragment writer fingerprints whose schema starts
     *     with record_id, signer strings (a large update's fragment is keyed by its signer)
     * @param devicesTopic the device registry's topic
     * @param deviceFingerprints the DeviceKey writer fingerprints whose schema starts with a
     *     device_id string
     * @param maxIdBytes the longest id in bytes of UTF-8 (limits.max_id_length)
     */
    public UpdateRouter(
            String updatesTopic,
            String updateFingerprints,
            String fragmentFingerprints,
            String devicesTopic,
            String deviceFingerprints,
            int maxIdBytes) {
        if (maxIdBytes < 1) {
            throw new IllegalArgumentException("maxIdBytes must be >= 1, got " + maxIdBytes);
        }
        this.updatesTopic = updatesTopic;
        this.devicesTopic = devicesTopic;
        this.updateFingerprints = AvroPrefix.fingerprints(updateFingerprints);
        this.fragmentFingerprints = AvroPrefix.fingerprints(fragmentFingerprints);
        this.deviceFingerprints = AvroPrefix.fingerprints(deviceFingerprints);
        this.maxIdBytes = maxIdBytes;
    }

    @Override
    public Row map(Row row) {
        byte[] value = (byte[]) row.getField(0);
        String topic = (String) row.getField(1);
        String[] keys = keys(value, topic);
        return Row.of(keys[1], keys[0], value, topic, row.getField(2), row.getField(3), keys[2]);
    }

    /** {kind, model_id, device_id} of a record read from {@code topic}. */
    public String[] keys(byte[] value, String topic) {
        if (updatesTopic.equals(topic)) {
            String[] ids = ids(value, updateFingerprints, 3);
            if (ids != null && !ids[2].isEmpty()) {
                return new String[] {UPDATE, ids[2], ids[1]};
            }
            ids = ids(value, fragmentFingerprints, 2);
            if (ids != null && !ids[0].isEmpty() && !ids[1].isEmpty()) {
                return new String[] {UPDATE, "", ids[1]}; // its model is known once whole
            }
        } else if (devicesTopic.equals(topic)) {
            String[] ids = ids(value, deviceFingerprints, 1);
            if (ids != null && !ids[0].isEmpty()) {
                return new String[] {DEVICE, "", ids[0]};
            }
        }
        return new String[] {RAW, "", ""};
    }

    /**
     * The first {@code count} fields (Avro strings) of a record written with one of {@code
     * fingerprints}, or null if it is anything else or they are malformed or too long.
     */
    private String[] ids(byte[] value, Set<Long> fingerprints, int count) {
        AvroPrefix body = AvroPrefix.of(value, fingerprints, maxIdBytes);
        if (body == null) {
            return null;
        }
        String[] ids = new String[count];
        for (int i = 0; i < count; i++) {
            ids[i] = body.string();
            if (ids[i] == null) {
                return null;
            }
        }
        return ids;
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW_NAMED(
                new String[] {
                    "model_id", "kind", "value", "topic", "partition", "offset", "device_id"
                },
                Types.STRING,
                Types.STRING,
                Types.PRIMITIVE_ARRAY(Types.BYTE),
                Types.STRING,
                Types.INT,
                Types.LONG,
                Types.STRING);
    }
}
