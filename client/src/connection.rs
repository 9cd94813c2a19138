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
//! restarts. Addresses are `HOST:PORT`, `http://HOST:PORT` or (with TLS) `https://HOST:PORT`;
//! anything else is refused with [`ClientError::InvalidAddress`] before any network call.
//!
//! TLS ([`ClientTls`], in [`ConnectOptions::tls`]): every connection the client makes, the
//! tonic channels and the data-port connections of consumers and producers alike, is dialled
//! by [`dial`] (one connector, one rustls config), so all of them trust the same CAs and
//! present the same client certificate. A TLS failure becomes [`ClientError::Tls`] naming
//! what to do ([`tls_failure`]).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1::weir_client::WeirClient;

use crate::ClientError;
use crate::error::TlsFailure;

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
    /// TLS for every connection (gRPC and data ports), or `None` for plaintext (the default).
    pub tls: Option<ClientTls>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// A client's TLS settings, loaded: the CAs it trusts, its certificate (for mutual TLS) and
/// an optional server name to verify instead of the host dialled. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "client_certificate",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn invalid_tls(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::InvalidArgument(format!("TLS: {what}: {e}"))
}

impl ClientTls {
    /// Trusts the CA certificates in `ca_pem` (PEM); with `identity`, presents that client
    /// certificate chain and key (PEM) for mutual TLS.
    pub fn from_pem(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid_tls("the CA file", e))?;
        if cas.is_empty() {
            return Err(invalid_tls("the CA file", "no PEM CERTIFICATE in it"));
        }
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| invalid_tls("a CA certificate", e))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_tls("protocol versions", e))?
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid_tls("the client certificate", e))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| invalid_tls("the client key", e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid_tls("the client certificate and key", e))?
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// [`ClientTls::from_pem`] from files.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| invalid_tls(&format!("reading {}", path.display()), e))
        };
        let ca = read(ca)?;
        match identity {
            None => ClientTls::from_pem(&ca, None),
            Some((cert, key)) => ClientTls::from_pem(&ca, Some((&read(cert)?, &read(key)?))),
        }
    }

    /// Verifies the brokers' certificates against `name` instead of the host dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Wraps `stream`, connected to `host`, in TLS.
    async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self.server_name.as_deref().unwrap_or(host).to_owned();
        let name = ServerName::try_from(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(name, stream)
            .await
    }
}

/// A connection to a broker port: plaintext or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The read half of a [`Stream`].
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a [`Stream`].
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    /// Its halves: a plaintext socket splits without a lock, a TLS stream through tokio's.
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            tls @ Stream::Tls(_) => {
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Connects to `addr` (`HOST:PORT`), with TLS when `tls` is given: the one dialler of every
/// connection the client makes. Errors are plain I/O errors; [`tls_failure`] names TLS ones.
pub(crate) async fn dial(addr: &str, tls: Option<&ClientTls>) -> io::Result<Stream> {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => match tls.connect(&host_of(authority), stream).await {
            Ok(stream) => Ok(Stream::Tls(Box::new(stream))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) && e.get_ref().is_none_or(|inner| !inner.is::<rustls::Error>()) =>
            {
                Err(io::Error::new(e.kind(), NoTlsAnswer(e.to_string())))
            }
            Err(e) => Err(e),
        },
    }
}

