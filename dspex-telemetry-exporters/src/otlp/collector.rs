//! The span path: a sink that copies each finished span into a buffer of its thread (a
//! single-producer ring, no lock), and a collector thread that takes every thread's ring,
//! turns the records into `SpanData` and hands batches to a `SpanExporter`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dspex_telemetry_core::{Dispatcher, SpanRecord, SpanSink};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use rtrb::{Consumer, Producer, RingBuffer};
use tokio::sync::{Notify, mpsc, oneshot};

use super::env::{OtlpConfig, Signal};
use super::{OtlpError, invalid, log_safe, record, span_exporter};

/// What the exporter has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OtlpStats {
    /// Spans the exporter accepted.
    pub exported: u64,
    /// Spans dropped: a thread's buffer or the queue was full, or their request failed.
    pub dropped: u64,
    /// Export requests that failed (collector down, refusing, too slow).
    pub failed_requests: u64,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed_requests: AtomicU64,
}

static NEXT_COLLECTOR: AtomicU64 = AtomicU64::new(1);

/// What the sink and the collector thread share.
struct Shared {
    id: u64,
    ring_bytes: usize,
    /// Rings of threads that recorded their first span since the collector last looked.
    new_rings: Mutex<Vec<Consumer<u8>>>,
    /// The writing ends of rings whose threads ended: a new thread takes one before making a
    /// ring (no allocation, no fresh pages, the collector keeps reading it).
    spare: Mutex<Vec<Producer<u8>>>,
    /// Spans an OpenTelemetry SDK handed in through [`OtlpSpanProcessor`], at most
    /// `max_queue`.
    handed_in: Mutex<Vec<SpanData>>,
    max_queue: usize,
    max_batch: usize,
    /// Set by a thread whose ring is three quarters full; the collector clears it when it drains.
    nudged: AtomicBool,
    wake: Notify,
    counters: Counters,
}

/// One thread's rings (one per collector it sends to) and the buffer a record is encoded in.
#[derive(Default)]
struct Local {
    scratch: Vec<u8>,
    rings: Vec<(Arc<Shared>, Producer<u8>)>,
}

