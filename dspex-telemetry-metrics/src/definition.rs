//! Metric definitions in the spirit of Elixir's `telemetry_metrics`: which event feeds which
//! metric, with which measurement, unit, labels and description.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use dspex_telemetry_core::{Event, EventName, Value};

use crate::window::ValueRange;

/// How a metric aggregates what it is fed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// Counts events (`metrics` counter).
    Counter,
    /// Adds up a measurement (`metrics` gauge, incremented).
    Sum,
    /// Keeps the last value of a measurement (`metrics` gauge, set).
    LastValue,
    /// Quantiles of a measurement (`metrics` histogram; exported as a summary).
    Summary,
    /// A histogram with explicit bucket boundaries (`metrics` histogram; exported with these
    /// buckets so it aggregates across instances).
    Distribution {
        /// Upper bounds of the buckets, ascending, in the metric's unit.
        buckets: Vec<f64>,
    },
}

/// Units a measurement is in or a metric is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds.
    Nanosecond,
    /// Microseconds.
    Microsecond,
    /// Milliseconds.
    Millisecond,
    /// Seconds.
    Second,
    /// Bytes.
    Byte,
    /// A plain count.
    Count,
}

impl Unit {
    /// Nanoseconds in one of this unit, for time units.
    fn nanos(self) -> Option<f64> {
        match self {
            Unit::Nanosecond => Some(1.0),
            Unit::Microsecond => Some(1e3),
            Unit::Millisecond => Some(1e6),
            Unit::Second => Some(1e9),
            Unit::Byte | Unit::Count => None,
        }
    }

    /// The `metrics` crate's unit.
    pub fn to_metrics(self) -> metrics::Unit {
        match self {
            Unit::Nanosecond => metrics::Unit::Nanoseconds,
            Unit::Microsecond => metrics::Unit::Microseconds,
            Unit::Millisecond => metrics::Unit::Milliseconds,
            Unit::Second => metrics::Unit::Seconds,
            Unit::Byte => metrics::Unit::Bytes,
            Unit::Count => metrics::Unit::Count,
        }
    }

    /// The unit's name in HELP texts.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Nanosecond => "nanoseconds",
            Unit::Microsecond => "microseconds",
            Unit::Millisecond => "milliseconds",
            Unit::Second => "seconds",
            Unit::Byte => "bytes",
            Unit::Count => "count",
        }
    }
}

/// Where a metric's value comes from.
#[derive(Clone)]
pub enum Measurement {
    /// A measurement of the event, by key (`duration`, `queue_time`, `size`, …).
    Key(&'static str),
    /// A fixed value (counters count 1 per event).
    Constant(f64),
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measurement::Key(k) => write!(f, "Key({k:?})"),
            Measurement::Constant(c) => write!(f, "Constant({c})"),
        }
    }
}

