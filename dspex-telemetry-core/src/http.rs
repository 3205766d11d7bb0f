//! HTTP propagation: `x-correlation-id`, `traceparent`, `tracestate` and `baggage` on
//! [`http::HeaderMap`], and a `tower` layer that runs each request in its trace and echoes
//! `x-correlation-id`.
//!
//! `traceparent` and `tracestate` follow W3C Trace Context (level 2): a request continues the
//! caller's trace and keeps its `tracestate` (every `tracestate` header, in order, as one
//! list), and each call made from it sends them on. A `tracestate` that breaks the grammar or
//! its limits is dropped whole; without a valid `traceparent` it is ignored.
//!
//! Incoming headers are untrusted: a malformed one is ignored (a fresh trace or id is used
//! instead), counted in [`malformed_headers`] and logged at `DEBUG`; it never fails the
//! request.
//!
//! ```
//! use dspex_telemetry_core::http::{extract, inject, CORRELATION_HEADER};
//! use http::HeaderMap;
//!
//! let mut incoming = HeaderMap::new();
//! incoming.insert(CORRELATION_HEADER, "req-42".parse().unwrap());
//! incoming.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! let ctx = extract(&incoming);
//! assert_eq!(ctx.correlation_id().as_str(), "req-42");
//! assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//!
//! let mut outgoing = HeaderMap::new();
//! inject(&ctx, &mut outgoing);
//! assert_eq!(outgoing[CORRELATION_HEADER], "req-42");
//! assert_eq!(outgoing["baggage"], "correlation_id=req-42");
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use crate::baggage::Baggage;
use crate::context::{CORRELATION_BAGGAGE_KEY, TraceContext};
use crate::dispatcher::Dispatcher;
use crate::ids::CorrelationId;
use crate::instrument::{Traced, WithTraceContext};
use crate::record::{SpanKind, SpanName, SpanStatus};
use crate::traceparent::TraceParent;
use crate::tracestate::TraceState;

/// `x-correlation-id`.
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");
/// `traceparent`.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");
/// `baggage`.
pub const BAGGAGE_HEADER: HeaderName = HeaderName::from_static("baggage");

static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// How many malformed propagation headers [`extract`] has ignored in this process.
pub fn malformed_headers() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

fn malformed(header: &HeaderName, why: &dyn std::fmt::Display) {
    MALFORMED.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(header = %header, reason = %why, "ignored a malformed trace propagation header");
}

/// The single value of `name`, as text; several values or non-text count as malformed.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        malformed(name, &"the header is repeated");
        return None;
    }
    match first.to_str() {
        Ok(s) if !s.trim().is_empty() => Some(s),
        Ok(_) => None,
        Err(e) => {
            malformed(name, &e);
            None
        }
    }
}

/// The `tracestate` of a request: every header's members, in order; empty (and counted as
/// malformed) when one breaks the grammar.
fn tracestate(headers: &HeaderMap) -> TraceState {
    let mut values = Vec::new();
    for value in headers.get_all(&TRACESTATE_HEADER) {
        match value.to_str() {
            Ok(text) => values.push(text),
            Err(e) => {
                malformed(&TRACESTATE_HEADER, &e);
                return TraceState::new();
            }
        }
    }
    TraceState::parse(values).unwrap_or_else(|e| {
        malformed(&TRACESTATE_HEADER, &e);
        TraceState::new()
    })
}

/// The trace context of an incoming request: the caller's trace if `traceparent` is valid
/// (a new trace otherwise) with its `tracestate`, its baggage if valid, and its correlation
/// id from `x-correlation-id`, else from the baggage's `correlation_id`, else the trace id.
pub fn extract(headers: &HeaderMap) -> TraceContext {
    let mut ctx = match single(headers, &TRACEPARENT_HEADER).map(TraceParent::parse) {
        Some(Ok(tp)) => TraceContext::continue_from(&tp).with_tracestate(tracestate(headers)),
        Some(Err(e)) => {
            malformed(&TRACEPARENT_HEADER, &e);
            TraceContext::new_root()
        }
        None => TraceContext::new_root(),
    };
    let mut correlation = None;
    if let Some(raw) = single(headers, &BAGGAGE_HEADER) {
        match Baggage::parse(raw) {
            Ok(mut baggage) => {
                if let Some(id) = baggage.remove(CORRELATION_BAGGAGE_KEY) {
                    match CorrelationId::parse(&id) {
                        Ok(id) => correlation = Some(id),
                        Err(e) => malformed(&BAGGAGE_HEADER, &e),
                    }
                }
                if !baggage.is_empty() {
                    ctx = ctx.with_baggage(baggage);
                }
            }
            Err(e) => malformed(&BAGGAGE_HEADER, &e),
        }
    }
    if let Some(raw) = single(headers, &CORRELATION_HEADER) {
        match CorrelationId::parse(raw) {
            Ok(id) => correlation = Some(id),
            Err(e) => malformed(&CORRELATION_HEADER, &e),
        }
    }
    match correlation {
        Some(id) => ctx.with_correlation_id(id),
        None => ctx,
    }
}