impl Drop for Local {
    /// The thread ends: its rings go back to their collectors' spares.
    fn drop(&mut self) {
        for (shared, producer) in self.rings.drain(..) {
            if !producer.is_abandoned() {
                shared
                    .spare
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(producer);
            }
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Bytes of a ring's free space a record is first written into in place (a bridge call's
/// record is about 200 bytes, a Python worker's span with its process's resource about 350;
/// larger ones are measured first).
const IN_PLACE: usize = 512;

/// After a record went into `ring`: when the ring is three quarters full, the collector is
/// asked to come before its next round. Always `true` (the record was written).
fn nudge(shared: &Shared, ring: &Producer<u8>) -> bool {
    // The cached count can only be short of the true one: the true one is read only then.
    if ring.cached_slots() < shared.ring_bytes / 4
        && ring.slots() < shared.ring_bytes / 4
        && !shared.nudged.swap(true, Ordering::AcqRel)
    {
        shared.wake.notify_one();
    }
    true
}

/// The span sink attached to the dispatcher.
struct RingSink(Arc<Shared>);

impl SpanSink for RingSink {
    fn on_end(&self, span: &SpanRecord<'_>) {
        let shared = &self.0;
        let pushed = LOCAL.try_with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return false;
            };
            let Local { scratch, rings } = &mut *local;
            let ring = match rings.iter().position(|(s, _)| s.id == shared.id) {
                Some(i) => &mut rings[i].1,
                None => {
                    rings.retain(|(_, p)| !p.is_abandoned());
                    let spare = shared.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let producer = spare.unwrap_or_else(|| {
                        let (producer, consumer) = RingBuffer::new(shared.ring_bytes);
                        shared
                            .new_rings
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(consumer);
                        producer
                    });
                    rings.push((shared.clone(), producer));
                    &mut rings.last_mut().expect("just pushed").1
                }
            };
            // Length-prefixed, written in place into the ring's free space when it fits in
            // the first `IN_PLACE` bytes of it in one piece; else measured, written into
            // `scratch`, and copied (around the ring's end if need be). The free space is
            // written without being cleared first.
            let room = match ring.cached_slots() {
                known if known >= IN_PLACE => IN_PLACE,
                _ => ring.slots().min(IN_PLACE),
            };
            let in_place = ring.write_chunk_uninit(room).ok().and_then(|mut chunk| {
                let (first, _) = chunk.as_mut_slices();
                // The collector read these bytes last, on another core: asking for the lines
                // the next records will be written to, for writing, now, overlaps their trip
                // back with this record's writes (about 6 % of a bridge-call span's time on
                // the caller's thread, in a loop of them: 131 against 123 ns).
                #[cfg(target_arch = "x86_64")]
                {
                    use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
                    for at in [192, 256, 320, 384, 448] {
                        if let Some(b) = first.get(at) {
                            // SAFETY: a prefetch never faults; the address is in the chunk.
                            unsafe { _mm_prefetch::<_MM_HINT_ET0>(b.as_ptr().cast()) };
                        }
                    }
                }
                let len = record::encode_into(span, first.get_mut(4..)?)?;
                for (to, from) in first.iter_mut().zip((len as u32).to_le_bytes()) {
                    to.write(from);
                }
                // SAFETY: the first `4 + len` bytes of the chunk's first slice are written:
                // the length just now, the record by `encode_into` (it returned `len`).
                unsafe { chunk.commit(4 + len) };
                Some(())
            });
            if in_place.is_some() {
                return nudge(shared, ring);
            }
            let len = record::encoded_len(span);
            let Ok(mut chunk) = ring.write_chunk(4 + len) else {
                return false;
            };
            scratch.clear();
            scratch.extend_from_slice(&(len as u32).to_le_bytes());
            scratch.reserve(len);
            if record::encode_into(span, &mut scratch.spare_capacity_mut()[..len]) != Some(len) {
                // Never expected (`encoded_len` is exact): a drop, not a torn record.
                return false;
            }
            // SAFETY: `encode_into` wrote the `len` bytes after the length.
            unsafe { scratch.set_len(4 + len) };
            let (first, second) = chunk.as_mut_slices();
            let split = first.len();
            first.copy_from_slice(&scratch[..split]);
            second.copy_from_slice(&scratch[split..]);
            chunk.commit_all();
            nudge(shared, ring)
        });
        if pushed != Ok(true) {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Command {
    Flush(oneshot::Sender<()>),
    /// A flush asked for outside any runtime (an SDK's `force_flush`).
    FlushBlocking(std::sync::mpsc::Sender<()>),
    Shutdown(Instant, oneshot::Sender<()>),
}

/// A running trace exporter: the span sink on a dispatcher and the collector thread behind it.
/// [`OtlpTraces::shutdown`] exports what is buffered, then stops, within its deadline.
#[derive(Debug)]
pub struct OtlpTraces {
    dispatcher: Dispatcher,
    sink_id: String,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<SharedHandle>,
    shutdown_timeout: Duration,
}

struct SharedHandle(Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("id", &self.0.id)
            .finish_non_exhaustive()
    }
}

type ExportFuture = Pin<Box<dyn Future<Output = (usize, Option<String>)> + Send>>;

impl OtlpTraces {
    /// Checks `config` (with the environment filling what it leaves unset), builds the
    /// `opentelemetry-otlp` exporter it describes, attaches the span sink (id `sink_id`) to
    /// `dispatcher` and starts the collector thread. Errors name the key at fault.
    pub fn start(
        config: OtlpConfig,
        dispatcher: &Dispatcher,
        sink_id: &str,
    ) -> Result<Self, OtlpError> {
        config.check_batching()?;
        let resolved = config.resolve(Signal::Traces)?;
        let runtime = runtime()?;
        let mut exporter = {
            let _inside = runtime.get().enter();
            span_exporter(&resolved)?
        };
        let resource = resolved.resource();
        exporter.set_resource(&resource);
        Self::start_on(
            runtime,
            exporter,
            Some(resource),
            config,
            dispatcher,
            sink_id,
        )
    }

    /// As [`OtlpTraces::start`], with spans going to `exporter` (your own: a vendor's, the
    /// SDK's in-memory one in tests). Its resource is yours to set: the spans of Python
    /// workers carry their process's facts (`process.pid`, `process.runtime.*`) as attributes
    /// instead of a resource of their own.
    pub fn start_with_exporter<E: SpanExporter + 'static>(
        exporter: E,
        config: OtlpConfig,
        dispatcher: &Dispatcher,
        sink_id: &str,
    ) -> Result<Self, OtlpError> {
        config.check_batching()?;
        Self::start_on(runtime()?, exporter, None, config, dispatcher, sink_id)
    }

    fn start_on<E: SpanExporter + 'static>(
        mut runtime: OwnRuntime,
        exporter: E,
        resource: Option<Resource>,
        config: OtlpConfig,
        dispatcher: &Dispatcher,
        sink_id: &str,
    ) -> Result<Self, OtlpError> {
        let shared = Arc::new(Shared {
            id: NEXT_COLLECTOR.fetch_add(1, Ordering::Relaxed),
            ring_bytes: config.thread_buffer_bytes,
            new_rings: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            handed_in: Mutex::new(Vec::new()),
            max_queue: config.max_queue,
            max_batch: config.max_batch,
            nudged: AtomicBool::new(false),
            wake: Notify::new(),
            counters: Counters::default(),
        });
        dispatcher.attach_span_sink(sink_id, RingSink(shared.clone()))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let collector = Collector {
            shared: shared.clone(),
            exporter: Arc::new(exporter),
            timeout: config.timeout.unwrap_or(Duration::from_secs(10)),
            config: config.clone(),
            rings: Vec::new(),
            queue: VecDeque::new(),
            resource,
            resources: Resources::default(),
            exporting_as: None,
            scratch: Vec::new(),
            interned: record::Interned::default(),
            scope: InstrumentationScope::builder("dspex-telemetry")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            last_warning: None,
        };
        let spawned = std::thread::Builder::new()
            .name("dspex-otlp-spans".into())
            .spawn(move || {
                if let Some(runtime) = runtime.0.take() {
                    runtime.block_on(collector.run(receiver));
                }
            });
        if let Err(e) = spawned {
            let _ = dispatcher.detach(sink_id);
            return Err(invalid("otlp", format!("cannot start its thread: {e}")));
        }
        Ok(OtlpTraces {
            dispatcher: dispatcher.clone(),
            sink_id: sink_id.to_owned(),
            commands,
            shared: Arc::new(SharedHandle(shared)),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// This exporter as a processor for your own `SdkTracerProvider`: the spans of your
    /// OpenTelemetry tracers join ours on the same queue, batches and connection, with the
    /// same bounds and counters ([`OtlpTraces::stats`]). Unsampled spans are left out.
    ///
    /// ```
    /// use dspex_telemetry_core::Dispatcher;
    /// use dspex_telemetry_exporters::otlp::{OtlpConfig, OtlpTraces};
    /// use opentelemetry::trace::{Tracer, TracerProvider};
    ///
    /// let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    /// let traces = OtlpTraces::start_with_exporter(exporter.clone(), OtlpConfig::default(), &Dispatcher::new(), "otlp").unwrap();
    /// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
    ///     .with_span_processor(traces.span_processor())
    ///     .build();
    /// provider.tracer("checkout").in_span("charge card", |_| {});
    /// provider.force_flush().unwrap();
    /// assert_eq!(exporter.get_finished_spans().unwrap()[0].name, "charge card");
    /// ```
    pub fn span_processor(&self) -> OtlpSpanProcessor {
        OtlpSpanProcessor {
            shared: self.shared.clone(),
            commands: self.commands.clone(),
            timeout: self.shutdown_timeout,
        }
    }

    /// What has been exported, dropped and failed so far.
    pub fn stats(&self) -> OtlpStats {
        let c = &self.shared.0.counters;
        OtlpStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
        }
    }

    /// Exports what every thread has buffered now, and waits until it has been sent (or has
    /// failed); at most the shutdown deadline.
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(self.shutdown_timeout, sent).await;
        }
    }

