//! Slow-client protection for the API server: an [`Acceptor`] whose connections fail with
//! `TimedOut` when no byte moves in either direction for `timeout` while the server waits to
//! read.
//!
//! poem 3 offers only `Server::idle_timeout`, which asks hyper for a *graceful* shutdown; hyper
//! then waits for the request in progress, so a client that sends half a request line and
//! stops holds its connection forever (seen in the test
//! `a_silent_client_is_disconnected_after_the_idle_timeout`). There is no header-read timeout
//! either (hyper's `header_read_timeout` is not exposed). This wrapper aborts instead: a read
//! that stays pending past the deadline returns an error, and hyper drops the connection. It
//! covers silent clients, half-sent headers and idle keep-alive connections. It does not cut
//! a client that trickles one byte just inside every `timeout`; hyper's header size limit and
//! the operating system's connection limits bound what such a client can hold.
//!
//! **Invariant:** hyper keeps a read pending while a handler runs, so the deadline also runs
//! during a request: `timeout` must exceed the longest handler. The API's handlers are bounded
//! by [`super::limits::DB_QUERY_TIMEOUT`] (10 s) and [`super::READINESS_TIMEOUT`] (5 s), under
//! the default 30 s (a unit test in `limits` checks it); a new slow endpoint must stay under it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps an acceptor so each connection gets a [`DeadlineIo`].
pub struct IdleTimeoutAcceptor<A> {
    inner: A,
    timeout: Duration,
}

impl<A> IdleTimeoutAcceptor<A> {
    /// `timeout`: longest silence (no byte read or written) while waiting to read.
    pub fn new(inner: A, timeout: Duration) -> Self {
        IdleTimeoutAcceptor { inner, timeout }
    }
}

impl<A: Acceptor> Acceptor for IdleTimeoutAcceptor<A> {
    type Io = DeadlineIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((DeadlineIo::new(io, self.timeout), local, remote, scheme))
    }
}

/// An IO stream whose pending reads fail after `timeout` without any traffic.
pub struct DeadlineIo<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> DeadlineIo<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        DeadlineIo {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no traffic on the connection for the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            this.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
