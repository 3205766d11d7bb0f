//! The worker pool: Python processes serving framed requests from a bounded queue.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use dspex_telemetry_core::{
    Dispatcher, Measurements, Metadata, SpanId, TraceContext, catalog, context,
};
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{BridgeError, StartError};
use crate::protocol::{FrameError, read_frame, write_request};
use crate::usage::ResourceUsage;
use dspex_telemetry_core::log_safe;

/// The worker script, shipped inside the crate (standard library only).
pub const WORKER_SCRIPT: &str = include_str!("../python/dspex_worker.py");

/// The most characters of a worker's own text (an error it reports) kept in an error or a log
/// line, escaped.
const WORKER_TEXT_LIMIT: usize = 2000;
/// The same for a request id a worker sent back.
const WORKER_ID_LIMIT: usize = 64;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The pool's name, the `pool` label of its metrics (default `"default"`).
    pub name: String,
    /// Worker processes (default 2).
    pub size: usize,
    /// Requests that may wait for a worker; one more is refused with
    /// [`BridgeError::QueueFull`] (default 1 000).
    pub max_queue_depth: usize,
    /// How long a call may take, queue time included, before its worker is killed (default 30 s).
    pub call_timeout: Duration,
    /// The interpreter (default `python3`).
    pub python: String,
    /// Folders added to `PYTHONPATH`, where your modules live.
    pub python_path: Vec<PathBuf>,
    /// How long a worker may take to start (default 10 s).
    pub startup_timeout: Duration,
    /// The largest frame either way (default 16 MiB). A call whose request would be larger
    /// fails with [`BridgeError::RequestTooLarge`] before anything is sent; the worker is given
    /// the same limit, and a result whose reply would be larger fails as a Python `ValueError`.
    /// Either way the worker serves the next call. Between 1 024 and `u32::MAX` bytes (a
    /// frame's length is sent in 4 bytes).
    pub max_frame_bytes: usize,
    /// Python modules every worker imports at start (where tools are registered). A module
    /// that fails to import fails the start, with its error.
    pub preload: Vec<String>,
    /// How often a `[:dspex, :pool, :health]` event is emitted, with a
    /// `[:dspex, :pool, :worker, :usage]` event per worker (its memory and CPU time) (default
    /// 5 s; `None`: never).
    pub health_interval: Option<Duration>,
    /// Recycles a worker whose resident memory is above this many bytes after a call: it
    /// finishes the call, exits with reason `recycled_memory`, and a new worker takes its
    /// place (default `None`: never). Read from `/proc` after each call, on Linux only.
    pub max_worker_memory_bytes: Option<u64>,
    /// Recycles a worker after it served this many requests, with reason
    /// `recycled_requests` (default `None`: never).
    pub max_worker_requests: Option<u64>,
    /// Forks workers from a template process that imported the `preload` modules once, instead
    /// of starting each from scratch (default `false`; Unix only). Workers then start in
    /// milliseconds after the template, however many there are and whatever the cores: a pool
    /// whose preloads take seconds (DSPy, a model) is ready in about one start, and a replaced
    /// or recycled worker is back at once. Each worker still runs in a process group of its
    /// own, with its own pipes, and reports its own exit status. Keep the preloads free of
    /// threads: a fork copies only the thread that forks.
    pub fork_workers: bool,
    /// Where the pool's and the calls' events go (default: the global dispatcher).
    pub dispatcher: Dispatcher,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "default".into(),
            size: 2,
            max_queue_depth: 1_000,
            call_timeout: Duration::from_secs(30),
            python: "python3".into(),
            python_path: Vec::new(),
            preload: Vec::new(),
            startup_timeout: Duration::from_secs(10),
            max_frame_bytes: 16 * 1024 * 1024,
            health_interval: Some(Duration::from_secs(5)),
            max_worker_memory_bytes: None,
            max_worker_requests: None,
            fork_workers: false,
            dispatcher: Dispatcher::global().clone(),
        }
    }
}

/// A reply from a worker.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) result: Value,
    pub(crate) spans: Vec<Value>,
    pub(crate) trace_seen: Value,
    pub(crate) worker_id: usize,
    /// Which incarnation of the worker slot served it.
    pub(crate) generation: u64,
    /// The worker's side of the call, timed by the worker.
    pub(crate) call_span: Option<CallSpan>,
    /// The id the caller gave the worker's side of the call.
    pub(crate) python_span_id: Option<SpanId>,
    /// The language-model calls the worker saw during the call (DSPy's), in their wire form.
    pub(crate) lm: Vec<Value>,
    /// The Python exception the call raised, if it did: its spans and LM calls came back all
    /// the same.
    pub(crate) error: Option<BridgeError>,
    /// Spans the worker dropped so that the reply fits in a frame.
    pub(crate) spans_dropped: u64,
    /// What describes the worker's process (its id, the Python runtime): its spans' resource.
    pub(crate) resource: Option<WorkerResource>,
}

