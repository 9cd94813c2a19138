//! The metrics listener's health endpoints over the real `weir-broker` binary, through a node's
//! life, and the `--metrics-listen` flag itself.
//!
//! What it proves:
//! - a starting node answers `/readyz` 503 (never for any reason but "not serving yet") until it
//!   serves, then 200 `ready`; `/healthz` is 200 `ok`; the listener is the third listening port
//!   of the process, next to gRPC and the data port;
//! - a `--role broker` node whose `--role controller` is killed turns `/readyz` 503 naming the
//!   unreachable controller (and only that), keeps `/healthz` 200, exports
//!   `weir_controller_reachable 0`, and is ready again once the controller is restarted; the
//!   controller-only node is ready on its own, with no broker needed;
//! - SIGTERM turns `/readyz` 503 ("not serving") while the node drains a data-port client that
//!   stopped reading (held for `--shutdown-timeout-ms`), `/healthz` stays 200 meanwhile, the
//!   node exits 0 and its metrics port is closed after the exit;
//! - `--metrics-listen off` prints no `metrics=` in the ready line and the process listens on
//!   exactly its gRPC and data ports; an address that does not parse, and one already taken,
//!   each fail the start (exit status 1, no ready line) with a message naming the address (and,
//!   for the taken one, the flag and the reason).

#[path = "support/http.rs"]
mod http;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_client::{Client, NewTopic, ProducerConfig, ProducerRecord};
use weir_proto::data_port::{FetchFrame, RESPONSE_HEADER_LEN};
use weir_testkit::{BrokerProcess, spawn_broker, temp_data_dir, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_weir-broker");
/// A watchdog for conditions, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

fn bin() -> &'static Path {
    Path::new(BROKER)
}

fn metrics_addr(broker: &BrokerProcess) -> SocketAddr {
    broker
        .metrics_addr
        .expect("the ready line names the metrics listener")
}

