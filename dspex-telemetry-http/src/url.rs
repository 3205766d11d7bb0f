//! URLs checked once, at start, and shown without what they may hide: a password, a query
//! token, a webhook's path (a Slack incoming webhook's token is its path).

use std::fmt;

/// Why a URL was refused. No variant repeats the URL: it may hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all, or one with characters a URL cannot hold.
    #[error("not a valid URL ({0})")]
    Malformed(String),
    /// Another scheme than `http` or `https`.
    #[error("the scheme must be `http` or `https`")]
    Scheme,
    /// No host after the scheme.
    #[error("the URL has no host")]
    NoHost,
    /// A port that is not a number from 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    Port,
    /// `user:password@` in the URL.
    #[error("credentials in the URL are refused: give them in their own keys")]
    Credentials,
}

/// A checked `http://` or `https://` URL: a host, a port from 1 to 65535 and no credentials.
///
/// `Display` and `Debug` show the scheme, host and port only, and `/…` or `?…` where a path or
/// a query was given; [`HttpUrl::expose`] gives the whole URL to the one place that sends to it.
///
/// ```
/// use dspex_telemetry_http::{HttpUrl, UrlError};
/// let hook = HttpUrl::parse("https://hooks.slack.com/services/T000/B000/XXXX").unwrap();
/// assert_eq!(hook.to_string(), "https://hooks.slack.com/…");
/// assert_eq!(format!("{hook:?}"), r#"HttpUrl("https://hooks.slack.com/…")"#);
/// assert_eq!(HttpUrl::parse("http://127.0.0.1:99999").unwrap_err(), UrlError::Port);
/// assert_eq!(HttpUrl::parse("http://127.0.0.1:abc").unwrap_err(), UrlError::Port);
/// assert_eq!(HttpUrl::parse("http://u:hunter2@host").unwrap_err(), UrlError::Credentials);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HttpUrl {
    url: url::Url,
}

impl HttpUrl {
    /// Checks `text`.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(if text.contains(':') {
                UrlError::Scheme
            } else {
                UrlError::Malformed("no `scheme://`".into())
            });
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Scheme);
        }
        // The authority is checked before the URL parser sees it, so that its errors, which
        // are about the authority, come out as ours.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let host_end = if authority.starts_with('[') {
            authority.find(']').map_or(authority.len(), |i| i + 1)
        } else {
            authority.find(':').unwrap_or(authority.len())
        };
        let (host, port) = authority.split_at(host_end);
        if host.is_empty() || host == "[]" {
            return Err(UrlError::NoHost);
        }
        if let Some(port) = port.strip_prefix(':') {
            let valid = !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p != 0);
            if !valid {
                return Err(UrlError::Port);
            }
        } else if !port.is_empty() {
            return Err(UrlError::Malformed("unexpected text after the host".into()));
        }
        let url = url::Url::parse(text).map_err(|e| UrlError::Malformed(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        Ok(HttpUrl { url })
    }

    /// The whole URL, secrets included: for the request, never for a log line.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// Whether it is `https://`.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The host.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }

    /// The port, given or the scheme's.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The path (`/` at least).
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// This URL with `path` appended to its own path (one `/` between them); the query (a
    /// token, say) is kept.
    ///
    /// ```
    /// use dspex_telemetry_http::HttpUrl;
    /// let base = HttpUrl::parse("https://am.example.com:9093/").unwrap();
    /// assert_eq!(base.join("api/v2/alerts").expose(), "https://am.example.com:9093/api/v2/alerts");
    /// let gateway = HttpUrl::parse("https://gw.example.com/push?token=t").unwrap();
    /// assert_eq!(gateway.join("metrics/job/a").expose(), "https://gw.example.com/push/metrics/job/a?token=t");
    /// ```
    pub fn join(&self, path: &str) -> HttpUrl {
        let mut url = self.url.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        HttpUrl { url }
    }

    #[cfg(feature = "client")]
    pub(crate) fn as_url(&self) -> &url::Url {
        &self.url
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        write!(f, "{}://{}", url.scheme(), url.host_str().unwrap_or(""))?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        if url.path() != "/" && !url.path().is_empty() {
            f.write_str("/…")?;
        }
        if url.query().is_some() {
            f.write_str("?…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl(\"{self}\")")
    }
}

/// A URL as written in a configuration file, not yet checked: `Debug` shows it redacted like
/// [`HttpUrl`] (or `"***"` when it cannot be read as one), so a configuration can be printed.
///
/// ```
/// use dspex_telemetry_http::UrlText;
/// let url = UrlText::new("http://127.0.0.1:9091/?token=s3cr3t");
/// assert_eq!(format!("{url:?}"), r#""http://127.0.0.1:9091?…""#);
/// assert!(url.check().is_ok());
/// ```
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct UrlText(String);

impl UrlText {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        UrlText(text.into())
    }

    /// Checks it.
    pub fn check(&self) -> Result<HttpUrl, UrlError> {
        HttpUrl::parse(&self.0)
    }

    /// The text as written: for building a request, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UrlText {
    fn from(text: &str) -> Self {
        UrlText::new(text)
    }
}

impl From<String> for UrlText {
    fn from(text: String) -> Self {
        UrlText(text)
    }
}

impl fmt::Debug for UrlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.check() {
            Ok(url) => write!(f, "\"{url}\""),
            Err(_) => f.write_str("\"***\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (text, want) in [
            ("http://127.0.0.1:99999", UrlError::Port),
            ("http://127.0.0.1:abc", UrlError::Port),
            ("http://127.0.0.1:0/x", UrlError::Port),
            ("http://127.0.0.1:/x", UrlError::Port),
            ("http://", UrlError::NoHost),
            ("http:///alerts", UrlError::NoHost),
            ("https://:9093", UrlError::NoHost),
            ("ftp://host/x", UrlError::Scheme),
            ("mailto:ops@example.com", UrlError::Scheme),
            ("http://ops:hunter2@host:9091", UrlError::Credentials),
            ("http://ops@host", UrlError::Credentials),
        ] {
            assert_eq!(HttpUrl::parse(text), Err(want), "{text}");
        }
        assert!(matches!(
            HttpUrl::parse("hooks.slack.com/services/T/B/X"),
            Err(UrlError::Malformed(_))
        ));
    }

    #[test]
    fn good_urls_keep_their_parts() {
        let url = HttpUrl::parse("https://[::1]:8443/hook?token=abc").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("[::1]", 8443, "/hook")
        );
        assert!(url.is_https());
        assert_eq!(url.expose(), "https://[::1]:8443/hook?token=abc");
        assert_eq!(HttpUrl::parse("http://example.com").unwrap().port(), 80);
        assert_eq!(HttpUrl::parse("HTTPS://example.com").unwrap().port(), 443);
    }

    #[test]
    fn shown_forms_hide_path_query_and_credentials() {
        let url =
            HttpUrl::parse("https://hooks.example.com:8443/services/T0/B0/s3cr3t?token=t0k3n")
                .unwrap();
        for shown in [
            url.to_string(),
            format!("{url:?}"),
            format!("{:?}", UrlText::new(url.expose())),
            format!("{:?}", UrlText::new("http://u:s3cr3t@h/t0k3n")),
        ] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("t0k3n"),
                "{shown}"
            );
        }
        assert_eq!(url.to_string(), "https://hooks.example.com:8443/…?…");
    }
}
