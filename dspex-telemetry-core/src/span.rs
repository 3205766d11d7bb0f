//! Spans: `start`, then `stop` or `exception`, around a piece of work, sync or async.

use std::fmt::Display;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::catalog;
use crate::clock::{Instant, monotonic_ns_at, now, system_time_ns, unix_ns_at};
use crate::context::{self, TraceContext, replace_current};
use crate::dispatcher::{Dispatcher, SINKS, panic_message};
use crate::event::EventName;
use crate::record::{SpanKind, SpanMetadata, SpanName, SpanRecord, SpanStatus};
use crate::value::{Measurements, Metadata};

/// The three event names of a span sharing one prefix: `…:start`, `…:stop`, `…:exception`.
///
/// ```
/// use dspex_telemetry_core::SpanPrefix;
/// const MY_OP: SpanPrefix = SpanPrefix::from_static(&["myapp", "my_component", "operation"]);
/// assert_eq!(MY_OP.stop().to_string(), "myapp.my_component.operation.stop");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPrefix {
    prefix: EventName,
    start: EventName,
    stop: EventName,
    exception: EventName,
    kind: SpanKind,
}

impl SpanPrefix {
    /// A prefix from static segments; all four names are built at compile time in a `const`.
    /// Its spans are [`SpanKind::Internal`].
    pub const fn from_static(segments: &'static [&'static str]) -> Self {
        SpanPrefix {
            prefix: EventName::from_static(segments),
            start: EventName::from_static_with_phase(segments, "start"),
            stop: EventName::from_static_with_phase(segments, "stop"),
            exception: EventName::from_static_with_phase(segments, "exception"),
            kind: SpanKind::Internal,
        }
    }

    /// A prefix from a run-time name.
    pub fn new(prefix: EventName) -> Self {
        SpanPrefix {
            start: prefix.with_phase("start"),
            stop: prefix.with_phase("stop"),
            exception: prefix.with_phase("exception"),
            prefix,
            kind: SpanKind::Internal,
        }
    }

    /// This prefix with its spans of `kind` (a call to another process is
    /// [`SpanKind::Client`]).
    pub const fn with_kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    /// The kind of its spans.
    pub fn kind(&self) -> SpanKind {
        self.kind
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &EventName {
        &self.prefix
    }
    /// `…:start`.
    pub fn start(&self) -> &EventName {
        &self.start
    }
    /// `…:stop`.
    pub fn stop(&self) -> &EventName {
        &self.stop
    }
    /// `…:exception`.
    pub fn exception(&self) -> &EventName {
        &self.exception
    }

    /// The three names, in the order of the [`START`] bit and the next two.
    fn names(&self) -> [&EventName; 3] {
        [&self.start, &self.stop, &self.exception]
    }
}

/// The bit of `start` in [`Dispatcher::handled_of`] over [`SpanPrefix::names`].
const START: u8 = 1;

/// Whether a span opens a trace context when none is current.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContextPolicy {
    /// Only when a handler listens (the span then has ids to export).
    WhenObserved,
    /// Always: [`with_span`] promises a current span to the code inside it.
    Always,
}

fn span_context() -> TraceContext {
    context::with_current_ref(|parent| {
        parent.map_or_else(TraceContext::fresh_span, TraceContext::child)
    })
    .unwrap_or_else(TraceContext::fresh_span)
}

// Built in place: chained `with` calls would move the inline array at each step.
fn start_measurements(started: Instant) -> Measurements<'static> {
    let mut m = Measurements::new();
    m.push_new("monotonic_time", monotonic_ns_at(started));
    m.push_new("system_time", system_time_ns());
    m
}

fn end_measurements(started: Instant, ended: Instant) -> Measurements<'static> {
    let duration =
        i64::try_from(ended.saturating_duration_since(started).as_nanos()).unwrap_or(i64::MAX);
    let mut m = Measurements::new();
    m.push_new("duration", duration);
    m.push_new("monotonic_time", monotonic_ns_at(ended));
    m
}

/// The bits of `stop` and `exception` in [`Dispatcher::handled_of`].
const STOP: u8 = 2;
const EXCEPTION: u8 = 4;

/// Hands the span `ctx` is, from `started` until now, to `dispatcher`'s span sinks (if
/// any): for spans that are no closure's (a trace's root, a server request). Its metadata is
/// empty; its attributes are those set on `ctx`.
pub(crate) fn export_context_span(
    dispatcher: &Dispatcher,
    ctx: &TraceContext,
    name: SpanName<'_>,
    kind: SpanKind,
    started: Instant,
    status: SpanStatus<'_>,
) {
    if !dispatcher.has_span_sinks() {
        return;
    }
    let empty = Metadata::new();
    let times = (started, now());
    dispatcher.export_span(&record_of(
        ctx,
        name,
        kind,
        times,
        status,
        SpanMetadata::one(&empty),
    ));
}

