//! Failover mode: a local cluster, one partition with replication factor 3 and min ISR 2, an
//! `acks=all` producer sending at `--rate` the whole time. `--kills` times: SIGKILL the broker
//! leading the partition, and measure the time from the kill to the first acknowledgment after
//! it (what a producer sees of the outage); then restart the killed broker and wait until it
//! is back in the in-sync set (and `--settle-ms` more) before the next kill.
//!
//! No new leader can be chosen before the dead one's broker lease lapses at the controller, so
//! the figure is dominated by the lease: it is printed beside it, and the ratio. Answers the
//! dead leader had already written to its socket can still be read just after the kill; acks
//! within [`STALE`] of the kill are counted as those (far below any lease), not as recovery.
//! The producer retries with at most [`RETRY_BACKOFF_MAX`] between tries, so its backoff adds
//! at most that much to the figure.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use weir_client::{Acks, DeliveryFuture, ProducerConfig, ProducerRecord};

use crate::cluster::{self, Cluster};
use crate::weir_run::{self, Workload};

/// Acks this soon after a kill are the dead leader's own (already on the wire).
const STALE: Duration = Duration::from_millis(100);
const RETRY_BACKOFF: Duration = Duration::from_millis(10);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// A watchdog for each wait (a stuck failover fails the run, it is not a figure).
const WATCHDOG: Duration = Duration::from_secs(120);

pub struct Settings {
    pub bin: PathBuf,
    pub brokers: u32,
    pub replication_factor: u32,
    pub min_insync_replicas: u32,
    pub lease: Duration,
    pub replica_lag: Duration,
    pub broker_args: Vec<String>,
    pub kills: u32,
    pub settle: Duration,
    pub workload: Workload,
}

