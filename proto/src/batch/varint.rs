//! Zigzag varints, as in protobuf `sint32`/`sint64` and Kafka's record format.
//!
//! Decoders take the input slice and return the value with the bytes consumed, or `None` if the
//! input ends mid-varint or the varint is longer than its type allows (never panics).

pub(crate) fn encode_zigzag64(value: i64, out: &mut Vec<u8>) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn encode_zigzag32(value: i32, out: &mut Vec<u8>) {
    encode_zigzag64(i64::from(value), out)
}

/// Bytes `encode_zigzag64(value)` produces.
pub(crate) fn zigzag64_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline(always)]
pub(crate) fn decode_zigzag64(input: &[u8]) -> Option<(i64, usize)> {
    // Fast paths: nearly every length, delta and count in a batch fits in three bytes.
    match input {
        [b0, ..] if *b0 < 0x80 => Some((unzigzag(u64::from(*b0)), 1)),
        [b0, b1, ..] if *b1 < 0x80 => {
            Some((unzigzag(u64::from(b0 & 0x7f) | u64::from(*b1) << 7), 2))
        }
        [b0, b1, b2, ..] if *b2 < 0x80 => Some((
            unzigzag(u64::from(b0 & 0x7f) | u64::from(b1 & 0x7f) << 7 | u64::from(*b2) << 14),
            3,
        )),
        _ => decode_zigzag64_slow(input),
    }
}

#[inline(always)]
fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn decode_zigzag64_slow(input: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    let mut i = 0;
    while i < 10 {
        let b = *input.get(i)?;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i == 9 && b > 1 {
                return None; // more than 64 bits
            }
            return Some((unzigzag(raw), i + 1));
        }
        i += 1;
    }
    None
}

#[inline(always)]
pub(crate) fn decode_zigzag32(input: &[u8]) -> Option<(i32, usize)> {
    let (v, n) = decode_zigzag64(input)?;
    if n > 5 {
        return None;
    }
    i32::try_from(v).ok().map(|v| (v, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (-65, vec![0x81, 0x01]),
        ] {
            out.clear();
            encode_zigzag64(v, &mut out);
            assert_eq!(out, bytes, "encoding {v}");
            assert_eq!(zigzag64_len(v), bytes.len());
        }
    }

    #[test]
    fn truncated_and_overlong_inputs_are_refused() {
        assert_eq!(decode_zigzag64(&[0x80]), None);
        assert_eq!(decode_zigzag64(&[]), None);
        assert_eq!(decode_zigzag64(&[0xff; 11]), None);
        assert_eq!(decode_zigzag32(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
    }

    proptest! {
        #[test]
        fn roundtrip64(v in any::<i64>()) {
            let mut out = Vec::new();
            encode_zigzag64(v, &mut out);
            prop_assert_eq!(out.len(), zigzag64_len(v));
            prop_assert_eq!(decode_zigzag64(&out), Some((v, out.len())));
        }

        #[test]
        fn roundtrip32(v in any::<i32>()) {
            let mut out = Vec::new();
            encode_zigzag32(v, &mut out);
            prop_assert_eq!(decode_zigzag32(&out), Some((v, out.len())));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = decode_zigzag64(&bytes);
            let _ = decode_zigzag32(&bytes);
        }
    }
}