/// Where a label's value comes from. Only these sources exist, so no metadata key can become
/// a label unless a definition names it.
#[derive(Debug, Clone, PartialEq)]
pub enum TagSource {
    /// A metadata value, verbatim.
    Metadata(&'static str),
    /// Several metadata values joined by a separator (`module` `.` `function` → `method`).
    Join(&'static [&'static str], &'static str),
    /// The event name's last segment (`set` / `get`, `stop` / `exception`).
    Phase,
    /// A fixed value.
    Constant(&'static str),
    /// A metadata value mapped to a label value, for example `success: true` → `"ok"`. The
    /// map runs once per distinct value, when its series is first registered.
    Mapped(&'static str, ValueMap),
}

/// A function from a metadata value (or its absence) to a label value.
#[derive(Clone, Copy)]
pub struct ValueMap(pub fn(Option<&Value<'_>>) -> Cow<'static, str>);

impl fmt::Debug for ValueMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueMap(..)")
    }
}

impl PartialEq for ValueMap {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

/// One label of a metric: its name and where its value comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// The label's name.
    pub name: &'static str,
    /// Its value's source.
    pub source: TagSource,
}

/// Metadata keys that never become labels: unbounded or secret.
pub const FORBIDDEN_TAGS: &[&str] = &[
    "args",
    "session_id",
    "correlation_id",
    "trace_id",
    "span_id",
    "user_id",
];

/// A predicate on events: keep (or drop) them before they reach the metric.
pub type EventFilter = Arc<dyn Fn(&Event<'_>) -> bool + Send + Sync>;

/// A metric fed by events.
///
/// ```
/// use dspex_telemetry_core::catalog;
/// use dspex_telemetry_metrics::{MetricDefinition, TagSource, Unit};
///
/// let duration = MetricDefinition::distribution(
///     "dspex_bridge_call_method_duration",
///     [catalog::BRIDGE_CALL.stop().clone(), catalog::BRIDGE_CALL.exception().clone()],
///     &[1.0, 10.0, 100.0, 1000.0],
/// )
/// .measurement("duration")
/// .unit(Unit::Nanosecond, Unit::Millisecond)
/// .tag("method", TagSource::Join(&["module", "function"], "."))
/// .description("Bridge call duration");
/// assert_eq!(duration.help(), "Bridge call duration (milliseconds).");
/// ```
#[derive(Clone)]
pub struct MetricDefinition {
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) events: Vec<EventName>,
    pub(crate) measurement: Measurement,
    pub(crate) from: Unit,
    pub(crate) to: Unit,
    pub(crate) tags: Vec<Tag>,
    pub(crate) keep: Option<EventFilter>,
    pub(crate) description: String,
    pub(crate) range: Option<ValueRange>,
}

impl fmt::Debug for MetricDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricDefinition")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("events", &self.events)
            .field("measurement", &self.measurement)
            .field("unit", &(self.from, self.to))
            .field("tags", &self.tags)
            .field("filtered", &self.keep.is_some())
            .finish()
    }
}

/// Why a definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The name is not a valid Prometheus metric name.
    #[error("metric name {0:?} must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidName(String),
    /// A label would be unbounded or secret.
    #[error("metric {metric}: {tag:?} can never be a label (unbounded or secret)")]
    ForbiddenTag {
        /// The metric.
        metric: String,
        /// The label or metadata key.
        tag: String,
    },
    /// Bucket boundaries are not ascending finite numbers.
    #[error("metric {0}: buckets must be finite and strictly ascending")]
    InvalidBuckets(String),
    /// A declared range is not `0 < min < max`, both finite.
    #[error("metric {0}: a range needs 0 < min < max, both finite")]
    InvalidRange(String),
    /// The units cannot be converted (time into bytes, say).
    #[error("metric {0}: cannot convert {1:?} into {2:?}")]
    UnitMismatch(String, Unit, Unit),
    /// No event feeds the metric.
    #[error("metric {0} names no event")]
    NoEvents(String),
}

impl MetricDefinition {
    fn new(
        name: &str,
        kind: MetricKind,
        events: impl IntoIterator<Item = EventName>,
        measurement: Measurement,
    ) -> Self {
        MetricDefinition {
            name: name.to_owned(),
            kind,
            events: events.into_iter().collect(),
            measurement,
            from: Unit::Count,
            to: Unit::Count,
            tags: Vec::new(),
            keep: None,
            description: String::new(),
            range: None,
        }
    }

    /// Counts the events; with [`MetricDefinition::measurement`], adds up a measurement that
    /// counts something (tokens), as whole numbers.
    pub fn counter(name: &str, events: impl IntoIterator<Item = EventName>) -> Self {
        Self::new(
            name,
            MetricKind::Counter,
            events,
            Measurement::Constant(1.0),
        )
    }

    /// Adds up a measurement (set it with [`MetricDefinition::measurement`]).
    pub fn sum(name: &str, events: impl IntoIterator<Item = EventName>) -> Self {
        Self::new(name, MetricKind::Sum, events, Measurement::Constant(1.0))
    }

    /// Keeps a measurement's last value.
    pub fn last_value(name: &str, events: impl IntoIterator<Item = EventName>) -> Self {
        Self::new(
            name,
            MetricKind::LastValue,
            events,
            Measurement::Constant(0.0),
        )
    }

