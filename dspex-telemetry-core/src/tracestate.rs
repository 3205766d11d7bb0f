//! The W3C `tracestate` header: vendors' own trace data, carried beside `traceparent`.
//!
//! A request's `tracestate` is kept on its trace context, handed on unchanged by every call
//! made from it (over HTTP and into Python workers), and exported with its spans. A header
//! that breaks the grammar or its limits is dropped whole, as the specification asks of a
//! vendor that cannot parse it.

use std::fmt;

/// The most list members a `tracestate` may hold.
pub const MAX_MEMBERS: usize = 32;
/// The longest key and the longest value, in characters.
pub const MAX_KEY_LEN: usize = 256;
/// The longest value, in characters.
pub const MAX_VALUE_LEN: usize = 256;
/// The length past which an outgoing `tracestate` is shortened (dropping members of more than
/// 128 characters first, then the last ones), as the specification recommends.
pub const MAX_PROPAGATED_LEN: usize = 512;
/// The most bytes read from the incoming headers together; more is refused unread.
pub const MAX_INCOMING_BYTES: usize = 8192;

/// Why a `tracestate` header or entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// More than [`MAX_MEMBERS`] list members.
    #[error("tracestate has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// The headers together are longer than [`MAX_INCOMING_BYTES`].
    #[error("tracestate is {len} bytes, over the limit of {MAX_INCOMING_BYTES}")]
    TooLarge {
        /// Their length.
        len: usize,
    },
    /// A member is not `key=value`.
    #[error("tracestate member is not key=value")]
    Malformed,
    /// A key is not a lowercase letter or digit followed by up to 255 of `a-z 0-9 _ - * / @`.
    #[error("invalid tracestate key")]
    InvalidKey,
    /// A value is empty, longer than 256 characters, ends with a space or holds `,`, `=` or a
    /// character outside printable ASCII.
    #[error("invalid tracestate value")]
    InvalidValue,
}

/// A W3C `tracestate`: an ordered list of vendor keys with opaque values, within the
/// specification's limits.
///
/// ```
/// use dspex_telemetry_core::TraceState;
/// let mut state = TraceState::parse(["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).unwrap();
/// assert_eq!(state.get("congo"), Some("t61rcWkgMzE"));
/// // A vendor updates its own entry: it moves to the front.
/// state.insert("congo", "ucfJifl5GOE").unwrap();
/// assert_eq!(state.to_header(), "congo=ucfJifl5GOE,rojo=00f067aa0ba902b7");
/// assert!(TraceState::parse(["Upper=1"]).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(Box<str>, Box<str>)>,
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are vendors' data: their keys say enough.
        f.debug_struct("TraceState")
            .field(
                "keys",
                &self.members.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && bytes.len() <= MAX_KEY_LEN
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b))
        }
        None => false,
    }
}