async fn get(addr: SocketAddr, path: &str) -> http::Response {
    http::get_async(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The TCP ports process `pid` listens on (IPv4 and IPv6): its socket descriptors matched
/// against the kernel's tables of listening sockets.
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the broker's descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().expect("ADDR:PORT");
                ports.insert(u16::from_str_radix(port, 16).expect("a hex port"));
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_serving_and_alive_throughout() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(bin(), dir.path(), &[]);
    let metrics = metrics_addr(&broker);
    assert!(metrics.ip().is_loopback(), "{metrics}");

    // The ready line comes just before the node starts serving: a 503 may be seen in between,
    // and only for that reason.
    let early = Mutex::new(Vec::new());
    let seen = &early;
    wait_until("/readyz answers 200", WAIT, move || async move {
        let r = get(metrics, "/readyz").await;
        if r.status == 200 {
            return true;
        }
        seen.lock().unwrap().push(r);
        false
    })
    .await;
    for r in early.into_inner().unwrap() {
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(
            r.body, "not ready: the gRPC listeners are not serving (starting, or shutting down)\n",
            "a starting node is not ready only because it does not serve yet"
        );
    }
    let ready = get(metrics, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let alive = get(metrics, "/healthz").await;
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));
    assert_eq!(get(metrics, "/nope").await.status, 404);
    // A combined node runs the controller: reachable by definition.
    let scrape = get(metrics, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .body
            .lines()
            .any(|l| l == "weir_controller_reachable 1"),
        "{}",
        scrape.body
    );

    let expected: BTreeSet<u16> = [broker.addr.port(), broker.data_addr.port(), metrics.port()]
        .into_iter()
        .collect();
    assert_eq!(listening_ports(broker.pid()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_lost_controller_until_it_returns() {
    let (controller_dir, broker_dir) = (temp_data_dir(), temp_data_dir());
    let mut controller = BrokerProcess::start(
        bin(),
        controller_dir.path(),
        &["--role", "controller", "--node-id", "100"],
    );
    let controller_metrics = metrics_addr(&controller);
    // No broker registered yet: a controller-only node is ready by itself.
    wait_until("the controller's /readyz answers 200", WAIT, || async {
        get(controller_metrics, "/readyz").await.status == 200
    })
    .await;
    let broker = BrokerProcess::start(
        bin(),
        broker_dir.path(),
        &[
            "--role",
            "broker",
            "--node-id",
            "1",
            "--controller",
            &controller.host_port(),
        ],
    );
    let metrics = metrics_addr(&broker);
    wait_until("the broker's /readyz answers 200", WAIT, || async {
        get(metrics, "/readyz").await.status == 200
    })
    .await;

    controller.kill();
    wait_until("the broker's /readyz answers 503", WAIT, || async {
        get(metrics, "/readyz").await.status == 503
    })
    .await;
    let not_ready = get(metrics, "/readyz").await;
    assert_eq!(
        (not_ready.status, not_ready.body.as_str()),
        (503, "not ready: the controller is unreachable\n"),
        "the data dir is open and the listeners serve: only the controller is missing"
    );
    let alive = get(metrics, "/healthz").await;
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));
    let scrape = get(metrics, "/metrics").await;
    assert!(
        scrape
            .body
            .lines()
            .any(|l| l == "weir_controller_reachable 0"),
        "{}",
        scrape.body
    );

    // Back on the same address (a new metrics port: the test did not pick one).
    controller.restart();
    wait_until("the broker's /readyz answers 200 again", WAIT, || async {
        get(metrics, "/readyz").await.status == 200
    })
    .await;
    assert_eq!(get(metrics, "/readyz").await.body, "ready\n");
    let scrape = get(metrics, "/metrics").await;
    assert!(
        scrape
            .body
            .lines()
            .any(|l| l == "weir_controller_reachable 1"),
        "{}",
        scrape.body
    );
    assert_eq!(get(metrics_addr(&controller), "/readyz").await.status, 200);
}

/// A data-port connection that fetches the whole of `topic` and never reads the answer: with a
/// tiny receive buffer (no autotuning) the broker's sends block once the socket buffers are
/// full (the test waits until its queue shows it), and the fetch cannot end, not even with its
/// SHUTTING_DOWN error frame.
fn stalled_fetch(data_addr: SocketAddr, topic: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
    rustix::net::connect(&fd, &data_addr).expect("dial the data port");
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let frame = FetchFrame {
        current_leader_epoch: None,
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 0,
        max_wait_ms: 0,
        follow: false,
        replica: None,
    };
    stream.write_all(&frame.encode()).expect("send the fetch");
    // The first frame's header: the fetch is under way. Nothing more is read.
    let mut header = [0u8; RESPONSE_HEADER_LEN];
    stream
        .read_exact(&mut header)
        .expect("the first frame header");
    stream
}

/// Bytes queued and not yet taken by the peer on the loopback connection from local port
/// `from` to port `to` (its `tx_queue` in the kernel's table).
fn unsent_bytes(from: u16, to: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    text.lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.len() > 4
                && f[1].ends_with(&format!(":{from:04X}"))
                && f[2].ends_with(&format!(":{to:04X}"))
        })
        .and_then(|f| u64::from_str_radix(f[4].split(':').next()?, 16).ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_while_draining_and_closes_the_port_at_exit() {
    const SHUTDOWN_TIMEOUT_MS: &str = "4000";
    let dir = temp_data_dir();
    let mut broker = BrokerProcess::start(
        bin(),
        dir.path(),
        &["--shutdown-timeout-ms", SHUTDOWN_TIMEOUT_MS],
    );
    let metrics = metrics_addr(&broker);
    wait_until("/readyz answers 200", WAIT, || async {
        get(metrics, "/readyz").await.status == 200
    })
    .await;

    // 12 MiB in one partition: far more than a socket's buffers hold.
    let client = Client::connect(&broker.host_port()).await.unwrap();
    client
        .admin()
        .create_topic(NewTopic::new("bulk").partitions(1))
        .await
        .unwrap();
    let producer = client.producer(ProducerConfig::default()).unwrap();
    let value = vec![b'x'; 8 << 10];
    let mut deliveries = Vec::new();
    for _ in 0..1536 {
        let record = ProducerRecord::new("bulk").value(value.clone());
        deliveries.push(producer.send(record).await.expect("buffered"));
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.expect("acknowledged");
    }
    let stalled = stalled_fetch(broker.data_addr, "bulk");
    let client_port = stalled.local_addr().unwrap().port();
    let data_port = broker.data_addr.port();
    wait_until(
        "the broker's sends to the stalled client back up",
        WAIT,
        || async { unsent_bytes(data_port, client_port) >= 16 << 10 },
    )
    .await;

    let pid = broker.pid();
    let stopping = tokio::task::spawn_blocking(move || {
        let status = broker.terminate_within(Duration::from_secs(60));
        (status, broker)
    });
    let draining = Mutex::new(None);
    let seen = &draining;
    wait_until(
        "/readyz answers 503 after SIGTERM",
        WAIT,
        move || async move {
            match http::get_async(metrics, "/readyz").await {
                Ok(r) if r.status == 503 => {
                    *seen.lock().unwrap() = Some(r);
                    true
                }
                Ok(_) => false,
                Err(e) => panic!("the metrics listener closed before the drain ended: {e}"),
            }
        },
    )
    .await;
    let draining = draining.into_inner().unwrap().unwrap();
    assert!(
        draining
            .body
            .contains("not ready: the gRPC listeners are not serving (starting, or shutting down)"),
        "{draining:?}"
    );
    // Still alive, still answering, while it drains.
    let alive = get(metrics, "/healthz").await;
    assert_eq!((alive.status, alive.body.as_str()), (200, "ok\n"));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the broker is still running while it drains"
    );

    let (status, _broker) = stopping.await.unwrap();
    assert!(status.success(), "a clean exit after the drain: {status:?}");
    drop(stalled);
    let refused = TcpStream::connect_timeout(&metrics, Duration::from_secs(5));
    assert!(
        refused.is_err(),
        "the metrics port {metrics} still accepts connections after the exit"
    );
}

