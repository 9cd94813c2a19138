//! The data port's frames: weir's small binary fetch protocol, served with sendfile(2).
//!
//! The byte layout is specified in `segments-format.md` ("Data-port frames"); this module is
//! the one encoder and decoder of it, used by the broker and the client alike.
//!
//! A connection carries fetches one after another. The client sends a [`FetchFrame`]; the
//! broker answers with frames, each a 32-byte [`ResponseHeader`] followed by `length` bytes:
//! - `Data`: whole record batches (straight from the segment files); `length` 0 is a
//!   keep-alive while following;
//! - `End`: a non-follow fetch is complete; the client may send its next request;
//! - `Error`: a UTF-8 message; the broker closes the connection after it.
//!
//! A follower replicating a partition sends the same request with [`FLAG_REPLICA`] and a
//! [`ReplicaFetch`] after the fixed fields (who asks, in which epochs, how far it has synced).
//! Its answer may also hold:
//! - `Epoch`: 12 bytes, a leader epoch (`u32`) and the offset it starts at (`u64`): the
//!   follower records it in its epoch history before appending the batches that follow;
//! - `Diverging`: 12 bytes, the leader's largest epoch (`u32`, 0 for none) not newer than the
//!   follower's last one and the offset (`u64`) where that epoch ends in the leader's log; the
//!   follower truncates (by epoch, KIP-101) and fetches again. It ends the fetch like `End`;
//! - `OutOfRange`: 12 bytes, like an `Epoch` frame: the leader's epoch (`u32`, 0 for none) of
//!   the first offset it still holds, and that offset (`u64`), its log start. The follower's
//!   fetch offset is below it (retention deleted what it needs next), or its log shares no
//!   epoch with what the leader kept: the follower empties its log, restarts it at that offset
//!   with that epoch (Kafka's truncate-fully-and-start-at) and fetches again. It ends the
//!   fetch like `End`. A follower that does not know the kind treats it as a broken
//!   connection and retries, as it retried the `Error` frame (OFFSET_OUT_OF_RANGE) sent before.
//!
//! An `Error` frame for OFFSET_OUT_OF_RANGE carries the partition's high watermark (the log end
//! for a replica fetch) and log start in its header, as other frames do; other `Error` frames
//! carry 0 there.
//!
//! In the answer to a replica fetch, `high_watermark` is the partition's committed high
//! watermark (the follower keeps it, capped by its own log end), not the leader's log end, and
//! the `End` frame's flags byte may ask the follower to sync ([`RESPONSE_FLAG_SYNC_WANTED`]).
//!
//! A connection whose first request sets the produce flag carries produce requests instead
//! ([`produce`], with the `grpc` feature: its header is a protobuf `ProduceRequest`).
//!
//! A connection to a listener that requires a token starts with an [`authenticate`] request
//! (flags bit 6) carrying it; the broker answers `End` and the connection goes on as the
//! token's user, or `Error` (UNAUTHENTICATED) and closes it.
//!
//! All integers are big-endian, as in the record batch format.

pub mod authenticate;
#[cfg(feature = "grpc")]
pub mod produce;

/// Protocol version in every request; a broker refuses versions it does not speak.
pub const VERSION: u8 = 1;
/// The largest request body (after its length prefix) a broker reads.
pub const MAX_REQUEST_LEN: usize = 1024;
/// Fixed size of a response header.
pub const RESPONSE_HEADER_LEN: usize = 32;
/// Request flag: keep the fetch open and push new batches as they are appended.
pub const FLAG_FOLLOW: u8 = 0b1;
/// Request flag: a follower's fetch; a [`ReplicaFetch`] follows the fixed fields.
pub const FLAG_REPLICA: u8 = 0b10;
/// Request flag: a consumer's fetch quotes the leader epoch it last read in (KIP-320); a
/// `u32` follows the fixed fields. Never with [`FLAG_REPLICA`], whose fields carry the epoch.
pub const FLAG_LEADER_EPOCH: u8 = 0b100;
/// Bytes of a [`ReplicaFetch`] in a request.
const REPLICA_FETCH_LEN: usize = 4 + 8 + 4 + 4 + 8;
/// Response flag (in the `End` frame of a replica fetch): a produce waits for the in-sync
/// replicas to sync (acks=durable); the follower syncs its log before its next fetch, which
/// reports the new durable offset.
pub const RESPONSE_FLAG_SYNC_WANTED: u8 = 0b1;
/// Bytes of the payload of an `Epoch` or `Diverging` frame.
pub const EPOCH_PAYLOAD_LEN: usize = 12;

