//! The data port: fetches served with sendfile(2), straight from the segment files' page cache
//! to the socket, never through user space. The frames are specified in `segments-format.md`
//! and encoded by [`weir_proto::data_port`]; the fetch loop itself is the one gRPC `Fetch` uses
//! ([`FetchSession`]).
//!
//! Invariants and how they are kept:
//! - A frame header is written only once its chunk is known; the chunk's bytes then go out with
//!   sendfile from the segment's file descriptor at the chunk's position. The chunk holds the
//!   file open (`Arc<File>`), so retention unlinking the segment meanwhile changes nothing, and
//!   chunks end at the high watermark, so a torn or unpublished batch is never sent.
//! - sendfile runs on a non-blocking socket under tokio's readiness (`async_io`): a partial send
//!   continues from where it stopped, EAGAIN waits for writability, a vanished client (EPIPE,
//!   ECONNRESET) ends the connection. No runtime thread ever waits on the socket.
//! - A malformed request, an unknown topic or an offset out of range gets an `Error` frame and
//!   the connection is closed (an offset out of range with the log's bounds in its header);
//!   other connections are not affected. A follower whose fetch offset is below the log start
//!   gets `OutOfRange` instead (the leader's decision, see `replica::leader`) and fetches on.
//!   Fetch request bodies are at most 1 KiB (a produce connection's are bounded by
//!   `max_request_bytes`) and read within `REQUEST_TIMEOUT`, so a client cannot
//!   make the broker allocate or hold a task by sending a lying length or stalling
//!   mid-request.
//! - On shutdown, every connection ends: an idle one at once, a fetching one with an `Error`
//!   frame (SHUTTING_DOWN).
//!
//! - A connection whose first request sets the produce flag is a produce connection, served by
//!   [`super::data_port_produce`] from then on.
//!
//! Cold data: sendfile of pages not in the page cache reads the disk on the calling thread, as
//! Kafka's does; weir's consumers mostly read the recent, cached tail.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};
use weir_proto::data_port::authenticate::{Authenticate, FLAG_AUTHENTICATE};
use weir_proto::data_port::produce::FLAG_PRODUCE;
use weir_proto::data_port::{
    EPOCH_PAYLOAD_LEN, EpochEntry, FetchFrame, FrameKind, RESPONSE_FLAG_SYNC_WANTED, ReplicaFetch,
    ResponseHeader,
};
use weir_proto::v1::{Error, ErrorCode};

use super::BrokerState;
use super::fetch::{FetchEvent, FetchParams, FetchSession, Marks, Reader, Transport, check_start};
use crate::replica::leader::{self, ReplicaFetchAnswer};
use crate::security::PeerIdentity;
use crate::security::acl::{Operation, Resource};
use crate::security::guard::{Credentials, Door};
use crate::security::tls::{MaybeTls, ServerTls};
use crate::wire::errors::{invalid_request, storage_error};

/// How long a client may take to send a request body once its length arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the kind of a request whose length no request may have is waited for.
const OVERSIZED_WAIT: Duration = Duration::from_secs(1);

/// A data-port connection, plaintext or TLS.
pub type DataStream = MaybeTls<TcpStream>;

