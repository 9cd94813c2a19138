//! The NATS JetStream baseline: a throwaway `nats-server` and a minimal hand-written client.
//!
//! What it owns:
//! - [`NatsServer`]: starts `nats-server` (Debian package) with JetStream on, on loopback, on a
//!   port the server picks itself (`-p -1`, read back from its ports file, so there is no
//!   bind-then-drop race), with its store in a temp dir; killed and cleaned up on drop.
//! - [`publish`]: creates a file-backed stream and publishes `count` records with async
//!   (pipelined) publishes, at most `max_pending` unacknowledged, counting JetStream's PubAcks.
//! - [`replay`]: reads the stream back from its first message through an ephemeral push consumer.
//!
//! No NATS client crate: async-nats would pull a TLS stack into CI builds, and the bench needs a
//! sliver of the protocol. The pieces used (text protocol over TCP, every line ends in CRLF):
//! - server to client: `INFO {json}`; `MSG <subject> <sid> [reply] <len>` CRLF payload CRLF;
//!   `HMSG <subject> <sid> [reply] <hdr_len> <total_len>` CRLF headers payload CRLF (the header
//!   block starts with `NATS/1.0` and ends with an empty line); `PING`; `PONG`; `+OK`; `-ERR '...'`.
//! - client to server: `CONNECT {json}`, `PING`, `PONG`, `SUB <subject> <sid>`,
//!   `PUB <subject> [reply] <len>` CRLF payload CRLF.
//! - JetStream is request/reply on `$JS.API.*` subjects (STREAM.CREATE, CONSUMER.CREATE) with JSON
//!   bodies; a failed call answers `{"error":{..}}`. A publish to a stream's subject that carries a
//!   reply subject is answered on it with a PubAck `{"stream":..,"seq":N}` (or an error).
//! - Status messages are HMSGs whose header line is `NATS/1.0 <code> [description]`: 503 = no
//!   responders (nothing listens: JetStream off, or no such stream). On a push consumer's deliver
//!   subject, 100 with a reply subject is a flow-control request, which must be answered with an
//!   empty publish to that reply or delivery stops; 100 without one is an idle heartbeat, which
//!   names a subject in `Nats-Consumer-Stalled` when a flow-control answer went missing (answered
//!   the same way).
//!
//! Invariants:
//! - A server `PING` is always answered with `PONG` (the server drops clients that don't).
//! - Reads land in one `BytesMut` and frames are parsed in place as borrowed slices (no per-message
//!   allocation); writes are encoded into a `BytesMut` and flushed in large chunks. The client must
//!   not be the bottleneck, or the baseline is unfairly slow.
//! - Server input never panics: every length is bounds-checked, malformed input is an error.
//! - Every wait on the server has a stall timeout, so a wedged server fails the bench, never hangs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Buf, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Notify};

/// How long `nats-server` may take to start listening.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may stay silent while we wait on it before the run is declared wedged.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle heartbeat of the replay consumer; the server requires one when flow control is on.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
/// Spare room ensured in the read buffer before each read.
const READ_CHUNK: usize = 256 * 1024;
/// Publishes are written to the socket once this many bytes are encoded.
const FLUSH_THRESHOLD: usize = 256 * 1024;
/// The server's default `max_control_line`: a longer line without CRLF is garbage, not a frame.
const MAX_CONTROL_LINE: usize = 4096;
/// The server's hard ceiling on `max_payload`: a larger length is garbage, not a frame.
const MAX_FRAME_LEN: usize = 64 << 20;
/// Subscription of this connection's reply inbox (`<inbox>.*`): API responses and PubAcks.
const REPLY_SID: &[u8] = b"1";
/// Subscription of the replay consumer's deliver subject.
const DELIVER_SID: &[u8] = b"2";
/// Records are cut from a pool this much larger than one record, at varying offsets, so
/// consecutive records differ without generating bytes per record. Prime, so offsets cycle fully.
const PAYLOAD_OFFSETS: usize = 1021;

// ---------------------------------------------------------------------------------------------
// The server process