/// What `weir-broker` printed and how it exited, started over `data_dir` with `extra` after
/// loopback gRPC and data ports.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the broker until it exits (killed, and the test failed, if it is still running after
/// `WAIT`).
fn run_to_exit(data_dir: &Path, extra: &[&str]) -> Run {
    let mut child = Command::new(BROKER)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir-broker");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir-broker {extra:?} is still running after {WAIT:?}; it should have failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

#[test]
fn metrics_listen_off_prints_no_address_and_binds_nothing() {
    let dir = temp_data_dir();
    let mut child = spawn_broker(
        bin(),
        dir.path(),
        ("127.0.0.1:0", "127.0.0.1:0"),
        &["--metrics-listen", "off"],
    )
    .expect("start weir-broker");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("weir-broker ready "));
    let Some(ready) = ready else {
        let _ = child.kill();
        panic!("no ready line (exit: {:?})", child.wait());
    };
    let port = |name: &str| -> u16 {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no {name} in {ready:?}"))
            .port()
    };
    let expected: BTreeSet<u16> = [port("grpc="), port("data=")].into_iter().collect();
    let listening = listening_ports(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(!ready.contains("metrics="), "{ready:?}");
    assert_eq!(
        listening, expected,
        "only gRPC and the data port: {ready:?}"
    );
}

#[test]
fn a_bad_metrics_address_fails_the_start_with_a_clear_message() {
    let dir = temp_data_dir();
    let bad = run_to_exit(dir.path(), &["--metrics-listen", "localhost-7072"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}", bad = bad.stderr);
    assert!(!bad.stdout.contains("ready"), "{}", bad.stdout);
    assert!(
        bad.stderr
            .contains("metrics_listen \"localhost-7072\" is not an address (HOST:PORT) or `off`"),
        "{}",
        bad.stderr
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let busy = run_to_exit(dir.path(), &["--metrics-listen", &addr]);
    assert_eq!(busy.status.code(), Some(1), "{}", busy.stderr);
    assert!(!busy.stdout.contains("ready"), "{}", busy.stdout);
    assert!(
        busy.stderr
            .contains(&format!("cannot listen on {addr} (--metrics-listen): ")),
        "the message names the address and the flag: {}",
        busy.stderr
    );
    assert!(
        busy.stderr.to_lowercase().contains("in use"),
        "and why: {}",
        busy.stderr
    );
}
