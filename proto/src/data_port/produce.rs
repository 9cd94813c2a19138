//! Produce on the data port: the native produce path, so a client sends record batches without
//! HTTP/2 framing or an encode copy (byte layout in `segments-format.md`, "Produce on the data
//! port"; the broker's side is `weir-broker`'s `server::data_port_produce`).
//!
//! A connection whose first request sets [`FLAG_PRODUCE`] is a produce connection: it carries
//! produce requests only, pipelined like a gRPC `ProduceStream` (answers carry the request's
//! correlation id and may come in any order across partitions). A request is
//! - `u32` body length, `u8` version (1), `u8` flags ([`FLAG_PRODUCE`], no other bit),
//!   `u32` header length;
//! - the header: a protobuf `weir.v1.ProduceRequest` with its `batch` field empty;
//! - the batch: every byte after the header, the record batch exactly as gRPC would carry it.
//!
//! So the fields (acks, conditions, correlation id) and their meaning are gRPC's, decoded by the
//! same generated code, and the batch bytes go from the client's buffer to the socket and from
//! the socket into the buffer the broker appends, never re-encoded. An answer is a `u32` body
//! length, a `u8` [`AnswerKind`], and a protobuf: a `ProduceResponse` ([`AnswerKind::Produced`])
//! or, once, a `weir.v1.Error` saying why the broker ends the connection
//! ([`AnswerKind::Closing`]: a request over the size limit, a malformed request, shutdown),
//! after which it closes it.

use prost::Message;

use super::{FrameError, VERSION};
use crate::v1::{Error, ProduceRequest, ProduceResponse};

/// Request flag: a produce request (the connection's first request decides its kind).
pub const FLAG_PRODUCE: u8 = 0x80;
/// Version, flags, header length: the bytes of a produce request's body before its header.
pub const PRODUCE_FIXED_LEN: usize = 1 + 1 + 4;
/// The largest header a broker reads: the fields besides the batch, of which only
/// `expected_keys` can grow (a key condition per record at most).
pub const MAX_PRODUCE_HEADER_LEN: usize = 1 << 20;
/// Bytes before an answer's protobuf: the body length and the kind.
pub const ANSWER_PREFIX_LEN: usize = 4 + 1;

/// What an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// A `ProduceResponse` to the request with its correlation id.
    Produced = 0,
    /// A `weir.v1.Error`: the broker ends the connection; requests without an answer were not
    /// appended (the client sends them again, or fails them with a non-retriable reason).
    Closing = 1,
}

/// The bytes a produce request starts with: length prefix, fixed fields and header. The caller
/// writes `request.batch` right after them (a vectored write, or two writes), so the batch is
/// never copied into a frame buffer.
pub fn encode_request_head(request: &ProduceRequest) -> Vec<u8> {
    let header = ProduceRequest {
        batch: Default::default(),
        ..request.clone()
    };
    let header_len = header.encoded_len();
    let body_len = PRODUCE_FIXED_LEN + header_len + request.batch.len();
    let mut out = Vec::with_capacity(4 + PRODUCE_FIXED_LEN + header_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.push(VERSION);
    out.push(FLAG_PRODUCE);
    out.extend_from_slice(&(header_len as u32).to_be_bytes());
    header
        .encode(&mut out)
        .expect("a Vec grows to fit the message");
    out
}

/// The fixed fields of a produce request body (after its length prefix): the header's length,
/// checked against the body's length and the header limit.
pub fn decode_request_fixed(
    fixed: &[u8; PRODUCE_FIXED_LEN],
    body_len: usize,
) -> Result<usize, FrameError> {
    if fixed[0] != VERSION {
        return Err(FrameError::Version(fixed[0]));
    }
    if fixed[1] != FLAG_PRODUCE {
        return Err(FrameError::Flags(fixed[1]));
    }
    let header_len = u32::from_be_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]) as usize;
    if header_len > MAX_PRODUCE_HEADER_LEN || PRODUCE_FIXED_LEN + header_len > body_len {
        return Err(FrameError::ProduceHeader {
            header_len,
            body_len,
        });
    }
    Ok(header_len)
}

/// A request's header (its protobuf bytes); the caller sets `batch` from the bytes that follow.
pub fn decode_request_header(header: &[u8]) -> Result<ProduceRequest, FrameError> {
    let request =
        ProduceRequest::decode(header).map_err(|e| FrameError::Protobuf(e.to_string()))?;
    if !request.batch.is_empty() {
        // The batch travels after the header, never inside it: one place, one meaning.
        return Err(FrameError::BatchInHeader);
    }
    Ok(request)
}

/// An answer, whole: length prefix, kind, protobuf.
pub fn encode_answer(answer: &Answer) -> Vec<u8> {
    let (kind, len) = match answer {
        Answer::Produced(r) => (AnswerKind::Produced, r.encoded_len()),
        Answer::Closing(e) => (AnswerKind::Closing, e.encoded_len()),
    };
    let mut out = Vec::with_capacity(ANSWER_PREFIX_LEN + len);
    out.extend_from_slice(&((1 + len) as u32).to_be_bytes());
    out.push(kind as u8);
    match answer {
        Answer::Produced(r) => r.encode(&mut out),
        Answer::Closing(e) => e.encode(&mut out),
    }
    .expect("a Vec grows to fit the message");
    out
}