/// The record of the span `ctx` is, which ran from `started` to `ended`.
#[inline]
fn record_of<'a>(
    ctx: &'a TraceContext,
    name: SpanName<'a>,
    kind: SpanKind,
    (started, ended): (Instant, Instant),
    status: SpanStatus<'a>,
    metadata: SpanMetadata<'a>,
) -> SpanRecord<'a> {
    SpanRecord {
        trace_id: ctx.trace_id(),
        span_id: ctx.span_id(),
        parent_span_id: ctx.parent_span_id(),
        parent_is_remote: ctx.parent_is_remote(),
        flags: ctx.flags(),
        tracestate: ctx.tracestate(),
        name,
        kind,
        start_unix_ns: unix_ns_at(started),
        end_unix_ns: unix_ns_at(ended),
        status,
        metadata,
        attributes: ctx.span_attributes(),
        correlation_id: ctx.explicit_correlation_id(),
        events: &[],
        resource: crate::record::SpanAttributes::EMPTY,
    }
}

/// Ends a span: emits `stop`, or `exception` with `kind` and `reason`, to the handlers that
/// listen, then hands its record to the span sinks (`handled` says which of them there are).
/// `extra` is what the work added to `metadata`; the two are merged only for an event (a
/// record takes them apart). `name` is the span's own name, where it is not its prefix's.
/// `scope`, when given, is the guard that made the span's context current: it ends with the
/// span (else the span's context is the current one, and stays so).
#[allow(clippy::too_many_arguments)]
fn finish_span<'m>(
    dispatcher: &Dispatcher,
    prefix: &SpanPrefix,
    started: Instant,
    metadata: &mut Metadata<'m>,
    extra: &mut Metadata<'m>,
    failure: Option<(&'static str, String)>,
    handled: u8,
    name: Option<&str>,
    scope: Option<context::ContextGuard>,
) {
    let ended = now();
    let failed = failure.is_some();
    let event = if failed { EXCEPTION } else { STOP };
    if (failed || handled & event != 0) && !extra.is_empty() {
        metadata.append(extra);
    }
    if let Some((kind, reason)) = failure {
        // An `Err`'s own metadata may name a finer kind (`timeout`, say); a panic's may not.
        if kind == "panic" || metadata.get("kind").is_none() {
            metadata.insert("kind", kind);
        }
        metadata.insert("reason", reason);
    }
    if handled & event != 0 {
        let name = if failed {
            &prefix.exception
        } else {
            &prefix.stop
        };
        dispatcher.execute(name, &end_measurements(started, ended), metadata);
    }
    if handled & SINKS == 0 {
        return;
    }
    let metadata = SpanMetadata::new(metadata, extra);
    let status = if failed {
        let text = |key| metadata.get(key).and_then(|v| v.as_str()).unwrap_or("");
        SpanStatus::Error {
            kind: text("kind"),
            message: text("reason"),
        }
    } else {
        SpanStatus::Unset
    };
    // A user's span (`with_span`, or `TRACE_SPAN` emitted directly) is named by its metadata.
    let name = match name.or_else(|| {
        (prefix.prefix == *catalog::TRACE_SPAN.prefix())
            .then(|| metadata.get("name").and_then(|v| v.as_str()))
            .flatten()
    }) {
        Some(text) => SpanName::Text(text),
        None => SpanName::Prefix(&prefix.prefix),
    };
    let export = |ctx: Option<&TraceContext>| {
        let Some(ctx) = ctx else { return };
        let record = record_of(ctx, name, prefix.kind, (started, ended), status, metadata);
        dispatcher.export_span(&record);
    };
    match scope {
        Some(scope) => scope.end(export),
        None => context::with_current_ref(export).unwrap_or(()),
    }
}