/// Writes `ctx` into outgoing headers: `traceparent`, `x-correlation-id` and, when there is
/// any, `tracestate` and `baggage` (which also carries a given correlation id).
pub fn inject(ctx: &TraceContext, headers: &mut HeaderMap) {
    if let Ok(v) = HeaderValue::from_str(&ctx.traceparent().to_string()) {
        headers.insert(TRACEPARENT_HEADER, v);
    }
    if ctx.tracestate().is_empty() {
        headers.remove(TRACESTATE_HEADER);
    } else if let Ok(v) = HeaderValue::from_str(&ctx.tracestate().to_header()) {
        headers.insert(TRACESTATE_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(ctx.correlation_id().as_str()) {
        headers.insert(CORRELATION_HEADER, v);
    }
    let baggage = ctx.outgoing_baggage();
    if !baggage.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&baggage.to_header()) {
            headers.insert(BAGGAGE_HEADER, v);
        }
    }
}

/// A `tower` layer: each request runs in a server span of the trace its headers carry (a
/// child of the caller's span), or of a new trace; the span's context is in the request's
/// extensions, and the response carries `x-correlation-id`, as the spec's
/// `assign_correlation_id` plug does.
///
/// The server span (kind server, named after the method, with `http.request.method`,
/// `url.path`, `http.response.status_code` and what the handler set with
/// `context::set_attributes`) goes to the global dispatcher's span sinks when the response
/// is ready; a 5xx answer or an error is its error status, and a request dropped before its
/// answer ends it as `cancelled`.
///
/// ```
/// use dspex_telemetry_core::{context, http::CorrelationLayer};
/// use tower::{service_fn, Layer, ServiceExt};
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let service = CorrelationLayer::new().layer(service_fn(|_req: http::Request<()>| async {
///     let id = context::current().unwrap().correlation_id();
///     Ok::<_, std::convert::Infallible>(http::Response::new(id.to_string()))
/// }));
/// let request = http::Request::builder().header("x-correlation-id", "abc-123").body(()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["x-correlation-id"], "abc-123");
/// assert_eq!(response.body(), "abc-123");
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct CorrelationLayer {
    dispatcher: Option<Dispatcher>,
}

impl CorrelationLayer {
    /// The layer; server spans go to the global dispatcher's span sinks.
    pub fn new() -> Self {
        CorrelationLayer::default()
    }

    /// The layer, with server spans going to `dispatcher`'s span sinks.
    pub fn with_dispatcher(dispatcher: Dispatcher) -> Self {
        CorrelationLayer {
            dispatcher: Some(dispatcher),
        }
    }
}

impl<S> tower_layer::Layer<S> for CorrelationLayer {
    type Service = CorrelationService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CorrelationService {
            inner,
            dispatcher: self.dispatcher.clone(),
        }
    }
}

/// The service [`CorrelationLayer`] wraps around yours.
#[derive(Debug, Clone)]
pub struct CorrelationService<S> {
    inner: S,
    dispatcher: Option<Dispatcher>,
}

impl<S, B, ResB> tower_service::Service<Request<B>> for CorrelationService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = CorrelationFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = crate::clock::now();
        let ctx = extract(request.headers()).child();
        let header = HeaderValue::from_str(ctx.correlation_id().as_str()).ok();
        let server = ServerSpan {
            dispatcher: self.dispatcher.clone(),
            started,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            ctx: Some(ctx.clone()),
        };
        request.extensions_mut().insert(ctx.clone());
        let future = ctx.in_scope(|| self.inner.call(request));
        CorrelationFuture {
            future: future.with_trace_context(ctx),
            header,
            server,
        }
    }
}

/// The server span of one request, ended when its response is ready (or the request is
/// dropped before).
struct ServerSpan {
    /// `None`: the global one.
    dispatcher: Option<Dispatcher>,
    started: crate::clock::Instant,
    method: http::Method,
    path: String,
    /// Until the span ends.
    ctx: Option<TraceContext>,
}

