//! The dispatcher: `attach` / `detach` / `execute`, with a lock-free read path.
//!
//! Handlers live in an immutable routing table that is rebuilt when a handler is attached or
//! detached (rare) and published under a generation number. Each thread keeps the tables it
//! has used in a small cache and checks the generation with one atomic load per `execute`, so
//! the hot path takes no lock and touches no shared cache line with a write.

use std::any::Any;
use std::borrow::Cow;
use std::cell::{Cell, UnsafeCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::catalog;
use crate::event::EventName;
use crate::record::{SpanRecord, SpanSink};
use crate::value::{Measurements, Metadata};

/// One event as a handler sees it: its name, measurements and metadata.
///
/// The trace context of the request that emitted it, if any, is
/// [`crate::context::current`]: handlers run on the emitting thread.
#[derive(Debug, Clone, Copy)]
pub struct Event<'e> {
    name: &'e EventName,
    measurements: &'e Measurements<'e>,
    metadata: &'e Metadata<'e>,
}

impl<'e> Event<'e> {
    #[cfg(test)]
    pub(crate) fn new_for_test(
        name: &'e EventName,
        measurements: &'e Measurements<'e>,
        metadata: &'e Metadata<'e>,
    ) -> Self {
        Event {
            name,
            measurements,
            metadata,
        }
    }

    /// The event's name.
    #[inline]
    pub fn name(&self) -> &'e EventName {
        self.name
    }

    /// The event's measurements.
    #[inline]
    pub fn measurements(&self) -> &'e Measurements<'e> {
        self.measurements
    }

    /// The event's metadata.
    #[inline]
    pub fn metadata(&self) -> &'e Metadata<'e> {
        self.metadata
    }
}

/// Something that receives events. Closures `Fn(&Event)` are handlers.
///
/// Handlers run on the caller's thread, inside `execute`: they must be quick, must not block
/// and must not do I/O (queue work for a thread of their own instead). A handler that panics
/// is detached and a [`catalog::HANDLER_FAILURE`] event reports it; the caller and the other
/// handlers carry on.
pub trait Handler: Send + Sync + 'static {
    /// Receives one event.
    fn handle(&self, event: &Event<'_>);
}

impl<F> Handler for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    #[inline]
    fn handle(&self, event: &Event<'_>) {
        self(event)
    }
}

/// Why `attach` refused a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// A handler with this id is attached already.
    #[error("a handler with id {0:?} is already attached")]
    AlreadyExists(String),
    /// `attach_many` was given no event.
    #[error("handler {0:?} names no event")]
    NoEvents(String),
}

/// Why `detach` did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetachError {
    /// No handler with this id is attached.
    #[error("no handler with id {0:?} is attached")]
    NotFound(String),
}

/// What a handler listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Exactly this event.
    Event(EventName),
    /// Every event whose name starts with these segments.
    Prefix(EventName),
}

impl Subscription {
    fn matches_prefix(&self, prefix: &EventName) -> bool {
        match self {
            Subscription::Event(name) | Subscription::Prefix(name) => name.starts_with(prefix),
        }
    }
}

/// A description of an attached handler, from [`Dispatcher::list_handlers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The id it was attached under.
    pub id: String,
    /// What it listens to.
    pub subscriptions: Vec<Subscription>,
}

struct Registration {
    id: String,
    subscriptions: Vec<Subscription>,
    target: Target,
    reads: Reads,
    /// Whether a skipped re-entry of this registration was logged (once per registration).
    reentry_logged: AtomicBool,
}

impl Registration {
    fn new(id: String, subscriptions: Vec<Subscription>, target: Target, reads: Reads) -> Self {
        Registration {
            id,
            subscriptions,
            target,
            reads,
            reentry_logged: AtomicBool::new(false),
        }
    }
}

/// What a registration calls: an event handler, or a span sink (which has no subscriptions).
enum Target {
    Handler(Box<dyn Handler>),
    Sink(Box<dyn SpanSink>),
}

/// Which metadata keys a handler reads, so that emitters may leave out costly entries that no
/// handler of an event reads (the bridge leaves out its `args` text when only metrics listen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reads {
    /// Any key: what a handler is assumed to do unless it says otherwise.
    #[default]
    All,
    /// These keys only.
    Only(Vec<&'static str>),
}

impl Reads {
    fn includes(&self, key: &str) -> bool {
        match self {
            Reads::All => true,
            Reads::Only(keys) => keys.contains(&key),
        }
    }
}

/// One handler for [`Dispatcher::attach_all`]: its id, its event, and what metadata it reads.
pub struct Attachment {
    id: String,
    event: EventName,
    handler: Box<dyn Handler>,
    reads: Reads,
}

