//! Measurements (numbers) and metadata (strings, integers, floats, booleans) of an event.
//!
//! Both keep their first entries inline, so the common handful costs no heap allocation.

use std::borrow::Cow;
use std::fmt;

use arrayvec::ArrayVec;

/// The first `N` entries inline, the rest on the heap. Unlike `smallvec`, covariant in `T`,
/// so events with borrowed strings of different lifetimes can be handed to handlers together.
#[derive(Debug, Clone, PartialEq)]
struct Entries<T, const N: usize> {
    head: ArrayVec<T, N>,
    tail: Vec<T>,
}

impl<T, const N: usize> Entries<T, N> {
    const fn new() -> Self {
        Entries {
            head: ArrayVec::new_const(),
            tail: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, value: T) {
        if let Err(full) = self.head.try_push(value) {
            self.tail.push(full.element());
        }
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.head.iter().chain(self.tail.iter())
    }

    /// The first entry that `matches`: the inline ones, then the rest (two plain loops are
    /// cheaper than a chained iterator on the hot path).
    #[inline]
    fn find_mut(&mut self, matches: impl Fn(&T) -> bool) -> Option<&mut T> {
        if let Some(i) = self.head.iter().position(&matches) {
            return Some(&mut self.head[i]);
        }
        self.tail.iter_mut().find(|entry| matches(entry))
    }

    #[inline]
    fn find(&self, matches: impl Fn(&T) -> bool) -> Option<&T> {
        self.head
            .iter()
            .find(|entry| matches(entry))
            .or_else(|| self.tail.iter().find(|entry| matches(entry)))
    }

    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    #[cfg(test)]
    fn spilled(&self) -> bool {
        !self.tail.is_empty()
    }
}

impl<T, const N: usize> Default for Entries<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> IntoIterator for Entries<T, N> {
    type Item = T;
    type IntoIter = std::iter::Chain<arrayvec::IntoIter<T, N>, std::vec::IntoIter<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.head.into_iter().chain(self.tail)
    }
}

impl<T, const N: usize> FromIterator<T> for Entries<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut entries = Entries::new();
        for item in iter {
            entries.push(item);
        }
        entries
    }
}

/// A measured number: an integer (nanoseconds, counts, bytes) or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A signed integer; durations and times are integers of nanoseconds.
    Int(i64),
    /// A float.
    Float(f64),
}

impl Number {
    /// The value as a float (integers above 2^53 lose precision).
    #[inline]
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// The value as an integer, if it is one.
    #[inline]
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(i),
            Number::Float(_) => None,
        }
    }
}

macro_rules! number_from {
    ($($t:ty => $variant:ident as $as:ty),*) => {$(
        impl From<$t> for Number {
            #[inline]
            fn from(v: $t) -> Self {
                Number::$variant(v as $as)
            }
        }
    )*};
}
number_from!(i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
             u8 => Int as i64, u16 => Int as i64, u32 => Int as i64, f32 => Float as f64, f64 => Float as f64);

impl From<u64> for Number {
    /// Saturates at `i64::MAX`.
    #[inline]
    fn from(v: u64) -> Self {
        Number::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Number {
    /// Saturates at `i64::MAX`.
    #[inline]
    fn from(v: usize) -> Self {
        Number::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A metadata value. Strings are borrowed where the caller has them, owned otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Text.
    Str(Cow<'a, str>),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Value<'_> {
    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value with its strings owned, so it can outlive the event.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Bool(b) => Value::Bool(b),
        }
    }
}

impl<'a> From<&'a str> for Value<'a> {
    #[inline]
    fn from(v: &'a str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}
impl From<String> for Value<'_> {
    #[inline]
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}
impl<'a> From<Cow<'a, str>> for Value<'a> {
    #[inline]
    fn from(v: Cow<'a, str>) -> Self {
        Value::Str(v)
    }
}
impl From<bool> for Value<'_> {
    #[inline]
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Number> for Value<'_> {
    #[inline]
    fn from(v: Number) -> Self {
        match v {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}
macro_rules! value_from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for Value<'_> {
            #[inline]
            fn from(v: $t) -> Self {
                Number::from(v).into()
            }
        }
    )*};
}
value_from_number!(i8, i16, i32, i64, u8, u16, u32, u64, usize, f32, f64);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The numbers an event measured: `duration`, `monotonic_time`, `size`, …
///
/// Up to four entries are stored inline. Durations and times are integer nanoseconds.
///
/// ```
/// use dspex_telemetry_core::{Measurements, Number};
/// let m = Measurements::new().with("duration", 1_500_000).with("count", 5);
/// assert_eq!(m.get("duration"), Some(Number::Int(1_500_000)));
/// assert_eq!(m.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements<'a> {
    entries: Entries<(&'a str, Number), 4>,
}

