//! TLS on the broker's listeners (gRPC internal and external, the data port) and on its own
//! outgoing links (to the controller, to a partition leader's data port).
//!
//! What it owns: loading the PEM certificate chain, key and client CA ([`TlsConfig`] in the
//! broker's config), the current `rustls::ServerConfig`, its reload, the handshake (with its
//! timeout), and the mapping of a verified client certificate to
//! [`PeerIdentity::certificate_principal`].
//!
//! Invariants and how they are kept:
//! - Every connection's acceptor is built from the config current when it was accepted
//!   ([`ServerTls::accept`] clones the `Arc` out of the lock); a reload swaps the `Arc`, so
//!   sessions already established are untouched and the next connection sees the new
//!   certificate.
//! - A reload (SIGHUP, or a changed modification time of one of the files, polled every
//!   `reload_interval_ms`) that fails to read or parse keeps the old config and logs a warning:
//!   a half-written certificate never takes a listener down.
//! - A handshake runs on the connection's own task, never on an accept loop, and is bounded by
//!   `handshake_timeout_ms`: a peer that stalls (or sends plaintext) is dropped.
//! - Under mutual TLS (`client_ca_file`) a client certificate is required and verified against
//!   that CA before a byte of a request is read; the principal is taken only from a verified
//!   certificate.
//! - Only the ring provider is used (no process-wide default provider is installed).
//!
//! kTLS: the data port's fetches use sendfile on plaintext connections. Under TLS they write the
//! chunk's bytes (the segment map's slice, as gRPC Fetch does) through the TLS stream, encrypting
//! in user space; [`ktls_available`] only reports whether the kernel offers the `tls` ULP (the
//! offload itself is not implemented).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use super::PeerIdentity;

/// How a verified client certificate names its principal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalFrom {
    /// The subject's common name (the default).
    #[default]
    Cn,
    /// The first DNS name of the subject alternative names.
    SanDns,
    /// The first URI of the subject alternative names (e.g. a SPIFFE id).
    SanUri,
}

impl std::str::FromStr for PrincipalFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cn" => Ok(PrincipalFrom::Cn),
            "san-dns" => Ok(PrincipalFrom::SanDns),
            "san-uri" => Ok(PrincipalFrom::SanUri),
            _ => Err(format!("{s:?} is not one of cn, san-dns, san-uri")),
        }
    }
}

/// A listener that may use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsListener {
    /// The internal gRPC listener (`listen`).
    Grpc,
    /// The external gRPC listener (`external_listen`).
    External,
    /// The data port (`data_listen`).
    Data,
    /// The metrics listener (`metrics_listen`): only when named, since Prometheus scrapers and
    /// `weir health` speak plain HTTP unless configured otherwise.
    Metrics,
}

impl std::str::FromStr for TlsListener {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(TlsListener::Grpc),
            "external" => Ok(TlsListener::External),
            "data" => Ok(TlsListener::Data),
            "metrics" => Ok(TlsListener::Metrics),
            _ => Err(format!("{s:?} is not one of grpc, external, data, metrics")),
        }
    }
}

/// The `[tls]` table of the broker's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM, leaf first). Setting it turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Mutual TLS: client certificates are required and verified against these CAs (PEM).
    pub client_ca_file: Option<PathBuf>,
    /// How a verified client certificate names its principal.
    pub principal_from: PrincipalFrom,
    /// The listeners that use TLS; default (unset) `grpc`, `external` and `data` once
    /// `cert_file` is set (`metrics` only when listed).
    pub listeners: Option<Vec<TlsListener>>,
    /// A handshake not finished in this time closes the connection, ms.
    pub handshake_timeout_ms: u64,
    /// How often the files' modification times are checked for a reload, ms (0: only SIGHUP).
    pub reload_interval_ms: u64,
    /// The CAs (PEM) this broker trusts when it connects to other nodes (its controller, a
    /// leader's data port); setting it makes those links use TLS, presenting `cert_file` /
    /// `key_file` as the client certificate when they are set.
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            principal_from: PrincipalFrom::Cn,
            listeners: None,
            handshake_timeout_ms: 10_000,
            reload_interval_ms: 5_000,
            ca_file: None,
        }
    }
}

impl TlsConfig {
    /// Whether `listener` serves TLS.
    pub fn applies_to(&self, listener: TlsListener) -> bool {
        self.cert_file.is_some()
            && self
                .listeners
                .as_ref()
                .map_or(listener != TlsListener::Metrics, |listeners| {
                    listeners.contains(&listener)
                })
    }

