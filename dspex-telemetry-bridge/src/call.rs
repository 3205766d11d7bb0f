//! Bridge calls: a Python function called through the pool, as a `[:dspex, :bridge, :call]`
//! span, with the worker's own spans emitted as its children.

use std::borrow::Cow;

use dspex_telemetry_core::{
    Measurements, Metadata, SpanAttributes, SpanEventRecord, SpanId, SpanKind, SpanMetadata,
    SpanName, SpanRecord, SpanStatus, TraceFlags, TraceId, TraceState, Value as MetaValue, catalog,
    context, metadata,
};
use serde_json::{Map, Value, json};

use crate::args::Args;
use crate::error::BridgeError;
use crate::pool::{Interest, Pool, Reply};

/// The longest `args` text put in event metadata (it goes to traces and logs, never labels).
const ARGS_TEXT_LIMIT: usize = 256;

/// The Python-side name of a JSON value's type, for `result_type` and `var_type` metadata.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "none",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `args` as JSON text for event metadata: the positional arguments' list, or with keyword
/// arguments `{"args": […], "kwargs": {…}}`; cut after [`ARGS_TEXT_LIMIT`] bytes (at a
/// character boundary, marked `…`). Serialization stops at the limit, so large arguments cost
/// no more than small ones.
pub(crate) fn args_text(args: &[Value], kwargs: &Map<String, Value>) -> String {
    /// Takes bytes until it holds one more than the limit, then refuses the rest.
    struct Bounded(Vec<u8>);
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = (ARGS_TEXT_LIMIT + 1).saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = buf.len().min(room);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Bounded(Vec::with_capacity(64));
    // An error here means the limit was reached: what was written is what is wanted.
    let _ = if kwargs.is_empty() {
        serde_json::to_writer(&mut out, args)
    } else {
        serde_json::to_writer(&mut out, &json!({ "args": args, "kwargs": kwargs }))
    };
    let mut bytes = out.0;
    if bytes.len() <= ARGS_TEXT_LIMIT {
        return String::from_utf8(bytes).unwrap_or_default();
    }
    bytes.truncate(ARGS_TEXT_LIMIT);
    // Back up to a character boundary (serde_json writes UTF-8; the cut may split a character).
    if let Err(e) = std::str::from_utf8(&bytes) {
        bytes.truncate(e.valid_up_to());
    }
    let mut text = String::from_utf8(bytes).unwrap_or_default();
    text.push('…');
    text
}

