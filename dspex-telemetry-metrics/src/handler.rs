//! The handler that turns events into `metrics` facade calls, through cached handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dspex_telemetry_core::{AttachError, Dispatcher, Event, EventName};
use metrics::{Key, Label};

use crate::append_only::AppendOnlyMap;
use crate::definition::{
    DefinitionError, MetricDefinition, MetricKind, Tag, TagPart, for_each_tag_part, render_labels,
};
use crate::recorder::OVERFLOW_LABEL;

static METADATA: metrics::Metadata<'static> = metrics::Metadata::new(
    "dspex_telemetry_metrics",
    metrics::Level::INFO,
    Some(module_path!()),
);

/// Why the metrics handler could not attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// A definition is invalid.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// Two definitions of one name disagree on kind or labels.
    #[error("metric {0} is defined twice with different kinds or labels")]
    Conflict(String),
    /// The dispatcher refused the handler (its id is taken).
    #[error(transparent)]
    Attach(#[from] AttachError),
}

#[derive(Clone)]
enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

#[derive(Debug, Clone, PartialEq)]
enum OwnedPart {
    Str(Box<str>),
    Int(i64),
    Float(u64),
    Bool(bool),
    Missing,
}

impl OwnedPart {
    fn of(part: TagPart<'_>) -> Self {
        match part {
            TagPart::Str(s) => OwnedPart::Str(s.into()),
            TagPart::Int(i) => OwnedPart::Int(i),
            TagPart::Float(x) => OwnedPart::Float(x.to_bits()),
            TagPart::Bool(b) => OwnedPart::Bool(b),
            TagPart::Missing => OwnedPart::Missing,
        }
    }