/// A malformed frame. The broker answers a malformed request with an `Error` frame
/// (INVALID_REQUEST) and closes the connection; a client treats a malformed response as a
/// broken connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request body of {0} bytes; at most 1024 are accepted")]
    TooLong(usize),
    #[error("request body of {len} bytes is too short: {needed} needed")]
    TooShort { len: usize, needed: usize },
    #[error("unsupported data-port version {0}; this side speaks version 1")]
    Version(u8),
    #[error("unknown request flags {0:#04x}")]
    Flags(u8),
    #[error("request flags {0:#04x} set both the replica bit and the leader-epoch bit")]
    ReplicaWithLeaderEpoch(u8),
    #[error("topic name is not UTF-8")]
    TopicNotUtf8,
    #[error("an Authenticate request's token is not UTF-8")]
    TokenNotUtf8,
    #[error("request body has {0} bytes after its last field")]
    Trailing(usize),
    #[error("unknown response frame kind {0}")]
    Kind(u8),
    #[error("an Epoch, Diverging or OutOfRange frame carries 12 bytes, not {0}")]
    EpochPayload(usize),
    #[error(
        "a produce request's header of {header_len} bytes does not fit its body of {body_len} (or is over 1 MiB)"
    )]
    ProduceHeader { header_len: usize, body_len: usize },
    #[error("a produce request's header is not a valid ProduceRequest: {0}")]
    Protobuf(String),
    #[error("a produce request's header carries a batch; the batch follows the header")]
    BatchInHeader,
}

/// A fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFrame {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Soft limit of one `Data` frame; 0 means the broker's default (1 MiB), capped at 16 MiB.
    pub max_bytes: u32,
    /// As gRPC `FetchRequest.max_wait_ms`: without follow, how long an empty fetch waits for
    /// data; with follow, the keep-alive interval (0: none).
    pub max_wait_ms: u32,
    pub follow: bool,
    /// Set on a follower's fetch ([`FLAG_REPLICA`]).
    pub replica: Option<ReplicaFetch>,
    /// A consumer's current leader epoch ([`FLAG_LEADER_EPOCH`]): a leader of an older epoch
    /// answers UNKNOWN_LEADER_EPOCH, of a newer one FENCED_LEADER_EPOCH (as gRPC
    /// `FetchRequest.current_leader_epoch`). `None` on a follower's fetch.
    pub current_leader_epoch: Option<u32>,
}

/// What a follower adds to its fetch. The fetch offset is its log end: the leader counts it
/// as the follower's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetch {
    /// The follower's broker id.
    pub replica_id: u32,
    /// The broker epoch of the follower's current start (KIP-903).
    pub broker_epoch: u64,
    /// The leader epoch the follower follows; an older one is refused FENCED_LEADER_EPOCH.
    pub leader_epoch: u32,
    /// The newest epoch in the follower's epoch history (0: none), for the divergence check.
    pub last_fetched_epoch: u32,
    /// The follower's log is synced (fdatasync) below this offset: the durable watermark.
    pub durable_offset: u64,
}

/// An `Epoch` frame's payload, and (with `epoch` 0 for none) a `Diverging` or `OutOfRange`
/// frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: u32,
    /// `Epoch`: the epoch's start offset; `Diverging`: where it ends in the leader's log;
    /// `OutOfRange`: the leader's log start.
    pub offset: u64,
}

impl EpochEntry {
    pub fn encode(&self) -> [u8; EPOCH_PAYLOAD_LEN] {
        let mut out = [0u8; EPOCH_PAYLOAD_LEN];
        out[..4].copy_from_slice(&self.epoch.to_be_bytes());
        out[4..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Decodes a payload; anything but exactly 12 bytes is malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() != EPOCH_PAYLOAD_LEN {
            return Err(FrameError::EpochPayload(bytes.len()));
        }
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[4..]);
        Ok(EpochEntry {
            epoch: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            offset: u64::from_be_bytes(offset),
        })
    }
}

/// Fixed part of a request body: version, flags, topic length, partition, offset, max bytes,
/// max wait.
const REQUEST_FIXED_LEN: usize = 1 + 1 + 2 + 4 + 8 + 4 + 4;

