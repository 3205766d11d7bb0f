//! The catalog of DSPex event names, with each event's measurements and metadata.
//!
//! Names follow `[:dspex, :component, :operation, :phase]`. A *span* is three events sharing
//! a prefix: `start` (measurements `monotonic_time`, `system_time`), then `stop`
//! (`duration`, `monotonic_time`, plus whatever the operation added) or `exception`
//! (`duration`, `monotonic_time`; metadata `kind`, `reason`). Durations and times are
//! integer nanoseconds; `system_time` is nanoseconds since the Unix epoch.
//!
//! [`EVENTS`] lists every entry so generators (dashboards, docs) can walk the catalog.
//!
//! **Labels.** `args`, `session_id`, `correlation_id` and trace ids are metadata for
//! traces and logs only; metric handlers must never turn them into labels.

use crate::event::EventName;
use crate::span::SpanPrefix;

/// Bridge call span, `[:dspex, :bridge, :call, :start | :stop | :exception]`: one call from
/// Rust into a Python worker.
///
/// Metadata: `module`, `function`, `args` (never a label), `session_id` (never a label);
/// on stop `success` (bool) and `result_type`; on exception `kind`, `reason`, `error`.
pub static BRIDGE_CALL: SpanPrefix =
    SpanPrefix::from_static(BRIDGE_CALL_SEGMENTS).with_kind(crate::SpanKind::Client);
const BRIDGE_CALL_SEGMENTS: &[&str] = &["dspex", "bridge", "call"];

/// Tool execution span, `[:dspex, :tools, :execute, …]`.
///
/// Metadata: `tool_name`, `session_id` (never a label), `caller`; on stop `result_type`;
/// on exception `kind` (`error`, `panic`, `timeout`), `reason`.
pub static TOOLS_EXECUTE: SpanPrefix = SpanPrefix::from_static(TOOLS_EXECUTE_SEGMENTS);
const TOOLS_EXECUTE_SEGMENTS: &[&str] = &["dspex", "tools", "execute"];

/// Contract validation span, `[:dspex, :contract, :validate, …]`: arguments checked against a
/// declared signature such as `"question -> answer"`.
///
/// Metadata: `signature`, `module`, `function`; on stop `valid` (bool), `violations` (count).
pub static CONTRACT_VALIDATE: SpanPrefix = SpanPrefix::from_static(CONTRACT_VALIDATE_SEGMENTS);
const CONTRACT_VALIDATE_SEGMENTS: &[&str] = &["dspex", "contract", "validate"];

/// Type casting span, `[:dspex, :types, :cast, …]`: a Python result cast to a declared type.
///
/// Metadata: `from_type`, `to_type`; on stop `success` (bool).
pub static TYPES_CAST: SpanPrefix = SpanPrefix::from_static(TYPES_CAST_SEGMENTS);
const TYPES_CAST_SEGMENTS: &[&str] = &["dspex", "types", "cast"];

/// A session was created, `[:dspex, :session, :created]`.
///
/// Measurements: `system_time`. Metadata: `session_id` (never a label).
pub const SESSION_CREATED: EventName = EventName::from_static(&["dspex", "session", "created"]);

/// A session expired or was closed, `[:dspex, :session, :expired]`.
///
/// Measurements: `lifetime_ms` (milliseconds the session lived), `operations` (how many
/// operations it served). Metadata: `session_id` (never a label), `reason`.
pub const SESSION_EXPIRED: EventName = EventName::from_static(&["dspex", "session", "expired"]);

/// A session variable was written, `[:dspex, :session, :variable, :set]`.
///
/// Measurements: `size` (bytes of the encoded value). Metadata: `session_id`, `var_name`,
/// `var_type`.
pub const SESSION_VARIABLE_SET: EventName =
    EventName::from_static(&["dspex", "session", "variable", "set"]);

/// A session variable was read, `[:dspex, :session, :variable, :get]`.
///
/// Measurements: `size` (bytes; 0 when not found). Metadata: `session_id`, `var_name`,
/// `var_type`, `found` (bool).
pub const SESSION_VARIABLE_GET: EventName =
    EventName::from_static(&["dspex", "session", "variable", "get"]);

/// A request entered the worker pool's queue, `[:dspex, :pool, :request, :queued]`.
///
/// Measurements: `queue_depth` (after enqueueing). Metadata: `pool`, `operation`.
pub const POOL_REQUEST_QUEUED: EventName =
    EventName::from_static(&["dspex", "pool", "request", "queued"]);

/// A queued request was handed to a worker, `[:dspex, :pool, :request, :dispatched]`.
///
/// Measurements: `queue_time` (nanoseconds spent queued), `queue_depth`. Metadata: `pool`,
/// `operation`, `worker_id`.
pub const POOL_REQUEST_DISPATCHED: EventName =
    EventName::from_static(&["dspex", "pool", "request", "dispatched"]);

/// A worker process started, `[:dspex, :pool, :worker, :spawned]`.
///
/// Measurements: `startup_time` (nanoseconds until ready). Metadata: `pool`, `worker_id`,
/// `os_pid`.
pub const POOL_WORKER_SPAWNED: EventName =
    EventName::from_static(&["dspex", "pool", "worker", "spawned"]);

