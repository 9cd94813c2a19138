//! The raw loopback TCP baseline: the same number of payload bytes copied over a plain
//! socket, no broker, in chunks of the batch size. The ceiling any networked broker works
//! under on this machine, measured in the same run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Copies `total` bytes in `chunk`-byte writes; returns the time until the reader has all.
pub fn copy(total: u64, chunk: usize) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> anyhow::Result<Instant> {
        let (mut socket, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0u64;
        while received < total {
            let n = socket.read(&mut buf)?;
            anyhow::ensure!(n > 0, "the writer closed early");
            received += n as u64;
        }
        Ok(Instant::now())
    });
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let data: Vec<u8> = (0..chunk).map(|i| (i * 31 + 7) as u8).collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk as u64) as usize;
        socket.write_all(&data[..n])?;
        sent += n as u64;
    }
    let done = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(done - started)
}
