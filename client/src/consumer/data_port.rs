//! Fetching over the broker's data port: weir's binary fetch protocol, whose batch bytes the
//! broker sends with sendfile (frames: [`weir_proto::data_port`], spec in segments-format.md).
//!
//! A [`DataPortFetch`] is one fetch on its own TCP connection; it yields the same
//! [`FetchResponse`]s as a gRPC `Fetch` stream, so the fetch task decodes both alike (and the
//! tests hold the two paths to identical bytes).
//!
//! Invariants: a frame's payload is read whole before it is handed over (a torn read is a
//! broken connection, never data); a payload larger than [`MAX_FRAME_BYTES`] is refused before
//! anything is allocated for it.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_proto::data_port::{FetchFrame, FrameKind, RESPONSE_HEADER_LEN, ResponseHeader};
use weir_proto::v1::{ErrorCode, FetchRequest, FetchResponse};

use crate::ClientError;
use crate::connection::{ClientTls, Stream, dial, tls_failure};

/// The largest payload the client accepts in one frame: a fetch is capped at 16 MiB by the
/// broker, but one batch is sent whole even when larger, so leave room for big batches.
pub(crate) const MAX_FRAME_BYTES: u32 = 256 << 20;
/// What a frame's announced length may make this side reserve before its bytes arrive.
const EAGER_FRAME_BYTES: usize = 32 << 20;

/// One fetch over its own data-port connection.
pub(crate) struct DataPortFetch {
    stream: Stream,
    addr: String,
    done: bool,
}

impl DataPortFetch {
    /// Connects to `addr` (with TLS when `tls` is given), presents `token` if given, and sends
    /// the fetch.
    pub async fn open(
        addr: &str,
        token: Option<&str>,
        request: &FetchRequest,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let broken = |e: std::io::Error| unavailable(addr, &e);
        let mut stream = dial(addr, tls).await.map_err(broken)?;
        if let Some(token) = token {
            crate::connection::authenticate_data_port(&mut stream, addr, token).await?;
        }
        let frame = FetchFrame {
            topic: request.topic.clone(),
            partition: request.partition,
            offset: request.offset,
            max_bytes: request.max_bytes,
            max_wait_ms: request.max_wait_ms,
            follow: request.follow,
            replica: None,
            current_leader_epoch: request.current_leader_epoch,
        };
        stream.write_all(&frame.encode()).await.map_err(broken)?;
        stream.flush().await.map_err(broken)?;
        Ok(DataPortFetch {
            stream,
            addr: addr.to_owned(),
            done: false,
        })
    }

    /// The next response; `Ok(None)` once the fetch is complete (non-follow).
    pub async fn message(&mut self) -> Result<Option<FetchResponse>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let mut header = [0u8; RESPONSE_HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .await
            .map_err(|e| unavailable(&self.addr, &e))?;
        let header = ResponseHeader::decode(&header).map_err(|e| ClientError::Transport {
            code: tonic::Code::Internal,
            message: format!("data port {}: {e}", self.addr),
        })?;
        if header.length > MAX_FRAME_BYTES {
            return Err(ClientError::Transport {
                code: tonic::Code::Internal,
                message: format!(
                    "data port {} announced a {} byte frame; refusing more than {MAX_FRAME_BYTES}",
                    self.addr, header.length
                ),
            });
        }
        // Read straight into uninitialized capacity (no zeroing pass over up to 16 MiB), and
        // no further than this frame. Up to EAGER_FRAME_BYTES (more than any frame an honest
        // broker sends: 16 MiB of fetch plus one whole batch) is reserved at once, so the bytes
        // land without a copy; past it the buffer grows as bytes arrive, so a length that lies
        // costs memory only for bytes really sent.
        let len = header.length as usize;
        let mut payload = BytesMut::with_capacity(len.min(EAGER_FRAME_BYTES));
        let mut frame = (&mut self.stream).take(len as u64);
        while payload.len() < len {
            if payload.capacity() == payload.len() {
                let grow = payload.len().max(EAGER_FRAME_BYTES);
                payload.reserve(grow.min(len - payload.len()));
            }
            let n = frame
                .read_buf(&mut payload)
                .await
                .map_err(|e| unavailable(&self.addr, &e))?;
            if n == 0 {
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(unavailable(&self.addr, &eof));
            }
        }
        match header.kind {
            FrameKind::Data => Ok(Some(FetchResponse {
                batches: payload.freeze(),
                high_watermark: header.high_watermark,
                log_start_offset: header.log_start_offset,
                next_offset: header.next_offset,
            })),
            FrameKind::End => {
                self.done = true;
                Ok(None)
            }
            FrameKind::Error => {
                self.done = true;
                let code = ErrorCode::try_from(i32::from(header.error_code))
                    .unwrap_or(ErrorCode::Internal);
                Err(ClientError::refused(
                    code,
                    String::from_utf8_lossy(&payload).into_owned(),
                ))
            }
            // Only a replica fetch is answered with these; a broker that sends one to a
            // consumer breaks the protocol.
            FrameKind::Epoch | FrameKind::Diverging | FrameKind::OutOfRange => {
                self.done = true;
                let error = std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the broker sent a {:?} frame to a consumer", header.kind),
                );
                Err(unavailable(&self.addr, &error))
            }
        }
    }
}

fn unavailable(addr: &str, e: &std::io::Error) -> ClientError {
    if let Some(tls) = tls_failure(addr, e) {
        return tls;
    }
    ClientError::Transport {
        code: tonic::Code::Unavailable,
        message: format!("data port {addr}: {e}"),
    }
}