/// A worker process's resource facts, as its spans carry them: `process.pid`,
/// `process.runtime.name`, `process.runtime.version` and `process.runtime.description` (what
/// the worker reported of its interpreter, each cut at 256 bytes), `telemetry.sdk.language`.
pub(crate) type WorkerResource = Arc<[(String, dspex_telemetry_core::Value<'static>)]>;

fn worker_resource(pid: u32, ready: &Value) -> WorkerResource {
    use dspex_telemetry_core::Value as V;
    let runtime = |key: &str| {
        let text = ready
            .get("runtime")
            .and_then(|r| r.get(key))
            .and_then(Value::as_str)
            .unwrap_or("");
        V::from(log_safe(text, 256))
    };
    Arc::from(vec![
        ("process.pid".to_string(), V::from(i64::from(pid))),
        ("process.runtime.name".to_string(), runtime("name")),
        ("process.runtime.version".to_string(), runtime("version")),
        (
            "process.runtime.description".to_string(),
            runtime("description"),
        ),
        ("telemetry.sdk.language".to_string(), V::from("python")),
    ])
}

struct Job {
    message: Map<String, Value>,
    operation: &'static str,
    enqueued: Instant,
    deadline: Instant,
    timeout: Duration,
    /// The caller's trace context: sent to the worker, and current for the events the
    /// worker's side emits about this job.
    ctx: Option<TraceContext>,
    /// The span id the worker's side of the call takes (with a trace only).
    python_span_id: Option<SpanId>,
    /// For a job bound to one worker (a method of an object it holds): the worker generation
    /// that holds the object. A replaced worker lost its objects.
    pinned_generation: Option<u64>,
    reply: oneshot::Sender<Result<Reply, BridgeError>>,
}

/// Which of the calls' per-request events have handlers, cached against the dispatcher's
/// generation: one atomic load per request instead of a table lookup per event.
#[derive(Default)]
pub(crate) struct Interest {
    /// `(generation + 1) << 8 | bits`; zero before the first check.
    cached: AtomicU64,
}

impl Interest {
    /// `[:dspex, :pool, :request, :queued]`.
    pub(crate) const QUEUED: u64 = 1;
    /// `[:dspex, :pool, :request, :dispatched]`.
    pub(crate) const DISPATCHED: u64 = 2;
    /// `[:dspex, :python, :span]`.
    pub(crate) const PYTHON_SPAN: u64 = 4;
    /// A handler of the bridge call's span that reads its `args` text.
    pub(crate) const CALL_ARGS: u64 = 8;

    pub(crate) fn get(&self, dispatcher: &Dispatcher) -> u64 {
        let tag = (dispatcher.generation() + 1) << 8;
        let cached = self.cached.load(Ordering::Relaxed);
        if cached & !0xff == tag {
            return cached & 0xff;
        }
        let bit = |on: bool, bit: u64| if on { bit } else { 0 };
        let bits = bit(
            dispatcher.has_handlers(&catalog::POOL_REQUEST_QUEUED),
            Self::QUEUED,
        ) | bit(
            dispatcher.has_handlers(&catalog::POOL_REQUEST_DISPATCHED),
            Self::DISPATCHED,
        ) | bit(
            dispatcher.has_handlers(&catalog::PYTHON_SPAN) || dispatcher.has_span_sinks(),
            Self::PYTHON_SPAN,
        ) | bit(
            [
                catalog::BRIDGE_CALL.start(),
                catalog::BRIDGE_CALL.stop(),
                catalog::BRIDGE_CALL.exception(),
            ]
            .into_iter()
            .any(|event| dispatcher.reads_key(event, "args")),
            Self::CALL_ARGS,
        );
        // A racing thread may store an older answer; its tag no longer matches, so the next
        // check computes again.
        self.cached.store(tag | bits, Ordering::Relaxed);
        bits
    }
}

struct Inner {
    config: PoolConfig,
    interest: Interest,
    tx: mpsc::Sender<Job>,
    rx: Mutex<mpsc::Receiver<Job>>,
    closing: watch::Sender<bool>,
    closed: AtomicBool,
    depth: AtomicUsize,
    idle: AtomicUsize,
    busy: AtomicUsize,
    starting: AtomicUsize,
    restarts: AtomicU64,
    /// Spans the workers dropped from replies that would have been too large with them.
    spans_dropped: AtomicU64,
    next_id: AtomicU64,
    tasks: StdMutex<Vec<JoinHandle<()>>>,
    /// Per worker slot: a queue of jobs only that worker may serve.
    pinned: Vec<mpsc::Sender<Job>>,
    /// Per worker slot: how many times a worker was started in it.
    generations: Vec<AtomicU64>,
    /// Per worker slot: the serving worker's pid (0 while none serves).
    pids: Vec<AtomicU32>,
    /// Per worker slot: the requests its current worker served.
    served: Vec<AtomicU64>,
    /// With `fork_workers`: the process workers are forked from.
    template: Mutex<Option<Template>>,
}

/// A pool of Python worker processes, instrumented end to end. Clone it to share.
///
/// Every request waits in a bounded queue, is served by one worker, and ends with exactly one
/// outcome: its result, a Python exception, or a pool error (queue full, deadline, worker
/// crash, protocol error, request over `max_frame_bytes`). A worker that crashes, hangs past
/// the deadline or breaks the protocol is killed and replaced. The pool emits
/// `[:dspex, :pool, …]` events: request queued and dispatched (with queue time), worker
/// spawned, exited and restarted, pool exhausted, and periodic health.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.config.name)
            .field("size", &self.inner.config.size)
            .field("queue_depth", &self.inner.depth.load(Ordering::Relaxed))
            .finish()
    }
}

/// Counts of the pool's workers and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHealth {
    /// Workers waiting for a request.
    pub idle: usize,
    /// Workers serving a request.
    pub busy: usize,
    /// Workers starting.
    pub starting: usize,
    /// Requests waiting.
    pub queue_depth: usize,
    /// Workers replaced so far.
    pub restarts: u64,
    /// Spans workers dropped so far rather than fail a call: with them, its reply would have
    /// exceeded `max_frame_bytes`.
    pub spans_dropped: u64,
}

struct Worker {
    /// The worker's process group: the worker and whatever it started. Declared before
    /// `child`, so that it is dropped (killed) first, while the worker is not yet reaped.
    group: ProcessGroup,
    child: Child,
    /// `None` once closed, which tells the worker to exit.
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    pid: u32,
    started: std::time::Instant,
    /// Its spans' resource.
    resource: WorkerResource,
}

