//! The few OTLP protobuf messages the trace exporter sends, encoded by hand (field numbers from
//! `opentelemetry/proto/{collector/trace/v1,trace/v1,common/v1,resource/v1}`). A test decodes
//! them with the official Python decoders.

/// A resource's or a data point's attributes: string keys and values.
pub(crate) type StrAttributes = [(String, String)];

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanRecord {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_span_id: Option<[u8; 8]>,
    pub(crate) name: std::sync::Arc<str>,
    /// `SPAN_KIND_INTERNAL` = 1, `SPAN_KIND_CLIENT` = 3.
    pub(crate) kind: u64,
    pub(crate) start_unix_ns: u64,
    pub(crate) end_unix_ns: u64,
    /// The attributes, encoded already ([`Attributes`]): one buffer per span instead of a
    /// value per attribute, and nothing left to convert when the batch is sent.
    pub(crate) attributes: Vec<u8>,
    /// `None`: unset; `Some(message)`: error.
    pub(crate) error: Option<String>,
}

/// A span's attributes as the `Span.attributes` (field 9) `KeyValue`s of its encoding, written
/// as the span ends.
pub(crate) struct Attributes(Vec<u8>);

impl Attributes {
    /// Room for about `count` attributes.
    pub(crate) fn with_capacity(count: usize) -> Self {
        Attributes(Vec::with_capacity(count * 40))
    }

    /// The attribute `prefix` + `key` = `value`.
    pub(crate) fn push(
        &mut self,
        prefix: &str,
        key: &str,
        value: &dspex_telemetry_core::Value<'_>,
    ) {
        use dspex_telemetry_core::Value;
        match value {
            Value::Str(s) => key_string_value(&mut self.0, 9, prefix, key, s.as_bytes()),
            Value::Int(i) => self.push_any(prefix, key, |any| varint_field(any, 3, *i as u64)),
            Value::Float(x) => self.push_any(prefix, key, |any| fixed64(any, 4, x.to_bits())),
            Value::Bool(b) => self.push_any(prefix, key, |any| varint_field(any, 2, u64::from(*b))),
        }
    }

    /// The string attribute `key` = `value`.
    pub(crate) fn push_str(&mut self, key: &str, value: &[u8]) {
        key_string_value(&mut self.0, 9, "", key, value);
    }

    fn push_any(&mut self, prefix: &str, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        message(&mut self.0, 9, |kv| {
            key_bytes(kv, prefix, key);
            message(kv, 2, value);
        });
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        let (bytes, n) = varint_bytes(v);
        out.extend_from_slice(&bytes[..n]);
    }
}