impl Dispatcher {
    /// Runs `f` as a span: `start` before, then `stop` with `f`'s extra metadata, or
    /// `exception` (`kind` = `"panic"`, `reason`) if `f` panics, in which case the panic
    /// continues after the event. Returns `f`'s result.
    ///
    /// With no handler on any of the three events, `f` just runs: no clock is read.
    /// With one, the span runs in a trace context of its own (a child of the current span,
    /// or a new trace), which handlers see as [`context::current`].
    ///
    /// ```
    /// use dspex_telemetry_core::{metadata, Dispatcher, SpanPrefix};
    /// const OP: SpanPrefix = SpanPrefix::from_static(&["dspex", "my_component", "operation"]);
    /// let dispatcher = Dispatcher::new();
    /// let items = dispatcher.span(&OP, metadata! { "request_id" => "r1" }, || {
    ///     let items = vec![1, 2, 3];
    ///     let n = items.len();
    ///     (items, metadata! { "items_processed" => n, "cache_hit" => false })
    /// });
    /// assert_eq!(items.len(), 3);
    /// ```
    pub fn span<'m, T>(
        &self,
        prefix: &SpanPrefix,
        metadata: Metadata<'m>,
        f: impl FnOnce() -> (T, Metadata<'m>),
    ) -> T {
        self.run_span(
            prefix,
            metadata,
            f,
            |_| None,
            ContextPolicy::WhenObserved,
            None,
        )
    }

    /// As [`Dispatcher::span`], for work that can fail: an `Err` emits `exception` with
    /// `kind` = `"error"` (or the `kind` the closure's metadata gives, such as `"timeout"`)
    /// and `reason` = the error's `Display`, and is returned as is.
    pub fn try_span<'m, T, E: Display>(
        &self,
        prefix: &SpanPrefix,
        metadata: Metadata<'m>,
        f: impl FnOnce() -> (Result<T, E>, Metadata<'m>),
    ) -> Result<T, E> {
        self.run_span(
            prefix,
            metadata,
            f,
            error_reason,
            ContextPolicy::WhenObserved,
            None,
        )
    }

    fn run_span<'m, R>(
        &self,
        prefix: &SpanPrefix,
        mut metadata: Metadata<'m>,
        f: impl FnOnce() -> (R, Metadata<'m>),
        failed: impl FnOnce(&R) -> Option<String>,
        policy: ContextPolicy,
        name: Option<&str>,
    ) -> R {
        let handled = self.handled_of(&prefix.prefix, prefix.names());
        if handled == 0 {
            return match policy {
                ContextPolicy::WhenObserved => f().0,
                ContextPolicy::Always => span_context().in_scope(f).0,
            };
        }
        let scope = context::enter_child();
        let started = now();
        if handled & START != 0 {
            self.execute(&prefix.start, &start_measurements(started), &metadata);
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok((result, mut extra)) => {
                let failure = failed(&result).map(|reason| ("error", reason));
                finish_span(
                    self,
                    prefix,
                    started,
                    &mut metadata,
                    &mut extra,
                    failure,
                    handled,
                    name,
                    Some(scope),
                );
                result
            }
            Err(payload) => {
                let reason = panic_message(&*payload).into_owned();
                finish_span(
                    self,
                    prefix,
                    started,
                    &mut metadata,
                    &mut Metadata::new(),
                    Some(("panic", reason)),
                    handled,
                    name,
                    Some(scope),
                );
                resume_unwind(payload)
            }
        }
    }

    /// The async form of [`Dispatcher::span`]: `start` at the first poll, `stop` when
    /// `future` completes, `exception` if it panics (the panic continues) or is dropped before
    /// it completes (`kind` = `"cancelled"`). The span's trace context is current during every
    /// poll of `future`.
    pub fn span_async<'m, T, F>(
        &self,
        prefix: &SpanPrefix,
        metadata: Metadata<'m>,
        future: F,
    ) -> SpanFuture<'m, F, T>
    where
        F: Future<Output = (T, Metadata<'m>)>,
    {
        SpanFuture::new(self.clone(), prefix.clone(), metadata, future, |_| None)
    }

    /// The async form of [`Dispatcher::try_span`].
    pub fn try_span_async<'m, T, E, F>(
        &self,
        prefix: &SpanPrefix,
        metadata: Metadata<'m>,
        future: F,
    ) -> SpanFuture<'m, F, Result<T, E>>
    where
        E: Display,
        F: Future<Output = (Result<T, E>, Metadata<'m>)>,
    {
        SpanFuture::new(self.clone(), prefix.clone(), metadata, future, error_reason)
    }
}

fn error_reason<T, E: Display>(result: &Result<T, E>) -> Option<String> {
    result.as_ref().err().map(ToString::to_string)
}

/// Runs `f` in a span named `name` (a child of the current span, or a new trace), emitted as
/// [`catalog::TRACE_SPAN`] on the global dispatcher with `name` in its metadata. The span is
/// the current context inside `f`, whether or not a handler listens.
///
/// ```
/// use dspex_telemetry_core::{context, with_span};
/// let outer = with_span("business.process_request", || {
///     let ctx = context::current().unwrap();
///     with_span("business.load", || assert_eq!(context::current().unwrap().parent_span_id(), Some(ctx.span_id())));
///     ctx
/// });
/// assert_eq!(outer.parent_span_id(), None);
/// ```
pub fn with_span<R>(name: &str, f: impl FnOnce() -> R) -> R {
    Dispatcher::global().run_span(
        &catalog::TRACE_SPAN,
        Metadata::new().with("name", name),
        || (f(), Metadata::new()),
        |_| None,
        ContextPolicy::Always,
        Some(name),
    )
}