/// Accepts data-port connections until shutdown, then waits for them to end. With `tls`, each
/// connection's handshake runs on its own task first (bounded by the handshake timeout).
pub async fn serve(listener: TcpListener, state: Arc<BrokerState>, tls: Option<Arc<ServerTls>>) {
    let mut shutdown = state.shutdown_signal();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (state, tls) = (Arc::clone(&state), tls.clone());
                    connections.spawn(async move {
                        let stream = match tls {
                            None => MaybeTls::Plain(stream),
                            Some(tls) => {
                                // A handshake cut short by shutdown just ends.
                                let mut shutdown = state.shutdown_signal();
                                let accepted = tokio::select! {
                                    accepted = tls.accept(stream) => accepted,
                                    () = super::stopped(&mut shutdown) => return,
                                };
                                match accepted {
                                    Ok(stream) => stream,
                                    Err(e) => {
                                        debug!(%peer, error = %e, "data port: TLS handshake failed");
                                        return;
                                    }
                                }
                            }
                        };
                        let identity = stream.identity();
                        connection(stream, identity, state).await
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    warn!(error = %e, "data port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = super::stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One client connection: fetches one after another until it closes, errs, or shutdown.
/// `identity` is the peer as the transport knows it (address; principal under mutual TLS).
async fn connection(mut stream: DataStream, identity: PeerIdentity, state: Arc<BrokerState>) {
    let peer = identity
        .remote_addr
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _open = crate::metrics::Open::new(&state.metrics.data_port_connections);
    let mut shutdown = state.shutdown_signal();
    // The token of an Authenticate request (see `authenticate`), checked again for every
    // request (a revoked token stops working on an open connection); until then, the
    // connection is whoever its transport says (anonymous, or its certificate's user).
    let mut credentials = Credentials {
        door: Door::DataPort,
        peer: identity.clone(),
        token: None,
    };
    loop {
        let mut len = [0u8; 4];
        let read = tokio::select! {
            read = stream.read_exact(&mut len) => read,
            () = super::stopped(&mut shutdown) => return,
        };
        if read.is_err() {
            return; // the client closed the connection between fetches
        }
        let len = u32::from_be_bytes(len);
        if len < 2 {
            // Too short for a version and flags, of either request kind.
            let short = FetchFrame::check_len(len).err().map(|e| e.to_string());
            let why = short.unwrap_or_else(|| format!("request body of {len} bytes"));
            return send_error(&mut stream, invalid_request(why)).await;
        }
        // A length too long for a request of either kind may be a lie with no body behind it:
        // its first two bytes (which say the kind, and so which refusal) are waited for briefly.
        let oversized = u64::from(len)
            > state
                .max_request_bytes
                .max(weir_proto::data_port::MAX_REQUEST_LEN as u64);
        let wait = if oversized {
            OVERSIZED_WAIT
        } else {
            REQUEST_TIMEOUT
        };
        let mut first = [0u8; 2];
        match tokio::time::timeout(wait, stream.read_exact(&mut first)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) if oversized => {
                let why = format!(
                    "request body of {len} bytes: a fetch is at most {} bytes, a produce at most max_request_bytes ({})",
                    weir_proto::data_port::MAX_REQUEST_LEN,
                    state.max_request_bytes
                );
                return send_error(&mut stream, invalid_request(why)).await;
            }
            Err(_) => return,
        }
        if first[1] == FLAG_AUTHENTICATE {
            match authenticate(&mut stream, &state, &identity, len, first).await {
                Ok(token) => {
                    credentials.token = Some(token);
                    continue;
                }
                Err(Some(error)) => return send_error(&mut stream, error).await,
                Err(None) => return,
            }
        }
        // Every request is someone's: the authenticated user, or whom the transport names
        // (UNAUTHENTICATED where the listener requires more).
        let guard = &state.security;
        let policy = guard.policy(&state.cluster.current());
        let token = credentials.token.as_deref();
        if let Err(e) = guard.authenticate(&policy, Door::DataPort, &identity, token) {
            return send_error(&mut stream, e).await;
        }
        if first[1] & FLAG_PRODUCE != 0 {
            // A produce connection from here on (see `data_port_produce`); every request is
            // checked (the token, write on its topic) by the produce path.
            let credentials = credentials.clone();
            return super::data_port_produce::serve(
                stream,
                identity,
                state,
                credentials,
                len,
                first,
            )
            .await;
        }
        let frame = match read_request(&mut stream, len, first).await {
            Ok(frame) => frame,
            Err(Some(error)) => return send_error(&mut stream, error).await,
            Err(None) => return,
        };
        // Read on the topic; a follower's replica fetch is the cluster's (Kafka's
        // ClusterAction). Refused with an Error frame and no data.
        let allowed = match frame.replica {
            None => state
                .security
                .check(
                    &state.cluster.current(),
                    &credentials,
                    Operation::Read,
                    Resource::Topic(&frame.topic),
                )
                .map(drop),
            Some(_) => state
                .security
                .check_cluster_action(&state.cluster.current(), &credentials)
                .map(drop),
        };
        if let Err(e) = allowed {
            return send_error(&mut stream, e).await;
        }
        match serve_fetch(&mut stream, &state, frame).await {
            Ok(true) => continue,
            Ok(false) => return,
            Err(e) => {
                debug!(%peer, error = %e, "data port: connection ended mid-fetch");
                return;
            }
        }
    }
}

/// Reads an Authenticate request whose first two bytes were read and checks its token; the
/// answer to a good one (an `End` frame) is sent here. A length over the request's limit is
/// refused before any of its body is read. `Err(None)` when the client went away or stalled.
async fn authenticate(
    stream: &mut DataStream,
    state: &BrokerState,
    identity: &PeerIdentity,
    body_len: u32,
    first: [u8; 2],
) -> Result<String, Option<Error>> {
    let len = Authenticate::check_len(body_len).map_err(|e| {
        Some(weir_proto::status::error(
            ErrorCode::Unauthenticated,
            format!("Authenticate request refused: {e}"),
        ))
    })?;
    let mut body = vec![0u8; len];
    body[..2].copy_from_slice(&first);
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut body[2..])).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return Err(None),
    }
    let request = Authenticate::decode(&body).map_err(|e| Some(invalid_request(e.to_string())))?;
    let guard = &state.security;
    let policy = guard.policy(&state.cluster.current());
    guard
        .authenticate(&policy, Door::DataPort, identity, Some(&request.token))
        .map_err(Some)?;
    let none = Marks {
        high_watermark: 0,
        log_start_offset: 0,
        next_offset: 0,
    };
    let done = frame_header(FrameKind::End, 0, none);
    if stream.write_all(&done.encode()).await.is_err() {
        return Err(None);
    }
    Ok(request.token)
}