/// A worker's process group. The worker leads it, and the processes it starts join it unless
/// they leave on purpose, so that killing the group ends the worker with everything it
/// started: nothing it started outlives it holding its pipes. Killed once, at the latest when
/// dropped; only ever while the worker is not yet reaped: its pid, the group's id, then cannot
/// be taken by another process (a zombie keeps it).
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    /// The worker was reaped before its group could be killed: the group's id may be another
    /// process's by now, so the group is never signalled.
    fn forget(&mut self) {
        self.0 = None;
    }

    /// Sends SIGKILL to every process of the group (once; later calls do nothing).
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.take().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // Never 0 or 1: `kill(0)` would signal this process's own group, `kill(-1)` every
            // process it may signal.
            if pgid > 1 {
                // SAFETY: kill(2) takes plain integers and touches no memory of this process.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        #[cfg(not(unix))]
        self.0.take();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn emit(
    dispatcher: &Dispatcher,
    event: &dspex_telemetry_core::EventName,
    m: Measurements<'_>,
    md: Metadata<'_>,
) {
    dispatcher.execute(event, &m, &md);
}

impl Pool {
    /// Starts the pool: validates the configuration (errors name the key) and starts every
    /// worker, failing if the first cannot start (no interpreter, say).
    pub async fn start(config: PoolConfig) -> Result<Pool, StartError> {
        let invalid = |key, reason: &str| StartError::Config {
            key,
            reason: reason.to_owned(),
        };
        if config.fork_workers && cfg!(not(unix)) {
            return Err(invalid(
                "fork_workers",
                "workers can be forked on Unix only",
            ));
        }
        if config.size == 0 {
            return Err(invalid("size", "must be at least 1"));
        }
        if config.max_queue_depth == 0 {
            return Err(invalid("max_queue_depth", "must be at least 1"));
        }
        if config.call_timeout.is_zero() {
            return Err(invalid("call_timeout", "must be above zero"));
        }
        if config.max_worker_requests == Some(0) {
            return Err(invalid("max_worker_requests", "must be at least 1"));
        }
        if config.max_worker_memory_bytes.is_some_and(|b| b < 1 << 20) {
            return Err(invalid(
                "max_worker_memory_bytes",
                "must be at least 1048576 (1 MiB); a Python process needs more",
            ));
        }
        // A frame's length is sent in 4 bytes.
        if config.max_frame_bytes < 1024
            || u64::try_from(config.max_frame_bytes).map_or(true, |n| n > u64::from(u32::MAX))
        {
            return Err(invalid(
                "max_frame_bytes",
                "must be between 1024 and 4294967295 (u32::MAX)",
            ));
        }
        let (tx, rx) = mpsc::channel(config.max_queue_depth);
        let (pinned, pinned_rx): (Vec<_>, Vec<_>) = (0..config.size)
            .map(|_| mpsc::channel(config.max_queue_depth))
            .unzip();
        let inner = Arc::new(Inner {
            pinned,
            generations: (0..config.size).map(|_| AtomicU64::new(0)).collect(),
            pids: (0..config.size).map(|_| AtomicU32::new(0)).collect(),
            served: (0..config.size).map(|_| AtomicU64::new(0)).collect(),
            template: Mutex::new(None),
            tx,
            rx: Mutex::new(rx),
            closing: watch::channel(false).0,
            closed: AtomicBool::new(false),
            depth: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            spans_dropped: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            interest: Interest::default(),
            tasks: StdMutex::new(Vec::new()),
            config,
        });
        // Every worker starts at once: N workers are ready in about one worker's start time
        // (as long as there are cores for them). If one cannot start, the others are killed
        // (dropping the set aborts them; a started worker dies with its handle).
        let mut starting = tokio::task::JoinSet::new();
        for worker_id in 0..inner.config.size {
            let inner = inner.clone();
            starting.spawn(async move { (worker_id, spawn_worker(&inner, worker_id).await) });
        }
        let mut first: Vec<Option<Worker>> = (0..inner.config.size).map(|_| None).collect();
        while let Some(joined) = starting.join_next().await {
            let (worker_id, spawned) = joined.map_err(|e| StartError::Spawn {
                python: inner.config.python.clone(),
                reason: format!("a worker's start failed: {e}"),
            })?;
            let worker = spawned.map_err(|reason| StartError::Spawn {
                python: inner.config.python.clone(),
                reason,
            })?;
            first[worker_id] = Some(worker);
        }
        let first = first.into_iter().flatten();
        let mut tasks = Vec::new();
        for ((worker_id, worker), pinned) in first.enumerate().zip(pinned_rx) {
            tasks.push(tokio::spawn(supervise(
                inner.clone(),
                worker_id,
                worker,
                pinned,
            )));
        }
        if let Some(every) = inner.config.health_interval {
            tasks.push(tokio::spawn(report_health(inner.clone(), every)));
        }
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(Pool { inner })
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Which per-request events have handlers now ([`Interest`] bits).
    pub(crate) fn interest(&self) -> u64 {
        self.inner.interest.get(&self.inner.config.dispatcher)
    }

    /// Worker and queue counts now.
    pub fn health(&self) -> PoolHealth {
        health(&self.inner)
    }

    /// Each worker slot's resident memory and CPU time now, read from the OS (`None` for a
    /// slot whose worker is starting, or where the OS offers no reading: Linux only).
    pub fn worker_usage(&self) -> Vec<Option<ResourceUsage>> {
        worker_usage(&self.inner)
            .into_iter()
            .map(|usage| usage.map(|(_, usage)| usage))
            .collect()
    }

    /// Sends a job, to any worker or (`pin`: worker slot and generation) to one, and waits for
    /// its reply. The spans and LM calls the worker returned are emitted in the current
    /// context (the call's span), whether the call succeeded or raised; `name` names the
    /// worker's side of the call.
    pub(crate) async fn submit_to(
        &self,
        operation: &'static str,
        mut message: Map<String, Value>,
        timeout: Option<Duration>,
        pin: Option<(usize, u64)>,
        name: impl FnOnce() -> String,
    ) -> Result<Reply, BridgeError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(BridgeError::ShutDown);
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        message.insert("id".into(), json!(id));
        let ctx = context::current();
        let python_span_id = ctx.as_ref().map(|_| SpanId::random());
        let interest = inner.interest.get(&inner.config.dispatcher);
        // The worker times the call and returns the spans its code opened only when someone
        // listens for them.
        if ctx.is_some() && interest & Interest::PYTHON_SPAN != 0 {
            message.insert("timed".into(), Value::Bool(true));
        }
        let (reply, outcome) = oneshot::channel();
        let now = Instant::now();
        let timeout = timeout.unwrap_or(inner.config.call_timeout);
        let deadline = now + timeout;
        let job = Job {
            message,
            operation,
            enqueued: now,
            deadline,
            timeout,
            ctx,
            python_span_id,
            pinned_generation: pin.map(|(_, generation)| generation),
            reply,
        };
        let queue = match pin {
            Some((slot, _)) => inner.pinned.get(slot).ok_or(BridgeError::InstanceLost)?,
            None => &inner.tx,
        };
        let depth = inner.depth.fetch_add(1, Ordering::AcqRel) + 1;
        let pool = inner.config.name.as_str();
        // A place in the queue first, then `queued`, then the job: a worker can only take it
        // (and emit `dispatched`) after `queued` was emitted.
        match queue.try_reserve() {
            Ok(permit) => {
                if interest & Interest::QUEUED != 0 {
                    emit(
                        &inner.config.dispatcher,
                        &catalog::POOL_REQUEST_QUEUED,
                        Measurements::new().with("queue_depth", depth),
                        Metadata::new()
                            .with("pool", pool)
                            .with("operation", operation),
                    );
                }
                permit.send(job);
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                inner.depth.fetch_sub(1, Ordering::AcqRel);
                emit(
                    &inner.config.dispatcher,
                    &catalog::POOL_EXHAUSTED,
                    Measurements::new()
                        .with("queue_depth", depth - 1)
                        .with("max_queue_depth", inner.config.max_queue_depth),
                    Metadata::new()
                        .with("pool", pool)
                        .with("operation", operation),
                );
                return Err(BridgeError::QueueFull { depth: depth - 1 });
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                inner.depth.fetch_sub(1, Ordering::AcqRel);
                return Err(BridgeError::ShutDown);
            }
        }
        // The worker enforces the deadline; this guards against a pool that cannot serve.
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), outcome).await {
            Ok(Ok(Ok(mut reply))) => {
                reply.python_span_id = python_span_id;
                if reply.spans_dropped > 0 {
                    inner
                        .spans_dropped
                        .fetch_add(reply.spans_dropped, Ordering::Relaxed);
                    tracing::warn!(
                        pool = %self.config().name,
                        worker_id = reply.worker_id,
                        dropped = reply.spans_dropped,
                        "a worker dropped the spans of a call: with them its reply would exceed max_frame_bytes"
                    );
                }
                self.emit_python_spans(&reply, name);
                self.emit_lm_calls(&reply);
                match reply.error.take() {
                    Some(error) => Err(error),
                    None => Ok(reply),
                }
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(BridgeError::ShutDown),
            Err(_) => Err(BridgeError::DeadlineExceeded(timeout)),
        }
    }

    /// Stops taking requests, lets queued and in-flight calls finish, then stops the workers.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.closing.send_replace(true);
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        // The workers are gone: the template may go too.
        if let Some(template) = inner.template.lock().await.take() {
            template.stop().await;
        }
        // Anything that slipped in after the workers left gets a clear answer.
        let mut rx = inner.rx.lock().await;
        rx.close();
        while let Ok(job) = rx.try_recv() {
            inner.depth.fetch_sub(1, Ordering::AcqRel);
            let _ = job.reply.send(Err(BridgeError::ShutDown));
        }
    }
}

