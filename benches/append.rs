//! Append throughput: `PartitionLog::append` (validate, reserve, copy into the map, index)
//! against the baseline of plain sequential `write()` of the same bytes to a file, in the same
//! run. Both write to the page cache (no sync); both are reset outside the timed region when
//! they pass 1 GiB so the disk does not fill.
//!
//! `cargo bench --bench append`; the target is weir within 1.25x of the baseline's time.

mod support;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::*;
use weir_storage::{LogConfig, LogDir, TopicPartition};

const RESET_AT: u64 = 1 << 30;

fn append(c: &mut Criterion) {
    for batch_bytes in [64 << 10, 1 << 20] {
        let mut group = c.benchmark_group(format!("append/{}-batches", human_bytes(batch_bytes)));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for record_bytes in [100, 1 << 10, 16 << 10] {
            let batch = batch_of(record_bytes, batch_bytes);
            group.throughput(Throughput::Bytes(batch.len() as u64));
            let label = format!("{}-records", human_bytes(record_bytes));

            let dir = tempfile::tempdir().expect("tempdir");
            let config = LogConfig {
                retention_bytes: Some(256 << 20),
                ..bench_log_config()
            };
            let (logs, _) = LogDir::open(dir.path(), bench_dir_config(config)).expect("open");
            let log = logs
                .create_partition(TopicPartition::validated("bench", 0).expect("name"), None)
                .expect("partition");
            group.bench_function(BenchmarkId::new("weir-append", &label), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if log.size_bytes() > RESET_AT {
                            log.roll().expect("roll");
                            log.apply_retention(0).expect("retention");
                        }
                        let start = Instant::now();
                        log.append(&batch).expect("append");
                        elapsed += start.elapsed();
                    }
                    elapsed
                })
            });
            drop(log);
            drop(logs);

            let path = dir.path().join("baseline.log");
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .expect("baseline file");
            let mut written = 0u64;
            group.bench_function(BenchmarkId::new("baseline-write", &label), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        if written > RESET_AT {
                            file.set_len(0).expect("reset");
                            file.seek(SeekFrom::Start(0)).expect("seek");
                            written = 0;
                        }
                        let start = Instant::now();
                        file.write_all(&batch).expect("write");
                        elapsed += start.elapsed();
                        written += batch.len() as u64;
                    }
                    elapsed
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, append);
criterion_main!(benches);
