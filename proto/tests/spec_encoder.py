#!/usr/bin/env python3
"""Independent encoder for weir's record batch, written from `segments-format.md` only.

It shares no code with the Rust implementation (`weir_proto::batch`): it exists to show that the
spec is enough to produce byte-identical batches. Run from the repository root:

    python3 proto/tests/spec_encoder.py

prints the hex dump of the spec's worked example (the lines between the `hexdump` markers in
`segments-format.md`, fence excluded). `proto/tests/spec_hex_dump.rs` then checks that the dump in
the spec decodes with the Rust code and equals what `BatchBuilder` produces.

Python standard library only. CRC-32 is the IEEE 802.3 CRC (zlib's `crc32`), not CRC-32C; a
bitwise implementation is included and checked against zlib.
"""

import struct
import sys
import zlib

MAGIC = 1
HEADER_LEN = 57
CRC_COVERAGE_START = 17
NONE = -1  # producer_id / producer_epoch / base_sequence of a non-idempotent producer


def crc32_ieee(data: bytes) -> int:
    """CRC-32/ISO-HDLC: reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def zigzag_varint(n: int, bits: int = 64) -> bytes:
    """Zigzag (protobuf sint32/sint64), then unsigned LEB128, least significant group first."""
    assert -(1 << (bits - 1)) <= n < (1 << (bits - 1)), f"{n} does not fit in {bits} bits"
    z = ((n << 1) ^ (n >> (bits - 1))) & ((1 << bits) - 1)  # Python's >> is arithmetic
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def sint32(n: int) -> bytes:
    return zigzag_varint(n, 32)


def sint64(n: int) -> bytes:
    return zigzag_varint(n, 64)


def nullable_bytes(b):
    """A length (sint32, -1 for null) followed by that many bytes."""
    return sint32(-1) if b is None else sint32(len(b)) + b


def encode_record(offset_delta, timestamp_delta, key, value, headers) -> bytes:
    body = bytearray()
    body.append(0)  # record attributes: reserved, always 0
    body += sint64(timestamp_delta)
    body += sint32(offset_delta)
    body += nullable_bytes(key)
    body += nullable_bytes(value)
    body += sint32(len(headers))
    for hkey, hvalue in headers:
        assert hkey is not None, "header keys are never null"
        body += nullable_bytes(hkey)
        body += nullable_bytes(hvalue)
    return sint32(len(body)) + bytes(body)


def wrap_i64(n: int) -> int:
    """Two's complement wrap to 64 bits (timestamp deltas use wrapping arithmetic)."""
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def encode_batch(records, base_offset=0, producer_id=NONE, producer_epoch=NONE, base_sequence=NONE) -> bytes:
    """records: list of (key, value, timestamp, [(header_key, header_value), ...])."""
    assert records, "a batch holds at least one record"
    base_timestamp = records[0][2]
    body = b"".join(
        encode_record(i, wrap_i64(ts - base_timestamp), key, value, headers)
        for i, (key, value, ts, headers) in enumerate(records)
    )
    max_timestamp = max(ts for _, _, ts, _ in records)
    count = len(records)
    # Everything the CRC covers: [17, end).
    covered = struct.pack(
        ">hiqqqhii",
        0,  # attributes: no compression, no flags
        count - 1,  # last_offset_delta
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,  # record_count
    ) + body
    assert CRC_COVERAGE_START + len(covered) - len(body) == HEADER_LEN
    crc = crc32_ieee(covered)
    assert crc == zlib.crc32(covered), "bitwise CRC disagrees with zlib"
    batch_length = 1 + 4 + len(covered)  # bytes after the length field: magic, crc, covered
    return struct.pack(">Qib", base_offset, batch_length, MAGIC) + struct.pack(">I", crc) + covered


def worked_example() -> bytes:
    """The spec's example, with the base offset as the broker stamps it (42)."""
    return encode_batch(
        [
            (b"user-1", b"hello", 1700000000000, [(b"trace", b"abc")]),
            (None, b"world", 1700000000005, []),
        ],
        base_offset=42,
    )


def hex_dump(data: bytes) -> str:
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        lines.append(f"{at:04x}: " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines)


def self_check():
    assert crc32_ieee(b"123456789") == 0xCBF43926  # the CRC-32 check value (CRC-32C's is 0xE3069283)
    for n, enc in [(0, "00"), (-1, "01"), (1, "02"), (63, "7e"), (-64, "7f"), (64, "8001"), (-65, "8101")]:
        assert sint64(n).hex() == enc, (n, sint64(n).hex())
    assert sint32(-(1 << 31)).hex() == "ffffffff0f"


if __name__ == "__main__":
    self_check()
    batch = worked_example()
    print(hex_dump(batch))
    if "-v" in sys.argv[1:]:
        print(f"\n{len(batch)} bytes, crc {struct.unpack('>I', batch[13:17])[0]:#010x}", file=sys.stderr)