    /// Quantiles of a measurement.
    pub fn summary(name: &str, events: impl IntoIterator<Item = EventName>) -> Self {
        Self::new(
            name,
            MetricKind::Summary,
            events,
            Measurement::Constant(0.0),
        )
    }

    /// A histogram of a measurement with explicit bucket boundaries (in the reported unit).
    pub fn distribution(
        name: &str,
        events: impl IntoIterator<Item = EventName>,
        buckets: &[f64],
    ) -> Self {
        Self::new(
            name,
            MetricKind::Distribution {
                buckets: buckets.to_vec(),
            },
            events,
            Measurement::Constant(0.0),
        )
    }

    /// The values the sliding window tells apart within its accuracy, in the metric's unit
    /// (a histogram's; ignored by other kinds). Without it a distribution's range is
    /// [`ValueRange::around_buckets`], a summary's the window's default.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.range = Some(ValueRange { min, max });
        self
    }

    /// The range its window uses, if it has one of its own: declared with
    /// [`MetricDefinition::range`], else around a distribution's buckets.
    pub fn value_range(&self) -> Option<ValueRange> {
        self.range.or(match &self.kind {
            MetricKind::Distribution { buckets } => ValueRange::around_buckets(buckets),
            _ => None,
        })
    }

    /// Takes the value from measurement `key`.
    pub fn measurement(mut self, key: &'static str) -> Self {
        self.measurement = Measurement::Key(key);
        self
    }

    /// Converts the measurement from unit `from` to unit `to` (ns → ms for durations).
    pub fn unit(mut self, from: Unit, to: Unit) -> Self {
        self.from = from;
        self.to = to;
        self
    }

    /// Adds a label.
    pub fn tag(mut self, name: &'static str, source: TagSource) -> Self {
        self.tags.push(Tag { name, source });
        self
    }

    /// Adds labels taken verbatim from metadata keys of the same names.
    pub fn tags(mut self, keys: &[&'static str]) -> Self {
        for key in keys {
            self.tags.push(Tag {
                name: key,
                source: TagSource::Metadata(key),
            });
        }
        self
    }

    /// Keeps only the events `keep` accepts.
    pub fn keep(mut self, keep: impl Fn(&Event<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.keep = Some(Arc::new(keep));
        self
    }

    /// Drops the events `drop` accepts.
    pub fn drop_if(self, drop: impl Fn(&Event<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.keep(move |e| !drop(e))
    }

    /// The description; the HELP text adds the unit.
    pub fn description(mut self, text: &str) -> Self {
        self.description = text.to_owned();
        self
    }

    /// The metric's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it aggregates.
    pub fn kind(&self) -> &MetricKind {
        &self.kind
    }

    /// The events that feed it.
    pub fn events(&self) -> &[EventName] {
        &self.events
    }

    /// Its labels.
    pub fn tag_list(&self) -> &[Tag] {
        &self.tags
    }

    /// The unit it is reported in.
    pub fn reported_unit(&self) -> Unit {
        self.to
    }

    /// The HELP text: the description and the unit.
    pub fn help(&self) -> String {
        let text = self.description.trim_end_matches('.');
        format!("{text} ({}).", self.to.name())
    }

    /// Checks the definition: name, labels, buckets, units.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let name_ok = !self.name.is_empty()
            && self.name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            });
        if !name_ok {
            return Err(DefinitionError::InvalidName(self.name.clone()));
        }
        if self.events.is_empty() {
            return Err(DefinitionError::NoEvents(self.name.clone()));
        }
        for tag in &self.tags {
            let sources: Vec<&str> = match &tag.source {
                TagSource::Metadata(k) => vec![k],
                TagSource::Join(keys, _) => keys.to_vec(),
                TagSource::Mapped(k, _) => vec![k],
                TagSource::Phase | TagSource::Constant(_) => vec![],
            };
            if let Some(bad) = std::iter::once(tag.name)
                .chain(sources)
                .find(|k| FORBIDDEN_TAGS.contains(k))
            {
                return Err(DefinitionError::ForbiddenTag {
                    metric: self.name.clone(),
                    tag: bad.to_owned(),
                });
            }
        }
        if let MetricKind::Distribution { buckets } = &self.kind {
            let ok = !buckets.is_empty()
                && buckets.iter().all(|b| b.is_finite())
                && buckets.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                return Err(DefinitionError::InvalidBuckets(self.name.clone()));
            }
        }
        if let Some(range) = self.range {
            let ok =
                range.min >= f64::MIN_POSITIVE && range.max > range.min && range.max.is_finite();
            if !ok {
                return Err(DefinitionError::InvalidRange(self.name.clone()));
            }
        }
        if self.from != self.to && (self.from.nanos().is_none() || self.to.nanos().is_none()) {
            return Err(DefinitionError::UnitMismatch(
                self.name.clone(),
                self.from,
                self.to,
            ));
        }
        Ok(())
    }

    /// The factor from the measurement's unit to the reported one.
    pub(crate) fn factor(&self) -> f64 {
        match (self.from.nanos(), self.to.nanos()) {
            (Some(from), Some(to)) => from / to,
            _ => 1.0,
        }
    }

    /// The value this event contributes, in the reported unit; `None` if the event lacks the
    /// measurement.
    #[inline]
    pub(crate) fn value(&self, event: &Event<'_>) -> Option<f64> {
        match &self.measurement {
            Measurement::Constant(c) => Some(*c),
            Measurement::Key(k) => event
                .measurements()
                .get(k)
                .map(|n| n.as_f64() * self.factor()),
        }
    }
}

