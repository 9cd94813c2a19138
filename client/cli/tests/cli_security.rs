//! `weir user` and `weir acl` against a broker requiring tokens and enforcing ACLs: the
//! bootstrap user creates a user (its token printed once on stdout), grants it an ACL, and the
//! CLI explains a missing token and a denied operation.

use weir_testkit::{BrokerProcess, broker_bin, temp_data_dir};

mod common;
use common::{ok, run};

const ADMIN: &str = "weir_admin_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn users_acls_and_the_messages_for_a_bad_token_and_a_denial() {
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        &broker_bin(),
        dir.path(),
        &[
            "--authentication",
            "token",
            "--authorization",
            "true",
            "--super-users",
            "admin",
            "--bootstrap-token",
            ADMIN,
        ],
    );
    let as_admin = |args: &[&str]| {
        let mut all = vec!["--token", ADMIN];
        all.extend_from_slice(args);
        ok(run(&broker, &all, ""))
    };
    // No token: refused, saying how to pass one.
    let refused = run(&broker, &["topic", "list"], "");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("UNAUTHENTICATED") && message.contains("--token"),
        "{message}"
    );

    as_admin(&["topic", "create", "orders", "--partitions", "1"]);
    let token = as_admin(&["user", "create", "alice"]).trim().to_owned();
    assert!(token.starts_with("weir_alice_"), "{token}");
    assert!(as_admin(&["user", "list"]).contains("alice"));

    // Alice may not produce yet: denied, saying what to ask for.
    let denied = run(&broker, &["--token", &token, "produce", "orders"], "x\n");
    assert!(!denied.status.success());
    let message = String::from_utf8_lossy(&denied.stderr);
    assert!(
        message.contains("PERMISSION_DENIED") && message.contains("weir acl add"),
        "{message}"
    );

    as_admin(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "write",
        "--topic",
        "ord",
        "--prefix",
    ]);
    as_admin(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "read",
        "--topic",
        "orders",
    ]);
    let listed = as_admin(&["acl", "list", "--principal", "User:alice"]);
    assert!(
        listed.contains("prefix") && listed.contains("read"),
        "{listed}"
    );
    ok(run(
        &broker,
        &["--token", &token, "produce", "orders"],
        "hello\n",
    ));
    let consumed = ok(run(
        &broker,
        &["--token", &token, "consume", "orders", "--from-beginning"],
        "",
    ));
    assert_eq!(consumed.trim(), "hello");

    let removed = as_admin(&[
        "acl",
        "remove",
        "--principal",
        "User:alice",
        "--operation",
        "write",
    ]);
    assert!(removed.contains("ord"), "{removed}");
    as_admin(&["user", "delete", "alice"]);
    let revoked = run(&broker, &["--token", &token, "topic", "list"], "");
    assert!(!revoked.status.success());
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("UNAUTHENTICATED"));
}
