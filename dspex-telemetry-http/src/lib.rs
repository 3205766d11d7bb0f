//! HTTP for dspex-telemetry's exporters and alert handlers: one client, checked URLs, secrets.
//!
//! - [`HttpClient`] (the `client` feature, on by default): reqwest over rustls (the `ring` provider), the system's roots plus a CA
//!   file ([`CaCertificates`]), pooled connections, `HTTPS_PROXY`/`NO_PROXY`, a deadline per
//!   request, answers read up to a cap, typed [`HttpError`]s.
//! - [`HttpUrl`]: a URL checked at start (scheme, host, port from 1 to 65535, no credentials)
//!   that shows itself without its path or query; [`UrlText`], the same as written in a file.
//! - [`Secret`], [`Credentials`], [`header_map`]: tokens and passwords that never show in
//!   `Debug`, errors or logs, and header values checked before the first request.
//! - [`log_safe`]: text a peer sent, bounded and escaped for one log line.
//!
//! ```
//! use dspex_telemetry_http::{HttpUrl, UrlError};
//! let url = HttpUrl::parse("https://hooks.slack.com/services/T0/B0/XXXX").unwrap();
//! assert_eq!(url.to_string(), "https://hooks.slack.com/…");
//! assert_eq!(HttpUrl::parse("http://127.0.0.1:99999"), Err(UrlError::Port));
//! ```
#![deny(missing_docs)]

#[cfg(feature = "client")]
mod client;
mod headers;
mod secret;
mod tls;
mod url;

#[cfg(feature = "client")]
pub use client::{
    ClientOptions, DEFAULT_MAX_RESPONSE_BYTES, HttpClient, HttpError, HttpResponse, read_capped,
};
pub use headers::{Credentials, HeaderError, header_map, log_safe};
pub use secret::Secret;
#[cfg(feature = "client")]
pub use tls::tls_config;
pub use tls::{CaCertificates, CertificateError};
pub use url::{HttpUrl, UrlError, UrlText};

/// Re-exported for the methods and header types [`HttpClient::send`] takes.
pub use http;