    /// Detaches the sink, exports what is buffered, shuts the exporter down and stops: within
    /// `shutdown_timeout` whatever the collector does.
    pub async fn shutdown(self) {
        let _ = self.dispatcher.detach(&self.sink_id);
        let deadline = Instant::now() + self.shutdown_timeout;
        let (done, stopped) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown(deadline, done))
            .is_ok()
        {
            let margin = self.shutdown_timeout + Duration::from_millis(200);
            let _ = tokio::time::timeout(margin, stopped).await;
        }
    }
}

impl Drop for OtlpTraces {
    fn drop(&mut self) {
        let _ = self.dispatcher.detach(&self.sink_id);
        let (done, _) = oneshot::channel();
        let deadline = Instant::now() + self.shutdown_timeout;
        let _ = self.commands.send(Command::Shutdown(deadline, done));
    }
}

/// [`OtlpTraces`] as an OpenTelemetry SDK span processor: see [`OtlpTraces::span_processor`].
/// Handing a span in costs a lock and a push; a full queue drops it and counts it. Its
/// `shutdown` flushes only: the pipeline stops with [`OtlpTraces::shutdown`].
#[derive(Debug, Clone)]
pub struct OtlpSpanProcessor {
    shared: Arc<SharedHandle>,
    commands: mpsc::UnboundedSender<Command>,
    timeout: Duration,
}