fn valid_value(value: &str) -> bool {
    // chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E; the last is an nblk-chr.
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_VALUE_LEN
        && bytes.last() != Some(&b' ')
        && bytes
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

impl TraceState {
    /// An empty tracestate.
    pub const fn new() -> Self {
        TraceState {
            members: Vec::new(),
        }
    }

    /// Parses the values of every `tracestate` header of a request, in order, as one list.
    /// Whitespace around members and empty members are skipped; a later duplicate of a key is
    /// dropped. Any member that breaks the grammar, or more than [`MAX_MEMBERS`] members,
    /// refuses the whole list.
    pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Result<Self, TraceStateError> {
        let mut state = TraceState::new();
        let mut len = 0;
        for header in headers {
            len += header.len();
            if len > MAX_INCOMING_BYTES {
                return Err(TraceStateError::TooLarge { len });
            }
            for member in header.split(',') {
                let member = member.trim_matches(is_ows);
                if member.is_empty() {
                    continue;
                }
                let (key, value) = member.split_once('=').ok_or(TraceStateError::Malformed)?;
                if !valid_key(key) {
                    return Err(TraceStateError::InvalidKey);
                }
                if !valid_value(value) {
                    return Err(TraceStateError::InvalidValue);
                }
                if state.get(key).is_some() {
                    continue;
                }
                if state.members.len() == MAX_MEMBERS {
                    return Err(TraceStateError::TooManyMembers);
                }
                state.members.push((key.into(), value.into()));
            }
        }
        Ok(state)
    }

    /// Sets `key` to `value` and moves it to the front, as a vendor updating its own entry
    /// does; the last member is dropped if the list is full.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !valid_key(key) {
            return Err(TraceStateError::InvalidKey);
        }
        if !valid_value(value) {
            return Err(TraceStateError::InvalidValue);
        }
        self.remove(key);
        if self.members.len() == MAX_MEMBERS {
            self.members.pop();
        }
        self.members.insert(0, (key.into(), value.into()));
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.members.iter().position(|(k, _)| &**k == key)?;
        Some(self.members.remove(at).1.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.members.iter().map(|(k, v)| (&**k, &**v))
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value a call sends: the members in order, shortened to
    /// [`MAX_PROPAGATED_LEN`] characters if longer (members over 128 characters go first,
    /// then the last ones).
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        self.push_header(&mut out);
        out
    }

    /// Appends the header value [`TraceState::to_header`] gives to `out`.
    pub fn push_header(&self, out: &mut String) {
        let member_len = |(k, v): &(Box<str>, Box<str>)| k.len() + 1 + v.len();
        let full: usize = self.members.iter().map(|m| member_len(m) + 1).sum();
        let mut keep = vec![true; self.members.len()];
        let mut len = full.saturating_sub(1);
        if len > MAX_PROPAGATED_LEN {
            for (i, m) in self.members.iter().enumerate().rev() {
                if len <= MAX_PROPAGATED_LEN {
                    break;
                }
                if member_len(m) > 128 {
                    keep[i] = false;
                    len -= member_len(m) + 1;
                }
            }
            for (i, m) in self.members.iter().enumerate().rev() {
                if len <= MAX_PROPAGATED_LEN {
                    break;
                }
                if keep[i] {
                    keep[i] = false;
                    len = len.saturating_sub(member_len(m) + 1);
                }
            }
        }
        let mut first = true;
        for ((k, v), _) in self.members.iter().zip(&keep).filter(|(_, keep)| **keep) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_combine_in_order_with_whitespace_empty_members_and_duplicates() {
        let state = TraceState::parse(["foo=1 \t , \t bar=2", "", " ,foo=3,\tbaz=3\t"]).unwrap();
        assert_eq!(state.to_header(), "foo=1,bar=2,baz=3");
        assert!(TraceState::parse([""]).unwrap().is_empty());
    }

    #[test]
    fn keys_and_values_follow_the_grammar() {
        let key: String = ('a'..='z')
            .chain('0'..='9')
            .chain("_-*/@".chars())
            .collect();
        let value: String = (0x20u8..=0x7e)
            .filter(|b| *b != b',' && *b != b'=')
            .map(char::from)
            .collect();
        let state = TraceState::parse([format!("{key}={value}").as_str()]).unwrap();
        assert_eq!(state.get(&key), Some(value.as_str()));
        for ok in ["foo@=1", "foo@@bar=1", "foo@bar@baz=1", "0ab=1"] {
            assert!(TraceState::parse([ok]).is_ok(), "{ok}");
        }
        assert!(TraceState::parse([format!("{}=1", "z".repeat(256)).as_str()]).is_ok());
        for bad in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "@foo=1",
            "foo=",
            "foo=bar=baz",
            "foo=a\u{1}b",
            "nokey",
            "=1",
            "foo=é",
        ] {
            assert!(TraceState::parse([bad]).is_err(), "{bad:?}");
        }
        assert_eq!(
            TraceState::parse(["ok=1", format!("{}=1", "z".repeat(257)).as_str()]),
            Err(TraceStateError::InvalidKey)
        );
        assert!(TraceState::parse([format!("k={}", "v".repeat(257)).as_str()]).is_err());
    }

    #[test]
    fn more_than_32_members_or_8_kib_are_refused() {
        let members = |n: usize| {
            (1..=n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(TraceState::parse([members(32).as_str()]).unwrap().len(), 32);
        assert_eq!(
            TraceState::parse([members(33).as_str()]),
            Err(TraceStateError::TooManyMembers)
        );
        let huge = ",".repeat(MAX_INCOMING_BYTES + 1);
        assert!(matches!(
            TraceState::parse([huge.as_str()]),
            Err(TraceStateError::TooLarge { .. })
        ));
    }

    #[test]
    fn insert_moves_a_key_to_the_front_and_the_output_is_bounded() {
        let mut state = TraceState::parse(["a=1,b=2"]).unwrap();
        state.insert("b", "3").unwrap();
        assert_eq!(state.to_header(), "b=3,a=1");
        assert!(state.insert("B", "1").is_err());
        assert!(state.insert("c", "").is_err());

        let long = "v".repeat(200);
        let mut big = TraceState::new();
        for i in 0..6 {
            big.insert(&format!("k{i}"), &long).unwrap();
        }
        big.insert("small", "1").unwrap();
        let header = big.to_header();
        assert!(header.len() <= MAX_PROPAGATED_LEN, "{}", header.len());
        assert!(header.starts_with("small=1,k5="), "{header}");
        assert!(
            !format!("{big:?}").contains(&long),
            "values stay out of Debug"
        );
    }
}