/// The [`ClientError::Tls`] an error (or one of its causes) stands for, if it is a TLS failure.
pub(crate) fn tls_failure(
    addr: &str,
    error: &(dyn std::error::Error + 'static),
) -> Option<ClientError> {
    use rustls::{AlertDescription, CertificateError, Error as Tls};
    let mut next = Some(error);
    while let Some(e) = next {
        let found = e.downcast_ref::<Tls>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Tls>())
        });
        if let Some(tls) = found {
            let failure = match tls {
                Tls::InvalidCertificate(cert) => match cert {
                    CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        TlsFailure::Expired
                    }
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                        TlsFailure::NotYetValid
                    }
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                    _ => TlsFailure::Handshake,
                },
                Tls::AlertReceived(AlertDescription::CertificateRequired) => {
                    TlsFailure::ClientCertificateRequired
                }
                Tls::AlertReceived(
                    AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::CertificateExpired
                    | AlertDescription::DecryptError,
                ) => TlsFailure::ClientCertificateRefused,
                Tls::InvalidMessage(_) | Tls::InappropriateMessage { .. } => TlsFailure::NotTls,
                _ => TlsFailure::Handshake,
            };
            return Some(ClientError::Tls {
                addr: addr.to_owned(),
                failure,
                detail: tls.to_string(),
            });
        }
        if let Some(no_answer) = e.downcast_ref::<NoTlsAnswer>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<NoTlsAnswer>())
        }) {
            return Some(ClientError::Tls {
                addr: addr.to_owned(),
                failure: TlsFailure::NotTls,
                detail: no_answer.0.clone(),
            });
        }
        // A plaintext HTTP/2 client that reached a TLS port reads the broker's TLS alert record
        // (0x15 0x03 0x03 ...) as a frame header announcing a 1.3 MB frame: h2 reports a frame
        // size error. A weir broker never sends a frame larger than the size it negotiated, so
        // this error means the port speaks TLS.
        if e.to_string().contains("frame with invalid size") {
            return Some(ClientError::Tls {
                addr: addr.to_owned(),
                failure: TlsFailure::ServerRequiresTls,
                detail: e.to_string(),
            });
        }
        next = e.source();
    }
    None
}

/// The peer closed the connection during the TLS handshake: what a plaintext listener does.
#[derive(Debug, thiserror::Error)]
#[error("the connection closed during the TLS handshake: {0}")]
struct NoTlsAnswer(String);

/// A channel's connection, from its connector.
type TokioIo = hyper_util::rt::TokioIo<Primed>;

/// A TLS connection whose first bytes from the broker were read before it was handed to the
/// channel. Under TLS 1.3 a server refuses a client certificate only after the client's
/// handshake is done, with an alert that then surfaces as a bare "connection closed" through
/// HTTP/2; a gRPC server always speaks first (its SETTINGS), so reading that first record in
/// the connector turns a refusal into a connect error that names it ([`tls_failure`]).
pub(crate) struct Primed {
    first: Vec<u8>,
    read: usize,
    stream: Stream,
}

impl Primed {
    async fn new(mut stream: Stream) -> io::Result<Primed> {
        use tokio::io::AsyncReadExt;
        let mut first = vec![0u8; 16 << 10];
        let n = stream.read(&mut first).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                NoTlsAnswer("the broker closed the connection right after the handshake".into()),
            ));
        }
        first.truncate(n);
        Ok(Primed {
            first,
            read: 0,
            stream,
        })
    }
}

impl AsyncRead for Primed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.read);
            buf.put_slice(&this.first[this.read..this.read + n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Primed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(30),
            token: None,
            tls: None,
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
    let connected = async {
        match &options.tls {
            None => endpoint.connect().await,
            Some(tls) => endpoint.connect_with_connector(connector(tls)).await,
        }
    };
    let channel = tokio::time::timeout(options.connect_timeout, connected)
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
    let endpoint = endpoint(addr, options)?;
    let channel = match &options.tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(connector(tls)),
    };
    Ok(stub(channel, options.bearer()?))
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

/// The channel's connector under TLS: [`dial`], as every other connection.
fn connector(
    tls: &ClientTls,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = TokioIo,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo>> + Send,
> + Clone
+ Send
+ 'static {
    let tls = tls.clone();
    tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
            let stream = dial(&authority, Some(&tls)).await?;
            Ok(hyper_util::rt::TokioIo::new(Primed::new(stream).await?))
        }
    })
}

/// The host part of a broker address (no brackets for IPv6).
pub(crate) fn host_of(addr: &str) -> String {
    let authority = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
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

/// `HOST:PORT` -> `http://HOST:PORT`; `http://...` as is; `https://` too (the connector
/// decides TLS from [`ConnectOptions::tls`], so the URI's scheme stays `http`).
fn endpoint_uri(addr: &str) -> Result<String, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let authority = match addr.split_once("://") {
        // The scheme only says whether to use TLS, which ConnectOptions::tls decides.
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported (only http and https)"
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
        assert_eq!(
            endpoint_uri("https://localhost:7070").unwrap(),
            "http://localhost:7070"
        );
        assert!(endpoint_uri("ftp://localhost:7070").is_err());
        assert!(endpoint_uri("localhost:http").is_err());
    }
}