impl SpanProcessor for OtlpSpanProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let shared = &self.shared.0;
        if !span.span_context.is_sampled() {
            return;
        }
        if self.commands.is_closed() {
            // The pipeline has stopped: nothing would send it.
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let waiting = {
            let mut handed_in = shared.handed_in.lock().unwrap_or_else(|e| e.into_inner());
            if handed_in.len() >= shared.max_queue {
                None
            } else {
                handed_in.push(span);
                Some(handed_in.len())
            }
        };
        match waiting {
            None => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(n) if n >= shared.max_batch && !shared.nudged.swap(true, Ordering::AcqRel) => {
                shared.wake.notify_one();
            }
            Some(_) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, flushed) = std::sync::mpsc::channel();
        self.commands
            .send(Command::FlushBlocking(done))
            .map_err(|_| opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown)?;
        flushed
            .recv_timeout(self.timeout)
            .map_err(|_| opentelemetry_sdk::error::OTelSdkError::Timeout(self.timeout))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (done, flushed) = std::sync::mpsc::channel();
        if self.commands.send(Command::FlushBlocking(done)).is_ok() {
            let _ = flushed.recv_timeout(timeout.min(self.timeout));
        }
        Ok(())
    }
}

fn runtime() -> Result<OwnRuntime, OtlpError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|r| OwnRuntime(Some(r)))
        .map_err(|e| invalid("otlp", format!("cannot start its runtime: {e}")))
}

/// The collector's runtime until its thread takes it. Dropped unused (a start that failed,
/// perhaps inside the caller's async code), it shuts down without blocking: dropping a
/// runtime inside another one's context would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("taken only by the collector thread")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The resource a span from another process is exported with: the service's merged with the
/// facts of its resource `section` (none for this process's spans). With an exporter whose
/// resource the user set, the facts become the span's attributes instead. A section seen
/// before is found by its bytes, and not read again.
fn resource_of(
    service: &Option<Resource>,
    resources: &mut Resources,
    interned: &mut record::Interned,
    span: &mut SpanData,
    section: &[u8],
) -> Option<Arc<Resource>> {
    if section.is_empty() {
        return None;
    }
    // With an exporter whose resource the user set (no merged one), the facts go on the span.
    let apply = |span: &mut SpanData, (facts, merged): &(Vec<KeyValue>, Option<Arc<Resource>>)| {
        if merged.is_none() {
            span.attributes.extend(facts.iter().cloned());
        }
        merged.clone()
    };
    if let Some(known) = resources.get(section) {
        return apply(span, known);
    }
    let facts = record::decode_resource(section, interned)?;
    let merged = service.as_ref().map(|base| {
        Arc::new(
            Resource::builder_empty()
                .with_attributes(
                    base.iter()
                        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                        .chain(facts.iter().cloned()),
                )
                .build(),
        )
    });
    if resources.len() >= RESOURCES {
        resources.clear();
    }
    let known = (facts, merged);
    let resource = apply(span, &known);
    resources.insert(section.into(), known);
    resource
}

/// Other processes' resources, by the bytes of their section in a record: their facts, and
/// the service's resource merged with them (when the collector made the exporter).
type Resources =
    HashMap<Box<[u8]>, (Vec<KeyValue>, Option<Arc<Resource>>), foldhash::fast::RandomState>;

/// Other processes' resources kept at once (a pool's workers, and their replacements).
const RESOURCES: usize = 64;

/// Who waits for a flush.
enum Flushed {
    Async(oneshot::Sender<()>),
    Blocking(std::sync::mpsc::Sender<()>),
}

