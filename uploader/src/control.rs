//! The daemon's control socket, `<log dir>/upload/control.sock` (mode 0600 in a 0700
//! directory).
//!
//! Protocol: the client writes one JSON line, `{"cmd":"flush"}`, and reads JSON lines until
//! one has `"type":"done"`: zero or more `{"type":"progress", ...}` and
//! `{"type":"retry","message":"..."}` (a failed attempt, as it happens), and then
//! `{"type":"done","ok":bool,"forbidden":bool,"message":"...", ...counts}`. The daemon notes
//! the end of the log when the request arrives; `done` with `ok: true` means everything
//! written before that was acknowledged by the server.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use segment_log::Position;
use serde::{Deserialize, Serialize};

use crate::engine::Progress;

/// A message from the daemon to a flush client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Progress of the pass serving the flush.
    Progress {
        /// Records acknowledged so far.
        records: u64,
        /// Record frame bytes acknowledged so far.
        frame_bytes: u64,
        /// Backlog when the flush started (frame bytes).
        total_bytes: u64,
    },
    /// An attempt of the pass serving the flush failed (the line `flush` prints, e.g.
    /// `attempt 2 failed: <reason>; retrying in 3 s`).
    Retry {
        /// The line.
        message: String,
    },
    /// The end.
    Done {
        /// Everything written before the request is acknowledged.
        ok: bool,
        /// The policy forbids uploading (not opted in, delivery disabled).
        forbidden: bool,
        /// A sentence.
        message: String,
        /// What the pass did.
        progress: Progress,
    },
}

/// A request, as the daemon's main loop sees it.
#[derive(Debug)]
pub struct FlushRequest {
    /// The end of the log when the request arrived.
    pub target: Option<Position>,
    /// Where replies go.
    pub reply: Sender<Reply>,
    /// When it arrived: a pass that started later and caught up with the live end also
    /// satisfies it.
    pub arrived: std::time::Instant,
}

/// Events for the daemon's main loop.
#[derive(Debug)]
pub enum Event {
    /// `seglog upload flush`.
    Flush(FlushRequest),
    /// SIGTERM / SIGINT.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cmd: String,
}

/// The socket path of a log's uploader.
pub fn socket_path(upload_dir: &Path) -> PathBuf {
    upload_dir.join(crate::state::SOCKET_FILE)
}

/// Binds the socket (replacing a stale one: the caller holds the uploader lock, so no other
/// daemon can be using it) and serves it on a thread, sending requests to `events`.
pub fn serve(
    upload_dir: &Path,
    log_dir: PathBuf,
    events: Sender<Event>,
) -> std::io::Result<PathBuf> {
    let path = socket_path(upload_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    // 0600, or 0660 in a shared log: any member may ask the daemon to flush.
    segment_log::Sharing::of_dir(upload_dir)?.fix_path(&path)?;
    std::thread::Builder::new()
        .name("seglog-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let events = events.clone();
                let log_dir = log_dir.clone();
                let _ = std::thread::Builder::new()
                    .name("seglog-control-conn".into())
                    .spawn(move || handle(conn, &log_dir, &events));
            }
        })?;
    Ok(path)
}

fn handle(conn: UnixStream, log_dir: &Path, events: &Sender<Event>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut line = String::new();
    // One bounded request line.
    if BufReader::new(std::io::Read::take(&conn, 4096))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let req: Result<Request, _> = serde_json::from_str(line.trim());
    match req {
        Ok(r) if r.cmd == "flush" => {
            let target = crate::backlog::log_end(log_dir);
            let (tx, rx) = mpsc::channel();
            if events
                .send(Event::Flush(FlushRequest {
                    target,
                    reply: tx,
                    arrived: std::time::Instant::now(),
                }))
                .is_err()
            {
                let _ = send(&mut w, &done_err("the daemon is shutting down"));
                return;
            }
            for reply in rx {
                let last = matches!(reply, Reply::Done { .. });
                if send(&mut w, &reply).is_err() || last {
                    return;
                }
            }
            let _ = send(
                &mut w,
                &done_err("the daemon stopped before the flush completed"),
            );
        }
        _ => {
            let _ = send(
                &mut w,
                &done_err(&format!(
                    "unknown request {:?}; expected {{\"cmd\":\"flush\"}}",
                    line.trim()
                )),
            );
        }
    }
}

fn done_err(msg: &str) -> Reply {
    Reply::Done {
        ok: false,
        forbidden: false,
        message: msg.to_owned(),
        progress: Progress::default(),
    }
}

fn send(w: &mut UnixStream, r: &Reply) -> std::io::Result<()> {
    let mut s = serde_json::to_string(r).map_err(std::io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes())
}

/// Connects to a running daemon; `None` when none listens.
pub fn connect(upload_dir: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(upload_dir)).ok()
}

/// Sends a flush request over `conn` and calls `on_reply` for each reply until `done`
/// or `timeout`. Returns the final reply.
pub fn request_flush(
    conn: UnixStream,
    timeout: Duration,
    on_reply: &mut dyn FnMut(&Reply),
) -> std::io::Result<Reply> {
    conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let mut w = conn.try_clone()?;
    w.write_all(b"{\"cmd\":\"flush\"}\n")?;
    let deadline = std::time::Instant::now() + timeout;
    let mut r = BufReader::new(conn);
    loop {
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1));
        r.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the flush did not complete before the timeout",
                )
            } else {
                e
            }
        })?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection before the flush completed",
            ));
        }
        let reply: Reply = serde_json::from_str(line.trim()).map_err(std::io::Error::other)?;
        on_reply(&reply);
        if matches!(reply, Reply::Done { .. }) {
            return Ok(reply);
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the flush did not complete before the timeout",
            ));
        }
    }
}
