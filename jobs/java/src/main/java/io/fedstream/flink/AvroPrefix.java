package io.fedstream.flink;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.Set;

/**
 * Reads the first fields of an Avro single-object encoded record (header {@code C3 01}, the
 * writer schema's 8-byte little-endian fingerprint, then the body), one at a time, without a
 * schema library: the JVM operators read a record's leading ids (UpdateRouter) or a device
 * key (DeviceJoin) this way and never the rest of the body. Every read is bounded: a string
 * field longer than {@code maxBytes} (a bytes field: than its own bound), or one running past
 * the end, reads as null.
 */
final class AvroPrefix {
    private static final int HEADER = 10;

    private final byte[] value;
    private final int maxBytes;
    private int pos = HEADER;

    private AvroPrefix(byte[] value, int maxBytes) {
        this.value = value;
        this.maxBytes = maxBytes;
    }

    /**
     * A reader of {@code value}'s body when it is single-object encoded with one of {@code
     * fingerprints}, else null.
     */
    static AvroPrefix of(byte[] value, Set<Long> fingerprints, int maxBytes) {
        if (value == null || value.length < HEADER || value[0] != (byte) 0xc3 || value[1] != 1) {
            return null;
        }
        long fingerprint = ByteBuffer.wrap(value, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        return fingerprints.contains(fingerprint) ? new AvroPrefix(value, maxBytes) : null;
    }

    /** Fingerprints given as 16 hex digits each (unsigned), comma-separated. */
    static HashSet<Long> fingerprints(String hexes) {
        HashSet<Long> set = new HashSet<>();
        for (String hex : hexes.split(",")) {
            if (!hex.isEmpty()) {
                set.add(Long.parseUnsignedLong(hex, 16));
            }
        }
        return set;
    }

    /** The next field as an Avro string (valid UTF-8), or null if malformed or too long. */
    String string() {
        byte[] raw = bytes(maxBytes);
        if (raw == null) {
            return null;
        }
        CharsetDecoder utf8 =
                StandardCharsets.UTF_8
                        .newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT);
        try {
            CharBuffer chars = utf8.decode(ByteBuffer.wrap(raw));
            return chars.toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /** The next field as Avro bytes, or null if malformed or longer than {@code max}. */
    byte[] bytes(int max) {
        long length = zigzagLong();
        if (length < 0 || length > max || pos + length > value.length) {
            return null;
        }
        byte[] raw = new byte[(int) length];
        System.arraycopy(value, pos, raw, 0, (int) length);
        pos += (int) length;
        return raw;
    }

    /** Whether every byte of the record has been read (a whole record has no more). */
    boolean atEnd() {
        return pos == value.length;
    }

    /**
     * The next field as an Avro long or int (an enum's index too), or -1 if it is malformed or
     * negative.
     */
    long zigzagLong() {
        long raw = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos >= value.length) {
                return -1;
            }
            byte b = value[pos++];
            raw |= (long) (b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                long decoded = (raw >>> 1) ^ -(raw & 1);
                return decoded < 0 ? -1 : decoded;
            }
        }
        return -1;
    }
}