    /// Checks the combination of settings (the files are read by [`ServerTls::new`]).
    pub fn check(&self) -> Result<(), TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(TlsError::Config(
                    "tls.cert_file and tls.key_file go together: set both or neither".into(),
                ));
            }
            (None, None) if self.client_ca_file.is_some() => {
                return Err(TlsError::Config(
                    "tls.client_ca_file needs tls.cert_file and tls.key_file".into(),
                ));
            }
            _ => {}
        }
        if self.handshake_timeout_ms == 0 {
            return Err(TlsError::Config(
                "tls.handshake_timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}: {detail}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
        detail: String,
    },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("TLS setup refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider weir uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            expected: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            expected: "certificate",
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "tls.key_file",
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "tls.key_file",
        path: path.to_owned(),
        expected: "private key",
        detail: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Builds a server config from the files `config` names (read now).
pub fn load_server_config(config: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Config(
            "TLS needs tls.cert_file and tls.key_file".into(),
        ));
    };
    let certs = read_certs("tls.cert_file", cert_file)?;
    let key = read_key(key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &config.client_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("tls.client_ca_file", ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(format!("tls.client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// A client config for the broker's own links: trusts `tls.ca_file`, presents `cert_file` /
/// `key_file` when set. `None` when `tls.ca_file` is unset (the links stay plaintext).
pub fn load_client_config(
    config: &TlsConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let Some(ca) = &config.ca_file else {
        return Ok(None);
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots("tls.ca_file", ca)?);
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs("tls.cert_file", cert)?, read_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(client)))
}

/// The TLS side of an outgoing link: a connector and the name the peer's certificate must
/// carry (the host of the address dialled).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Wraps `stream` (connected to `addr`, `HOST:PORT`) in TLS.
    pub async fn connect<S>(
        &self,
        addr: &str,
        stream: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let host = host_of(addr);
        let name = ServerName::try_from(host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        TlsConnector::from(Arc::clone(&self.config))
            .connect(name, stream)
            .await
    }
}

/// A connection this broker dialled: plaintext or TLS.
pub trait LinkIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkIo for T {}

/// Connects to another node at `addr` (`HOST:PORT`), with TLS when `tls` is given: the one
/// dialler of the broker's links (a leader's data port, the controller's gRPC).
pub async fn dial(addr: &str, tls: Option<&ClientTls>) -> io::Result<Box<dyn LinkIo>> {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    Ok(match tls {
        None => Box::new(stream),
        Some(tls) => Box::new(tls.connect(authority, stream).await?),
    })
}

/// A tonic connector over [`dial`] with `tls`, for `Endpoint::connect_with_connector_lazy`.
pub fn grpc_connector(
    tls: ClientTls,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<Box<dyn LinkIo>>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<hyper_util::rt::TokioIo<Box<dyn LinkIo>>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
            Ok(hyper_util::rt::TokioIo::new(
                dial(&authority, Some(&tls)).await?,
            ))
        }
    })
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// The host part of `HOST:PORT` (no brackets for IPv6, no scheme).
pub fn host_of(addr: &str) -> String {
    let authority = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The modification times of the files a server config is built from.
fn mtimes(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&config.cert_file, &config.key_file, &config.client_ca_file]
        .into_iter()
        .map(|path| {
            path.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

/// How long a connection whose handshake failed is kept to let the peer read the alert.
const LINGER_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// A listener's TLS: the current server config, reloaded in place.
pub struct ServerTls {
    settings: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    seen: std::sync::Mutex<Vec<Option<SystemTime>>>,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Reads the files now; an error here stops the broker from starting.
    pub fn new(settings: &TlsConfig) -> Result<Arc<ServerTls>, TlsError> {
        settings.check()?;
        let seen = mtimes(settings);
        let config = load_server_config(settings)?;
        Ok(Arc::new(ServerTls {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            seen: std::sync::Mutex::new(seen),
            handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms),
        }))
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    /// The config new connections get.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the files again; on success new connections get the new config. On failure the
    /// old one stays and the failure is logged. Returns whether a new config was installed.
    pub fn reload(&self, why: &str) -> bool {
        let seen = mtimes(&self.settings);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        match load_server_config(&self.settings) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                info!(why, "TLS certificates reloaded");
                true
            }
            Err(e) => {
                warn!(why, error = %e, "TLS reload failed; keeping the certificates in use");
                false
            }
        }
    }

    /// Reloads if a file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> bool {
        let now = mtimes(&self.settings);
        let changed = *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now;
        changed && self.reload("a certificate file changed")
    }

    /// Reloads on SIGHUP and on file changes until shutdown.
    pub fn spawn_reloader(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tls = Arc::clone(self);
        let interval = Duration::from_millis(self.settings.reload_interval_ms);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP; TLS reloads on file changes only");
                    None
                }
            };
            let mut poll = (!interval.is_zero()).then(|| tokio::time::interval(interval));
            loop {
                let hup_received = async {
                    match &mut hup {
                        Some(hup) => hup.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let tick = async {
                    match &mut poll {
                        Some(poll) => poll.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = hup_received => {
                        let tls = Arc::clone(&tls);
                        let _ = tokio::task::spawn_blocking(move || tls.reload("SIGHUP")).await;
                    }
                    _ = tick => {
                        let tls = Arc::clone(&tls);
                        let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
                    }
                    () = crate::server::stopped(&mut shutdown) => return,
                }
            }
        });
    }

    /// The handshake on an accepted connection, with the current config, within the handshake
    /// timeout. The principal is mapped from the verified client certificate, if any.
    pub async fn accept<S>(&self, stream: S) -> io::Result<MaybeTls<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.current());
        let started = tokio::time::Instant::now();
        let accepted = tokio::time::timeout(
            self.handshake_timeout,
            acceptor.accept(stream).into_fallible(),
        )
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {:?}", self.handshake_timeout),
            )
        })?;
        let tls = match accepted {
            Ok(tls) => tls,
            Err((error, mut io)) => {
                // The alert rustls sent (to a plaintext client, say) must reach the peer: closed
                // with its bytes unread, the socket would answer with a reset that can discard
                // the alert before the peer reads it. So the write side is closed and what the
                // peer still sends is read and dropped, briefly, still within the timeout.
                let left = self.handshake_timeout.saturating_sub(started.elapsed());
                let _ = tokio::time::timeout(left.min(LINGER_AFTER_REFUSAL), async {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = io.shutdown().await;
                    let mut sink = [0u8; 4096];
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                return Err(error);
            }
        };
        let principal = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| principal(leaf, self.settings.principal_from));
        Ok(MaybeTls::Tls {
            stream: Box::new(tls),
            principal,
        })
    }
}

