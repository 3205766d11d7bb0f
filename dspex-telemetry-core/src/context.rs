//! Trace context: which trace, span and correlation id the current work belongs to.
//!
//! The context lives in a thread-local slot. Synchronous code sets it for a scope
//! ([`TraceContext::in_scope`], [`with_correlation`], [`crate::with_span`]); async code
//! carries it across `.await` points with [`crate::WithTraceContext`]; spawned tasks and
//! threads take it along explicitly:
//!
//! ```
//! use dspex_telemetry_core::{context, TraceContext};
//!
//! let root = TraceContext::new_root();
//! root.in_scope(|| {
//!     // Carry the context into a thread: capture it, then enter it there.
//!     let ctx = context::current().expect("inside a scope");
//!     std::thread::spawn(move || {
//!         ctx.in_scope(|| assert_eq!(context::current().unwrap().trace_id(), ctx.trace_id()))
//!     })
//!     .join()
//!     .unwrap();
//! });
//! assert!(context::current().is_none());
//! ```
//!
//! For tokio tasks: `tokio::spawn(future.with_trace_context(context::current()))`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use crate::baggage::{Baggage, BaggageError};
use crate::ids::{CorrelationId, SpanId, TraceFlags, TraceId};
use crate::traceparent::TraceParent;
use crate::tracestate::TraceState;
use crate::value::Value;

/// The baggage key the correlation id travels under.
pub const CORRELATION_BAGGAGE_KEY: &str = "correlation_id";

/// The context of one unit of work within a trace: W3C ids and flags, plus the correlation id
/// and baggage shared by every span of the request.
///
/// Cloning copies the ids and increments one reference count (when there is a correlation id
/// or baggage); it never allocates.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    flags: TraceFlags,
    /// Whether `parent_span_id` is a span of another process (a caller's `traceparent`).
    remote_parent: bool,
    /// Whether this context stands for a trace (and its caller's span) without being a span
    /// itself: nothing exports it, so its children take its parent as theirs.
    placeholder: bool,
    shared: Option<Arc<Shared>>,
    /// This span's own attributes ([`set_attributes`]); not inherited by children.
    attributes: Option<Arc<Attributes>>,
}

/// Attributes of one span, compared bit for bit (so floats compare as `Eq` needs).
#[derive(Debug, Clone, Default)]
struct Attributes(Vec<(String, Value<'static>)>);

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|((ka, va), (kb, vb))| {
                ka == kb
                    && match (va, vb) {
                        (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
                        (a, b) => a == b,
                    }
            })
    }
}

impl Eq for Attributes {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shared {
    correlation_id: Option<CorrelationId>,
    baggage: Baggage,
    tracestate: TraceState,
}

static EMPTY_BAGGAGE: LazyLock<Baggage> = LazyLock::new(Baggage::new);
static EMPTY_TRACESTATE: TraceState = TraceState::new();

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &format_args!("{}", self.trace_id))
            .field("span_id", &format_args!("{}", self.span_id))
            .field(
                "parent_span_id",
                &self.parent_span_id.map(|s| s.to_string()),
            )
            .field("flags", &self.flags.bits())
            .field("is_span", &!self.placeholder)
            .field("correlation_id", &self.correlation_id().as_str())
            .field("baggage_members", &self.baggage().len())
            .field("tracestate_members", &self.tracestate().len())
            .finish()
    }
}

