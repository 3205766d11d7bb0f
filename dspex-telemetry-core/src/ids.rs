//! W3C trace ids (16 bytes), span ids (8 bytes), trace flags and correlation ids.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

/// Why a hex id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not the right number of lowercase hex digits.
    #[error("expected {expected} lowercase hex digits")]
    Format {
        /// Digits expected: 32 for a trace id, 16 for a span id.
        expected: usize,
    },
    /// All zeros, which W3C Trace Context declares invalid.
    #[error("an all-zero id is invalid")]
    Zero,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes exactly `N * 2` lowercase hex digits.
pub(crate) fn decode_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of up to 16 bytes, into `buf`; returns the digits written.
#[inline]
fn hex_digits<'b>(bytes: &[u8], buf: &'b mut [u8; 32]) -> &'b str {
    let bytes = &bytes[..bytes.len().min(16)];
    let digits = &mut buf[..bytes.len() * 2];
    hex_into(bytes, digits);
    // Only ASCII hex digits were written.
    std::str::from_utf8(digits).unwrap_or_default()
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str(hex_digits(bytes, &mut [0; 32]))
}

/// Writes the lowercase hex of `bytes` into `out` (twice as long).
#[inline]
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Appends the lowercase hex of `bytes` (at most 16) to `out`.
#[inline]
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    out.push_str(hex_digits(bytes, &mut [0; 32]));
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The all-zero id, which W3C Trace Context declares invalid.
            pub const INVALID: Self = $name([0; $len]);

            /// The id with these bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                $name(bytes)
            }

            /// The id's bytes.
            pub const fn to_bytes(self) -> [u8; $len] {
                self.0
            }

            /// Whether the id is not all zeros.
            pub fn is_valid(&self) -> bool {
                self.0 != [0; $len]
            }

            /// A random, valid id.
            pub fn random() -> Self {
                let mut bytes = [0u8; $len];
                loop {
                    for chunk in bytes.chunks_mut(8) {
                        let r = next_random().to_le_bytes();
                        chunk.copy_from_slice(&r[..chunk.len()]);
                    }
                    if bytes != [0; $len] {
                        return $name(bytes);
                    }
                }
            }

            /// Appends the lowercase hex form (as `Display` writes it) to `out`, without the
            /// formatting machinery.
            #[inline]
            pub fn push_hex(&self, out: &mut String) {
                push_hex(out, &self.0);
            }

            /// The lowercase hex form as ASCII bytes.
            #[inline]
            pub fn hex_bytes(&self) -> [u8; $len * 2] {
                let mut out = [0; $len * 2];
                hex_into(&self.0, &mut out);
                out
            }

            /// Parses lowercase hex, refusing the all-zero id.
            pub fn from_hex(hex: &str) -> Result<Self, IdError> {
                let bytes = decode_hex::<$len>(hex.as_bytes())
                    .ok_or(IdError::Format { expected: $len * 2 })?;
                let id = $name(bytes);
                if id.is_valid() { Ok(id) } else { Err(IdError::Zero) }
            }
        }

        impl fmt::Display for $name {
            /// Lowercase hex.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

hex_id!(
    /// A W3C trace id: 16 bytes, shown as 32 lowercase hex digits.
    ///
    /// ```
    /// use dspex_telemetry_core::TraceId;
    /// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    /// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(TraceId::from_hex("00000000000000000000000000000000").is_err());
    /// ```
    TraceId,
    16
);
hex_id!(
    /// A W3C span id: 8 bytes, shown as 16 lowercase hex digits.
    SpanId,
    8
);

/// W3C trace flags; bit 0 is `sampled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The `sampled` flag.
    pub const SAMPLED: TraceFlags = TraceFlags(0x01);

    /// Flags from their byte.
    pub const fn from_bits(bits: u8) -> Self {
        TraceFlags(bits)
    }

    /// The flags' byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether the caller recorded (sampled) this trace.
    pub const fn is_sampled(self) -> bool {
        self.0 & 0x01 != 0
    }
}