impl Flushed {
    fn done(self) {
        match self {
            Flushed::Async(done) => {
                let _ = done.send(());
            }
            Flushed::Blocking(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// How long the collector sleeps between looks at the rings when no thread nudges it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// A failure is logged at most this often (with the count since).
const WARN_INTERVAL: Duration = Duration::from_secs(60);

struct Collector<E> {
    shared: Arc<Shared>,
    exporter: Arc<E>,
    config: OtlpConfig,
    timeout: Duration,
    rings: Vec<Consumer<u8>>,
    /// Spans waiting, each with the resource of the process it ran in when that is not this
    /// one (a Python worker's).
    queue: VecDeque<(SpanData, Option<Arc<Resource>>)>,
    /// The service's resource, when the collector made the exporter (else the user set it,
    /// and other processes' facts go on their spans as attributes).
    resource: Option<Resource>,
    /// Other processes' resources, at most [`RESOURCES`], emptied when full.
    resources: Resources,
    /// The resource the exporter has now: `None` for the service's.
    exporting_as: Option<Arc<Resource>>,
    scratch: Vec<u8>,
    interned: record::Interned,
    scope: InstrumentationScope,
    last_warning: Option<(Instant, u64)>,
}

impl<E: SpanExporter + 'static> Collector<E> {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut in_flight: Option<ExportFuture> = None;
        let mut flushes: Vec<Flushed> = Vec::new();
        let mut next_export = Instant::now() + self.config.export_interval;
        // Spans still to send in this interval's round of requests.
        let mut round = 0usize;
        loop {
            let wait = tokio::time::sleep(DRAIN_INTERVAL);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Flush(done)) => flushes.push(Flushed::Async(done)),
                    Some(Command::FlushBlocking(done)) => flushes.push(Flushed::Blocking(done)),
                    Some(Command::Shutdown(deadline, done)) => {
                        self.finish(in_flight.take(), deadline).await;
                        flushes.into_iter().for_each(Flushed::done);
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        let deadline = Instant::now() + self.config.shutdown_timeout;
                        self.finish(in_flight.take(), deadline).await;
                        return;
                    }
                },
                () = self.shared.wake.notified() => {}
                () = wait => {}
                result = async { match in_flight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    in_flight = None;
                    self.record_result(result);
                }
            }
            self.drain();
            // Every export interval, what is queued then is sent (a request per resource, each
            // of at most `max_batch`); spans that arrive meanwhile wait for the next interval,
            // unless `max_batch` of them are queued. A flush sends everything.
            let now = Instant::now();
            if now >= next_export {
                round = self.queue.len();
                next_export = now + self.config.export_interval;
            }
            if !flushes.is_empty() {
                round = round.max(self.queue.len());
            }
            if in_flight.is_none()
                && !self.queue.is_empty()
                && (round > 0 || self.queue.len() >= self.config.max_batch)
            {
                let queued = self.queue.len();
                in_flight = Some(self.next_export());
                round = round.saturating_sub(queued - self.queue.len());
            }
            publish_counters(&self.shared.counters);
            if in_flight.is_none() && self.queue.is_empty() {
                flushes.drain(..).for_each(Flushed::done);
            }
        }
    }

    /// Moves every ring's records into the queue (dropping, and counting, beyond `max_queue`).
    fn drain(&mut self) {
        self.shared.nudged.store(false, Ordering::Release);
        {
            let mut new = self
                .shared
                .new_rings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.rings.append(&mut new);
        }
        let mut dropped = 0;
        let handed_in = std::mem::take(
            &mut *self
                .shared
                .handed_in
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for span in handed_in {
            if self.queue.len() >= self.config.max_queue {
                dropped += 1;
            } else {
                self.queue.push_back((span, None));
            }
        }
        let mut bytes = std::mem::take(&mut self.scratch);
        for ring in &mut self.rings {
            while next_record(ring, &mut bytes) {
                if self.queue.len() >= self.config.max_queue {
                    dropped += 1;
                    continue;
                }
                if let Some((mut span, section)) =
                    record::decode(&bytes, &self.scope, &mut self.interned)
                {
                    let resource = resource_of(
                        &self.resource,
                        &mut self.resources,
                        &mut self.interned,
                        &mut span,
                        section,
                    );
                    self.queue.push_back((span, resource));
                }
            }
        }
        self.scratch = bytes;
        // A thread that ended leaves its ring behind; once read it can go.
        self.rings.retain(|r| !(r.is_abandoned() && r.is_empty()));
        if dropped > 0 {
            self.shared
                .counters
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// The next request: the spans that share the resource of the queue's first (at most
    /// `max_batch`, wherever they are in the queue: the spans of the service and of its
    /// workers interleave), the exporter set to that resource first.
    fn next_export(&mut self) -> ExportFuture {
        let first = self.queue.front().and_then(|(_, r)| r.clone());
        let same = |r: &Option<Arc<Resource>>| match (r, &first) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let max_batch = self.config.max_batch;
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.queue.len().min(max_batch));
        let mut rest = VecDeque::with_capacity(self.queue.len());
        for (span, resource) in self.queue.drain(..) {
            if batch.len() < max_batch && same(&resource) {
                batch.push(span);
            } else {
                rest.push_back((span, resource));
            }
        }
        self.queue = rest;
        let now_as = |r: &Option<Arc<Resource>>| match (r, &self.exporting_as) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !now_as(&first) {
            // No request is in flight: the collector holds the exporter's only handle.
            if let (Some(exporter), Some(base)) = (Arc::get_mut(&mut self.exporter), &self.resource)
            {
                exporter.set_resource(first.as_deref().unwrap_or(base));
                self.exporting_as = first;
            }
        }
        let exporter = self.exporter.clone();
        let n = batch.len();
        // The exporter's own timeout bounds each request and its retries; this bounds an
        // exporter that ignores it.
        let limit = self.timeout + Duration::from_secs(1);
        Box::pin(async move {
            let outcome: Result<OTelSdkResult, _> =
                tokio::time::timeout(limit, exporter.export(batch)).await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} ms", limit.as_millis())),
            };
            (n, failure)
        })
    }

    fn record_result(&mut self, (n, failure): (usize, Option<String>)) {
        let counters = &self.shared.counters;
        let Some(why) = failure else {
            counters.exported.fetch_add(n as u64, Ordering::Relaxed);
            return;
        };
        counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
        let failed = counters.failed_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let quiet = self
            .last_warning
            .is_some_and(|(at, _)| now.duration_since(at) < WARN_INTERVAL);
        if !quiet {
            let since = failed - self.last_warning.map_or(0, |(_, count)| count);
            tracing::warn!(
                error = %log_safe(&why, 200),
                failed_requests = since,
                "OTLP span export failed; further failures are counted and logged at most once a minute"
            );
            self.last_warning = Some((now, failed));
        }
    }

    /// The last exports before stopping, bounded by `deadline`.
    async fn finish(&mut self, in_flight: Option<ExportFuture>, deadline: Instant) {
        let deadline = tokio::time::Instant::from_std(deadline);
        let work = async {
            if let Some(f) = in_flight {
                let result = f.await;
                self.record_result(result);
            }
            self.drain();
            while !self.queue.is_empty() {
                let result = self.next_export().await;
                self.record_result(result);
            }
        };
        if tokio::time::timeout_at(deadline, work).await.is_err() {
            // What is still queued is lost: count it.
            let left = self.queue.len() as u64;
            self.shared
                .counters
                .dropped
                .fetch_add(left, Ordering::Relaxed);
            tracing::warn!(
                dropped = left,
                "OTLP span export did not finish before the shutdown deadline"
            );
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self.exporter.shutdown_with_timeout(remaining);
    }
}

