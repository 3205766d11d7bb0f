//! The W3C `traceparent` header: `00-<trace id>-<parent span id>-<flags>`.

use std::fmt;

use crate::ids::{SpanId, TraceFlags, TraceId, decode_hex};

/// Why a `traceparent` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Too short, too long for version 00, or without a dash where one belongs.
    #[error("traceparent is not `version-traceid-parentid-flags`")]
    Format,
    /// The version is not two lowercase hex digits, or is the forbidden `ff`.
    #[error("invalid traceparent version")]
    Version,
    /// The trace id is not 32 lowercase hex digits, or is all zeros.
    #[error("invalid trace id in traceparent")]
    TraceId,
    /// The parent id is not 16 lowercase hex digits, or is all zeros.
    #[error("invalid parent id in traceparent")]
    ParentId,
    /// The flags are not two lowercase hex digits.
    #[error("invalid trace flags in traceparent")]
    Flags,
}

/// A parsed `traceparent` header.
///
/// ```
/// use dspex_telemetry_core::TraceParent;
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let tp = TraceParent::parse(header).unwrap();
/// assert!(tp.flags.is_sampled());
/// assert_eq!(tp.to_string(), header);
/// assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the spans we start.
    pub parent_id: SpanId,
    /// The caller's trace flags.
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses a header value strictly (W3C Trace Context level 1): lowercase hex only,
    /// exactly 55 characters for version 00, no all-zero ids, no version `ff`. A later
    /// version is read for its first four fields, as the specification asks.
    pub fn parse(header: &str) -> Result<Self, TraceParentError> {
        let s = header.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
        if s.len() < 55 {
            return Err(TraceParentError::Format);
        }
        let version = decode_hex::<1>(&s[0..2]).ok_or(TraceParentError::Version)?[0];
        if version == 0xff {
            return Err(TraceParentError::Version);
        }
        if (version == 0 && s.len() != 55) || (s.len() > 55 && s[55] != b'-') {
            return Err(TraceParentError::Format);
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(TraceParentError::Format);
        }
        let trace_id =
            TraceId::from_bytes(decode_hex::<16>(&s[3..35]).ok_or(TraceParentError::TraceId)?);
        if !trace_id.is_valid() {
            return Err(TraceParentError::TraceId);
        }
        let parent_id =
            SpanId::from_bytes(decode_hex::<8>(&s[36..52]).ok_or(TraceParentError::ParentId)?);
        if !parent_id.is_valid() {
            return Err(TraceParentError::ParentId);
        }
        let flags = decode_hex::<1>(&s[53..55]).ok_or(TraceParentError::Flags)?[0];
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags: TraceFlags::from_bits(flags),
        })
    }
}

impl TraceParent {
    /// Appends the version 00 header value (as `Display` writes it) to `out`, without the
    /// formatting machinery.
    ///
    /// ```
    /// use dspex_telemetry_core::TraceParent;
    /// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// let mut out = String::new();
    /// TraceParent::parse(header).unwrap().push_header(&mut out);
    /// assert_eq!(out, header);
    /// ```
    pub fn push_header(&self, out: &mut String) {
        // Only ASCII was written.
        out.push_str(std::str::from_utf8(&self.header_bytes()).unwrap_or_default());
    }

    /// The version 00 header value as ASCII bytes (55 of them), for writers of bytes.
    ///
    /// ```
    /// use dspex_telemetry_core::TraceParent;
    /// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert_eq!(&TraceParent::parse(header).unwrap().header_bytes(), header.as_bytes());
    /// ```
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        crate::ids::hex_into(&self.trace_id.to_bytes(), &mut out[3..35]);
        crate::ids::hex_into(&self.parent_id.to_bytes(), &mut out[36..52]);
        crate::ids::hex_into(&[self.flags.bits()], &mut out[53..55]);
        out
    }
}

impl fmt::Display for TraceParent {
    /// The version 00 header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags.bits()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn refuses_what_the_specification_refuses() {
        let cases = [
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceParentError::TraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceParentError::ParentId,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceParentError::TraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                TraceParentError::Flags,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                TraceParentError::Format,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceParentError::Format,
            ),
        ];
        for (header, error) in cases {
            assert_eq!(TraceParent::parse(header), Err(error), "{header}");
        }
        assert!(TraceParent::parse(VALID).is_ok());
    }

    #[test]
    fn later_versions_are_read_for_their_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-follows";
        assert_eq!(TraceParent::parse(later).unwrap().to_string(), VALID);
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_err()
        );
    }
}
