//! The core of dspex-telemetry: events, spans and trace/correlation context for services that
//! call Python workers.
//!
//! - **Events** are named `[:dspex, :component, :operation, :phase]` ([`EventName`]) and carry
//!   [`Measurements`] (numbers; durations and times in nanoseconds) and [`Metadata`].
//! - **The dispatcher** calls the handlers attached to an event on the emitting thread
//!   ([`attach`], [`execute`], [`detach`]); with nothing attached, `execute` costs one atomic
//!   load. A handler that panics is detached and reported as
//!   [`catalog::HANDLER_FAILURE`]; the caller never sees the panic.
//! - **Spans** ([`span`], [`try_span`], [`span_async`]) emit `start`, then `stop` or
//!   `exception`, as Erlang's `:telemetry.span/3` does.
//! - **Trace context** ([`context`]) carries W3C trace and span ids, a correlation id and
//!   baggage through scopes, `.await` points ([`WithTraceContext`]), spawned tasks and threads,
//!   and across processes as `traceparent` / `baggage` headers.
//!
//! ```
//! use dspex_telemetry_core::{self as telemetry, catalog, context, metadata, Event};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let calls = Arc::new(AtomicU64::new(0));
//! let seen = calls.clone();
//! telemetry::attach("count-bridge-calls", catalog::BRIDGE_CALL.stop().clone(), move |event: &Event<'_>| {
//!     assert!(event.measurements().get("duration").is_some());
//!     assert!(context::current().is_some(), "handlers see the span's context");
//!     seen.fetch_add(1, Ordering::Relaxed);
//! })
//! .unwrap();
//!
//! let _trace = context::start_trace();
//! let answer = telemetry::span(&catalog::BRIDGE_CALL, metadata! { "module" => "dspy", "function" => "Predict" }, || {
//!     ("telemetry is observability data", metadata! { "success" => true })
//! });
//! assert_eq!(answer, "telemetry is observability data");
//! assert_eq!(calls.load(Ordering::Relaxed), 1);
//! telemetry::detach("count-bridge-calls").unwrap();
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod baggage;
pub mod bounds;
pub mod catalog;
mod clock;
pub mod context;
mod debug_handler;
mod dispatcher;
mod event;
#[cfg(feature = "http")]
pub mod http;
mod ids;
mod instrument;
#[cfg(feature = "tracing")]
pub mod log_fields;
#[cfg(feature = "opentelemetry")]
mod otel;
mod record;
mod span;
mod text;
mod traceparent;
pub mod tracestate;
mod value;

use std::fmt::Display;
use std::future::Future;

pub use baggage::{
    Baggage, BaggageError, BaggageMember, MAX_BYTES as BAGGAGE_MAX_BYTES,
    MAX_MEMBERS as BAGGAGE_MAX_MEMBERS,
};
pub use clock::{monotonic_time_ns, system_time_ns};
pub use context::{TraceContext, TraceGuard, with_correlation};
pub use debug_handler::{DEBUG_HANDLER_ID, attach_debug_handler};
pub use dispatcher::{
    AttachError, Attachment, DetachError, Dispatcher, Event, Handler, HandlerInfo,
    MAX_NESTED_HANDLERS, Reads, Subscription,
};
pub use event::{EventName, EventNameError};
pub use ids::{CorrelationId, CorrelationIdError, IdError, SpanId, TraceFlags, TraceId};
pub use instrument::{RootTraced, Traced, WithTraceContext};
pub use record::{
    SpanAttributes, SpanEventRecord, SpanKind, SpanMetadata, SpanName, SpanRecord, SpanSink,
    SpanStatus,
};
pub use span::{SpanFuture, SpanPrefix, with_span};
pub use text::log_safe;
pub use traceparent::{TraceParent, TraceParentError};
pub use tracestate::{TraceState, TraceStateError};
#[doc(hidden)]
pub use value::distinct_keys;
pub use value::{Measurements, Metadata, Number, Value};

/// Attaches `handler` to `event` on the global dispatcher. See [`Dispatcher::attach`].
pub fn attach(
    id: impl Into<String>,
    event: EventName,
    handler: impl Handler,
) -> Result<(), AttachError> {
    Dispatcher::global().attach(id, event, handler)
}

/// Attaches `handler` to several events on the global dispatcher. See [`Dispatcher::attach_many`].
pub fn attach_many(
    id: impl Into<String>,
    events: impl IntoIterator<Item = EventName>,
    handler: impl Handler,
) -> Result<(), AttachError> {
    Dispatcher::global().attach_many(id, events, handler)
}

/// Attaches `handler` to every event under `prefix` on the global dispatcher. See
/// [`Dispatcher::attach_prefix`].
pub fn attach_prefix(
    id: impl Into<String>,
    prefix: EventName,
    handler: impl Handler,
) -> Result<(), AttachError> {
    Dispatcher::global().attach_prefix(id, prefix, handler)
}

/// Detaches a handler from the global dispatcher. See [`Dispatcher::detach`].
pub fn detach(id: &str) -> Result<(), DetachError> {
    Dispatcher::global().detach(id)
}

/// The global dispatcher's handlers listening under `prefix`. See [`Dispatcher::list_handlers`].
pub fn list_handlers(prefix: Option<&EventName>) -> Vec<HandlerInfo> {
    Dispatcher::global().list_handlers(prefix)
}

/// Emits an event on the global dispatcher. See [`Dispatcher::execute`].
///
/// ```
/// use dspex_telemetry_core::{execute, measurements, metadata, EventName};
/// const PROCESSED: EventName = EventName::from_static(&["myapp", "business", "processed"]);
/// execute(&PROCESSED, &measurements! { "items_count" => 3 }, &metadata! { "success" => true });
/// ```
#[inline]
pub fn execute(event: &EventName, measurements: &Measurements<'_>, metadata: &Metadata<'_>) {
    Dispatcher::global().execute(event, measurements, metadata)
}

/// Runs `f` as a span on the global dispatcher. See [`Dispatcher::span`].
#[inline]
pub fn span<'m, T>(
    prefix: &SpanPrefix,
    metadata: Metadata<'m>,
    f: impl FnOnce() -> (T, Metadata<'m>),
) -> T {
    Dispatcher::global().span(prefix, metadata, f)
}

/// Runs fallible `f` as a span on the global dispatcher. See [`Dispatcher::try_span`].
#[inline]
pub fn try_span<'m, T, E: Display>(
    prefix: &SpanPrefix,
    metadata: Metadata<'m>,
    f: impl FnOnce() -> (Result<T, E>, Metadata<'m>),
) -> Result<T, E> {
    Dispatcher::global().try_span(prefix, metadata, f)
}

/// Runs `future` as a span on the global dispatcher. See [`Dispatcher::span_async`].
pub fn span_async<'m, T, F>(
    prefix: &SpanPrefix,
    metadata: Metadata<'m>,
    future: F,
) -> SpanFuture<'m, F, T>
where
    F: Future<Output = (T, Metadata<'m>)>,
{
    Dispatcher::global().span_async(prefix, metadata, future)
}

/// Runs fallible `future` as a span on the global dispatcher. See [`Dispatcher::try_span_async`].
pub fn try_span_async<'m, T, E, F>(
    prefix: &SpanPrefix,
    metadata: Metadata<'m>,
    future: F,
) -> SpanFuture<'m, F, Result<T, E>>
where
    E: Display,
    F: Future<Output = (Result<T, E>, Metadata<'m>)>,
{
    Dispatcher::global().try_span_async(prefix, metadata, future)
}

/// The guide's samples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/core.md")]
struct GuideDoctests;
