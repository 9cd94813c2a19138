//! How a weir error travels in a gRPC status, and how a client reads it back.
//!
//! The layout is gRPC's standard one for error details (see the .proto's header comment),
//! so any gRPC stack's error helpers read it: Python's `grpc_status.rpc_status.from_call`,
//! Java's `StatusProto.fromThrowable`, grpc-go's `status.FromError(...).Details()`,
//! tonic-types' `StatusExt`.
//!
//! - The status code is [`grpc_code`] of the reason.
//! - The `grpc-status-details-bin` trailer holds a `google.rpc.Status` whose `code` is that
//!   same gRPC code number (grpc-go and Java take the code from there, and Java checks it
//!   matches), whose `message` is the status message, and whose `details` hold exactly one
//!   `google.protobuf.Any`: the [`v1::Error`](crate::v1::Error) under [`ERROR_TYPE_URL`].
//! - The `weir-reason` metadata entry holds the reason's name, for stacks that read trailers
//!   but not details.
//!
//! Brokers before this layout put a bare serialized `v1::Error` in the details (and the
//! `weir-reason` entry); [`from_status`] still reads those. Both sides use these functions, so the encoding exists once.

use prost::Message;
use tonic::{Code, Status};

use crate::v1::{Error, ErrorCode};

/// The metadata key carrying the [`ErrorCode`] name.
pub const REASON_METADATA_KEY: &str = "weir-reason";

/// The gRPC status code each reason travels under.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition | ErrorCode::UnknownGroup => {
            Code::NotFound
        }
        ErrorCode::OffsetOutOfRange => Code::OutOfRange,
        ErrorCode::CorruptBatch
        | ErrorCode::BatchTooLarge
        | ErrorCode::InvalidName
        | ErrorCode::InvalidRequest
        | ErrorCode::InvalidReplicationFactor => Code::InvalidArgument,
        ErrorCode::TopicExists | ErrorCode::UserExists => Code::AlreadyExists,
        ErrorCode::UnknownUser => Code::NotFound,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::DiskFull | ErrorCode::Throttled => Code::ResourceExhausted,
        ErrorCode::StorageFailed
        | ErrorCode::ShuttingDown
        | ErrorCode::PartitionUnavailable
        | ErrorCode::ControllerUnavailable
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::UnknownLeaderEpoch => Code::Unavailable,
        ErrorCode::NotDurable => Code::Aborted,
        ErrorCode::OutOfOrderSequence
        | ErrorCode::ProducerFenced
        | ErrorCode::Conflict
        | ErrorCode::NotLeader
        | ErrorCode::UnknownMember
        | ErrorCode::StaleGeneration
        | ErrorCode::GroupNotEmpty
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::StalePartitionEpoch
        | ErrorCode::IneligibleReplica
        | ErrorCode::StaleBrokerEpoch => Code::FailedPrecondition,
        ErrorCode::CorruptLog => Code::DataLoss,
        ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
    }
}

/// True for reasons where the same request may succeed if sent again later (NOT_LEADER: after
/// a metadata refresh, to the broker it names).
pub fn is_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DiskFull
            | ErrorCode::Throttled
            | ErrorCode::ShuttingDown
            | ErrorCode::NotLeader
            | ErrorCode::PartitionUnavailable
            | ErrorCode::ControllerUnavailable
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::UnknownLeaderEpoch
    )
}

/// A [`v1::Error`](crate::v1::Error) with `retriable` filled in from the code.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error {
        code: code as i32,
        message: message.into(),
        retriable: is_retriable(code),
        actual_offset: None,
        leader: None,
    }
}

/// The type URL of a [`v1::Error`](crate::v1::Error) packed in a `google.protobuf.Any`
/// (`type.googleapis.com/` and the message's full name, as every protobuf runtime packs it).
pub const ERROR_TYPE_URL: &str = "type.googleapis.com/weir.v1.Error";

/// The status a broker returns for `error`.
pub fn to_status(error: &Error) -> Status {
    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Internal);
    let grpc = grpc_code(code);
    let details = tonic_types::Status {
        code: grpc as i32,
        message: error.message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_TYPE_URL.to_owned(),
            value: error.encode_to_vec(),
        }],
    };
    let mut status =
        Status::with_details(grpc, error.message.clone(), details.encode_to_vec().into());
    if let Ok(value) = code.as_str_name().parse() {
        status.metadata_mut().insert(REASON_METADATA_KEY, value);
    }
    status
}

/// The weir error a status carries, if it carries one (a transport failure or a status from
/// something that is not a weir broker does not). Read from, in order: the `v1::Error` packed
/// in the `google.rpc.Status` details; a bare `v1::Error` in the details (older brokers); the
/// `weir-reason` entry alone.
pub fn from_status(status: &Status) -> Option<Error> {
    if let Some(error) = packed_error(status.details())
        && error.code != ErrorCode::Unspecified as i32
    {
        return Some(error);
    }
    let name = status.metadata().get(REASON_METADATA_KEY)?.to_str().ok()?;
    let code = ErrorCode::from_str_name(name)?;
    // An older broker's bare `v1::Error`, which it always sent with the `weir-reason` entry.
    // Taken only when the two agree: the bytes alone are ambiguous, since a google.rpc.Status
    // without weir details (from a proxy, say) decodes as an Error whose code is the gRPC code.
    if let Ok(bare) = Error::decode(status.details())
        && bare.code == code as i32
    {
        return Some(bare);
    }
    Some(error(code, status.message()))
}