impl Pool {
    /// Calls `module.function(*args, **kwargs)` in a worker and returns its result, as
    /// structured data (see the worker's conversions in the guide).
    ///
    /// `args` is a `Vec<Value>` of positional arguments, a `Map` of keyword arguments, or an
    /// [`Args`] with both. The call is a `[:dspex, :bridge, :call]` span (metadata `module`,
    /// `function`, `args`; on stop `success`, `result_type`, `worker_id`; on exception
    /// `error`). `args` (the arguments' JSON, at most 256 bytes) is left out when every
    /// handler of the span declared the keys it reads and none named it
    /// ([`dspex_telemetry_core::Reads`]). The current trace travels to the worker, which keeps
    /// it while it serves the call; the spans the worker timed come back as
    /// `[:dspex, :python, :span]` events, children of this call.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Into<Args>,
    ) -> Result<Value, BridgeError> {
        let (args, kwargs) = args.into().into_parts();
        self.call_with_kwargs(module, function, args, kwargs).await
    }

    /// As [`Pool::call`], with positional and keyword arguments apart.
    pub async fn call_with_kwargs(
        &self,
        module: &str,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, BridgeError> {
        let dispatcher = self.config().dispatcher.clone();
        let mut md = metadata! { "module" => module, "function" => function };
        if self.interest() & Interest::CALL_ARGS != 0 {
            // Only for traces and logs: never a label.
            md.insert("args", args_text(&args, &kwargs));
        }
        dispatcher
            .try_span_async(&catalog::BRIDGE_CALL, md, async {
                let mut message = Map::new();
                message.insert("op".into(), json!("call"));
                message.insert("module".into(), json!(module));
                message.insert("function".into(), json!(function));
                message.insert("args".into(), Value::Array(args));
                message.insert("kwargs".into(), Value::Object(kwargs));
                let name = || format!("python {module}.{function}");
                match self.submit_to("call", message, None, None, name).await {
                    Ok(reply) => {
                        let stop = metadata! {
                            "success" => true,
                            "result_type" => type_name(&reply.result),
                            "worker_id" => reply.worker_id,
                        };
                        (Ok(reply.result), stop)
                    }
                    Err(e) => {
                        let kind = e.kind();
                        (Err(e), metadata! { "success" => false, "error" => kind })
                    }
                }
            })
            .await
    }

    /// Checks a worker answers; the reply carries the trace the worker saw (for tests).
    pub async fn ping(&self) -> Result<Value, BridgeError> {
        let mut message = Map::new();
        message.insert("op".into(), json!("ping"));
        self.submit_to("ping", message, None, None, || "python ping".into())
            .await
            .map(|r| r.trace_seen)
    }

    /// Emits the spans a worker returned, inside the current (bridge call) context: the
    /// worker's side of the call (`name`, timed by the worker) and the blocks its code timed.
    pub(crate) fn emit_python_spans(&self, reply: &Reply, name: impl FnOnce() -> String) {
        if self.interest() & Interest::PYTHON_SPAN == 0 {
            return;
        }
        let dispatcher = &self.config().dispatcher;
        let Some(ctx) = context::current() else {
            return;
        };
        let events = dispatcher.has_handlers(&catalog::PYTHON_SPAN);
        let records = dispatcher.has_span_sinks();
        // Ids in hex on the stack (ASCII, so always UTF-8), for the events.
        fn ascii(hex: &[u8]) -> &str {
            std::str::from_utf8(hex).unwrap_or_default()
        }
        let trace_hex = ctx.trace_id().hex_bytes();
        let trace_id = ascii(&trace_hex);
        // Every span of the reply ran in the worker's process: its resource, not the service's.
        let resource = reply
            .resource
            .as_deref()
            .map_or(SpanAttributes::EMPTY, SpanAttributes::new);
        // A span of another trace (one that outlived an earlier call) keeps none of this
        // call's trace state.
        let no_state = TraceState::new();
        let span =
            |trace_id: TraceId,
             name: &str,
             span_id: SpanId,
             (parent, parent_is_remote): (Option<SpanId>, bool),
             kind: SpanKind,
             (start, end): (i64, i64),
             status: SpanStatus<'_>,
             metadata: &Metadata<'_>,
             (attributes, events): (SpanAttributes<'_>, &[SpanEventRecord<'_>])| {
                let own = trace_id == ctx.trace_id();
                dispatcher.export_span(&SpanRecord {
                    trace_id,
                    span_id,
                    parent_span_id: parent,
                    parent_is_remote,
                    flags: if own {
                        ctx.flags()
                    } else {
                        TraceFlags::SAMPLED
                    },
                    tracestate: if own { ctx.tracestate() } else { &no_state },
                    name: SpanName::Text(name),
                    kind,
                    start_unix_ns: start.max(0) as u64,
                    end_unix_ns: end.max(start).max(0) as u64,
                    status,
                    metadata: SpanMetadata::one(metadata),
                    attributes,
                    correlation_id: ctx.explicit_correlation_id().filter(|_| own),
                    events,
                    resource,
                });
            };
        // The worker's side of the call is a child of the current span, or, in a context that
        // is no span (a call made outside any span), of the span that context stands for.
        let call_parent = match ctx.is_span() {
            true => (Some(ctx.span_id()), false),
            false => (ctx.parent_span_id(), ctx.parent_is_remote()),
        };
        if let (Some(call), Some(span_id)) = (reply.call_span.as_ref(), reply.python_span_id) {
            let (start, end) = (call.start_ns, call.end_ns);
            let name = name();
            let status = call.status.as_deref();
            let failed = status == Some("error");
            let message = call.message.as_deref();
            if records {
                let status = match failed {
                    true => SpanStatus::Error {
                        kind: "error",
                        message: message.unwrap_or("error"),
                    },
                    false => SpanStatus::Unset,
                };
                let md = Metadata::new().with("worker_id", reply.worker_id);
                span(
                    ctx.trace_id(),
                    &name,
                    span_id,
                    call_parent,
                    SpanKind::Server,
                    (start, end),
                    status,
                    &md,
                    (SpanAttributes::EMPTY, &[]),
                );
            }
            if events {
                let span_hex = span_id.hex_bytes();
                let parent_hex = call_parent.0.map(|p| p.hex_bytes());
                let mut md = Metadata::new()
                    .with("name", name)
                    .with("trace_id", trace_id)
                    .with("span_id", ascii(&span_hex))
                    .with(
                        "parent_span_id",
                        parent_hex.as_ref().map_or("", |h| ascii(h)),
                    )
                    .with("status", status.unwrap_or("ok"))
                    .with("worker_id", reply.worker_id);
                if let Some(message) = message {
                    md.insert("message", message);
                }
                let m = Measurements::new()
                    .with("start_time", start)
                    .with("end_time", end)
                    .with("duration", end.saturating_sub(start));
                dispatcher.execute(&catalog::PYTHON_SPAN, &m, &md);
            }
        }
        for python in &reply.spans {
            // Wire form: [name, span_id, parent_span_id, start_ns, end_ns, status, message,
            // attributes], and for a span of Python's OpenTelemetry a ninth field: its trace
            // id, kind and events; its attributes keep their names.
            let Some(fields) = python.as_array().filter(|f| f.len() == 8 || f.len() == 9) else {
                let span = dspex_telemetry_core::log_safe(&python.to_string(), 200);
                tracing::debug!(%span, "ignored a malformed span from a worker");
                continue;
            };
            let otel = fields.get(8).and_then(Value::as_object);
            let num = |i: usize| fields[i].as_i64().unwrap_or(0);
            let text = |i: usize| fields[i].as_str().unwrap_or("");
            let (start, end) = (num(3), num(4));
            // Ids as ints (the worker's own spans) or hex (OpenTelemetry's); a parent of the
            // worker's own spans that is null is the call's span.
            let id = |i: usize| match &fields[i] {
                Value::Number(n) => n.as_u64().map(|n| SpanId::from_bytes(n.to_be_bytes())),
                Value::String(hex) => SpanId::from_hex(hex).ok(),
                _ => None,
            };
            let span_id = id(1).filter(SpanId::is_valid);
            let parent = match (&fields[2], otel) {
                (Value::Null, None) => reply.python_span_id,
                _ => id(2).filter(SpanId::is_valid),
            };
            let attributes = json_metadata(fields[7].as_object());
            let span_trace = otel
                .and_then(|o| o.get("trace_id")?.as_str())
                .and_then(|t| TraceId::from_hex(t).ok())
                .unwrap_or(ctx.trace_id());
            if records {
                if let Some(span_id) = span_id {
                    let status = match text(5) {
                        "error" => SpanStatus::Error {
                            kind: "error",
                            message: fields[6].as_str().unwrap_or("error"),
                        },
                        _ => SpanStatus::Unset,
                    };
                    match otel {
                        None => {
                            let mut md = attributes.clone();
                            md.insert("worker_id", reply.worker_id);
                            span(
                                span_trace,
                                text(0),
                                span_id,
                                (parent, false),
                                SpanKind::Internal,
                                (start, end),
                                status,
                                &md,
                                (SpanAttributes::EMPTY, &[]),
                            );
                        }
                        Some(otel) => {
                            let named: Vec<(String, MetaValue<'static>)> = attributes
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone().into_owned()))
                                .collect();
                            let event_attributes: Vec<(&str, u64, Metadata<'_>)> = otel
                                .get("events")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(|e| {
                                    let e = e.as_array()?;
                                    let name = e.first()?.as_str()?;
                                    let at = e.get(1)?.as_u64()?;
                                    let attrs = e.get(2).and_then(Value::as_object);
                                    Some((name, at, json_metadata(attrs)))
                                })
                                .collect();
                            let events: Vec<SpanEventRecord<'_>> = event_attributes
                                .iter()
                                .map(|(name, unix_ns, attributes)| SpanEventRecord {
                                    name,
                                    unix_ns: *unix_ns,
                                    attributes,
                                })
                                .collect();
                            let kind = match otel.get("kind").and_then(Value::as_str) {
                                Some("server") => SpanKind::Server,
                                Some("client") => SpanKind::Client,
                                Some("producer") => SpanKind::Producer,
                                Some("consumer") => SpanKind::Consumer,
                                _ => SpanKind::Internal,
                            };
                            let md = Metadata::new().with("worker_id", reply.worker_id);
                            span(
                                span_trace,
                                text(0),
                                span_id,
                                (parent, false),
                                kind,
                                (start, end),
                                status,
                                &md,
                                (SpanAttributes::new(&named), &events),
                            );
                        }
                    }
                }
            }
            if events {
                let measurements = Measurements::new()
                    .with("start_time", start)
                    .with("end_time", end)
                    .with("duration", end.saturating_sub(start));
                let span_trace_hex = span_trace.hex_bytes();
                let span_hex = span_id.map(|s| s.hex_bytes());
                let parent_hex = parent.map(|p| p.hex_bytes());
                let mut md = Metadata::new()
                    .with("name", text(0))
                    .with("trace_id", ascii(&span_trace_hex))
                    .with("span_id", span_hex.as_ref().map_or("", |h| ascii(h)))
                    .with(
                        "parent_span_id",
                        parent_hex.as_ref().map_or("", |h| ascii(h)),
                    )
                    .with("status", text(5))
                    .with("worker_id", reply.worker_id);
                if let Some(message) = fields[6].as_str() {
                    md.insert("message", message);
                }
                md.extend(attributes);
                dispatcher.execute(&catalog::PYTHON_SPAN, &measurements, &md);
            }
        }
    }
}

