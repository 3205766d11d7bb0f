//! StatsD: the spec's `{:statsd, host:, port:}` backend. A `metrics::Recorder` that keeps
//! counter deltas, gauge values and timing samples in memory (atomics, a bounded sample
//! buffer) and a task that sends them over UDP on an interval, in packets of at most
//! `max_packet_bytes`, and once more at shutdown.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use metrics_util::storage::AtomicBucket;
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::series_map::{SeriesKind, SeriesMap, update_f64};

/// How labels travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagStyle {
    /// Folded into the name, for plain (Etsy) StatsD: `name.label_value…`.
    #[default]
    Folded,
    /// DogStatsD tags: `name:1|c|#label:value,…`.
    DogStatsd,
}

/// The StatsD backend's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdConfig {
    /// The server's host (default `127.0.0.1`).
    pub host: String,
    /// The server's UDP port (default 8125).
    pub port: u16,
    /// Put before every name, with a dot (default none).
    pub prefix: Option<String>,
    /// How labels travel (default folded into the name).
    pub tags: TagStyle,
    /// How often to send (default 10 s).
    pub flush_interval: Duration,
    /// The largest datagram sent (default 1 432 bytes: fits an Ethernet MTU with room for
    /// headers).
    pub max_packet_bytes: usize,
    /// Timing samples kept between two flushes, over all series; more are dropped and counted
    /// (default 100 000).
    pub max_buffered_samples: usize,
}

impl Default for StatsdConfig {
    fn default() -> Self {
        StatsdConfig {
            host: "127.0.0.1".into(),
            port: 8125,
            prefix: None,
            tags: TagStyle::Folded,
            flush_interval: Duration::from_secs(10),
            max_packet_bytes: 1432,
            max_buffered_samples: 100_000,
        }
    }
}

/// Why the StatsD backend could not start; each names the configuration key at fault.
#[derive(Debug, thiserror::Error)]
pub enum StatsdError {
    /// A key's value is unusable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// What the backend has done: for its own dashboards and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsdStats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Datagrams the system refused to send (no server, say); their lines are lost.
    pub send_errors: u64,
    /// Timing samples dropped because `max_buffered_samples` were waiting.
    pub samples_dropped: u64,
}

#[derive(Default)]
struct Counters {
    packets_sent: AtomicU64,
    send_errors: AtomicU64,
}

struct Shared {
    config: StatsdConfig,
    series: SeriesMap<Series>,
    /// Shared with every timer (which must not hold `Shared`: it holds them).
    budget: Arc<SampleBudget>,
    counters: Counters,
}

/// How many timing samples may wait, over all series, and how many were dropped.
struct SampleBudget {
    max: usize,
    buffered: AtomicUsize,
    dropped: AtomicU64,
}

enum Series {
    Counter(CounterCell),
    Gauge(GaugeCell),
    Timer(TimerCell),
}

struct CounterCell {
    delta: AtomicU64,
}

struct GaugeCell {
    bits: AtomicU64,
    dirty: AtomicBool,
}