impl TraceContext {
    /// A new trace: a random trace id, sampled. Does not allocate.
    ///
    /// It is no span itself (nothing exports it): the spans started in it are the trace's
    /// roots. [`start_trace`] makes a trace whose root is a span, exported when it ends.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_span_id: None,
            flags: TraceFlags::SAMPLED,
            remote_parent: false,
            placeholder: true,
            shared: None,
            attributes: None,
        }
    }

    /// A new trace whose root is a span of its own (exported by whoever ends it, as
    /// [`start_trace`]'s guard does).
    pub(crate) fn new_root_span() -> Self {
        TraceContext {
            placeholder: false,
            ..Self::new_root()
        }
    }

    /// The context of a span started where no dspex context is current: a new trace's root,
    /// or (feature `opentelemetry`) a child of OpenTelemetry's current span.
    #[inline]
    pub(crate) fn fresh_span() -> Self {
        #[cfg(feature = "opentelemetry")]
        if let Some(parent) = crate::otel::current_parent() {
            return parent.child();
        }
        Self::new_root_span()
    }

    /// A context that stands for span `span_id` of trace `trace_id` (in another process when
    /// `remote`) without being it: the spans started in it are that span's children.
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn standing_for(
        trace_id: TraceId,
        span_id: SpanId,
        flags: TraceFlags,
        remote: bool,
    ) -> Self {
        TraceContext {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: Some(span_id),
            flags,
            remote_parent: remote,
            placeholder: true,
            shared: None,
            attributes: None,
        }
    }

    /// A new trace that carries `correlation_id` instead of one derived from the trace id.
    pub fn new_root_with_correlation(correlation_id: CorrelationId) -> Self {
        Self::new_root().with_correlation_id(correlation_id)
    }

    /// The local side of a request whose caller sent `traceparent`: same trace, the caller's
    /// flags.
    ///
    /// It is no span itself: the spans started in it are children of the caller's span, and a
    /// call made from it directly sends the caller's `traceparent` on. The `http` feature's
    /// layer runs each request in a server span under it.
    pub fn continue_from(traceparent: &TraceParent) -> Self {
        TraceContext {
            trace_id: traceparent.trace_id,
            span_id: SpanId::random(),
            parent_span_id: Some(traceparent.parent_id),
            flags: traceparent.flags,
            remote_parent: true,
            placeholder: true,
            shared: None,
            attributes: None,
        }
    }

    /// A context with exactly these ids, for code that restores one (a worker's reply).
    pub fn from_parts(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        flags: TraceFlags,
    ) -> Self {
        TraceContext {
            trace_id,
            span_id,
            parent_span_id,
            flags,
            remote_parent: false,
            placeholder: false,
            shared: None,
            attributes: None,
        }
    }

    /// A child span of this one: same trace, correlation id, baggage and tracestate; a new
    /// span id. The child of a context that is no span ([`TraceContext::new_root`],
    /// [`TraceContext::continue_from`]) takes that context's parent as its own.
    #[inline]
    pub fn child(&self) -> Self {
        let (parent_span_id, remote_parent) = match self.placeholder {
            false => (Some(self.span_id), false),
            true => (self.parent_span_id, self.remote_parent),
        };
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent_span_id,
            flags: self.flags,
            remote_parent,
            placeholder: false,
            shared: self.shared.clone(),
            attributes: None,
        }
    }

    /// Whether this context is a span (exported when it ends) rather than one that stands for
    /// a trace, or a caller's span, without being a span itself.
    pub fn is_span(&self) -> bool {
        !self.placeholder
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span's id; `None` for a trace's root.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// Whether the parent span lives in another process (this context continues a caller's
    /// `traceparent`).
    pub fn parent_is_remote(&self) -> bool {
        self.remote_parent
    }

    /// This span's attributes as a span record holds them.
    pub fn span_attributes(&self) -> crate::record::SpanAttributes<'_> {
        crate::record::SpanAttributes(self.attributes.as_ref().map_or(&[], |a| &a.0))
    }

    /// The W3C trace flags.
    pub fn flags(&self) -> TraceFlags {
        self.flags
    }

    /// The correlation id: the one given, or else the trace id's hex (built on each call).
    pub fn correlation_id(&self) -> CorrelationId {
        self.explicit_correlation_id()
            .cloned()
            .unwrap_or_else(|| CorrelationId::from_trace_id(self.trace_id))
    }

    /// The correlation id if one was given, rather than derived from the trace id.
    pub fn explicit_correlation_id(&self) -> Option<&CorrelationId> {
        self.shared.as_ref().and_then(|s| s.correlation_id.as_ref())
    }

    /// The baggage.
    pub fn baggage(&self) -> &Baggage {
        self.shared.as_ref().map_or(&EMPTY_BAGGAGE, |s| &s.baggage)
    }

    /// The caller's `tracestate` (vendors' entries), handed on by every call made from this
    /// trace; empty when the trace started here or the caller sent none.
    pub fn tracestate(&self) -> &TraceState {
        self.shared
            .as_ref()
            .map_or(&EMPTY_TRACESTATE, |s| &s.tracestate)
    }

    /// This context with `tracestate` in place of its own (for this span and its children).
    pub fn with_tracestate(mut self, tracestate: TraceState) -> Self {
        if tracestate.is_empty() && self.tracestate().is_empty() {
            return self;
        }
        self.shared_mut().tracestate = tracestate;
        self
    }

    /// This context with `correlation_id`.
    pub fn with_correlation_id(mut self, correlation_id: CorrelationId) -> Self {
        self.shared_mut().correlation_id = Some(correlation_id);
        self
    }

    /// This context with `baggage` in place of its baggage.
    pub fn with_baggage(mut self, baggage: Baggage) -> Self {
        self.shared_mut().baggage = baggage;
        self
    }

    /// Adds one baggage entry to this context (and so to the spans started from it).
    pub fn add_baggage(&mut self, key: &str, value: &str) -> Result<(), BaggageError> {
        self.shared_mut().baggage.insert(key, value)
    }

    /// Sets attributes on this span (replacing a key already set): they describe this span
    /// only, and exporters send them with it (OpenTelemetry span attributes).
    pub fn set_attribute(&mut self, key: impl Into<String>, value: impl Into<Value<'static>>) {
        let key = key.into();
        let value = value.into();
        let attributes = &mut Arc::make_mut(self.attributes.get_or_insert_with(Default::default)).0;
        match attributes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => attributes.push((key, value)),
        }
    }

    /// This span's attributes, in the order they were first set.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value<'static>)> + '_ {
        self.attributes
            .iter()
            .flat_map(|a| a.0.iter().map(|(k, v)| (k.as_str(), v)))
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(self.shared.get_or_insert_with(Default::default))
    }

    /// The `traceparent` that a call made from this span sends: this span as the parent, or,
    /// from a context that continues a caller's trace without being a span, the caller's.
    pub fn traceparent(&self) -> TraceParent {
        let parent_id = match (self.placeholder, self.parent_span_id) {
            (true, Some(caller)) => caller,
            _ => self.span_id,
        };
        TraceParent {
            trace_id: self.trace_id,
            parent_id,
            flags: self.flags,
        }
    }

    /// The `baggage` that a call made from this span sends: the baggage plus the correlation
    /// id, when one was given, under [`CORRELATION_BAGGAGE_KEY`].
    pub fn outgoing_baggage(&self) -> Baggage {
        let mut baggage = self.baggage().clone();
        if let Some(id) = self.explicit_correlation_id() {
            // A validated correlation id is a short printable string: it always fits unless
            // the baggage is already full, and then the baggage goes as it is.
            let _ = baggage.insert(CORRELATION_BAGGAGE_KEY, id.as_str());
        }
        baggage
    }

    /// Appends the `baggage` header value a call made from this span sends (that of
    /// [`TraceContext::outgoing_baggage`]) to `out`, without copying the baggage when it holds
    /// nothing but the correlation id.
    pub fn push_outgoing_baggage(&self, out: &mut String) {
        match self.explicit_correlation_id() {
            Some(id) if self.baggage().is_empty() => {
                out.push_str(CORRELATION_BAGGAGE_KEY);
                out.push('=');
                crate::baggage::percent_encode(id.as_str(), out);
            }
            None => self.baggage().push_header(out),
            Some(_) => self.outgoing_baggage().push_header(out),
        }
    }

    /// Runs `f` with this context as the current one, then restores the previous one.
    #[inline]
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.clone().attach();
        f()
    }

    /// Makes this context the current one on this thread until the guard drops.
    ///
    /// Guards must drop in the reverse order of their creation (as scopes do). Do not hold
    /// one across an `.await`: use [`crate::WithTraceContext`] for futures.
    #[inline]
    pub fn attach(self) -> ContextGuard {
        ContextGuard {
            #[cfg(feature = "opentelemetry")]
            _otel: crate::otel::attach(&self),
            previous: replace_current(Some(self)),
            _not_send: PhantomData,
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// Puts `ctx` in the current slot, returning what was there.
#[inline]
pub(crate) fn replace_current(ctx: Option<TraceContext>) -> Option<TraceContext> {
    CURRENT.try_with(|c| c.replace(ctx)).unwrap_or(None)
}

/// Makes a child of the current context (or a new trace's root) current, in one access to
/// the slot; the guard restores the parent.
#[inline]
pub(crate) fn enter_child() -> ContextGuard {
    let previous = CURRENT
        .try_with(|c| {
            let parent = c.take();
            let child = parent
                .as_ref()
                .map_or_else(TraceContext::fresh_span, TraceContext::child);
            #[cfg(feature = "opentelemetry")]
            let otel = crate::otel::attach(&child);
            c.set(Some(child));
            #[cfg(feature = "opentelemetry")]
            return (parent, otel);
            #[cfg(not(feature = "opentelemetry"))]
            parent
        })
        .ok();
    #[cfg(feature = "opentelemetry")]
    let (previous, _otel) = previous.unwrap_or_default();
    #[cfg(not(feature = "opentelemetry"))]
    let previous = previous.flatten();
    ContextGuard {
        #[cfg(feature = "opentelemetry")]
        _otel,
        previous,
        _not_send: PhantomData,
    }
}

/// Runs `f` on this thread's current context in place; `None` during thread teardown.
#[inline]
fn with_current<R>(f: impl FnOnce(&mut Option<TraceContext>) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| {
            let mut ctx = c.take();
            let result = f(&mut ctx);
            c.set(ctx);
            result
        })
        .ok()
}

/// Runs `f` on this thread's current context without cloning it (`f` itself runs with no
/// current context: span sinks are called this way).
#[inline]
pub(crate) fn with_current_ref<R>(f: impl FnOnce(Option<&TraceContext>) -> R) -> Option<R> {
    let mut f = Some(f);
    with_current(|ctx| f.take().map(|f| f(ctx.as_ref()))).flatten()
}

/// Whether a trace context is current on this thread, without cloning it.
#[inline]
pub fn is_active() -> bool {
    with_current(|ctx| ctx.is_some()).unwrap_or(false)
}

/// Restores the previous context when dropped. Not `Send`: a context belongs to a thread.
#[must_use = "the context is current only while the guard lives"]
#[derive(Debug)]
pub struct ContextGuard {
    previous: Option<TraceContext>,
    /// OpenTelemetry's current context while this one is current.
    #[cfg(feature = "opentelemetry")]
    _otel: Option<opentelemetry::ContextGuard>,
    _not_send: PhantomData<*const ()>,
}

impl ContextGuard {
    /// Ends the context this guard made current: `f` gets it (with no context current, as
    /// span sinks are called), then the previous one is current again. One access to the
    /// slot fewer than reading the context and then dropping the guard.
    #[inline]
    pub(crate) fn end<R>(self, f: impl FnOnce(Option<&TraceContext>) -> R) -> R {
        let ended = CURRENT.try_with(Cell::take).ok().flatten();
        let result = f(ended.as_ref());
        drop(self);
        result
    }
}

impl Drop for ContextGuard {
    #[inline]
    fn drop(&mut self) {
        let previous = self.previous.take();
        // What was current (the context this guard made, or what replaced it) is dropped.
        let _ = CURRENT.try_with(|c| c.replace(previous));
    }
}

/// The current trace context, if any.
#[inline]
pub fn current() -> Option<TraceContext> {
    with_current(|ctx| ctx.clone()).flatten()
}

/// A fresh correlation id (32 random hex digits, like a trace id).
pub fn generate_correlation_id() -> CorrelationId {
    CorrelationId::from_trace_id(TraceId::random())
}

/// Starts a new trace and makes it current until the guard drops. Its root is a span,
/// `dspex.trace`, that lasts as long as the guard: the spans started meanwhile are its
/// children, and the global dispatcher's span sinks (the OTLP exporter) receive it when the
/// guard drops, with the attributes [`set_attributes`] gave it.
///
/// ```
/// use dspex_telemetry_core::context;
/// let trace = context::start_trace();
/// let ctx = context::current().unwrap();
/// assert_eq!(ctx.correlation_id().as_str(), ctx.trace_id().to_string());
/// assert!(ctx.is_span());
/// drop(trace);
/// assert!(context::current().is_none());
/// ```
pub fn start_trace() -> TraceGuard {
    TraceGuard::start(crate::Dispatcher::global(), TraceContext::new_root_span())
}

/// Starts a new trace carrying `correlation_id` and makes it current until the guard drops;
/// as [`start_trace`].
pub fn start_trace_with(correlation_id: CorrelationId) -> TraceGuard {
    TraceGuard::start(
        crate::Dispatcher::global(),
        TraceContext::new_root_span().with_correlation_id(correlation_id),
    )
}

/// A trace started by [`start_trace`]: current until the guard drops, when its root span ends.
/// Not `Send`: a context belongs to a thread.
#[must_use = "the trace is current only while the guard lives"]
#[derive(Debug)]
pub struct TraceGuard {
    /// OpenTelemetry's current context while the trace is current (dropped last).
    #[cfg(feature = "opentelemetry")]
    _otel: Option<opentelemetry::ContextGuard>,
    dispatcher: crate::Dispatcher,
    started: crate::clock::Instant,
    root: SpanId,
    previous: Option<Option<TraceContext>>,
    _not_send: PhantomData<*const ()>,
}

impl TraceGuard {
    pub(crate) fn start(dispatcher: &crate::Dispatcher, root: TraceContext) -> Self {
        TraceGuard {
            #[cfg(feature = "opentelemetry")]
            _otel: crate::otel::attach(&root),
            dispatcher: dispatcher.clone(),
            started: crate::clock::now(),
            root: root.span_id,
            previous: Some(replace_current(Some(root))),
            _not_send: PhantomData,
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        // The root as the code left it (with the attributes it set), then the previous one.
        let root = replace_current(previous);
        // (Guards dropped out of order leave another context here: it is not this root.)
        if let Some(root) = root.filter(|r| r.span_id == self.root) {
            crate::span::export_context_span(
                &self.dispatcher,
                &root,
                crate::record::SpanName::Text("dspex.trace"),
                crate::record::SpanKind::Internal,
                self.started,
                crate::record::SpanStatus::Unset,
            );
        }
    }
}

/// Runs `f` correlated under `correlation_id`: in the current trace if there is one (its
/// correlation id replaced for the scope), else in a new trace.
///
/// ```
/// use dspex_telemetry_core::{context, CorrelationId};
/// let id = CorrelationId::parse("order-1234").unwrap();
/// context::with_correlation(id.clone(), || {
///     assert_eq!(context::current().unwrap().correlation_id(), id);
/// });
/// ```
pub fn with_correlation<R>(correlation_id: CorrelationId, f: impl FnOnce() -> R) -> R {
    let ctx = current().unwrap_or_else(TraceContext::new_root);
    let _guard = ctx.with_correlation_id(correlation_id).attach();
    f()
}

/// Sets attributes on the current span (as the spec's `OpenTelemetry.set_attributes`); they
/// are sent with that span by the exporters. Returns false, doing nothing, when no trace
/// context is current.
///
/// ```
/// use dspex_telemetry_core::{context, with_span};
/// with_span("business.process_request", || {
///     assert!(context::set_attributes([("business.data_size", 512.into()), ("business.tier", "gold".into())]));
///     let ctx = context::current().unwrap();
///     assert_eq!(ctx.attributes().count(), 2);
/// });
/// assert!(!context::set_attributes([("orphan", true.into())]));
/// ```
pub fn set_attributes<K: Into<String>>(
    attributes: impl IntoIterator<Item = (K, Value<'static>)>,
) -> bool {
    with_current(|ctx| match ctx {
        Some(ctx) => {
            for (k, v) in attributes {
                ctx.set_attribute(k, v);
            }
            true
        }
        None => false,
    })
    .unwrap_or(false)
}

/// Adds a baggage entry to the current context; it travels with every call made from this
/// scope, and ends with the scope.
///
/// ```
/// use dspex_telemetry_core::context;
/// let _trace = context::start_trace();
/// context::add_baggage("error.context", "checkout").unwrap();
/// assert_eq!(context::current().unwrap().baggage().get("error.context"), Some("checkout"));
/// ```
pub fn add_baggage(key: &str, value: &str) -> Result<(), BaggageError> {
    with_current(|ctx| match ctx {
        Some(ctx) => ctx.add_baggage(key, value),
        None => Err(BaggageError::NoActiveTrace),
    })
    .unwrap_or(Err(BaggageError::NoActiveTrace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert!(current().is_none());
        let root = TraceContext::new_root();
        root.in_scope(|| {
            let child = current().unwrap().child();
            child.in_scope(|| {
                let now = current().unwrap();
                assert_eq!(now.trace_id(), root.trace_id());
                assert_eq!(now.parent_span_id(), None, "the root is no span");
                let grandchild = now.child();
                assert_eq!(grandchild.parent_span_id(), Some(now.span_id()));
            });
            assert_eq!(current().unwrap(), root);
        });
        assert!(current().is_none());
        assert!(!is_active());
    }

    #[test]
    fn contexts_that_are_no_span_hand_their_parent_to_their_children() {
        let tp =
            TraceParent::parse("00-12345678901234567890123456789012-1234567890123456-01").unwrap();
        let caller = TraceContext::continue_from(&tp);
        assert!(!caller.is_span());
        assert_eq!(
            caller.traceparent(),
            tp,
            "a call from it sends the caller's on"
        );
        let child = caller.child();
        assert!(child.is_span());
        assert_eq!(child.parent_span_id(), Some(tp.parent_id));
        assert!(child.parent_is_remote());
        assert_ne!(child.traceparent(), tp);
        assert!(!child.child().parent_is_remote());

        let trace = start_trace();
        let root = current().unwrap();
        assert!(root.is_span() && root.parent_span_id().is_none());
        assert_eq!(root.child().parent_span_id(), Some(root.span_id()));
        drop(trace);
    }

    #[test]
    fn baggage_needs_a_trace_and_ends_with_its_scope() {
        assert_eq!(add_baggage("k", "v"), Err(BaggageError::NoActiveTrace));
        let root = TraceContext::new_root();
        root.in_scope(|| {
            add_baggage("k", "v").unwrap();
            assert_eq!(current().unwrap().baggage().get("k"), Some("v"));
            assert_eq!(current().unwrap().child().baggage().get("k"), Some("v"));
        });
        assert!(root.baggage().is_empty(), "the caller's copy is unchanged");
    }

    #[test]
    fn correlation_defaults_to_the_trace_id_and_travels_as_baggage_when_given() {
        let root = TraceContext::new_root();
        assert_eq!(root.correlation_id().as_str(), root.trace_id().to_string());
        assert!(root.outgoing_baggage().is_empty());
        let id = CorrelationId::parse("req-1").unwrap();
        let ctx = root.with_correlation_id(id);
        assert_eq!(
            ctx.outgoing_baggage().get(CORRELATION_BAGGAGE_KEY),
            Some("req-1")
        );
        with_correlation(CorrelationId::parse("req-2").unwrap(), || {
            assert_eq!(current().unwrap().correlation_id().as_str(), "req-2");
        });
    }

    #[test]
    fn the_outgoing_baggage_header_is_written_as_outgoing_baggage_gives_it() {
        let id = || CorrelationId::parse("req-1%;,=x").unwrap();
        let mut with_member = TraceContext::new_root();
        with_member.add_baggage("tenant", "a b").unwrap();
        let mut with_own_id = TraceContext::new_root().with_correlation_id(id());
        with_own_id
            .add_baggage(CORRELATION_BAGGAGE_KEY, "old")
            .unwrap();
        let mut both = with_member.clone().with_correlation_id(id());
        both.add_baggage("region", "eu").unwrap();
        for ctx in [
            TraceContext::new_root(),
            TraceContext::new_root().with_correlation_id(id()),
            with_member,
            with_own_id,
            both,
        ] {
            let mut out = String::from("prefix ");
            ctx.push_outgoing_baggage(&mut out);
            assert_eq!(
                out,
                format!("prefix {}", ctx.outgoing_baggage().to_header())
            );
        }
    }
}