impl ServerSpan {
    /// Ends the span in `ctx` (the handler's last context) with `status` (none: cancelled).
    fn end(&mut self, ctx: Option<&TraceContext>, status: Option<Result<http::StatusCode, ()>>) {
        let Some(own) = self.ctx.take() else { return };
        let dispatcher = self.dispatcher.as_ref().unwrap_or(Dispatcher::global());
        if !dispatcher.has_span_sinks() {
            return;
        }
        let mut ctx = ctx
            .filter(|c| c.span_id() == own.span_id())
            .cloned()
            .unwrap_or(own);
        ctx.set_attribute("http.request.method", self.method.as_str().to_owned());
        ctx.set_attribute("url.path", std::mem::take(&mut self.path));
        let code = match status {
            Some(Ok(code)) => Some(code),
            _ => None,
        };
        let span_status = match (status, &code) {
            (Some(Ok(_)), Some(code)) => {
                ctx.set_attribute("http.response.status_code", i64::from(code.as_u16()));
                match code.is_server_error() {
                    true => SpanStatus::Error {
                        kind: code.as_str(),
                        message: code.canonical_reason().unwrap_or(""),
                    },
                    false => SpanStatus::Unset,
                }
            }
            (Some(_), _) => SpanStatus::Error {
                kind: "error",
                message: "the service failed",
            },
            (None, _) => SpanStatus::Error {
                kind: "cancelled",
                message: "the request was dropped before its response",
            },
        };
        crate::span::export_context_span(
            dispatcher,
            &ctx,
            SpanName::Text(self.method.as_str()),
            SpanKind::Server,
            self.started,
            span_status,
        );
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        self.end(None, None);
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CorrelationService`].
    pub struct CorrelationFuture<F> {
        #[pin]
        future: Traced<F>,
        header: Option<HeaderValue>,
        server: ServerSpan,
    }
}

impl<F, ResB, E> Future for CorrelationFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let outcome = std::task::ready!(this.future.as_mut().poll(cx));
        let last = this.future.as_ref().get_ref().context();
        let mut response = match outcome {
            Ok(response) => {
                this.server.end(last, Some(Ok(response.status())));
                response
            }
            Err(e) => {
                this.server.end(last, Some(Err(())));
                return Poll::Ready(Err(e));
            }
        };
        if let Some(value) = this.header.take() {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn malformed_headers_give_a_fresh_trace_and_are_counted() {
        let before = malformed_headers();
        let ctx = extract(&headers(&[
            ("traceparent", "00-zz-00f067aa0ba902b7-01"),
            ("baggage", "no-equals"),
            ("x-correlation-id", "has space"),
        ]));
        assert!(ctx.parent_span_id().is_none(), "a new trace");
        assert!(ctx.explicit_correlation_id().is_none());
        assert!(ctx.baggage().is_empty());
        assert!(malformed_headers() >= before + 3);
    }

    #[test]
    fn correlation_comes_from_the_header_then_the_baggage() {
        let ctx = extract(&headers(&[(
            "baggage",
            "correlation_id=from-baggage,tier=gold",
        )]));
        assert_eq!(ctx.correlation_id().as_str(), "from-baggage");
        assert_eq!(ctx.baggage().get("tier"), Some("gold"));
        assert_eq!(ctx.baggage().get(CORRELATION_BAGGAGE_KEY), None);
        let ctx = extract(&headers(&[
            ("baggage", "correlation_id=from-baggage"),
            ("x-correlation-id", "from-header"),
        ]));
        assert_eq!(ctx.correlation_id().as_str(), "from-header");
    }

    #[test]
    fn repeated_headers_are_ignored() {
        let ctx = extract(&headers(&[
            ("x-correlation-id", "a"),
            ("x-correlation-id", "b"),
        ]));
        assert!(ctx.explicit_correlation_id().is_none());
    }

    #[test]
    fn tracestate_follows_a_valid_traceparent_only_and_a_bad_one_is_dropped_whole() {
        let tp = (
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-01",
        );
        let ctx = extract(&headers(&[
            tp,
            ("tracestate", "foo=1"),
            ("tracestate", " bar=2 "),
        ]));
        assert_eq!(ctx.tracestate().to_header(), "foo=1,bar=2");
        assert_eq!(
            ctx.child().tracestate(),
            ctx.tracestate(),
            "children keep it"
        );
        let mut out = HeaderMap::new();
        inject(&ctx.child(), &mut out);
        assert_eq!(out["tracestate"], "foo=1,bar=2");

        let before = malformed_headers();
        let ctx = extract(&headers(&[tp, ("tracestate", "foo=1,@bar=2")]));
        assert!(ctx.tracestate().is_empty());
        assert!(malformed_headers() > before);
        let ctx = extract(&headers(&[("tracestate", "foo=1")]));
        assert!(
            ctx.tracestate().is_empty(),
            "no traceparent: a new trace, no tracestate"
        );
        let mut out = HeaderMap::new();
        out.insert("tracestate", HeaderValue::from_static("stale=1"));
        inject(&ctx, &mut out);
        assert!(
            out.get("tracestate").is_none(),
            "an empty tracestate is not sent"
        );
    }

    #[test]
    fn inject_then_extract_continues_the_trace() {
        let parent =
            TraceContext::new_root().with_correlation_id(CorrelationId::parse("c-1").unwrap());
        let mut parent = parent;
        parent.add_baggage("tier", "gold").unwrap();
        let mut h = HeaderMap::new();
        inject(&parent, &mut h);
        let child = extract(&h);
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_eq!(child.parent_span_id(), Some(parent.span_id()));
        assert_eq!(child.correlation_id().as_str(), "c-1");
        assert_eq!(child.baggage().get("tier"), Some("gold"));
    }
}
