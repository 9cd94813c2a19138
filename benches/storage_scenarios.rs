//! Storage scenarios that need their own timing, each printed with its baseline and summed up
//! in one JSON line on stdout:
//!
//! - `random-read`: random `read(offset, 1)` of one 64 KiB batch in a 4 GiB partition (index
//!   lookup + zero-copy slice; then again touching every byte), against `pread` of the same
//!   64 KiB from the segment file. p50/p99/p999 from hdrhistogram. Page cache warm.
//! - `recovery`: reopen after an unclean stop of a partition with 4 GiB synced and 64 MiB
//!   appended after the last checkpointed recovery point (scans the tail only), against the
//!   same reopen with the recovery point lost (scans everything): the first must not grow with
//!   the total. The tail's pages are written back before the stop (`syncfs`), so both measure
//!   validation work, not the disk absorbing dirty pages; the page cache is warm for both.
//! - `scale`: create 10,000 partitions with a little data each, close, reopen: time, resident
//!   memory per partition, open files and disk blocks reserved.
//!
//! `cargo bench --bench storage_scenarios`. Sizes: `WEIR_BENCH_GIB` (4), `WEIR_BENCH_TAIL_MIB`
//! (64), `WEIR_BENCH_PARTITIONS` (10000); `WEIR_BENCH_SCENARIOS=random-read,recovery,scale`.