struct TimerCell {
    budget: Arc<SampleBudget>,
    /// Lock-free (as the Prometheus exporter keeps its histogram samples).
    samples: AtomicBucket<f64>,
}

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        if let Series::Counter(c) = self {
            c.delta.fetch_add(value, Ordering::Relaxed);
        }
    }
    fn absolute(&self, value: u64) {
        // StatsD counters are deltas; an absolute value has no meaning there. Sent as is.
        if let Series::Counter(c) = self {
            c.delta.store(value, Ordering::Relaxed);
        }
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl Series {
    fn update(&self, f: impl Fn(f64) -> f64) {
        if let Series::Gauge(g) = self {
            update_f64(&g.bits, f);
            g.dirty.store(true, Ordering::Release);
        }
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        let Series::Timer(t) = self else { return };
        let budget = &t.budget;
        if !value.is_finite() {
            return;
        }
        if budget.buffered.fetch_add(1, Ordering::Relaxed) >= budget.max {
            budget.buffered.fetch_sub(1, Ordering::Relaxed);
            budget.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.samples.push(value);
    }
}

/// A `metrics::Recorder` for StatsD. Install it (alone or in a fanout next to the window and
/// Prometheus), and run [`StatsdExporter`] to send what it holds.
#[derive(Clone)]
pub struct StatsdRecorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StatsdRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsdRecorder")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl StatsdRecorder {
    /// A recorder for `config`; errors name the key at fault.
    pub fn new(config: StatsdConfig) -> Result<Self, StatsdError> {
        let invalid = |key: &'static str, reason: &str| StatsdError::Invalid {
            key,
            reason: reason.into(),
        };
        if config.host.is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        if config.port == 0 {
            return Err(invalid("port", "must not be 0"));
        }
        if config.flush_interval.is_zero() {
            return Err(invalid("flush_interval", "must be above zero"));
        }
        if !(64..=65_000).contains(&config.max_packet_bytes) {
            return Err(invalid("max_packet_bytes", "must be between 64 and 65 000"));
        }
        if config
            .prefix
            .as_deref()
            .is_some_and(|p| p.is_empty() || sanitize(p) != p)
        {
            return Err(invalid(
                "prefix",
                "must be non-empty, of letters, digits, `_`, `-` and `.`",
            ));
        }
        let max_buffered = config.max_buffered_samples;
        Ok(StatsdRecorder {
            shared: Arc::new(Shared {
                config,
                series: SeriesMap::default(),
                budget: Arc::new(SampleBudget {
                    max: max_buffered,
                    buffered: AtomicUsize::new(0),
                    dropped: AtomicU64::new(0),
                }),
                counters: Counters::default(),
            }),
        })
    }

    /// What has been sent, refused and dropped so far.
    pub fn stats(&self) -> StatsdStats {
        let c = &self.shared.counters;
        StatsdStats {
            packets_sent: c.packets_sent.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            samples_dropped: self.shared.budget.dropped.load(Ordering::Relaxed),
        }
    }

    fn series(&self, kind: SeriesKind, key: &Key, make: impl FnOnce() -> Series) -> Arc<Series> {
        self.shared.series.get_or_create(kind, key, make)
    }

    /// The lines due now (counter deltas since the last call, gauges that changed, timing
    /// samples), taken from the cells.
    /// Takes every pending value and writes it as a line into datagrams of at most `max`
    /// bytes (a line longer than that goes alone): each line is written once, in place, with
    /// no text of its own.
    fn drain_packets(&self, max: usize) -> Vec<String> {
        let mut packer = Packer {
            packets: Vec::new(),
            current: String::new(),
            max,
        };
        for (key, series) in self.shared.series.entries() {
            let (name, tags) = self.name_and_tags(&key);
            let mut line = |value: Number, kind: &str| packer.line(&name, value, kind, &tags);
            match &*series {
                Series::Counter(c) => {
                    let delta = c.delta.swap(0, Ordering::Relaxed);
                    if delta > 0 {
                        line(Number::Count(delta), "c");
                    }
                }
                Series::Gauge(g) => {
                    if g.dirty.swap(false, Ordering::Acquire) {
                        let value = f64::from_bits(g.bits.load(Ordering::Relaxed));
                        if value < 0.0 {
                            // A leading sign means "change by"; set 0 first to mean "is".
                            line(Number::Int(0), "g");
                        }
                        line(Number::of(value), "g");
                    }
                }
                Series::Timer(t) => {
                    t.samples.clear_with(|samples| {
                        self.shared
                            .budget
                            .buffered
                            .fetch_sub(samples.len(), Ordering::Relaxed);
                        for v in samples {
                            line(Number::of(*v), "ms");
                        }
                    });
                }
            }
        }
        packer.finish()
    }

    fn name_and_tags(&self, key: &Key) -> (String, String) {
        let config = &self.shared.config;
        let mut name = String::new();
        if let Some(prefix) = &config.prefix {
            name.push_str(prefix);
            name.push('.');
        }
        name.push_str(&sanitize(key.name()));
        let mut tags = String::new();
        match config.tags {
            TagStyle::Folded => {
                for label in key.labels() {
                    name.push('.');
                    name.push_str(&sanitize(label.value()));
                }
            }
            TagStyle::DogStatsd => {
                for (i, label) in key.labels().enumerate() {
                    tags.push_str(if i == 0 { "|#" } else { "," });
                    let _ = write!(
                        tags,
                        "{}:{}",
                        sanitize(label.key()),
                        sanitize(label.value())
                    );
                }
            }
        }
        (name, tags)
    }
}

