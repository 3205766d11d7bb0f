//! Header values and credentials checked before the first request, and never shown.

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::Secret;

pub use dspex_telemetry_core::log_safe;

/// Why a header was refused. Values are never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a header name.
    #[error("{0:?} is not a valid header name")]
    Name(String),
    /// A value with a newline or another character a header cannot hold.
    #[error("the value of header {0:?} holds a newline or another character a header cannot hold")]
    Value(String),
}

/// Checks `headers` and makes them a [`HeaderMap`] whose values are marked sensitive (left
/// out of HTTP/2 header compression and of `Debug`).
///
/// ```
/// use dspex_telemetry_http::{header_map, HeaderError, Secret};
/// let ok = header_map([("x-api-key", &Secret::new("k"))]).unwrap();
/// assert_eq!(ok["x-api-key"], "k");
/// let bad = header_map([("x-api-key", &Secret::new("k\r\nx-forged: 1"))]).unwrap_err();
/// assert_eq!(bad, HeaderError::Value("x-api-key".into()));
/// ```
pub fn header_map<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a Secret)>,
) -> Result<HeaderMap, HeaderError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HeaderError::Name(log_safe(name, 100)))?;
        let mut value = HeaderValue::from_str(value.expose())
            .map_err(|_| HeaderError::Value(log_safe(name, 100)))?;
        value.set_sensitive(true);
        map.append(parsed, value);
    }
    Ok(map)
}

/// HTTP credentials sent as the `Authorization` header: basic (user and password) or a bearer
/// token. `Debug` shows the user only.
///
/// ```
/// use dspex_telemetry_http::{Credentials, Secret};
/// let basic = Credentials::Basic { user: "ops".into(), password: Secret::new("hunter2") };
/// assert_eq!(basic.header_value().unwrap(), "Basic b3BzOmh1bnRlcjI=");
/// assert!(!format!("{basic:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `Bearer <token>`.
    Bearer(Secret),
}

impl Credentials {
    /// The `Authorization` value, marked sensitive.
    pub fn header_value(&self) -> Result<HeaderValue, HeaderError> {
        use base64::Engine;
        let text = match self {
            Credentials::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            ),
            Credentials::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| HeaderError::Value(AUTHORIZATION.as_str().into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}