/// The `v1::Error` packed in `details` read as a `google.rpc.Status`, if there is one.
fn packed_error(details: &[u8]) -> Option<Error> {
    let status = tonic_types::Status::decode(details).ok()?;
    status
        .details
        .iter()
        // An Any's type is the name after the URL's last '/'; the host part is not checked.
        .find(|any| any.type_url.rsplit('/').next() == Some("weir.v1.Error"))
        .and_then(|any| Error::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_its_reason() {
        let sent = error(ErrorCode::UnknownTopic, "unknown topic orders");
        let status = to_status(&sent);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.metadata().get(REASON_METADATA_KEY).unwrap(),
            "UNKNOWN_TOPIC"
        );
        assert_eq!(from_status(&status), Some(sent));
    }

    #[test]
    fn the_details_are_a_google_rpc_status_packing_the_error() {
        let mut sent = error(ErrorCode::Conflict, "expected offset 3, the log is at 5");
        sent.actual_offset = Some(5);
        let status = to_status(&sent);
        let details = tonic_types::Status::decode(status.details()).unwrap();
        assert_eq!(details.code, Code::FailedPrecondition as i32);
        assert_eq!(details.code, status.code() as i32);
        assert_eq!(details.message, status.message());
        assert_eq!(details.details.len(), 1);
        assert_eq!(details.details[0].type_url, ERROR_TYPE_URL);
        assert_eq!(
            Error::decode(details.details[0].value.as_slice()).unwrap(),
            sent
        );
        assert_eq!(from_status(&status), Some(sent));
    }

    #[test]
    fn every_reason_has_standard_details_with_its_grpc_code() {
        // The codes no request can provoke on demand (DISK_FULL, STORAGE_FAILED, NOT_DURABLE,
        // CORRUPT_LOG, INTERNAL...) travel through this same function; server_grpc_conventions.rs
        // checks the reachable ones against a real broker.
        let codes: Vec<ErrorCode> = (1..100)
            .filter_map(|n| ErrorCode::try_from(n).ok())
            .collect();
        assert_eq!(codes.len(), 37, "a new reason: check its gRPC code");
        for code in codes {
            let status = to_status(&error(code, "m"));
            let details = tonic_types::Status::decode(status.details()).unwrap();
            assert_eq!(details.code, status.code() as i32, "{code:?}");
            assert_eq!(status.code(), grpc_code(code), "{code:?}");
            assert_eq!(details.details[0].type_url, ERROR_TYPE_URL);
            let packed = Error::decode(details.details[0].value.as_slice()).unwrap();
            assert_eq!(packed.code, code as i32);
        }
    }

    #[test]
    fn a_bare_error_from_an_older_broker_is_still_read() {
        for (code, retriable) in [
            (ErrorCode::UnknownTopic, false),
            (ErrorCode::ShuttingDown, true),
        ] {
            let mut sent = error(code, "from an older broker");
            assert_eq!(sent.retriable, retriable);
            sent.actual_offset = Some(7);
            sent.leader = Some(Box::new(crate::v1::BrokerInfo {
                id: 2,
                address: "b2:9092".into(),
                ..Default::default()
            }));
            // What brokers before the google.rpc.Status layout sent: the bare Error in the
            // details and the reason's name in the metadata.
            let mut status = Status::with_details(
                grpc_code(code),
                sent.message.clone(),
                sent.encode_to_vec().into(),
            );
            status
                .metadata_mut()
                .insert(REASON_METADATA_KEY, code.as_str_name().parse().unwrap());
            // All of it, the offset and leader too, not only what the metadata says.
            assert_eq!(from_status(&status), Some(sent), "{code:?}");
        }
    }

    #[test]
    fn any_type_url_host_is_accepted() {
        let sent = error(ErrorCode::UnknownGroup, "no group g");
        let details = tonic_types::Status {
            code: Code::NotFound as i32,
            message: sent.message.clone(),
            details: vec![
                prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                    value: Vec::new(),
                },
                prost_types::Any {
                    type_url: "example.com/weir.v1.Error".into(),
                    value: sent.encode_to_vec(),
                },
            ],
        };
        let status = Status::with_details(
            Code::NotFound,
            sent.message.clone(),
            details.encode_to_vec().into(),
        );
        assert_eq!(from_status(&status), Some(sent));
    }

    #[test]
    fn metadata_alone_is_enough() {
        let mut status = Status::new(Code::ResourceExhausted, "disk full");
        status
            .metadata_mut()
            .insert(REASON_METADATA_KEY, "DISK_FULL".parse().unwrap());
        let got = from_status(&status).unwrap();
        assert_eq!(got.code, ErrorCode::DiskFull as i32);
        assert!(got.retriable);
    }

    #[test]
    fn a_standard_status_without_weir_details_is_not_mistaken_for_one() {
        // A proxy's google.rpc.Status for UNAVAILABLE (14): as a bare Error it would read as
        // code 14, INTERNAL.
        let foreign = tonic_types::Status {
            code: Code::Unavailable as i32,
            message: "upstream connect error".into(),
            details: Vec::new(),
        };
        let status = Status::with_details(
            Code::Unavailable,
            "upstream connect error",
            foreign.encode_to_vec().into(),
        );
        assert_eq!(from_status(&status), None);
    }

    #[test]
    fn a_foreign_status_carries_no_reason() {
        assert_eq!(
            from_status(&Status::unavailable("connection refused")),
            None
        );
    }
}