impl<'a> Measurements<'a> {
    /// No measurements. Does not allocate.
    #[inline]
    pub const fn new() -> Self {
        Measurements {
            entries: Entries::new(),
        }
    }

    /// Adds (or replaces) `key`, builder style.
    #[inline]
    pub fn with(mut self, key: &'a str, value: impl Into<Number>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds `key`, replacing an earlier value under the same key.
    #[inline]
    pub fn insert(&mut self, key: &'a str, value: impl Into<Number>) {
        let value = value.into();
        if let Some(entry) = self.entries.find_mut(|(k, _)| same_key(k, key)) {
            entry.1 = value;
            return;
        }
        self.entries.push((key, value));
    }

    /// Adds `key`, which the caller knows is not there yet
    /// ([`measurements!`](crate::measurements!) with literal keys, checked distinct at compile
    /// time): no search.
    #[doc(hidden)]
    #[inline]
    pub fn push_new(&mut self, key: &'a str, value: impl Into<Number>) {
        self.entries.push((key, value.into()));
    }

    /// The value under `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Number> {
        self.entries
            .find(|(k, _)| same_key(k, key))
            .map(|(_, v)| *v)
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Number)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, *v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }
}

/// Facts about an event: `module`, `function`, `tool_name`, `session_id`, …
///
/// Up to six entries are stored inline; strings are borrowed from the caller where possible.
///
/// ```
/// use dspex_telemetry_core::{metadata, Metadata, Value};
/// let md = metadata! { "module" => "dspy", "function" => "predict", "attempt" => 2 };
/// assert_eq!(md.get("module").and_then(Value::as_str), Some("dspy"));
/// let same = Metadata::new().with("module", "dspy").with("function", "predict").with("attempt", 2);
/// assert_eq!(md, same);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata<'a> {
    entries: Entries<(Cow<'a, str>, Value<'a>), 6>,
}

impl<'a> Metadata<'a> {
    /// No metadata. Does not allocate.
    #[inline]
    pub const fn new() -> Self {
        Metadata {
            entries: Entries::new(),
        }
    }

    /// Adds (or replaces) `key`, builder style.
    #[inline]
    pub fn with(mut self, key: impl Into<Cow<'a, str>>, value: impl Into<Value<'a>>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds `key`, replacing an earlier value under the same key.
    #[inline]
    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: impl Into<Value<'a>>) {
        let key = key.into();
        let value = value.into();
        if let Some(entry) = self.entries.find_mut(|(k, _)| same_key(k, &key)) {
            entry.1 = value;
            return;
        }
        self.entries.push((key, value));
    }

    /// Adds `key`, which the caller knows is not there yet ([`metadata!`](crate::metadata!)
    /// with literal keys, checked distinct at compile time): no search.
    #[doc(hidden)]
    #[inline]
    pub fn push_new(&mut self, key: &'a str, value: impl Into<Value<'a>>) {
        self.entries.push((Cow::Borrowed(key), value.into()));
    }

    /// The entries in insertion order, as the inline ones and the rest.
    #[inline(always)]
    pub(crate) fn parts(&self) -> [&[(Cow<'a, str>, Value<'a>)]; 2] {
        [&self.entries.head[..], &self.entries.tail[..]]
    }

    /// Bit `i` set: entry `i` (of the first 64) has its key in `other` too.
    #[inline]
    pub(crate) fn replaced_by(&self, other: &Metadata<'_>) -> u64 {
        let mut mask = 0;
        if other.is_empty() {
            return mask;
        }
        let (head, tail) = (&other.entries.head[..], &other.entries.tail[..]);
        let in_other = |key: &str| {
            head.iter().any(|(k, _)| same_key(k, key))
                || (!tail.is_empty() && tail.iter().any(|(k, _)| same_key(k, key)))
        };
        let mine = &self.entries.head[..];
        for (i, (key, _)) in mine.iter().enumerate() {
            if in_other(key) {
                mask |= 1 << i;
            }
        }
        let room = 64 - mine.len();
        for (i, (key, _)) in self.entries.tail.iter().enumerate().take(room) {
            if in_other(key) {
                mask |= 1 << (mine.len() + i);
            }
        }
        mask
    }

    /// Adds every entry of `other`, replacing entries under the same keys.
    pub fn extend(&mut self, mut other: Metadata<'a>) {
        self.append(&mut other);
    }

    /// Moves every entry of `other` into this one (replacing entries under the same keys),
    /// leaving `other` empty: [`Metadata::extend`] without moving `other` itself.
    pub fn append(&mut self, other: &mut Metadata<'a>) {
        for (k, v) in other.entries.head.drain(..) {
            self.insert(k, v);
        }
        for (k, v) in other.entries.tail.drain(..) {
            self.insert(k, v);
        }
    }

