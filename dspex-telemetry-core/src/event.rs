//! Event names: `[:dspex, :component, :operation, :phase]` as a list of segments.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The name of an event: a non-empty list of segments, such as
/// `[:dspex, :bridge, :call, :start]`.
///
/// Static names are built at compile time with [`EventName::from_static`] and cost no
/// allocation to use or clone; their hash is computed once, by the compiler. Names known
/// only at run time (users' own events, events returned by Python workers) are built with
/// [`EventName::new`] or [`EventName::parse`] and cost one allocation when built; cloning
/// them is a reference-count increment.
///
/// ```
/// use dspex_telemetry_core::EventName;
///
/// const CALL_START: EventName = EventName::from_static(&["dspex", "bridge", "call", "start"]);
/// let custom = EventName::parse("myapp.custom.operation").unwrap();
/// assert_eq!(CALL_START.to_string(), "dspex.bridge.call.start");
/// assert_eq!(format!("{custom:?}"), "[:myapp, :custom, :operation]");
/// assert!(CALL_START.starts_with(&EventName::from_static(&["dspex", "bridge"])));
/// ```
#[derive(Clone)]
pub struct EventName {
    prefix: Segments,
    /// A static last segment appended to `prefix` (the phase of a span event).
    phase: Option<&'static str>,
    hash: u64,
}

#[derive(Clone)]
enum Segments {
    Static(&'static [&'static str]),
    Owned(Arc<[Box<str>]>),
}

/// Why a run-time event name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventNameError {
    /// The name had no segment.
    #[error("an event name needs at least one segment")]
    Empty,
    /// A segment was empty or held a character other than ASCII letters, digits, `_` or `-`.
    #[error("invalid event name segment {0:?}: use ASCII letters, digits, '_' or '-'")]
    InvalidSegment(String),
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv_segment(mut hash: u64, segment: &str) -> u64 {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    // 0xff never occurs in UTF-8, so segment boundaries cannot be confused.
    hash ^= 0xff;
    hash.wrapping_mul(FNV_PRIME)
}

const fn valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

const fn hash_static(segments: &[&str], phase: Option<&str>) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < segments.len() {
        assert!(
            valid_segment(segments[i]),
            "event name segments use ASCII letters, digits, '_' or '-'"
        );
        hash = fnv_segment(hash, segments[i]);
        i += 1;
    }
    if let Some(phase) = phase {
        assert!(
            valid_segment(phase),
            "event name segments use ASCII letters, digits, '_' or '-'"
        );
        hash = fnv_segment(hash, phase);
    }
    hash
}