/// A worker process ended, `[:dspex, :pool, :worker, :exited]`.
///
/// Measurements: `uptime` (nanoseconds). Metadata: `pool`, `worker_id`, `os_pid`, `reason`
/// (`shutdown`, `crashed`, `killed_deadline`, `protocol_error`, `recycled_memory`,
/// `recycled_requests`), `exit_code` (when it exited with one), `signal` (when a signal ended
/// it: `SIGKILL`, `SIGSEGV`, …).
pub const POOL_WORKER_EXITED: EventName =
    EventName::from_static(&["dspex", "pool", "worker", "exited"]);

/// A worker was replaced after it exited, `[:dspex, :pool, :worker, :restarted]`.
///
/// Measurements: `restarts` (total for this pool). Metadata: `pool`, `worker_id`, `reason`.
pub const POOL_WORKER_RESTARTED: EventName =
    EventName::from_static(&["dspex", "pool", "worker", "restarted"]);

/// The queue was full and a request was refused, `[:dspex, :pool, :exhausted]`.
///
/// Measurements: `queue_depth`, `max_queue_depth`. Metadata: `pool`, `operation`.
pub const POOL_EXHAUSTED: EventName = EventName::from_static(&["dspex", "pool", "exhausted"]);

/// Periodic pool health, `[:dspex, :pool, :health]`.
///
/// Measurements: `workers_idle`, `workers_busy`, `workers_starting`, `queue_depth`,
/// `max_queue_depth`, `workers_memory_bytes` (the workers' resident memory together), and
/// where the OS reports them, this process's own `process_memory_bytes` and
/// `process_cpu_seconds`. Metadata: `pool`.
pub const POOL_HEALTH: EventName = EventName::from_static(&["dspex", "pool", "health"]);

/// A worker's resource usage, read from the OS with each health event,
/// `[:dspex, :pool, :worker, :usage]`.
///
/// Measurements: `memory_bytes` (resident), `cpu_seconds` (user and system, since the worker
/// started), `requests` (served by this worker). Metadata: `pool`, `worker_id`, `os_pid`.
pub const POOL_WORKER_USAGE: EventName =
    EventName::from_static(&["dspex", "pool", "worker", "usage"]);

/// A span a Python worker timed and returned with its reply, `[:dspex, :python, :span]`,
/// emitted on the Rust side inside the bridge call it belongs to.
///
/// Measurements: `start_time`, `end_time` (nanoseconds since the Unix epoch, on the worker's
/// clock), `duration` (nanoseconds). Metadata: `name`, `trace_id`, `span_id`,
/// `parent_span_id`, `status` (`ok` | `error`), `message` (on error), `worker_id`, and the
/// span's own attributes.
pub const PYTHON_SPAN: EventName = EventName::from_static(&["dspex", "python", "span"]);

/// A language-model call made in a Python worker, `[:dspex, :lm, :call]`: one per call DSPy
/// made (seen through its callbacks), emitted on the Rust side inside the bridge call it
/// belongs to, whether that call succeeded or raised.
///
/// Measurements: `start_time`, `end_time` (nanoseconds since the Unix epoch, on the worker's
/// clock), `duration` (nanoseconds), and when the LM reported them `prompt_tokens`,
/// `completion_tokens`, `total_tokens`. Metadata: `model`, `status` (`ok` | `error`), on error
/// `error` (the exception's type) and `message`, `worker_id`.
pub const LM_CALL: EventName = EventName::from_static(&["dspex", "lm", "call"]);

/// A handler panicked and was detached, `[:dspex, :telemetry, :handler, :failure]`.
///
/// Measurements: `system_time`. Metadata: `handler_id`, `event` (dotted name), `kind`
/// (`panic`), `reason` (the panic message).
pub const HANDLER_FAILURE: EventName =
    EventName::from_static(&["dspex", "telemetry", "handler", "failure"]);

/// An alert started firing, `[:dspex, :alerts, :fired]`.
///
/// Measurements: `value`, `threshold`, `active` (alerts firing now). Metadata: `alert_type`,
/// `severity`, `metric`, `rule`.
pub const ALERT_FIRED: EventName = EventName::from_static(&["dspex", "alerts", "fired"]);

/// A firing alert resolved, `[:dspex, :alerts, :resolved]`.
///
/// Measurements: `value`, `threshold`, `firing_duration` (nanoseconds), `active`. Metadata
/// as [`ALERT_FIRED`].
pub const ALERT_RESOLVED: EventName = EventName::from_static(&["dspex", "alerts", "resolved"]);

/// A span opened by [`crate::with_span`], `[:dspex, :trace, :span, …]`.
///
/// Metadata: `name` (the span's name, for example `business.process_request`).
pub static TRACE_SPAN: SpanPrefix = SpanPrefix::from_static(TRACE_SPAN_SEGMENTS);
const TRACE_SPAN_SEGMENTS: &[&str] = &["dspex", "trace", "span"];

