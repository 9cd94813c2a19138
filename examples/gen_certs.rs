//! Makes a small private PKI for a TLS cluster, offline (rcgen): a CA, one server certificate
//! per node name (valid for the name, `localhost` and 127.0.0.1, usable as the node's client
//! certificate on its links too), and a client certificate for the CLI.
//!
//! ```sh
//! cargo run --example gen_certs -- DIR [NODE ...]   # default nodes: controller broker1 broker2 broker3
//! ```
//!
//! Writes `DIR/ca.pem`, `DIR/NODE.pem` + `DIR/NODE.key` per node, `DIR/client.pem` +
//! `DIR/client.key` (CN `weir-cli`), valid for a year. The CA's key is not kept: to add a node
//! later, make a new set. For tests and a cluster on one machine, not a production CA.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().context("usage: gen_certs DIR [NODE ...]")?);
    let mut nodes: Vec<String> = args.collect();
    if nodes.is_empty() {
        nodes = ["controller", "broker1", "broker2", "broker3"]
            .map(String::from)
            .to_vec();
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let year = time::Duration::days(365);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "weir local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + year;
    let ca_key = KeyPair::generate()?;
    write(&dir, "ca.pem", &ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let leaf = |name: &str, sans: Vec<String>| -> anyhow::Result<()> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + year;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write(&dir, &format!("{name}.pem"), &cert.pem())?;
        write(&dir, &format!("{name}.key"), &key.serialize_pem())
    };
    for node in &nodes {
        leaf(
            node,
            vec![node.clone(), "localhost".into(), "127.0.0.1".into()],
        )?;
    }
    leaf("weir-cli", vec!["weir-cli".into()])?;
    std::fs::rename(dir.join("weir-cli.pem"), dir.join("client.pem"))?;
    std::fs::rename(dir.join("weir-cli.key"), dir.join("client.key"))?;
    println!(
        "wrote {}: ca.pem, {} and client.pem/.key",
        dir.display(),
        nodes
            .iter()
            .map(|n| format!("{n}.pem/.key"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
