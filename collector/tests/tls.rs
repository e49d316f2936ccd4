//! HTTPS: the collector serves TLS from PEM files; an uploader that trusts the certificate
//! uploads and queries, plain HTTP to the TLS port gets nowhere. The certificate is made by
//! the `openssl` command at test time; without it the test skips with a message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use collector::{fixtures, Server, TlsFiles};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use uploader::protocol;

/// Makes a CA and a server certificate for 127.0.0.1 signed by it; returns the server's
/// files and the CA certificate, or `None` without openssl.
fn certificates(dir: &Path) -> Option<(TlsFiles, PathBuf)> {
    let run = |args: &[&str]| -> Option<()> {
        match Command::new("openssl").current_dir(dir).args(args).output() {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => {
                eprintln!(
                    "SKIPPED: the openssl command is not installed; cannot make test certificates"
                );
                None
            }
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "1",
            "-subj",
            "/CN=seglog test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    ]
    .concat())?;
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ])?;
    Some((
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        },
        dir.join("ca.pem"),
    ))
}

fn agent_trusting(cert: &Path) -> ureq::Agent {
    let roots: Vec<ureq::tls::Certificate<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| ureq::tls::Certificate::from_der(c.unwrap().as_ref()).to_owned())
        .collect();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn uploads_and_queries_work_over_https_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some((tls, ca)) = certificates(dir.path()) else {
        return;
    };
    let mut cfg = common::config(dir.path());
    cfg.tls = Some(tls);
    cfg.tokens = vec!["t0ken".into()];
    let server = Server::start(cfg).unwrap();
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let agent = agent_trusting(&ca);

    let p = fixtures::private_id(1);
    let b = fixtures::batch(&p, 0, 10, "1");
    let (s, ack) = common::json_response(
        agent
            .post(&format!("{}{}", server.url(), fixtures::path(&p)))
            .header("Content-Type", protocol::CONTENT_TYPE)
            .header("Content-Encoding", "zstd")
            .header(protocol::HEADER_BATCH_ID, &b.id().to_hex())
            .header("Authorization", "Bearer t0ken")
            .send(&fixtures::body(&b)[..]),
    );
    assert_eq!((s, &ack["records"]), (200, &serde_json::json!(10)), "{ack}");
    let (s, v) = common::json_response(agent.get(&format!("{}/api/records", server.url())).call());
    assert_eq!(s, 200);
    assert_eq!(v["records"].as_array().unwrap().len(), 10);

    // Plain HTTP to the TLS port does not get an answer from the application.
    let plain = ureq::get(&format!("http://{}/healthz", server.local_addr())).call();
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the certificate fails the handshake.
    assert!(ureq::get(&format!("{}/healthz", server.url()))
        .call()
        .is_err());
    server.shutdown().unwrap();
}

#[test]
fn a_missing_or_mismatched_key_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some((tls, _)) = certificates(dir.path()) else {
        return;
    };
    let mut cfg = common::config(dir.path());
    cfg.tls = Some(TlsFiles {
        cert: tls.cert.clone(),
        key: dir.path().join("missing.pem"),
    });
    let e = Server::start(cfg).unwrap_err();
    assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
    let other = tempfile::tempdir().unwrap();
    let (tls2, _) = certificates(other.path()).unwrap();
    let mut cfg = common::config(dir.path());
    cfg.tls = Some(TlsFiles {
        cert: tls.cert,
        key: tls2.key,
    });
    let e = Server::start(cfg).unwrap_err();
    assert!(format!("{e:#}").contains("do not match"), "{e:#}");
}