/// A nats-server with JetStream on a free loopback port and a temp store dir; killed on drop.
pub struct NatsServer {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    /// Holds the store, the ports file and the log. Declared last: fields drop after `drop()`
    /// has killed the server, so the directory is never removed under a running server.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Ok(None) if `nats-server` is not on PATH (the bench prints a skip message).
    /// Blocks (up to 15 s) until the server accepts connections.
    pub fn start() -> Result<Option<NatsServer>> {
        let dir = tempfile::Builder::new()
            .prefix("weir-bench-nats-")
            .tempdir()
            .context("creating a temp dir for nats-server")?;
        let log_path = dir.path().join("nats-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1"])
            // -1: the server binds a free port itself and reports it in the ports file.
            .args(["-p", "-1"])
            .arg("-sd")
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("spawning nats-server"),
        };
        // From here on a failure drops `server`, which kills the child.
        let mut server = NatsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            dir,
        };
        server.addr = server.wait_until_listening()?;
        Ok(Some(server))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// For CPU accounting by the harness.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_until_listening(&mut self) -> Result<SocketAddr> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("polling nats-server")? {
                bail!(
                    "nats-server exited during startup ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            // The ports file appears once the listener is up; a read may catch it half-written.
            if let Some(addr) = read_ports_file(self.dir.path())?
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(addr);
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server did not accept connections within {SERVER_START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // SIGKILL: the store is thrown away with the temp dir, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client address from `<dir>/nats-server_<pid>.ports` (`{"nats":["nats://127.0.0.1:PORT"]}`),
/// or None while the file is missing or half-written.
fn read_ports_file(dir: &Path) -> Result<Option<SocketAddr>> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "ports") {
            continue;
        }
        let Ok(ports) = serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap_or_default())
        else {
            return Ok(None);
        };
        let url = ports["nats"][0].as_str().unwrap_or_default();
        let hostport = url.strip_prefix("nats://").unwrap_or(url);
        return Ok(hostport.parse().ok());
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Publish and replay

pub struct NatsRun {
    pub elapsed: Duration,
    pub messages: u64,
    pub bytes: u64,
}

/// Creates stream `stream` (subject = stream name), publishes `count` messages of `record_size` bytes
/// (content: varied bytes, not zeros), async with up to `max_pending` outstanding; returns once all are acked.
/// `elapsed` covers publishing only (not connect or stream creation).
pub async fn publish(
    addr: SocketAddr,
    stream: &str,
    record_size: usize,
    count: u64,
    max_pending: usize,
) -> Result<NatsRun> {
    ensure!(max_pending > 0, "max_pending must be at least 1");
    check_stream_name(stream)?;
    let mut conn = Connection::connect(addr).await?;
    ensure!(
        record_size <= conn.max_payload,
        "record size {record_size} exceeds nats-server's max_payload {}",
        conn.max_payload
    );
    conn.request(
        &format!("$JS.API.STREAM.CREATE.{stream}"),
        &json!({
            "name": stream,
            "subjects": [stream],
            "storage": "file",
            "retention": "limits",
            "max_msgs": -1,
            "max_bytes": -1,
            "discard": "old",
            "num_replicas": 1,
        }),
    )
    .await
    .with_context(|| format!("creating JetStream stream {stream}"))?;
    if count == 0 {
        return Ok(NatsRun {
            elapsed: Duration::ZERO,
            messages: 0,
            bytes: 0,
        });
    }

    // Each publish asks for its PubAck on `<inbox>.<n>`, which the inbox wildcard subscription
    // routes to the ack reader; the connection's read half moves into that task.
    let writer = conn.writer.clone();
    let pub_line_head = format!("PUB {stream} {}.", conn.inbox);
    let pub_line_tail = format!(" {record_size}\r\n");
    let progress = Arc::new(AckProgress::default());
    let mut ack_reader = AbortOnDrop(tokio::spawn(count_acks(conn, count, progress.clone())));

    let payloads = PayloadPool::new(record_size);
    let window = max_pending as u64;
    // Once the window is full, wait for a quarter of it to drain: resuming on every single ack
    // would write one message per syscall.
    let resume_after = (window / 4).max(1);
    let mut out = BytesMut::with_capacity(FLUSH_THRESHOLD + record_size + pub_line_head.len() + 64);

    let started = Instant::now();
    for seq in 0..count {
        if seq.saturating_sub(progress.acked.load(SeqCst)) >= window {
            // The acks we are about to wait for may belong to publishes still in `out`.
            write_all(&writer, &mut out).await?;
            let target = (seq - window).saturating_add(resume_after);
            if !progress.wait_for(target).await {
                return Err(ack_reader_failure(&mut ack_reader).await);
            }
        }
        out.extend_from_slice(pub_line_head.as_bytes());
        push_decimal(&mut out, seq);
        out.extend_from_slice(pub_line_tail.as_bytes());
        out.extend_from_slice(payloads.record(seq));
        out.extend_from_slice(b"\r\n");
        if out.len() >= FLUSH_THRESHOLD {
            write_all(&writer, &mut out).await?;
        }
    }
    write_all(&writer, &mut out).await?;
    (&mut ack_reader.0)
        .await
        .context("PubAck reader task failed")?
        .context("waiting for PubAcks")?;
    let elapsed = started.elapsed();
    Ok(NatsRun {
        elapsed,
        messages: count,
        bytes: count * record_size as u64,
    })
}