impl FetchFrame {
    /// The whole request: a `u32` length prefix, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let replica_len = if self.replica.is_some() {
            REPLICA_FETCH_LEN
        } else {
            0
        };
        // A follower's fetch carries its epoch in its own fields (see FLAG_LEADER_EPOCH).
        let current_leader_epoch = self.current_leader_epoch.filter(|_| self.replica.is_none());
        let epoch_len = if current_leader_epoch.is_some() { 4 } else { 0 };
        let body_len = REQUEST_FIXED_LEN + topic.len() + replica_len + epoch_len;
        let mut out = Vec::with_capacity(4 + body_len);
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.push(VERSION);
        let mut flags = if self.follow { FLAG_FOLLOW } else { 0 };
        if self.replica.is_some() {
            flags |= FLAG_REPLICA;
        }
        if current_leader_epoch.is_some() {
            flags |= FLAG_LEADER_EPOCH;
        }
        out.push(flags);
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.max_bytes.to_be_bytes());
        out.extend_from_slice(&self.max_wait_ms.to_be_bytes());
        if let Some(r) = &self.replica {
            out.extend_from_slice(&r.replica_id.to_be_bytes());
            out.extend_from_slice(&r.broker_epoch.to_be_bytes());
            out.extend_from_slice(&r.leader_epoch.to_be_bytes());
            out.extend_from_slice(&r.last_fetched_epoch.to_be_bytes());
            out.extend_from_slice(&r.durable_offset.to_be_bytes());
        }
        if let Some(epoch) = current_leader_epoch {
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        out
    }

    /// Checks a length prefix before the body is read, so a lying prefix cannot make the
    /// broker allocate.
    pub fn check_len(body_len: u32) -> Result<usize, FrameError> {
        let len = body_len as usize;
        if len > MAX_REQUEST_LEN {
            return Err(FrameError::TooLong(len));
        }
        if len < REQUEST_FIXED_LEN {
            return Err(FrameError::TooShort {
                len,
                needed: REQUEST_FIXED_LEN,
            });
        }
        Ok(len)
    }

    /// Decodes a request body (without its length prefix). The topic name is not checked
    /// against the naming rule here; the broker looks it up.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        Self::check_len(u32::try_from(body.len()).unwrap_or(u32::MAX))?;
        let version = body[0];
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let flags = body[1];
        if flags & !(FLAG_FOLLOW | FLAG_REPLICA | FLAG_LEADER_EPOCH) != 0 {
            return Err(FrameError::Flags(flags));
        }
        let is_replica = flags & FLAG_REPLICA != 0;
        let has_epoch = flags & FLAG_LEADER_EPOCH != 0;
        if is_replica && has_epoch {
            return Err(FrameError::ReplicaWithLeaderEpoch(flags));
        }
        let topic_len = u16::from_be_bytes([body[2], body[3]]) as usize;
        let needed = REQUEST_FIXED_LEN
            + topic_len
            + if is_replica { REPLICA_FETCH_LEN } else { 0 }
            + if has_epoch { 4 } else { 0 };
        if body.len() < needed {
            return Err(FrameError::TooShort {
                len: body.len(),
                needed,
            });
        }
        if body.len() > needed {
            return Err(FrameError::Trailing(body.len() - needed));
        }
        let topic = std::str::from_utf8(&body[4..4 + topic_len])
            .map_err(|_| FrameError::TopicNotUtf8)?
            .to_owned();
        let rest = &body[4 + topic_len..];
        let u32_at =
            |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let replica = is_replica.then(|| ReplicaFetch {
            replica_id: u32_at(20),
            broker_epoch: u64_at(24),
            leader_epoch: u32_at(32),
            last_fetched_epoch: u32_at(36),
            durable_offset: u64_at(40),
        });
        let current_leader_epoch = has_epoch.then(|| u32_at(20));
        Ok(FetchFrame {
            topic,
            partition: u32_at(0),
            offset: u64_at(4),
            max_bytes: u32_at(12),
            max_wait_ms: u32_at(16),
            follow: flags & FLAG_FOLLOW != 0,
            replica,
            current_leader_epoch,
        })
    }
}

/// What a response frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Data = 0,
    End = 1,
    Error = 2,
    Epoch = 3,
    Diverging = 4,
    OutOfRange = 5,
}

/// The fixed header of every response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub kind: FrameKind,
    /// [`RESPONSE_FLAG_SYNC_WANTED`]; 0 otherwise (and always 0 to consumers).
    pub flags: u8,
    /// An `ErrorCode` number of package weir.v1 for `Error` frames; 0 otherwise.
    pub error_code: u16,
    /// Bytes following the header: batches (`Data`), a UTF-8 message (`Error`), 0 (`End`),
    /// an [`EpochEntry`] (`Epoch`, `Diverging`, `OutOfRange`).
    pub length: u32,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Where the fetch continues: the offset after the last batch sent so far.
    pub next_offset: u64,
}

