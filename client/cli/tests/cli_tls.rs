//! The CLI over TLS, against the real binaries with certificates made at test time: the global
//! `--tls-ca`/`--tls-cert`/`--tls-key` flags (and their `WEIR_TLS_*` variables) produce and
//! consume through a broker requiring mutual TLS, and a missing client certificate or CA is
//! refused with a message that says what to do.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use weir_testkit::{BrokerProcess, broker_bin, temp_data_dir};

mod common;
use common::{ok, run, weir};

/// Writes `ca.pem`, `server.pem`/`server.key` (127.0.0.1, localhost) and
/// `client.pem`/`client.key` into `dir`.
fn make_pki(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cli test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    for (name, sans, cn) in [
        (
            "server",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            "broker",
        ),
        ("client", vec!["cli.internal".to_owned()], "cli-user"),
    ] {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[test]
fn the_cli_produces_and_consumes_over_mutual_tls_and_explains_refusals() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let file = |name: &str| pki.path().join(name).display().to_string();
    let dir = temp_data_dir();
    let broker = BrokerProcess::start(
        &broker_bin(),
        dir.path(),
        &[
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-client-ca-file",
            &file("ca.pem"),
        ],
    );
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let flags = [
        "--tls-ca",
        ca.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    let with_flags = |args: &[&str]| -> Vec<String> {
        flags.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let args = with_flags(&["topic", "create", "secure", "--partitions", "1"]);
    ok(run(
        &broker,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "",
    ));
    let input: String = (0..50).map(|i| format!("line {i}\n")).collect();
    let args = with_flags(&["produce", "secure"]);
    ok(run(
        &broker,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &input,
    ));

    // The same settings from the environment.
    let out = weir(&broker, &["consume", "secure", "--count", "50"])
        .env("WEIR_TLS_CA", &ca)
        .env("WEIR_TLS_CERT", &cert)
        .env("WEIR_TLS_KEY", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input);

    // No client certificate: refused, and told which flags to pass.
    let out = run(&broker, &["--tls-ca", &ca, "topic", "list"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    // No TLS at all: refused.
    let out = run(&broker, &["topic", "list"], "");
    assert!(!out.status.success());
    // (Usually with "the port expects TLS ... --tls-ca"; see security_tls.rs for when HTTP/2
    // only reports a closed connection.)
}
