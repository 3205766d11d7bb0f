//! The `/metrics` endpoint's bookkeeping: which connections are open and whether each is
//! serving an answer, so that room can be made by closing the one idle longest; and one render
//! shared by the scrapes that arrive while it runs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

/// What the endpoint has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Connections open now.
    pub open: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed to make room (the cap reached, or descriptors out).
    pub evicted: u64,
    /// Accepts that failed (descriptors out, say).
    pub accept_errors: u64,
    /// Renders of the metrics: fewer than scrapes when scrapes arrive together.
    pub renders: u64,
}

#[derive(Debug)]
struct Entry {
    /// Since when it is idle (waiting for, or reading, a request) or busy (answering).
    since: Instant,
    busy: bool,
    /// Being closed to make room: no longer counted as open.
    closing: bool,
    close: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    closing: usize,
    next_id: u64,
    accepted: u64,
    evicted: u64,
    accept_errors: u64,
}

/// The open connections, shared by the accept loop and the connections' tasks.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    table: Mutex<Table>,
    freed: Notify,
}

impl Connections {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open, not counting those being closed.
    pub(crate) fn open(&self) -> usize {
        let t = self.table();
        t.entries.len() - t.closing
    }

    /// Registers a new connection (idle); returns its id and what closes it.
    pub(crate) fn open_one(&self) -> (u64, Arc<Notify>) {
        let mut t = self.table();
        let id = t.next_id;
        t.next_id += 1;
        t.accepted += 1;
        let close = Arc::new(Notify::new());
        t.entries.insert(
            id,
            Entry {
                since: Instant::now(),
                busy: false,
                closing: false,
                close: close.clone(),
            },
        );
        (id, close)
    }

    /// The connection `id` is answering a request until the guard is dropped (when its answer
    /// has been written, or the connection ends).
    pub(crate) fn busy(self: &Arc<Self>, id: u64) -> BusyGuard {
        self.set(id, true);
        BusyGuard {
            connections: self.clone(),
            id,
        }
    }

    fn set(&self, id: u64, busy: bool) {
        if let Some(entry) = self.table().entries.get_mut(&id) {
            entry.busy = busy;
            entry.since = Instant::now();
        }
    }

    /// The connection `id` has ended.
    pub(crate) fn close(&self, id: u64) {
        let mut t = self.table();
        if let Some(entry) = t.entries.remove(&id) {
            if entry.closing {
                t.closing -= 1;
            }
        }
        drop(t);
        self.freed.notify_one();
    }

    /// Resolves when a connection ends.
    pub(crate) async fn freed(&self) {
        self.freed.notified().await
    }

    /// Closes the connection idle longest, if it has been idle for `grace` at least (a client
    /// that has just connected is about to send its request), or else one busy writing for
    /// longer than `write_timeout` (a client that does not read); false if there is none.
    pub(crate) fn evict_one(&self, grace: Duration, write_timeout: Duration) -> bool {
        let mut t = self.table();
        let now = Instant::now();
        let victim = t
            .entries
            .iter()
            .filter(|(_, e)| {
                let age = now.saturating_duration_since(e.since);
                !e.closing
                    && if e.busy {
                        age > write_timeout
                    } else {
                        age >= grace
                    }
            })
            .min_by_key(|(_, e)| (e.busy, e.since))
            .map(|(id, _)| *id);
        let Some(id) = victim else { return false };
        if let Some(entry) = t.entries.get_mut(&id) {
            entry.closing = true;
            entry.close.notify_one();
        }
        t.closing += 1;
        t.evicted += 1;
        true
    }

    pub(crate) fn count_accept_error(&self) {
        self.table().accept_errors += 1;
    }

    pub(crate) fn stats(&self, renders: u64) -> EndpointStats {
        let t = self.table();
        EndpointStats {
            open: t.entries.len() - t.closing,
            accepted: t.accepted,
            evicted: t.evicted,
            accept_errors: t.accept_errors,
            renders,
        }
    }
}

/// Marks a connection idle again when dropped.
pub(crate) struct BusyGuard {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.connections.set(self.id, false);
    }
}

/// An answer's body that keeps its connection marked busy until hyper has taken all of it.
pub(crate) struct Tracked {
    inner: Full<Bytes>,
    _busy: BusyGuard,
}

impl Tracked {
    pub(crate) fn new(inner: Full<Bytes>, busy: BusyGuard) -> Self {
        Tracked { inner, _busy: busy }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Renders shared by the scrapes that arrive while one runs: a scrape is answered with a render
/// that started after it arrived, never an older one.
pub(crate) struct Renders {
    handle: PrometheusHandle,
    /// Scrapes that have asked, counted from 1.
    arrivals: AtomicU64,
    /// The latest render, with the arrival count when it started.
    latest: tokio::sync::Mutex<(u64, Bytes)>,
    renders: AtomicU64,
}

impl Renders {
    pub(crate) fn new(handle: PrometheusHandle) -> Self {
        Renders {
            handle,
            arrivals: AtomicU64::new(0),
            latest: tokio::sync::Mutex::new((0, Bytes::new())),
            renders: AtomicU64::new(0),
        }
    }

    /// The metrics as text, rendered after this call began (off the runtime's threads); None
    /// if rendering failed.
    pub(crate) async fn render(self: &Arc<Self>) -> Option<Bytes> {
        let ticket = self.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let renders = self.clone();
        // On its own task: a scrape that goes away (its connection closed) does not cancel a
        // render the scrapes behind it are waiting for.
        tokio::spawn(async move { renders.render_for(ticket).await })
            .await
            .ok()?
    }

    async fn render_for(&self, ticket: u64) -> Option<Bytes> {
        let mut latest = self.latest.lock().await;
        if latest.0 >= ticket {
            return Some(latest.1.clone());
        }
        let started = self.arrivals.load(Ordering::SeqCst);
        let handle = self.handle.clone();
        let text = tokio::task::spawn_blocking(move || handle.render())
            .await
            .ok()?;
        self.renders.fetch_add(1, Ordering::Relaxed);
        *latest = (started, Bytes::from(text));
        Some(latest.1.clone())
    }

    /// Folds histogram samples into their buckets.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub(crate) fn count(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_longest_is_evicted_first_and_busy_ones_only_when_stuck() {
        let c = Arc::new(Connections::default());
        let (a, close_a) = c.open_one();
        std::thread::sleep(Duration::from_millis(2));
        let (b, _close_b) = c.open_one();
        let busy_a = c.busy(a);
        // Just connected: not evicted within the grace.
        assert!(!c.evict_one(Duration::from_secs(60), Duration::from_secs(30)));
        // a is busy: b goes first although a is older.
        assert!(c.evict_one(Duration::ZERO, Duration::from_secs(30)));
        assert_eq!(c.open(), 1);
        // Only a is left, busy and not stuck: nothing to evict.
        assert!(!c.evict_one(Duration::ZERO, Duration::from_secs(30)));
        // Stuck for longer than the write deadline: evictable.
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.evict_one(Duration::ZERO, Duration::from_millis(1)));
        assert_eq!(c.open(), 0);
        drop(busy_a);
        // Both tasks end: nothing is counted twice.
        c.close(a);
        c.close(b);
        assert_eq!(c.stats(0).open, 0);
        assert_eq!(c.stats(0).evicted, 2);
        drop(close_a);
    }
}