/// Letters, digits, `_`, `-` and `.` stay; anything else (`:`, `|`, `@`, `#`, `,`, spaces,
/// newlines) would break the line format and becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A value as a line shows it: whole numbers without a fraction.
#[derive(Clone, Copy)]
enum Number {
    Count(u64),
    Int(i64),
    Float(f64),
}

impl Number {
    fn of(v: f64) -> Number {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            Number::Int(v as i64)
        } else {
            Number::Float(v)
        }
    }
}

/// Datagrams being filled, line by line.
struct Packer {
    packets: Vec<String>,
    current: String,
    max: usize,
}

impl Packer {
    /// Adds `name:value|kind<tags>` to the current datagram, or to a new one when it would
    /// pass `max`.
    fn line(&mut self, name: &str, value: Number, kind: &str, tags: &str) {
        let start = self.current.len();
        if start > 0 {
            self.current.push('\n');
        }
        let at = self.current.len();
        self.current.push_str(name);
        self.current.push(':');
        let _ = match value {
            Number::Count(v) => write!(self.current, "{v}"),
            Number::Int(v) => write!(self.current, "{v}"),
            Number::Float(v) => write!(self.current, "{v}"),
        };
        self.current.push('|');
        self.current.push_str(kind);
        self.current.push_str(tags);
        if start > 0 && self.current.len() > self.max {
            // Too long with what is there already: the datagram goes, the line starts the next.
            let line = self.current[at..].to_owned();
            self.current.truncate(start);
            self.packets
                .push(std::mem::replace(&mut self.current, line));
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.packets.push(self.current);
        }
        self.packets
    }
}

impl Recorder for StatsdRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(SeriesKind::Counter, key, || {
            Series::Counter(CounterCell {
                delta: AtomicU64::new(0),
            })
        }))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(SeriesKind::Gauge, key, || {
            Series::Gauge(GaugeCell {
                bits: AtomicU64::new(0f64.to_bits()),
                dirty: AtomicBool::new(false),
            })
        }))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let budget = self.shared.budget.clone();
        Histogram::from_arc(self.series(SeriesKind::Histogram, key, || {
            Series::Timer(TimerCell {
                budget,
                samples: AtomicBucket::new(),
            })
        }))
    }
}

