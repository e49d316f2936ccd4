//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temp dir, the
//! server listening on 127.0.0.1 on a free port with its socket inside that dir. As root (CI)
//! both run as the `postgres` user, which owns the dir. The server stops when the
//! [`PgServer`] drops, and also when this process dies however it dies: it runs under a
//! shell that stops it (fast shutdown) and deletes its directory once its stdin, a pipe from this
//! process, closes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The directory of `initdb` and `postgres`: `$SEGLOG_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin` that has them.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SEGLOG_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program` run as the `postgres` user when this process is root (PostgreSQL refuses to
/// run as root), else as this user.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    /// Starts a server with `settings` (`-c` options, e.g. `fsync=off` for tests).
    pub fn start(settings: &[&str]) -> Result<PgServer, String> {
        let bin = bin_dir().ok_or("no PostgreSQL (no /usr/lib/postgresql/*/bin/initdb)")?;
        let dir = tempfile::Builder::new()
            .prefix("seglog-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        if is_root() {
            let st = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown postgres {}: {st}", dir.path().display()));
            }
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "seglog",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port().map_err(|e| format!("free port: {e}"))?;
        let mut cmd = vec![
            bin.join("postgres").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-k".into(),
            dir.path().display().to_string(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
        ];
        for s in settings {
            cmd.push("-c".into());
            cmd.push((*s).to_owned());
        }
        let quoted: Vec<String> = cmd.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "{} >'{d}/log' 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf '{d}'",
            quoted.join(" "),
            d = dir.path().display()
        );
        let child = as_pg_user(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let server = PgServer {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&server.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => {
                    let log =
                        std::fs::read_to_string(server._dir.path().join("log")).unwrap_or_default();
                    return Err(format!("postgres did not come up: {e}\n{log}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// CPU seconds (user + system) the server has used so far: its postmaster, the
    /// backends it has reaped and those still running (Linux `/proc`, 100 ticks per second);
    /// `None` when they cannot be read. For benchmarks on a shared machine, where the wall
    /// clock says little.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pidfile = std::fs::read_to_string(self._dir.path().join("data/postmaster.pid")).ok()?;
        let postmaster: u32 = pidfile.lines().next()?.trim().parse().ok()?;
        // Fields after the command name: state is 0, ppid 1, utime 11, stime 12, cutime 13,
        // cstime 14.
        let fields = |pid: &str| -> Option<Vec<i64>> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit(')').next()?;
            Some(
                after
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect(),
            )
        };
        let f = fields(&postmaster.to_string())?;
        let mut ticks: i64 = f.get(11..15)?.iter().sum();
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some(f) = fields(pid) {
                if f.get(1) == Some(&i64::from(postmaster)) {
                    ticks += f.get(11..13).map_or(0, |t| t.iter().sum());
                }
            }
        }
        Some(ticks as f64 / 100.0)
    }

    /// The URL of database `db` (user `seglog`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://seglog@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("connect: {e}"))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        Ok(self.url(&name))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}

/// One server shared by every test of this process (fsync off: tests do not cut power),
/// started on first use; `None`, after printing "SKIPPED: ..." once, when PostgreSQL is not
/// installed. A server that fails to start is a test failure, not a skip.
pub fn shared() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if bin_dir().is_none() {
                eprintln!(
                    "SKIPPED: the PostgreSQL backend tests: PostgreSQL is not installed (no \
                     /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql, or set \
                     SEGLOG_PG_BIN)"
                );
                return None;
            }
            // Every collector a test starts holds a writer and a few reader connections.
            match PgServer::start(&[
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=300",
            ]) {
                Ok(s) => Some(s),
                Err(e) => panic!("starting PostgreSQL for the tests: {e}"),
            }
        })
        .as_ref()
}

/// A fresh database on the [`shared`] server.
pub fn fresh_database() -> Option<String> {
    shared().map(|s| match s.create_database() {
        Ok(url) => url,
        Err(e) => panic!("creating a test database: {e}"),
    })
}

/// A test database of one backend: SQLite in a temp dir, or a fresh PostgreSQL database.
#[derive(Debug)]
pub enum TestDb {
    /// SQLite in this directory.
    Sqlite(tempfile::TempDir),
    /// PostgreSQL at this URL.
    Postgres(String),
}

impl TestDb {
    /// The backend's name, for test output.
    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres(_) => "postgres",
        }
    }

    /// The database, as `[collector]` would name it.
    pub fn database(&self) -> crate::store::Database {
        match self {
            TestDb::Sqlite(d) => crate::store::Database::Sqlite(d.path().to_path_buf()),
            TestDb::Postgres(url) => crate::store::Database::Postgres(url.clone()),
        }
    }

    /// Opens (again) the store with default limits.
    pub fn open(&self) -> crate::store::Store {
        self.open_with(crate::store::WriterLimits::default())
    }

    /// Opens (again) the store with `limits`.
    pub fn open_with(&self, limits: crate::store::WriterLimits) -> crate::store::Store {
        match crate::store::Store::open_database(&self.database(), limits) {
            Ok(s) => s,
            Err(e) => panic!("opening the {} test store: {e}", self.name()),
        }
    }

    /// Points `cfg` at this database.
    pub fn configure(&self, cfg: &mut crate::ServerConfig) {
        match self {
            TestDb::Sqlite(d) => cfg.data_dir = d.path().to_path_buf(),
            TestDb::Postgres(url) => cfg.postgres = Some(url.clone()),
        }
    }
}

/// A fresh database of each backend: SQLite always, PostgreSQL when installed (else
/// "SKIPPED: ..." is printed once).
pub fn test_dbs() -> Vec<TestDb> {
    let mut v = vec![TestDb::Sqlite(match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    })];
    if let Some(url) = fresh_database() {
        v.push(TestDb::Postgres(url));
    }
    v
}

/// Runs `f` against a fresh database of each backend (see [`test_dbs`]).
pub fn each_backend(f: impl Fn(&TestDb)) {
    for db in test_dbs() {
        eprintln!("-- backend {}", db.name());
        f(&db);
    }
}
