//! One connection's timeouts: an I/O wrapper that closes a connection whose request headers
//! take too long or that sits idle too long between requests, and a service wrapper that tells
//! it when a request is in progress.
//!
//! A connection is in one of three phases:
//!
//! - **head**: from the connection's start, or from the first byte after an idle spell, until
//!   the request's headers are complete: bounded by the header-read timeout;
//! - **busy**: a request is being handled or its response written: no connection-level
//!   deadline (a handler reading a body bounds that itself, see [`crate::read_body`]);
//! - **idle**: between the end of a response and the next byte: bounded by the idle timeout.
//!
//! A deadline that passes while a read is waiting fails the read with `TimedOut`, which makes
//! hyper close the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// What a connection is doing, shared by its I/O and its service.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    phase: AtomicU8,
    /// Milliseconds after `born` at which the current phase began.
    since_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn enter(&self, phase: u8) {
        let since = self.born.elapsed().as_millis() as u64;
        self.since_ms.store(since, Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    /// A request's headers are complete and its handler runs.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.enter(BUSY);
    }

    /// A request's response is written (or abandoned).
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.enter(IDLE);
        }
    }

    fn bytes_arrived(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(HEAD);
        }
    }

    /// When the current phase runs out, and which phase that is.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        let since = self.born + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        match self.phase.load(Ordering::Acquire) {
            HEAD => Some((since + timeouts.header, "header")),
            IDLE => Some((since + timeouts.idle, "idle")),
            _ => None,
        }
    }
}

/// The connection-level timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// A stream whose reads fail with `TimedOut` once its connection's phase runs out.
pub struct TimedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    on_timeout: Arc<dyn Fn(&'static str) + Send + Sync>,
}

impl<I> TimedIo<I> {
    pub fn new(
        inner: I,
        activity: Arc<Activity>,
        timeouts: Timeouts,
        on_timeout: Arc<dyn Fn(&'static str) + Send + Sync>,
    ) -> Self {
        Self {
            inner,
            activity,
            timeouts,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
            on_timeout,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TimedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buffer.filled().len();
        match Pin::new(&mut this.inner).poll_read(context, buffer) {
            Poll::Ready(Ok(())) => {
                if buffer.filled().len() > filled_before {
                    this.activity.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some((deadline, phase)) = this.activity.deadline(&this.timeouts) else {
                    return Poll::Pending;
                };
                if this.armed_for != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.armed_for = Some(deadline);
                }
                if this.sleep.as_mut().poll(context).is_ready() {
                    (this.on_timeout)(phase);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the connection's {phase} timeout passed"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

/// Marks the request finished when dropped: after the response body's last byte is written,
/// or when hyper abandons the request.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in progress until it is written.
#[derive(Debug)]
pub struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that notes when it has been read to its end.
struct WatchedBody {
    inner: hyper::body::Incoming,
    finished: Arc<AtomicBool>,
}

impl HttpBody for WatchedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(context);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router, telling the connection's [`Activity`] when each request starts and ends.
///
/// An answer given before its request's body was read to the end (a refusal: 401, 413, 429,
/// 503) says `Connection: close`: the unread rest of the body makes the connection unusable
/// for another request, and a client told so reconnects instead of seeing a reset.
#[derive(Clone)]
pub struct TrackRequests {
    pub router: axum::Router,
    pub activity: Arc<Activity>,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for TrackRequests {
    type Response = hyper::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.activity.request_started();
        let in_flight = InFlight(self.activity.clone());
        let finished = Arc::new(AtomicBool::new(request.body().is_end_stream()));
        let request = request.map(|inner| {
            axum::body::Body::new(WatchedBody {
                inner,
                finished: finished.clone(),
            })
        });
        let response = tower::ServiceExt::oneshot(self.router.clone(), request);
        Box::pin(async move {
            let mut response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if !finished.load(Ordering::Acquire) {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn timeouts() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(2),
            idle: Duration::from_secs(10),
        }
    }

    fn timed(
        stream: tokio::io::DuplexStream,
        activity: Arc<Activity>,
    ) -> (
        TimedIo<tokio::io::DuplexStream>,
        Arc<std::sync::Mutex<Vec<&'static str>>>,
    ) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let io = TimedIo::new(
            stream,
            activity,
            timeouts(),
            Arc::new(move |phase| record.lock().expect("not poisoned").push(phase)),
        );
        (io, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_times_out_in_the_header_phase() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut io, seen) = timed(server, Activity::new());
        let started = Instant::now();
        let error = io.read(&mut [0; 16]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(*seen.lock().expect("not poisoned"), vec!["header"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_has_no_deadline_and_an_idle_one_gets_the_idle_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let (mut io, seen) = timed(server, activity.clone());
        activity.request_started();
        // Busy for far longer than either timeout: the read still waits.
        let waited = tokio::time::timeout(Duration::from_secs(60), io.read(&mut [0; 16])).await;
        assert!(
            waited.is_err(),
            "no deadline while a request is in progress"
        );
        activity.request_finished();
        let started = Instant::now();
        let error = io.read(&mut [0; 16]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(*seen.lock().expect("not poisoned"), vec!["idle"]);
        drop(client.write_all(b"x").await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_after_idle_starts_the_header_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let (mut io, seen) = timed(server, activity.clone());
        activity.request_started();
        activity.request_finished();
        tokio::time::sleep(Duration::from_secs(9)).await;
        client.write_all(b"GET").await.expect("writes");
        let mut buffer = [0; 16];
        assert_eq!(io.read(&mut buffer).await.expect("reads"), 3);
        let started = Instant::now();
        let error = io.read(&mut buffer).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "header, not idle"
        );
        assert_eq!(*seen.lock().expect("not poisoned"), vec!["header"]);
    }
}
