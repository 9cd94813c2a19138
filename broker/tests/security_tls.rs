//! TLS on the broker's listeners, against the real `weir-broker` binary with certificates made
//! at test time (rcgen): produce and consume over TLS on gRPC and the data port; the refusals a
//! client must get as typed errors (plaintext, wrong CA, expired and not-yet-valid server
//! certificates, mutual TLS without a certificate or with one from another CA); certificate
//! rotation on SIGHUP with existing connections kept; stalled handshakes closed after the
//! handshake timeout without holding up other clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_client::{
    Acks, Client, ClientError, ClientTls, ConnectOptions, ConsumerConfig, NewTopic, ProducerConfig,
    ProducerRecord, TlsFailure, Transport,
};
use weir_testkit::{BrokerProcess, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");

/// A certificate authority: its parameters (its name) and key.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            params,
            key: KeyPair::generate().unwrap(),
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

/// A CA and the certificates the tests need, as PEM files in one directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `NAME.pem` and `NAME.key`: a certificate issued by `ca` (this PKI's CA if `None`).
    fn issue(&self, name: &str, leaf: Leaf, ca: Option<&Ca>) {
        let mut params = CertificateParams::new(leaf.names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        if let Some((before, after)) = leaf.validity {
            params.not_before = before;
            params.not_after = after;
        }
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &ca.unwrap_or(&self.ca).issuer())
            .unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn write_ca(&self, name: &str, ca: &Ca) {
        let cert = ca.params.self_signed(&ca.key).unwrap();
        std::fs::write(self.path(name), cert.pem()).unwrap();
    }

    fn client_tls(&self, ca: &str, identity: Option<&str>) -> ClientTls {
        let (cert, key) = identity
            .map(|name| {
                (
                    self.path(&format!("{name}.pem")),
                    self.path(&format!("{name}.key")),
                )
            })
            .unzip();
        ClientTls::from_files(&self.path(ca), cert.as_deref().zip(key.as_deref())).unwrap()
    }
}

struct Leaf {
    names: Vec<String>,
    common_name: &'static str,
    serial: u64,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
}

fn server(serial: u64) -> Leaf {
    Leaf {
        names: vec!["localhost".into(), "127.0.0.1".into()],
        common_name: "weir-broker",
        serial,
        validity: None,
    }
}

fn client_leaf(common_name: &'static str) -> Leaf {
    Leaf {
        names: vec![format!("{}.clients.internal", common_name)],
        common_name,
        serial: 100,
        validity: None,
    }
}

/// A PKI with `ca.pem`, `server` (serial 1), `client` (CN billing-service) and, from another
/// CA, `other-ca.pem` and `stranger` (a client certificate).
fn standard_pki() -> Pki {
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
        ca: Ca::new("weir test CA"),
    };
    pki.write_ca("ca.pem", &pki.ca);
    pki.issue("server", server(1), None);
    pki.issue("client", client_leaf("billing-service"), None);
    let other = Ca::new("another CA");
    pki.write_ca("other-ca.pem", &other);
    pki.issue("stranger", client_leaf("stranger"), Some(&other));
    pki
}

fn start_tls(pki: &Pki, data: &Path, server_name: &str, extra: &[&str]) -> BrokerProcess {
    let cert = pki.path_str(&format!("{server_name}.pem"));
    let key = pki.path_str(&format!("{server_name}.key"));
    let mut args = vec!["--tls-cert-file", &cert, "--tls-key-file", &key];
    args.extend_from_slice(extra);
    BrokerProcess::start(Path::new(BROKER), data, &args)
}

fn options(tls: Option<ClientTls>) -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        tls,
        ..ConnectOptions::default()
    }
}

/// Connects and makes one call (under TLS 1.3 a refused client certificate shows only then).
async fn try_client(addr: &str, tls: Option<ClientTls>) -> Result<Client, ClientError> {
    let client = Client::connect_with(addr, options(tls)).await?;
    client.admin().list_topics().await?;
    Ok(client)
}

fn tls_failure(result: Result<Client, ClientError>) -> TlsFailure {
    match result {
        Err(ClientError::Tls { failure, .. }) => failure,
        Err(other) => panic!("expected a TLS error, got {other:?}: {other}"),
        Ok(_) => panic!("expected a TLS error, the connection worked"),
    }
}

/// Produces `n` records over `transport` and returns them.
async fn produce(client: &Client, topic: &str, transport: Transport, n: u32) -> Vec<String> {
    produce_acked(client, topic, transport, n, Acks::Leader).await
}

async fn produce_acked(
    client: &Client,
    topic: &str,
    transport: Transport,
    n: u32,
    acks: Acks,
) -> Vec<String> {
    let producer = client
        .producer(ProducerConfig {
            transport,
            acks,
            ..ProducerConfig::default()
        })
        .unwrap();
    let mut deliveries = Vec::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let value = format!("{topic}-{transport:?}-{i}");
        sent.push(value.clone());
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic).value(value))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    sent
}