    /// The value under `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.entries.find(|(k, _)| same_key(k, key)).map(|(_, v)| v)
    }

    /// The entries in insertion order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value<'a>)> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// A copy whose strings are owned, so it can outlive the event (to queue it for export).
    pub fn into_owned(self) -> Metadata<'static> {
        Metadata {
            entries: self
                .entries
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
        }
    }
}

/// Builds [`Metadata`] from `key => value` pairs.
///
/// ```
/// let md = dspex_telemetry_core::metadata! { "tool_name" => "search", "found" => true };
/// assert_eq!(md.len(), 2);
/// ```
///
/// Literal keys must be distinct; the compiler says so otherwise:
///
/// ```compile_fail
/// let md = dspex_telemetry_core::metadata! { "attempt" => 1, "attempt" => 2 };
/// ```
#[macro_export]
macro_rules! metadata {
    () => { $crate::Metadata::new() };
    // Literal keys are checked distinct when the code compiles, and then added without a
    // search.
    ($($key:literal => $value:expr),+ $(,)?) => {{
        const { assert!($crate::distinct_keys(&[$($key),+]), "metadata! keys must be distinct") };
        let mut md = $crate::Metadata::new();
        $( md.push_new($key, $value); )+
        md
    }};
    ($($key:expr => $value:expr),+ $(,)?) => {{
        let mut md = $crate::Metadata::new();
        $( md.insert($key, $value); )+
        md
    }};
}

/// Builds [`Measurements`] from `key => value` pairs. Literal keys are checked distinct at
/// compile time, as [`metadata!`](crate::metadata!)'s are.
///
/// ```
/// let m = dspex_telemetry_core::measurements! { "duration" => 100, "count" => 5 };
/// assert_eq!(m.len(), 2);
/// ```
///
/// ```compile_fail
/// let m = dspex_telemetry_core::measurements! { "count" => 1, "count" => 2 };
/// ```
#[macro_export]
macro_rules! measurements {
    () => { $crate::Measurements::new() };
    ($($key:literal => $value:expr),+ $(,)?) => {{
        const { assert!($crate::distinct_keys(&[$($key),+]), "measurements! keys must be distinct") };
        let mut m = $crate::Measurements::new();
        $( m.push_new($key, $value); )+
        m
    }};
    ($($key:expr => $value:expr),+ $(,)?) => {{
        let mut m = $crate::Measurements::new();
        $( m.insert($key, $value); )+
        m
    }};
}

/// Whether no two of `keys` are equal; [`metadata!`](crate::metadata!) and
/// [`measurements!`](crate::measurements!) check their literal keys with it when the code
/// compiles.
#[doc(hidden)]
pub const fn distinct_keys(keys: &[&str]) -> bool {
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() {
            if const_eq(keys[i].as_bytes(), keys[j].as_bytes()) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const fn const_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Key equality that skips reading the bytes when both are the same string (keys are usually
/// literals).
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a.as_bytes() == b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handful_of_entries_stays_inline() {
        let md = Metadata::new()
            .with("a", 1)
            .with("b", "x")
            .with("c", 1.5)
            .with("d", true)
            .with("e", String::from("owned"))
            .with("f", -3);
        assert!(!md.entries.spilled());
        let m = Measurements::new()
            .with("duration", 1)
            .with("monotonic_time", 2)
            .with("system_time", 3);
        assert!(!m.entries.spilled());
    }

    #[test]
    fn literal_keys_build_what_inserts_build() {
        let key = String::from("attempt");
        let from_literals = crate::metadata! { "module" => "dspy", "attempt" => 2, "ok" => true };
        let mixed = crate::metadata! { "module" => "dspy", key.as_str() => 2, "ok" => true };
        assert_eq!(from_literals, mixed);
        assert_eq!(from_literals.get("attempt"), Some(&Value::Int(2)));
        assert!(distinct_keys(&["a", "b", "ab"]));
        assert!(!distinct_keys(&["a", "b", "a"]));
    }

    #[test]
    fn insert_replaces_and_extend_merges() {
        let mut md = Metadata::new().with("k", 1).with("j", 2);
        md.insert("k", "two");
        md.extend(Metadata::new().with("j", false).with("new", 9));
        assert_eq!(md.len(), 3);
        assert_eq!(md.get("k"), Some(&Value::from("two")));
        assert_eq!(md.get("j"), Some(&Value::Bool(false)));
        assert_eq!(md.into_owned().get("new"), Some(&Value::Int(9)));
    }

    #[test]
    fn numbers_convert_and_saturate() {
        assert_eq!(Number::from(u64::MAX), Number::Int(i64::MAX));
        assert_eq!(Number::from(2.5f32).as_f64(), 2.5);
        assert_eq!(Number::Int(7).as_i64(), Some(7));
        assert_eq!(Number::Float(7.0).as_i64(), None);
    }
}
