//! HTTP for dspex-telemetry's exporters and alert handlers: one client, checked URLs, secrets.
//!
//! - [`HttpClient`]: reqwest over rustls (the `ring` provider), the system's roots plus a CA
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

mod client;
mod secret;
mod tls;
mod url;

pub use client::{
    ClientOptions, Credentials, DEFAULT_MAX_RESPONSE_BYTES, HeaderError, HttpClient, HttpError,
    HttpResponse, header_map, log_safe, read_capped,
};
pub use secret::Secret;
pub use tls::{CaCertificates, CertificateError, tls_config};
pub use url::{HttpUrl, UrlError, UrlText};

/// Re-exported for the methods and header types [`HttpClient::send`] takes.
pub use http;
