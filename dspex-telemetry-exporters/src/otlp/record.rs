//! A span record as bytes in a thread's buffer, and back as `SpanData` on the collector.
//!
//! The caller's thread only copies: ids, times and the attribute bytes, length-prefixed, into
//! a buffer it reuses. Everything that allocates (strings, `KeyValue`s, the `SpanData`)
//! happens on the collector thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// A map on foldhash: the collector looks up every span's keys and short values, and
/// SipHash (the standard map's, made against collision attacks) was a quarter of decoding a
/// record. The keys come from our own process's spans.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dspex_telemetry_core::{SpanKind, SpanRecord, SpanStatus, Value};
use opentelemetry::trace::{Event, SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// Longest text kept of one attribute value or error message; longer ones are cut (on a
/// character boundary) so one span cannot fill a buffer.
const MAX_TEXT: usize = 4096;
/// Longest attribute key kept (its length is one byte).
const MAX_KEY: usize = 255;
/// Most attributes kept of one span.
const MAX_ATTRIBUTES: usize = 128;

const FLAG_PARENT: u8 = 1;
const FLAG_REMOTE_PARENT: u8 = 2;
const FLAG_ERROR: u8 = 4;
const FLAG_CORRELATION: u8 = 8;
const FLAG_TRACESTATE: u8 = 16;
const FLAG_EVENTS: u8 = 32;
const FLAG_RESOURCE: u8 = 64;
/// The metadata's attributes may name a key twice (the span's start and its end both had
/// some): the later one is the span's. The span's thread copies them as they are; the
/// collector drops what a later one replaces.
const FLAG_REPEATS: u8 = 128;

/// Most resource attributes kept of a span from another process.
const MAX_RESOURCE: usize = 32;

/// Most events kept of one span, and attributes of one event.
const MAX_EVENTS: usize = 32;
const MAX_EVENT_ATTRIBUTES: usize = 32;

/// Where an attribute came from: the span's metadata (exported as `dspex.<key>`) or what the
/// code set (under its own name).
const FROM_METADATA: u8 = 0;
const FROM_CODE: u8 = 1;

const STR: u8 = 0;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 3;

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes into memory that may be uninitialised (a ring's free space): each item is one
/// bounds check, then plain stores. A write that does not fit is skipped and marks the cursor
/// `overflowed` (the record is then written again through a buffer of its exact size).
///
/// Invariant: `at <= buf.len()`, and every byte before `at` has been written.
struct Cursor<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    at: usize,
    overflowed: bool,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        Cursor {
            buf,
            at: 0,
            overflowed: false,
        }
    }

    /// The next `n` bytes, which the caller must write, all of them.
    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<Out> {
        if n > self.buf.len() - self.at {
            self.overflowed = true;
            return None;
        }
        // SAFETY: `at + n <= buf.len()`, so the `n` bytes from `at` are inside `buf`.
        let to = unsafe { self.buf.as_mut_ptr().add(self.at) }.cast::<u8>();
        self.at += n;
        Some(Out(to, n))
    }

    // SAFETY (each `put` below): the offsets and lengths written add up to what was taken.
    #[inline(always)]
    fn array<const N: usize>(&mut self, bytes: [u8; N]) {
        if let Some(to) = self.take(N) {
            unsafe { to.put(0, &bytes) };
        }
    }

    #[inline(always)]
    fn bytes(&mut self, bytes: &[u8]) {
        if let Some(to) = self.take(bytes.len()) {
            unsafe { to.put(0, bytes) };
        }
    }

    #[inline(always)]
    fn text(&mut self, text: &str) {
        let text = text.as_bytes();
        if let Some(to) = self.take(4 + text.len()) {
            unsafe {
                to.put(0, &(text.len() as u32).to_le_bytes());
                to.put(4, text);
            }
        }
    }

    /// One attribute, with one bounds check for all its parts: a byte for its origin and
    /// the value's tag, the key's length (a byte) and bytes, then the value (a text's length,
    /// two bytes, and bytes).
    #[inline(always)]
    fn attribute(&mut self, origin: u8, key: &str, value: &Value<'_>) {
        let key = cut(key, MAX_KEY).as_bytes();
        let k = key.len();
        let head = |to: Out, tag: u8| unsafe {
            to.put(0, &[origin << 4 | tag, k as u8]);
            to.put(2, key);
        };
        match value {
            Value::Str(text) => {
                let text = cut(text, MAX_TEXT).as_bytes();
                let Some(to) = self.take(4 + k + text.len()) else {
                    return;
                };
                head(to, STR);
                unsafe {
                    to.put(2 + k, &(text.len() as u16).to_le_bytes());
                    to.put(4 + k, text);
                }
            }
            Value::Int(i) => {
                let Some(to) = self.take(10 + k) else { return };
                head(to, INT);
                unsafe { to.put(2 + k, &i.to_le_bytes()) };
            }
            Value::Float(f) => {
                let Some(to) = self.take(10 + k) else { return };
                head(to, FLOAT);
                unsafe { to.put(2 + k, &f.to_le_bytes()) };
            }
            Value::Bool(b) => {
                let Some(to) = self.take(3 + k) else { return };
                head(to, BOOL);
                unsafe { to.put(2 + k, &[u8::from(*b)]) };
            }
        }
    }

    /// Writes `bytes` over what was written at `at` (a length filled in afterwards).
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(to) = self.buf.get_mut(at..at + bytes.len()) {
            for (to, from) in to.iter_mut().zip(bytes) {
                to.write(*from);
            }
        }
    }
}

