//! The one mapping from the broker's internal errors to the wire's [`ErrorCode`]s, and the
//! few refusals every layer needs (shutting down, internal, invalid request, a request over
//! the size limit).
//!
//! Every refusal a client can meet passes through [`wire_error`] or [`storage_error`], so a
//! reason name means the same thing on every RPC, whether the gRPC service or the controller
//! refused. Internal details (paths) stay in the message, which is for humans; the code and
//! `retriable` are what programs act on.

use tonic::Status;
use weir_proto::status;
use weir_proto::v1::{Error, ErrorCode};

use crate::topics::TopicError;
use weir_storage::StorageError;

/// The wire error for a storage failure.
pub fn storage_error(e: &StorageError) -> Error {
    let code = match e {
        StorageError::InvalidBatch(_) => ErrorCode::CorruptBatch,
        StorageError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::SyncFailed { .. } => ErrorCode::StorageFailed,
        StorageError::TruncatedBeforeSync { .. } => ErrorCode::NotDurable,
        StorageError::InvalidTopicName(_) => ErrorCode::InvalidName,
        StorageError::InvalidConfig(_) => ErrorCode::InvalidRequest,
        StorageError::UnknownPartition(_) => ErrorCode::UnknownPartition,
        // A partition closed under a request: the topic was deleted or the broker is stopping.
        StorageError::Closed => ErrorCode::ShuttingDown,
        StorageError::SegmentRemoved { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        StorageError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        StorageError::OffsetConflict { actual, .. } => {
            let mut error = status::error(ErrorCode::Conflict, e.to_string());
            error.actual_offset = Some(*actual);
            return error;
        }
        StorageError::CorruptLog { offset, .. } => {
            let mut error = status::error(ErrorCode::CorruptLog, e.to_string());
            error.actual_offset = Some(*offset);
            return error;
        }
        StorageError::KeyConflict { actual, .. } => {
            let mut error = status::error(ErrorCode::Conflict, e.to_string());
            error.actual_offset = *actual;
            return error;
        }
        // An epoch older than one the partition's log already has: the caller was deposed.
        StorageError::EpochNotNewer { .. } => ErrorCode::FencedLeaderEpoch,
        // A follower's own bookkeeping (it truncates or refetches first); not a client's fault.
        StorageError::ReplicaOffsetMismatch { .. }
        | StorageError::EpochStartBeforeLatest { .. }
        | StorageError::EpochStartPastLogEnd { .. } => ErrorCode::Internal,
        StorageError::Io { .. }
        | StorageError::PartitionExists(_)
        | StorageError::DirLocked(_)
        | StorageError::Corrupt { .. } => ErrorCode::Internal,
    };
    status::error(code, e.to_string())
}

/// The wire error for a topic-level failure.
pub fn wire_error(e: &TopicError) -> Error {
    let code = match e {
        TopicError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        TopicError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        // The service turns this into NOT_LEADER naming the owner when it knows one.
        TopicError::NotLocal { .. } => ErrorCode::NotLeader,
        TopicError::TopicExists(_) => ErrorCode::TopicExists,
        TopicError::InvalidName { .. } => ErrorCode::InvalidName,
        TopicError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        TopicError::CorruptMeta { .. } => ErrorCode::Internal,
        TopicError::Storage(e) => return storage_error(e),
    };
    status::error(code, e.to_string())
}

/// `e`, naming the partition it happened in (the storage engine's messages do not).
pub fn in_partition(topic: &str, partition: u32, mut e: Error) -> Error {
    e.message = format!("{topic}-{partition}: {}", e.message);
    e
}

/// The broker is stopping: nothing of the request was done; send it again once it is back.
pub fn shutting_down() -> Error {
    status::error(
        ErrorCode::ShuttingDown,
        "the broker is shutting down; retry once it is back",
    )
}

/// A failure inside the broker that is not the request's fault (a task that panicked, say).
pub fn internal(message: impl Into<String>) -> Error {
    status::error(ErrorCode::Internal, message)
}

/// A request field the broker cannot accept.
pub fn invalid_request(message: impl Into<String>) -> Error {
    status::error(ErrorCode::InvalidRequest, message)
}

/// A request message over the broker's `max_request_bytes`, refused before it was read (see
/// [`crate::server::request_limit`]). On Produce and ProduceStream (`produce`) the batch is
/// what makes a request that large: BATCH_TOO_LARGE, as for a batch over its topic's
/// max_batch_bytes. Any other request that large is malformed: INVALID_REQUEST.
pub fn request_too_large(produce: bool, size: usize, limit: usize) -> Error {
    if produce {
        status::error(
            ErrorCode::BatchTooLarge,
            format!(
                "produce request of {size} bytes exceeds the broker's max_request_bytes \
                 ({limit} bytes); nothing was written: send smaller batches"
            ),
        )
    } else {
        invalid_request(format!(
            "request message of {size} bytes exceeds the broker's max_request_bytes \
             ({limit} bytes)"
        ))
    }
}

/// Sugar: the status for any wire error.
pub fn to_status(e: Error) -> Status {
    status::to_status(&e)
}

/// The status for a storage failure (`StorageError` is the engine's, `Status` tonic's: no
/// `From` between two foreign types).
pub fn storage_status(e: StorageError) -> Status {
    to_status(storage_error(&e))
}

impl From<TopicError> for Status {
    fn from(e: TopicError) -> Status {
        to_status(wire_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::BatchError;

    #[test]
    fn bad_batches_are_corrupt_and_not_retriable() {
        let e = storage_error(&StorageError::InvalidBatch(BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
        }));
        assert_eq!(e.code, ErrorCode::CorruptBatch as i32);
        assert!(!e.retriable);
    }

    #[test]
    fn oversized_produce_requests_are_batch_too_large_with_the_limit() {
        let e = request_too_large(true, 5 << 20, 4 << 20);
        assert_eq!(e.code, ErrorCode::BatchTooLarge as i32);
        assert!(e.message.contains("4194304"), "{}", e.message);
        assert_eq!(
            to_status(e).code(),
            tonic::Code::InvalidArgument,
            "not OUT_OF_RANGE, OFFSET_OUT_OF_RANGE's code"
        );
        let e = request_too_large(false, 5 << 20, 4 << 20);
        assert_eq!(e.code, ErrorCode::InvalidRequest as i32);
        assert!(e.message.contains("4194304"), "{}", e.message);
    }

    #[test]
    fn unknown_topic_status_names_the_topic() {
        let status = Status::from(TopicError::UnknownTopic("orders".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().contains("orders"));
        let e = status::from_status(&status).unwrap();
        assert_eq!(e.code, ErrorCode::UnknownTopic as i32);
    }
}
