//! Span records: a finished span as typed data (ids as bytes, name, kind, times, status,
//! attributes, events), handed to span sinks when the span ends.
//!
//! A record borrows everything it holds from the span that ended: making one costs nothing
//! on the heap. A sink that keeps spans (an exporter) copies what it needs into its own
//! buffers.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use dspex_telemetry_core::{catalog, metadata, Dispatcher, SpanKind, SpanRecord, SpanSink};
//!
//! #[derive(Default)]
//! struct Names(Mutex<Vec<(String, SpanKind)>>);
//! impl SpanSink for Names {
//!     fn on_end(&self, span: &SpanRecord<'_>) {
//!         self.0.lock().unwrap().push((span.name.to_string(), span.kind));
//!     }
//! }
//!
//! let dispatcher = Dispatcher::new();
//! let names = Arc::new(Names::default());
//! dispatcher.attach_span_sink("names", names.clone()).unwrap();
//! dispatcher.span(&catalog::BRIDGE_CALL, metadata! { "module" => "dspy" }, || ((), metadata! {}));
//! assert_eq!(*names.0.lock().unwrap(), [("dspex.bridge.call".to_owned(), SpanKind::Client)]);
//! ```

use std::fmt;
use std::sync::Arc;

use crate::event::EventName;
use crate::ids::{CorrelationId, SpanId, TraceFlags, TraceId};
use crate::tracestate::TraceState;
use crate::value::{Metadata, Value};

/// What a span stands for, as OpenTelemetry's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// Work inside this process (the default).
    #[default]
    Internal,
    /// The server side of a request from elsewhere.
    Server,
    /// A call to another process (a bridge call into a Python worker).
    Client,
    /// A message sent for later handling.
    Producer,
    /// A message handled.
    Consumer,
}

/// How a span ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanStatus<'a> {
    /// It completed.
    #[default]
    Unset,
    /// It failed.
    Error {
        /// The failure's kind (`error`, `panic`, `timeout`, an exception's type).
        kind: &'a str,
        /// What went wrong.
        message: &'a str,
    },
}

/// A span's name: an event prefix (`dspex.bridge.call`) or a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanName<'a> {
    /// The span's event prefix; its name is the segments joined by `.`.
    Prefix(&'a EventName),
    /// A name given as text (`with_span`'s, a Python span's).
    Text(&'a str),
}

impl SpanName<'_> {
    /// Calls `f` with the name's parts, in order (`dspex`, `.`, `bridge`, …): the name
    /// written without allocating.
    #[inline]
    pub fn for_each_part(&self, mut f: impl FnMut(&str)) {
        match self {
            SpanName::Prefix(name) => {
                let mut first = true;
                name.for_each_segment(|segment| {
                    if !first {
                        f(".");
                    }
                    first = false;
                    f(segment);
                });
            }
            SpanName::Text(text) => f(text),
        }
    }

    /// The name's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        let mut len = 0;
        self.for_each_part(|part| len += part.len());
        len
    }

    /// Whether the name is empty (only a text name can be).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        self.for_each_part(|part| {
            if result.is_ok() {
                result = f.write_str(part);
            }
        });
        result
    }
}

/// Something that happened during a span (an exception, a retry), at a point in time.
#[derive(Debug, Clone, Copy)]
pub struct SpanEventRecord<'a> {
    /// The event's name (`exception`, say).
    pub name: &'a str,
    /// When, in nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// Its attributes.
    pub attributes: &'a Metadata<'a>,
}

/// Attributes the code inside a span set on it (`context::set_attributes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanAttributes<'a>(pub(crate) &'a [(String, Value<'static>)]);

impl<'a> SpanAttributes<'a> {
    /// No attributes.
    pub const EMPTY: SpanAttributes<'static> = SpanAttributes(&[]);

    /// These attributes, exported under their own names (a span from elsewhere: Python's
    /// OpenTelemetry spans, say).
    pub fn new(attributes: &'a [(String, Value<'static>)]) -> Self {
        SpanAttributes(attributes)
    }

    /// Each attribute, in the order it was first set.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value<'static>)> + 'a {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A span's metadata: what it started with and what its work added at the end, which wins
/// where both have a key. Kept in two parts so that a span no event handler sees is not
/// merged just to be exported; which keys the end replaces is worked out only when asked.
#[derive(Debug, Clone, Copy)]
pub struct SpanMetadata<'a> {
    start: &'a Metadata<'a>,
    end: &'a Metadata<'a>,
}

impl<'a> SpanMetadata<'a> {
    /// The metadata of a span that started with `start` and whose work added `end`.
    #[inline]
    pub fn new(start: &'a Metadata<'a>, end: &'a Metadata<'a>) -> Self {
        SpanMetadata { start, end }
    }

    /// Metadata in one part.
    pub fn one(metadata: &'a Metadata<'a>) -> Self {
        static EMPTY: Metadata<'static> = Metadata::new();
        SpanMetadata {
            start: metadata,
            end: &EMPTY,
        }
    }