/// `n` bytes the cursor handed out at a pointer, to be written with [`Out::put`].
#[derive(Clone, Copy)]
struct Out(*mut u8, usize);

impl Out {
    /// Copies `from` to `at`. Most texts of a span (keys, module and function names, name
    /// segments) are a few bytes long: those are copied with two overlapping fixed-size moves
    /// instead of a call to `memcpy`, which costs more than the copy itself at that size.
    ///
    /// # Safety
    ///
    /// `at + from.len()` is at most the length handed out.
    #[inline(always)]
    unsafe fn put(self, at: usize, from: &[u8]) {
        let n = from.len();
        debug_assert!(at + n <= self.1, "a write outside what was taken");
        let (to, from) = (self.0.wrapping_add(at), from.as_ptr());
        // SAFETY: `to` is valid for `n` bytes (the caller's promise, and `take` handed out
        // bytes inside the cursor's buffer); `from` is valid for `n` bytes and cannot overlap
        // `to` (a shared borrow against the cursor's exclusive one); each copy below stays
        // within the first `n` bytes of both.
        unsafe {
            if n > 16 {
                std::ptr::copy_nonoverlapping(from, to, n);
            } else if n >= 8 {
                std::ptr::copy_nonoverlapping(from, to, 8);
                std::ptr::copy_nonoverlapping(from.add(n - 8), to.add(n - 8), 8);
            } else if n >= 4 {
                std::ptr::copy_nonoverlapping(from, to, 4);
                std::ptr::copy_nonoverlapping(from.add(n - 4), to.add(n - 4), 4);
            } else {
                for i in 0..n {
                    *to.add(i) = *from.add(i);
                }
            }
        }
    }
}

/// The bytes [`Cursor::attribute`] writes.
#[inline(always)]
fn attribute_len(key: &str, value: &Value<'_>) -> usize {
    2 + cut(key, MAX_KEY).len()
        + match value {
            Value::Str(s) => 2 + cut(s, MAX_TEXT).len(),
            Value::Int(_) | Value::Float(_) => 8,
            Value::Bool(_) => 1,
        }
}

fn kind_byte(kind: SpanKind) -> u8 {
    match kind {
        SpanKind::Internal => 0,
        SpanKind::Server => 1,
        SpanKind::Client => 2,
        SpanKind::Producer => 3,
        SpanKind::Consumer => 4,
    }
}

/// The attributes a record keeps, at most [`MAX_ATTRIBUTES`]: the metadata's two parts as
/// they are (the collector merges them: see [`FLAG_REPEATS`]), then what the code set.
#[inline(always)]
fn for_each_kept<'s>(span: &'s SpanRecord<'_>, mut f: impl FnMut(u8, &'s str, &'s Value<'s>)) {
    let mut left = MAX_ATTRIBUTES;
    span.metadata.for_each_unmerged(|k, v| {
        if left > 0 {
            left -= 1;
            f(FROM_METADATA, k, v)
        }
    });
    span.attributes.iter().for_each(|(k, v)| {
        if left > 0 {
            left -= 1;
            f(FROM_CODE, k, v)
        }
    });
}

