//! OpenTelemetry: every span of the core (bridge calls, tools, contracts, casts, users'
//! `with_span`, spans the Python workers time) becomes an OTLP span with its real trace id,
//! span id, parent, timestamps, status and attributes (the event's metadata as `dspex.*`, and
//! what code set with `context::set_attributes` under its own names), sent in batches over OTLP/HTTP
//! (protobuf) or OTLP/gRPC from a task of its own. The handler on the caller's thread only copies the span
//! into a bounded queue; a full queue drops the span and counts it.

mod metrics;
mod proto;
mod transport;

pub use metrics::{OtlpMetrics, OtlpMetricsConfig, OtlpMetricsRecorder};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_core::{
    Dispatcher, Event, EventName, SpanId, SpanPrefix, TraceId, catalog, context,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::Secret;
use proto::{Attributes, SpanRecord, StrAttributes};
use transport::{Signal, Transport};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST <endpoint>/v1/traces` (the collector's port 4318).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC, `TraceService/Export` over HTTP/2 without TLS (the collector's port 4317).
    Grpc,
}

/// The OTLP trace exporter's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's base URL (default `http://127.0.0.1:4318`; for gRPC usually port 4317).
    pub endpoint: String,
    /// OTLP/HTTP (default) or OTLP/gRPC.
    pub protocol: Protocol,
    /// Extra request headers (an API key, say); their values never show in `Debug`.
    pub headers: Vec<(String, Secret)>,
    /// The `service.name` resource attribute (default `dspex`).
    pub service_name: String,
    /// The `service.version` resource attribute, if any.
    pub service_version: Option<String>,
    /// Spans waiting to be sent, at most; more are dropped and counted (default 2 048).
    pub max_queue: usize,
    /// Spans per request, at most (default 512).
    pub max_batch: usize,
    /// How long a span may wait before its batch is sent (default 1 s).
    pub export_interval: Duration,
    /// How long one request may take (default 10 s).
    pub timeout: Duration,
    /// Span prefixes to export besides the core's (your own `SpanPrefix`es).
    pub extra_spans: Vec<SpanPrefix>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "dspex".into(),
            service_version: None,
            max_queue: 2_048,
            max_batch: 512,
            export_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            extra_spans: Vec::new(),
        }
    }
}

/// Why the exporter could not start; each names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A key's value is unusable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The dispatcher refused the handler (its id is taken).
    #[error(transparent)]
    Attach(#[from] dspex_telemetry_core::AttachError),
}

/// What the exporter has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OtlpStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped: the queue was full, or their request failed.
    pub dropped: u64,
    /// Requests that failed (collector down, refusing, too slow).
    pub failed_requests: u64,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed_requests: AtomicU64,
}

/// Finished spans waiting for the sending task. The handler only pushes (under a lock held
/// for the push); the task takes the whole list on its interval or when asked to flush, so a
/// span costs the caller no wake-up of the task.
struct Queue {
    spans: Mutex<Vec<SpanRecord>>,
    max: usize,
}

impl Queue {
    /// Adds `span`; false (and `span` dropped) if the queue is full.
    fn push(&self, span: SpanRecord) -> bool {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= self.max {
            return false;
        }
        spans.push(span);
        true
    }

    /// Everything queued; the queue starts again with as much room as it had, so the next
    /// interval's spans do not regrow it step by step on the callers' threads.
    fn take(&self) -> Vec<SpanRecord> {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let room = spans.capacity().min(self.max);
        std::mem::replace(&mut *spans, Vec::with_capacity(room))
    }
}

/// The core's span prefixes: the events whose `stop` and `exception` end a span.
fn core_spans() -> [&'static SpanPrefix; 5] {
    [
        &catalog::BRIDGE_CALL,
        &catalog::TOOLS_EXECUTE,
        &catalog::CONTRACT_VALIDATE,
        &catalog::TYPES_CAST,
        &catalog::TRACE_SPAN,
    ]
}