fn health(inner: &Inner) -> PoolHealth {
    PoolHealth {
        idle: inner.idle.load(Ordering::Relaxed),
        busy: inner.busy.load(Ordering::Relaxed),
        starting: inner.starting.load(Ordering::Relaxed),
        queue_depth: inner.depth.load(Ordering::Relaxed),
        restarts: inner.restarts.load(Ordering::Relaxed),
        spans_dropped: inner.spans_dropped.load(Ordering::Relaxed),
    }
}

/// Writes the trace a request carries to its worker, as the worker reads it:
/// `"<traceparent> <span id of the worker's side> <correlation id> <baggage>"`, the correlation
/// id empty when it is the trace id, then `"\t<tracestate>"` when there is one. No part holds a
/// newline, none but the tracestate a tab, and none before the baggage a space (W3C formats; a
/// correlation id is printable ASCII without spaces), so the worker splits it cheaply, and only
/// when user code asks for it.
fn trace_header(ctx: &TraceContext, span_id: SpanId, out: &mut String) {
    ctx.traceparent().push_header(out);
    out.push(' ');
    span_id.push_hex(out);
    out.push(' ');
    if let Some(id) = ctx.explicit_correlation_id() {
        out.push_str(id.as_str());
    }
    out.push(' ');
    // The baggage a call sends carries an explicit correlation id too.
    ctx.push_outgoing_baggage(out);
    if !ctx.tracestate().is_empty() {
        out.push('\t');
        ctx.tracestate().push_header(out);
    }
}

/// A Python process of the pool (a worker, a stub, the template) started and ready: it wrote
/// its `ready` frame.
struct Started {
    group: ProcessGroup,
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The ready frame.
    ready: Value,
}