/// The length of `tracestate`'s members written `key=value,…` (at most 32 members of at most
/// 513 bytes).
fn tracestate_len(tracestate: &dspex_telemetry_core::TraceState) -> usize {
    tracestate
        .iter()
        .map(|(k, v)| k.len() + 1 + v.len() + 1)
        .sum::<usize>()
        - 1
}

/// The events a record keeps ([`MAX_EVENTS`]), each with its kept attributes
/// ([`MAX_EVENT_ATTRIBUTES`]).
fn for_each_event<'s>(
    span: &'s SpanRecord<'_>,
    mut f: impl FnMut(&'s str, u64, &mut dyn FnMut(&mut dyn FnMut(&'s str, &'s Value<'s>))),
) {
    for event in span.events.iter().take(MAX_EVENTS) {
        f(cut(event.name, 256), event.unix_ns, &mut |each| {
            event
                .attributes
                .iter()
                .take(MAX_EVENT_ATTRIBUTES)
                .for_each(|(k, v)| each(k, v))
        });
    }
}

/// Bytes of the header: ids, flags, kind and times.
const HEADER: usize = 16 + 8 + 8 + 3 + 8 + 8;

/// How many bytes [`encode_into`] writes for `span`.
pub(crate) fn encoded_len(span: &SpanRecord<'_>) -> usize {
    let mut len = HEADER + 4 + span.name.len() + 2;
    if let SpanStatus::Error { kind, message } = span.status {
        len += 8 + cut(kind, 256).len() + cut(message, MAX_TEXT).len();
    }
    if let Some(id) = span.correlation_id {
        len += 4 + cut(id.as_str(), 256).len();
    }
    if !span.tracestate.is_empty() {
        len += 4 + tracestate_len(span.tracestate);
    }
    for_each_kept(span, |_, key, value| len += attribute_len(key, value));
    if !span.resource.is_empty() {
        len += 4 + 2;
        for (key, value) in span.resource.iter().take(MAX_RESOURCE) {
            len += attribute_len(key, value);
        }
    }
    if !span.events.is_empty() {
        len += 2;
        for_each_event(span, |name, _, attributes| {
            len += 4 + name.len() + 8 + 2;
            attributes(&mut |key, value| len += attribute_len(key, value));
        });
    }
    len
}

