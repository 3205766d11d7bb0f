//! The handler that turns events into `metrics` facade calls, through cached handles.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrayvec::ArrayVec;
use dspex_telemetry_core::{AttachError, Attachment, Dispatcher, Event, EventName, Reads};
use metrics::{Key, Label};

use crate::append_only::AppendOnlyMap;
use crate::definition::{
    DefinitionError, MetricDefinition, MetricKind, Tag, TagPart, TagSource, for_each_tag_part,
    render_labels,
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

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Folds one word into the hash.
#[inline]
fn mix(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(MIX)
}

/// Hashes a string eight bytes at a time (short tails read as overlapping words; the length
/// goes in first, so overlaps cannot make two strings alike).
#[inline]
fn mix_str(mut hash: u64, s: &str) -> u64 {
    let b = s.as_bytes();
    let n = b.len();
    hash = mix(hash, 1 | (n as u64) << 8);
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| {
        u64::from(u32::from_le_bytes(
            b[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    if n >= 8 {
        let mut at = 0;
        while at + 8 <= n {
            hash = mix(hash, word(at));
            at += 8;
        }
        if at < n {
            hash = mix(hash, word(n - 8));
        }
        hash
    } else if n >= 4 {
        mix(hash, half(0) << 32 | half(n - 4))
    } else if n > 0 {
        mix(
            hash,
            u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]),
        )
    } else {
        hash
    }
}

/// The hash of one label set's parts.
#[inline]
fn hash_parts(parts: &[TagPart<'_>]) -> u64 {
    let mut hash = parts.len() as u64;
    for part in parts {
        hash = match *part {
            TagPart::Str(s) => mix_str(hash, s),
            TagPart::Int(i) => mix(mix(hash, 2), i as u64),
            TagPart::Float(x) => mix(mix(hash, 3), x.to_bits()),
            TagPart::Bool(b) => mix(hash, 4 | u64::from(b) << 8),
            TagPart::Missing => mix(hash, 5),
        };
    }
    // The table indexes by the low bits: fold the high ones in.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// Label parts of one event, read once: inline up to this many.
const INLINE_PARTS: usize = 12;

struct CachedSet {
    parts: Box<[OwnedPart]>,
    /// One handle per metric of the group, in order.
    handles: Box<[Handle]>,
    /// Whether the set's handles are its own series' (else the overflow series').
    admitted: bool,
    /// Set by an event of this label set, cleared by each [`MetricsHandler::sweep`].
    used: AtomicBool,
    /// Sweeps in a row that found the set unused.
    idle_sweeps: AtomicU32,
}

impl CachedSet {
    fn new(parts: Box<[OwnedPart]>, handles: Box<[Handle]>, admitted: bool) -> Self {
        CachedSet {
            parts,
            handles,
            admitted,
            used: AtomicBool::new(true),
            idle_sweeps: AtomicU32::new(0),
        }
    }
}

/// The metrics one event feeds that share a label list: their label values are read, hashed
/// and looked up once per event, and their handles cached together.
struct MetricGroup {
    tags: Vec<Tag>,
    metrics: Vec<MetricDefinition>,
    /// Metrics of the same operation and labels fed by its other events (a span's error
    /// counter, for its `stop` group): registered with each new label set, so that they are
    /// exported at zero from its first event.
    companions: Vec<MetricDefinition>,
    cache: AppendOnlyMap<CachedSet>,
    admission: Arc<Admission>,
    overflow: OnceLock<Box<[Handle]>>,
}

/// The cap on label sets of one operation (the events of one span, `start`, `stop` and
/// `exception`, with the same labels): a label set is admitted once for all of them, so its
/// duration, count and errors are series together or fold into `overflow="true"` together.
struct Admission {
    max: usize,
    sets: Mutex<AdmittedSets>,
    overflowed: Arc<AtomicU64>,
}

#[derive(Default)]
struct AdmittedSets {
    admitted: HashSet<u64>,
    /// Folded label sets (their hashes), remembered up to [`FOLDED_REMEMBERED`] times the cap
    /// (at least [`FOLDED_REMEMBERED_MIN`]) so that each is counted once.
    folded: HashSet<u64>,
}

/// How many folded label sets an operation remembers, as a multiple of its cap.
const FOLDED_REMEMBERED: usize = 16;

/// The fewest folded label sets an operation remembers.
const FOLDED_REMEMBERED_MIN: usize = 4_096;

/// What [`Admission::admit`] decided for a label set.
enum Admitted {
    /// A series of its own.
    Yes,
    /// Into the overflow series; `cache` if its handles may be cached (the first `max`
    /// folded sets are, so that the cache stays within twice the cap).
    Folded { cache: bool },
}

impl Admission {
    fn admit(&self, hash: u64) -> Admitted {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if sets.admitted.contains(&hash) {
            return Admitted::Yes;
        }
        if sets.admitted.len() < self.max {
            sets.admitted.insert(hash);
            return Admitted::Yes;
        }
        let cache = sets.folded.len() < self.max;
        let remembered = self
            .max
            .saturating_mul(FOLDED_REMEMBERED)
            .max(FOLDED_REMEMBERED_MIN);
        // Past the bound, each registration of a set not remembered counts again.
        if sets.folded.len() >= remembered || sets.folded.insert(hash) {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        Admitted::Folded { cache }
    }
}

/// An operation (its event family) and a label list: what one [`Admission`] caps.
type OperationKey<'a> = (Vec<&'a str>, &'a [Tag]);

/// The operation an event belongs to: for a span's event (`start`, `stop`, `exception`) its
/// name without that segment (`dspex.bridge.call_method` for `dspex.bridge.call_method.stop`);
/// any other event is an operation of its own.
fn family(event: &EventName) -> Vec<&str> {
    let segments: Vec<&str> = event.segments().collect();
    match segments.split_last() {
        Some((last, rest)) if ["start", "stop", "exception"].contains(last) => rest.to_vec(),
        _ => segments,
    }
}

fn matches(cached: &CachedSet, parts: &[TagPart<'_>]) -> bool {
    cached.parts.len() == parts.len() && cached.parts.iter().zip(parts).all(|(c, p)| c.matches(*p))
}

/// The metadata keys the groups' labels read; everything if a metric filters events with its
/// own predicate (it may read any key).
fn reads_of(groups: &[MetricGroup]) -> Reads {
    let mut keys = Vec::new();
    for group in groups {
        if group.metrics.iter().any(|m| m.keep.is_some()) {
            return Reads::All;
        }
        for tag in &group.tags {
            match &tag.source {
                TagSource::Metadata(k) | TagSource::Mapped(k, _) => keys.push(*k),
                TagSource::Join(ks, _) => keys.extend_from_slice(ks),
                TagSource::Phase | TagSource::Constant(_) => {}
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Reads::Only(keys)
}

impl MetricGroup {
    /// Runs `f` with the label parts of `event`, read from its metadata once.
    #[inline]
    fn with_parts<R>(&self, event: &Event<'_>, f: impl FnOnce(&[TagPart<'_>]) -> R) -> R {
        let mut inline = ArrayVec::<TagPart<'_>, INLINE_PARTS>::new();
        let mut spilled: Option<Vec<TagPart<'_>>> = None;
        for tag in &self.tags {
            for_each_tag_part(tag, event, |p| match &mut spilled {
                Some(all) => all.push(p),
                None => {
                    if let Err(full) = inline.try_push(p) {
                        let mut all = inline.to_vec();
                        all.push(full.element());
                        spilled = Some(all);
                    }
                }
            });
        }
        f(spilled.as_deref().unwrap_or(&inline))
    }

    /// Runs `f` with the handles of `event`'s label set, registering them on first sight. The
    /// cache is read without a lock and the handles used in place: no reference count moves.
    #[inline]
    fn with_handles(&self, event: &Event<'_>, f: impl FnOnce(&[Handle])) {
        self.with_parts(event, |parts| {
            let hash = hash_parts(parts);
            match self.cache.find(hash, |c| matches(c, parts)) {
                Some(found) => {
                    // A load, and a store only once per sweep.
                    if !found.used.load(Ordering::Relaxed) {
                        found.used.store(true, Ordering::Relaxed);
                    }
                    f(&found.handles)
                }
                None => f(&self.register(hash, parts, event)),
            }
        })
    }

    #[cold]
    fn register(&self, hash: u64, parts: &[TagPart<'_>], event: &Event<'_>) -> Box<[Handle]> {
        let decision = self.admission.admit(hash);
        let admitted = matches!(decision, Admitted::Yes);
        let handles = match decision {
            Admitted::Yes => {
                let labels: Vec<Label> = self
                    .metrics
                    .first()
                    .map(|def| render_labels(def, event))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| Label::new(k, v))
                    .collect();
                self.register_with_companions(&labels)
            }
            Admitted::Folded { cache } => {
                let overflow = self
                    .overflow
                    .get_or_init(|| {
                        let labels = vec![Label::new(OVERFLOW_LABEL.0, OVERFLOW_LABEL.1)];
                        self.register_with_companions(&labels)
                    })
                    .clone();
                if !cache {
                    return overflow;
                }
                overflow
            }
        };
        let set = CachedSet::new(
            parts.iter().map(|p| OwnedPart::of(*p)).collect(),
            handles,
            admitted,
        );
        self.cache
            .insert(hash, set, |c| matches(c, parts))
            .handles
            .clone()
    }
}

impl MetricGroup {
    /// Marks this sweep on every cached set; if some were unused for `idle_sweeps` sweeps in a
    /// row, a copy of the group without them (its cache rebuilt), and how many were left out.
    fn pruned(&self, idle_sweeps: u32) -> Option<(MetricGroup, Vec<u64>)> {
        let mut idle = Vec::new();
        self.cache.for_each(|hash, set| {
            if set.used.swap(false, Ordering::Relaxed) {
                set.idle_sweeps.store(0, Ordering::Relaxed);
            } else if set.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1 >= idle_sweeps {
                idle.push(hash);
            }
        });
        if idle.is_empty() {
            return None;
        }
        let group = self.with_entries(|set| set.idle_sweeps.load(Ordering::Relaxed) < idle_sweeps);
        Some((group, idle))
    }

    /// The handles of the group's metrics with `labels`, in order, followed by its
    /// companions' (held, so that their series live as long as the label set's).
    fn register_with_companions(&self, labels: &[Label]) -> Box<[Handle]> {
        let mut handles = register_each(&self.metrics, labels).into_vec();
        handles.extend(register_each(&self.companions, labels).into_vec());
        handles.into()
    }

    /// A copy of the group with the same cache entries.
    fn copy(&self) -> MetricGroup {
        self.with_entries(|_| true)
    }

    /// A copy of the group whose cache holds the entries `keep` selects, with their marks.
    fn with_entries(&self, keep: impl Fn(&CachedSet) -> bool) -> MetricGroup {
        let group = MetricGroup {
            tags: self.tags.clone(),
            metrics: self.metrics.clone(),
            companions: self.companions.clone(),
            cache: AppendOnlyMap::new(),
            admission: self.admission.clone(),
            overflow: self.overflow.clone(),
        };
        self.cache.for_each(|hash, set| {
            if keep(set) {
                let kept = CachedSet::new(set.parts.clone(), set.handles.clone(), set.admitted);
                kept.used
                    .store(set.used.load(Ordering::Relaxed), Ordering::Relaxed);
                kept.idle_sweeps
                    .store(set.idle_sweeps.load(Ordering::Relaxed), Ordering::Relaxed);
                group.cache.insert(hash, kept, |c| c.parts == set.parts);
            }
        });
        group
    }

    /// The hashes of the admitted label sets this group caches.
    fn admitted_hashes(&self, into: &mut HashSet<u64>) {
        self.cache.for_each(|hash, set| {
            if set.admitted {
                into.insert(hash);
            }
        });
    }
}

/// Registers each of `metrics` with `labels` in the current recorder.
fn register_each(metrics: &[MetricDefinition], labels: &[Label]) -> Box<[Handle]> {
    metrics::with_recorder(|r| {
        metrics
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

impl MetricGroup {
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
                    // One per event, or a measurement's whole value (token counts): a
                    // negative or fractional value adds its floor, at least 0.
                    (MetricKind::Counter, Handle::Counter(c)) => c.increment(value as u64),
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
pub struct MetricsHandler {
    dispatcher: Dispatcher,
    ids: Vec<String>,
    /// Per event handled (in the order of `ids`): the event and its metric groups, with the
    /// label sets they resolved, kept across [`MetricsHandler::pause`] and `resume`.
    routes: Mutex<Vec<(EventName, Arc<[MetricGroup]>)>>,
    overflowed: Arc<AtomicU64>,
}

impl std::fmt::Debug for MetricsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandler")
            .field("ids", &self.ids)
            .field("overflowed", &self.overflowed())
            .finish_non_exhaustive()
    }
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
        // One admission per operation (event family) and label list.
        let mut admissions: Vec<(OperationKey<'_>, Arc<Admission>)> = Vec::new();
        let mut by_event: Vec<(EventName, Vec<MetricGroup>)> = Vec::new();
        for def in &definitions {
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
                    None => {
                        let key = (family(event), def.tag_list());
                        let admission = match admissions.iter().find(|(k, _)| *k == key) {
                            Some((_, admission)) => admission.clone(),
                            None => {
                                let admission = Arc::new(Admission {
                                    max: max_series_per_metric.max(1),
                                    sets: Mutex::new(AdmittedSets::default()),
                                    overflowed: overflowed.clone(),
                                });
                                admissions.push((key, admission.clone()));
                                admission
                            }
                        };
                        groups.push(MetricGroup {
                            tags: def.tag_list().to_vec(),
                            metrics: vec![def.clone()],
                            companions: Vec::new(),
                            cache: AppendOnlyMap::new(),
                            admission,
                            overflow: OnceLock::new(),
                        })
                    }
                }
            }
        }
        // A group's companions: the operation's metrics with its labels that it does not feed.
        for (event, groups) in &mut by_event {
            let event_family = family(event);
            for group in groups.iter_mut() {
                group.companions = definitions
                    .iter()
                    .filter(|def| {
                        def.tag_list() == group.tags.as_slice()
                            && !group.metrics.iter().any(|m| m.name() == def.name())
                            && def.events().iter().all(|e| family(e) == event_family)
                    })
                    .cloned()
                    .collect();
            }
        }
        let handler = MetricsHandler {
            dispatcher: dispatcher.clone(),
            ids: by_event
                .iter()
                .map(|(event, _)| format!("{id}:{event}"))
                .collect(),
            routes: Mutex::new(
                by_event
                    .into_iter()
                    .map(|(event, groups)| (event, groups.into()))
                    .collect(),
            ),
            overflowed,
        };
        handler.resume()?;
        Ok(handler)
    }

    /// Detaches the handlers but keeps the label sets they resolved, so that
    /// [`MetricsHandler::resume`] starts where they left off. Events emitted meanwhile are not
    /// recorded. Pausing a paused handler does nothing.
    pub fn pause(&self) {
        self.dispatcher.detach_all(&self.ids);
    }

    /// Attaches the handlers again (all in one step) after [`MetricsHandler::pause`]; errors
    /// if one of the ids is attached (by this handler, not paused, or by another).
    pub fn resume(&self) -> Result<(), MetricsError> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        self.dispatcher.attach_all(self.attachments(&routes))?;
        Ok(())
    }

    /// One dispatcher handler per event, over its groups.
    fn attachments(&self, routes: &[(EventName, Arc<[MetricGroup]>)]) -> Vec<Attachment> {
        self.ids
            .iter()
            .zip(routes)
            .map(|(id, (event, groups))| {
                let reads = reads_of(groups);
                let groups = groups.clone();
                Attachment::new(id.clone(), event.clone(), move |e: &Event<'_>| {
                    for group in groups.iter() {
                        group.record(e);
                    }
                })
                .reading(reads)
            })
            .collect()
    }

    /// Lets go of the label sets no event used during the last `idle_sweeps` calls (at least
    /// 1): their handles are released, so the recorders may drop their series (the window
    /// does in [`crate::WindowedRecorder::sweep`] once they are idle), and they no longer
    /// count against the cap. A label set used again later is registered again, into the same
    /// series if it still exists. Returns how many cached label sets were let go.
    ///
    /// The handlers are replaced in the dispatcher in one step (no event is missed); a thread
    /// keeps the old ones, and their handles, until its next event on the dispatcher. Call it
    /// periodically: `Telemetry` does, every quarter of `idle_timeout_ms`.
    pub fn sweep(&self, idle_sweeps: u32) -> usize {
        let idle_sweeps = idle_sweeps.max(1);
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut released = 0;
        let mut changed = false;
        // Per admission touched, the label sets some group let go of.
        let mut admissions: Vec<(Arc<Admission>, HashSet<u64>)> = Vec::new();
        for (_, groups) in routes.iter_mut() {
            let pruned: Vec<Option<(MetricGroup, Vec<u64>)>> =
                groups.iter().map(|g| g.pruned(idle_sweeps)).collect();
            if pruned.iter().all(Option::is_none) {
                continue;
            }
            changed = true;
            let mut new_groups = Vec::with_capacity(groups.len());
            for (old, pruned) in groups.iter().zip(pruned) {
                match pruned {
                    Some((group, idle)) => {
                        released += idle.len();
                        match admissions
                            .iter_mut()
                            .find(|(a, _)| Arc::ptr_eq(a, &group.admission))
                        {
                            Some((_, hashes)) => hashes.extend(idle),
                            None => admissions
                                .push((group.admission.clone(), idle.into_iter().collect())),
                        }
                        new_groups.push(group);
                    }
                    None => new_groups.push(old.copy()),
                }
            }
            *groups = new_groups.into();
        }
        if !changed {
            return 0;
        }
        // An admission frees the label sets let go of that no group of its operation still
        // caches; sets admitted meanwhile (by events on the old groups) stay admitted.
        for (admission, let_go) in &admissions {
            let mut kept = HashSet::new();
            for (_, groups) in routes.iter() {
                for group in groups.iter() {
                    if Arc::ptr_eq(&group.admission, admission) {
                        group.admitted_hashes(&mut kept);
                    }
                }
            }
            let mut sets = admission.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.admitted
                .retain(|hash| kept.contains(hash) || !let_go.contains(hash));
        }
        // Replaced while `routes` is held, so two sweeps cannot install their groups out of
        // order (`resume` takes the same locks in the same order).
        self.dispatcher.replace_all(self.attachments(&routes));
        drop(routes);
        released
    }

    /// How many distinct label sets went to an overflow series because their operation was
    /// full. Each is counted once while the folded sets remembered per operation (16 times
    /// the cap, at least 4 096) have room; past that, each event of a further one counts.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// The dispatcher handler ids, one per event.
    pub fn handler_ids(&self) -> &[String] {
        &self.ids
    }

    /// Detaches every handler (those already detached, by hand or after a panic, are skipped).
    pub fn detach(self) {
        self.pause();
    }
}
