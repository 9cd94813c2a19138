//! A local cluster this bench starts itself (`--cluster N`): a controller and N brokers, each a
//! `weir-broker` process on free loopback ports over its own temp data dir, the way
//! `broker/tests/replication_processes.rs` starts one. Clients bootstrap from the controller;
//! every broker's CPU time can be sampled, and a broker can be SIGKILLed and restarted (on the
//! same addresses and data dir) for the failover mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir_client::{Client, TopicDescription};
use weir_testkit::BrokerProcess;

use crate::broker::CpuClock;

/// Node id of the controller (brokers are 1..=N).
const CONTROLLER_ID: &str = "100";

/// A controller and its brokers. Fields drop in order: brokers before the controller.
pub struct Cluster {
    brokers: Vec<BrokerProcess>,
    controller: BrokerProcess,
    /// The broker lease the controller was started with.
    pub lease: Duration,
    _dirs: Vec<tempfile::TempDir>,
}

/// The broker binary: `bin`, or `weir-broker` next to this executable.
pub fn broker_bin(bin: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match bin {
        Some(bin) => bin,
        None => std::env::current_exe()?
            .parent()
            .context("the bench's directory")?
            .join("weir-broker"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (`cargo build --release -p weir-broker`) or pass --broker-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn data_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("weir-bench-cluster-")
        .tempdir()?)
}

impl Cluster {
    /// Starts the controller (with `lease`) and `brokers` brokers (`extra_args` go to each
    /// broker), then waits until the controller sees them all alive.
    pub async fn start(
        bin: &Path,
        brokers: u32,
        lease: Duration,
        replica_lag: Duration,
        extra_args: &[String],
    ) -> anyhow::Result<Cluster> {
        anyhow::ensure!(brokers >= 1, "--cluster needs at least one broker");
        let lease_ms = lease.as_millis().to_string();
        let lag_ms = replica_lag.as_millis().to_string();
        let mut dirs = vec![data_dir()?];
        // BrokerProcess waits (blocking) for each ready line.
        let controller = tokio::task::block_in_place(|| {
            BrokerProcess::start(
                bin,
                dirs[0].path(),
                &[
                    "--role",
                    "controller",
                    "--node-id",
                    CONTROLLER_ID,
                    "--broker-lease-ms",
                    &lease_ms,
                ],
            )
        });
        let controller_addr = controller.host_port();
        let mut started = Vec::new();
        for id in 1..=brokers {
            dirs.push(data_dir()?);
            let node = id.to_string();
            let mut args: Vec<&str> = vec![
                "--role",
                "broker",
                "--node-id",
                &node,
                "--controller",
                &controller_addr,
                "--replica-lag-time-max-ms",
                &lag_ms,
            ];
            args.extend(extra_args.iter().map(String::as_str));
            let dir = dirs.last().expect("just pushed").path().to_owned();
            started.push(tokio::task::block_in_place(|| {
                BrokerProcess::start(bin, &dir, &args)
            }));
        }
        let cluster = Cluster {
            brokers: started,
            controller,
            lease,
            _dirs: dirs,
        };
        let client = cluster.client().await?;
        wait_for(
            &format!("{brokers} brokers alive"),
            Duration::from_secs(60),
            || async {
                client
                    .admin()
                    .describe_cluster()
                    .await
                    .is_ok_and(|c| c.brokers.iter().filter(|b| b.alive).count() == brokers as usize)
            },
        )
        .await?;
        Ok(cluster)
    }

    /// Where clients bootstrap: the controller's gRPC address.
    pub fn bootstrap(&self) -> String {
        self.controller.host_port()
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        crate::connect(&self.bootstrap())
            .await
            .context("connecting to the cluster's controller")
    }

    /// The brokers' node ids, 1..=N.
    pub fn ids(&self) -> impl Iterator<Item = u32> + use<> {
        1..=self.brokers.len() as u32
    }

    /// CPU clock of broker `id` (its current process).
    pub fn cpu(&self, id: u32) -> CpuClock {
        CpuClock::of(self.brokers[id as usize - 1].pid())
    }

    pub fn controller_cpu(&self) -> CpuClock {
        CpuClock::of(self.controller.pid())
    }

    /// SIGKILLs broker `id` and reaps it (a crash: no flush, no clean shutdown).
    pub fn kill(&mut self, id: u32) {
        self.brokers[id as usize - 1].kill();
    }

    /// Starts broker `id` again over its data dir, on its addresses; waits for its ready line.
    pub fn restart(&mut self, id: u32) {
        let broker = &mut self.brokers[id as usize - 1];
        tokio::task::block_in_place(|| broker.restart());
    }
}

/// `topic` as the cluster describes it, if it can.
pub async fn describe(client: &Client, topic: &str) -> Option<TopicDescription> {
    client.admin().describe_topic(topic).await.ok()
}

/// Polls `condition` every 20 ms until it holds; an error after `limit` (a watchdog, not a
/// measurement).
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