    fn matches(&self, part: TagPart<'_>) -> bool {
        match (self, part) {
            (OwnedPart::Str(a), TagPart::Str(b)) => **a == *b,
            (OwnedPart::Int(a), TagPart::Int(b)) => *a == b,
            (OwnedPart::Float(a), TagPart::Float(b)) => *a == b.to_bits(),
            (OwnedPart::Bool(a), TagPart::Bool(b)) => *a == b,
            (OwnedPart::Missing, TagPart::Missing) => true,
            _ => false,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

fn hash_part(hash: u64, part: TagPart<'_>) -> u64 {
    let hash = match part {
        TagPart::Str(s) => fnv(fnv(hash, b"s"), s.as_bytes()),
        TagPart::Int(i) => fnv(fnv(hash, b"i"), &i.to_le_bytes()),
        TagPart::Float(x) => fnv(fnv(hash, b"f"), &x.to_bits().to_le_bytes()),
        TagPart::Bool(b) => fnv(hash, if b { b"t" } else { b"F" }),
        TagPart::Missing => fnv(hash, b"m"),
    };
    fnv(hash, &[0xff])
}

struct CachedSet {
    parts: Box<[OwnedPart]>,
    /// One handle per metric of the group, in order.
    handles: Box<[Handle]>,
}

/// The metrics one event feeds that share a label list: their label values are read, hashed
/// and looked up once per event, and their handles cached together.
struct MetricGroup {
    tags: Vec<Tag>,
    metrics: Vec<MetricDefinition>,
    cache: AppendOnlyMap<CachedSet>,
    max_series: usize,
    overflow: OnceLock<Box<[Handle]>>,
    overflowed: Arc<AtomicU64>,
}

impl MetricGroup {
    fn parts_hash(&self, event: &Event<'_>) -> u64 {
        let mut hash = FNV_OFFSET;
        for tag in &self.tags {
            for_each_tag_part(tag, event, |p| hash = hash_part(hash, p));
        }
        hash
    }

    fn matches(&self, cached: &CachedSet, event: &Event<'_>) -> bool {
        let mut i = 0;
        let mut all = true;
        for tag in &self.tags {
            for_each_tag_part(tag, event, |p| {
                all &= cached.parts.get(i).is_some_and(|c| c.matches(p));
                i += 1;
            });
        }
        all && i == cached.parts.len()
    }

    /// Runs `f` with the handles of `event`'s label set, registering them on first sight. The
    /// cache is read without a lock and the handles used in place: no reference count moves.
    #[inline]
    fn with_handles(&self, event: &Event<'_>, f: impl FnOnce(&[Handle])) {
        let hash = self.parts_hash(event);
        match self.cache.find(hash, |c| self.matches(c, event)) {
            Some(found) => f(&found.handles),
            None => f(&self.register(hash, event)),
        }
    }

    #[cold]
    fn register(&self, hash: u64, event: &Event<'_>) -> Box<[Handle]> {
        if self.cache.len() >= self.max_series {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self
                .overflow
                .get_or_init(|| {
                    let labels = vec![Label::new(OVERFLOW_LABEL.0, OVERFLOW_LABEL.1)];
                    self.register_all(&labels)
                })
                .clone();
        }
        let labels: Vec<Label> = self
            .metrics
            .first()
            .map(|def| render_labels(def, event))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| Label::new(k, v))
            .collect();
        let handles = self.register_all(&labels);
        let mut parts = Vec::new();
        for tag in &self.tags {
            for_each_tag_part(tag, event, |p| parts.push(OwnedPart::of(p)));
        }
        let set = CachedSet {
            parts: parts.into(),
            handles,
        };
        self.cache
            .insert(hash, set, |c| self.matches(c, event))
            .handles
            .clone()
    }

    fn register_all(&self, labels: &[Label]) -> Box<[Handle]> {
        metrics::with_recorder(|r| {
            self.metrics
                .iter()
                .map(|def| {
                    let key = Key::from_parts(def.name.clone(), labels.to_vec());
                    match def.kind {
                        MetricKind::Counter => Handle::Counter(r.register_counter(&key, &METADATA)),
                        MetricKind::Sum | MetricKind::LastValue => {
                            Handle::Gauge(r.register_gauge(&key, &METADATA))
                        }
                        MetricKind::Summary | MetricKind::Distribution { .. } => {
                            Handle::Histogram(r.register_histogram(&key, &METADATA))
                        }
                    }
                })
                .collect()
        })
    }

    #[inline]
    fn record(&self, event: &Event<'_>) {
        self.with_handles(event, |handles| {
            for (def, handle) in self.metrics.iter().zip(handles) {
                if let Some(keep) = &def.keep {
                    if !keep(event) {
                        continue;
                    }
                }
                let Some(value) = def.value(event) else {
                    continue;
                };
                match (&def.kind, handle) {
                    (MetricKind::Counter, Handle::Counter(c)) => c.increment(1),
                    (MetricKind::Sum, Handle::Gauge(g)) => g.increment(value),
                    (MetricKind::LastValue, Handle::Gauge(g)) => g.set(value),
                    (_, Handle::Histogram(h)) => h.record(value),
                    _ => {}
                }
            }
        });
    }
}

/// Feeds metric definitions from the dispatcher's events into the `metrics` facade, so every
/// recorder installed there (the window, Prometheus, StatsD) sees them.
///
/// Install the recorder before attaching: handles are registered with the recorder current at
/// the first event of each label set, and cached. Per event, a metric costs its filter, a hash
/// of its label values (borrowed from the event's metadata), a lock-free cache probe and the
/// recorder's own record; allocation happens only the first time a label set is seen. Each
/// metric caches at most `max_series_per_metric` label sets; further ones go to one series
/// labelled `overflow="true"`.
///
/// ```
/// use dspex_telemetry_core::{catalog, metadata, Dispatcher};
/// use dspex_telemetry_metrics::{catalog as metric_catalog, MetricsHandler, RecorderConfig, WindowedRecorder};
///
/// let recorder = WindowedRecorder::new(RecorderConfig::default()).unwrap();
/// let dispatcher = Dispatcher::new();
/// metrics::with_local_recorder(&recorder, || {
///     let _handler = MetricsHandler::attach(&dispatcher, "dspex-metrics", metric_catalog::dspex_metrics(), 1_000).unwrap();
///     dispatcher.span(&catalog::BRIDGE_CALL, metadata! { "module" => "dspy", "function" => "Predict" }, || ((), metadata! {}));
/// });
/// let op = recorder.operation("dspex_bridge_call_method", &[("method", "dspy.Predict")]).unwrap();
/// assert_eq!(op.count, 1);
/// ```
#[derive(Debug)]
pub struct MetricsHandler {
    dispatcher: Dispatcher,
    ids: Vec<String>,
    overflowed: Arc<AtomicU64>,
}

impl MetricsHandler {
    /// Validates `definitions`, describes them to the current recorder, and attaches one
    /// handler per event under ids `"{id}:{event}"`.
    pub fn attach(
        dispatcher: &Dispatcher,
        id: &str,
        definitions: Vec<MetricDefinition>,
        max_series_per_metric: usize,
    ) -> Result<Self, MetricsError> {
        let mut seen: HashMap<&str, &MetricDefinition> = HashMap::new();
        for def in &definitions {
            def.validate()?;
            if let Some(other) = seen.insert(def.name(), def) {
                let same_kind =
                    std::mem::discriminant(other.kind()) == std::mem::discriminant(def.kind());
                let names =
                    |d: &MetricDefinition| d.tag_list().iter().map(|t| t.name).collect::<Vec<_>>();
                if !same_kind || names(other) != names(def) {
                    return Err(MetricsError::Conflict(def.name().to_owned()));
                }
            }
        }
        metrics::with_recorder(|r| {
            for def in &definitions {
                let (name, unit, help) = (
                    def.name().to_owned(),
                    Some(def.reported_unit().to_metrics()),
                    def.help(),
                );
                match def.kind() {
                    MetricKind::Counter => r.describe_counter(name.into(), unit, help.into()),
                    MetricKind::Sum | MetricKind::LastValue => {
                        r.describe_gauge(name.into(), unit, help.into())
                    }
                    _ => r.describe_histogram(name.into(), unit, help.into()),
                }
            }
        });
        let overflowed = Arc::new(AtomicU64::new(0));
        let mut by_event: Vec<(EventName, Vec<MetricGroup>)> = Vec::new();
        for def in definitions {
            for event in def.events() {
                let groups = match by_event.iter_mut().find(|(e, _)| e == event) {
                    Some((_, groups)) => groups,
                    None => {
                        by_event.push((event.clone(), Vec::new()));
                        &mut by_event.last_mut().expect("just pushed").1
                    }
                };
                match groups.iter_mut().find(|g| g.tags == def.tag_list()) {
                    Some(group) => group.metrics.push(def.clone()),
                    None => groups.push(MetricGroup {
                        tags: def.tag_list().to_vec(),
                        metrics: vec![def.clone()],
                        cache: AppendOnlyMap::new(),
                        max_series: max_series_per_metric.max(1),
                        overflow: OnceLock::new(),
                        overflowed: overflowed.clone(),
                    }),
                }
            }
        }
        let mut handler = MetricsHandler {
            dispatcher: dispatcher.clone(),
            ids: Vec::new(),
            overflowed,
        };
        for (event, groups) in by_event {
            let handler_id = format!("{id}:{event}");
            let attached = dispatcher.attach(handler_id.clone(), event, move |e: &Event<'_>| {
                for group in &groups {
                    group.record(e);
                }
            });
            if let Err(e) = attached {
                handler.detach();
                return Err(e.into());
            }
            handler.ids.push(handler_id);
        }
        Ok(handler)
    }

    /// How many label sets went to an overflow series because a metric was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// The dispatcher handler ids, one per event.
    pub fn handler_ids(&self) -> &[String] {
        &self.ids
    }

    /// Detaches every handler.
    pub fn detach(self) {
        for id in &self.ids {
            // Already detached (by hand, or after a panic) is fine.
            let _ = self.dispatcher.detach(id);
        }
    }
}
