//! Produce on the data port: a produce connection's requests read straight into the buffers the
//! storage engine appends, and handed to the one produce path gRPC's `ProduceStream` uses
//! ([`super::produce::produce_stream`]), so validation, limits, idempotence, conditions, acks
//! and ordering are the same on both transports by construction. Frames:
//! [`weir_proto::data_port::produce`], specified in `segments-format.md`.
//!
//! Invariants and how they are kept:
//! - A batch is read into a buffer of exactly its length (read no further than its frame), which
//!   becomes the request's `batch` without another copy; the append copies it into the segment.
//! - A request's length is checked against `max_request_bytes` before a byte of its body is
//!   read (BATCH_TOO_LARGE, as gRPC's request limit answers); a malformed request ends the
//!   connection with INVALID_REQUEST. Either is the connection's last answer (`Closing`), sent
//!   after every request accepted before it has its answer; nothing of the refused request is
//!   appended.
//! - The reader runs at most [`READ_AHEAD`] requests ahead of the appends, so a fast client
//!   holds a bounded amount of broker memory beyond the in-flight byte budget the produce path
//!   applies.
//! - A body must arrive within [`REQUEST_TIMEOUT`] of its length, as on a fetch connection; a
//!   client that stalls mid-request, or vanishes, ends its connection only: requests read
//!   before are still appended and answered (if it is still there to read the answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::debug;
use weir_proto::data_port::FrameError;
use weir_proto::data_port::produce::{
    Answer, PRODUCE_FIXED_LEN, decode_request_fixed, decode_request_header, encode_answer,
};
use weir_proto::status::from_status;
use weir_proto::v1::{ProduceRequest, ProduceResponse};

use super::BrokerState;
use crate::security::PeerIdentity;
use crate::security::tls::MaybeTls;
use crate::wire::errors::{internal, invalid_request, request_too_large, to_status};

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The connection's two halves: a plaintext socket splits without a lock, a TLS stream
/// through tokio's (its reads and writes share one session).
fn split(stream: super::data_port::DataStream) -> (Reader, Writer) {
    match stream {
        MaybeTls::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            (Box::new(reader), Box::new(writer))
        }
        tls @ MaybeTls::Tls { .. } => {
            let (reader, writer) = tokio::io::split(tls);
            (Box::new(reader), Box::new(writer))
        }
    }
}

/// How long a client may take to send a request body once its length arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests read and not yet taken by the produce path.
const READ_AHEAD: usize = 4;
/// Answers not yet written to the socket.
const ANSWER_QUEUE: usize = 64;

/// Serves a produce connection whose first request's length and first two body bytes (version
/// and flags) the caller has read. Returns once the connection has ended.
pub(super) async fn serve(
    stream: super::data_port::DataStream,
    identity: PeerIdentity,
    state: Arc<BrokerState>,
    credentials: crate::security::guard::Credentials,
    first_len: u32,
    first_bytes: [u8; 2],
) {
    let peer = identity
        .remote_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut reader, mut writer) = split(stream);
    let (requests, incoming) = mpsc::channel(READ_AHEAD);
    let (answers, mut outgoing) = mpsc::channel::<Result<ProduceResponse, Status>>(ANSWER_QUEUE);
    let limit = state.max_request_bytes as usize;
    let read = tokio::spawn(async move {
        let mut next = Some((first_len, first_bytes));
        loop {
            let (len, version_and_flags) = match next.take() {
                Some(first) => first,
                None => match read_prefix(&mut reader).await {
                    Some(prefix) => prefix,
                    None => return, // the client closed, or went away between requests
                },
            };
            let request = read_request(&mut reader, len as usize, version_and_flags, limit).await;
            let stop = request.is_err();
            match request {
                Ok(request) => {
                    if requests.send(Ok(request)).await.is_err() {
                        return;
                    }
                }
                Err(Some(refusal)) => {
                    let _ = requests.send(Err(to_status(refusal))).await;
                }
                Err(None) => {}
            }
            if stop {
                return;
            }
        }
    });
    let write = tokio::spawn(async move {
        while let Some(answer) = outgoing.recv().await {
            let (bytes, last) = match answer {
                Ok(response) => (encode_answer(&Answer::Produced(response)), false),
                Err(status) => {
                    let error = from_status(&status)
                        .unwrap_or_else(|| internal(status.message().to_owned()));
                    (encode_answer(&Answer::Closing(error)), true)
                }
            };
            // (A flush is a no-op on plaintext; under TLS it sends the encrypted record.)
            let written = async {
                writer.write_all(&bytes).await?;
                writer.flush().await
            };
            if let Err(e) = written.await {
                debug!(%peer, error = %e, "data port: a producer left before its answers");
                return;
            }
            if last {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    super::produce::produce_stream(
        Arc::clone(&state),
        credentials,
        identity.remote_addr,
        ReceiverStream::new(incoming),
        answers,
    )
    .await;
    read.abort();
    let _ = write.await;
}

/// The next request's length prefix and first two body bytes; `None` at the end of the
/// connection (the client closed it between requests, or shutdown closed it).
async fn read_prefix(reader: &mut (impl AsyncRead + Unpin)) -> Option<(u32, [u8; 2])> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await.ok()?;
    let mut first = [0u8; 2];
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_exact(&mut first))
        .await
        .ok()?
        .ok()?;
    Some((u32::from_be_bytes(len), first))
}

/// Reads the rest of a request whose length and first two body bytes were read. `Err(Some)`:
/// refused (the connection ends with it); `Err(None)`: the client stalled or went away.
async fn read_request(
    reader: &mut (impl AsyncRead + Unpin),
    body_len: usize,
    version_and_flags: [u8; 2],
    limit: usize,
) -> Result<ProduceRequest, Option<weir_proto::v1::Error>> {
    if body_len > limit {
        return Err(Some(request_too_large(true, body_len, limit)));
    }
    let malformed = |e: FrameError| Some(invalid_request(format!("produce request: {e}")));
    if body_len < PRODUCE_FIXED_LEN {
        return Err(malformed(FrameError::TooShort {
            len: body_len,
            needed: PRODUCE_FIXED_LEN,
        }));
    }
    let body = async {
        let mut fixed = [0u8; PRODUCE_FIXED_LEN];
        fixed[..2].copy_from_slice(&version_and_flags);
        reader.read_exact(&mut fixed[2..]).await.ok()?;
        let header_len = match decode_request_fixed(&fixed, body_len) {
            Ok(len) => len,
            Err(e) => return Some(Err(e)),
        };
        let mut header = vec![0u8; header_len];
        reader.read_exact(&mut header).await.ok()?;
        let batch_len = body_len - PRODUCE_FIXED_LEN - header_len;
        let mut batch = BytesMut::with_capacity(batch_len);
        let mut frame = reader.take(batch_len as u64);
        while batch.len() < batch_len {
            if frame.read_buf(&mut batch).await.ok()? == 0 {
                return None; // the client went away mid-batch
            }
        }
        Some(decode_request_header(&header).map(|mut request| {
            request.batch = batch.freeze();
            request
        }))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, body).await {
        Ok(Some(Ok(request))) => Ok(request),
        Ok(Some(Err(e))) => Err(malformed(e)),
        Ok(None) | Err(_) => Err(None),
    }
}