/// What the producer side saw: the time of every acknowledgment, and the failures.
#[derive(Default)]
struct Acked {
    at: Vec<Instant>,
    total: u64,
    failed: u64,
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let mut cluster =
        Cluster::start(&s.bin, s.brokers, s.lease, s.replica_lag, &s.broker_args).await?;
    let mut w = s.workload.clone();
    w.partitions = 1;
    w.replication_factor = Some(s.replication_factor);
    w.min_insync_replicas = Some(s.min_insync_replicas);
    weir_run::create_topic(&cluster.bootstrap(), &w).await?;
    let client = cluster.client().await?;
    let replicas = s.replication_factor as usize;
    let in_sync = |client: &weir_client::Client| {
        let client = client.clone();
        let topic = w.topic.clone();
        async move {
            cluster::describe(&client, &topic).await.is_some_and(|t| {
                t.partitions[0].isr.len() == replicas && t.partitions[0].leader_alive
            })
        }
    };
    cluster::wait_for("the full ISR", WATCHDOG, || in_sync(&client)).await?;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let producer = tokio::spawn(produce(
        cluster.bootstrap(),
        w.clone(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));
    // Acks flowing before the first kill.
    wait_acked_after(&acked, Instant::now(), WATCHDOG).await?;

    let bar = crate::progress(u64::from(s.kills), "kills");
    let (mut to_ack, mut to_leader, mut to_rejoin) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..s.kills {
        let before = cluster::describe(&client, &w.topic)
            .await
            .context("describing the topic")?;
        let (leader, epoch) = (
            before.partitions[0].leader_id,
            before.partitions[0].leader_epoch,
        );
        acked.lock().expect("not poisoned").at.clear();
        let killed = Instant::now();
        cluster.kill(leader);
        // The first ack after the kill, and when the cluster names a new leader.
        let mut new_leader = None;
        let deadline = killed + WATCHDOG;
        let first_ack = loop {
            if new_leader.is_none()
                && cluster::describe(&client, &w.topic).await.is_some_and(|t| {
                    let p = &t.partitions[0];
                    p.leader_epoch > epoch && p.leader_id != leader && p.leader_alive
                })
            {
                new_leader = Some(killed.elapsed());
            }
            if let Some(at) = first_acked_after(&acked, killed + STALE) {
                break at;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no acknowledgment within {WATCHDOG:?} of killing broker {leader}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        to_ack.push(first_ack.duration_since(killed));
        if let Some(elected) = new_leader {
            to_leader.push(elected);
        }
        let restarted = Instant::now();
        cluster.restart(leader);
        cluster::wait_for("the restarted broker back in the ISR", WATCHDOG, || {
            in_sync(&client)
        })
        .await?;
        to_rejoin.push(restarted.elapsed());
        tracing::info!(
            kill = to_ack.len(),
            killed = leader,
            new_leader_ms = new_leader.map(|d| d.as_millis() as u64),
            first_ack_ms = first_ack.duration_since(killed).as_millis() as u64,
            back_in_sync_ms = restarted.elapsed().as_millis() as u64,
            "leader killed"
        );
        bar.inc(1);
        tokio::time::sleep(s.settle).await;
    }
    bar.finish_and_clear();
    stop.notify_one();
    producer.await??;
    let (total, failed) = {
        let acked = acked.lock().expect("not poisoned");
        (acked.total, acked.failed)
    };

    let lease_ms = s.lease.as_millis() as f64;
    let ack = summary(&to_ack);
    let mut ratios = serde_json::Map::new();
    for q in ["p50", "p99", "max"] {
        if let Some(ms) = ack[q].as_f64() {
            ratios.insert(format!("{q}/lease"), json!(crate::round(ms / lease_ms)));
        }
    }
    let line = json!({
        "mode": "failover",
        "workload": {
            "record_bytes": w.record_bytes,
            "rate": w.rate,
            "batch_bytes": w.batch_bytes,
            "linger_ms": w.linger.as_millis() as u64,
            "acks": "all",
            "idempotent": w.idempotent,
            "cluster": s.brokers,
            "replication_factor": s.replication_factor,
            "min_insync_replicas": s.min_insync_replicas,
            "broker_lease_ms": s.lease.as_millis() as u64,
            "replica_lag_ms": s.replica_lag.as_millis() as u64,
            "retry_backoff_max_ms": RETRY_BACKOFF_MAX.as_millis() as u64,
            "kills": s.kills,
            "settle_ms": s.settle.as_millis() as u64,
        },
        "weir": {
            "kill_to_ack_ms": ack,
            "kill_to_new_leader_ms": summary(&to_leader),
            "restart_to_in_sync_ms": summary(&to_rejoin),
            "acknowledged": total,
            "failed_deliveries": failed,
        },
        "baselines": { "broker_lease_ms": s.lease.as_millis() as u64 },
        "ratios": ratios,
    });
    println!("{line}");
    Ok(())
}

/// Sends at `w.rate` records/s with acks=all until `stop`; every delivery's outcome lands in
/// `acked` (in send order, which is also acknowledgment order on one partition).
async fn produce(
    grpc: String,
    w: Workload,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let producer = crate::connect(&grpc).await?.producer(ProducerConfig {
        acks: Acks::All,
        retries: u32::MAX,
        retry_backoff: RETRY_BACKOFF,
        retry_backoff_max: RETRY_BACKOFF_MAX,
        delivery_timeout: Duration::from_secs(600),
        ..weir_run::producer_config(&w)
    })?;
    let (tx, mut rx) = mpsc::unbounded_channel::<DeliveryFuture>();
    let waiter = {
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let outcome = delivery.await;
                let mut acked = acked.lock().expect("not poisoned");
                match outcome {
                    Ok(_) => {
                        acked.at.push(Instant::now());
                        acked.total += 1;
                    }
                    Err(e) => {
                        acked.failed += 1;
                        tracing::warn!(error = %e, "a delivery failed");
                    }
                }
            }
        })
    };
    let value = bytes::Bytes::from(vec![0x5a_u8; w.record_bytes]);
    let topic: std::sync::Arc<str> = w.topic.as_str().into();
    let started = Instant::now();
    let mut sent = 0u64;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let due = (started.elapsed().as_secs_f64() * w.rate as f64) as u64;
        while sent < due {
            let record = ProducerRecord::new(topic.clone()).value(value.clone());
            let _ = tx.send(producer.send(record).await?);
            sent += 1;
        }
        tokio::select! {
            () = &mut stopped => break,
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    drop(tx);
    producer.flush().await?;
    waiter.await?;
    Ok(())
}

/// The first acknowledgment after `t`, if one came.
fn first_acked_after(acked: &Mutex<Acked>, t: Instant) -> Option<Instant> {
    let acked = acked.lock().expect("not poisoned");
    let i = acked.at.partition_point(|at| *at <= t);
    acked.at.get(i).copied()
}

async fn wait_acked_after(acked: &Mutex<Acked>, t: Instant, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while first_acked_after(acked, t).is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no acknowledgment within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// p50, p99, min and max of `times` in milliseconds (nearest rank).
fn summary(times: &[Duration]) -> Value {
    if times.is_empty() {
        return json!(null);
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for t in times {
        h.saturating_record(t.as_micros() as u64);
    }
    let ms = |us: u64| crate::round(us as f64 / 1000.0);
    json!({
        "n": times.len(),
        "p50": ms(h.value_at_quantile(0.5)),
        "p99": ms(h.value_at_quantile(0.99)),
        "min": ms(h.min()),
        "max": ms(h.max()),
    })
}