/// Reads and decodes a fetch request body whose first two bytes (`first`: version and flags)
/// were read; `Err(None)` when the client went away or stalled.
async fn read_request(
    stream: &mut DataStream,
    body_len: u32,
    first: [u8; 2],
) -> Result<FetchFrame, Option<Error>> {
    let len = FetchFrame::check_len(body_len).map_err(|e| Some(invalid_request(e.to_string())))?;
    let mut body = vec![0u8; len];
    body[..2].copy_from_slice(&first);
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut body[2..])).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return Err(None),
    }
    FetchFrame::decode(&body).map_err(|e| Some(invalid_request(e.to_string())))
}

/// Serves one fetch. `Ok(true)`: it ended normally and the connection takes another request;
/// `Ok(false)`: the connection must close (an error was sent, or the client left).
async fn serve_fetch(
    stream: &mut DataStream,
    state: &BrokerState,
    frame: FetchFrame,
) -> io::Result<bool> {
    let looked_up = match frame.replica {
        None => state.readable_partition(&frame.topic, frame.partition, frame.current_leader_epoch),
        Some(_) => state.partition(&frame.topic, frame.partition),
    };
    let partition = match looked_up {
        Ok(p) => p,
        Err(e) => {
            send_error(stream, e).await;
            return Ok(false);
        }
    };
    let mut replica_fetch = None;
    if let Some(fetch) = frame.replica {
        let Some(replica) = state.replicas.get(&frame.topic, frame.partition) else {
            let error = weir_proto::status::error(
                ErrorCode::NotLeader,
                format!(
                    "{}-{} is not replicated on broker {}",
                    frame.topic, frame.partition, state.cluster.node_id
                ),
            );
            send_error(stream, error).await;
            return Ok(false);
        };
        match leader::on_replica_fetch(&replica, &state.replicas, &frame, &fetch) {
            ReplicaFetchAnswer::Refuse(error) => {
                send_error(stream, error).await;
                return Ok(false);
            }
            ReplicaFetchAnswer::Diverging(entry) => {
                send_epoch(stream, FrameKind::Diverging, entry, &partition).await?;
                return Ok(true);
            }
            ReplicaFetchAnswer::OutOfRange(entry) => {
                send_epoch(stream, FrameKind::OutOfRange, entry, &partition).await?;
                return Ok(true);
            }
            ReplicaFetchAnswer::Serve { epochs } => {
                for entry in epochs {
                    send_epoch(stream, FrameKind::Epoch, entry, &partition).await?;
                }
            }
        }
        replica_fetch = Some((replica, fetch));
    }
    if let Err(e) = check_start(&partition.log, frame.offset) {
        // Where the log is, so a client can restart inside it without another round trip.
        let marks = match &e {
            weir_storage::StorageError::OffsetOutOfRange {
                log_start,
                high_watermark,
                ..
            } => (*high_watermark, *log_start),
            _ => (0, 0),
        };
        send_error_marked(stream, storage_error(&e), marks).await;
        return Ok(false);
    }
    let params = FetchParams {
        offset: frame.offset,
        max_bytes: frame.max_bytes,
        max_wait_ms: frame.max_wait_ms,
        follow: frame.follow,
    };
    let reader = if replica_fetch.is_some() {
        Reader::Replica
    } else {
        Reader::Consumer
    };
    let mut session = FetchSession::new(state, &partition, params, reader, Transport::DataPort);
    loop {
        let event = if frame.follow {
            // While following, the client sends nothing; readability means it hung up (or
            // broke the protocol), either way the fetch is over.
            tokio::select! {
                event = session.next() => event,
                () = hung_up(stream) => return Ok(false),
            }
        } else {
            session.next().await
        };
        match event {
            None => return Ok(false),
            Some(FetchEvent::Chunk { chunk, marks }) => {
                let len = chunk.bytes.len();
                let header = frame_header(FrameKind::Data, len as u32, marks).encode();
                match stream {
                    MaybeTls::Plain(tcp) => {
                        send_more(tcp, &header).await?;
                        send_file_range(tcp, &chunk.file, chunk.position, len).await?;
                    }
                    // Under TLS the bytes are encrypted in user space: the chunk's slice of the
                    // segment map goes through the TLS stream (as gRPC Fetch sends it).
                    MaybeTls::Tls { .. } => {
                        stream.write_all(&header).await?;
                        stream.write_all(&chunk.bytes).await?;
                        stream.flush().await?;
                    }
                }
            }
            Some(FetchEvent::Idle(marks)) => {
                stream
                    .write_all(&frame_header(FrameKind::Data, 0, marks).encode())
                    .await?;
                stream.flush().await?;
            }
            Some(FetchEvent::End(marks)) => {
                let flags = match &replica_fetch {
                    Some((replica, fetch)) => sync_request(replica, fetch),
                    None => 0,
                };
                let mut header = frame_header(FrameKind::End, 0, marks);
                header.flags = flags;
                stream.write_all(&header.encode()).await?;
                stream.flush().await?;
                return Ok(true);
            }
            Some(FetchEvent::Failed(error)) => {
                send_error(stream, error).await;
                return Ok(false);
            }
        }
    }
}