/// A span's attributes sent by a worker, as metadata (values that are not text, a number or a
/// boolean as their JSON text).
fn json_metadata(attrs: Option<&Map<String, Value>>) -> Metadata<'_> {
    let mut metadata = Metadata::new();
    for (k, v) in attrs.into_iter().flatten() {
        let value: MetaValue<'_> = match v {
            Value::String(s) => s.as_str().into(),
            Value::Bool(b) => (*b).into(),
            Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or(0).into(),
            Value::Number(n) => n.as_f64().unwrap_or(0.0).into(),
            other => Cow::<str>::Owned(other.to_string()).into(),
        };
        metadata.insert(k.as_str(), value);
    }
    metadata
}

impl Pool {
    /// Emits a `[:dspex, :lm, :call]` event for each language-model call the worker saw during
    /// the call (DSPy's, through its callbacks), in the current (bridge call) context.
    pub(crate) fn emit_lm_calls(&self, reply: &Reply) {
        if reply.lm.is_empty() {
            return;
        }
        let dispatcher = &self.config().dispatcher;
        if !dispatcher.has_handlers(&catalog::LM_CALL) {
            return;
        }
        for call in &reply.lm {
            // Wire form: [model, start_ns, end_ns, error_type, error, prompt, completion, total].
            let Some(fields) = call.as_array().filter(|f| f.len() == 8) else {
                let call = dspex_telemetry_core::log_safe(&call.to_string(), 200);
                tracing::debug!(%call, "ignored a malformed LM call from a worker");
                continue;
            };
            let num = |i: usize| fields[i].as_i64().unwrap_or(0);
            let (start, end) = (num(1), num(2));
            let mut m = Measurements::new()
                .with("start_time", start)
                .with("end_time", end)
                .with("duration", end.saturating_sub(start).max(0));
            for (i, key) in [
                (5, "prompt_tokens"),
                (6, "completion_tokens"),
                (7, "total_tokens"),
            ] {
                if let Some(n) = fields[i].as_u64() {
                    m.insert(key, n);
                }
            }
            let model = fields[0].as_str().unwrap_or("unknown");
            let mut md = Metadata::new()
                .with("model", model)
                .with("worker_id", reply.worker_id);
            match fields[3].as_str() {
                Some(kind) => {
                    md.insert("status", "error");
                    md.insert("error", kind);
                    if let Some(message) = fields[4].as_str() {
                        md.insert("message", message);
                    }
                }
                None => md.insert("status", "ok"),
            }
            dispatcher.execute(&catalog::LM_CALL, &m, &md);
        }
    }
}

