//! The pager, as `journalctl` uses it: when standard output is a terminal, output goes
//! through `$PAGER` (run by `sh -c`, so it may carry arguments), else `less -FRSX` (quits at
//! once when everything fits, keeps long lines unwrapped). `--no-pager`, a `$PAGER` that is
//! empty or `cat`, output that is not a terminal, and `--follow` all write straight to
//! standard output. A pager that cannot be started is not an error: output goes to the
//! terminal instead.

use std::io::{self, IsTerminal, StdoutLock, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Where output goes.
pub enum Sink {
    /// Straight to standard output.
    Stdout(StdoutLock<'static>),
    /// Into a pager's standard input.
    Pager(Child, ChildStdin),
}

impl Sink {
    /// The pager when standard output is a terminal and paging is wanted, else stdout.
    pub fn open(want_pager: bool) -> Sink {
        let stdout = io::stdout();
        if want_pager && stdout.is_terminal() {
            if let Some((child, stdin)) = spawn_pager() {
                return Sink::Pager(child, stdin);
            }
        }
        Sink::Stdout(stdout.lock())
    }

    /// Closes the pager's input and waits for the person to leave it.
    pub fn finish(self) -> io::Result<()> {
        match self {
            Sink::Stdout(mut s) => s.flush(),
            Sink::Pager(mut child, stdin) => {
                drop(stdin);
                child.wait().map(|_| ())
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::Pager(_, p) => p.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.write_all(buf),
            Sink::Pager(_, p) => p.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::Pager(_, p) => p.flush(),
        }
    }
}

/// The pager command: `$PAGER` unless empty or `cat`, else `less -FRSX`; `None` for none.
fn pager_command() -> Option<Command> {
    match std::env::var("PAGER") {
        Ok(p) if p.trim().is_empty() || p.trim() == "cat" => None,
        Ok(p) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(p);
            Some(c)
        }
        Err(_) => {
            let mut c = Command::new("less");
            c.arg("-FRSX");
            Some(c)
        }
    }
}

fn spawn_pager() -> Option<(Child, ChildStdin)> {
    let mut cmd = pager_command()?;
    let mut child = cmd.stdin(Stdio::piped()).spawn().ok()?;
    let stdin = child.stdin.take()?;
    Some((child, stdin))
}
