//! Carrying a trace context across `.await` points.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::context::{TraceContext, current, replace_current};

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