/// A TCP listener whose connections are TLS, for axum (the metrics listener): a task accepts
/// and runs each handshake on its own task; [`axum::serve::Listener::accept`] hands out the
/// connections whose handshake succeeded.
pub struct TlsTcpListener {
    local: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(MaybeTls<tokio::net::TcpStream>, std::net::SocketAddr)>,
}

impl TlsTcpListener {
    /// Serves `listener`, bound at `local`.
    pub fn new(
        listener: tokio::net::TcpListener,
        local: std::net::SocketAddr,
        tls: Arc<ServerTls>,
    ) -> Self {
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let (tx, tls) = (tx.clone(), Arc::clone(&tls));
                            tokio::spawn(async move {
                                match tls.accept(stream).await {
                                    Ok(stream) => {
                                        let _ = tx.send((stream, peer)).await;
                                    }
                                    Err(e) => {
                                        tracing::debug!(%peer, error = %e, "metrics: TLS handshake failed");
                                    }
                                }
                            });
                        }
                        Err(e) => {
                            warn!(error = %e, "metrics: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    // The server is gone (shut down): stop accepting.
                    () = tx.closed() => return,
                }
            }
        });
        TlsTcpListener { local, ready }
    }
}

impl axum::serve::Listener for TlsTcpListener {
    type Io = MaybeTls<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The principal a client certificate (DER) names under `from`; `None` when it names none.
pub fn principal(cert: &CertificateDer<'_>, from: PrincipalFrom) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    match from {
        PrincipalFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        PrincipalFrom::SanDns | PrincipalFrom::SanUri => {
            let san = cert.subject_alternative_name().ok()??;
            san.value
                .general_names
                .iter()
                .find_map(|name| match (from, name) {
                    (PrincipalFrom::SanDns, GeneralName::DNSName(dns)) => Some((*dns).to_owned()),
                    (PrincipalFrom::SanUri, GeneralName::URI(uri)) => Some((*uri).to_owned()),
                    _ => None,
                })
        }
    }
}

/// Whether the kernel offers the `tls` TCP upper-layer protocol (kTLS).
pub fn ktls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|ulps| ulps.split_whitespace().any(|ulp| ulp == "tls"))
        .unwrap_or(false)
}