/// Replays all `count` messages of `stream` from the first; `elapsed` covers delivery only
/// (from sending the consumer-create request to the `count`th message).
pub async fn replay(addr: SocketAddr, stream: &str, count: u64) -> Result<NatsRun> {
    check_stream_name(stream)?;
    let mut conn = Connection::connect(addr).await?;
    if count == 0 {
        return Ok(NatsRun {
            elapsed: Duration::ZERO,
            messages: 0,
            bytes: 0,
        });
    }
    // Not under `<inbox>.*`, or every delivery would also match the reply subscription.
    let deliver_subject = format!("_DELIVER.{}", conn.token);
    encode_sub(&mut conn.out, &deliver_subject, DELIVER_SID);
    let api_subject = format!("$JS.API.CONSUMER.CREATE.{stream}");
    let create = json!({
        "stream_name": stream,
        "config": {
            "deliver_subject": deliver_subject,
            "deliver_policy": "all",
            "ack_policy": "none",
            "replay_policy": "instant",
            "flow_control": true,
            "idle_heartbeat": IDLE_HEARTBEAT.as_nanos() as u64,
        },
    });
    let api_reply = format!("{}.api", conn.inbox);
    encode_pub(
        &mut conn.out,
        api_subject.as_bytes(),
        Some(api_reply.as_bytes()),
        &serde_json::to_vec(&create)?,
    );

    let started = Instant::now();
    conn.flush().await?;
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut received_at_last_heartbeat = 0u64;
    conn.read_until(|frame, out| {
        let Frame::Msg(msg) = frame else {
            return Ok(None);
        };
        if msg.sid == REPLY_SID {
            // The consumer-create response; deliveries may already be flowing around it.
            check_api_response(&msg, &api_subject)?;
        } else if msg.sid == DELIVER_SID {
            match msg.status() {
                None => {
                    received += 1;
                    bytes += msg.payload.len() as u64;
                    if received == count {
                        return Ok(Some(()));
                    }
                }
                Some(100) => match (msg.reply, msg.header(b"Nats-Consumer-Stalled")) {
                    // Flow-control request, or a heartbeat naming a missed one: an empty publish
                    // to it lets the server deliver the next window.
                    (Some(subject), _) | (None, Some(subject)) => {
                        encode_pub(out, subject, None, b"")
                    }
                    (None, None) => {
                        // Heartbeats come only when the consumer has been idle for IDLE_HEARTBEAT;
                        // two without progress between them: the stream has nothing more to give.
                        if received == received_at_last_heartbeat {
                            bail!(
                                "replay of {stream} went idle after {received} of {count} messages \
                                 (does the stream hold fewer?)"
                            );
                        }
                        received_at_last_heartbeat = received;
                    }
                },
                Some(code) => bail!(
                    "status {code} on the deliver subject of {stream}: {}",
                    String::from_utf8_lossy(msg.status_line())
                ),
            }
        }
        Ok(None)
    })
    .await
    .with_context(|| format!("replaying stream {stream}"))?;
    Ok(NatsRun {
        elapsed: started.elapsed(),
        messages: received,
        bytes,
    })
}

/// Publisher/ack-reader handshake: the publisher sleeps while its window is full, the reader
/// counts acks and wakes it once enough have come in.
struct AckProgress {
    acked: AtomicU64,
    /// The ack count the publisher is waiting for; u64::MAX while it is not waiting.
    resume_at: AtomicU64,
    reader_done: AtomicBool,
    notify: Notify,
}

