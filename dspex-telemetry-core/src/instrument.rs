//! Carrying a trace context across `.await` points.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::Instant;
use crate::context::{TraceContext, current, replace_current};
use crate::ids::CorrelationId;
use crate::record::{SpanKind, SpanName, SpanStatus};

/// Runs a future in a trace context: the context is current during every poll, so it
/// survives `.await` points and thread hops of a multi-threaded runtime. Like
/// `tracing::Instrument`.
///
/// ```
/// use dspex_telemetry_core::{context, TraceContext, WithTraceContext};
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let ctx = TraceContext::new_root();
/// let trace_id = ctx.trace_id();
/// let seen = async {
///     tokio::task::yield_now().await;
///     context::current().map(|c| c.trace_id())
/// }
/// .with_trace_context(ctx)
/// .await;
/// assert_eq!(seen, Some(trace_id));
/// // Into a spawned task: capture the current context and carry it.
/// let handle = tokio::spawn(async { context::current() }.with_trace_context(context::current()));
/// # handle.await.unwrap();
/// # });
/// ```
pub trait WithTraceContext: Future + Sized {
    /// Runs this future with `ctx` (or no context, for `None`) as the current context.
    fn with_trace_context(self, ctx: impl Into<Option<TraceContext>>) -> Traced<Self> {
        Traced {
            future: self,
            ctx: ctx.into(),
        }
    }

    /// Runs this future in the context current now: what to call before handing a future to
    /// `tokio::spawn`.
    fn in_current_trace(self) -> Traced<Self> {
        self.with_trace_context(current())
    }

    /// Runs this future in a new trace whose root is a span, `dspex.trace`, that lasts as long
    /// as the future (the async form of [`crate::context::start_trace`]): the spans the future
    /// starts are its children, and the global dispatcher's span sinks receive it when the
    /// future completes (or, with status `cancelled`, when it is dropped first). With the
    /// `opentelemetry` feature, a future started inside an OpenTelemetry span (a
    /// `tracing-opentelemetry` one) continues that span's trace instead of a new one.
    ///
    /// ```
    /// use dspex_telemetry_core::{context, CorrelationId, WithTraceContext};
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let id = CorrelationId::parse("order-7").unwrap();
    /// let (is_span, seen) = async {
    ///     let ctx = context::current().unwrap();
    ///     (ctx.is_span(), ctx.correlation_id())
    /// }
    /// .in_new_trace(Some(id.clone()))
    /// .await;
    /// assert!(is_span);
    /// assert_eq!(seen, id);
    /// # });
    /// ```
    fn in_new_trace(self, correlation_id: Option<CorrelationId>) -> RootTraced<Self> {
        let mut ctx = TraceContext::fresh_span();
        if let Some(id) = correlation_id {
            ctx = ctx.with_correlation_id(id);
        }
        RootTraced {
            traced: self.with_trace_context(ctx),
            started: crate::clock::now(),
            done: false,
        }
    }
}

impl<F: Future> WithTraceContext for F {}

pin_project_lite::pin_project! {
    /// A future with a trace context; see [`WithTraceContext`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Traced<F> {
        #[pin]
        future: F,
        ctx: Option<TraceContext>,
    }
}

impl<F> Traced<F> {
    /// The context the future runs in (as last left by the future).
    pub fn context(&self) -> Option<&TraceContext> {
        self.ctx.as_ref()
    }
}

/// Puts the future's context back in its slot when the poll ends, even by a panic.
struct Restore<'a> {
    slot: &'a mut Option<TraceContext>,
    previous: Option<TraceContext>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.slot = replace_current(self.previous.take());
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        #[cfg(feature = "opentelemetry")]
        let _otel = this.ctx.as_ref().and_then(crate::otel::attach);
        let previous = replace_current(this.ctx.take());
        let _restore = Restore {
            slot: this.ctx,
            previous,
        };
        this.future.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A future in a new trace whose root span it is; see [`WithTraceContext::in_new_trace`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct RootTraced<F> {
        #[pin]
        traced: Traced<F>,
        started: Instant,
        done: bool,
    }

    impl<F> PinnedDrop for RootTraced<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                end_root(this.traced.ctx.as_ref(), *this.started, SpanStatus::Error {
                    kind: "cancelled",
                    message: "the future was dropped before it completed",
                });
            }
        }
    }
}

impl<F> RootTraced<F> {
    /// The trace's root context (as last left by the future).
    pub fn context(&self) -> Option<&TraceContext> {
        self.traced.context()
    }
}

impl<F: Future> Future for RootTraced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let output = std::task::ready!(this.traced.as_mut().poll(cx));
        *this.done = true;
        end_root(this.traced.ctx.as_ref(), *this.started, SpanStatus::Unset);
        Poll::Ready(output)
    }
}

/// Exports a trace's root span to the global dispatcher's span sinks.
fn end_root(root: Option<&TraceContext>, started: Instant, status: SpanStatus<'_>) {
    if let Some(root) = root {
        crate::span::export_context_span(
            crate::Dispatcher::global(),
            root,
            SpanName::Text("dspex.trace"),
            SpanKind::Internal,
            started,
            status,
        );
    }
}