impl Attachment {
    /// `handler` under `id` for `event`, reading any metadata key.
    pub fn new(id: impl Into<String>, event: EventName, handler: impl Handler) -> Self {
        Attachment {
            id: id.into(),
            event,
            handler: Box::new(handler),
            reads: Reads::All,
        }
    }

    /// Declares what metadata the handler reads (see [`Dispatcher::reads_key`]).
    pub fn reading(mut self, reads: Reads) -> Self {
        self.reads = reads;
        self
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("id", &self.id)
            .field("event", &self.event)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

struct Route {
    name: EventName,
    handlers: Box<[Arc<Registration>]>,
}

/// The hash of an [`EventName`] is computed once, so the table's map does not hash again.
#[derive(Default)]
struct PrecomputedHasher(u64);

impl Hasher for PrecomputedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An immutable routing table: exact routes by hash, plus prefix subscriptions.
#[derive(Default)]
struct Table {
    exact: HashMap<u64, Vec<Route>, BuildHasherDefault<PrecomputedHasher>>,
    /// By the hash of a span prefix: which of its `start`, `stop` and `exception` events have
    /// exact routes (bits as [`Dispatcher::handled_of`] returns them), so that a span asks
    /// once, not three times. A hash shared by two prefixes only sets bits that `execute`
    /// then finds no route for.
    span_events: HashMap<u64, u8, BuildHasherDefault<PrecomputedHasher>>,
    prefixes: Vec<(EventName, Arc<Registration>)>,
    sinks: Vec<Arc<Registration>>,
}

impl Table {
    fn build(registrations: &[Arc<Registration>]) -> Table {
        let mut table = Table::default();
        for reg in registrations {
            if let Target::Sink(_) = reg.target {
                table.sinks.push(reg.clone());
            }
            for sub in &reg.subscriptions {
                match sub {
                    Subscription::Event(name) => {
                        let routes = table.exact.entry(name.precomputed_hash()).or_default();
                        match routes.iter_mut().find(|r| r.name == *name) {
                            Some(route) => {
                                let mut handlers = route.handlers.to_vec();
                                handlers.push(reg.clone());
                                route.handlers = handlers.into();
                            }
                            None => routes.push(Route {
                                name: name.clone(),
                                handlers: Box::new([reg.clone()]),
                            }),
                        }
                        if let Some((prefix, last)) = name.split_last_hash() {
                            let bit = match last {
                                "start" => 1,
                                "stop" => 2,
                                "exception" => 4,
                                _ => 0,
                            };
                            if bit != 0 {
                                *table.span_events.entry(prefix).or_default() |= bit;
                            }
                        }
                    }
                    Subscription::Prefix(prefix) => {
                        table.prefixes.push((prefix.clone(), reg.clone()))
                    }
                }
            }
        }
        table
    }

    #[inline]
    fn exact(&self, name: &EventName) -> &[Arc<Registration>] {
        match self.exact.get(&name.precomputed_hash()) {
            Some(routes) => routes
                .iter()
                .find(|r| r.name == *name)
                .map_or(&[], |r| &r.handlers),
            None => &[],
        }
    }

    #[inline]
    fn has_handlers(&self, name: &EventName) -> bool {
        !self.exact(name).is_empty() || self.prefixes.iter().any(|(p, _)| name.starts_with(p))
    }
}

struct State {
    registrations: Vec<Arc<Registration>>,
    table: Arc<Table>,
    generation: u64,
}

struct Inner {
    id: u64,
    /// How many handlers are attached: zero lets `execute` return after one load.
    attached: AtomicUsize,
    /// Bumped (under `state`'s lock) whenever `state.table` is replaced.
    generation: AtomicU64,
    state: Mutex<State>,
    failures: AtomicU64,
    /// Handler calls skipped by the re-entrancy guard.
    skipped: AtomicU64,
}

static NEXT_DISPATCHER_ID: AtomicU64 = AtomicU64::new(1);

/// Routes events to the handlers attached to them.
///
/// Most code uses the process-wide dispatcher through the free functions of this crate
/// ([`crate::attach`], [`crate::execute`], [`crate::span`], …). Independent dispatchers
/// (`Dispatcher::new()`) serve tests and libraries that want handlers of their own. Cloning a
/// `Dispatcher` gives another handle to the same handlers.
///
/// Cost: `execute` with no handler attached anywhere is one atomic load; with handlers it
/// is one more atomic load, a thread-local lookup and a hash-map probe by a precomputed hash,
/// then one call per handler. Attaching and detaching take a lock and rebuild the table.
///
/// ```
/// use dspex_telemetry_core::{Dispatcher, EventName, Measurements, Metadata};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// const EVENT: EventName = EventName::from_static(&["myapp", "custom", "operation"]);
/// let dispatcher = Dispatcher::new();
/// let total = Arc::new(AtomicU64::new(0));
/// let seen = total.clone();
/// dispatcher
///     .attach("myapp-custom", EVENT, move |event: &dspex_telemetry_core::Event<'_>| {
///         let d = event.measurements().get("duration").map_or(0, |n| n.as_f64() as u64);
///         seen.fetch_add(d, Ordering::Relaxed);
///     })
///     .unwrap();
/// dispatcher.execute(&EVENT, &Measurements::new().with("duration", 100), &Metadata::new());
/// assert_eq!(total.load(Ordering::Relaxed), 100);
/// ```
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("id", &self.inner.id)
            .field("attached", &self.inner.attached.load(Ordering::Relaxed))
            .field("handler_failures", &self.handler_failures())
            .field("reentries_skipped", &self.reentries_skipped())
            .finish()
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

static GLOBAL: LazyLock<Dispatcher> = LazyLock::new(Dispatcher::new);

impl Dispatcher {
    /// A dispatcher with no handler, independent of the global one.
    pub fn new() -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                id: NEXT_DISPATCHER_ID.fetch_add(1, Ordering::Relaxed),
                attached: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                state: Mutex::new(State {
                    registrations: Vec::new(),
                    table: Arc::new(Table::default()),
                    generation: 0,
                }),
                failures: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
            }),
        }
    }

    /// The process-wide dispatcher used by the crate's free functions.
    #[inline]
    pub fn global() -> &'static Dispatcher {
        &GLOBAL
    }

    /// Attaches `handler` to one event under `id`. Errors if `id` is attached already.
    pub fn attach(
        &self,
        id: impl Into<String>,
        event: EventName,
        handler: impl Handler,
    ) -> Result<(), AttachError> {
        self.subscribe(id, [Subscription::Event(event)], handler)
    }

    /// Attaches `handler` to several events under one `id`.
    pub fn attach_many(
        &self,
        id: impl Into<String>,
        events: impl IntoIterator<Item = EventName>,
        handler: impl Handler,
    ) -> Result<(), AttachError> {
        self.subscribe(id, events.into_iter().map(Subscription::Event), handler)
    }

    /// Attaches `handler` to every event whose name starts with `prefix` (for example
    /// `[:dspex]` for all of DSPex's events). Slower to dispatch than exact events: meant for
    /// debugging and for exporters that want everything.
    pub fn attach_prefix(
        &self,
        id: impl Into<String>,
        prefix: EventName,
        handler: impl Handler,
    ) -> Result<(), AttachError> {
        self.subscribe(id, [Subscription::Prefix(prefix)], handler)
    }

    /// Attaches `handler` under `id` to any mix of events and prefixes.
    pub fn subscribe(
        &self,
        id: impl Into<String>,
        subscriptions: impl IntoIterator<Item = Subscription>,
        handler: impl Handler,
    ) -> Result<(), AttachError> {
        let id = id.into();
        let subscriptions: Vec<Subscription> = subscriptions.into_iter().collect();
        if subscriptions.is_empty() {
            return Err(AttachError::NoEvents(id));
        }
        let mut state = self.lock();
        if state.registrations.iter().any(|r| r.id == id) {
            return Err(AttachError::AlreadyExists(id));
        }
        state.registrations.push(Arc::new(Registration::new(
            id,
            subscriptions,
            Target::Handler(Box::new(handler)),
            Reads::All,
        )));
        let old_table = self.publish(&mut state);
        drop(state);
        drop(old_table);
        Ok(())
    }

    /// Attaches several handlers, each to one event under its own id, in one step: the routing
    /// table is rebuilt once, not once per handler. All or nothing: errors (attaching none) if
    /// an id is attached already or given twice.
    ///
    /// ```
    /// use dspex_telemetry_core::{Attachment, Dispatcher, Event, EventName, Reads};
    /// const A: EventName = EventName::from_static(&["app", "a"]);
    /// let dispatcher = Dispatcher::new();
    /// dispatcher
    ///     .attach_all([
    ///         Attachment::new("a", A, |_: &Event<'_>| {}).reading(Reads::Only(vec!["user"])),
    ///         Attachment::new("b", EventName::from_static(&["app", "b"]), |_: &Event<'_>| {}),
    ///     ])
    ///     .unwrap();
    /// assert_eq!(dispatcher.list_handlers(None).len(), 2);
    /// assert!(dispatcher.reads_key(&A, "user") && !dispatcher.reads_key(&A, "payload"));
    /// assert_eq!(dispatcher.detach_all(&["a", "b", "c"]), 2);
    /// ```
    pub fn attach_all(
        &self,
        handlers: impl IntoIterator<Item = Attachment>,
    ) -> Result<(), AttachError> {
        let new: Vec<Arc<Registration>> = handlers
            .into_iter()
            .map(|a| {
                Arc::new(Registration::new(
                    a.id,
                    vec![Subscription::Event(a.event)],
                    Target::Handler(a.handler),
                    a.reads,
                ))
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        for (i, reg) in new.iter().enumerate() {
            let taken = state.registrations.iter().any(|r| r.id == reg.id)
                || new[..i].iter().any(|r| r.id == reg.id);
            if taken {
                return Err(AttachError::AlreadyExists(reg.id.clone()));
            }
        }
        state.registrations.extend(new);
        let old_table = self.publish(&mut state);
        drop(state);
        drop(old_table);
        Ok(())
    }

    /// Replaces the handlers attached under the attachments' ids, each in its place, in one
    /// step: every dispatch that starts after `replace_all` returns calls the new handler, and
    /// none is missed in between. An attachment whose id is not attached, or is attached to
    /// something else than that one event (a prefix, several events, a span sink), is ignored
    /// (a paused handler stays paused). Returns how many were replaced. The old handlers are dropped as
    /// detached ones are (see [`Dispatcher::detach`]).
    ///
    /// ```
    /// use dspex_telemetry_core::{Attachment, Dispatcher, Event, EventName, Measurements, Metadata};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// const A: EventName = EventName::from_static(&["app", "a"]);
    /// let dispatcher = Dispatcher::new();
    /// let (old, new) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    /// let seen = old.clone();
    /// dispatcher.attach("a", A, move |_: &Event<'_>| { seen.fetch_add(1, Ordering::Relaxed); }).unwrap();
    /// let seen = new.clone();
    /// let replaced = dispatcher.replace_all([
    ///     Attachment::new("a", A, move |_: &Event<'_>| { seen.fetch_add(1, Ordering::Relaxed); }),
    ///     Attachment::new("absent", A, |_: &Event<'_>| {}),
    /// ]);
    /// assert_eq!(replaced, 1);
    /// dispatcher.execute(&A, &Measurements::new(), &Metadata::new());
    /// assert_eq!((old.load(Ordering::Relaxed), new.load(Ordering::Relaxed)), (0, 1));
    /// assert_eq!(dispatcher.list_handlers(None).len(), 1);
    /// // A handler of a prefix is not replaced by one of an event.
    /// dispatcher.attach_prefix("p", EventName::from_static(&["app"]), |_: &Event<'_>| {}).unwrap();
    /// assert_eq!(dispatcher.replace_all([Attachment::new("p", A, |_: &Event<'_>| {})]), 0);
    /// ```
    pub fn replace_all(&self, handlers: impl IntoIterator<Item = Attachment>) -> usize {
        let mut replacements: Vec<Attachment> = handlers.into_iter().collect();
        let (replaced, old) = {
            let mut state = self.lock();
            let mut old = Vec::new();
            for reg in state.registrations.iter_mut() {
                // Only a handler of exactly that one event: a prefix or many-event
                // subscription, or a span sink, under the same id is left as it is.
                let same_kind = |a: &Attachment| {
                    matches!(reg.target, Target::Handler(_))
                        && matches!(reg.subscriptions.as_slice(), [Subscription::Event(e)] if *e == a.event)
                };
                let Some(at) = replacements
                    .iter()
                    .position(|a| a.id == reg.id && same_kind(a))
                else {
                    continue;
                };
                let a = replacements.swap_remove(at);
                let new = Arc::new(Registration::new(
                    a.id,
                    vec![Subscription::Event(a.event)],
                    Target::Handler(a.handler),
                    a.reads,
                ));
                old.push(std::mem::replace(reg, new));
            }
            let old_table = (!old.is_empty()).then(|| self.publish(&mut state));
            (old.len(), (old, old_table))
        };
        drop(old);
        if replaced > 0 {
            // As in `remove`: this thread lets go of the old table now.
            let evicted = TABLE_CACHE
                .try_with(|cache| cache.evict(self.inner.id))
                .ok()
                .flatten();
            drop(evicted);
        }
        replaced
    }

    /// Detaches the handlers attached under these ids in one step (see [`Dispatcher::detach`]);
    /// returns how many were attached.
    pub fn detach_all(&self, ids: &[impl AsRef<str>]) -> usize {
        let mut count = 0;
        self.remove(|r| {
            let hit = ids.iter().any(|id| id.as_ref() == r.id);
            count += usize::from(hit);
            hit
        });
        count
    }

    /// Detaches the handler attached under `id`: no dispatch that starts after `detach`
    /// returns calls it. It is dropped when no thread holds the old routing table any more: at once on
    /// this thread, at their next dispatch on this dispatcher (or exit) on the others.
    pub fn detach(&self, id: &str) -> Result<(), DetachError> {
        self.remove(|r| r.id == id)
            .then_some(())
            .ok_or_else(|| DetachError::NotFound(id.to_owned()))
    }

    /// Removes the registrations `matches` selects; whether there were any. What is removed
    /// is dropped after the lock is released: a handler's `Drop` may emit events.
    fn remove(&self, mut matches: impl FnMut(&Registration) -> bool) -> bool {
        let (removed, old_table) = {
            let mut state = self.lock();
            let (removed, kept) = std::mem::take(&mut state.registrations)
                .into_iter()
                .partition::<Vec<_>, _>(|r| matches(r));
            state.registrations = kept;
            let old_table = (!removed.is_empty()).then(|| self.publish(&mut state));
            (removed, old_table)
        };
        drop(old_table);
        if !removed.is_empty() {
            // Let this thread's cached table go now, so what was removed is dropped now when
            // no other thread holds it (other threads let go at their next dispatch).
            let evicted = TABLE_CACHE
                .try_with(|cache| cache.evict(self.inner.id))
                .ok()
                .flatten();
            drop(evicted);
        }
        !removed.is_empty()
    }

    /// The handlers listening to an event that starts with `prefix` (all, for `None`).
    pub fn list_handlers(&self, prefix: Option<&EventName>) -> Vec<HandlerInfo> {
        let state = self.lock();
        state
            .registrations
            .iter()
            .filter(|r| prefix.is_none_or(|p| r.subscriptions.iter().any(|s| s.matches_prefix(p))))
            .map(|r| HandlerInfo {
                id: r.id.clone(),
                subscriptions: r.subscriptions.clone(),
            })
            .collect()
    }

    /// How many handler panics this dispatcher has caught.
    pub fn handler_failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// How many handler calls the re-entrancy guard skipped: a handler (or span sink) is not
    /// called for an event emitted, directly or not, from its own call on the same thread,
    /// and handlers nest at most [`MAX_NESTED_HANDLERS`] deep on a thread. Each skip is
    /// counted here; the first skip of each handler is logged at WARN.
    ///
    /// ```
    /// use dspex_telemetry_core::{Dispatcher, Event, EventName, Measurements, Metadata};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// const EVENT: EventName = EventName::from_static(&["app", "echo"]);
    /// let dispatcher = Dispatcher::new();
    /// let calls = Arc::new(AtomicU64::new(0));
    /// let (d, seen) = (dispatcher.clone(), calls.clone());
    /// // A handler that emits the event it handles.
    /// dispatcher
    ///     .attach("echo", EVENT, move |_: &Event<'_>| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         d.execute(&EVENT, &Measurements::new(), &Metadata::new());
    ///     })
    ///     .unwrap();
    /// dispatcher.execute(&EVENT, &Measurements::new(), &Metadata::new());
    /// assert_eq!(calls.load(Ordering::Relaxed), 1);
    /// assert_eq!(dispatcher.reentries_skipped(), 1);
    /// ```
    pub fn reentries_skipped(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// Calls every handler attached to `event`, in attach order, on this thread.
    ///
    /// Never panics because of a handler: a panicking handler is detached and reported. A
    /// handler is never re-entered by the events it emits (see
    /// [`Dispatcher::reentries_skipped`]).
    #[inline]
    pub fn execute(
        &self,
        event: &EventName,
        measurements: &Measurements<'_>,
        metadata: &Metadata<'_>,
    ) {
        if self.inner.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.execute_slow(event, measurements, metadata);
    }

    #[inline(never)]
    fn execute_slow(
        &self,
        name: &EventName,
        measurements: &Measurements<'_>,
        metadata: &Metadata<'_>,
    ) {
        self.with_table(|table| {
            let event = Event {
                name,
                measurements,
                metadata,
            };
            for reg in table.exact(name) {
                self.call(reg, &event);
            }
            for (prefix, reg) in &table.prefixes {
                if name.starts_with(prefix) {
                    self.call(reg, &event);
                }
            }
        });
    }

    /// A number that grows whenever a handler is attached or detached (one atomic load).
    /// Answers of [`Dispatcher::has_handlers`] stay true while it does not change, so a hot
    /// path may cache them against it.
    ///
    /// ```
    /// use dspex_telemetry_core::{Dispatcher, Event, EventName};
    /// let dispatcher = Dispatcher::new();
    /// let before = dispatcher.generation();
    /// dispatcher.attach("h", EventName::from_static(&["app", "done"]), |_: &Event<'_>| {}).unwrap();
    /// assert!(dispatcher.generation() > before);
    /// ```
    #[inline]
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Whether a handler of `event` reads metadata `key` (it was attached without declaring
    /// what it reads, or declared `key`): when none does, an emitter may leave a costly entry
    /// out. A table read: cache the answer against [`Dispatcher::generation`].
    pub fn reads_key(&self, event: &EventName, key: &str) -> bool {
        self.inner.attached.load(Ordering::Relaxed) != 0
            && self.with_table(|t| {
                t.exact(event).iter().any(|r| r.reads.includes(key))
                    || t.prefixes
                        .iter()
                        .any(|(p, r)| event.starts_with(p) && r.reads.includes(key))
            })
    }

    /// Whether `execute(event, …)` would call any handler now.
    #[inline]
    pub fn has_handlers(&self, event: &EventName) -> bool {
        self.inner.attached.load(Ordering::Relaxed) != 0
            && self.with_table(|t| t.has_handlers(event))
    }

    /// Which of the events have a handler, as bits (bit `i` for `events[i]`): one table read
    /// for all of them. Bit 3 ([`SINKS`]) is set when a span sink is attached.
    #[inline]
    pub(crate) fn handled_of(&self, prefix: &EventName, events: [&EventName; 3]) -> u8 {
        if self.inner.attached.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.with_table(|t| {
            let sinks = if t.sinks.is_empty() { 0 } else { SINKS };
            if t.prefixes.is_empty() {
                let events = t
                    .span_events
                    .get(&prefix.precomputed_hash())
                    .copied()
                    .unwrap_or(0);
                return sinks | events;
            }
            events.iter().enumerate().fold(sinks, |bits, (i, e)| {
                bits | (u8::from(t.has_handlers(e)) << i)
            })
        })
    }

    #[inline]
    fn call(&self, reg: &Arc<Registration>, event: &Event<'_>) {
        let Target::Handler(handler) = &reg.target else {
            return;
        };
        let Some(_running) = self.enter_handler(reg) else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler.handle(event))) {
            self.handler_panicked(reg, event.name, payload);
        }
    }

    /// Attaches `sink` under `id`: it receives a [`SpanRecord`] for every span that ends on
    /// this dispatcher (sync, async, `with_span`, and what [`Dispatcher::export_span`] is given:
    /// the spans Python workers time). Detach it with [`Dispatcher::detach`]. Errors if `id`
    /// is attached already.
    ///
    /// With a sink and no handler, a span emits no event: it reads the clock twice, makes its
    /// ids and hands the record over.
    pub fn attach_span_sink(
        &self,
        id: impl Into<String>,
        sink: impl SpanSink,
    ) -> Result<(), AttachError> {
        let id = id.into();
        let mut state = self.lock();
        if state.registrations.iter().any(|r| r.id == id) {
            return Err(AttachError::AlreadyExists(id));
        }
        state.registrations.push(Arc::new(Registration::new(
            id,
            Vec::new(),
            Target::Sink(Box::new(sink)),
            Reads::Only(Vec::new()),
        )));
        let old_table = self.publish(&mut state);
        drop(state);
        drop(old_table);
        Ok(())
    }

    /// Starts a new trace whose root span (`dspex.trace`) goes to this dispatcher's span sinks
    /// when the guard drops; [`crate::context::start_trace`] does the same on the global one.
    pub fn start_trace(&self) -> crate::context::TraceGuard {
        crate::context::TraceGuard::start(self, crate::TraceContext::new_root_span())
    }

    /// Whether a span sink is attached (one atomic load, then a table read).
    #[inline]
    pub fn has_span_sinks(&self) -> bool {
        self.inner.attached.load(Ordering::Relaxed) != 0 && self.with_table(|t| !t.sinks.is_empty())
    }

    /// Hands a finished span to every sink: for spans timed elsewhere (a Python worker's)
    /// and for bridges of other kinds. A sink that panics is detached and reported.
    #[inline]
    pub fn export_span(&self, span: &SpanRecord<'_>) {
        if self.inner.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.with_table(|t| {
            for reg in &t.sinks {
                self.call_sink(reg, span);
            }
        });
    }

    #[inline]
    fn call_sink(&self, reg: &Arc<Registration>, span: &SpanRecord<'_>) {
        let Target::Sink(sink) = &reg.target else {
            return;
        };
        let Some(_running) = self.enter_handler(reg) else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| sink.on_end(span))) {
            self.handler_panicked(reg, catalog::TRACE_SPAN.prefix(), payload);
        }
    }

    /// Marks `reg` as running on this thread until the guard drops; `None` (counted, and
    /// logged once per registration) if it is running already or handlers nest too deep.
    #[inline]
    fn enter_handler(&self, reg: &Registration) -> Option<RunningGuard> {
        let ptr: *const Registration = reg;
        let entered = RUNNING.try_with(|running| {
            let len = running.len.get();
            if len == MAX_NESTED_HANDLERS || running.regs[..len].iter().any(|r| r.get() == ptr) {
                return false;
            }
            running.regs[len].set(ptr);
            running.len.set(len + 1);
            true
        });
        match entered {
            Ok(true) => Some(RunningGuard { counted: true }),
            // Thread teardown: the stack is gone, call without the guard.
            Err(_) => Some(RunningGuard { counted: false }),
            Ok(false) => {
                self.reentry_skipped(reg);
                None
            }
        }
    }

    #[cold]
    fn reentry_skipped(&self, reg: &Registration) {
        self.inner.skipped.fetch_add(1, Ordering::Relaxed);
        if !reg.reentry_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                handler_id = %reg.id,
                max_nested = MAX_NESTED_HANDLERS,
                "telemetry handler not called for an event emitted from its own call (or nested too deep); further skips are counted only"
            );
        }
    }

    #[cold]
    fn handler_panicked(
        &self,
        reg: &Arc<Registration>,
        event: &EventName,
        payload: Box<dyn Any + Send>,
    ) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        let reason = panic_message(&*payload);
        // Detach this registration only: a new handler attached under the same id since the
        // table was read stays.
        if !self.remove(|r| std::ptr::eq(r, &**reg)) {
            return;
        }
        tracing::warn!(handler_id = %reg.id, event = %event, reason = %reason, "telemetry handler panicked and was detached");
        let event_text = event.to_string();
        self.execute(
            &catalog::HANDLER_FAILURE,
            &Measurements::new().with("system_time", crate::clock::system_time_ns()),
            &Metadata::new()
                .with("handler_id", reg.id.as_str())
                .with("event", event_text)
                .with("kind", "panic")
                .with("reason", reason),
        );
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held cannot leave `State` half-updated: `publish` builds
        // the new table before swapping it in.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a table built from `state.registrations`; returns the old one, for the caller
    /// to drop once the lock is released.
    fn publish(&self, state: &mut State) -> Arc<Table> {
        let old = std::mem::replace(
            &mut state.table,
            Arc::new(Table::build(&state.registrations)),
        );
        state.generation += 1;
        self.inner
            .attached
            .store(state.registrations.len(), Ordering::Relaxed);
        self.inner
            .generation
            .store(state.generation, Ordering::Release);
        old
    }

    /// Runs `f` with the current routing table, from this thread's cache when it is fresh.
    #[inline]
    fn with_table<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let cached = TABLE_CACHE.try_with(|cache| {
            let _depth = cache.enter();
            let table = cache.get(&self.inner, generation)?;
            // SAFETY: `get` returned a pointer into an `Arc<Table>` held by the cache. The
            // cache replaces (and so may drop) tables only in the outermost dispatch on this
            // thread, before it reads its table; `enter` marks this dispatch until `f`
            // returns, so no nested dispatch can drop the table under this borrow.
            let table = unsafe { &*table };
            f.take().map(|f| f(table))
        });
        match (cached, f) {
            (Ok(Some(result)), _) => result,
            (_, Some(f)) => {
                // Re-entrant call with a stale cache, or thread teardown: read under the lock.
                let table = self.lock().table.clone();
                f(&table)
            }
            (_, None) => unreachable!("the closure ran, so it returned a result"),
        }
    }
}