/// `v` as a varint: the bytes, and how many of them are used.
fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let (mut bytes, mut n) = ([0u8; 10], 0);
    while v >= 0x80 {
        bytes[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    bytes[n] = v as u8;
    (bytes, n + 1)
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A length-delimited field whose body `build` writes in place: one byte is kept for the
/// length (enough below 128 bytes, the usual case), and a longer body moves right once to
/// make room for its length. No buffer per message.
fn message(out: &mut Vec<u8>, field: u32, build: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, 2);
    let at = out.len();
    out.push(0);
    build(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let (prefix, n) = varint_bytes(len as u64);
    out.resize(out.len() + n - 1, 0);
    out.copy_within(at + 1..at + 1 + len, at + n);
    out[at..at + n].copy_from_slice(&prefix[..n]);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

/// A `KeyValue` with a string value.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    key_string_value(out, field, "", k, v.as_bytes());
}

/// A `KeyValue` with a string value given as its UTF-8 bytes.
fn key_string_value(out: &mut Vec<u8>, field: u32, prefix: &str, k: &str, value: &[u8]) {
    message(out, field, |kv| {
        key_bytes(kv, prefix, k);
        message(kv, 2, |any| bytes_field(any, 1, value));
    });
}

/// A `KeyValue`'s key (field 1): `prefix` followed by `k`.
fn key_bytes(kv: &mut Vec<u8>, prefix: &str, k: &str) {
    key(kv, 1, 2);
    varint(kv, (prefix.len() + k.len()) as u64);
    kv.extend_from_slice(prefix.as_bytes());
    kv.extend_from_slice(k.as_bytes());
}

/// `ExportTraceServiceRequest` with one resource and one scope holding `spans`.
pub(crate) fn export_trace_request(
    resource: &StrAttributes,
    scope_name: &str,
    scope_version: &str,
    spans: &[SpanRecord],
) -> Vec<u8> {
    // About what a bridge-call span with six attributes takes, so the buffer seldom grows.
    let mut out = Vec::with_capacity(256 + spans.len() * 320);
    // resource_spans = 1
    message(&mut out, 1, |rs| {
        // resource = 1 { attributes = 1 }
        message(rs, 1, |r| {
            for (k, v) in resource {
                key_value(r, 1, k, v);
            }
        });
        // scope_spans = 2
        message(rs, 2, |ss| {
            // scope = 1 { name = 1, version = 2 }
            message(ss, 1, |scope| {
                bytes_field(scope, 1, scope_name.as_bytes());
                bytes_field(scope, 2, scope_version.as_bytes());
            });
            for span in spans {
                // spans = 2
                message(ss, 2, |sp| encode_span(sp, span));
            }
        });
    });
    out
}

fn encode_span(out: &mut Vec<u8>, span: &SpanRecord) {
    bytes_field(out, 1, &span.trace_id);
    bytes_field(out, 2, &span.span_id);
    if let Some(parent) = &span.parent_span_id {
        bytes_field(out, 4, parent);
    }
    bytes_field(out, 5, span.name.as_bytes());
    varint_field(out, 6, span.kind);
    fixed64(out, 7, span.start_unix_ns);
    fixed64(out, 8, span.end_unix_ns);
    out.extend_from_slice(&span.attributes);
    // status = 15 { message = 2, code = 3 (1 ok, 2 error) }
    if let Some(message_text) = &span.error {
        message(out, 15, |status| {
            bytes_field(status, 2, message_text.as_bytes());
            varint_field(status, 3, 2);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_every_length_carry_their_length_before_their_body() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = vec![0xee];
            message(&mut out, 2, |m| m.extend_from_slice(&body));
            let mut expected = vec![0xee];
            bytes_field(&mut expected, 2, &body);
            assert_eq!(out, expected, "a body of {len} bytes");
        }
        // Nested, both long.
        let mut out = Vec::new();
        message(&mut out, 1, |outer| {
            message(outer, 2, |inner| inner.extend_from_slice(&[7; 200]))
        });
        let mut inner = Vec::new();
        bytes_field(&mut inner, 2, &[7; 200]);
        let mut expected = Vec::new();
        bytes_field(&mut expected, 1, &inner);
        assert_eq!(out, expected);
    }

    #[test]
    fn varints_match_the_protobuf_examples() {
        for (v, bytes) in [
            (0u64, vec![0x00]),
            (1, vec![0x01]),
            (150, vec![0x96, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
        // A negative int64 takes ten bytes (two's complement), as protobuf requires.
        let mut attributes = Attributes::with_capacity(1);
        attributes.push("", "n", &dspex_telemetry_core::Value::Int(-1));
        assert_eq!(attributes.into_bytes().len(), 2 + 3 + 2 + 11);
    }
}

/// One data point's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PointValue {
    /// A counter's total (a monotonic cumulative sum).
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram: count, sum, min, max, bucket counts (one more than bounds), bounds.
    Histogram {
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
        counts: Vec<u64>,
        bounds: Vec<f64>,
    },
}

/// One metric (all of a name's label sets).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricRecord {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) unit: String,
    /// Label sets and values; all of one kind.
    pub(crate) points: Vec<(Vec<(String, String)>, PointValue)>,
}

/// `ExportMetricsServiceRequest` with one resource and one scope holding `metrics`, every
/// point cumulative since `start_unix_ns`, observed at `now_unix_ns`.
pub(crate) fn export_metrics_request(
    resource: &StrAttributes,
    scope_name: &str,
    scope_version: &str,
    metrics: &[MetricRecord],
    start_unix_ns: u64,
    now_unix_ns: u64,
) -> Vec<u8> {
    const CUMULATIVE: u64 = 2;
    let mut out = Vec::new();
    // resource_metrics = 1
    message(&mut out, 1, |rm| {
        message(rm, 1, |r| {
            for (k, v) in resource {
                key_value(r, 1, k, v);
            }
        });
        // scope_metrics = 2
        message(rm, 2, |sm| {
            message(sm, 1, |scope| {
                bytes_field(scope, 1, scope_name.as_bytes());
                bytes_field(scope, 2, scope_version.as_bytes());
            });
            for metric in metrics {
                // metrics = 2
                message(sm, 2, |m| {
                    bytes_field(m, 1, metric.name.as_bytes());
                    bytes_field(m, 2, metric.description.as_bytes());
                    bytes_field(m, 3, metric.unit.as_bytes());
                    let number_point =
                        |out: &mut Vec<u8>, attrs: &StrAttributes, value: f64, int: Option<u64>| {
                            // data_points = 1 (NumberDataPoint)
                            message(out, 1, |p| {
                                for (k, v) in attrs {
                                    key_value(p, 7, k, v);
                                }
                                fixed64(p, 2, start_unix_ns);
                                fixed64(p, 3, now_unix_ns);
                                match int {
                                    // as_int = 6 (sfixed64)
                                    Some(i) => fixed64(p, 6, i),
                                    // as_double = 4
                                    None => fixed64(p, 4, value.to_bits()),
                                }
                            });
                        };
                    match metric.points.first().map(|p| &p.1) {
                        Some(PointValue::Counter(_)) => {
                            // sum = 7 { data_points = 1, aggregation_temporality = 2, is_monotonic = 3 }
                            message(m, 7, |sum| {
                                for (attrs, value) in &metric.points {
                                    if let PointValue::Counter(total) = value {
                                        number_point(sum, attrs, 0.0, Some(*total));
                                    }
                                }
                                varint_field(sum, 2, CUMULATIVE);
                                varint_field(sum, 3, 1);
                            });
                        }
                        Some(PointValue::Gauge(_)) => {
                            // gauge = 5 { data_points = 1 }
                            message(m, 5, |gauge| {
                                for (attrs, value) in &metric.points {
                                    if let PointValue::Gauge(v) = value {
                                        number_point(gauge, attrs, *v, None);
                                    }
                                }
                            });
                        }
                        Some(PointValue::Histogram { .. }) => {
                            // histogram = 9 { data_points = 1, aggregation_temporality = 2 }
                            message(m, 9, |histogram| {
                                for (attrs, value) in &metric.points {
                                    let PointValue::Histogram {
                                        count,
                                        sum,
                                        min,
                                        max,
                                        counts,
                                        bounds,
                                    } = value
                                    else {
                                        continue;
                                    };
                                    message(histogram, 1, |p| {
                                        for (k, v) in attrs {
                                            key_value(p, 9, k, v);
                                        }
                                        fixed64(p, 2, start_unix_ns);
                                        fixed64(p, 3, now_unix_ns);
                                        fixed64(p, 4, *count);
                                        fixed64(p, 5, sum.to_bits());
                                        // bucket_counts = 6, explicit_bounds = 7: packed.
                                        let mut packed = Vec::with_capacity(counts.len() * 8);
                                        counts.iter().for_each(|c| {
                                            packed.extend_from_slice(&c.to_le_bytes())
                                        });
                                        bytes_field(p, 6, &packed);
                                        let mut packed = Vec::with_capacity(bounds.len() * 8);
                                        bounds.iter().for_each(|b| {
                                            packed.extend_from_slice(&b.to_bits().to_le_bytes())
                                        });
                                        bytes_field(p, 7, &packed);
                                        if *count > 0 {
                                            fixed64(p, 11, min.to_bits());
                                            fixed64(p, 12, max.to_bits());
                                        }
                                    });
                                }
                                varint_field(histogram, 2, CUMULATIVE);
                            });
                        }
                        None => {}
                    }
                });
            }
        });
    });
    out
}
