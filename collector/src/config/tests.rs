//! Tests of `[collector]` parsing and validation.

use std::time::Duration;

use super::*;

#[test]
fn empty_document_resolves_to_the_documented_defaults() {
    let s = CollectorSection::from_toml_str("").unwrap();
    let c = s.resolve(Path::new("/tmp/x")).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8780");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert!(c.tokens.is_empty());
    assert_eq!(c.limits.max_body_bytes, 16 << 20);
    assert_eq!(c.limits.max_decompressed_bytes, 64 << 20);
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert!(!c.is_open_on_network());
}

#[test]
fn every_key_is_read() {
    let doc = r#"
        [collector]
        listen = "0.0.0.0:9000"
        data_dir = "/srv/c"
        tokens = ["a", "b"]
        api_tokens = ["r"]
        tls_cert = "/c.pem"
        tls_key = "/k.pem"
        max_body_bytes = 1000
        max_decompressed_bytes = 2000
        max_records_per_batch = 30
        max_concurrent_uploads = 2
        upload_queue_timeout = "2s"
        max_response_bytes = 4000
        shutdown_grace = "500ms"
    "#;
    let c = CollectorSection::from_toml_str(doc)
        .unwrap()
        .resolve(Path::new("/x"))
        .unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.data_dir, PathBuf::from("/srv/c"));
    assert_eq!(c.tokens, ["a", "b"]);
    assert_eq!(c.api_tokens, ["r"]);
    assert_eq!(
        c.tls,
        Some(TlsFiles {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        })
    );
    assert_eq!(c.limits.max_body_bytes, 1000);
    assert_eq!(c.limits.max_decompressed_bytes, 2000);
    assert_eq!(c.limits.max_records_per_batch, 30);
    assert_eq!(c.limits.max_concurrent_uploads, 2);
    assert_eq!(c.limits.upload_queue_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.max_response_bytes, 4000);
    assert_eq!(c.shutdown_grace, Duration::from_millis(500));
    assert!(!c.is_open_on_network());
}

#[test]
fn the_spec_knows_every_key_and_its_defaults_are_the_built_in_ones() {
    let spec = collector_spec();
    let keys = spec.keys.clone().unwrap();
    assert_eq!(
        keys.len(),
        config_layers::spec::fields::<CollectorSection>().len()
    );
    let (doc, unset) = spec.defaults_document();
    assert_eq!(
        unset,
        [
            "database",
            "token_file",
            "tls_cert",
            "tls_key",
            "forward",
            "retain_days"
        ]
    );
    let c = CollectorSection::from_toml_str(&doc)
        .unwrap()
        .resolve(Path::new("/elsewhere"))
        .unwrap();
    assert_eq!(c, ServerConfig::new(default_data_dir()));
}

#[test]
fn database_selects_postgres_and_anything_else_is_refused_without_echoing_a_password() {
    let c = CollectorSection::from_toml_str(
        "[collector]\ndatabase = \"postgres://seglog@db.example:5432/telemetry\"\n",
    )
    .unwrap()
    .resolve(Path::new("/d"))
    .unwrap();
    assert_eq!(
        c.database(),
        crate::store::Database::Postgres("postgres://seglog@db.example:5432/telemetry".into())
    );
    let e = CollectorSection::from_toml_str(
        "[collector]\ndatabase = \"mysql://u:hunter2@db.example/t\"\n",
    )
    .unwrap()
    .resolve(Path::new("/d"))
    .unwrap_err()
    .to_string();
    assert!(e.contains("database") && e.contains("postgres://"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let d = CollectorSection::from_toml_str("[collector]\n")
        .unwrap()
        .resolve(Path::new("/d"))
        .unwrap();
    assert_eq!(d.database(), crate::store::Database::Sqlite("/d".into()));
}

#[test]
fn a_batch_limit_above_what_the_postgres_store_numbers_is_refused() {
    let doc = |n: u64, db: &str| format!("[collector]\n{db}max_records_per_batch = {n}\n");
    let check = |n: u64, db: &str| {
        CollectorSection::from_toml_str(&doc(n, db))
            .unwrap()
            .resolve(Path::new("/d"))
            .map(drop)
    };
    let pg = "database = \"postgres://seglog@127.0.0.1/t\"\n";
    let max = crate::store::POSTGRES_MAX_BATCH_RECORDS;
    assert!(check(max, pg).is_ok());
    let e = check(max + 1, pg).unwrap_err().to_string();
    assert!(
        e.contains("max_records_per_batch") && e.contains("PostgreSQL"),
        "{e}"
    );
    assert!(check(max + 1, "").is_ok(), "SQLite has no such bound");
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = CollectorSection::from_toml_str("[collector]\nlisten_addr = \"x\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("listen_addr"), "{e:#}");
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    let cases = [
        ("listen = \"nope\"", "listen"),
        ("tls_cert = \"/c\"", "tls_cert and tls_key"),
        ("max_concurrent_uploads = 0", "max_concurrent_uploads"),
        ("shutdown_grace = \"soon\"", "shutdown_grace"),
        ("tokens = [\"has space\"]", "token"),
    ];
    for (line, key) in cases {
        let e = CollectorSection::from_toml_str(&format!("[collector]\n{line}\n"))
            .and_then(|s| s.resolve(Path::new("/x")))
            .unwrap_err();
        assert!(format!("{e:#}").contains(key), "{line}: {e:#}");
    }
}

#[test]
fn sizes_and_durations_take_units() {
    let doc = "[collector]\nmax_body_bytes = \"1MiB\"\nshutdown_grace = 3\n";
    let c = CollectorSection::from_toml_str(doc)
        .unwrap()
        .resolve(Path::new("/x"))
        .unwrap();
    assert_eq!(c.limits.max_body_bytes, 1 << 20);
    assert_eq!(c.shutdown_grace, Duration::from_secs(3));
    let e = CollectorSection::from_toml_str("[collector]\nmax_body_bytes = -1\n")
        .unwrap()
        .resolve(Path::new("/x"))
        .unwrap_err();
    assert!(format!("{e:#}").contains("max_body_bytes"), "{e:#}");
}

#[test]
fn open_uploads_on_a_network_address_are_flagged() {
    let mut c = ServerConfig::new("/x".into());
    c.listen = "0.0.0.0:8780".parse().unwrap();
    assert!(c.is_open_on_network());
    c.tokens.push("t".into());
    assert!(!c.is_open_on_network());
}

#[test]
fn token_file_skips_comments_and_blank_lines() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tokens");
    std::fs::write(&p, "# fleet A\nabc\n\n  def  \n").unwrap();
    assert_eq!(read_token_file(&p).unwrap(), ["abc", "def"]);
}
