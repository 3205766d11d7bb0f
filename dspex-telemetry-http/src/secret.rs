//! Credentials that never show in `Debug` output or logs.

use std::fmt;

/// A token or password. `Debug` prints `Secret(***)`; the value is only reachable through
/// [`Secret::expose`].
///
/// ```
/// use dspex_telemetry_http::Secret;
/// let token = Secret::new("s3cr3t");
/// assert_eq!(format!("{token:?}"), "Secret(***)");
/// assert_eq!(token.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself: for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = u8::from(mine.len() != candidate.len());
        for (i, b) in mine.iter().enumerate() {
            diff |= b ^ candidate.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
