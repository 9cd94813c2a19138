//! Running the real `weir-broker` binary as a child process on an ephemeral loopback port, the
//! way a user would, and stopping it gracefully (SIGTERM) or brutally (SIGKILL), or freezing
//! and thawing it (SIGSTOP, SIGCONT).
//!
//! The broker announces itself with one stdout line, `weir-broker ready grpc=ADDR data=ADDR ...`;
//! [`BrokerProcess::start`] waits for it, so a test never races the broker's startup.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tonic::transport::Channel;
use weir_proto::v1::weir_client::WeirClient;

/// How long a broker may take to print its ready line (a debug build recovering a data dir
/// on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `weir-broker`; killed when dropped.
pub struct BrokerProcess {
    child: Child,
    bin: PathBuf,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    /// The gRPC address it listens on.
    pub addr: SocketAddr,
    /// The data port (sendfile fetches) it listens on.
    pub data_addr: SocketAddr,
    /// Its external gRPC listener, when started with `--external-listen`.
    pub external_addr: Option<SocketAddr>,
    /// Its metrics listener (`/metrics`, `/healthz`, `/readyz`), unless started with
    /// `--metrics-listen off`.
    pub metrics_addr: Option<SocketAddr>,
}

impl BrokerProcess {
    /// Starts `bin` on 127.0.0.1 (free ports for gRPC and the data port) over `data_dir`, with
    /// `extra_args`.
    pub fn start(bin: &Path, data_dir: &Path, extra_args: &[&str]) -> BrokerProcess {
        Self::start_on(bin, data_dir, ("127.0.0.1:0", "127.0.0.1:0"), extra_args)
    }

    /// [`BrokerProcess::start`] on the given gRPC and data-port listen addresses (a test that
    /// must advertise its data port picks the port itself).
    pub fn start_on(
        bin: &Path,
        data_dir: &Path,
        (listen, data_listen): (&str, &str),
        extra_args: &[&str],
    ) -> BrokerProcess {
        let mut child = spawn_broker(bin, data_dir, (listen, data_listen), extra_args)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let ready = match wait_for_ready(stdout, READY_TIMEOUT) {
            Some(ready) => ready,
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!("weir-broker did not print its ready line (exit: {status:?})");
            }
        };
        BrokerProcess {
            child,
            bin: bin.to_owned(),
            data_dir: data_dir.to_owned(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            addr: ready.grpc,
            data_addr: ready.data,
            external_addr: ready.external_grpc,
            metrics_addr: ready.metrics,
        }
    }

    /// `http://ADDR`, what tonic clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw `weir.v1` gRPC client connected to it (what a client in any language would
    /// use), with message limits large enough for any batch a test sends or fetches.
    pub async fn grpc(&self) -> WeirClient<Channel> {
        WeirClient::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to weir-broker at {}: {e}", self.addr))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// `HOST:PORT`, what the CLI's `--broker` takes.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit (a graceful shutdown).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.child.wait().expect("waiting for weir-broker")
    }

    /// SIGTERM, then waits at most `deadline` for the exit; a broker still running then is
    /// killed and the test fails: a watchdog for "graceful shutdown hangs", not a timing test
    /// (give it a deadline far above the normal shutdown time). Blocks: call it from
    /// `block_in_place` or a plain thread in async tests.
    pub fn terminate_within(&mut self, deadline: Duration) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("polling weir-broker") {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weir-broker did not exit within {deadline:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then waits (a crash: no flush, no clean-shutdown marker).
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::KILL);
        self.child.wait().expect("waiting for weir-broker")
    }

    /// SIGSTOP: the broker freezes where it is (a long GC pause, a VM stall, a laptop lid),
    /// its sockets stay open and nothing answers; its leases lapse if it stays frozen longer.
    /// Undo with [`BrokerProcess::resume`]. A stopped broker can still be killed or dropped.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT: a broker frozen by [`BrokerProcess::pause`] runs on from where it stopped
    /// (with clocks that jumped and requests that timed out meanwhile).
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Starts the same binary again over the same data dir and on the same addresses (clients
    /// that reconnect find it where it was). Call after `terminate` or `kill`.
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let (listen, data_listen) = (self.addr.to_string(), self.data_addr.to_string());
        let next = Self::start_on(&self.bin, &self.data_dir, (&listen, &data_listen), &extra);
        let old = std::mem::replace(self, next);
        drop(old);
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `bin` over `data_dir` on the given gRPC and data-port addresses, stdout piped (read
/// it with [`wait_for_ready`]), logs to this process's stderr at `RUST_LOG` (default `warn`).
pub fn spawn_broker(
    bin: &Path,
    data_dir: &Path,
    (listen, data_listen): (&str, &str),
    extra_args: &[impl AsRef<std::ffi::OsStr>],
) -> std::io::Result<Child> {
    // Every broker a test starts gets its own free metrics port, unless the test picks one.
    let picks_metrics = extra_args
        .iter()
        .any(|a| a.as_ref() == std::ffi::OsStr::new("--metrics-listen"));
    let metrics: &[&str] = if picks_metrics {
        &[]
    } else {
        &["--metrics-listen", "127.0.0.1:0"]
    };
    Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .arg("--data-listen")
        .arg(data_listen)
        .args(metrics)
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// The addresses a broker's ready line announces.
#[derive(Debug, Clone, Copy)]
pub struct ReadyLine {
    pub grpc: SocketAddr,
    pub data: SocketAddr,
    /// `external-grpc=`, printed only by a broker with an external listener.
    pub external_grpc: Option<SocketAddr>,
    /// `metrics=`, the metrics listener, unless it is off.
    pub metrics: Option<SocketAddr>,
}

/// Waits up to `timeout` for a broker's ready line on its stdout, `weir-broker ready
/// grpc=ADDR data=ADDR ... [external-grpc=ADDR]`, and returns its addresses; `None` if the
/// broker exited or stayed silent. Keeps draining the pipe afterwards, so the broker never
/// blocks on a full stdout. Shared by the tests and `weir-bench`.
pub fn wait_for_ready(stdout: ChildStdout, timeout: Duration) -> Option<ReadyLine> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if let (Some(grpc), Some(data)) = (field("grpc="), field("data=")) {
                let external_grpc = field("external-grpc=");
                let metrics = field("metrics=");
                let _ = tx.send(ReadyLine {
                    grpc,
                    data,
                    external_grpc,
                    metrics,
                });
                break;
            }
        }
        for _ in lines {}
    });
    rx.recv_timeout(timeout).ok()
}

/// A loopback address with a port that was free a moment ago, for a test that must know a
/// broker's address before it starts (to put a [`LinkProxy`](crate::LinkProxy) in front of it
/// and advertise the proxy). Another process may take the port meanwhile: rare on a test
/// machine, and the broker then fails to start, loudly.
pub fn free_loopback_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// The `weir-broker` binary for tests outside the broker crate (which use
/// `env!("CARGO_BIN_EXE_weir-broker")`): `$WEIR_BROKER_BIN`, else the one cargo built next to
/// the running test (`cargo test --workspace` builds it).
pub fn broker_bin() -> PathBuf {
    sibling_bin("weir-broker", "WEIR_BROKER_BIN")
}

/// A binary built by cargo in the same target dir as the running test.
pub fn sibling_bin(name: &str, env_override: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_override) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not found; build it first (`cargo build -p weir-broker`) or set {env_override}",
        bin.display()
    );
    bin
}

/// Polls `check` every 100 ms until it holds, and returns how long that took; panics naming
/// `what` after `timeout` (a watchdog far above the expected time, not a timing assertion).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}