impl Default for AckProgress {
    fn default() -> Self {
        AckProgress {
            acked: AtomicU64::new(0),
            resume_at: AtomicU64::new(u64::MAX),
            reader_done: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }
}

impl AckProgress {
    /// Waits until `target` publishes are acked; false if the ack reader stopped first.
    async fn wait_for(&self, target: u64) -> bool {
        let reached = loop {
            // Publish the target before re-checking: either the reader sees it and notifies
            // (Notify keeps the permit if we are not parked yet), or we see its ack here.
            self.resume_at.store(target, SeqCst);
            if self.acked.load(SeqCst) >= target {
                break true;
            }
            if self.reader_done.load(SeqCst) {
                break false;
            }
            self.notify.notified().await;
        };
        self.resume_at.store(u64::MAX, SeqCst);
        reached
    }
}

/// Reads PubAcks until `count` have arrived; any error ack fails the run.
async fn count_acks(mut conn: Connection, count: u64, progress: Arc<AckProgress>) -> Result<()> {
    let result = conn
        .read_until(|frame, _| {
            let Frame::Msg(msg) = frame else {
                return Ok(None);
            };
            if msg.sid != REPLY_SID {
                return Ok(None);
            }
            if msg.status().is_some() {
                check_api_response(&msg, "publish")?;
            }
            // A PubAck is `{"stream":..,"seq":N}`; only parse the JSON when it reports an error.
            if contains(msg.payload, b"\"error\"") {
                check_api_response(&msg, "publish").context("publish rejected")?;
            }
            let acked = progress.acked.fetch_add(1, SeqCst) + 1;
            if acked >= progress.resume_at.load(SeqCst) {
                progress.notify.notify_one();
            }
            Ok((acked >= count).then_some(()))
        })
        .await;
    progress.reader_done.store(true, SeqCst);
    progress.notify.notify_one();
    result
}

async fn ack_reader_failure(ack_reader: &mut AbortOnDrop<Result<()>>) -> anyhow::Error {
    match (&mut ack_reader.0).await {
        Ok(Err(e)) => e.context("waiting for PubAcks"),
        Ok(Ok(())) => {
            anyhow!("PubAck reader stopped before the publishes it waited for were acked")
        }
        Err(e) => anyhow!(e).context("PubAck reader task failed"),
    }
}

/// Aborts the task if the publisher bails out early, so the ack reader does not outlive the run.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_all(writer: &Mutex<OwnedWriteHalf>, out: &mut BytesMut) -> Result<()> {
    if !out.is_empty() {
        writer
            .lock()
            .await
            .write_all(out)
            .await
            .context("writing to nats-server")?;
        out.clear();
    }
    Ok(())
}

/// Record bodies: pseudo-random bytes (xorshift), record `n` cut at offset `n % PAYLOAD_OFFSETS`.
struct PayloadPool {
    bytes: Vec<u8>,
    record_size: usize,
}

impl PayloadPool {
    fn new(record_size: usize) -> PayloadPool {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes = (0..record_size + PAYLOAD_OFFSETS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        PayloadPool { bytes, record_size }
    }

    fn record(&self, seq: u64) -> &[u8] {
        let offset = (seq % PAYLOAD_OFFSETS as u64) as usize;
        &self.bytes[offset..offset + self.record_size]
    }
}

/// Stream names double as subjects here, and JetStream forbids these in names anyway.
fn check_stream_name(stream: &str) -> Result<()> {
    ensure!(
        !stream.is_empty()
            && stream
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b".*>/\\".contains(&b)),
        "invalid JetStream stream name {stream:?}: use printable ASCII without . * > / \\"
    );
    Ok(())
}