async fn consume(client: &Client, topic: &str, transport: Transport) -> Vec<String> {
    let mut consumer = client.consumer(ConsumerConfig {
        follow: false,
        transport,
        ..Default::default()
    });
    consumer.assign_topic(topic).await.unwrap();
    let mut stream = consumer.stream();
    let mut read = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.unwrap();
        read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    read
}

/// The serial number of the certificate a new TLS connection to `addr` is served.
async fn served_serial(pki: &Pki, addr: std::net::SocketAddr) -> u64 {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    u64::from_str_radix(&cert.raw_serial_as_string().replace(':', ""), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_over_tls_on_grpc_and_the_data_port() {
    let pki = standard_pki();
    let dir = temp_data_dir();
    let broker = start_tls(&pki, dir.path(), "server", &[]);
    let addr = broker.host_port();

    let client = try_client(&addr, Some(pki.client_tls("ca.pem", None)))
        .await
        .unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("secure").partitions(1))
        .await
        .unwrap();
    let mut sent = produce(&client, "secure", Transport::DataPort, 300).await;
    sent.extend(produce(&client, "secure", Transport::Grpc, 300).await);
    assert_eq!(consume(&client, "secure", Transport::DataPort).await, sent);
    assert_eq!(consume(&client, "secure", Transport::Grpc).await, sent);

    // A plaintext client gets no service from a TLS port.
    // A plaintext client gets no service from a TLS port. Usually it is told why
    // (ServerRequiresTls, from the broker's TLS alert); HTTP/2 may instead report only that the
    // connection closed, when the connection fails before the call was sent.
    match try_client(&addr, None).await {
        Err(ClientError::Tls { failure, .. }) => assert_eq!(failure, TlsFailure::ServerRequiresTls),
        Err(ClientError::Transport { .. }) => {}
        Err(other) => panic!("unexpected error for a plaintext client: {other:?}"),
        Ok(_) => panic!("a plaintext client was served by a TLS port"),
    }
    // A client that trusts another CA refuses the broker's certificate.
    assert_eq!(
        tls_failure(try_client(&addr, Some(pki.client_tls("other-ca.pem", None))).await),
        TlsFailure::UnknownIssuer
    );
    let message = try_client(&addr, Some(pki.client_tls("other-ca.pem", None)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("--tls-ca"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_not_yet_valid_and_plaintext_brokers_are_refused() {
    let pki = standard_pki();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut expired = server(2);
    expired.validity = Some((now - 10 * day, now - day));
    pki.issue("expired", expired, None);
    let mut early = server(3);
    early.validity = Some((now + day, now + 10 * day));
    pki.issue("early", early, None);

    let (d1, d2, d3) = (temp_data_dir(), temp_data_dir(), temp_data_dir());
    let expired = start_tls(&pki, d1.path(), "expired", &[]);
    let early = start_tls(&pki, d2.path(), "early", &[]);
    let plaintext = BrokerProcess::start(Path::new(BROKER), d3.path(), &[]);
    let tls = || Some(pki.client_tls("ca.pem", None));
    assert_eq!(
        tls_failure(try_client(&expired.host_port(), tls()).await),
        TlsFailure::Expired
    );
    assert_eq!(
        tls_failure(try_client(&early.host_port(), tls()).await),
        TlsFailure::NotYetValid
    );
    assert_eq!(
        tls_failure(try_client(&plaintext.host_port(), tls()).await),
        TlsFailure::NotTls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_its_ca() {
    let pki = standard_pki();
    let dir = temp_data_dir();
    let ca = pki.path_str("ca.pem");
    let broker = start_tls(&pki, dir.path(), "server", &["--tls-client-ca-file", &ca]);
    let addr = broker.host_port();

    let client = try_client(&addr, Some(pki.client_tls("ca.pem", Some("client"))))
        .await
        .unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("mtls").partitions(1))
        .await
        .unwrap();
    let sent = produce(&client, "mtls", Transport::DataPort, 100).await;
    assert_eq!(consume(&client, "mtls", Transport::DataPort).await, sent);

    assert_eq!(
        tls_failure(try_client(&addr, Some(pki.client_tls("ca.pem", None))).await),
        TlsFailure::ClientCertificateRequired
    );
    assert_eq!(
        tls_failure(try_client(&addr, Some(pki.client_tls("ca.pem", Some("stranger")))).await),
        TlsFailure::ClientCertificateRefused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_and_existing_connections_keep_working() {
    let pki = standard_pki();
    let dir = temp_data_dir();
    // SIGHUP only: no modification-time polling to race with.
    let broker = start_tls(
        &pki,
        dir.path(),
        "server",
        &["--tls-reload-interval-ms", "0"],
    );
    let client = try_client(&broker.host_port(), Some(pki.client_tls("ca.pem", None)))
        .await
        .unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("rotate").partitions(1))
        .await
        .unwrap();
    let mut sent = produce(&client, "rotate", Transport::Grpc, 50).await;
    assert_eq!(served_serial(&pki, broker.addr).await, 1);

    // A new certificate from the same CA in the same files, then SIGHUP.
    pki.issue("server", server(2), None);
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &broker.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_serial(&pki, broker.addr).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_serial(&pki, broker.data_addr).await, 2);

    // A broken file: the reload fails and the certificate in use stays.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_serial(&pki, broker.addr).await, 2);

    // The connection made before the rotation still works, on both wires.
    sent.extend(produce(&client, "rotate", Transport::Grpc, 50).await);
    sent.extend(produce(&client, "rotate", Transport::DataPort, 50).await);
    assert_eq!(consume(&client, "rotate", Transport::Grpc).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_garbage_handshakes_are_closed_after_the_timeout() {
    let pki = standard_pki();
    let dir = temp_data_dir();
    let broker = start_tls(
        &pki,
        dir.path(),
        "server",
        &["--tls-handshake-timeout-ms", "500"],
    );
    // Silent connections on both TLS ports, and one that sends plaintext garbage.
    let mut stalled = Vec::new();
    for addr in [broker.addr, broker.data_addr] {
        for _ in 0..10 {
            stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    let mut garbage = tokio::net::TcpStream::connect(broker.data_addr)
        .await
        .unwrap();
    garbage
        .write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    // Meanwhile a real client is served at once.
    let started = Instant::now();
    let client = try_client(&broker.host_port(), Some(pki.client_tls("ca.pem", None)))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // Every stalled connection is closed by the broker after the handshake timeout.
    stalled.push(garbage);
    for mut stream in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake was not closed");
    }
    // And the broker is still serving.
    client.admin().list_topics().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_and_reaches_its_controller_over_mutual_tls() {
    let pki = standard_pki();
    let (cert, key, ca) = (
        pki.path_str("server.pem"),
        pki.path_str("server.key"),
        pki.path_str("ca.pem"),
    );
    // Every node serves TLS, requires client certificates and dials the others with its own.
    let tls: Vec<&str> = vec![
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-client-ca-file",
        &ca,
        "--tls-ca-file",
        &ca,
    ];
    let dirs = [temp_data_dir(), temp_data_dir(), temp_data_dir()];
    let mut args = vec!["--role", "controller", "--node-id", "100"];
    args.extend_from_slice(&tls);
    let controller = BrokerProcess::start(Path::new(BROKER), dirs[0].path(), &args);
    let controller_addr = controller.host_port();
    let brokers: Vec<BrokerProcess> = (1..=2)
        .map(|id: usize| {
            let node = id.to_string();
            let mut args = vec![
                "--role",
                "broker",
                "--node-id",
                &node,
                "--controller",
                &controller_addr,
            ];
            args.extend_from_slice(&tls);
            BrokerProcess::start(Path::new(BROKER), dirs[id].path(), &args)
        })
        .collect();
    let client = try_client(
        &controller_addr,
        Some(pki.client_tls("ca.pem", Some("client"))),
    )
    .await
    .unwrap();
    // The brokers registered with the controller over TLS.
    wait_until(
        "both brokers are alive",
        Duration::from_secs(15),
        || async {
            client
                .admin()
                .describe_cluster()
                .await
                .is_ok_and(|c| c.brokers.iter().filter(|b| b.alive).count() == 2)
        },
    )
    .await;
    client
        .admin()
        .create_topic(
            NewTopic::new("replicated")
                .partitions(1)
                .replication_factor(2)
                .min_insync_replicas(2),
        )
        .await
        .unwrap();
    // acks=all with two in-sync replicas: each batch reached the follower over the leader's
    // TLS data port before it was acknowledged.
    let sent = produce_acked(&client, "replicated", Transport::DataPort, 100, Acks::All).await;
    assert_eq!(
        consume(&client, "replicated", Transport::DataPort).await,
        sent
    );
    drop(brokers);
}

/// `GET /healthz` on `addr`, over TLS when `pki` is given; the response's status line.
async fn healthz(addr: std::net::SocketAddr, pki: Option<&Pki>) -> String {
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut response = Vec::new();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    match pki {
        None => {
            let mut tcp = tcp;
            tcp.write_all(request).await.unwrap();
            let _ = tcp.read_to_end(&mut response).await;
        }
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(request).await.unwrap();
            let _ = tls.read_to_end(&mut response).await;
        }
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_uses_tls_only_when_listed() {
    let pki = standard_pki();
    let (d1, d2) = (temp_data_dir(), temp_data_dir());
    // By default the metrics listener stays plaintext (scrapers, `weir health`).
    let default = start_tls(&pki, d1.path(), "server", &[]);
    let metrics = default.metrics_addr.unwrap();
    assert!(healthz(metrics, None).await.contains("200"));
    // Listed: TLS, and a plaintext request gets nothing.
    let listed = start_tls(
        &pki,
        d2.path(),
        "server",
        &["--tls-listeners", "grpc,data,metrics"],
    );
    let metrics = listed.metrics_addr.unwrap();
    assert!(healthz(metrics, Some(&pki)).await.contains("200"));
    assert!(!healthz(metrics, None).await.contains("200"));
}
