//! Running the real `weir` CLI against a test broker: shared by the CLI test files.

#![allow(dead_code)] // Each test file uses its own subset.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use weir_testkit::BrokerProcess;

pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// `weir --broker <broker> <args>`, ignoring any WEIR_BROKER of the environment.
pub fn weir(broker: &BrokerProcess, args: &[&str]) -> Command {
    let mut cmd = Command::new(WEIR);
    cmd.arg("--broker").arg(broker.host_port()).args(args);
    cmd.env_remove("WEIR_BROKER");
    cmd
}

/// Runs `weir` with `stdin` piped in; its whole output.
pub fn run(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    let mut child = weir(broker, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("weir output")
}

/// The stdout of a run that must have succeeded.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "weir failed ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}
