//! [`ClientError`]: every way a weir call can fail, typed, with the broker's machine-readable
//! reason when it sent one.
//!
//! Invariants: a failed gRPC call becomes [`ClientError::Refused`] exactly when the status
//! carries a weir reason (decoded once, by `weir_proto::status::from_status`), and
//! [`ClientError::Transport`] otherwise. Errors are `Clone` because one failed batch fails the
//! delivery of every record in it.

use std::error::Error as StdError;
use std::time::Duration;

use weir_proto::batch::BatchError;
use weir_proto::status::{from_status, is_retriable};
use weir_proto::topic::InvalidTopicName;
use weir_proto::v1::{self, ErrorCode};

/// Why a call to weir failed. Messages say what failed and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker address is not `HOST:PORT` or `http://HOST:PORT`.
    #[error("invalid broker address {addr:?}: {reason}; expected HOST:PORT or http://HOST:PORT")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The TLS handshake with the broker failed, or the broker refused this client's
    /// certificate: retrying does not help until the TLS settings change.
    #[error("TLS with the broker at {addr} failed: {failure}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// What went wrong, with what to do about it.
        failure: TlsFailure,
        /// The TLS library's own words.
        detail: String,
    },

    /// No connection to the broker could be made.
    #[error("cannot reach broker at {addr} ({reason}): is weir-broker running there?")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The cause, e.g. "connection refused".
        reason: String,
    },

    /// The broker refused the request with a weir reason (or the client refused it on the
    /// broker's behalf, e.g. a partition the topic does not have).
    #[error("{message} [{}]", code.as_str_name())]
    Refused {
        /// The machine-readable reason.
        code: ErrorCode,
        /// What failed and what to do, from the broker.
        message: String,
        /// Whether the same request may succeed later.
        retriable: bool,
    },

    /// The call failed below weir: the connection dropped or reset, the broker went away
    /// mid-call, or the peer is not a weir broker.
    #[error("broker call failed ({code:?}): {message}")]
    Transport {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message and its causes.
        message: String,
    },

    /// A fetched batch failed validation (length, CRC or record structure). Nothing from it was
    /// returned as data.
    #[error(
        "corrupt batch in {topic}-{partition} at or after offset {offset}: {source}; \
         the data on the broker or on the wire is damaged, no record of that batch was returned"
    )]
    CorruptBatch {
        /// The topic fetched.
        topic: String,
        /// The partition fetched.
        partition: u32,
        /// The first offset not yet returned when the bad batch was found.
        offset: u64,
        /// What the batch decoder found wrong.
        #[source]
        source: BatchError,
    },

    /// A topic name breaks the rule (1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`).
    #[error(transparent)]
    InvalidTopicName(#[from] InvalidTopicName),

    /// One record cannot be sent at all: alone it exceeds a size limit.
    #[error(
        "record of about {size} bytes exceeds the {limit}-byte {what}; \
         split it or raise the limit"
    )]
    RecordTooLarge {
        /// The record's encoded size (an upper bound).
        size: usize,
        /// The limit it exceeds.
        limit: usize,
        /// Which limit: the topic's batch size limit or the producer's buffer.
        what: &'static str,
    },

    /// An argument or a configuration value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A conditional append's expectation did not hold; nothing was written. Read what is
    /// there now (from `actual_offset`), decide again, and retry with the new expectation.
    #[error("{message} [CONFLICT]")]
    Conflict {
        /// What was expected and what is.
        message: String,
        /// The partition's actual next offset (`expected_offset`), or the key's actual last
        /// offset (`None` when the key has no record yet).
        actual_offset: Option<u64>,
    },

    /// The operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out, and what its outcome is.
        what: &'static str,
        /// The time limit.
        after: Duration,
    },

    /// The producer was closed (or its background task stopped) before the record was
    /// delivered.
    #[error("the producer is closed; create a new one to send more")]
    Closed,
}

