//! How a weir error travels in a gRPC status, and how a client reads it back.
//!
//! The broker puts the machine-readable reason in two places (see the .proto's header
//! comment): the `weir-reason` metadata entry, for any gRPC stack that can read trailers, and
//! the status details as a serialized [`v1::Error`](crate::v1::Error). Both sides use these two
//! functions, so the encoding exists once.

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
        | ErrorCode::InvalidRequest => Code::InvalidArgument,
        ErrorCode::TopicExists => Code::AlreadyExists,
        ErrorCode::DiskFull | ErrorCode::Throttled => Code::ResourceExhausted,
        ErrorCode::StorageFailed
        | ErrorCode::ShuttingDown
        | ErrorCode::PartitionUnavailable
        | ErrorCode::ControllerUnavailable => Code::Unavailable,
        ErrorCode::NotDurable => Code::Aborted,
        ErrorCode::OutOfOrderSequence
        | ErrorCode::ProducerFenced
        | ErrorCode::Conflict
        | ErrorCode::NotLeader
        | ErrorCode::UnknownMember
        | ErrorCode::StaleGeneration
        | ErrorCode::GroupNotEmpty => Code::FailedPrecondition,
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

/// The status a broker returns for `error`.
pub fn to_status(error: &Error) -> Status {
    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Internal);
    let mut status = Status::with_details(
        grpc_code(code),
        error.message.clone(),
        error.encode_to_vec().into(),
    );
    if let Ok(value) = code.as_str_name().parse() {
        status.metadata_mut().insert(REASON_METADATA_KEY, value);
    }
    status
}

/// The weir error a status carries, if it carries one (a transport failure or a status from
/// something that is not a weir broker does not).
pub fn from_status(status: &Status) -> Option<Error> {
    if let Ok(error) = Error::decode(status.details())
        && error.code != ErrorCode::Unspecified as i32
    {
        return Some(error);
    }
    let name = status.metadata().get(REASON_METADATA_KEY)?.to_str().ok()?;
    let code = ErrorCode::from_str_name(name)?;
    Some(error(code, status.message()))
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
    fn a_foreign_status_carries_no_reason() {
        assert_eq!(
            from_status(&Status::unavailable("connection refused")),
            None
        );
    }
}