/// Why a correlation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelationIdError {
    /// Empty.
    #[error("a correlation id cannot be empty")]
    Empty,
    /// Longer than [`CorrelationId::MAX_LEN`] bytes.
    #[error("a correlation id has at most {max} characters, got {len}")]
    TooLong {
        /// The limit.
        max: usize,
        /// The length given.
        len: usize,
    },
    /// A character outside printable ASCII: spaces, CR/LF, controls and non-ASCII are refused.
    #[error(
        "a correlation id may hold printable ASCII only, without spaces (byte {byte:#04x} at {at})"
    )]
    InvalidCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset.
        at: usize,
    },
}

/// The id that ties together everything one request caused, across threads, tasks, services
/// and the Python workers.
///
/// Generated ids are the trace id's 32 hex digits. One supplied from outside (an
/// `x-correlation-id` header) is validated and then kept verbatim: 1 to
/// [`CorrelationId::MAX_LEN`] bytes of printable ASCII (`!` to `~`), so it is safe in a header,
/// a log line and a baggage member. Cloning is a reference-count increment.
///
/// ```
/// use dspex_telemetry_core::CorrelationId;
/// let id = CorrelationId::parse("req-2024-07-01-abc").unwrap();
/// assert_eq!(id.as_str(), "req-2024-07-01-abc");
/// assert!(CorrelationId::parse("has space").is_err());
/// assert!(CorrelationId::parse("line\r\nbreak").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// The longest correlation id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates `id` and keeps it verbatim.
    pub fn parse(id: &str) -> Result<Self, CorrelationIdError> {
        if id.is_empty() {
            return Err(CorrelationIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(CorrelationIdError::TooLong {
                max: Self::MAX_LEN,
                len: id.len(),
            });
        }
        if let Some((at, &byte)) = id
            .as_bytes()
            .iter()
            .enumerate()
            .find(|(_, b)| !(b'!'..=b'~').contains(*b))
        {
            return Err(CorrelationIdError::InvalidCharacter { byte, at });
        }
        Ok(CorrelationId(id.into()))
    }

    /// The correlation id derived from a trace id: its 32 hex digits.
    pub fn from_trace_id(trace_id: TraceId) -> Self {
        CorrelationId(trace_id.to_string().into())
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({:?})", &*self.0)
    }
}

impl std::str::FromStr for CorrelationId {
    type Err = CorrelationIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// The next number from this thread's SplitMix64 generator, seeded from the OS once per thread.
/// Ids need uniqueness, not secrecy: a seeded generator is enough and costs a few cycles.
fn next_random() -> u64 {
    RNG.try_with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = seed();
        }
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        mix(s)
    })
    .unwrap_or_else(|_| mix(seed()))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cold]
fn seed() -> u64 {
    let os = getrandom::u64().unwrap_or(0);
    // Without OS randomness, mix in the time and this thread's stack address.
    let local = 0u8;
    let fallback =
        crate::clock::system_time_ns() as u64 ^ (&local as *const u8 as u64).rotate_left(32);
    (os ^ mix(fallback)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_distinct_and_round_trip_through_hex() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert_ne!(a, b);
        assert!(a.is_valid());
        assert_eq!(TraceId::from_hex(&a.to_string()), Ok(a));
        let s = SpanId::random();
        assert_eq!(s.to_string().len(), 16);
        assert_eq!(SpanId::from_hex(&s.to_string()), Ok(s));
    }

    #[test]
    fn hex_parsing_is_strict() {
        assert!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736").is_err());
        assert!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e473").is_err());
        assert_eq!(SpanId::from_hex("0000000000000000"), Err(IdError::Zero));
    }

    #[test]
    fn correlation_ids_are_checked() {
        assert_eq!(CorrelationId::parse(""), Err(CorrelationIdError::Empty));
        assert!(matches!(
            CorrelationId::parse(&"a".repeat(129)),
            Err(CorrelationIdError::TooLong { len: 129, .. })
        ));
        assert!(CorrelationId::parse(&"a".repeat(128)).is_ok());
        assert!(CorrelationId::parse("é").is_err());
        assert!(CorrelationId::parse("a\tb").is_err());
    }
}