impl ClientError {
    /// The weir reason, when there is one: from the broker, or the reason the broker would
    /// have given for a request the client refused locally.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            ClientError::Conflict { .. } => Some(ErrorCode::Conflict),
            ClientError::CorruptBatch { .. } => Some(ErrorCode::CorruptBatch),
            ClientError::InvalidTopicName(_) => Some(ErrorCode::InvalidName),
            ClientError::RecordTooLarge { .. } => Some(ErrorCode::BatchTooLarge),
            _ => None,
        }
    }

    /// True if the same call may succeed if made again later: a retriable weir reason
    /// (`DISK_FULL`, `THROTTLED`, `SHUTTING_DOWN`), an unreachable broker, a dropped connection
    /// or a timeout.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Refused { retriable, .. } => *retriable,
            ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            ClientError::Transport { code, .. } => matches!(
                code,
                // What a dropped, reset or refused connection looks like through tonic and h2.
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
            ),
            _ => false,
        }
    }

    /// A refusal with a weir reason, decided by the client.
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Refused {
            code,
            message: message.into(),
            retriable: is_retriable(code),
        }
    }

    /// The error a `ProduceStream` response carried.
    pub(crate) fn from_weir(error: v1::Error) -> Self {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Internal);
        if code == ErrorCode::Conflict {
            return ClientError::Conflict {
                message: error.message,
                actual_offset: error.actual_offset,
            };
        }
        ClientError::Refused {
            code,
            message: error.message,
            retriable: error.retriable || is_retriable(code),
        }
    }

    /// A failure to connect, with the cause chain flattened into the message.
    pub(crate) fn connect(addr: &str, error: &(dyn StdError + 'static)) -> Self {
        if let Some(tls) = crate::connection::tls_failure(addr, error) {
            return tls;
        }
        let chain = error_chain(error);
        // tonic wraps every cause in a bare "transport error"; the cause is what helps.
        let reason = chain.strip_prefix("transport error: ").unwrap_or(&chain);
        ClientError::Connect {
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match from_status(&status) {
            Some(error) => ClientError::from_weir(error),
            None => {
                let mut message = status.message().to_owned();
                if let Some(tls) = status
                    .source()
                    .and_then(|source| crate::connection::tls_failure("the broker", source))
                {
                    return tls;
                }
                if let Some(source) = status.source() {
                    let chain = error_chain(source);
                    // tonic wraps every cause in a bare "transport error"; the cause is what helps.
                    let causes = chain.strip_prefix("transport error: ").unwrap_or(&chain);
                    if causes.contains(&message) {
                        message = causes.to_owned();
                    } else if !message.contains(causes) {
                        message = format!("{message}: {causes}");
                    }
                }
                ClientError::Transport {
                    code: status.code(),
                    message,
                }
            }
        }
    }
}

/// Why a TLS connection failed, each with what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The broker's certificate is not issued by a trusted CA.
    #[error(
        "its certificate is not issued by a CA this client trusts (unknown issuer): pass the CA that issued it (--tls-ca / WEIR_TLS_CA, ConnectOptions::tls)"
    )]
    UnknownIssuer,
    /// The broker's certificate has expired.
    #[error(
        "its certificate has expired: the broker needs a renewed certificate (replace its tls.cert_file and send it SIGHUP)"
    )]
    Expired,
    /// The broker's certificate is not valid yet.
    #[error(
        "its certificate is not valid yet: check the clocks of this machine and the broker, or the certificate's start date"
    )]
    NotYetValid,
    /// The broker's certificate does not name the host dialled.
    #[error(
        "its certificate does not name the host dialled: dial a name it carries, or set the TLS server name (ConnectOptions::tls)"
    )]
    WrongName,
    /// The broker requires a client certificate and got none.
    #[error(
        "the broker requires a client certificate (mutual TLS): pass one with --tls-cert and --tls-key (WEIR_TLS_CERT, WEIR_TLS_KEY)"
    )]
    ClientCertificateRequired,
    /// The broker refused the client certificate presented.
    #[error(
        "the broker refused this client's certificate (not issued by a CA it trusts, or expired): use a certificate from the broker's tls.client_ca_file"
    )]
    ClientCertificateRefused,
    /// The port does not speak TLS.
    #[error(
        "the port does not answer TLS (a plaintext listener?): connect without --tls-ca, or to the broker's TLS port"
    )]
    NotTls,
    /// A plaintext client reached a port that expects TLS.
    #[error(
        "the port expects TLS and this client connected in plaintext: pass the CA that issued the broker's certificate (--tls-ca / WEIR_TLS_CA, ConnectOptions::tls)"
    )]
    ServerRequiresTls,
    /// Another handshake failure.
    #[error("the TLS handshake failed: check both sides' TLS settings")]
    Handshake,
}

/// `error: cause: cause's cause`, skipping causes already spelled out by their parent.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::status::{error, to_status};

    #[test]
    fn a_status_with_a_reason_becomes_refused() {
        let status = to_status(&error(ErrorCode::UnknownTopic, "unknown topic orders"));
        let err = ClientError::from(status);
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
        assert!(!err.is_retriable());
        assert_eq!(err.to_string(), "unknown topic orders [UNKNOWN_TOPIC]");

        let throttled = ClientError::from(to_status(&error(ErrorCode::Throttled, "slow down")));
        assert!(throttled.is_retriable());
    }

    #[test]
    fn a_status_from_an_older_broker_is_read_too() {
        use prost::Message as _;
        // Brokers before the google.rpc.Status layout sent a bare weir.v1.Error as the
        // details, with the reason's name in the metadata.
        let mut sent = error(ErrorCode::Conflict, "expected offset 3, the log is at 5");
        sent.actual_offset = Some(5);
        let mut status = tonic::Status::with_details(
            tonic::Code::FailedPrecondition,
            sent.message.clone(),
            sent.encode_to_vec().into(),
        );
        status.metadata_mut().insert(
            weir_proto::status::REASON_METADATA_KEY,
            "CONFLICT".parse().unwrap(),
        );
        match ClientError::from(status) {
            ClientError::Conflict { actual_offset, .. } => assert_eq!(actual_offset, Some(5)),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn a_status_without_a_reason_is_a_transport_error() {
        let err = ClientError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(err.code(), None);
        assert!(err.is_retriable());
        let err = ClientError::from(tonic::Status::unimplemented("no such method"));
        assert!(!err.is_retriable());
    }

    #[test]
    fn local_refusals_name_the_reason_the_broker_would_give() {
        let err = ClientError::refused(ErrorCode::UnknownPartition, "no partition 9");
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
        let err = ClientError::from(InvalidTopicName::Empty);
        assert_eq!(err.code(), Some(ErrorCode::InvalidName));
    }
}