/// Starts `python -u -c WORKER_SCRIPT args…` in a process group of its own, with the pool's
/// environment, drains its stderr into `tracing` (labelled `who`), and waits for its ready
/// frame.
async fn start_python(
    config: &PoolConfig,
    args: &[&std::ffi::OsStr],
    worker_id: Option<usize>,
) -> Result<Started, String> {
    let mut command = Command::new(&config.python);
    command
        .arg("-u")
        .arg("-c")
        .arg(WORKER_SCRIPT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The worker's frame cap agrees with the pool's.
        .env(
            "DSPEX_WORKER_MAX_FRAME_BYTES",
            config.max_frame_bytes.to_string(),
        )
        .kill_on_drop(true);
    // Its own process group (its id is the process's pid), killed whole when it goes.
    #[cfg(unix)]
    command.process_group(0);
    if !config.python_path.is_empty() {
        let mut paths: Vec<PathBuf> = config.python_path.clone();
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            paths.extend(std::env::split_paths(&existing));
        }
        let joined = std::env::join_paths(paths).map_err(|e| e.to_string())?;
        command.env("PYTHONPATH", joined);
    }
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let pid = child.id().unwrap_or(0);
    // From here on, any return kills the group (on drop).
    let mut group = ProcessGroup((pid != 0).then_some(pid));
    let (Some(stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("the worker's pipes were not set up".into());
    };
    let pool = config.name.clone();
    // Drained for as long as the pipe is open, whatever the process writes there.
    tokio::spawn(crate::stderr::drain(stderr, move |line| match worker_id {
        Some(worker_id) => {
            tracing::debug!(target: "dspex_telemetry::python", pool = %pool, worker_id, "{line}")
        }
        None => {
            tracing::debug!(target: "dspex_telemetry::python", pool = %pool, "template: {line}")
        }
    }));
    let ready = tokio::time::timeout(
        config.startup_timeout,
        read_frame::<Value, _>(&mut stdout, config.max_frame_bytes),
    )
    .await;
    match ready {
        Ok(Ok(frame)) if frame.get("ready") == Some(&Value::Bool(true)) => Ok(Started {
            group,
            child,
            stdin,
            stdout,
            ready: frame,
        }),
        Ok(Ok(frame)) => Err(match frame.get("error").and_then(Value::as_str) {
            Some(error) => log_safe(error, WORKER_TEXT_LIMIT),
            None => log_safe(&frame.to_string(), WORKER_TEXT_LIMIT),
        }),
        Ok(Err(e)) => {
            let status = exit_status(&mut child, &mut group).await;
            Err(format!("{e} ({status})"))
        }
        Err(_) => {
            group.kill();
            let _ = child.kill().await;
            Err(format!("not ready within {:?}", config.startup_timeout))
        }
    }
}

/// The process a pool with `fork_workers` forks its workers from: it imported the preloaded
/// modules once. Its Unix socket lives in a folder of its own that only this user may enter;
/// the folder is removed when the template goes.
struct Template {
    group: ProcessGroup,
    child: Child,
    /// Closing it tells the template to exit.
    stdin: Option<ChildStdin>,
    _stdout: ChildStdout,
    folder: PathBuf,
    socket: PathBuf,
}

impl Template {
    async fn start(config: &PoolConfig) -> Result<Template, String> {
        static FOLDERS: AtomicU64 = AtomicU64::new(0);
        let folder = std::env::temp_dir().join(format!(
            "dspex-pool-{}-{}-{:016x}",
            std::process::id(),
            FOLDERS.fetch_add(1, Ordering::Relaxed),
            u64::from_be_bytes(SpanId::random().to_bytes())
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&folder)
            .map_err(|e| format!("cannot make the template's folder: {e}"))?;
        let socket = folder.join("template.sock");
        let mut args: Vec<&std::ffi::OsStr> = vec!["--template".as_ref(), socket.as_os_str()];
        args.extend(config.preload.iter().map(std::ffi::OsStr::new));
        match start_python(config, &args, None).await {
            Ok(started) => Ok(Template {
                group: started.group,
                child: started.child,
                stdin: Some(started.stdin),
                _stdout: started.stdout,
                folder,
                socket,
            }),
            Err(why) => {
                let _ = std::fs::remove_dir_all(&folder);
                Err(format!("the template process: {why}"))
            }
        }
    }

    /// Lets the template exit (it forks no more), then kills its group and removes its folder.
    async fn stop(mut self) {
        drop(self.stdin.take());
        end_group(&mut self.child, &mut self.group, Duration::from_secs(2)).await;
        let _ = self.child.kill().await;
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// The socket of a running template, started (again) if there is none or it ended.
async fn template_socket(inner: &Inner) -> Result<PathBuf, String> {
    let mut template = inner.template.lock().await;
    if let Some(running) = template.as_mut() {
        if matches!(running.child.try_wait(), Ok(None)) {
            return Ok(running.socket.clone());
        }
        tracing::warn!(pool = %inner.config.name, "the template process ended; starting another");
    }
    if let Some(ended) = template.take() {
        ended.stop().await;
    }
    let started = Template::start(&inner.config).await?;
    let socket = started.socket.clone();
    *template = Some(started);
    Ok(socket)
}

async fn spawn_worker(inner: &Arc<Inner>, worker_id: usize) -> Result<Worker, String> {
    let config = &inner.config;
    let started = std::time::Instant::now();
    let socket;
    let args: Vec<&std::ffi::OsStr> = if config.fork_workers {
        // A stub that the template forks the worker for.
        socket = template_socket(inner).await?;
        vec!["--fork".as_ref(), socket.as_os_str()]
    } else {
        config.preload.iter().map(std::ffi::OsStr::new).collect()
    };
    let process = start_python(config, &args, Some(worker_id)).await?;
    // The process serving the calls: the worker itself, or the one forked for the stub.
    let pid = process
        .ready
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .or(process.child.id())
        .unwrap_or(0);
    emit(
        &config.dispatcher,
        &catalog::POOL_WORKER_SPAWNED,
        Measurements::new().with("startup_time", started.elapsed().as_nanos() as u64),
        Metadata::new()
            .with("pool", config.name.as_str())
            .with("worker_id", worker_id)
            .with("os_pid", pid),
    );
    Ok(Worker {
        resource: worker_resource(pid, &process.ready),
        group: process.group,
        child: process.child,
        stdin: Some(process.stdin),
        stdout: process.stdout,
        pid,
        started,
    })
}

async fn supervise(
    inner: Arc<Inner>,
    worker_id: usize,
    first: Worker,
    mut pinned: mpsc::Receiver<Job>,
) {
    let mut next = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let worker = match next.take() {
            Some(w) => w,
            None => {
                if inner.closed.load(Ordering::Acquire) {
                    return;
                }
                inner.starting.fetch_add(1, Ordering::Relaxed);
                let spawned = spawn_worker(&inner, worker_id).await;
                inner.starting.fetch_sub(1, Ordering::Relaxed);
                match spawned {
                    Ok(w) => {
                        backoff = Duration::from_millis(50);
                        w
                    }
                    Err(reason) => {
                        tracing::warn!(pool = %inner.config.name, worker_id, %reason, "could not restart a Python worker");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        let pid = worker.pid;
        let started = worker.started;
        inner.generations[worker_id].fetch_add(1, Ordering::AcqRel);
        inner.pids[worker_id].store(pid, Ordering::Relaxed);
        inner.served[worker_id].store(0, Ordering::Relaxed);
        let (reason, exit) = serve(&inner, worker_id, worker, &mut pinned).await;
        inner.pids[worker_id].store(0, Ordering::Relaxed);
        let mut md = Metadata::new()
            .with("pool", inner.config.name.as_str())
            .with("worker_id", worker_id)
            .with("os_pid", pid)
            .with("reason", reason);
        if let Some(code) = exit.code {
            md.insert("exit_code", code);
        }
        if let Some(signal) = exit.signal {
            md.insert("signal", signal_name(signal));
        }
        emit(
            &inner.config.dispatcher,
            &catalog::POOL_WORKER_EXITED,
            Measurements::new().with("uptime", started.elapsed().as_nanos() as u64),
            md,
        );
        if reason == "shutdown" {
            return;
        }
        let restarts = inner.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        emit(
            &inner.config.dispatcher,
            &catalog::POOL_WORKER_RESTARTED,
            Measurements::new().with("restarts", restarts),
            Metadata::new()
                .with("pool", inner.config.name.as_str())
                .with("worker_id", worker_id)
                .with("reason", reason),
        );
    }
}

/// The next job, or `None` once the pool is closing and the queue is empty.
enum Next {
    Job(Job),
    /// The pool is closing and nothing is left to serve.
    Done,
    /// The worker died while idle.
    Died,
    /// The worker wrote to its frame pipe while no request was in flight.
    Unasked,
}

/// The next job; or the pool closing with the queues empty; or the idle worker dying or
/// writing a frame nobody asked for (which would otherwise be read as the next call's reply).
async fn next_job(inner: &Inner, pinned: &mut mpsc::Receiver<Job>, worker: &mut Worker) -> Next {
    let mut closing = inner.closing.subscribe();
    let mut byte = [0u8; 1];
    let closed = tokio::select! {
        biased;
        // First, so that such bytes are seen before another request is written. Reading is
        // cancel-safe: while nothing arrives, nothing is consumed.
        read = worker.stdout.read(&mut byte) => {
            return match read {
                Ok(1..) => Next::Unasked,
                // The end of the pipe: the worker is gone, or going.
                _ => Next::Died,
            };
        }
        job = pinned.recv() => return job.map_or(Next::Done, Next::Job),
        job = async { inner.rx.lock().await.recv().await } => return job.map_or(Next::Done, Next::Job),
        _ = worker.child.wait() => return Next::Died,
        _ = closing.wait_for(|c| *c) => true,
    };
    debug_assert!(closed);
    // Closing: finish what is queued, then stop.
    match pinned.try_recv() {
        Ok(job) => Next::Job(job),
        Err(_) => inner
            .rx
            .lock()
            .await
            .try_recv()
            .ok()
            .map_or(Next::Done, Next::Job),
    }
}

/// How a worker ended: its exit code, or the signal that killed it (neither when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
}

/// A signal's name (`SIGKILL`), or `SIG<number>` for one without a name here.
fn signal_name(signal: i32) -> std::borrow::Cow<'static, str> {
    #[cfg(unix)]
    {
        let name = match signal {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            _ => return format!("SIG{signal}").into(),
        };
        name.into()
    }
    #[cfg(not(unix))]
    format!("SIG{signal}").into()
}

/// Why a worker that just finished a call must be recycled, if it must.
fn recycle_reason(inner: &Inner, pid: u32, served: u64) -> Option<&'static str> {
    if inner
        .config
        .max_worker_requests
        .is_some_and(|n| served >= n)
    {
        return Some("recycled_requests");
    }
    let cap = inner.config.max_worker_memory_bytes?;
    crate::usage::ResourceUsage::of(pid)
        .filter(|usage| usage.memory_bytes > cap)
        .map(|_| "recycled_memory")
}

/// Serves jobs until the worker must go; returns why, and how it ended.
async fn serve(
    inner: &Inner,
    worker_id: usize,
    mut worker: Worker,
    pinned: &mut mpsc::Receiver<Job>,
) -> (&'static str, Exit) {
    let generation = inner.generations[worker_id].load(Ordering::Acquire);
    inner.idle.fetch_add(1, Ordering::Relaxed);
    // Reused for every request this worker serves.
    let (mut frame, mut header) = (Vec::with_capacity(512), String::with_capacity(128));
    let outcome = loop {
        let job = match next_job(inner, pinned, &mut worker).await {
            Next::Job(job) => job,
            Next::Done => break "shutdown",
            Next::Died => break "crashed",
            Next::Unasked => break "protocol_error",
        };
        let depth = inner.depth.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if job.reply.is_closed() {
            continue; // the caller gave up
        }
        if job.pinned_generation.is_some_and(|g| g != generation) {
            let _ = job.reply.send(Err(BridgeError::InstanceLost));
            continue;
        }
        // One clock read: the deadline check and the queue time.
        let now = Instant::now();
        if now >= job.deadline {
            let _ = job
                .reply
                .send(Err(BridgeError::DeadlineExceeded(job.timeout)));
            continue;
        }
        let queue_time = now.saturating_duration_since(job.enqueued).as_nanos() as u64;
        inner.idle.fetch_sub(1, Ordering::Relaxed);
        inner.busy.fetch_add(1, Ordering::Relaxed);
        let id = job.message.get("id").cloned();
        let job_timeout = job.timeout;
        let message = Value::Object(job.message);
        header.clear();
        if let (Some(ctx), Some(span_id)) = (&job.ctx, job.python_span_id) {
            trace_header(ctx, span_id, &mut header);
        }
        let max = inner.config.max_frame_bytes;
        let ctx = job.ctx;
        let exchange = async {
            let stdin = worker.stdin.as_mut().ok_or(FrameError::Closed)?;
            let written = write_request(stdin, &mut frame, header.as_bytes(), &message, max).await;
            if let Err(FrameError::RequestTooLarge { .. }) = written {
                // Nothing was sent: the worker never had the request.
                return written.map(|()| WireReply::default());
            }
            // Emitted once the worker has the request, so that handlers run while it works.
            // In the caller's trace: the queue wait belongs to the request.
            if inner.interest.get(&inner.config.dispatcher) & Interest::DISPATCHED != 0 {
                let _scope = ctx.map(TraceContext::attach);
                emit(
                    &inner.config.dispatcher,
                    &catalog::POOL_REQUEST_DISPATCHED,
                    Measurements::new()
                        .with("queue_time", queue_time)
                        .with("queue_depth", depth),
                    Metadata::new()
                        .with("pool", inner.config.name.as_str())
                        .with("operation", job.operation)
                        .with("worker_id", worker_id),
                );
            }
            written?;
            read_frame::<WireReply, _>(&mut worker.stdout, max).await
        };
        let result = tokio::time::timeout_at(job.deadline, exchange).await;
        inner.busy.fetch_sub(1, Ordering::Relaxed);
        inner.idle.fetch_add(1, Ordering::Relaxed);
        let (reply, fatal) = match result {
            Err(_) => (
                Err(BridgeError::DeadlineExceeded(job_timeout)),
                Some("killed_deadline"),
            ),
            Ok(Err(FrameError::RequestTooLarge { max })) => {
                (Err(BridgeError::RequestTooLarge { max }), None)
            }
            Ok(Err(FrameError::Closed)) | Ok(Err(FrameError::Io(_))) => {
                let status = exit_status(&mut worker.child, &mut worker.group).await;
                (Err(BridgeError::WorkerCrashed(status)), Some("crashed"))
            }
            Ok(Err(e)) => (
                Err(BridgeError::Protocol(e.to_string())),
                Some("protocol_error"),
            ),
            // Not this call's reply: the worker cannot be trusted with the next one.
            Ok(Ok(frame)) if frame.id.as_ref() != id.as_ref() => (
                Err(BridgeError::Protocol(mismatch(&frame, id.as_ref()))),
                Some("protocol_error"),
            ),
            Ok(Ok(frame)) => (
                parse_reply(frame, worker_id, generation).map(|mut reply| {
                    reply.resource = Some(worker.resource.clone());
                    reply
                }),
                None,
            ),
        };
        let _ = job.reply.send(reply);
        if let Some(reason) = fatal {
            break reason;
        }
        let served = inner.served[worker_id].fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(reason) = recycle_reason(inner, worker.pid, served) {
            break reason;
        }
    };
    inner.idle.fetch_sub(1, Ordering::Relaxed);
    // A worker that ended on its own (crashed) is given the time to report how: a forked
    // worker's stub repeats its exit once the template has reaped it.
    let graceful = matches!(
        outcome,
        "shutdown" | "recycled_memory" | "recycled_requests" | "crashed"
    );
    let exit = stop(&mut worker, graceful).await;
    (outcome, exit)
}

/// Why a reply that is not the awaited one failed the call: a refusal the worker could not
/// tie to a request (it reports why), or a reply to another request.
fn mismatch(frame: &WireReply, expected: Option<&Value>) -> String {
    let expected = expected.map_or_else(|| "?".to_owned(), Value::to_string);
    let error = Some(&frame.error).filter(|e| !frame.ok && !e.is_null());
    match (frame.id.as_ref(), error) {
        (None, Some(error)) => {
            let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("");
            format!(
                "the worker refused request {expected}: {}: {}",
                log_safe(text("type"), WORKER_ID_LIMIT),
                log_safe(text("message"), WORKER_TEXT_LIMIT),
            )
        }
        (None, None) => {
            format!("the worker replied without a request id while {expected} was awaited")
        }
        (Some(got), _) => format!(
            "the worker replied to request {} while {expected} was awaited",
            log_safe(&got.to_string(), WORKER_ID_LIMIT)
        ),
    }
}

/// How a worker that is not reaped yet stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Running,
    /// Ended, not reaped: its pid, the group's id, is still reserved.
    Ended,
    /// Reaped already.
    Reaped,
}

/// The worker's state, leaving it unreaped if it has ended.
#[cfg(unix)]
fn leader(child: &Child) -> Leader {
    let Some(pid) = child.id() else {
        return Leader::Reaped;
    };
    loop {
        // SAFETY: siginfo_t is plain data, valid zeroed; waitid writes into it and nothing else.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT: an ended worker stays a zombie, to be reaped by `child` later.
        // SAFETY: `info` is a valid, writable siginfo_t for the length of the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == 0 {
            // SAFETY: waitid filled `info` (si_pid stays 0 while the worker runs).
            return if unsafe { info.si_pid() } == 0 {
                Leader::Running
            } else {
                Leader::Ended
            };
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Leader::Reaped;
        }
    }
}

/// Waits (up to `limit`) for the worker to end, without reaping it; then kills its group,
/// while the group's id is still reserved (or forgets it, if the worker was reaped already).
/// Whether the worker ended before its group was killed.
async fn end_group(child: &mut Child, group: &mut ProcessGroup, limit: Duration) -> bool {
    #[cfg(unix)]
    {
        let deadline = Instant::now() + limit;
        let state = loop {
            let state = leader(child);
            if state != Leader::Running || Instant::now() >= deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if state == Leader::Reaped {
            group.forget();
        } else {
            group.kill();
        }
        state != Leader::Running
    }
    #[cfg(not(unix))]
    {
        let _ = Leader::Running;
        group.kill();
        tokio::time::timeout(limit, child.wait()).await.is_ok()
    }
}

/// The exit status of a worker whose pipe closed: waits (up to 2 s) for it to end, kills its
/// group before reaping it, then reaps it.
async fn exit_status(child: &mut Child, group: &mut ProcessGroup) -> String {
    if !end_group(child, group, Duration::from_secs(2)).await {
        return "no exit status".into();
    }
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        _ => "no exit status".into(),
    }
}

/// Ends a worker: politely (close its input, wait) on shutdown, else by killing it. Its process
/// group is killed first, so that nothing it started outlives it, while the worker is not yet
/// reaped and its pid (the group's id) cannot be taken by another process; then the worker is
/// reaped.
async fn stop(worker: &mut Worker, graceful: bool) -> Exit {
    // Closing stdin ends the worker's loop.
    drop(worker.stdin.take());
    let limit = if graceful {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    end_group(&mut worker.child, &mut worker.group, limit).await;
    // Kills the worker if it still runs (not if it ended: a zombie keeps its status), and reaps it.
    let _ = worker.child.kill().await;
    match worker.child.try_wait() {
        Ok(Some(status)) => Exit {
            code: status.code(),
            #[cfg(unix)]
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            #[cfg(not(unix))]
            signal: None,
        },
        _ => Exit::default(),
    }
}

/// A worker's reply frame, read straight into its parts (other keys are skipped): no map of
/// the whole reply is built.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct WireReply {
    /// The request's id; `None` when absent or null (a refusal the worker could not tie to a
    /// request).
    id: Option<Value>,
    ok: bool,
    result: Value,
    error: Value,
    /// Wire form of each: see [`Pool::emit_python_spans`].
    spans: Vec<Value>,
    call_span: Option<CallSpan>,
    lm: Vec<Value>,
    trace_seen: Value,
    spans_dropped: u64,
}

/// The worker's side of a call, as it timed it; on the wire `[start_ns, end_ns]`, then
/// `"error"` and the exception's text when it raised one.
#[derive(serde::Deserialize, Debug, Clone)]
pub(crate) struct CallSpan {
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// A worker's reply to the awaited request: its result or the exception it raised, with the
/// spans and LM calls it collected either way.
fn parse_reply(frame: WireReply, worker_id: usize, generation: u64) -> Result<Reply, BridgeError> {
    let error = if frame.ok {
        None
    } else {
        let text = |k: &str| {
            frame
                .error
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(BridgeError::Python {
            kind: text("type").unwrap_or_else(|| "Error".into()),
            message: text("message").unwrap_or_default(),
            traceback: text("traceback"),
        })
    };
    Ok(Reply {
        result: frame.result,
        spans: frame.spans,
        trace_seen: frame.trace_seen,
        worker_id,
        generation,
        call_span: frame.call_span,
        python_span_id: None,
        lm: frame.lm,
        error,
        spans_dropped: frame.spans_dropped,
        resource: None,
    })
}

async fn report_health(inner: Arc<Inner>, every: Duration) {
    let mut closing = inner.closing.subscribe();
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        let h = health(&inner);
        // Each worker's memory and CPU time, read from the OS, then the pool's totals with
        // this process's own.
        let mut workers_memory = 0u64;
        for (worker_id, usage) in worker_usage(&inner).into_iter().enumerate() {
            let Some((pid, usage)) = usage else { continue };
            workers_memory += usage.memory_bytes;
            emit(
                &inner.config.dispatcher,
                &catalog::POOL_WORKER_USAGE,
                Measurements::new()
                    .with("memory_bytes", usage.memory_bytes)
                    .with("cpu_seconds", usage.cpu_seconds)
                    .with("requests", inner.served[worker_id].load(Ordering::Relaxed)),
                Metadata::new()
                    .with("pool", inner.config.name.as_str())
                    .with("worker_id", worker_id)
                    .with("os_pid", pid),
            );
        }
        let mut m = Measurements::new()
            .with("workers_idle", h.idle)
            .with("workers_busy", h.busy)
            .with("workers_starting", h.starting)
            .with("queue_depth", h.queue_depth)
            .with("max_queue_depth", inner.config.max_queue_depth)
            .with("workers_memory_bytes", workers_memory);
        if let Some(own) = ResourceUsage::of_this_process() {
            m.insert("process_memory_bytes", own.memory_bytes);
            m.insert("process_cpu_seconds", own.cpu_seconds);
        }
        emit(
            &inner.config.dispatcher,
            &catalog::POOL_HEALTH,
            m,
            Metadata::new().with("pool", inner.config.name.as_str()),
        );
    }
}

/// Per worker slot: the serving worker's pid and usage (`None` while none serves, or where
/// the OS offers no reading).
fn worker_usage(inner: &Inner) -> Vec<Option<(u32, ResourceUsage)>> {
    inner
        .pids
        .iter()
        .map(|pid| {
            let pid = pid.load(Ordering::Relaxed);
            (pid != 0)
                .then(|| ResourceUsage::of(pid))
                .flatten()
                .map(|usage| (pid, usage))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> WireReply {
        serde_json::from_str(text).expect("a reply")
    }

    #[test]
    fn a_reply_is_read_into_its_parts_and_other_keys_are_skipped() {
        let reply = read(
            r#"{"id": 7, "ok": true, "result": {"answer": "x"}, "call_span": [10, 20],
                "spans": [["generate", 5, null, 11, 12, "ok", null, null]], "future": [1]}"#,
        );
        assert_eq!((reply.id, reply.ok), (Some(json!(7)), true));
        assert_eq!(reply.result, json!({"answer": "x"}));
        let call = reply.call_span.expect("the call's span");
        assert_eq!(
            (call.start_ns, call.end_ns, call.status, call.message),
            (10, 20, None, None)
        );
        assert_eq!(reply.spans.len(), 1);
        assert!(reply.lm.is_empty() && reply.spans_dropped == 0);

        let failed = read(
            r#"{"id": 8, "ok": false, "error": {"type": "ValueError", "message": "no"},
                "call_span": [1, 2, "error", "ValueError: no"], "spans_dropped": 3}"#,
        );
        let call = failed.call_span.clone().expect("the call's span");
        assert_eq!(call.status.as_deref(), Some("error"));
        assert_eq!(call.message.as_deref(), Some("ValueError: no"));
        match parse_reply(failed, 0, 1) {
            Ok(Reply {
                error: Some(BridgeError::Python { kind, message, .. }),
                spans_dropped: 3,
                ..
            }) => assert_eq!((kind.as_str(), message.as_str()), ("ValueError", "no")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_without_a_request_id_names_the_workers_reason() {
        let refusal = read(
            r#"{"id": null, "ok": false, "error": {"type": "ProtocolError", "message": "too large"}}"#,
        );
        assert_eq!(refusal.id, None);
        assert_eq!(
            mismatch(&refusal, Some(&json!(4))),
            "the worker refused request 4: ProtocolError: too large"
        );
        assert_eq!(
            mismatch(&read(r#"{"id": 5, "ok": true}"#), Some(&json!(4))),
            "the worker replied to request 5 while 4 was awaited"
        );
        assert_eq!(
            mismatch(&read(r#"{"ok": true}"#), Some(&json!(4))),
            "the worker replied without a request id while 4 was awaited"
        );
    }
}