/// Fails on a status message (503: nothing answers the subject) or a JSON `{"error":..}` reply.
fn check_api_response(msg: &Msg<'_>, what: &str) -> Result<Value> {
    match msg.status() {
        Some(503) => bail!("{what}: no responders (JetStream not enabled, or no such stream)"),
        Some(_) => bail!(
            "{what}: server status {}",
            String::from_utf8_lossy(msg.status_line())
        ),
        None => {}
    }
    let response: Value = serde_json::from_slice(msg.payload).with_context(|| {
        format!(
            "{what}: response is not JSON: {:?}",
            String::from_utf8_lossy(msg.payload)
        )
    })?;
    if let Some(error) = response.get("error") {
        bail!("{what}: JetStream error {error}");
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The connection

struct Connection {
    reader: OwnedReadHalf,
    /// Shared between the publisher and the PubAck reader (which answers server PINGs).
    writer: Arc<Mutex<OwnedWriteHalf>>,
    read_buf: BytesMut,
    /// Encoded but not yet written commands of whoever owns the connection.
    out: BytesMut,
    /// Unique per connection: names its reply inbox and a replay's deliver subject.
    token: String,
    /// `_INBOX.<token>`, subscribed as `<inbox>.*` with REPLY_SID.
    inbox: String,
    max_payload: usize,
}

impl Connection {
    /// INFO, then CONNECT + SUB of the reply inbox + PING; the PONG confirms both were processed.
    async fn connect(addr: SocketAddr) -> Result<Connection> {
        let socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to nats-server at {addr}"))?;
        // We batch writes ourselves; Nagle would only delay a batch's tail or a flow-control reply.
        socket.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (reader, writer) = socket.into_split();
        let token = unique_token();
        let mut conn = Connection {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(4096),
            inbox: format!("_INBOX.{token}"),
            token,
            max_payload: 0,
        };
        let info: Value = conn
            .read_until(|frame, _| match frame {
                Frame::Info(json) => Ok(Some(
                    serde_json::from_slice(json).context("parsing the server's INFO")?,
                )),
                other => bail!("expected INFO from nats-server, got {}", other.name()),
            })
            .await
            .context("NATS handshake")?;
        ensure!(
            info["headers"].as_bool() == Some(true),
            "nats-server does not support headers (needed for JetStream status messages)"
        );
        ensure!(
            info["jetstream"].as_bool() == Some(true),
            "nats-server was started without JetStream (-js)"
        );
        conn.max_payload = info["max_payload"].as_u64().unwrap_or(1 << 20) as usize;

        let connect = json!({
            "verbose": false,
            "pedantic": false,
            "headers": true,
            "no_responders": true,
            "protocol": 1,
            "lang": "rust",
            "version": "weir-bench",
            "name": "weir-bench",
        });
        conn.out.extend_from_slice(b"CONNECT ");
        conn.out.extend_from_slice(&serde_json::to_vec(&connect)?);
        conn.out.extend_from_slice(b"\r\n");
        let inbox_wildcard = format!("{}.*", conn.inbox);
        encode_sub(&mut conn.out, &inbox_wildcard, REPLY_SID);
        conn.out.extend_from_slice(b"PING\r\n");
        conn.flush().await?;
        conn.read_until(|frame, _| Ok(matches!(frame, Frame::Pong).then_some(())))
            .await
            .context("NATS handshake")?;
        Ok(conn)
    }

    /// A JetStream API call: publishes `body` to `api_subject` and waits for its JSON reply.
    async fn request(&mut self, api_subject: &str, body: &Value) -> Result<Value> {
        let reply = format!("{}.api", self.inbox);
        encode_pub(
            &mut self.out,
            api_subject.as_bytes(),
            Some(reply.as_bytes()),
            &serde_json::to_vec(body)?,
        );
        self.flush().await?;
        self.read_until(|frame, _| match frame {
            Frame::Msg(msg) if msg.sid == REPLY_SID => {
                check_api_response(&msg, api_subject).map(Some)
            }
            _ => Ok(None),
        })
        .await
    }

    /// Feeds every frame to `on_frame` (with the outgoing buffer, for replies) until it returns a
    /// value. Answers PINGs and fails on `-ERR` itself. Whatever `on_frame` encoded into the
    /// buffer is written after each batch of parsed frames. Frames after the one that produced
    /// the value stay buffered for the next call.
    async fn read_until<T>(
        &mut self,
        mut on_frame: impl FnMut(Frame<'_>, &mut BytesMut) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            let mut consumed = 0;
            let mut outcome = None;
            while let Some((frame, len)) = parse_frame(&self.read_buf[consumed..])? {
                consumed += len;
                match frame {
                    Frame::Ping => self.out.extend_from_slice(b"PONG\r\n"),
                    Frame::ServerError(text) => {
                        bail!("nats-server: -ERR {}", String::from_utf8_lossy(text))
                    }
                    frame => {
                        if let Some(value) = on_frame(frame, &mut self.out)? {
                            outcome = Some(value);
                            break;
                        }
                    }
                }
            }
            self.read_buf.advance(consumed);
            self.flush().await?;
            if let Some(value) = outcome {
                return Ok(value);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        self.read_buf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(STALL_TIMEOUT, self.reader.read_buf(&mut self.read_buf))
            .await
            .map_err(|_| anyhow!("nats-server sent nothing for {STALL_TIMEOUT:?}"))?
            .context("reading from nats-server")?;
        ensure!(read > 0, "nats-server closed the connection");
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        write_all(&self.writer, &mut self.out).await
    }
}

/// Unique within the process and across runs: pid, clock, and a per-process counter.
fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    format!(
        "wb{:x}{:x}{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, SeqCst)
    )
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn encode_sub(out: &mut BytesMut, subject: &str, sid: &[u8]) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(sid);
    out.extend_from_slice(b"\r\n");
}

fn encode_pub(out: &mut BytesMut, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    if let Some(reply) = reply {
        out.extend_from_slice(b" ");
        out.extend_from_slice(reply);
    }
    out.extend_from_slice(b" ");
    push_decimal(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt` (this runs once per published record).
fn push_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// One server frame, borrowing from the read buffer.
#[derive(Debug, PartialEq)]
enum Frame<'a> {
    Info(&'a [u8]),
    /// MSG, or HMSG (then `headers` is Some).
    Msg(Msg<'a>),
    Ping,
    Pong,
    PlusOk,
    ServerError(&'a [u8]),
}

impl Frame<'_> {
    fn name(&self) -> &'static str {
        match self {
            Frame::Info(_) => "INFO",
            Frame::Msg(msg) if msg.headers.is_some() => "HMSG",
            Frame::Msg(_) => "MSG",
            Frame::Ping => "PING",
            Frame::Pong => "PONG",
            Frame::PlusOk => "+OK",
            Frame::ServerError(_) => "-ERR",
        }
    }
}

#[derive(Debug, PartialEq)]
struct Msg<'a> {
    subject: &'a [u8],
    sid: &'a [u8],
    reply: Option<&'a [u8]>,
    /// The raw header block (`NATS/1.0...` through the empty line) of an HMSG.
    headers: Option<&'a [u8]>,
    payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The first header line after `NATS/1.0`, e.g. `100 FlowControl Request`; empty for
    /// ordinary messages.
    fn status_line(&self) -> &'a [u8] {
        let Some(rest) = self.headers.and_then(|h| h.strip_prefix(b"NATS/1.0")) else {
            return b"";
        };
        let line_end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        rest[..line_end].trim_ascii()
    }

    /// The status code of a server status message, None for an ordinary message.
    fn status(&self) -> Option<u16> {
        let line = self.status_line();
        let code = line.get(..3)?;
        if !code.iter().all(u8::is_ascii_digit)
            || line.get(3).is_some_and(|b| !b.is_ascii_whitespace())
        {
            return None;
        }
        std::str::from_utf8(code).ok()?.parse().ok()
    }

    /// The value of header `name` (case-insensitive), trimmed.
    fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers?
            .split(|&b| b == b'\n')
            .skip(1)
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .trim_ascii()
                    .eq_ignore_ascii_case(name)
                    .then(|| line[colon + 1..].trim_ascii())
            })
    }
}

/// Parses one frame from the front of `buf`: Ok(None) if it is not complete yet, else the frame
/// and its length in bytes. Errors on anything that is not a well-formed server frame.
fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        ensure!(
            buf.len() < MAX_CONTROL_LINE,
            "nats-server sent a line over {MAX_CONTROL_LINE} bytes without CRLF: {:?}",
            String::from_utf8_lossy(&buf[..80.min(buf.len())])
        );
        return Ok(None);
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let body_start = newline + 1;
    let (op, args) = match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(space) => (&line[..space], line[space + 1..].trim_ascii()),
        None => (line, &b""[..]),
    };
    let malformed = || {
        anyhow!(
            "malformed line from nats-server: {:?}",
            String::from_utf8_lossy(line)
        )
    };

    let control_only = |frame| Ok(Some((frame, body_start)));
    if op.eq_ignore_ascii_case(b"MSG") || op.eq_ignore_ascii_case(b"HMSG") {
        let with_headers = op.len() == 4;
        let mut fields: [&[u8]; 5] = [b""; 5];
        let mut field_count = 0;
        for field in args
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
        {
            *fields.get_mut(field_count).ok_or_else(malformed)? = field;
            field_count += 1;
        }
        // MSG subject sid [reply] len | HMSG subject sid [reply] hdr_len total_len
        let reply = match (with_headers, field_count) {
            (false, 3) | (true, 4) => None,
            (false, 4) | (true, 5) => Some(fields[2]),
            _ => return Err(malformed()),
        };
        let lengths = &fields[field_count - if with_headers { 2 } else { 1 }..field_count];
        let total_len = parse_len(lengths[lengths.len() - 1]).ok_or_else(malformed)?;
        let header_len = if with_headers {
            Some(
                parse_len(lengths[0])
                    .filter(|&h| h <= total_len)
                    .ok_or_else(malformed)?,
            )
        } else {
            None
        };
        // Lengths are capped at MAX_FRAME_LEN, so this cannot overflow.
        let body_end = body_start + total_len;
        let frame_end = body_end + 2;
        if buf.len() < frame_end {
            return Ok(None);
        }
        ensure!(
            &buf[body_end..frame_end] == b"\r\n",
            "nats-server message body does not end in CRLF after {total_len} bytes: {:?}",
            String::from_utf8_lossy(line)
        );
        let body = &buf[body_start..body_end];
        let (headers, payload) = match header_len {
            Some(header_len) => (Some(&body[..header_len]), &body[header_len..]),
            None => (None, body),
        };
        let msg = Msg {
            subject: fields[0],
            sid: fields[1],
            reply,
            headers,
            payload,
        };
        Ok(Some((Frame::Msg(msg), frame_end)))
    } else if op.eq_ignore_ascii_case(b"PING") {
        control_only(Frame::Ping)
    } else if op.eq_ignore_ascii_case(b"PONG") {
        control_only(Frame::Pong)
    } else if op.eq_ignore_ascii_case(b"+OK") {
        control_only(Frame::PlusOk)
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        control_only(Frame::ServerError(args))
    } else if op.eq_ignore_ascii_case(b"INFO") {
        control_only(Frame::Info(args))
    } else {
        Err(malformed())
    }
}

/// A decimal length no larger than MAX_FRAME_LEN.
fn parse_len(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0usize, |acc, &d| acc * 10 + usize::from(d - b'0'));
    (value <= MAX_FRAME_LEN).then_some(value)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut buf: &[u8]) -> Vec<Frame<'_>> {
        let mut frames = Vec::new();
        while let Some((frame, len)) = parse_frame(buf).unwrap() {
            frames.push(frame);
            buf = &buf[len..];
        }
        assert!(
            buf.is_empty(),
            "left unparsed: {:?}",
            String::from_utf8_lossy(buf)
        );
        frames
    }

    #[test]
    fn parses_msg_with_and_without_reply() {
        let frames = parse_all(b"MSG orders 1 5\r\nhello\r\nMSG _INBOX.x.7 1 _INBOX.r 2\r\nhi\r\n");
        assert_eq!(
            frames,
            vec![
                Frame::Msg(Msg {
                    subject: b"orders",
                    sid: b"1",
                    reply: None,
                    headers: None,
                    payload: b"hello"
                }),
                Frame::Msg(Msg {
                    subject: b"_INBOX.x.7",
                    sid: b"1",
                    reply: Some(b"_INBOX.r"),
                    headers: None,
                    payload: b"hi",
                }),
            ]
        );
    }

    #[test]
    fn parses_status_hmsgs() {
        let flow_control_headers: &[u8] = b"NATS/1.0 100 FlowControl Request\r\n\r\n";
        let heartbeat_headers: &[u8] =
            b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 3\r\nnats-consumer-stalled: $JS.FC.s.x.1\r\n\r\n";
        let mut wire = Vec::new();
        let fc_len = flow_control_headers.len();
        wire.extend_from_slice(
            format!("HMSG _DELIVER.t 2 $JS.FC.s.a.b {fc_len} {fc_len}\r\n").as_bytes(),
        );
        wire.extend_from_slice(flow_control_headers);
        wire.extend_from_slice(b"\r\n");
        let hb_len = heartbeat_headers.len();
        wire.extend_from_slice(format!("HMSG _DELIVER.t 2 {hb_len} {}\r\n", hb_len + 3).as_bytes());
        wire.extend_from_slice(heartbeat_headers);
        wire.extend_from_slice(b"abc\r\n");

        let frames = parse_all(&wire);
        let [Frame::Msg(flow_control), Frame::Msg(heartbeat)] = &frames[..] else {
            panic!("expected two messages, got {frames:?}");
        };
        assert_eq!(flow_control.status(), Some(100));
        assert_eq!(flow_control.reply, Some(&b"$JS.FC.s.a.b"[..]));
        assert_eq!(flow_control.payload, b"");
        assert_eq!(heartbeat.status(), Some(100));
        assert_eq!(heartbeat.status_line(), b"100 Idle Heartbeat");
        assert_eq!(heartbeat.reply, None);
        assert_eq!(
            heartbeat.header(b"Nats-Consumer-Stalled"),
            Some(&b"$JS.FC.s.x.1"[..])
        );
        assert_eq!(heartbeat.header(b"Nats-Last-Consumer"), Some(&b"3"[..]));
        assert_eq!(heartbeat.payload, b"abc");

        // Ordinary headers carry no status.
        let plain = Msg {
            subject: b"s",
            sid: b"1",
            reply: None,
            headers: Some(b"NATS/1.0\r\nA: b\r\n\r\n"),
            payload: b"",
        };
        assert_eq!(plain.status(), None);
        let no_responders = Msg {
            subject: b"s",
            sid: b"1",
            reply: None,
            headers: Some(b"NATS/1.0 503\r\n\r\n"),
            payload: b"",
        };
        assert_eq!(no_responders.status(), Some(503));
    }

    #[test]
    fn frames_split_across_reads_wait_for_the_rest() {
        let wire: &[u8] =
            b"HMSG d 2 r 12 16\r\nNATS/1.0\r\n\r\nbody\r\nPING\r\nMSG d 2 3\r\nxyz\r\n";
        let first_frame_len = b"HMSG d 2 r 12 16\r\nNATS/1.0\r\n\r\nbody\r\n".len();
        for cut in 0..first_frame_len {
            assert_eq!(
                parse_frame(&wire[..cut]).unwrap(),
                None,
                "complete at {cut} bytes"
            );
        }
        let (frame, len) = parse_frame(wire).unwrap().unwrap();
        assert_eq!(len, first_frame_len);
        let Frame::Msg(msg) = frame else {
            panic!("expected HMSG, got {frame:?}")
        };
        assert_eq!(
            (msg.headers, msg.payload),
            (Some(&b"NATS/1.0\r\n\r\n"[..]), &b"body"[..])
        );
        // A reader that feeds the buffer in small chunks sees every frame exactly once.
        let mut buffer = BytesMut::new();
        let mut names = Vec::new();
        for chunk in wire.chunks(5) {
            buffer.extend_from_slice(chunk);
            while let Some((frame, len)) = parse_frame(&buffer).unwrap() {
                names.push(frame.name());
                buffer.advance(len);
            }
        }
        assert_eq!(names, ["HMSG", "PING", "MSG"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn parses_control_lines() {
        let frames = parse_all(b"INFO {\"max_payload\":1048576}\r\nPING\r\nPONG\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n");
        assert_eq!(
            frames,
            vec![
                Frame::Info(b"{\"max_payload\":1048576}"),
                Frame::Ping,
                Frame::Pong,
                Frame::PlusOk,
                Frame::ServerError(b"'Unknown Protocol Operation'"),
            ]
        );
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"MSG s 1\r\n",
            b"MSG s 1 r x 5\r\n",
            b"MSG s 1 -5\r\n",
            b"MSG s 1 99999999999999999999\r\n",
            b"HMSG s 1 9 5\r\n",
            b"MSG s 1 2\r\nabcd\r\n",
        ] {
            assert!(
                parse_frame(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_frame(&[b'x'; MAX_CONTROL_LINE + 1]).is_err());
    }

    #[test]
    fn encodes_pub_and_sub() {
        let mut out = BytesMut::new();
        encode_sub(&mut out, "_INBOX.t.*", REPLY_SID);
        encode_pub(&mut out, b"orders", Some(b"_INBOX.t.0"), b"abc");
        encode_pub(&mut out, b"$JS.FC.x", None, b"");
        push_decimal(&mut out, 1_234_567_890);
        assert_eq!(
            &out[..],
            b"SUB _INBOX.t.* 1\r\nPUB orders _INBOX.t.0 3\r\nabc\r\nPUB $JS.FC.x 0\r\n\r\n1234567890"
        );
    }

    #[test]
    fn payloads_vary() {
        let pool = PayloadPool::new(1024);
        assert_ne!(pool.record(0), pool.record(1));
        assert!(pool.record(0).iter().any(|&b| b != 0));
        assert_eq!(pool.record(5).len(), 1024);
    }
}