/// Whether a catalog entry is a span (three events) or a single event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `start`, then `stop` or `exception`.
    Span,
    /// One event.
    Single,
}

/// One catalog entry, for tools that walk the catalog.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// The event's name; for a span, its prefix.
    pub name: EventName,
    /// Span or single event.
    pub kind: EventKind,
    /// Measurements the event carries (besides a span's own).
    pub measurements: &'static [&'static str],
    /// Metadata keys the event carries.
    pub metadata: &'static [&'static str],
}

const fn spec(
    name: EventName,
    kind: EventKind,
    measurements: &'static [&'static str],
    metadata: &'static [&'static str],
) -> EventSpec {
    EventSpec {
        name,
        kind,
        measurements,
        metadata,
    }
}

use EventKind::{Single, Span};

/// Every entry of the catalog.
pub const EVENTS: &[EventSpec] = &[
    spec(
        EventName::from_static(BRIDGE_CALL_SEGMENTS),
        Span,
        &[],
        &[
            "module",
            "function",
            "args",
            "session_id",
            "success",
            "result_type",
            "error",
        ],
    ),
    spec(
        EventName::from_static(TOOLS_EXECUTE_SEGMENTS),
        Span,
        &[],
        &["tool_name", "session_id", "caller", "result_type"],
    ),
    spec(
        EventName::from_static(CONTRACT_VALIDATE_SEGMENTS),
        Span,
        &[],
        &["signature", "module", "function", "valid", "violations"],
    ),
    spec(
        EventName::from_static(TYPES_CAST_SEGMENTS),
        Span,
        &[],
        &["from_type", "to_type", "success"],
    ),
    spec(SESSION_CREATED, Single, &["system_time"], &["session_id"]),
    spec(
        SESSION_EXPIRED,
        Single,
        &["lifetime_ms", "operations"],
        &["session_id", "reason"],
    ),
    spec(
        SESSION_VARIABLE_SET,
        Single,
        &["size"],
        &["session_id", "var_name", "var_type"],
    ),
    spec(
        SESSION_VARIABLE_GET,
        Single,
        &["size"],
        &["session_id", "var_name", "var_type", "found"],
    ),
    spec(
        POOL_REQUEST_QUEUED,
        Single,
        &["queue_depth"],
        &["pool", "operation"],
    ),
    spec(
        POOL_REQUEST_DISPATCHED,
        Single,
        &["queue_time", "queue_depth"],
        &["pool", "operation", "worker_id"],
    ),
    spec(
        POOL_WORKER_SPAWNED,
        Single,
        &["startup_time"],
        &["pool", "worker_id", "os_pid"],
    ),
    spec(
        POOL_WORKER_EXITED,
        Single,
        &["uptime"],
        &[
            "pool",
            "worker_id",
            "os_pid",
            "reason",
            "exit_code",
            "signal",
        ],
    ),
    spec(
        POOL_WORKER_RESTARTED,
        Single,
        &["restarts"],
        &["pool", "worker_id", "reason"],
    ),
    spec(
        POOL_EXHAUSTED,
        Single,
        &["queue_depth", "max_queue_depth"],
        &["pool", "operation"],
    ),
    spec(
        POOL_HEALTH,
        Single,
        &[
            "workers_idle",
            "workers_busy",
            "workers_starting",
            "queue_depth",
            "max_queue_depth",
            "workers_memory_bytes",
            "process_memory_bytes",
            "process_cpu_seconds",
        ],
        &["pool"],
    ),
    spec(
        POOL_WORKER_USAGE,
        Single,
        &["memory_bytes", "cpu_seconds", "requests"],
        &["pool", "worker_id", "os_pid"],
    ),
    spec(
        PYTHON_SPAN,
        Single,
        &["start_time", "end_time", "duration"],
        &[
            "name",
            "trace_id",
            "span_id",
            "parent_span_id",
            "status",
            "message",
            "worker_id",
        ],
    ),
    spec(
        LM_CALL,
        Single,
        &[
            "start_time",
            "end_time",
            "duration",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
        ],
        &["model", "status", "error", "message", "worker_id"],
    ),
    spec(
        HANDLER_FAILURE,
        Single,
        &["system_time"],
        &["handler_id", "event", "kind", "reason"],
    ),
    spec(
        ALERT_FIRED,
        Single,
        &["value", "threshold", "active"],
        &["alert_type", "severity", "metric", "rule"],
    ),
    spec(
        ALERT_RESOLVED,
        Single,
        &["value", "threshold", "firing_duration", "active"],
        &["alert_type", "severity", "metric", "rule"],
    ),
    spec(
        EventName::from_static(TRACE_SPAN_SEGMENTS),
        Span,
        &[],
        &["name"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_name_is_a_dspex_name_and_unique() {
        let dspex = EventName::from_static(&["dspex"]);
        for (i, a) in EVENTS.iter().enumerate() {
            assert!(a.name.starts_with(&dspex), "{:?}", a.name);
            assert!(a.name.len() >= 3, "{:?}", a.name);
            for b in &EVENTS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
        assert_eq!(BRIDGE_CALL.stop().to_string(), "dspex.bridge.call.stop");
    }
}
