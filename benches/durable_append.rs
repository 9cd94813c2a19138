//! Durable appends and group commit: 1, 8 and 64 threads calling `append_durable` (each call
//! returns only after its batch is fdatasynced; concurrent calls share syncs) against the
//! baseline of `write()` + `fdatasync()` per batch from the same number of threads sharing one
//! file, in the same run. Throughput is in batches (1 KiB each).
//!
//! `cargo bench --bench durable_append`; the target is 64 appenders >= 8x one appender.

mod support;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::*;
use weir_storage::{LogDir, PartitionLog, TopicPartition};

/// Runs `per_thread(i)` on `threads` threads at once; returns the wall time.
fn concurrently(threads: usize, per_thread: impl Fn(usize) + Send + Sync + 'static) -> Duration {
    let per_thread = Arc::new(per_thread);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (f, barrier) = (Arc::clone(&per_thread), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                f(i);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

fn durable(c: &mut Criterion) {
    let batch = batch_of(200, 1 << 10);
    let mut group = c.benchmark_group("durable-append/1KiB-batches");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, _) = LogDir::open(dir.path(), bench_dir_config(bench_log_config())).expect("open");
    let log: Arc<PartitionLog> = logs
        .create_partition(TopicPartition::validated("bench", 0).expect("name"), None)
        .expect("partition");
    let baseline: Arc<File> = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("baseline.log"))
            .expect("baseline file"),
    );
    for appenders in [1usize, 8, 64] {
        group.bench_function(BenchmarkId::new("weir-group-commit", appenders), |b| {
            b.iter_custom(|iters| {
                let per = (iters as usize).div_ceil(appenders);
                let (log, batch) = (Arc::clone(&log), batch.clone());
                let wall = concurrently(appenders, move |_| {
                    for _ in 0..per {
                        log.append_durable(&batch).expect("durable append");
                    }
                });
                wall.mul_f64(iters as f64 / (per * appenders) as f64)
            })
        });
        group.bench_function(
            BenchmarkId::new("baseline-write-fdatasync", appenders),
            |b| {
                b.iter_custom(|iters| {
                    let per = (iters as usize).div_ceil(appenders);
                    let (file, batch) = (Arc::clone(&baseline), batch.clone());
                    let wall = concurrently(appenders, move |_| {
                        for _ in 0..per {
                            (&*file).write_all(&batch).expect("write");
                            file.sync_data().expect("fdatasync");
                        }
                    });
                    wall.mul_f64(iters as f64 / (per * appenders) as f64)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, durable);
criterion_main!(benches);