/// Sends what a [`StatsdRecorder`] holds every `flush_interval`, and once more at
/// [`StatsdExporter::shutdown`]. A server that is absent costs `send_errors`, never the
/// recording threads: they only touch atomics and a short buffer.
#[derive(Debug)]
pub struct StatsdExporter {
    recorder: StatsdRecorder,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl StatsdExporter {
    /// Resolves the server's address and starts the sending task on the current tokio
    /// runtime.
    pub async fn start(recorder: StatsdRecorder) -> Result<Self, StatsdError> {
        let config = &recorder.shared.config;
        let target = tokio::net::lookup_host((config.host.as_str(), config.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| StatsdError::Invalid {
                key: "host",
                reason: format!("{:?} does not resolve", config.host),
            })?;
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let local = if target.ip().is_loopback() {
            SocketAddr::new(target.ip(), 0)
        } else {
            local
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| StatsdError::Invalid {
                key: "host",
                reason: format!("cannot open a UDP socket towards {target}: {e}"),
            })?;
        let (stop, mut stopped) = watch::channel(false);
        let sender = recorder.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(sender.shared.config.flush_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => sender.send(&socket, target).await,
                    _ = stopped.changed() => {
                        sender.send(&socket, target).await;
                        return;
                    }
                }
            }
        });
        Ok(StatsdExporter {
            recorder,
            stop,
            task: Some(task),
        })
    }

    /// What has been sent, refused and dropped so far.
    pub fn stats(&self) -> StatsdStats {
        self.recorder.stats()
    }

    /// Sends what is held once more, then stops.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StatsdExporter {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl StatsdRecorder {
    async fn send(&self, socket: &UdpSocket, target: SocketAddr) {
        let counters = &self.shared.counters;
        for packet in self.drain_packets(self.shared.config.max_packet_bytes) {
            match socket.send_to(packet.as_bytes(), target).await {
                Ok(_) => counters.packets_sent.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if counters.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%target, error = %e, "StatsD packets cannot be sent; counting them in send_errors");
                    }
                    0
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_stay_within_the_limit_and_keep_every_line() {
        let mut packer = Packer {
            packets: Vec::new(),
            current: String::new(),
            max: 200,
        };
        let mut lines = Vec::new();
        for i in 0..500 {
            let name = format!("metric_{i}");
            let value = if i % 2 == 0 {
                i as f64
            } else {
                i as f64 + 0.25
            };
            packer.line(&name, Number::of(value), "c", "");
            lines.push(format!("{name}:{value}|c"));
        }
        let long = "x".repeat(300);
        packer.line(&long, Number::of(1.0), "ms", "|#k:v");
        lines.push(format!("{long}:1|ms|#k:v"));
        let packets = packer.finish();
        assert!(packets[..packets.len() - 1].iter().all(|p| p.len() <= 200));
        assert_eq!(
            packets.last(),
            lines.last(),
            "a line longer than a datagram goes alone"
        );
        let back: Vec<&str> = packets.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back, lines.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn names_and_tags_cannot_break_the_line_format() {
        let recorder = StatsdRecorder::new(StatsdConfig {
            prefix: Some("app".into()),
            tags: TagStyle::DogStatsd,
            ..StatsdConfig::default()
        })
        .unwrap();
        let key = Key::from_parts("a:b|c", vec![metrics::Label::new("k#", "v,w\nx")]);
        let (name, tags) = recorder.name_and_tags(&key);
        assert_eq!(name, "app.a_b_c");
        assert_eq!(tags, "|#k_:v_w_x");
    }

    static META: Metadata<'static> = Metadata::new("t", metrics::Level::INFO, None);

    #[test]
    fn a_name_used_as_a_counter_and_as_a_histogram_sends_both() {
        let recorder = StatsdRecorder::new(StatsdConfig::default()).unwrap();
        let key = Key::from_name("dual");
        recorder.register_counter(&key, &META).increment(3);
        recorder.register_histogram(&key, &META).record(2.5);
        recorder.register_gauge(&key, &META).set(7.0);
        let packets = recorder.drain_packets(1432);
        let mut lines: Vec<&str> = packets.iter().flat_map(|p| p.split('\n')).collect();
        lines.sort();
        assert_eq!(lines, ["dual:2.5|ms", "dual:3|c", "dual:7|g"]);
    }

    #[test]
    fn a_dropped_recorder_is_freed_with_its_timers() {
        let recorder = StatsdRecorder::new(StatsdConfig::default()).unwrap();
        let timer = recorder.register_histogram(&Key::from_name("t"), &META);
        timer.record(1.0);
        drop(timer);
        let shared = Arc::downgrade(&recorder.shared);
        drop(recorder);
        assert!(
            shared.upgrade().is_none(),
            "a timer kept its recorder alive"
        );
    }
}
