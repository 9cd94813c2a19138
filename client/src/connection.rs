//! Connections to brokers: the one place a tonic channel is made, tuned for bulk transfer, and
//! the generated stub's limits set.
//!
//! [`Client`](crate::Client) (its bootstrap connection) and the cluster picture (one connection
//! per partition owner) both connect through here, so every connection a client makes has the
//! same settings and the dependency runs one way: client -> cluster -> connection.
//!
//! Invariants: every stub has its message size limits set explicitly ([`MAX_MESSAGE_BYTES`])
//! rather than tonic's 4 MiB default, which a full fetch response would exceed; every channel
//! has the HTTP/2 windows and frame size below, and reconnects by itself after its broker
//! restarts. Addresses are `HOST:PORT` or `http://HOST:PORT`; anything else is refused with
//! [`ClientError::InvalidAddress`] before any network call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1::weir_client::WeirClient;

use crate::ClientError;

/// The largest gRPC message the client sends or accepts (64 MiB): above the broker's 16 MiB
/// fetch cap and 8 MiB default batch limit, so only a misbehaving peer reaches it.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// HTTP/2 flow-control windows and frame size. tonic's defaults (1-2 MiB windows, 16 KiB frames)
/// cost ~40% of throughput on bulk transfers measured on these machines (see DESIGN.md).
const STREAM_WINDOW_BYTES: u32 = 16 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// How long an unanswered keep-alive ping may wait before the connection is declared dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A gRPC stub of the client: every call carries the token, if any.
pub(crate) type Grpc = WeirClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Default)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How [`Client::connect_with`](crate::Client::connect_with) connects.
#[derive(Clone)]
pub struct ConnectOptions {
    /// How long one connection attempt may take (also each later reconnect). Default 5 s.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 pings on a busy connection, so a dead broker (a host gone, not just a
    /// process) is noticed by long-lived fetch streams. Default 30 s; the connection is
    /// declared dead when a ping is not answered within another 20 s.
    pub keep_alive_interval: Duration,
    /// The user's token (`weir_<user>_<secret>`, from `weir user create`): sent as
    /// `authorization: Bearer` on every gRPC call and as the Authenticate request first on
    /// every data-port connection. Default none (anonymous).
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(30),
            token: None,
        }
    }
}

impl ConnectOptions {
    /// These options with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    fn bearer(&self) -> Result<Bearer, ClientError> {
        match &self.token {
            None => Ok(Bearer(None)),
            Some(token) => format!("Bearer {token}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| {
                    ClientError::InvalidArgument(
                        "the token is not printable ASCII: pass the token `weir user create` printed".into(),
                    )
                }),
        }
    }
}

/// A connection to the broker at `addr`, made now: fails with [`ClientError::Connect`] if it
/// is not up within the connect timeout.
pub(crate) async fn connect(addr: &str, options: &ConnectOptions) -> Result<Grpc, ClientError> {
    let endpoint = endpoint(addr, options)?;
    let bearer = options.bearer()?;
    // The endpoint's timeout covers the TCP connect; this one also covers name resolution
    // and the HTTP/2 handshake.
    let channel = tokio::time::timeout(options.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| ClientError::Connect {
            addr: addr.to_owned(),
            reason: format!("no answer within {:?}", options.connect_timeout),
        })?
        .map_err(|e| ClientError::connect(addr, &e))?;
    Ok(stub(channel, bearer))
}

/// A connection to the broker at `addr`, made on first use.
pub(crate) fn lazy(addr: &str, options: &ConnectOptions) -> Result<Grpc, ClientError> {
    Ok(stub(
        endpoint(addr, options)?.connect_lazy(),
        options.bearer()?,
    ))
}

/// Sends the data port's Authenticate request with `token` on a new connection and reads its
/// answer: `End` is success; an `Error` frame (UNAUTHENTICATED) is returned as the refusal.
pub(crate) async fn authenticate_data_port(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    addr: &str,
    token: &str,
) -> Result<(), ClientError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weir_proto::data_port::{FrameKind, RESPONSE_HEADER_LEN, ResponseHeader};
    let broken = |e: &dyn std::fmt::Display| ClientError::Transport {
        code: tonic::Code::Unavailable,
        message: format!("data port {addr}: authenticating: {e}"),
    };
    let request = weir_proto::data_port::authenticate::Authenticate {
        token: token.to_owned(),
    };
    stream
        .write_all(&request.encode())
        .await
        .map_err(|e| broken(&e))?;
    let mut head = [0u8; RESPONSE_HEADER_LEN];
    stream.read_exact(&mut head).await.map_err(|e| broken(&e))?;
    let header = ResponseHeader::decode(&head).map_err(|e| broken(&e))?;
    if header.kind == FrameKind::End {
        return Ok(());
    }
    // An error message is short; more is not read.
    let mut message = vec![0u8; (header.length as usize).min(64 << 10)];
    stream
        .read_exact(&mut message)
        .await
        .map_err(|e| broken(&e))?;
    let code = weir_proto::v1::ErrorCode::try_from(i32::from(header.error_code))
        .unwrap_or(weir_proto::v1::ErrorCode::Internal);
    Err(ClientError::refused(
        code,
        String::from_utf8_lossy(&message),
    ))
}

/// The host part of a broker address (no brackets for IPv6).
pub(crate) fn host_of(addr: &str) -> String {
    let authority = addr.trim_start_matches("http://").trim_end_matches('/');
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The tuned endpoint for `addr`.
fn endpoint(addr: &str, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let uri = endpoint_uri(addr)?;
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| ClientError::InvalidAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(options.keep_alive_interval)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT))
}

fn stub(channel: Channel, bearer: Bearer) -> Grpc {
    WeirClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// `HOST:PORT` -> `http://HOST:PORT`; `http://...` as is. TLS is not offered by the broker yet.
fn endpoint_uri(addr: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let authority = match addr.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported (only http)"
            )));
        }
        None => addr,
    };
    let authority = authority.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(format!("http://{authority}"))
        }
        _ => Err(invalid("missing host or port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_http_uris() {
        assert_eq!(
            endpoint_uri("127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            endpoint_uri("http://localhost:7070/").unwrap(),
            "http://localhost:7070"
        );
        assert_eq!(endpoint_uri("[::1]:7070").unwrap(), "http://[::1]:7070");
        assert!(endpoint_uri("localhost").is_err());
        assert!(endpoint_uri(":7070").is_err());
        assert!(endpoint_uri("https://localhost:7070").is_err());
        assert!(endpoint_uri("localhost:http").is_err());
    }
}
