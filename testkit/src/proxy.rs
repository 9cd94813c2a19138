//! A fault-injecting TCP proxy for cutting the link between two processes on loopback: put it
//! between a broker and its controller, or a follower and its leader, and the fault suite can
//! cut the link, black-hole it, and heal it, without root or network namespaces.
//!
//! Every accepted connection is relayed byte for byte to the upstream address, one thread per
//! direction. [`LinkProxy::set_mode`] changes what happens from then on:
//! - [`LinkMode::Pass`]: bytes flow (the default).
//! - [`LinkMode::Blackhole`]: connections stay open but nothing is delivered either way (bytes
//!   read are dropped), as when packets vanish in a partition: the peers only learn by
//!   timeouts. New connections are accepted and held the same way.
//! - [`LinkMode::Reset`]: every open connection is closed at once and new ones are closed on
//!   accept, as when a peer's host is unreachable and the kernel answers with resets.
//!
//! Healing (back to `Pass`) affects new connections and, for `Blackhole`, the held ones (bytes
//! read while black-holed stay dropped: TCP peers see a gap only if they were mid-message, which
//! is what a real partition does to an application protocol that times out and reconnects).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    Blackhole,
    Reset,
}

impl LinkMode {
    fn from_u8(v: u8) -> LinkMode {
        match v {
            1 => LinkMode::Blackhole,
            2 => LinkMode::Reset,
            _ => LinkMode::Pass,
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    mode: AtomicU8,
    stopped: AtomicBool,
    /// Both halves of every open relayed connection, to reset them on demand.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
}

/// A running proxy; stopped (and every relayed connection closed) when dropped.
pub struct LinkProxy {
    /// The address to dial instead of the upstream.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LinkProxy {
    /// Listens on a free loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: AtomicU8::new(0),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("link-proxy-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(LinkProxy { addr, shared })
    }

    pub fn mode(&self) -> LinkMode {
        LinkMode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    /// Changes what the proxy does from now on (see the module docs).
    pub fn set_mode(&self, mode: LinkMode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        if mode == LinkMode::Reset {
            reset_all(&self.shared);
        }
    }

    /// Closes every relayed connection now, whatever the mode (a one-off "connection reset").
    pub fn reset_connections(&self) {
        reset_all(&self.shared);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        reset_all(&self.shared);
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn reset_all(shared: &Shared) {
    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
    for (client, upstream) in open.drain(..) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if LinkMode::from_u8(shared.mode.load(Ordering::SeqCst)) == LinkMode::Reset {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            continue;
        };
        shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((c3, u3));
        for (from, to) in [(client, u2), (upstream, c2)] {
            let relay_shared = Arc::clone(&shared);
            let _ = thread::Builder::new()
                .name("link-proxy-relay".into())
                .spawn(move || relay(from, to, &relay_shared));
        }
    }
}

/// Copies `from` to `to` until either side closes; drops what it reads while black-holed.
fn relay(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match LinkMode::from_u8(shared.mode.load(Ordering::SeqCst)) {
            LinkMode::Pass => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            LinkMode::Blackhole => {}
            LinkMode::Reset => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        conn.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        conn.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_blackholes_resets_and_heals() {
        let proxy = LinkProxy::start(echo_server()).unwrap();
        let mut conn = TcpStream::connect(proxy.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(roundtrip(&mut conn, b"hello").unwrap(), b"hello");

        proxy.set_mode(LinkMode::Blackhole);
        let err = roundtrip(&mut conn, b"lost").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a black hole answers nothing: {err:?}"
        );

        proxy.set_mode(LinkMode::Pass);
        assert_eq!(
            roundtrip(&mut conn, b"again").unwrap(),
            b"again",
            "a healed link carries the held connection again"
        );

        proxy.set_mode(LinkMode::Reset);
        let mut buf = [0u8; 1];
        assert!(
            matches!(conn.read(&mut buf), Ok(0) | Err(_)),
            "reset closes open connections"
        );
        let mut refused = TcpStream::connect(proxy.addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)));

        proxy.set_mode(LinkMode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(roundtrip(&mut fresh, b"healed").unwrap(), b"healed");
    }
}
