//! `weir-broker --verify`: every batch of the data directory checked from outside, with a
//! progress bar on a terminal (quiet when piped), damage printed one line each on stdout.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::{error, info};
use weir_broker::layout;
use weir_storage::verify::{log_bytes, verify_log_dir};

/// Verifies the storage-engine dirs of `data_dir`; an error when any is damaged.
pub fn run(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.is_dir() {
        bail!(
            "no data directory at {}; pass --data-dir (or WEIR_DATA_DIR)",
            data_dir.display()
        );
    }
    let dirs = layout::storage_dirs(data_dir);
    let mut total = 0;
    for dir in &dirs {
        total += log_bytes(dir).with_context(|| format!("sizing {}", dir.display()))?;
    }
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut partitions, mut segments, mut checked, mut damaged) = (0, 0, 0u64, 0);
    for dir in &dirs {
        let report = verify_log_dir(dir, |n| bar.inc(n))
            .with_context(|| format!("verifying {}", dir.display()))?;
        partitions += report.partitions;
        segments += report.segments;
        checked += report.bytes_checked;
        for d in &report.damage {
            damaged += 1;
            bar.suspend(|| {
                println!(
                    "DAMAGED {} offset {} ({} byte {}): {}; {} bytes from there on are not served",
                    d.partition,
                    d.offset,
                    d.segment.display(),
                    d.position,
                    d.reason,
                    d.bytes_lost
                )
            });
            error!(partition = %d.partition, offset = d.offset, segment = %d.segment.display(), position = d.position, reason = %d.reason, "damaged log");
        }
        for e in &report.epoch_files {
            // A `leader-epoch` file that does not decode keeps its partition from opening;
            // entries outside the log are fitted by the next open.
            if !e.repaired_at_open {
                damaged += 1;
                error!(partition = %e.partition, file = %e.path.display(), detail = %e.detail, "damaged leader-epoch file");
            }
            bar.suspend(|| {
                if e.repaired_at_open {
                    println!("epochs {} ({}): {}", e.partition, e.path.display(), e.detail);
                } else {
                    println!(
                        "DAMAGED {} ({}): {}; the partition does not open until the file is restored or removed (removing it forgets the epoch history)",
                        e.partition,
                        e.path.display(),
                        e.detail
                    );
                }
            });
        }
        for t in &report.unflushed_tails {
            bar.suspend(|| {
                println!(
                    "tail {} offset {} ({} byte {}): {}; never acknowledged durable, the next start cuts it",
                    t.partition,
                    t.offset,
                    t.segment.display(),
                    t.position,
                    t.reason
                )
            });
        }
    }
    bar.finish_and_clear();
    let summary = format!(
        "verified {} in {} data dir(s): {partitions} partitions, {segments} segments, {checked} bytes of valid batches",
        data_dir.display(),
        dirs.len()
    );
    if damaged > 0 {
        bail!("{summary}; {damaged} damaged place(s) listed above");
    }
    println!("{summary}; no damage");
    info!("{summary}; no damage");
    Ok(())
}
