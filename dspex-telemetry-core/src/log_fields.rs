//! Log lines that carry `correlation_id`, `trace_id` and `span_id`, as the spec's logger
//! metadata does: a `tracing-subscriber` event formatter that prefixes each line with the
//! current trace context.
//!
//! ```
//! use dspex_telemetry_core::{context, log_fields::WithTraceIds};
//!
//! let subscriber = tracing_subscriber::fmt()
//!     .event_format(WithTraceIds::new(tracing_subscriber::fmt::format().compact()))
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || {
//!     let _trace = context::start_trace();
//!     tracing::info!("calling the worker pool"); // correlation_id=… trace_id=… span_id=… INFO …
//! });
//! ```

use std::fmt;

use tracing::Subscriber;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::context;

/// Wraps a `tracing-subscriber` event format so every line starts with
/// `correlation_id=… trace_id=… span_id=… ` when a trace context is current.
#[derive(Debug, Clone, Default)]
pub struct WithTraceIds<F> {
    inner: F,
}

impl<F> WithTraceIds<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        WithTraceIds { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        if let Some(trace) = context::current() {
            write!(
                writer,
                "correlation_id={} trace_id={} span_id={} ",
                trace.correlation_id(),
                trace.trace_id(),
                trace.span_id()
            )?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}