/// The raw parts of one label's value in `event`, for the handle cache to key on.
#[inline]
pub(crate) fn for_each_tag_part<'a>(
    tag: &'a Tag,
    event: &'a Event<'_>,
    mut f: impl FnMut(TagPart<'a>),
) {
    match &tag.source {
        TagSource::Metadata(k) => f(TagPart::of(event.metadata().get(k))),
        TagSource::Join(keys, _) => {
            for k in *keys {
                f(TagPart::of(event.metadata().get(k)));
            }
        }
        TagSource::Phase => f(TagPart::Str(event.name().segments().last().unwrap_or(""))),
        TagSource::Constant(c) => f(TagPart::Str(c)),
        TagSource::Mapped(k, _) => f(TagPart::of(event.metadata().get(k))),
    }
}

/// One raw part of a label value, borrowed from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TagPart<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Missing,
}

impl<'a> TagPart<'a> {
    fn of(value: Option<&'a Value<'_>>) -> Self {
        match value {
            Some(Value::Str(s)) => TagPart::Str(s),
            Some(Value::Int(i)) => TagPart::Int(*i),
            Some(Value::Float(x)) => TagPart::Float(*x),
            Some(Value::Bool(b)) => TagPart::Bool(*b),
            None => TagPart::Missing,
        }
    }

    pub(crate) fn render(self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            TagPart::Str(s) => out.push_str(s),
            TagPart::Int(i) => {
                let _ = write!(out, "{i}");
            }
            TagPart::Float(x) => {
                let _ = write!(out, "{x}");
            }
            TagPart::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            TagPart::Missing => out.push_str("unknown"),
        }
    }
}

/// The label values of `def` for `event`, rendered (on a cache miss only).
pub(crate) fn render_labels(
    def: &MetricDefinition,
    event: &Event<'_>,
) -> Vec<(&'static str, String)> {
    def.tags
        .iter()
        .map(|tag| {
            if let TagSource::Mapped(key, map) = &tag.source {
                return (tag.name, (map.0)(event.metadata().get(key)).into_owned());
            }
            let mut value = String::new();
            let sep = match &tag.source {
                TagSource::Join(_, sep) => *sep,
                _ => "",
            };
            let mut first = true;
            for_each_tag_part(tag, event, |part| {
                if !first {
                    value.push_str(sep);
                }
                first = false;
                part.render(&mut value);
            });
            (tag.name, value)
        })
        .collect()
}
