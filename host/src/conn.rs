//! One accepted client socket under the client-edge bounds, on every protocol:
//! - no request in flight: reads are under a deadline (`client_header_timeout` for a new
//!   connection, `client_idle_timeout` after an answer), so a socket that sends nothing, a
//!   lone `P` or an HTTP/2 preface is closed before hyper has even chosen a protocol;
//! - a write that makes no progress for `client_write_timeout` fails the connection, so a
//!   client that stopped reading releases its stream, vendor connection and adapter slot;
//! - closing shuts the write side and then reads and discards for `lingering_close`, so a
//!   client still uploading a refused body reads the answer instead of a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// Bytes a lingering close discards before it gives up even within its time: twice the
/// default body limit, so a refused maximal upload is read to its end.
const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Reads per poll while lingering, so one fast sender cannot hog a runtime worker.
const LINGER_READS_PER_POLL: usize = 32;

/// The bounds one connection runs under (read from the configuration at accept).
#[derive(Clone, Copy, Debug)]
pub struct IoBounds {
    pub header: Duration,
    pub idle: Duration,
    pub write: Duration,
    pub linger: Duration,
}

/// What the connection's service tells its socket: whether a request is in flight, and
/// since when the connection has been idle.
pub struct ConnState {
    start: Instant,
    active: AtomicUsize,
    /// Requests started on this connection.
    served: AtomicU64,
    /// Milliseconds after `start` when the last request ended.
    idle_since_ms: AtomicU64,
    /// The socket's pending read, woken when the connection goes idle so its deadline is set.
    reader: AtomicWaker,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    /// A request started; the connection counts as busy until the guard (carried by the
    /// response body) drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    /// When the idle deadline runs from, and which bound applies, while nothing is in flight.
    fn idle_deadline(&self, b: &IoBounds) -> (Instant, &'static str) {
        let since = self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        if self.served.load(Ordering::Relaxed) == 0 {
            (since + b.header, "client_header")
        } else {
            (since + b.idle, "client_idle")
        }
    }
}

pub struct ActiveGuard(Arc<ConnState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = u64::try_from(s.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.idle_since_ms.store(ms, Ordering::Release);
        if s.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.reader.wake();
        }
    }
}

/// A response body that keeps its connection marked busy until it ends or is dropped.
pub struct TrackedBody<B> {
    inner: B,
    _guard: ActiveGuard,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: ActiveGuard) -> Self {
        Self { inner, _guard: guard }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Closing {
    Open,
    /// Write side shut; discarding what the client still sends until EOF, the time or the bytes.
    Lingering {
        discarded: u64,
    },
    Closed,
}

pub struct ClientIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    bounds: IoBounds,
    metrics: Arc<Metrics>,
    read_timer: Pin<Box<Sleep>>,
    read_deadline: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Set while a write is pending with no progress.
    write_stalled: bool,
    closing: Closing,
}

impl ClientIo {
    pub fn new(stream: TcpStream, state: Arc<ConnState>, bounds: IoBounds, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        Self {
            stream,
            state,
            bounds,
            metrics,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            read_deadline: None,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            write_stalled: false,
            closing: Closing::Open,
        }
    }

    fn timed_out(&self, stage: &'static str, bound: Duration) -> io::Error {
        self.metrics.timeouts.inc([stage]);
        tracing::debug!(stage, bound_s = bound.as_secs_f64(), "client connection cut");
        io::Error::new(io::ErrorKind::TimedOut, format!("{stage} timeout"))
    }

    /// A read is pending: with nothing in flight, it must end by the idle deadline.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.reader.register(cx.waker());
        if self.state.active.load(Ordering::Acquire) > 0 {
            // A request's own bounds (body, total, write progress) apply meanwhile.
            return Poll::Pending;
        }
        let (deadline, stage) = self.state.idle_deadline(&self.bounds);
        let bound = if stage == "client_header" { self.bounds.header } else { self.bounds.idle };
        if Instant::now() >= deadline {
            return Poll::Ready(Err(self.timed_out(stage, bound)));
        }
        if self.read_deadline != Some(deadline) {
            self.read_timer.as_mut().reset(deadline);
            self.read_deadline = Some(deadline);
        }
        match self.read_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.timed_out(stage, bound))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write is pending: fail it once it has made no progress for the write bound.
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_stalled {
            self.write_stalled = true;
            self.write_timer.as_mut().reset(Instant::now() + self.bounds.write);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(self.timed_out("client_write", self.bounds.write)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn written<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_stalled = false;
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_write_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// Discard what the client still sends, up to the bounds; ready when done.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 8192];
        for _ in 0..LINGER_READS_PER_POLL {
            let Closing::Lingering { discarded } = &mut self.closing else { return Poll::Ready(()) };
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    *discarded += buf.filled().len() as u64;
                    if *discarded > LINGER_MAX_BYTES {
                        return Poll::Ready(());
                    }
                }
                // EOF or an error: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => {
                    return match self.read_timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.poll_read_deadline(cx),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.written(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.written(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.closing {
                Closing::Open => {
                    let r = Pin::new(&mut this.stream).poll_shutdown(cx);
                    match this.written(cx, r) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {
                            // The answer is on its way (FIN sent); now read what the client
                            // still sends so the kernel does not answer it with a reset.
                            this.read_timer.as_mut().reset(Instant::now() + this.bounds.linger);
                            this.read_deadline = None;
                            this.closing = Closing::Lingering { discarded: 0 };
                        }
                    }
                }
                Closing::Lingering { .. } => {
                    if this.poll_linger(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.closing = Closing::Closed;
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