/// A server-side connection, plaintext or TLS; the same request loops serve both.
pub enum MaybeTls<S> {
    Plain(S),
    Tls {
        stream: Box<tokio_rustls::server::TlsStream<S>>,
        /// Mapped from the verified client certificate.
        principal: Option<String>,
    },
}

impl<S> MaybeTls<S> {
    /// The underlying transport stream.
    pub fn inner(&self) -> &S {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls { stream, .. } => stream.get_ref().0,
        }
    }

    /// The principal of the client certificate, under mutual TLS.
    pub fn principal(&self) -> Option<&str> {
        match self {
            MaybeTls::Plain(_) => None,
            MaybeTls::Tls { principal, .. } => principal.as_deref(),
        }
    }
}

impl MaybeTls<tokio::net::TcpStream> {
    /// The connection's [`PeerIdentity`].
    pub fn identity(&self) -> PeerIdentity {
        PeerIdentity {
            remote_addr: self.inner().peer_addr().ok(),
            certificate_principal: self.principal().map(str::to_owned),
        }
    }
}

impl tonic::transport::server::Connected for MaybeTls<crate::server::counted::Counted> {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        PeerIdentity {
            certificate_principal: self.principal().map(str::to_owned),
            ..self.inner().connect_info()
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls { stream, .. } => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(cn: &str, dns: &str, uri: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec![dns.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(uri).unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_principal_comes_from_the_field_asked_for() {
        let cert = cert_with(
            "billing-service",
            "billing.internal",
            "spiffe://weir/billing",
        );
        assert_eq!(
            principal(&cert, PrincipalFrom::Cn).as_deref(),
            Some("billing-service")
        );
        assert_eq!(
            principal(&cert, PrincipalFrom::SanDns).as_deref(),
            Some("billing.internal")
        );
        assert_eq!(
            principal(&cert, PrincipalFrom::SanUri).as_deref(),
            Some("spiffe://weir/billing")
        );
        assert_eq!(
            principal(&CertificateDer::from(vec![1, 2, 3]), PrincipalFrom::Cn),
            None
        );
    }

    #[test]
    fn a_changed_file_reloads_and_a_broken_one_keeps_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let write = |serial: u64| {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.serial_number = Some(rcgen::SerialNumber::from(serial));
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        };
        write(1);
        let config = TlsConfig {
            cert_file: Some(dir.path().join("c.pem")),
            key_file: Some(dir.path().join("k.pem")),
            ..TlsConfig::default()
        };
        let tls = ServerTls::new(&config).unwrap();
        let first = tls.current();
        assert!(!tls.reload_if_changed(), "nothing changed");
        // A modification time surely different from the first write's.
        std::thread::sleep(Duration::from_millis(20));
        write(2);
        let later = SystemTime::now() + Duration::from_secs(2);
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("c.pem"))
            .unwrap();
        file.set_modified(later).unwrap();
        assert!(tls.reload_if_changed());
        assert!(!Arc::ptr_eq(&first, &tls.current()));
        let second = tls.current();
        std::fs::write(dir.path().join("c.pem"), "garbage").unwrap();
        assert!(!tls.reload("test"));
        assert!(Arc::ptr_eq(&second, &tls.current()), "the old config stays");
        // A missing key file is refused at start.
        let missing = TlsConfig {
            key_file: Some(dir.path().join("none.pem")),
            ..config
        };
        assert!(ServerTls::new(&missing).is_err());
    }

    #[test]
    fn listeners_default_to_all_once_a_certificate_is_set() {
        let mut config = TlsConfig::default();
        assert!(!config.applies_to(TlsListener::Grpc));
        config.cert_file = Some("c.pem".into());
        config.key_file = Some("k.pem".into());
        assert!(config.applies_to(TlsListener::Data));
        config.listeners = Some(vec![TlsListener::Grpc]);
        assert!(!config.applies_to(TlsListener::Data));
        assert!(config.check().is_ok());
        config.key_file = None;
        assert!(config.check().is_err());
        assert!(!config.applies_to(TlsListener::Metrics));
        config.listeners = None;
        assert!(
            !config.applies_to(TlsListener::Metrics),
            "metrics only when named"
        );
        assert_eq!("metrics".parse::<TlsListener>(), Ok(TlsListener::Metrics));
    }

    #[test]
    fn addresses_name_their_host() {
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("https://broker-1:7070/"), "broker-1");
        assert_eq!(host_of("[::1]:7070"), "::1");
    }
}