/// Copies the next length-prefixed record in `ring` into `out` (cleared first); false when
/// there is none.
fn next_record(ring: &mut Consumer<u8>, out: &mut Vec<u8>) -> bool {
    out.clear();
    let len = {
        let Ok(head) = ring.read_chunk(4) else {
            return false;
        };
        let (a, b) = head.as_slices();
        let mut len = [0u8; 4];
        len[..a.len()].copy_from_slice(a);
        len[a.len()..].copy_from_slice(b);
        u32::from_le_bytes(len) as usize
    };
    // A record is committed whole, so its body is there when its length is.
    let Ok(chunk) = ring.read_chunk(4 + len) else {
        return false;
    };
    let (a, b) = chunk.as_slices();
    if a.len() >= 4 {
        out.extend_from_slice(&a[4..]);
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(&b[4 - a.len()..]);
    }
    chunk.commit_all();
    true
}

/// The exporter's own counters in the metrics (Prometheus `/metrics` and the other backends
/// of the recorder installed now), as `dspex_telemetry_spans_exported_total`,
/// `…_dropped_total` and `dspex_telemetry_span_export_failures_total`.
fn publish_counters(c: &Counters) {
    metrics::counter!("dspex_telemetry_spans_exported_total")
        .absolute(c.exported.load(Ordering::Relaxed));
    metrics::counter!("dspex_telemetry_spans_dropped_total")
        .absolute(c.dropped.load(Ordering::Relaxed));
    metrics::counter!("dspex_telemetry_span_export_failures_total")
        .absolute(c.failed_requests.load(Ordering::Relaxed));
}