/// Writes `span` at the start of `buf`, which may be uninitialised: the bytes written (each
/// of them, from the first, initialised), or `None` if `buf` is too short (see
/// [`encoded_len`]).
pub(crate) fn encode_into(span: &SpanRecord<'_>, buf: &mut [MaybeUninit<u8>]) -> Option<usize> {
    let mut flags = 0;
    if span.parent_span_id.is_some() {
        flags |= FLAG_PARENT;
    }
    if span.parent_is_remote {
        flags |= FLAG_REMOTE_PARENT;
    }
    if matches!(span.status, SpanStatus::Error { .. }) {
        flags |= FLAG_ERROR;
    }
    if span.correlation_id.is_some() {
        flags |= FLAG_CORRELATION;
    }
    if !span.tracestate.is_empty() {
        flags |= FLAG_TRACESTATE;
    }
    if !span.events.is_empty() {
        flags |= FLAG_EVENTS;
    }
    if !span.resource.is_empty() {
        flags |= FLAG_RESOURCE;
    }
    if span.metadata.may_repeat() {
        flags |= FLAG_REPEATS;
    }
    let mut out = Cursor::new(buf);
    // The header, then the name in parts (`dspex` `.` `bridge` …) as one length-prefixed
    // text, each with one bounds check.
    let name_len = span.name.len();
    if let Some(to) = out.take(HEADER + 4) {
        // SAFETY: the offsets and lengths add up to `HEADER + 4`.
        unsafe {
            to.put(0, &span.trace_id.to_bytes());
            to.put(16, &span.span_id.to_bytes());
            to.put(24, &span.parent_span_id.map_or([0; 8], |p| p.to_bytes()));
            to.put(32, &[flags, span.flags.bits(), kind_byte(span.kind)]);
            to.put(35, &span.start_unix_ns.to_le_bytes());
            to.put(43, &span.end_unix_ns.to_le_bytes());
            to.put(HEADER, &(name_len as u32).to_le_bytes());
        }
    }
    if let Some(to) = out.take(name_len) {
        let mut at = 0;
        span.name.for_each_part(|part| {
            let part = part.as_bytes();
            if at + part.len() <= name_len {
                // SAFETY: checked just now.
                unsafe { to.put(at, part) };
                at += part.len();
            }
        });
        // Every byte taken is written, or the record is not used.
        out.overflowed |= at != name_len;
    }
    if let SpanStatus::Error { kind, message } = span.status {
        out.text(cut(kind, 256));
        out.text(cut(message, MAX_TEXT));
    }
    if let Some(id) = span.correlation_id {
        out.text(cut(id.as_str(), 256));
    }
    if !span.tracestate.is_empty() {
        out.array((tracestate_len(span.tracestate) as u32).to_le_bytes());
        let mut first = true;
        for (key, value) in span.tracestate.iter() {
            if !first {
                out.bytes(b",");
            }
            first = false;
            out.bytes(key.as_bytes());
            out.bytes(b"=");
            out.bytes(value.as_bytes());
        }
    }
    let count = (span.metadata.unmerged_len() + span.attributes.len()).min(MAX_ATTRIBUTES) as u16;
    out.array(count.to_le_bytes());
    // As `for_each_kept`, with one closure fewer between the loop and the write.
    let mut left = usize::from(count);
    span.metadata.for_each_unmerged(|key, value| {
        if left > 0 {
            left -= 1;
            out.attribute(FROM_METADATA, key, value);
        }
    });
    for (key, value) in span.attributes.iter().take(left) {
        out.attribute(FROM_CODE, key, value);
    }
    if !span.resource.is_empty() {
        // Its length first: the collector looks the section up whole among the resources it
        // knows (a worker sends the same one with every span) and reads it only when new.
        let at = out.at;
        out.array([0; 4]);
        out.array((span.resource.len().min(MAX_RESOURCE) as u16).to_le_bytes());
        for (key, value) in span.resource.iter().take(MAX_RESOURCE) {
            out.attribute(FROM_CODE, key, value);
        }
        let len = (out.at - at - 4) as u32;
        out.patch(at, &len.to_le_bytes());
    }
    if !span.events.is_empty() {
        out.array((span.events.len().min(MAX_EVENTS) as u16).to_le_bytes());
        for_each_event(span, |name, unix_ns, attributes| {
            out.text(name);
            out.array(unix_ns.to_le_bytes());
            let mut count = 0u16;
            attributes(&mut |_, _| count += 1);
            out.array(count.to_le_bytes());
            attributes(&mut |key, value| out.attribute(FROM_CODE, key, value));
        });
    }
    (!out.overflowed).then_some(out.at)
}

/// Appends `span` to `out`.
#[cfg(test)]
pub(crate) fn encode(span: &SpanRecord<'_>, out: &mut Vec<u8>) {
    let len = encoded_len(span);
    out.reserve(len);
    assert_eq!(
        encode_into(span, &mut out.spare_capacity_mut()[..len]),
        Some(len),
        "encoded_len is exact"
    );
    // SAFETY: `encode_into` wrote all `len` bytes (it returned `Some(len)`).
    unsafe { out.set_len(out.len() + len) };
}

/// Reads what [`encode`] wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
    fn byte(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn text(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    /// A count (`u16`) and that many attributes, as the code set them.
    fn attributes(&mut self, interned: &mut Interned) -> Option<Vec<KeyValue>> {
        let count = u16::from_le_bytes(self.array()?);
        let mut attributes = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (origin, key, value) = self.attribute(interned)?;
            attributes.push(KeyValue::new(interned.key(origin, key), value));
        }
        Some(attributes)
    }
    /// What [`Cursor::attribute`] wrote: its origin, key and value.
    fn attribute(
        &mut self,
        interned: &mut Interned,
    ) -> Option<(u8, &'a str, opentelemetry::Value)> {
        let (head, key) = self.attribute_key()?;
        let value = match head & 15 {
            STR => {
                let len = u16::from_le_bytes(self.array()?);
                interned.value(std::str::from_utf8(self.take(usize::from(len))?).ok()?)
            }
            INT => opentelemetry::Value::I64(i64::from_le_bytes(self.array()?)),
            FLOAT => opentelemetry::Value::F64(f64::from_le_bytes(self.array()?)),
            BOOL => opentelemetry::Value::Bool(self.byte()? != 0),
            _ => return None,
        };
        Some((head >> 4, key, value))
    }
    /// An attribute's head byte and key.
    fn attribute_key(&mut self) -> Option<(u8, &'a str)> {
        let [head, k] = self.array()?;
        Some((head, std::str::from_utf8(self.take(usize::from(k))?).ok()?))
    }
    /// An attribute's origin and key, its value skipped.
    fn attribute_skipped(&mut self) -> Option<(u8, &'a str)> {
        let (head, key) = self.attribute_key()?;
        let len = match head & 15 {
            STR => usize::from(u16::from_le_bytes(self.array()?)),
            INT | FLOAT => 8,
            BOOL => 1,
            _ => return None,
        };
        self.take(len)?;
        Some((head >> 4, key))
    }
}

