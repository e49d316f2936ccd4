//! Connection bounds. [`Capped`] serves at most `max_connections` connections at once and
//! closes any connection beyond that at once (it would otherwise hold a file descriptor and a
//! task until the peer gives up). Each served connection is closed when it stays silent for
//! `idle_timeout` while no request is in progress: before its first byte and after each
//! response (hyper's header read timeout only starts once a request's first byte arrives).
//! A request counts as in progress from its first byte read until the first byte of the
//! response is written; a body that stalls in that time is the upload handler's to time out.

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Accepts a connection only while a slot of the cap is free; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Capped {
    slots: Arc<Semaphore>,
    idle: std::time::Duration,
}

impl Capped {
    pub(crate) fn new(max_connections: usize, idle: std::time::Duration) -> Capped {
        Capped {
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            idle,
        }
    }
}

/// A served connection; its slot frees when it closes.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: std::time::Duration,
    /// No request in progress: silence ends the connection when `silence` fires.
    waiting: bool,
    silence: Pin<Box<Sleep>>,
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Capped {
    type Stream = Counted;
    type Service = S;
    type Future = Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => ready(Ok((
                Counted {
                    inner: stream,
                    _slot: slot,
                    idle: self.idle,
                    waiting: true,
                    silence: Box::pin(tokio::time::sleep(self.idle)),
                },
                service,
            ))),
            // Dropping the stream closes it; the peer retries later.
            Err(_) => ready(Err(io::Error::other("connection limit reached"))),
        }
    }
}

impl Counted {
    /// A response is going out: the connection waits for its next request from now on.
    fn answered(&mut self) {
        self.waiting = true;
        let deadline = Instant::now() + self.idle;
        self.silence.as_mut().reset(deadline);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.waiting = false; // a request is arriving
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.waiting && self.silence.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for longer than idle_timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.answered();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.answered();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
