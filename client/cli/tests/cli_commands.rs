//! The `weir` CLI as a user runs it: the real `weir` and `weir-broker` binaries, pipes, exit
//! codes. (`weir-broker` is found next to this test's binary; `cargo test --workspace` builds it.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_testkit::{BrokerProcess, broker_bin, temp_data_dir};

mod common;
use common::{WEIR, ok, run, weir};

#[test]
fn produce_from_a_pipe_then_consume_as_json_returns_the_same_lines() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    ok(run(
        &broker,
        &["topic", "create", "lines", "--partitions", "3"],
        "",
    ));
    let input: String = (0..500)
        .map(|i| format!("user-{}:event {i}\n", i % 7))
        .collect();
    let produced = run(
        &broker,
        &["produce", "lines", "--key-separator", ":"],
        &input,
    );
    let summary = String::from_utf8_lossy(&produced.stderr).to_string();
    ok(produced);
    assert!(
        summary.contains("500"),
        "summary names the count: {summary}"
    );

    let out = ok(run(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--format",
            "json",
            "--count",
            "500",
        ],
        "",
    ));
    let mut got: Vec<(String, String)> = out
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("one JSON object per line");
            assert_eq!(v["topic"], "lines");
            assert!(v["partition"].as_u64().is_some() && v["offset"].as_u64().is_some());
            assert!(v["timestamp"].as_i64().is_some());
            (
                v["key"].as_str().expect("key").to_owned(),
                v["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = input
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').expect("separator");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // Without --count and -f, consume stops at the end of the data with exit 0; raw prints values.
    let raw = ok(run(&broker, &["consume", "lines"], ""));
    assert_eq!(raw.lines().count(), 500);
    assert!(raw.lines().all(|l| l.starts_with("event ")), "{raw}");
    let template = ok(run(
        &broker,
        &["consume", "lines", "--format", "%k=%v\\n", "--count", "1"],
        "",
    ));
    assert!(
        template.starts_with("user-") && template.ends_with('\n') && template.contains("=event "),
        "{template}"
    );
}

#[test]
fn tail_prints_a_record_produced_after_it_started() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    ok(run(
        &broker,
        &["topic", "create", "live", "--partitions", "2"],
        "",
    ));
    ok(run(&broker, &["produce", "live"], "old record\n"));
    let mut tail = weir(&broker, &["tail", "live"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tail");
    let stdout = tail.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // tail starts at the end, so produce until it shows up (it may not be subscribed yet when
    // the first one lands; it must never print the old record).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let line = loop {
        assert!(Instant::now() < deadline, "tail printed nothing new");
        ok(run(
            &broker,
            &["produce", "live"],
            &format!("new record {n}\n"),
        ));
        n += 1;
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
    };
    assert!(line.starts_with("new record"), "tail printed {line:?}");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn consuming_an_unknown_topic_fails_naming_it() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(&broker_bin(), dir.path(), &[]);
    let out = run(&broker, &["consume", "no-such-topic"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-topic"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let out = Command::new(WEIR)
        .args(["--broker", "127.0.0.1:1", "topic", "list"])
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