fn time(unix_ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns)
}

/// Texts the collector has seen before, shared instead of allocated again: attribute keys,
/// short attribute values (module and function names, result types) and span names. Each
/// table is bounded; past its bound a text is allocated as it comes.
#[derive(Default)]
pub(crate) struct Interned {
    /// Per origin: metadata keys (as `dspex.<key>`) and the code's own.
    keys: [FastMap<Box<str>, opentelemetry::Key>; 2],
    values: FastMap<Box<str>, Arc<str>>,
}

/// Entries per table, at most.
const INTERNED: usize = 4096;
/// Values longer than this are not shared (ids, messages, arguments).
const INTERNED_VALUE_LEN: usize = 64;
/// Distinct span names kept for the life of the process (names are few: one per span kind of
/// the code); others are allocated per span.
const STATIC_NAMES: usize = 1024;

static NAMES: Mutex<Option<FastMap<Box<str>, &'static str>>> = Mutex::new(None);

/// The span name as `SpanData` holds it: shared when it was seen before.
fn span_name(name: &str) -> Cow<'static, str> {
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let names = names.get_or_insert_with(FastMap::default);
    if let Some(known) = names.get(name) {
        return Cow::Borrowed(known);
    }
    if names.len() >= STATIC_NAMES {
        return Cow::Owned(name.to_owned());
    }
    // Bounded by STATIC_NAMES for the whole process.
    let kept: &'static str = Box::leak(name.into());
    names.insert(name.into(), kept);
    Cow::Borrowed(kept)
}

impl Interned {
    fn key(&mut self, origin: u8, key: &str) -> opentelemetry::Key {
        let table = &mut self.keys[usize::from(origin == FROM_CODE)];
        if let Some(k) = table.get(key) {
            return k.clone();
        }
        let made: opentelemetry::Key = match origin {
            FROM_CODE => Arc::<str>::from(key).into(),
            _ => Arc::<str>::from(format!("dspex.{key}")).into(),
        };
        if table.len() < INTERNED {
            table.insert(key.into(), made.clone());
        }
        made
    }

    fn value(&mut self, text: &str) -> opentelemetry::Value {
        if text.len() > INTERNED_VALUE_LEN {
            return opentelemetry::Value::from(text.to_owned());
        }
        if let Some(v) = self.values.get(text) {
            return opentelemetry::Value::from(v.clone());
        }
        let shared: Arc<str> = text.into();
        if self.values.len() < INTERNED {
            self.values.insert(text.into(), shared.clone());
        }
        opentelemetry::Value::from(shared)
    }
}

/// Adds one attribute of a record: what the code set under its own name; the metadata as
/// `dspex.<key>`, and under OpenTelemetry's semantic conventions where one applies (the
/// Python function a bridge call runs, and the error's type).
fn keep_attribute(
    attributes: &mut Vec<KeyValue>,
    interned: &mut Interned,
    failed: bool,
    origin: u8,
    key: &str,
    value: opentelemetry::Value,
) {
    if origin == FROM_METADATA {
        match key {
            "module" => attributes.push(KeyValue::new("code.namespace", value.clone())),
            "function" => attributes.push(KeyValue::new("code.function", value.clone())),
            "kind" if failed => attributes.push(KeyValue::new("error.type", value.clone())),
            _ => {}
        }
    }
    attributes.push(KeyValue::new(interned.key(origin, key), value));
}

