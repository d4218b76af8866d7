package io.fedstream.flink;

import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HashSet;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Joins each update to its device's registry entry in the JVM, keyed by device id, so that the
 * update of a registered device crosses into Python once (the aggregate operator, which
 * verifies its signature against the attached entry) instead of twice (the device gate, then
 * the aggregate).
 *
 * <p>Input: {@code Row(device_id, routed row)} pairs, the routed rows of kind {@code update}
 * and {@code device} (UpdateRouter's layout). State: the device's newest registry record (its
 * DeviceKey bytes, about 100 B) when that record is well-formed; no crypto happens here.
 *
 * <ul>
 *   <li>A registry record replaces the stored one when it passes the gate's own entry checks
 *       (a whole DeviceKey of the known layout, a 32-byte public key whose SHA-256 starts with
 *       the key id),
 *       else clears it; either way it also goes on to the device gate (side output), which
 *       keeps its own copy, dead-letters a broken record and decides the updates waiting for
 *       it.
 *   <li>An update of a device with a stored record leaves on the main output as kind {@code
 *       signed}, with the record in an 8th field: the aggregate verifies it with the same
 *       {@code verify_update} the gate uses and refuses it (UNAUTHENTICATED) if it fails, so
 *       a revoked key is refused there.
 *   <li>Everything else goes to the gate unchanged: an update of a device with no stored
 *       record (not registered yet: the gate's grace; registered before this operator existed:
 *       the gate's state has the entry; or its newest record was broken: the gate keeps the
 *       previous entry), and a fragment of a large update (empty model id), which the gate
 *       verifies and reassembles.
 * </ul>
 *
 * <p>So this operator only ever narrows what skips the gate to devices whose newest record
 * both it and the gate accept: no state needs migrating, and a record it cannot read keeps
 * the gate's behaviour.
 */
public final class DeviceJoin extends KeyedProcessFunction<Row, Row, Row> {
    private static final long serialVersionUID = 1L;
    /** The kind of an update that still has to be verified (by the aggregate). */
    public static final String SIGNED = "signed";

    private static final int PUBLIC_KEY_BYTES = 32;
    private static final int KEY_ID_HEX_DIGITS = 16;

    private final OutputTag<Row> gate;
    private final HashSet<Long> deviceFingerprints;
    private final int statusSymbols;
    private final int maxIdBytes;
    private transient ValueState<byte[]> entry;

    /**
     * @param gate the side output of what goes to the device gate (the input pairs, as they
     *     came)
     * @param deviceFingerprints the DeviceKey writer fingerprints (16 hex digits each,
     *     comma-separated) whose fields are exactly device_id and key_id strings, public_key
     *     bytes, the status enum and created_at long (a record of any other layout goes to
     *     the gate)
     * @param statusSymbols how many symbols the status enum has
     * @param maxIdBytes the longest id in bytes of UTF-8 (limits.max_id_length)
     */
    public DeviceJoin(
            OutputTag<Row> gate, String deviceFingerprints, int statusSymbols, int maxIdBytes) {
        this.gate = gate;
        this.deviceFingerprints = AvroPrefix.fingerprints(deviceFingerprints);
        this.statusSymbols = statusSymbols;
        this.maxIdBytes = maxIdBytes;
    }

    @Override
    public void open(OpenContext context) {
        entry =
                getRuntimeContext()
                        .getState(
                                new ValueStateDescriptor<>(
                                        "device_key",
                                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO));
    }

    @Override
    public void processElement(Row pair, Context ctx, Collector<Row> out) throws Exception {
        Row row = (Row) pair.getField(1);
        String kind = (String) row.getField(1);
        byte[] value = (byte[]) row.getField(2);
        if (UpdateRouter.DEVICE.equals(kind)) {
            if (usable(value, (String) row.getField(6))) {
                entry.update(value);
            } else {
                entry.clear();
            }
            ctx.output(gate, pair);
            return;
        }
        byte[] known = entry.value();
        String modelId = (String) row.getField(0);
        if (known == null || !UpdateRouter.UPDATE.equals(kind) || modelId.isEmpty()) {
            ctx.output(gate, pair);
            return;
        }
        out.collect(
                Row.of(
                        modelId,
                        SIGNED,
                        value,
                        row.getField(3),
                        row.getField(4),
                        row.getField(5),
                        row.getField(6),
                        known));
    }

    /**
     * Whether {@code value} is a DeviceKey of {@code device} the gate will accept as an entry:
     * a whole record of the known layout (device_id, key_id, public_key, status, created_at)
     * that decodes, with a 32-byte public key and a key id that is the key's (RegisteredKey.
     * from_record's checks; the status itself is read by the aggregate).
     */
    public boolean usable(byte[] value, String device) {
        AvroPrefix body = AvroPrefix.of(value, deviceFingerprints, maxIdBytes);
        if (body == null || !device.equals(body.string())) {
            return false;
        }
        String keyId = body.string();
        byte[] publicKey = body.bytes(PUBLIC_KEY_BYTES);
        if (keyId == null || publicKey == null || publicKey.length != PUBLIC_KEY_BYTES) {
            return false;
        }
        long status = body.zigzagLong();
        long createdAt = body.zigzagLong();
        return status >= 0
                && status < statusSymbols
                && createdAt >= 0
                && body.atEnd()
                && keyId.equals(keyIdOf(publicKey));
    }

    /** The first 16 hex digits of the SHA-256 of a raw public key (signing.key_id_of). */
    static String keyIdOf(byte[] publicKey) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256").digest(publicKey);
            StringBuilder hex = new StringBuilder(KEY_ID_HEX_DIGITS);
            for (int i = 0; i < KEY_ID_HEX_DIGITS / 2; i++) {
                hex.append(String.format("%02x", digest[i] & 0xff));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JVM has SHA-256", e);
        }
    }
}
