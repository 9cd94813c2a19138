//! `weir health`, the container health check, against the real `weir-broker`: exit 0 and
//! `ready` from a serving node's `/readyz`, `ok` from `/healthz` with `--live`, and exit 1 with
//! a message naming the address when nothing listens there.

use std::process::Command;
use std::time::Duration;

use weir_testkit::{BrokerProcess, broker_bin, free_loopback_addr, temp_data_dir};

mod common;
use common::WEIR;

fn health(args: &[&str]) -> std::process::Output {
    Command::new(WEIR)
        .arg("health")
        .args(args)
        .env_remove("WEIR_METRICS")
        .output()
        .expect("run weir health")
}

#[test]
fn health_reports_a_serving_node_ready_and_a_missing_one_not() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    let metrics = broker.metrics_addr.expect("a metrics listener").to_string();
    // The ready line comes just before the node serves: poll until it says so.
    let started = std::time::Instant::now();
    let ready = loop {
        let out = health(&["--metrics", &metrics]);
        if out.status.success() {
            break out;
        }
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never ready: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ready\n");
    let live = health(&["--metrics", &metrics, "--live"]);
    assert!(live.status.success(), "{live:?}");
    assert_eq!(String::from_utf8_lossy(&live.stdout), "ok\n");

    let nobody = free_loopback_addr().to_string();
    let out = health(&["--metrics", &nobody]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {nobody}")),
        "{stderr}"
    );
}
