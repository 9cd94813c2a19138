//! The broker under test: one this bench starts (the `weir-broker` binary next to this one, on
//! free loopback ports, over a temp data dir) or one it is pointed at. Either way the bench can
//! read the broker process's CPU time, which is how zero-copy shows on loopback.

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::Context;

/// A process whose CPU time can be sampled.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    pid: u32,
}

impl CpuClock {
    pub fn of(pid: u32) -> Self {
        CpuClock { pid }
    }

    /// User + system CPU seconds the process has used so far (from /proc/PID/stat).
    pub fn seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("reading /proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("malformed /proc stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
        let ticks: u64 = fields
            .get(11..13)
            .context("short /proc stat")?
            .iter()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .sum();
        Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
    }

    /// The process's peak resident set so far, in MB (`VmHWM` of /proc/PID/status).
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("reading /proc/{}/status", self.pid))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc status")?;
        Ok(kib as f64 * 1024.0 / 1e6)
    }
}

/// The broker the bench talks to.
pub struct Broker {
    pub grpc: String,
    pub cpu: Option<CpuClock>,
    _child: Option<ChildGuard>,
    _data_dir: Option<tempfile::TempDir>,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGKILL is fine: the data dir is a temp dir deleted right after.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Broker {
    /// Connects to a running broker; `pid` (if given) is used for CPU accounting.
    pub fn external(grpc: String, pid: Option<u32>) -> Self {
        Broker {
            grpc,
            cpu: pid.map(CpuClock::of),
            _child: None,
            _data_dir: None,
        }
    }

    /// Starts `bin` (default: `weir-broker` next to this executable) on free loopback ports.
    pub fn start(bin: Option<PathBuf>, extra_args: &[String]) -> anyhow::Result<Self> {
        let bin = crate::cluster::broker_bin(bin)?;
        let data_dir = tempfile::Builder::new().prefix("weir-bench-").tempdir()?;
        let loopback = ("127.0.0.1:0", "127.0.0.1:0");
        let mut child = weir_testkit::spawn_broker(&bin, data_dir.path(), loopback, extra_args)
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let grpc = weir_testkit::wait_for_ready(stdout, Duration::from_secs(60))
            .context("the broker did not report ready")?
            .grpc
            .to_string();
        Ok(Broker {
            grpc,
            cpu: Some(CpuClock::of(child.id())),
            _child: Some(ChildGuard(child)),
            _data_dir: Some(data_dir),
        })
    }
}
