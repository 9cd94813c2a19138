//! `weir health`: asks a node's metrics listener (`weir-broker --metrics-listen`) whether the
//! node is ready (`GET /readyz`) or, with `--live`, only alive (`GET /healthz`), prints its
//! answer and exits 0 on 200, 1 otherwise. What a container health check runs: the image has no
//! shell and no curl, and this needs neither (one HTTP/1.0 GET over a plain TCP connection).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// The node's metrics listener
    #[arg(
        long,
        env = "WEIR_METRICS",
        default_value = "127.0.0.1:7072",
        value_name = "HOST:PORT"
    )]
    metrics: String,
    /// Only whether the process answers (/healthz), not whether it can serve (/readyz)
    #[arg(long)]
    live: bool,
    /// How long to wait for the answer, in milliseconds
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    timeout_ms: u64,
}

pub fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let path = if args.live { "/healthz" } else { "/readyz" };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let (status, body) = get(&args.metrics, path, timeout)
        .with_context(|| format!("asking http://{}{path}", args.metrics))?;
    print!("{body}");
    if status != 200 {
        bail!(
            "http://{}{path} answered HTTP {status}{}",
            args.metrics,
            if status == 503 { " (not ready)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One `GET path` from `addr`: the status code and the body.
fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let target = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout).with_context(|| {
        format!("cannot connect to {addr}: is weir-broker running with --metrics-listen {addr}?")
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut raw)
        .context("reading the answer")?;
    parse(&raw)
}

/// The status code and body of an HTTP/1.x response read to its end.
fn parse(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP response: {text:?}");
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok());
    match status {
        Some(status) => Ok((status, body.to_owned())),
        None => bail!("not an HTTP status line: {status_line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_gives_its_status_and_body() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 41\r\n\r\nnot ready: the controller is unreachable\n";
        let (status, body) = parse(raw).unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: the controller is unreachable\n");
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\n\r\nready\n").unwrap(),
            (200, "ready\n".into())
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"SSH-2.0 200 x\r\n\r\n").is_err());
    }
}