/// Asks a follower to sync before its next fetch when an acks=durable produce waits past what
/// it reported synced.
fn sync_request(replica: &crate::replica::Replica, fetch: &ReplicaFetch) -> u8 {
    if leader::sync_wanted(replica, fetch.durable_offset) {
        RESPONSE_FLAG_SYNC_WANTED
    } else {
        0
    }
}

/// Sends an `Epoch`, `Diverging` or `OutOfRange` frame.
async fn send_epoch(
    stream: &mut DataStream,
    kind: FrameKind,
    entry: EpochEntry,
    partition: &crate::topics::Partition,
) -> io::Result<()> {
    let header = ResponseHeader {
        kind,
        flags: 0,
        error_code: 0,
        length: EPOCH_PAYLOAD_LEN as u32,
        high_watermark: partition.high_watermark(),
        log_start_offset: partition.log.log_start_offset(),
        next_offset: entry.offset,
    };
    let mut frame = header.encode().to_vec();
    frame.extend_from_slice(&entry.encode());
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// The header of a `Data` or `End` frame of `length` payload bytes.
fn frame_header(kind: FrameKind, length: u32, marks: Marks) -> ResponseHeader {
    ResponseHeader {
        kind,
        flags: 0,
        error_code: 0,
        length,
        high_watermark: marks.high_watermark,
        log_start_offset: marks.log_start_offset,
        next_offset: marks.next_offset,
    }
}

/// Completes when the client closed its side or sent bytes it should not have (readiness can
/// be spurious, so it is confirmed with a read). Under TLS, a read through the TLS stream
/// (which returns only for application data, a close or an error).
async fn hung_up(stream: &mut DataStream) {
    let mut probe = [0u8; 1];
    let stream = match stream {
        MaybeTls::Plain(tcp) => tcp,
        MaybeTls::Tls { .. } => {
            let _ = stream.read(&mut probe).await;
            return;
        }
    };
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            _ => return,
        }
    }
}

/// Sends `len` bytes of `file` from `position` with sendfile, under tokio readiness.
/// Writes `bytes` with MSG_MORE: the kernel holds them for the write that follows, so a
/// frame's header and its sendfile payload leave in the same segments (the socket has nodelay
/// set, which would otherwise send the header alone).
async fn send_more(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        written += stream
            .async_io(Interest::WRITABLE, || {
                rustix::net::send(stream, &bytes[written..], rustix::net::SendFlags::MORE)
                    .map_err(io::Error::from)
            })
            .await?;
    }
    Ok(())
}

async fn send_file_range(
    stream: &TcpStream,
    file: &File,
    position: u64,
    len: usize,
) -> io::Result<()> {
    let mut offset = position;
    let mut remaining = len;
    while remaining > 0 {
        // async_io retries the closure on readiness after WouldBlock (EAGAIN).
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(stream, file, Some(&mut offset), remaining)
                    .map_err(io::Error::from)
            })
            .await?;
        if sent == 0 {
            // The file ends before the chunk does: never pad the stream with garbage.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file is shorter than the chunk read from it",
            ));
        }
        remaining -= sent;
    }
    Ok(())
}

/// Sends an `Error` frame (best effort: the connection closes after it either way).
async fn send_error<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut MaybeTls<S>, error: Error) {
    send_error_marked(stream, error, (0, 0)).await;
}

/// [`send_error`] with the partition's (high watermark, log start) in the header: an
/// OFFSET_OUT_OF_RANGE answer says where the log is (other errors send zeros).
async fn send_error_marked<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut MaybeTls<S>,
    error: Error,
    marks: (u64, u64),
) {
    let message = error.message.as_bytes();
    let header = ResponseHeader {
        kind: FrameKind::Error,
        flags: 0,
        error_code: u16::try_from(error.code).unwrap_or(ErrorCode::Internal as u16),
        length: message.len() as u32,
        high_watermark: marks.0,
        log_start_offset: marks.1,
        next_offset: 0,
    };
    let _ = stream.write_all(&header.encode()).await;
    let _ = stream.write_all(message).await;
    let _ = stream.shutdown().await;
}