/// The `SpanData` of one encoded record, with the resource section of the process it ran in
/// when that is not this one (else empty: read it with [`decode_resource`]); `None` if the
/// bytes are not one (never expected).
pub(crate) fn decode<'a>(
    bytes: &'a [u8],
    scope: &InstrumentationScope,
    interned: &mut Interned,
) -> Option<(SpanData, &'a [u8])> {
    let mut r = Reader(bytes);
    let trace_id: [u8; 16] = r.array()?;
    let span_id: [u8; 8] = r.array()?;
    let parent: [u8; 8] = r.array()?;
    let flags = r.byte()?;
    let trace_flags = r.byte()?;
    let kind = match r.byte()? {
        1 => opentelemetry::trace::SpanKind::Server,
        2 => opentelemetry::trace::SpanKind::Client,
        3 => opentelemetry::trace::SpanKind::Producer,
        4 => opentelemetry::trace::SpanKind::Consumer,
        _ => opentelemetry::trace::SpanKind::Internal,
    };
    let start = r.u64()?;
    let end = r.u64()?;
    let name = span_name(r.text()?);
    let failed = flags & FLAG_ERROR != 0;
    let (error_kind, error_message) = if failed {
        (Some(r.text()?), Some(r.text()?))
    } else {
        (None, None)
    };
    let correlation = match flags & FLAG_CORRELATION != 0 {
        true => Some(r.text()?),
        false => None,
    };
    let trace_state = match flags & FLAG_TRACESTATE != 0 {
        // Written from a valid tracestate: it reads back as one.
        true => r.text()?.parse().unwrap_or_default(),
        false => TraceState::default(),
    };
    let correlation = match correlation {
        Some(id) => interned.value(id),
        None => {
            // The trace id in hex, without the formatting machinery.
            let hex = dspex_telemetry_core::TraceId::from_bytes(trace_id).hex_bytes();
            opentelemetry::Value::from(std::str::from_utf8(&hex).unwrap_or_default().to_owned())
        }
    };
    let count = u16::from_le_bytes(r.array()?);
    let mut attributes = Vec::with_capacity(usize::from(count) + 3);
    attributes.push(KeyValue::new("dspex.correlation_id", correlation));
    // A metadata key that comes again later is the span's end replacing its start's: only the
    // last is kept. The keys are compared first, on a copy of the reader (at most
    // `MAX_ATTRIBUTES`, one bit each).
    let mut replaced = 0u128;
    if flags & FLAG_REPEATS != 0 {
        let (mut ahead, mut keys) = (Reader(r.0), [None; MAX_ATTRIBUTES]);
        for j in 0..usize::from(count).min(MAX_ATTRIBUTES) {
            let (origin, key) = ahead.attribute_skipped()?;
            if origin == FROM_METADATA {
                for (i, earlier) in keys[..j].iter().enumerate() {
                    if *earlier == Some(key) {
                        replaced |= 1 << i;
                    }
                }
                keys[j] = Some(key);
            }
        }
    }
    for i in 0..usize::from(count) {
        let (origin, key, value) = r.attribute(interned)?;
        if i >= MAX_ATTRIBUTES || replaced >> i & 1 == 0 {
            keep_attribute(&mut attributes, interned, failed, origin, key, value);
        }
    }
    let resource = match flags & FLAG_RESOURCE != 0 {
        true => {
            let len = u32::from_le_bytes(r.array()?) as usize;
            r.take(len)?
        }
        false => &[],
    };
    let mut events = SpanEvents::default();
    if flags & FLAG_EVENTS != 0 {
        let count = u16::from_le_bytes(r.array()?);
        for _ in 0..count {
            let name = r.text()?.to_owned();
            let at = r.u64()?;
            let attributes = r.attributes(interned)?;
            events
                .events
                .push(Event::new(name, time(at), attributes, 0));
        }
    }
    // An exception the span's own events describe is not described twice.
    let described = events.events.iter().any(|e| e.name == "exception");
    let status = match (error_kind, error_message) {
        (Some(kind), Some(message)) => {
            let message = if message.is_empty() {
                "failed"
            } else {
                message
            };
            if !described {
                events.events.push(Event::new(
                    "exception",
                    time(end),
                    vec![
                        KeyValue::new("exception.type", kind.to_owned()),
                        KeyValue::new("exception.message", message.to_owned()),
                    ],
                    0,
                ));
            }
            Status::error(message.to_owned())
        }
        _ => Status::Unset,
    };
    let span = SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace_id),
            SpanId::from_bytes(span_id),
            TraceFlags::new(trace_flags),
            false,
            trace_state,
        ),
        parent_span_id: if flags & FLAG_PARENT != 0 {
            SpanId::from_bytes(parent)
        } else {
            SpanId::INVALID
        },
        parent_span_is_remote: flags & FLAG_REMOTE_PARENT != 0,
        span_kind: kind,
        name,
        start_time: time(start),
        end_time: time(end.max(start)),
        attributes,
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    Some((span, resource))
}

