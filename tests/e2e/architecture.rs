//! The dependency rules of ARCHITECTURE.md, checked against `cargo metadata` and `cargo tree`:
//! a crate may depend only on the workspace crates below it in the pipeline, the collector
//! never on a device crate, and the device binary links no server stack.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    c
}

/// Workspace package -> the workspace packages it names as normal or build dependencies.
fn workspace_deps() -> BTreeMap<String, Vec<String>> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkgs = meta["packages"].as_array().unwrap();
    let members: Vec<String> = pkgs
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    pkgs.iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|n| members.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Each crate and the workspace crates it may depend on (ARCHITECTURE.md, "Dependency
/// rules"). A crate missing here fails the test: a new crate states its place.
const ALLOWED: &[(&str, &[&str])] = &[
    ("segment-log", &[]),
    ("config-layers", &[]),
    ("records", &["segment-log"]),
    ("protocol", &["segment-log"]),
    ("otlp", &["segment-log", "records", "protocol"]),
    ("recorder", &["segment-log", "records", "config-layers"]),
    (
        "uploader",
        &[
            "segment-log",
            "records",
            "protocol",
            "otlp",
            "config-layers",
            "recorder",
        ],
    ),
    (
        "journal",
        &[
            "segment-log",
            "records",
            "config-layers",
            "recorder",
            "uploader",
        ],
    ),
    ("capi", &["records", "config-layers", "recorder"]),
    (
        "collector",
        &[
            "segment-log",
            "records",
            "protocol",
            "otlp",
            "config-layers",
        ],
    ),
    (
        "seglog",
        &[
            "segment-log",
            "config-layers",
            "recorder",
            "uploader",
            "journal",
            "collector",
        ],
    ),
    ("seglog-benches", &["segment-log"]),
    (
        "fleet-sim",
        &["segment-log", "recorder", "uploader", "collector"],
    ),
];

#[test]
fn every_crate_depends_only_on_the_crates_below_it() {
    let deps = workspace_deps();
    let mut broken = Vec::new();
    for (name, uses) in &deps {
        let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| n == name) else {
            broken.push(format!(
                "{name}: not in ARCHITECTURE.md's rules (add it to ALLOWED here)"
            ));
            continue;
        };
        for d in uses {
            if !allowed.contains(&d.as_str()) {
                broken.push(format!("{name} -> {d}: not allowed"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n{}",
        broken.join("\n")
    );
}

/// The crates linked into `seglog` built as for a device (`--no-default-features`),
/// proc-macros excluded (they run at build time only).
fn device_crates() -> Vec<String> {
    linked_crates(&["--no-default-features"])
}

/// The crates linked into `seglog` built with `features`.
fn linked_crates(features: &[&str]) -> Vec<String> {
    let out = cargo()
        .args(["tree", "-p", "seglog"])
        .args(features)
        .args([
            "-e",
            "normal,no-proc-macro",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_device_binary_links_no_server_stack() {
    let crates = device_crates();
    for server in [
        "collector",
        "axum",
        "axum-server",
        "hyper",
        "h2",
        "tokio",
        "rusqlite",
        "libsqlite3-sys",
        "postgres",
        "tokio-postgres",
    ] {
        assert!(
            !crates.iter().any(|c| c == server),
            "the device build links {server}"
        );
    }
    eprintln!("device build links {} crates", crates.len());
    // Issue 12's budget for the device binary (BENCHMARKS.md, "Footprint"): a new
    // dependency that breaks it is a decision to make in the open, not by accident.
    assert!(
        crates.len() <= 80,
        "the device build links {} crates (budget 80): {crates:?}",
        crates.len()
    );
    // The check sees what it looks for: the default build (with the collector) has them.
    let full = linked_crates(&[]);
    assert!(full.iter().any(|c| c == "axum") && full.iter().any(|c| c == "rusqlite"));
}