/// How deep handler calls may nest on one thread (a handler emitting an event whose handler
/// emits another, …) before the dispatcher skips further calls.
pub const MAX_NESTED_HANDLERS: usize = 16;

/// The registrations whose handlers are running on this thread, innermost last.
struct Running {
    len: Cell<usize>,
    regs: [Cell<*const Registration>; MAX_NESTED_HANDLERS],
}

thread_local! {
    static RUNNING: Running = const {
        Running {
            len: Cell::new(0),
            regs: [const { Cell::new(std::ptr::null()) }; MAX_NESTED_HANDLERS],
        }
    };
}

/// Pops its registration off [`RUNNING`] when the handler returns (or panics).
struct RunningGuard {
    counted: bool,
}

impl Drop for RunningGuard {
    #[inline]
    fn drop(&mut self) {
        if self.counted {
            let _ = RUNNING.try_with(|running| running.len.set(running.len.get() - 1));
        }
    }
}

/// The bit of [`Dispatcher::handled_of`] that says a span sink is attached.
pub(crate) const SINKS: u8 = 1 << 3;

/// The global dispatcher's id space starts at 1; a cache slot with id 0 is empty.
const CACHE_SLOTS: usize = 4;

struct CacheSlot {
    dispatcher: u64,
    generation: u64,
    table: Option<Arc<Table>>,
}