mod support;

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use support::*;
use weir_storage::{LogConfig, LogDir, PartitionLog, TopicPartition};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>24} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A tiny xorshift so runs are reproducible without another dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn percentiles(h: &Histogram<u64>) -> serde_like::Obj {
    serde_like::Obj::new()
        .num("p50_us", h.value_at_quantile(0.5) as f64 / 1000.0)
        .num("p99_us", h.value_at_quantile(0.99) as f64 / 1000.0)
        .num("p999_us", h.value_at_quantile(0.999) as f64 / 1000.0)
        .num("max_us", h.max() as f64 / 1000.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes of disk blocks allocated under `dir` (what fallocate reserved plus what was written).
fn disk_reserved(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk_reserved(&e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` and test discovery
    }
    let scenarios = std::env::var("WEIR_BENCH_SCENARIOS")
        .unwrap_or_else(|_| "random-read,recovery,scale".into());
    let mut summary = serde_like::Obj::new();
    let base = tempfile::Builder::new().prefix("weir-bench").tempdir_in(
        std::env::var("WEIR_BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )?;

    if scenarios.contains("random-read") || scenarios.contains("recovery") {
        let gib = env_u64("WEIR_BENCH_GIB", 4);
        let dir = base.path().join("big");
        let config = LogConfig {
            segment_bytes: 1 << 30,
            ..bench_log_config()
        };
        let (logs, _) = LogDir::open(&dir, bench_dir_config(config.clone()))?;
        let tp = TopicPartition::validated("big", 0)?;
        let log = logs.create_partition(tp.clone(), None)?;
        let batch = batch_of(1 << 10, 64 << 10);
        let target = gib << 30;
        let bar = progress(target, "filling partition");
        let started = Instant::now();
        while log.size_bytes() < target {
            log.append(&batch)?;
            bar.inc(batch.len() as u64);
        }
        log.flush()?;
        logs.checkpoint()?; // what the maintenance thread does every checkpoint_interval
        bar.finish_and_clear();
        let fill = started.elapsed();
        eprintln!(
            "filled {gib} GiB in {:.1} s ({:.0} MB/s incl. sync)",
            fill.as_secs_f64(),
            target as f64 / fill.as_secs_f64() / 1e6
        );
        summary = summary.num("fill_mb_per_s", target as f64 / fill.as_secs_f64() / 1e6);

        if scenarios.contains("random-read") {
            summary = summary.obj("random_read", random_read(&log, &dir.join(tp.dir_name()))?);
        }
        if scenarios.contains("recovery") {
            let tail_mib = env_u64("WEIR_BENCH_TAIL_MIB", 64);
            let bar = progress(tail_mib << 20, "unsynced tail");
            let tail_start = log.size_bytes();
            while log.size_bytes() - tail_start < tail_mib << 20 {
                log.append(&batch)?;
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
            // Write the tail back to disk (without advancing the checkpointed recovery point), so
            // both reopens below measure scanning, not the disk writing unsynced pages.
            rustix::fs::syncfs(File::open(&dir)?)?;
            drop(log);
            drop(logs); // unclean stop
            let (tail, total_bytes) = {
                let started = Instant::now();
                let (logs, report) = LogDir::open(&dir, bench_dir_config(config.clone()))?;
                let tail = started.elapsed();
                anyhow::ensure!(
                    !report.clean && report.truncations.is_empty(),
                    "unexpected recovery outcome: {report:?}"
                );
                let total = logs.partition(&tp).context("partition")?.size_bytes();
                (tail, total)
            }; // dropped: unclean again
            std::fs::remove_file(dir.join("recovery-point-offset-checkpoint"))?;
            let started = Instant::now();
            let (logs, _) = LogDir::open(&dir, bench_dir_config(config))?;
            let full = started.elapsed();
            logs.close()?;
            eprintln!(
                "reopen after unclean stop ({} MiB total, {tail_mib} MiB unsynced): {:.1} ms from the recovery point; {:.1} ms with it lost (full scan); ratio {:.1}x",
                total_bytes >> 20,
                tail.as_secs_f64() * 1e3,
                full.as_secs_f64() * 1e3,
                full.as_secs_f64() / tail.as_secs_f64()
            );
            summary = summary.obj(
                "recovery",
                serde_like::Obj::new()
                    .num("total_mib", (total_bytes >> 20) as f64)
                    .num("unsynced_mib", tail_mib as f64)
                    .num("reopen_from_recovery_point_ms", tail.as_secs_f64() * 1e3)
                    .num("reopen_full_scan_ms", full.as_secs_f64() * 1e3),
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    if scenarios.contains("scale") {
        summary = summary.obj(
            "scale",
            scale(
                &base.path().join("scale"),
                env_u64("WEIR_BENCH_PARTITIONS", 10_000) as u32,
            )?,
        );
    }
    println!("{}", summary.render());
    Ok(())
}

fn random_read(log: &PartitionLog, partition_dir: &Path) -> anyhow::Result<serde_like::Obj> {
    let hw = log.high_watermark();
    let samples = 20_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut lookup, mut touched, mut baseline) = (
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
        Histogram::<u64>::new(3)?,
    );
    // Warm the page cache and collect the batches' file positions for the baseline.
    let mut positions = Vec::new();
    let mut offset = 0;
    while offset < hw {
        let r = log.read(offset, 1)?;
        let chunk = &r.chunks[0];
        positions.push((chunk.file.clone(), chunk.position, chunk.bytes.len()));
        offset = chunk.next_offset;
    }
    let mut sink = 0u64;
    for _ in 0..samples {
        let offset = rng.below(hw);
        let started = Instant::now();
        let r = log.read(offset, 1)?;
        lookup.record(started.elapsed().as_nanos() as u64)?;
        sink = sink.wrapping_add(r.chunks[0].bytes.len() as u64);
    }
    for _ in 0..samples {
        let offset = rng.below(hw);
        let started = Instant::now();
        let r = log.read(offset, 1)?;
        sink = sink.wrapping_add(r.chunks[0].bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
        touched.record(started.elapsed().as_nanos() as u64)?;
    }
    let mut buf = vec![0u8; 128 << 10];
    let files: Vec<(std::sync::Arc<File>, u64, usize)> = positions;
    for _ in 0..samples {
        let (file, position, len) = &files[rng.below(files.len() as u64) as usize];
        let started = Instant::now();
        file.read_exact_at(&mut buf[..*len], *position)?;
        sink = sink.wrapping_add(buf[..*len].iter().map(|&b| u64::from(b)).sum::<u64>());
        baseline.record(started.elapsed().as_nanos() as u64)?;
    }
    std::hint::black_box(sink);
    let _ = partition_dir;
    eprintln!(
        "random read of one 64 KiB batch in {} MiB: lookup p50 {:.1} us p99 {:.1} us; lookup+touch p50 {:.1} us p99 {:.1} us; baseline pread+touch p50 {:.1} us p99 {:.1} us",
        log.size_bytes() >> 20,
        lookup.value_at_quantile(0.5) as f64 / 1e3,
        lookup.value_at_quantile(0.99) as f64 / 1e3,
        touched.value_at_quantile(0.5) as f64 / 1e3,
        touched.value_at_quantile(0.99) as f64 / 1e3,
        baseline.value_at_quantile(0.5) as f64 / 1e3,
        baseline.value_at_quantile(0.99) as f64 / 1e3,
    );
    Ok(serde_like::Obj::new()
        .num("partition_mib", (log.size_bytes() >> 20) as f64)
        .num("samples", samples as f64)
        .obj("lookup", percentiles(&lookup))
        .obj("lookup_and_touch", percentiles(&touched))
        .obj("baseline_pread_and_touch", percentiles(&baseline)))
}

fn scale(dir: &Path, partitions: u32) -> anyhow::Result<serde_like::Obj> {
    let config = bench_log_config();
    let batch = batch_of(100, 1 << 10);
    let bar = progress(u64::from(partitions), "creating partitions");
    let fds_before = open_fds();
    let started = Instant::now();
    let (logs, _) = LogDir::open(dir, bench_dir_config(config.clone()))?;
    for p in 0..partitions {
        let log = logs.create_partition(TopicPartition::validated("scale", p)?, None)?;
        for _ in 0..4 {
            log.append(&batch)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let create = started.elapsed();
    let (fds_active, reserved_active) = (open_fds() - fds_before, disk_reserved(dir));
    let started = Instant::now();
    logs.close()?;
    let close = started.elapsed();
    let reserved_closed = disk_reserved(dir);

    let rss_before = rss_kib();
    let fds_before = open_fds();
    let started = Instant::now();
    let (logs, report) = LogDir::open(dir, bench_dir_config(config))?;
    let reopen = started.elapsed();
    anyhow::ensure!(
        report.clean && report.partitions == partitions as usize,
        "unexpected reopen: clean={} partitions={}",
        report.clean,
        report.partitions
    );
    let rss_per_partition =
        (rss_kib().saturating_sub(rss_before)) as f64 * 1024.0 / f64::from(partitions);
    let fds_idle = open_fds().saturating_sub(fds_before);
    // Touch every partition once (lazy opens), then let idle closing release them.
    let started = Instant::now();
    for p in 0..partitions {
        let log = logs
            .partition(&TopicPartition::validated("scale", p)?)
            .context("partition")?;
        std::hint::black_box(log.read(0, 1)?);
    }
    let first_reads = started.elapsed();
    let fds_after_reads = open_fds().saturating_sub(fds_before);
    for p in 0..partitions {
        logs.partition(&TopicPartition::validated("scale", p)?)
            .context("partition")?
            .close_idle(i64::MAX);
    }
    let fds_after_idle = open_fds().saturating_sub(fds_before);
    drop(logs);
    eprintln!(
        "{partitions} partitions: create {:.1} s ({fds_active} fds open, {} MiB reserved), close {:.1} s ({} MiB on disk); reopen {:.2} s, {:.0} B RSS per partition, {fds_idle} fds; first read of each {:.2} s ({fds_after_reads} fds, {fds_after_idle} after idle close)",
        create.as_secs_f64(),
        reserved_active >> 20,
        close.as_secs_f64(),
        reserved_closed >> 20,
        reopen.as_secs_f64(),
        rss_per_partition,
        first_reads.as_secs_f64()
    );
    Ok(serde_like::Obj::new()
        .num("partitions", f64::from(partitions))
        .num("create_s", create.as_secs_f64())
        .num("open_fds_while_active", fds_active as f64)
        .num("reserved_mib_while_active", (reserved_active >> 20) as f64)
        .num("close_s", close.as_secs_f64())
        .num("reserved_mib_after_close", (reserved_closed >> 20) as f64)
        .num("reopen_s", reopen.as_secs_f64())
        .num("rss_bytes_per_idle_partition", rss_per_partition)
        .num("open_fds_idle", fds_idle as f64)
        .num("first_read_all_s", first_reads.as_secs_f64())
        .num("open_fds_after_reads", fds_after_reads as f64)
        .num("open_fds_after_idle_close", fds_after_idle as f64))
}

/// A few lines of JSON building, to keep serde out of the bench's dependencies.
mod serde_like {
    pub struct Obj(Vec<(String, String)>);

    impl Obj {
        pub fn new() -> Self {
            Obj(Vec::new())
        }

        pub fn num(mut self, key: &str, value: f64) -> Self {
            let v = if value.is_finite() {
                format!("{}", (value * 1000.0).round() / 1000.0)
            } else {
                "null".into()
            };
            self.0.push((key.into(), v));
            self
        }

        pub fn obj(mut self, key: &str, value: Obj) -> Self {
            self.0.push((key.into(), value.render()));
            self
        }

        pub fn render(&self) -> String {
            let fields: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}