    /// Bit `i`: the start's entry `i` is replaced by one of the end's (for the first 64).
    #[inline(always)]
    fn replaced(&self) -> u64 {
        self.start.replaced_by(self.end)
    }

    #[inline(always)]
    fn is_replaced(&self, replaced: u64, i: usize, key: &str) -> bool {
        match i {
            0..64 => replaced >> i & 1 != 0,
            _ => self.end.get(key).is_some(),
        }
    }

    /// Each entry once: the start's (those the end does not replace), then the end's.
    #[inline(always)]
    pub fn for_each(&self, mut f: impl FnMut(&'a str, &'a Value<'a>)) {
        let replaced = self.replaced();
        let mut i = 0;
        self.start.iter().for_each(|(k, v)| {
            if !self.is_replaced(replaced, i, k) {
                f(k, v);
            }
            i += 1;
        });
        self.end.iter().for_each(|(k, v)| f(k, v));
    }

    /// Every entry of both parts as they are, the start's then the end's, without comparing
    /// keys: a key in both comes twice, and the later one is the span's. For a sink that
    /// copies the entries now and can merge them later, off the span's thread.
    #[inline(always)]
    pub fn for_each_unmerged(&self, mut f: impl FnMut(&'a str, &'a Value<'a>)) {
        for part in [self.start, self.end] {
            for entries in part.parts() {
                for (k, v) in entries {
                    f(k, v);
                }
            }
        }
    }

    /// How many entries [`SpanMetadata::for_each_unmerged`] visits.
    #[inline]
    pub fn unmerged_len(&self) -> usize {
        self.start.len() + self.end.len()
    }

    /// Whether [`SpanMetadata::for_each_unmerged`] may visit a key twice (both parts have
    /// entries).
    #[inline]
    pub fn may_repeat(&self) -> bool {
        !self.start.is_empty() && !self.end.is_empty()
    }

    /// Each entry once, as [`SpanMetadata::for_each`] visits them.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Value<'a>)> + 'a {
        let this = *self;
        let replaced = self.replaced();
        self.start
            .iter()
            .enumerate()
            .filter(move |(i, (k, _))| !this.is_replaced(replaced, *i, k))
            .map(|(_, entry)| entry)
            .chain(self.end.iter())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&'a Value<'a>> {
        self.end.get(key).or_else(|| self.start.get(key))
    }

    /// How many entries there are.
    #[inline]
    pub fn len(&self) -> usize {
        let beyond = match self.start.len() {
            0..=64 => 0,
            _ => self
                .start
                .iter()
                .skip(64)
                .filter(|(k, _)| self.end.get(k).is_some())
                .count(),
        };
        self.start.len() - self.replaced().count_ones() as usize - beyond + self.end.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.end.is_empty()
    }
}

/// A finished span. Built on the stack when a span ends and passed by reference to every
/// [`SpanSink`]; it borrows from the span and is valid only during the call.
#[derive(Debug, Clone, Copy)]
pub struct SpanRecord<'a> {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Its parent; `None` for a trace's root.
    pub parent_span_id: Option<SpanId>,
    /// Whether the parent lives in another process (a caller's `traceparent`).
    pub parent_is_remote: bool,
    /// The W3C trace flags.
    pub flags: TraceFlags,
    /// The trace's `tracestate`, as its caller sent it (empty when there is none).
    pub tracestate: &'a TraceState,
    /// The span's name.
    pub name: SpanName<'a>,
    /// Its kind.
    pub kind: SpanKind,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// When it ended, in nanoseconds since the Unix epoch.
    pub end_unix_ns: u64,
    /// How it ended.
    pub status: SpanStatus<'a>,
    /// The span's event metadata (exported as `dspex.<key>`).
    pub metadata: SpanMetadata<'a>,
    /// What the code inside the span set on it (exported under their own names).
    pub attributes: SpanAttributes<'a>,
    /// The correlation id, when one was given (else it is the trace id).
    pub correlation_id: Option<&'a CorrelationId>,
    /// Events during the span.
    pub events: &'a [SpanEventRecord<'a>],
    /// What describes the process the span ran in, when it is not this one (a Python
    /// worker's process id and runtime): exported as that span's resource, over the service's.
    /// Empty for this process's own spans.
    pub resource: SpanAttributes<'a>,
}

/// Receives every span that ends on a dispatcher (see [`crate::Dispatcher::attach_span_sink`]).
///
/// Called on the thread that ended the span, so it must be quick: copy the record into a
/// buffer and return. It runs with no current trace context (the record carries the span's).
/// A sink that panics is detached, and a handler-failure event says so.
pub trait SpanSink: Send + Sync + 'static {
    /// One span ended.
    fn on_end(&self, span: &SpanRecord<'_>);
}

impl<S: SpanSink + ?Sized> SpanSink for Arc<S> {
    fn on_end(&self, span: &SpanRecord<'_>) {
        (**self).on_end(span)
    }
}