struct TableCache {
    depth: Cell<u32>,
    next_victim: Cell<usize>,
    slots: UnsafeCell<[CacheSlot; CACHE_SLOTS]>,
}

thread_local! {
    static TABLE_CACHE: TableCache = const {
        TableCache {
            depth: Cell::new(0),
            next_victim: Cell::new(0),
            slots: UnsafeCell::new([const { CacheSlot { dispatcher: 0, generation: 0, table: None } }; CACHE_SLOTS]),
        }
    };
}

struct DepthGuard<'a>(&'a Cell<u32>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl TableCache {
    fn enter(&self) -> DepthGuard<'_> {
        self.depth.set(self.depth.get() + 1);
        DepthGuard(&self.depth)
    }

    /// A pointer to the fresh table of `inner` at `generation`, refreshing the cache if no
    /// dispatch is running on this thread; `None` if the cache cannot serve it now.
    #[inline]
    fn get(&self, inner: &Inner, generation: u64) -> Option<*const Table> {
        let slots = self.slots.get();
        // SAFETY: only this thread touches its cache, and no reference into `slots` lives
        // across calls: readers keep pointers to the tables, which are separate allocations.
        unsafe {
            for slot in (*slots).iter() {
                if slot.dispatcher == inner.id && slot.generation == generation {
                    if let Some(table) = &slot.table {
                        return Some(Arc::as_ptr(table));
                    }
                }
            }
        }
        // Only the outermost dispatch (depth 1: the caller's own) may replace a slot.
        if self.depth.get() != 1 {
            return None;
        }
        self.refresh(inner)
    }

    /// Takes this thread's cached table of dispatcher `id` out of the cache, unless a
    /// dispatch is running on this thread (it may be reading that table).
    fn evict(&self, id: u64) -> Option<Arc<Table>> {
        if self.depth.get() != 0 {
            return None;
        }
        // SAFETY: no dispatch runs on this thread (depth 0), so no pointer into a cached table
        // is held; only this thread touches its cache.
        let slots = unsafe { &mut *self.slots.get() };
        let slot = slots.iter_mut().find(|s| s.dispatcher == id)?;
        slot.dispatcher = 0;
        slot.table.take()
    }

    #[cold]
    fn refresh(&self, inner: &Inner) -> Option<*const Table> {
        let (generation, table) = {
            let state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.generation, state.table.clone())
        };
        let ptr = Arc::as_ptr(&table);
        let slots = self.slots.get();
        // SAFETY: only the outermost dispatch refreshes, before it holds any table pointer, so
        // no dispatch on this thread holds a pointer into a table that replacing a slot could
        // drop; only this thread touches its cache.
        let old = unsafe {
            let slots = &mut *slots;
            let index = slots
                .iter()
                .position(|s| s.dispatcher == inner.id)
                .unwrap_or_else(|| {
                    let victim = self.next_victim.get();
                    self.next_victim.set((victim + 1) % CACHE_SLOTS);
                    victim
                });
            let slot = &mut slots[index];
            slot.dispatcher = inner.id;
            slot.generation = generation;
            slot.table.replace(table)
        };
        // Dropping a table may drop handlers, which may emit events: nested dispatches see a
        // depth above 1 and read under the lock instead of touching the cache.
        drop(old);
        Some(ptr)
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Cow<'static, str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Cow::Borrowed(s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Cow::Owned(s.clone())
    } else {
        Cow::Borrowed("panic with a non-string payload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanPrefix;

    const OP: SpanPrefix = SpanPrefix::from_static(&["app", "op"]);
    const OTHER: SpanPrefix = SpanPrefix::from_static(&["app", "other"]);

    fn slow(d: &Dispatcher, prefix: &SpanPrefix) -> u8 {
        let sinks = d.with_table(|t| if t.sinks.is_empty() { 0 } else { SINKS });
        [prefix.start(), prefix.stop(), prefix.exception()]
            .iter()
            .enumerate()
            .fold(sinks, |bits, (i, e)| {
                bits | (u8::from(d.has_handlers(e)) << i)
            })
    }

    fn handled(d: &Dispatcher, prefix: &SpanPrefix) -> u8 {
        d.handled_of(
            prefix.prefix(),
            [prefix.start(), prefix.stop(), prefix.exception()],
        )
    }

    #[test]
    fn a_spans_events_are_found_in_one_lookup_as_in_three() {
        let d = Dispatcher::new();
        let noop = |_: &Event<'_>| {};
        assert_eq!(handled(&d, &OP), 0);
        d.attach("stop", OP.stop().clone(), noop).unwrap();
        assert_eq!(handled(&d, &OP), 2);
        d.attach("exc", OP.exception().clone(), noop).unwrap();
        // A run-time name equal to the static one routes the same.
        let runtime = SpanPrefix::new(EventName::parse("app.op").unwrap());
        d.attach("start", runtime.start().clone(), noop).unwrap();
        for prefix in [&OP, &runtime, &OTHER] {
            assert_eq!(handled(&d, prefix), slow(&d, prefix));
        }
        assert_eq!(handled(&d, &OP), 7);
        assert_eq!(handled(&d, &OTHER), 0);
        // With a prefix subscription the three names are looked up one by one.
        d.attach_prefix("all", EventName::from_static(&["app"]), noop)
            .unwrap();
        assert_eq!(handled(&d, &OTHER), 7);
        assert_eq!(handled(&d, &OTHER), slow(&d, &OTHER));
        d.detach("all").unwrap();
        d.detach("exc").unwrap();
        assert_eq!(handled(&d, &OP), 3);
        assert_eq!(handled(&d, &OP), slow(&d, &OP));
    }
}