enum SpanState {
    NotStarted,
    Unobserved,
    Running {
        started: Instant,
        ctx: TraceContext,
        handled: u8,
    },
    Done,
}

pin_project_lite::pin_project! {
    /// A future run as a span; see [`Dispatcher::span_async`].
    #[must_use = "futures do nothing unless polled"]
    pub struct SpanFuture<'m, F, T> {
        #[pin]
        future: F,
        dispatcher: Dispatcher,
        prefix: SpanPrefix,
        metadata: Option<Metadata<'m>>,
        state: SpanState,
        failed: fn(&T) -> Option<String>,
    }

    impl<'m, F, T> PinnedDrop for SpanFuture<'m, F, T> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let SpanState::Running { started, ctx, handled } = std::mem::replace(this.state, SpanState::Done) {
                let mut metadata = this.metadata.take().unwrap_or_default();
                let reason = String::from("the future was dropped before it completed");
                ctx.in_scope(|| finish_span(this.dispatcher, this.prefix, started, &mut metadata, &mut Metadata::new(), Some(("cancelled", reason)), handled, None, None));
            }
        }
    }
}

impl<'m, F, T> SpanFuture<'m, F, T> {
    fn new(
        dispatcher: Dispatcher,
        prefix: SpanPrefix,
        metadata: Metadata<'m>,
        future: F,
        failed: fn(&T) -> Option<String>,
    ) -> Self {
        SpanFuture {
            future,
            dispatcher,
            prefix,
            metadata: Some(metadata),
            state: SpanState::NotStarted,
            failed,
        }
    }
}

impl<'m, F, T> Future for SpanFuture<'m, F, T>
where
    F: Future<Output = (T, Metadata<'m>)>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.project();
        if let SpanState::NotStarted = this.state {
            let handled = this
                .dispatcher
                .handled_of(&this.prefix.prefix, this.prefix.names());
            *this.state = if handled != 0 {
                let ctx = span_context();
                let started = now();
                if handled & START != 0 {
                    let empty = Metadata::new();
                    let metadata = this.metadata.as_ref().unwrap_or(&empty);
                    ctx.in_scope(|| {
                        this.dispatcher.execute(
                            &this.prefix.start,
                            &start_measurements(started),
                            metadata,
                        )
                    });
                }
                SpanState::Running {
                    started,
                    ctx,
                    handled,
                }
            } else {
                SpanState::Unobserved
            };
        }
        let SpanState::Running { ctx, .. } = this.state else {
            return this.future.poll(cx).map(|(value, _)| value);
        };
        #[cfg(feature = "opentelemetry")]
        let otel = crate::otel::attach(ctx);
        let previous = replace_current(Some(ctx.clone()));
        let polled = catch_unwind(AssertUnwindSafe(|| this.future.poll(cx)));
        #[cfg(feature = "opentelemetry")]
        drop(otel);
        // Keep what the future did to its context (baggage) for the next poll.
        if let Some(after) = replace_current(previous) {
            *ctx = after;
        }
        let (failure, value, panic) = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready((value, extra))) => {
                if let Some(metadata) = this.metadata.as_mut().filter(|_| !extra.is_empty()) {
                    metadata.extend(extra);
                }
                let failure = (this.failed)(&value).map(|reason| ("error", reason));
                (failure, Some(value), None)
            }
            Err(payload) => {
                let reason = panic_message(&*payload).into_owned();
                (Some(("panic", reason)), None, Some(payload))
            }
        };
        if let SpanState::Running {
            started,
            ctx,
            handled,
        } = std::mem::replace(this.state, SpanState::Done)
        {
            let mut metadata = this.metadata.take().unwrap_or_default();
            ctx.in_scope(|| {
                finish_span(
                    this.dispatcher,
                    this.prefix,
                    started,
                    &mut metadata,
                    &mut Metadata::new(),
                    failure,
                    handled,
                    None,
                    None,
                )
            });
        }
        match (value, panic) {
            (Some(value), _) => Poll::Ready(value),
            (None, Some(payload)) => resume_unwind(payload),
            (None, None) => unreachable!("a span ends with a value or a panic"),
        }
    }
}