/// A running trace exporter. [`OtlpTraces::shutdown`] sends what is queued, then stops.
#[derive(Debug)]
pub struct OtlpTraces {
    dispatcher: Dispatcher,
    handler_id: String,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    counters: Arc<CountersHandle>,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct CountersHandle(Counters);

impl std::fmt::Debug for CountersHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

impl OtlpTraces {
    /// Checks `config`, attaches a handler (id `handler_id`) to the span events of
    /// `dispatcher`, and starts the sending task on the current tokio runtime.
    pub fn start(
        config: OtlpConfig,
        dispatcher: &Dispatcher,
        handler_id: &str,
    ) -> Result<Self, OtlpError> {
        let invalid = |key: &'static str, reason: String| OtlpError::Invalid { key, reason };
        let transport = Transport::new(
            config.protocol,
            &config.endpoint,
            &config.headers,
            config.timeout,
        )
        .map_err(|(key, reason)| invalid(key, reason))?;
        if config.max_queue == 0 {
            return Err(invalid("max_queue", "must be at least 1".into()));
        }
        if config.max_batch == 0 {
            return Err(invalid("max_batch", "must be at least 1".into()));
        }
        if config.export_interval.is_zero() {
            return Err(invalid("export_interval", "must be above zero".into()));
        }
        let counters = Arc::new(CountersHandle::default());
        let queue = Arc::new(Queue {
            spans: Mutex::new(Vec::new()),
            max: config.max_queue,
        });
        let (flushes, flush_requests) = mpsc::channel(16);
        let mut events: Vec<EventName> = Vec::new();
        for prefix in core_spans().into_iter().chain(config.extra_spans.iter()) {
            events.push(prefix.stop().clone());
            events.push(prefix.exception().clone());
        }
        events.push(catalog::PYTHON_SPAN);
        let sender = queue.clone();
        let handler_counters = counters.clone();
        // Each span's name (the event's without its phase), built once: `dspex.bridge.call`.
        let names: Vec<(EventName, Arc<str>)> = events
            .iter()
            .map(|e| {
                let segments: Vec<&str> = e.segments().collect();
                let prefix = &segments[..segments.len().saturating_sub(1)];
                (e.clone(), Arc::from(prefix.join(".")))
            })
            .collect();
        dispatcher.attach_many(handler_id, events, move |event: &Event<'_>| {
            let name = names
                .iter()
                .find(|(e, _)| e == event.name())
                .map(|(_, n)| n.clone());
            let Some(span) = span_of(event, name) else {
                return;
            };
            if !sender.push(span) {
                handler_counters.0.dropped.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let task = tokio::spawn(export_loop(
            config,
            transport,
            queue,
            flush_requests,
            counters.clone(),
        ));
        Ok(OtlpTraces {
            dispatcher: dispatcher.clone(),
            handler_id: handler_id.to_owned(),
            flushes,
            counters,
            task: Some(task),
        })
    }

    /// What has been exported, dropped and failed so far.
    pub fn stats(&self) -> OtlpStats {
        let c = &self.counters.0;
        OtlpStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
        }
    }

    /// Sends what is queued now, and waits until it has been sent (or has failed).
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Detaches the handler, sends what is queued, and stops.
    pub async fn shutdown(mut self) {
        let _ = self.dispatcher.detach(&self.handler_id);
        self.flush().await;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for OtlpTraces {
    fn drop(&mut self) {
        let _ = self.dispatcher.detach(&self.handler_id);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The span an event ends, if it ends one; `span_name` is the event's without its phase.
fn span_of(event: &Event<'_>, span_name: Option<Arc<str>>) -> Option<SpanRecord> {
    let name = event.name();
    if *name == catalog::PYTHON_SPAN {
        return python_span(event);
    }
    let ctx = context::current()?;
    let failed = name.segments().last() == Some("exception");
    let duration = event
        .measurements()
        .get("duration")
        .map_or(0, |d| d.as_i64().unwrap_or(0).max(0) as u64);
    let end = dspex_telemetry_core::system_time_ns().max(0) as u64;
    let mut span_name = span_name.unwrap_or_else(|| {
        let segments: Vec<&str> = name.segments().collect();
        Arc::from(segments[..segments.len().saturating_sub(1)].join("."))
    });
    let mut attributes = Attributes::with_capacity(event.metadata().len() + 4);
    push_correlation_id(
        &mut attributes,
        ctx.explicit_correlation_id(),
        ctx.trace_id(),
    );
    let mut error = None;
    let trace_span = name.starts_with(catalog::TRACE_SPAN.prefix());
    for (key, value) in event.metadata().iter() {
        if trace_span && key == "name" {
            span_name = Arc::from(value.to_string());
            continue;
        }
        if failed && key == "reason" {
            error = Some(value.to_string());
        }
        // OpenTelemetry semantic conventions where one applies: the Python function a bridge
        // call runs, and the error's type.
        match key {
            "module" => attributes.push("", "code.namespace", value),
            "function" => attributes.push("", "code.function", value),
            "kind" if failed => attributes.push("", "error.type", value),
            _ => {}
        }
        attributes.push("dspex.", key, value);
    }
    // Set by the code inside the span (`context::set_attributes`), under their own names.
    for (key, value) in ctx.attributes() {
        attributes.push("", key, value);
    }
    if failed && error.is_none() {
        error = Some("failed".into());
    }
    Some(SpanRecord {
        trace_id: ctx.trace_id().to_bytes(),
        span_id: ctx.span_id().to_bytes(),
        parent_span_id: ctx.parent_span_id().map(SpanId::to_bytes),
        kind: if name.starts_with(catalog::BRIDGE_CALL.prefix()) {
            3
        } else {
            1
        },
        name: span_name,
        start_unix_ns: end.saturating_sub(duration),
        end_unix_ns: end,
        attributes: attributes.into_bytes(),
        error,
    })
}

/// `dspex.correlation_id`: the correlation id when one was given, else the trace id.
fn push_correlation_id(
    attributes: &mut Attributes,
    given: Option<&dspex_telemetry_core::CorrelationId>,
    trace_id: TraceId,
) {
    const KEY: &str = "dspex.correlation_id";
    match given {
        Some(id) => attributes.push_str(KEY, id.as_str().as_bytes()),
        None => attributes.push_str(KEY, &trace_id.hex_bytes()),
    }
}

/// A `[:dspex, :python, :span]` event: ids, parent and times as the worker reported them.
fn python_span(event: &Event<'_>) -> Option<SpanRecord> {
    let md = event.metadata();
    let text = |k: &str| md.get(k).and_then(|v| v.as_str());
    let trace_id = TraceId::from_hex(text("trace_id")?).ok()?;
    let span_id = SpanId::from_hex(text("span_id")?).ok()?;
    let parent = text("parent_span_id").and_then(|p| SpanId::from_hex(p).ok());
    let time = |k: &str| {
        event
            .measurements()
            .get(k)
            .map_or(0, |v| v.as_i64().unwrap_or(0).max(0) as u64)
    };
    let mut attributes = Attributes::with_capacity(md.len());
    // The correlation id of the call the worker served (the trace id when none was given).
    let call = context::current();
    let given = call.as_ref().and_then(|ctx| ctx.explicit_correlation_id());
    push_correlation_id(&mut attributes, given, trace_id);
    for (key, value) in md.iter() {
        if !matches!(
            key,
            "trace_id" | "span_id" | "parent_span_id" | "name" | "status" | "message"
        ) {
            attributes.push("dspex.", key, value);
        }
    }
    Some(SpanRecord {
        trace_id: trace_id.to_bytes(),
        span_id: span_id.to_bytes(),
        parent_span_id: parent.map(SpanId::to_bytes),
        name: Arc::from(text("name").unwrap_or("python")),
        kind: 1,
        start_unix_ns: time("start_time"),
        end_unix_ns: time("end_time"),
        attributes: attributes.into_bytes(),
        error: (text("status") == Some("error"))
            .then(|| text("message").unwrap_or("error").to_owned()),
    })
}

/// The resource attributes every export carries.
fn resource(service_name: &str, service_version: Option<&str>) -> Vec<(String, String)> {
    let mut resource = vec![("service.name".to_owned(), service_name.to_owned())];
    if let Some(version) = service_version {
        resource.push(("service.version".into(), version.to_owned()));
    }
    resource.push(("telemetry.sdk.name".into(), "dspex-telemetry".to_owned()));
    resource
}

async fn export_loop(
    config: OtlpConfig,
    transport: Transport,
    queue: Arc<Queue>,
    mut flush_requests: mpsc::Receiver<oneshot::Sender<()>>,
    counters: Arc<CountersHandle>,
) {
    let resource = resource(&config.service_name, config.service_version.as_deref());
    let mut ticks = tokio::time::interval(config.export_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flushed = tokio::select! {
            request = flush_requests.recv() => match request {
                Some(done) => Some(done),
                None => return,
            },
            _ = ticks.tick() => None,
        };
        let mut spans = queue.take();
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(config.max_batch));
            send(&transport, &resource, &spans, &counters.0).await;
            spans = rest;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

async fn send(
    transport: &Transport,
    resource: &StrAttributes,
    spans: &[SpanRecord],
    counters: &Counters,
) {
    let body = proto::export_trace_request(
        resource,
        "dspex-telemetry",
        env!("CARGO_PKG_VERSION"),
        spans,
    );
    match transport.export(Signal::Traces, body).await {
        Ok(()) => {
            counters
                .exported
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
        Err(why) => {
            if counters.failed_requests.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(authority = %transport.endpoint.authority, error = %why, "OTLP export failed; counting further failures");
            }
            counters
                .dropped
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
    }
}
