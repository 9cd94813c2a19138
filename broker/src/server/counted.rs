//! Accepted gRPC connections counted on `weir_grpc_connections_active` while they are open:
//! each accepted `TcpStream` is wrapped in a [`Counted`] that holds the gauge up until the
//! connection is dropped. The wrapper answers tonic's [`Connected`] with the connection's
//! [`PeerIdentity`], so handlers see the peer's address (the in-flight limits are per peer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use crate::metrics::Open;
use crate::security::PeerIdentity;

/// A gRPC connection, counted while it lives.
pub struct Counted {
    stream: TcpStream,
    _open: Open,
}

impl Counted {
    pub fn new(stream: TcpStream, gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        Counted {
            stream,
            _open: Open::new(gauge),
        }
    }
}

impl Connected for Counted {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> Self::ConnectInfo {
        PeerIdentity {
            remote_addr: self.stream.peer_addr().ok(),
            certificate_principal: None,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
