//! What one connection is doing, and when it has done nothing useful for too long.
//!
//! A connection is *busy* while requests are in flight on it, *idle* otherwise. An idle
//! connection is closed after the idle timeout; an idle HTTP/1 connection on which a request head
//! has started to arrive, after the header-read timeout (slowloris); and any connection the
//! listener evicts to make room for a new one at its connection cap, at once. The clock is
//! tokio's, so tests can drive it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Limits;

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// No request for the idle timeout.
    Idle,
    /// A request head started and did not finish within the header-read timeout.
    HeaderTimeout,
    /// The listener needed its slot for a new connection.
    Evicted,
}

impl Closing {
    pub fn as_str(self) -> &'static str {
        match self {
            Closing::Idle => "idle",
            Closing::HeaderTimeout => "header_timeout",
            Closing::Evicted => "evicted",
        }
    }
}

/// One connection's activity, shared by its task, its I/O and the listener's registry.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// When the connection last became idle, in ms since `epoch`.
    idle_since: AtomicU64,
    /// When a request head began to arrive on the idle connection, in ms since `epoch` plus one;
    /// 0 while none is arriving. Tracked for HTTP/1 only.
    head_since: AtomicU64,
    /// Bytes read from the client so far (keepalive: has the peer said anything?).
    read: AtomicU64,
    /// Head tracking is off (HTTP/2, where frames arrive between requests).
    multiplexed: AtomicBool,
    evicted: AtomicBool,
    wake: Notify,
}

impl Activity {
    /// A new connection. With `head_pending`, it counts as a request head in progress from now,
    /// so a client that connects and sends nothing (or too little) is closed after the
    /// header-read timeout rather than the idle timeout.
    pub fn new(epoch: Instant, head_pending: bool) -> Self {
        let now = ms_since(epoch);
        Self {
            epoch,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(if head_pending { now + 1 } else { 0 }),
            read: AtomicU64::new(0),
            multiplexed: AtomicBool::new(!head_pending),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        ms_since(self.epoch)
    }

    /// One request begins; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.head_since.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// Sets the number of requests in flight (for a connection task that counts them itself).
    pub fn set_in_flight(&self, n: usize) {
        let before = self.in_flight.swap(n, Ordering::AcqRel);
        if before > 0 && n == 0 {
            self.went_idle();
        }
    }

    fn went_idle(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether the connection has nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Since when the connection has been idle, in ms since the epoch, when it is.
    pub fn idle_since(&self) -> Option<u64> {
        self.is_idle()
            .then(|| self.idle_since.load(Ordering::Relaxed))
    }

    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The connection turned out to speak HTTP/2: frames arrive between requests, so arriving
    /// bytes no longer mean a request head.
    fn set_multiplexed(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn on_read(&self, n: usize, first_bytes: &[u8]) {
        let before = self.read.fetch_add(n as u64, Ordering::Relaxed);
        if before == 0 && first_bytes.starts_with(b"PRI * HTTP/2.0") {
            self.set_multiplexed();
            return;
        }
        if self.multiplexed.load(Ordering::Relaxed) || !self.is_idle() {
            return;
        }
        let since = self.now() + 1;
        if self
            .head_since
            .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.wake.notify_one();
        }
    }

    /// Whether the listener has asked the connection to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Asks the connection to close (the listener needs its slot).
    pub fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Resolves when the connection should be closed, and why. One task waits on it.
    pub async fn expired(&self, limits: &Limits) -> Closing {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        loop {
            // Registered before the state is read, so a change in between still wakes it.
            let woken = self.wake.notified();
            if self.evicted.load(Ordering::Acquire) {
                return Closing::Evicted;
            }
            let deadline = if !self.is_idle() {
                None
            } else {
                match self.head_since.load(Ordering::Relaxed) {
                    0 => Some((
                        self.idle_since.load(Ordering::Relaxed) + ms(limits.idle_timeout),
                        Closing::Idle,
                    )),
                    since => Some((
                        since - 1 + ms(limits.header_read_timeout),
                        Closing::HeaderTimeout,
                    )),
                }
            };
            match deadline {
                None => woken.await,
                Some((at, why)) if at <= self.now() => return why,
                Some((at, _)) => {
                    let at = self.epoch + std::time::Duration::from_millis(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = woken => {}
                    }
                }
            }
        }
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.went_idle();
        }
    }
}

/// A connection's socket that reports what it reads to the connection's [`Activity`].
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            self.activity.on_read(fresh.len(), fresh);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let a = Arc::new(Activity::new(Instant::now(), false));
        let start = Instant::now();
        assert_eq!(a.expired(&limits()).await, Closing::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires_and_its_idle_time_starts_when_it_ends() {
        let a = Arc::new(Activity::new(Instant::now(), false));
        let request = a.begin();
        let l = limits();
        let watchdog = a.expired(&l);
        tokio::pin!(watchdog);
        let waited = tokio::time::timeout(Duration::from_secs(600), &mut watchdog).await;
        assert!(waited.is_err(), "a busy connection expired");
        drop(request);
        let idle_from = Instant::now();
        assert_eq!(watchdog.await, Closing::Idle);
        assert_eq!(idle_from.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_does_not_finish_expires_after_the_header_timeout() {
        // A new HTTP/1 connection must send a whole head within the header-read timeout.
        let a = Arc::new(Activity::new(Instant::now(), true));
        let start = Instant::now();
        assert_eq!(a.expired(&limits()).await, Closing::HeaderTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        // After a request, the next head's first byte starts the header timer.
        let a = Arc::new(Activity::new(Instant::now(), true));
        drop(a.begin());
        tokio::time::advance(Duration::from_secs(30)).await;
        a.on_read(3, b"GET");
        let start = Instant::now();
        assert_eq!(a.expired(&limits()).await, Closing::HeaderTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_are_not_a_head() {
        let a = Arc::new(Activity::new(Instant::now(), true));
        a.on_read(24, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.on_read(9, b"\0\0\0\x04\0\0\0\0\0");
        let start = Instant::now();
        assert_eq!(a.expired(&limits()).await, Closing::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_closes_at_once() {
        let a = Arc::new(Activity::new(Instant::now(), false));
        let _busy = a.begin();
        a.evict();
        let start = Instant::now();
        assert_eq!(a.expired(&limits()).await, Closing::Evicted);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