/// A decoded answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Produced(ProduceResponse),
    Closing(Error),
}

/// An answer's body (after its length prefix): kind, then the protobuf.
pub fn decode_answer(body: &[u8]) -> Result<Answer, FrameError> {
    let (&kind, message) = body
        .split_first()
        .ok_or(FrameError::TooShort { len: 0, needed: 1 })?;
    let protobuf = |e: prost::DecodeError| FrameError::Protobuf(e.to_string());
    match kind {
        0 => ProduceResponse::decode(message)
            .map(Answer::Produced)
            .map_err(protobuf),
        1 => Error::decode(message)
            .map(Answer::Closing)
            .map_err(protobuf),
        k => Err(FrameError::Kind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Acks, KeyExpectation};
    use proptest::prelude::*;

    fn request(batch: &[u8]) -> ProduceRequest {
        ProduceRequest {
            correlation_id: 7,
            topic: "orders".into(),
            partition: 2,
            batch: batch.to_vec().into(),
            acks: Acks::Durable as i32,
            expected_offset: Some(40),
            expected_keys: vec![KeyExpectation {
                key: b"k".to_vec().into(),
                offset: None,
            }],
        }
    }

    /// Splits a whole encoded request the way the broker reads it.
    fn decode(bytes: &[u8]) -> Result<ProduceRequest, FrameError> {
        let body_len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(body_len, bytes.len() - 4);
        let body = &bytes[4..];
        let fixed: [u8; PRODUCE_FIXED_LEN] = body[..PRODUCE_FIXED_LEN].try_into().unwrap();
        let header_len = decode_request_fixed(&fixed, body_len)?;
        let header_end = PRODUCE_FIXED_LEN + header_len;
        let mut request = decode_request_header(&body[PRODUCE_FIXED_LEN..header_end])?;
        request.batch = body[header_end..].to_vec().into();
        Ok(request)
    }

    #[test]
    fn a_request_is_its_head_then_its_batch_unchanged() {
        let req = request(b"batch bytes");
        let mut bytes = encode_request_head(&req);
        assert_eq!(bytes[4], VERSION);
        assert_eq!(bytes[5], FLAG_PRODUCE);
        bytes.extend_from_slice(&req.batch);
        assert!(bytes.ends_with(b"batch bytes"));
        assert_eq!(decode(&bytes).unwrap(), req);
    }

    #[test]
    fn malformed_requests_are_named() {
        let body_len = 100;
        let mut fixed = [VERSION, FLAG_PRODUCE, 0, 0, 0, 10];
        assert_eq!(decode_request_fixed(&fixed, body_len), Ok(10));
        fixed[0] = 2;
        assert_eq!(
            decode_request_fixed(&fixed, body_len),
            Err(FrameError::Version(2))
        );
        fixed[0] = VERSION;
        fixed[1] = FLAG_PRODUCE | 1;
        assert_eq!(
            decode_request_fixed(&fixed, body_len),
            Err(FrameError::Flags(0x81))
        );
        fixed[1] = FLAG_PRODUCE;
        fixed[5] = 200; // a header longer than the body
        assert!(matches!(
            decode_request_fixed(&fixed, body_len),
            Err(FrameError::ProduceHeader { .. })
        ));
        let inside = request(b"x").encode_to_vec();
        assert_eq!(
            decode_request_header(&inside),
            Err(FrameError::BatchInHeader)
        );
        assert!(matches!(
            decode_request_header(&[0xff, 0xff]),
            Err(FrameError::Protobuf(_))
        ));
    }

    #[test]
    fn answers_round_trip_by_kind() {
        let produced = Answer::Produced(ProduceResponse {
            correlation_id: 9,
            base_offset: 10,
            last_offset: 12,
            error: None,
            duplicate: true,
        });
        let closing = Answer::Closing(crate::status::error(
            crate::v1::ErrorCode::BatchTooLarge,
            "too big",
        ));
        for answer in [produced, closing] {
            let bytes = encode_answer(&answer);
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(decode_answer(&bytes[4..]).unwrap(), answer);
        }
        assert_eq!(decode_answer(&[9]), Err(FrameError::Kind(9)));
    }

    proptest! {
        #[test]
        fn arbitrary_heads_and_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request_header(&bytes);
            let _ = decode_answer(&bytes);
            if bytes.len() >= PRODUCE_FIXED_LEN {
                let fixed: [u8; PRODUCE_FIXED_LEN] = bytes[..PRODUCE_FIXED_LEN].try_into().unwrap();
                let _ = decode_request_fixed(&fixed, bytes.len());
            }
        }

        #[test]
        fn requests_round_trip(batch in proptest::collection::vec(any::<u8>(), 0..300), id: u64, partition: u32, expected: Option<u64>) {
            let req = ProduceRequest { correlation_id: id, partition, expected_offset: expected, ..request(&batch) };
            let mut bytes = encode_request_head(&req);
            bytes.extend_from_slice(&req.batch);
            prop_assert_eq!(decode(&bytes).unwrap(), req);
        }
    }
}
