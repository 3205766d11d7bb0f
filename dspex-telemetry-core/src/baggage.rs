//! W3C `baggage`: key/value pairs that travel with a trace.

use std::fmt::Write as _;

/// The most members a baggage may hold (W3C's propagation limit).
pub const MAX_MEMBERS: usize = 180;
/// The most bytes a baggage header may take (W3C's propagation limit).
pub const MAX_BYTES: usize = 8192;

/// Why a baggage header or entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaggageError {
    /// The header is longer than [`MAX_BYTES`].
    #[error("baggage is {len} bytes, over the limit of {MAX_BYTES}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_MEMBERS`] members.
    #[error("baggage has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A member is not `key=value[;property…]` with a token key and a baggage-octet value.
    #[error("malformed baggage member {0:?}")]
    Malformed(String),
    /// A key is not an RFC 7230 token.
    #[error("invalid baggage key {0:?}")]
    InvalidKey(String),
    /// There is no trace context on this thread to add baggage to.
    #[error("no trace is active on this thread")]
    NoActiveTrace,
}

/// One baggage member: a key, a (decoded) value and its properties, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaggageMember {
    key: String,
    value: String,
    properties: Option<String>,
}

impl BaggageMember {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The value, percent-decoded.
    pub fn value(&self) -> &str {
        &self.value
    }
    /// The member's properties (what followed the first `;`), verbatim.
    pub fn properties(&self) -> Option<&str> {
        self.properties.as_deref()
    }
}

/// A W3C baggage: an ordered list of unique keys with values, within W3C's limits.
///
/// ```
/// use dspex_telemetry_core::Baggage;
/// let mut baggage = Baggage::parse("user_tier=gold,region=eu%20west;ttl=60").unwrap();
/// assert_eq!(baggage.get("region"), Some("eu west"));
/// baggage.insert("error.context", "retry, then give up").unwrap();
/// let header = baggage.to_header();
/// assert_eq!(Baggage::parse(&header).unwrap(), baggage);
/// assert!(Baggage::parse("no-equals-sign").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<BaggageMember>,
}

/// RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// W3C `baggage-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !is_baggage_octet(b) {
            return None;
        }
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn percent_encode(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if is_baggage_octet(b) && b != b'%' {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn parse_property(p: &str) -> bool {
    let p = trim_ows(p);
    match p.split_once('=') {
        Some((k, v)) => is_token(trim_ows(k)) && trim_ows(v).bytes().all(is_baggage_octet),
        None => is_token(p),
    }
}

impl Baggage {
    /// An empty baggage.
    pub const fn new() -> Self {
        Baggage {
            members: Vec::new(),
        }
    }

    /// Parses a `baggage` header strictly: any malformed member, or a header over W3C's
    /// limits, refuses the whole header. A key that repeats keeps its last value.
    pub fn parse(header: &str) -> Result<Self, BaggageError> {
        if header.len() > MAX_BYTES {
            return Err(BaggageError::TooLarge { len: header.len() });
        }
        let mut baggage = Baggage::new();
        for raw in header.split(',') {
            let member = trim_ows(raw);
            let malformed = || BaggageError::Malformed(member.chars().take(64).collect());
            let (pair, properties) = match member.split_once(';') {
                Some((pair, props)) => (pair, Some(props)),
                None => (member, None),
            };
            let (key, value) = pair.split_once('=').ok_or_else(malformed)?;
            let key = trim_ows(key);
            if !is_token(key) {
                return Err(malformed());
            }
            let value = percent_decode(trim_ows(value)).ok_or_else(malformed)?;
            let properties = match properties {
                Some(props) => {
                    if !props.split(';').all(parse_property) {
                        return Err(malformed());
                    }
                    Some(trim_ows(props).to_owned())
                }
                None => None,
            };
            baggage.put(BaggageMember {
                key: key.to_owned(),
                value,
                properties,
            });
            if baggage.members.len() > MAX_MEMBERS {
                return Err(BaggageError::TooManyMembers);
            }
        }
        Ok(baggage)
    }

    fn put(&mut self, member: BaggageMember) {
        match self.members.iter_mut().find(|m| m.key == member.key) {
            Some(existing) => *existing = member,
            None => self.members.push(member),
        }
    }

    /// Sets `key` to `value` (any text: it is percent-encoded on the wire). Refuses a key
    /// that is not a token, and an entry that would take the baggage over W3C's limits.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), BaggageError> {
        if !is_token(key) {
            return Err(BaggageError::InvalidKey(key.chars().take(64).collect()));
        }
        let previous = self.clone();
        self.put(BaggageMember {
            key: key.to_owned(),
            value: value.to_owned(),
            properties: None,
        });
        if self.members.len() > MAX_MEMBERS {
            *self = previous;
            return Err(BaggageError::TooManyMembers);
        }
        let len = self.encoded_len();
        if len > MAX_BYTES {
            *self = previous;
            return Err(BaggageError::TooLarge { len });
        }
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.members.iter().position(|m| m.key == key)?;
        Some(self.members.remove(index).value)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value.as_str())
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = &BaggageMember> + '_ {
        self.members.iter()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The `baggage` header value.
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        self.push_header(&mut out);
        out
    }

    /// Appends the header value (as [`Baggage::to_header`] gives it) to `out`.
    pub fn push_header(&self, out: &mut String) {
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&m.key);
            out.push('=');
            percent_encode(&m.value, out);
            if let Some(props) = &m.properties {
                out.push(';');
                out.push_str(props);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        self.to_header().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_properties_and_duplicates() {
        let b = Baggage::parse(" a = 1 ;p1;p2=x , b=2,a=3").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.get("a"), Some("3"));
        let b = Baggage::parse("k=v;prop=1").unwrap();
        assert_eq!(
            b.iter().next().and_then(BaggageMember::properties),
            Some("prop=1")
        );
        assert_eq!(b.to_header(), "k=v;prop=1");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "", "a", "=v", "a=b c", "a=\"q\"", "a=%zz", "a=%ff", "k=v;", "k=v,,j=w", "ké=v",
        ] {
            assert!(Baggage::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Baggage::parse(&many.join(",")),
            Err(BaggageError::TooManyMembers)
        );
        assert!(Baggage::parse(&many[..MAX_MEMBERS].join(",")).is_ok());
        let big = format!("k={}", "v".repeat(MAX_BYTES));
        assert!(matches!(
            Baggage::parse(&big),
            Err(BaggageError::TooLarge { .. })
        ));
        let mut b = Baggage::new();
        assert!(b.insert("k", &"v".repeat(MAX_BYTES)).is_err());
        assert!(b.is_empty());
        assert_eq!(
            b.insert("bad key", "v"),
            Err(BaggageError::InvalidKey("bad key".into()))
        );
    }
}
