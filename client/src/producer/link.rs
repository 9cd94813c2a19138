//! One broker's produce link, over either wire: a gRPC `ProduceStream` or a produce connection
//! on the broker's data port (frames: [`weir_proto::data_port::produce`]). The sender queues
//! requests on the link as soon as it is opened and hears back through [`LinkEvent`]s, tagged
//! with the link's epoch so events of a replaced link are recognized; both wires produce the
//! same events, so the sender's retry, ordering and idempotence rules do not depend on the wire.
//!
//! Invariants: every request handed to a link is either answered by a `Response` event or
//! covered by the link's one `Failed` event (after which the link sends nothing more); on the
//! data port a batch's bytes go from the producer's buffer to the socket in a vectored write
//! with the frame's head, never copied into a frame.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weir_proto::data_port::produce::{Answer, decode_answer, encode_request_head};
use weir_proto::v1::{ProduceRequest, ProduceResponse};

use crate::ClientError;
use crate::connection::{ClientTls, dial, tls_failure};

/// How long connecting to a data port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer accepted: a `ProduceResponse` or an `Error` is a few hundred bytes; this
/// only stops a confused peer from making the client allocate.
const MAX_ANSWER_BYTES: usize = 1 << 20;

pub(super) enum LinkEvent {
    Response(ProduceResponse),
    /// The link ended; `opened` says whether it got as far as reaching the broker (a link that
    /// never did was not one of its batches' attempts).
    Failed {
        error: ClientError,
        opened: bool,
    },
}

pub(super) struct Tagged {
    pub address: Arc<str>,
    pub epoch: u64,
    pub event: LinkEvent,
}

/// Which wire a link runs over.
pub(super) enum Wire {
    Grpc(crate::connection::Grpc),
    /// The broker's data port, resolved, the token to present there first and the client's
    /// TLS.
    DataPort {
        address: Arc<str>,
        token: Option<Arc<str>>,
        tls: Option<ClientTls>,
    },
}

/// Runs one broker's link until it ends, forwarding what happens as events.
pub(super) async fn run(
    wire: Wire,
    outgoing: mpsc::UnboundedReceiver<ProduceRequest>,
    address: Arc<str>,
    epoch: u64,
    events: mpsc::UnboundedSender<Tagged>,
) {
    let send = |event| {
        let _ = events.send(Tagged {
            address: Arc::clone(&address),
            epoch,
            event,
        });
    };
    match wire {
        Wire::Grpc(grpc) => run_grpc(grpc, outgoing, send).await,
        Wire::DataPort {
            address,
            token,
            tls,
        } => run_data_port(&address, token.as_deref(), tls.as_ref(), outgoing, send).await,
    }
}

async fn run_grpc(
    mut grpc: crate::connection::Grpc,
    outgoing: mpsc::UnboundedReceiver<ProduceRequest>,
    send: impl Fn(LinkEvent),
) {
    let mut responses = match grpc
        .produce_stream(UnboundedReceiverStream::new(outgoing))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return send(LinkEvent::Failed {
                error: status.into(),
                opened: false,
            });
        }
    };
    loop {
        match responses.message().await {
            Ok(Some(response)) => send(LinkEvent::Response(response)),
            Ok(None) => {
                return send(LinkEvent::Failed {
                    error: ClientError::Transport {
                        code: tonic::Code::Unavailable,
                        message: "the broker ended the produce stream".into(),
                    },
                    opened: true,
                });
            }
            Err(status) => {
                return send(LinkEvent::Failed {
                    error: status.into(),
                    opened: true,
                });
            }
        }
    }
}

async fn run_data_port(
    addr: &str,
    token: Option<&str>,
    tls: Option<&ClientTls>,
    mut outgoing: mpsc::UnboundedReceiver<ProduceRequest>,
    send: impl Fn(LinkEvent),
) {
    let broken = |what: &str, e: &std::io::Error| {
        tls_failure(addr, e).unwrap_or_else(|| ClientError::Transport {
            code: tonic::Code::Unavailable,
            message: format!("data port {addr}: {what}: {e}"),
        })
    };
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, dial(addr, tls)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return send(LinkEvent::Failed {
                error: broken("connecting", &e),
                opened: false,
            });
        }
        Err(_) => {
            return send(LinkEvent::Failed {
                error: ClientError::Timeout {
                    what: "connecting to the data port",
                    after: CONNECT_TIMEOUT,
                },
                opened: false,
            });
        }
    };
    if let Some(token) = token
        && let Err(error) =
            crate::connection::authenticate_data_port(&mut stream, addr, token).await
    {
        return send(LinkEvent::Failed {
            error,
            opened: false,
        });
    }
    let (mut reader, mut writer) = stream.into_split();
    // Writes run beside the reads: a request is sent as soon as it is queued, answers are read
    // as they come. The writer stops when the link is dropped or the socket fails; the reader
    // reports the link's end either way.
    let write = tokio::spawn(async move {
        while let Some(request) = outgoing.recv().await {
            let head = Bytes::from(encode_request_head(&request));
            let mut frame = head.chain(request.batch);
            // (A flush is a no-op on plaintext; under TLS it sends the encrypted records.)
            if writer.write_all_buf(&mut frame).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let end = loop {
        let mut len = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut len).await {
            break broken("the broker closed the produce connection", &e);
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_ANSWER_BYTES {
            break ClientError::Transport {
                code: tonic::Code::Internal,
                message: format!("data port {addr} announced a {len} byte produce answer"),
            };
        }
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body).await {
            break broken("reading a produce answer", &e);
        }
        match decode_answer(&body) {
            Ok(Answer::Produced(response)) => send(LinkEvent::Response(response)),
            Ok(Answer::Closing(error)) => break ClientError::from_weir(error),
            Err(e) => {
                break ClientError::Transport {
                    code: tonic::Code::Internal,
                    message: format!("data port {addr}: a malformed produce answer: {e}"),
                };
            }
        }
    };
    write.abort();
    send(LinkEvent::Failed {
        error: end,
        opened: true,
    });
}
