//! [`CapturingRecorder`]: a recorder that keeps every call it receives, to assert on in tests.

use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One call a [`CapturingRecorder`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// The metric name.
    pub name: String,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// What was done.
    pub op: Op,
}

/// An operation on a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `counter.increment(n)`.
    Increment(u64),
    /// `counter.absolute(n)`.
    Absolute(u64),
    /// `gauge.increment(x)`.
    GaugeIncrement(f64),
    /// `gauge.decrement(x)`.
    GaugeDecrement(f64),
    /// `gauge.set(x)`.
    GaugeSet(f64),
    /// `histogram.record(x)`.
    Record(f64),
    /// `describe_*` with a unit and text.
    Describe(Option<Unit>, String),
}

type Sink = Arc<Mutex<Vec<Captured>>>;

/// Keeps every call, in order. Use it with `metrics::with_local_recorder` to see exactly what
/// a piece of code emitted.
///
/// ```
/// use dspex_telemetry_metrics::testing::{CapturingRecorder, Op};
/// let recorder = CapturingRecorder::default();
/// metrics::with_local_recorder(&recorder, || metrics::counter!("jobs_total", "queue" => "a").increment(2));
/// let calls = recorder.captured();
/// assert_eq!(calls[0].name, "jobs_total");
/// assert_eq!(calls[0].labels, [("queue".to_owned(), "a".to_owned())]);
/// assert_eq!(calls[0].op, Op::Increment(2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CapturingRecorder {
    sink: Sink,
}

impl CapturingRecorder {
    /// Every call so far.
    pub fn captured(&self) -> Vec<Captured> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls on metric `name`.
    pub fn of(&self, name: &str) -> Vec<Captured> {
        self.captured()
            .into_iter()
            .filter(|c| c.name == name)
            .collect()
    }

    /// Forgets everything captured.
    pub fn clear(&self) {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn handle(&self, key: &Key) -> Arc<Handle> {
        Arc::new(Handle {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            sink: self.sink.clone(),
        })
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                name: key.as_str().to_owned(),
                labels: Vec::new(),
                op: Op::Describe(unit, text.to_string()),
            });
    }
}

struct Handle {
    name: String,
    labels: Vec<(String, String)>,
    sink: Sink,
}

impl Handle {
    fn push(&self, op: Op) {
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Captured {
                name: self.name.clone(),
                labels: self.labels.clone(),
                op,
            });
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(Op::Increment(value));
    }
    fn absolute(&self, value: u64) {
        self.push(Op::Absolute(value));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.push(Op::GaugeIncrement(value));
    }
    fn decrement(&self, value: f64) {
        self.push(Op::GaugeDecrement(value));
    }
    fn set(&self, value: f64) {
        self.push(Op::GaugeSet(value));
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(Op::Record(value));
    }
}

impl Recorder for CapturingRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}