impl EventName {
    /// A name from static segments, checked and hashed at compile time when used in a
    /// `const`. Panics (a compile error in a `const`) on an empty list or an invalid segment.
    pub const fn from_static(segments: &'static [&'static str]) -> Self {
        assert!(
            !segments.is_empty(),
            "an event name needs at least one segment"
        );
        EventName {
            prefix: Segments::Static(segments),
            phase: None,
            hash: hash_static(segments, None),
        }
    }

    /// `prefix` followed by `phase`, without allocating: how span events are named.
    pub(crate) const fn from_static_with_phase(
        prefix: &'static [&'static str],
        phase: &'static str,
    ) -> Self {
        EventName {
            prefix: Segments::Static(prefix),
            phase: Some(phase),
            hash: hash_static(prefix, Some(phase)),
        }
    }

    /// This name followed by a static `phase` segment (`start`, `stop`, `exception`, …).
    pub(crate) fn with_phase(&self, phase: &'static str) -> Self {
        let prefix = match self.phase {
            None => self.prefix.clone(),
            Some(_) => Segments::Owned(self.segments().map(Box::from).collect()),
        };
        EventName {
            prefix,
            phase: Some(phase),
            hash: 0,
        }
        .rehashed()
    }

    fn rehashed(mut self) -> Self {
        let mut hash = FNV_OFFSET;
        for segment in self.segments() {
            hash = fnv_segment(hash, segment);
        }
        self.hash = hash;
        self
    }

    /// A name from run-time segments (one allocation).
    ///
    /// ```
    /// # use dspex_telemetry_core::EventName;
    /// let name = EventName::new(["myapp", "custom", "operation"]).unwrap();
    /// assert_eq!(name.len(), 3);
    /// assert!(EventName::new(["has space"]).is_err());
    /// ```
    pub fn new<I, S>(segments: I) -> Result<Self, EventNameError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut owned = Vec::new();
        for segment in segments {
            let segment = segment.as_ref();
            if !valid_segment(segment) {
                return Err(EventNameError::InvalidSegment(segment.to_owned()));
            }
            owned.push(Box::<str>::from(segment));
        }
        if owned.is_empty() {
            return Err(EventNameError::Empty);
        }
        Ok(EventName {
            prefix: Segments::Owned(owned.into()),
            phase: None,
            hash: 0,
        }
        .rehashed())
    }

    /// A name from its dotted form, `"myapp.custom.operation"`.
    pub fn parse(dotted: &str) -> Result<Self, EventNameError> {
        if dotted.is_empty() {
            return Err(EventNameError::Empty);
        }
        Self::new(dotted.split('.'))
    }

    /// Calls `f` with each segment, in order: [`EventName::segments`] without the chained
    /// iterator, for code on a hot path.
    #[inline]
    pub fn for_each_segment(&self, mut f: impl FnMut(&str)) {
        match &self.prefix {
            Segments::Static(segments) => segments.iter().for_each(|s| f(s)),
            Segments::Owned(segments) => segments.iter().for_each(|s| f(s)),
        }
        if let Some(phase) = self.phase {
            f(phase)
        }
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        let (fixed, owned): (&[&'static str], &[Box<str>]) = match &self.prefix {
            Segments::Static(s) => (s, &[]),
            Segments::Owned(s) => (&[], s),
        };
        fixed
            .iter()
            .copied()
            .chain(owned.iter().map(|s| &**s))
            .chain(self.phase)
    }

    /// How many segments the name has.
    pub fn len(&self) -> usize {
        let prefix = match &self.prefix {
            Segments::Static(s) => s.len(),
            Segments::Owned(s) => s.len(),
        };
        prefix + usize::from(self.phase.is_some())
    }

    /// Always false: a name has at least one segment.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `prefix`'s segments are the first segments of this name.
    pub fn starts_with(&self, prefix: &EventName) -> bool {
        prefix.len() <= self.len() && self.segments().zip(prefix.segments()).all(|(a, b)| a == b)
    }

    /// The precomputed hash that the dispatcher looks names up by.
    #[inline]
    pub(crate) fn precomputed_hash(&self) -> u64 {
        self.hash
    }

    /// The last segment, and the hash this name would have without it (the hash of the span
    /// prefix of a `…:start` name); `None` for a one-segment name.
    pub(crate) fn split_last_hash(&self) -> Option<(u64, &str)> {
        let n = self.len();
        if n < 2 {
            return None;
        }
        let mut hash = FNV_OFFSET;
        let mut last = "";
        for (i, segment) in self.segments().enumerate() {
            if i + 1 < n {
                hash = fnv_segment(hash, segment);
            } else {
                last = segment;
            }
        }
        Some((hash, last))
    }
}

impl PartialEq for EventName {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        if self.hash != other.hash {
            return false;
        }
        match (&self.prefix, &other.prefix) {
            // The same split into prefix and phase: compare the parts, pointers first.
            (Segments::Static(a), Segments::Static(b))
                if self.phase.is_some() == other.phase.is_some() && a.len() == b.len() =>
            {
                let same_phase = match (self.phase, other.phase) {
                    (Some(x), Some(y)) => same_str(x, y),
                    _ => true,
                };
                same_phase
                    && (std::ptr::eq(*a, *b) || a.iter().zip(*b).all(|(x, y)| same_str(x, y)))
            }
            _ => self.len() == other.len() && self.segments().eq(other.segments()),
        }
    }
}

/// String equality that skips reading the bytes when both are the same string (static names
/// usually are): equal names are the common case, since their hashes matched first.
#[inline]
fn same_str(a: &str, b: &str) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
}

impl Eq for EventName {}

impl Hash for EventName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Display for EventName {
    /// The dotted form: `dspex.bridge.call.start`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(segment)?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventName {
    /// The Elixir form: `[:dspex, :bridge, :call, :start]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, segment) in self.segments().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, ":{segment}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_names_with_the_same_segments_are_equal() {
        const STATIC: EventName = EventName::from_static(&["dspex", "bridge", "call", "stop"]);
        let dynamic = EventName::parse("dspex.bridge.call.stop").unwrap();
        let phased = EventName::from_static_with_phase(&["dspex", "bridge", "call"], "stop");
        let with_phase = EventName::parse("dspex.bridge.call")
            .unwrap()
            .with_phase("stop");
        for other in [&dynamic, &phased, &with_phase] {
            assert_eq!(&STATIC, other);
            assert_eq!(STATIC.precomputed_hash(), other.precomputed_hash());
        }
        assert_ne!(STATIC, EventName::parse("dspex.bridge.callstop").unwrap());
        assert_ne!(
            EventName::parse("ab.c").unwrap().precomputed_hash(),
            EventName::parse("a.bc").unwrap().precomputed_hash()
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        assert_eq!(EventName::parse(""), Err(EventNameError::Empty));
        assert!(EventName::parse("a..b").is_err());
        assert!(EventName::parse("a.b c").is_err());
        assert!(EventName::new(Vec::<String>::new()).is_err());
    }
}