/// The attributes of a resource section that [`decode`] returned.
pub(crate) fn decode_resource(section: &[u8], interned: &mut Interned) -> Option<Vec<KeyValue>> {
    Reader(section).attributes(interned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dspex_telemetry_core::{
        CorrelationId, Metadata, SpanAttributes, SpanEventRecord, SpanMetadata, SpanName,
        TraceFlags,
    };

    static NO_METADATA: Metadata<'static> = Metadata::new();
    static NO_TRACESTATE: dspex_telemetry_core::TraceState =
        dspex_telemetry_core::TraceState::new();

    /// A trace's root span named `name`, from 1 µs to 3 µs after the epoch, with nothing else
    /// set: each test sets what it checks.
    fn span(name: SpanName<'_>) -> SpanRecord<'_> {
        SpanRecord {
            trace_id: dspex_telemetry_core::TraceId::random(),
            span_id: dspex_telemetry_core::SpanId::random(),
            parent_span_id: None,
            parent_is_remote: false,
            flags: TraceFlags::SAMPLED,
            tracestate: &NO_TRACESTATE,
            name,
            kind: SpanKind::Internal,
            start_unix_ns: 1_000,
            end_unix_ns: 3_000,
            status: SpanStatus::Unset,
            metadata: SpanMetadata::one(&NO_METADATA),
            attributes: SpanAttributes::EMPTY,
            correlation_id: None,
            events: &[],
            resource: SpanAttributes::EMPTY,
        }
    }

    #[test]
    fn a_record_comes_back_as_the_span_it_was() {
        let metadata = Metadata::new()
            .with("module", "dspy")
            .with("attempt", 2)
            .with("score", 0.5)
            .with("ok", false)
            .with("reason", "x".repeat(10_000))
            .with("k".repeat(300), 1);
        let name = dspex_telemetry_core::catalog::BRIDGE_CALL.prefix().clone();
        let correlation = CorrelationId::parse("order-7").unwrap();
        let tracestate =
            dspex_telemetry_core::TraceState::parse(["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"])
                .unwrap();
        let record = SpanRecord {
            parent_span_id: Some(dspex_telemetry_core::SpanId::random()),
            parent_is_remote: true,
            tracestate: &tracestate,
            kind: SpanKind::Client,
            status: SpanStatus::Error {
                kind: "timeout",
                message: "é".repeat(3_000).leak(),
            },
            metadata: SpanMetadata::one(&metadata),
            correlation_id: Some(&correlation),
            ..span(SpanName::Prefix(&name))
        };
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let scope = InstrumentationScope::builder("t").build();
        let mut interned = Interned::default();
        let span = decode(&bytes, &scope, &mut interned).unwrap().0;
        assert_eq!(
            span.span_context.trace_state().header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        let again = decode(&bytes, &scope, &mut interned).unwrap().0;
        assert_eq!(
            again.attributes, span.attributes,
            "shared texts decode the same"
        );
        assert_eq!(span.name, "dspex.bridge.call");
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Client);
        assert_eq!(
            span.span_context.trace_id().to_bytes(),
            record.trace_id.to_bytes()
        );
        assert_eq!(
            span.parent_span_id.to_bytes(),
            record.parent_span_id.unwrap().to_bytes()
        );
        assert!(span.parent_span_is_remote);
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(attr("dspex.correlation_id"), Some("order-7".into()));
        assert_eq!(attr("code.namespace"), Some("dspy".into()));
        assert_eq!(attr("dspex.attempt"), Some(opentelemetry::Value::I64(2)));
        assert_eq!(attr("dspex.ok"), Some(opentelemetry::Value::Bool(false)));
        assert_eq!(attr("dspex.reason").unwrap().as_str().len(), MAX_TEXT);
        let long_key = format!("dspex.{}", "k".repeat(MAX_KEY));
        assert_eq!(
            attr(&long_key),
            Some(opentelemetry::Value::I64(1)),
            "a key is cut at 255 bytes"
        );
        let Status::Error { description } = &span.status else {
            panic!("{:?}", span.status)
        };
        assert!(description.len() <= MAX_TEXT && description.starts_with('é'));
        assert_eq!(span.events.events[0].name, "exception");
    }

    #[test]
    fn a_key_the_end_sets_again_replaces_the_start_s_once_decoded() {
        let start = Metadata::new()
            .with("module", "dspy")
            .with("function", "Predict")
            .with("kind", "first");
        let end = Metadata::new()
            .with("function", "ChainOfThought")
            .with("worker_id", 1);
        let name = dspex_telemetry_core::catalog::BRIDGE_CALL.prefix().clone();
        let code = [("kind".to_string(), Value::from("code"))];
        let record = SpanRecord {
            kind: SpanKind::Client,
            metadata: SpanMetadata::new(&start, &end),
            attributes: SpanAttributes::new(&code),
            ..span(SpanName::Prefix(&name))
        };
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let scope = InstrumentationScope::builder("t").build();
        let span = decode(&bytes, &scope, &mut Interned::default()).unwrap().0;
        let got: Vec<String> = span
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str() != "dspex.correlation_id")
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        assert_eq!(
            got,
            [
                "code.namespace=dspy",
                "dspex.module=dspy",
                "dspex.kind=first",
                "code.function=ChainOfThought",
                "dspex.function=ChainOfThought",
                "dspex.worker_id=1",
                "kind=code",
            ],
            "the end's value, once; what the code set keeps its own name"
        );
        let merged: Vec<&str> = record.metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(merged, ["module", "kind", "function", "worker_id"]);
    }

    #[test]
    fn events_come_back_with_their_attributes_and_an_exception_is_told_once() {
        let exception = Metadata::new()
            .with("exception.type", "ValueError")
            .with("exception.message", "no record");
        let retry = Metadata::new().with("attempt", 2);
        let events = [
            SpanEventRecord {
                name: "retry",
                unix_ns: 1_500,
                attributes: &retry,
            },
            SpanEventRecord {
                name: "exception",
                unix_ns: 2_500,
                attributes: &exception,
            },
        ];
        let many: Vec<SpanEventRecord<'_>> = (0..100)
            .map(|i| SpanEventRecord {
                name: "tick",
                unix_ns: i,
                attributes: &retry,
            })
            .collect();
        let named = [("llm.model_name".to_string(), Value::from("gpt"))];
        let resource = [("process.pid".to_string(), Value::from(4242i64))];
        let mut record = SpanRecord {
            status: SpanStatus::Error {
                kind: "error",
                message: "ValueError: no record",
            },
            attributes: SpanAttributes::new(&named),
            events: &events,
            resource: SpanAttributes::new(&resource),
            ..span(SpanName::Text("Lookup.forward"))
        };
        let scope = InstrumentationScope::builder("t").build();
        let mut interned = Interned::default();
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let span = decode(&bytes, &scope, &mut interned).unwrap().0;
        let got: Vec<(&str, u64, Vec<String>)> = span
            .events
            .iter()
            .map(|e| {
                let ns = e.timestamp.duration_since(SystemTime::UNIX_EPOCH).unwrap();
                let attrs = e
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, kv.value))
                    .collect();
                (e.name.as_ref(), ns.as_nanos() as u64, attrs)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("retry", 1_500, vec!["attempt=2".to_string()]),
                (
                    "exception",
                    2_500,
                    vec![
                        "exception.type=ValueError".to_string(),
                        "exception.message=no record".to_string()
                    ]
                ),
            ],
            "the span's own exception event, not a second one"
        );
        assert!(
            span.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "llm.model_name"),
            "attributes under their own names"
        );
        record.events = &many;
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let span = decode(&bytes, &scope, &mut interned).unwrap().0;
        assert_eq!(
            span.events.len(),
            MAX_EVENTS + 1,
            "kept events and the exception"
        );
        let (_, section) = decode(&bytes, &scope, &mut interned).unwrap();
        let resource = decode_resource(section, &mut interned).unwrap();
        assert_eq!(
            resource,
            [KeyValue::new("process.pid", 4242i64)],
            "the process's resource comes along"
        );
    }
}