/// Who runs a tool, and for how long it may run.
#[derive(Debug, Clone, Default)]
pub struct ToolCall<'a> {
    /// The session the tool runs in (event metadata; never a label).
    pub session_id: Option<&'a str>,
    /// Who asked for it (an agent, a program), for the `caller` metadata.
    pub caller: Option<&'a str>,
    /// A deadline other than the pool's `call_timeout`; past it the worker is killed and the
    /// call fails with kind `timeout`.
    pub timeout: Option<std::time::Duration>,
}

impl Pool {
    /// Executes the tool registered in Python as `name` (with `@register_tool`, in a module
    /// the pool preloads) as a `[:dspex, :tools, :execute]` span: metadata `tool_name`,
    /// `session_id`, `caller`; on stop `result_type`; on exception `kind` (`error` or
    /// `timeout`) and `reason`.
    ///
    /// `args` is a `Vec<Value>` of positional arguments, a `Map` of keyword arguments, or an
    /// [`Args`] with both.
    pub async fn execute_tool(
        &self,
        name: &str,
        args: impl Into<Args>,
        call: ToolCall<'_>,
    ) -> Result<Value, BridgeError> {
        let (args, kwargs) = args.into().into_parts();
        let mut md = metadata! { "tool_name" => name };
        if let Some(s) = call.session_id {
            md.insert("session_id", s);
        }
        if let Some(c) = call.caller {
            md.insert("caller", c);
        }
        let dispatcher = self.config().dispatcher.clone();
        dispatcher
            .try_span_async(&catalog::TOOLS_EXECUTE, md, async {
                let mut message = Map::new();
                message.insert("op".into(), json!("tool"));
                message.insert("name".into(), json!(name));
                message.insert("args".into(), Value::Array(args));
                if !kwargs.is_empty() {
                    message.insert("kwargs".into(), Value::Object(kwargs));
                }
                let span_name = || format!("python tool {name}");
                match self.submit_to("tool", message, call.timeout, None, span_name).await {
                    Ok(reply) => {
                        let stop = metadata! { "result_type" => type_name(&reply.result), "worker_id" => reply.worker_id };
                        (Ok(reply.result), stop)
                    }
                    Err(e) => {
                        let kind = if matches!(e, BridgeError::DeadlineExceeded(_)) { "timeout" } else { "error" };
                        let error = e.kind();
                        (Err(e), metadata! { "kind" => kind, "error" => error })
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_text_is_the_json_cut_at_the_limit_on_a_character_boundary() {
        let short = vec![json!(-3), json!("two")];
        assert_eq!(args_text(&short, &Map::new()), r#"[-3,"two"]"#);
        let kwargs = json!({"question": "why?"}).as_object().cloned().unwrap();
        assert_eq!(
            args_text(&short, &kwargs),
            r#"{"args":[-3,"two"],"kwargs":{"question":"why?"}}"#
        );

        let exact = vec![json!("x".repeat(ARGS_TEXT_LIMIT - 4))];
        assert_eq!(args_text(&exact, &Map::new()).len(), ARGS_TEXT_LIMIT);
        assert!(!args_text(&exact, &Map::new()).ends_with('…'));

        // A megabyte of arguments: the text is the first bytes of its JSON, marked as cut.
        let big = vec![json!("é".repeat(500_000)), json!({"k": [1, 2, 3]})];
        let text = args_text(&big, &Map::new());
        let full = serde_json::to_string(&big).unwrap();
        let kept = text.strip_suffix('…').expect("marked as cut");
        assert!(full.starts_with(kept));
        assert!(kept.len() <= ARGS_TEXT_LIMIT && kept.len() >= ARGS_TEXT_LIMIT - 3);
    }
}