impl ResponseHeader {
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut out = [0u8; RESPONSE_HEADER_LEN];
        out[0] = self.kind as u8;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.error_code.to_be_bytes());
        out[4..8].copy_from_slice(&self.length.to_be_bytes());
        out[8..16].copy_from_slice(&self.high_watermark.to_be_bytes());
        out[16..24].copy_from_slice(&self.log_start_offset.to_be_bytes());
        out[24..32].copy_from_slice(&self.next_offset.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8; RESPONSE_HEADER_LEN]) -> Result<Self, FrameError> {
        let kind = match bytes[0] {
            0 => FrameKind::Data,
            1 => FrameKind::End,
            2 => FrameKind::Error,
            3 => FrameKind::Epoch,
            4 => FrameKind::Diverging,
            5 => FrameKind::OutOfRange,
            k => return Err(FrameError::Kind(k)),
        };
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Ok(ResponseHeader {
            kind,
            flags: bytes[1],
            error_code: u16::from_be_bytes([bytes[2], bytes[3]]),
            length: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            high_watermark: u64_at(8),
            log_start_offset: u64_at(16),
            next_offset: u64_at(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_round_trips_and_its_layout_is_fixed() {
        let frame = FetchFrame {
            topic: "orders".into(),
            partition: 3,
            offset: 1017,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
            follow: true,
            replica: None,
            current_leader_epoch: None,
        };
        let bytes = frame.encode();
        assert_eq!(
            &bytes[..4],
            &30u32.to_be_bytes(),
            "24 fixed bytes + 6 of topic"
        );
        assert_eq!(&bytes[4..8], &[1, 1, 0, 6]);
        assert_eq!(FetchFrame::decode(&bytes[4..]).unwrap(), frame);
    }

    #[test]
    fn malformed_requests_are_named() {
        let mut body = FetchFrame {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            follow: false,
            replica: None,
            current_leader_epoch: None,
        }
        .encode()[4..]
            .to_vec();
        assert_eq!(FetchFrame::check_len(5000), Err(FrameError::TooLong(5000)));
        body[0] = 9;
        assert_eq!(FetchFrame::decode(&body), Err(FrameError::Version(9)));
        body[0] = 1;
        body[1] = 0x80;
        assert_eq!(FetchFrame::decode(&body), Err(FrameError::Flags(0x80)));
        body[1] = FLAG_REPLICA | FLAG_LEADER_EPOCH;
        assert_eq!(
            FetchFrame::decode(&body),
            Err(FrameError::ReplicaWithLeaderEpoch(0b110))
        );
        body[1] = FLAG_LEADER_EPOCH; // the epoch's 4 bytes are missing
        assert!(matches!(
            FetchFrame::decode(&body),
            Err(FrameError::TooShort { .. })
        ));
        body[1] = 0;
        body[3] = 200; // topic length lies
        assert!(matches!(
            FetchFrame::decode(&body),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn response_headers_round_trip() {
        let header = ResponseHeader {
            kind: FrameKind::Error,
            flags: 0,
            error_code: 3,
            length: 17,
            high_watermark: 9,
            log_start_offset: 2,
            next_offset: 5,
        };
        assert_eq!(ResponseHeader::decode(&header.encode()).unwrap(), header);
        let out_of_range = ResponseHeader {
            kind: FrameKind::OutOfRange,
            length: EPOCH_PAYLOAD_LEN as u32,
            ..header
        };
        let encoded = out_of_range.encode();
        assert_eq!(encoded[0], 5, "OutOfRange is kind 5");
        assert_eq!(ResponseHeader::decode(&encoded).unwrap(), out_of_range);
        let mut bad = header.encode();
        bad[0] = 7;
        assert_eq!(ResponseHeader::decode(&bad), Err(FrameError::Kind(7)));
    }

    proptest! {
        #[test]
        fn arbitrary_request_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = FetchFrame::decode(&body);
        }

        #[test]
        fn requests_round_trip(topic in "[a-z]{1,40}", partition: u32, offset: u64, max_bytes: u32, max_wait_ms: u32, follow: bool, current_leader_epoch: Option<u32>) {
            let frame = FetchFrame { topic, partition, offset, max_bytes, max_wait_ms, follow, replica: None, current_leader_epoch };
            let bytes = frame.encode();
            prop_assert_eq!(bytes[5] & FLAG_LEADER_EPOCH != 0, current_leader_epoch.is_some());
            prop_assert_eq!(FetchFrame::decode(&bytes[4..]).unwrap(), frame);
        }

        #[test]
        fn replica_requests_round_trip(topic in "[a-z]{1,40}", offset: u64, replica_id: u32, broker_epoch: u64, leader_epoch: u32, last_fetched_epoch: u32, durable_offset: u64) {
            let replica = Some(ReplicaFetch { replica_id, broker_epoch, leader_epoch, last_fetched_epoch, durable_offset });
            let frame = FetchFrame { topic, partition: 1, offset, max_bytes: 0, max_wait_ms: 10, follow: false, replica, current_leader_epoch: None };
            let bytes = frame.encode();
            prop_assert_eq!(bytes[5], FLAG_REPLICA);
            prop_assert_eq!(FetchFrame::decode(&bytes[4..]).unwrap(), frame);
        }

        #[test]
        fn epoch_entries_round_trip(epoch: u32, offset: u64) {
            let entry = EpochEntry { epoch, offset };
            prop_assert_eq!(EpochEntry::decode(&entry.encode()).unwrap(), entry);
        }
    }
}
