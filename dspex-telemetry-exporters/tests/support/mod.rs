//! Test support: a reader of the Prometheus text format that checks what `promtool` does not,
//! a small HTTP client, and a real Prometheus server started for the test.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: samples in order, and the TYPE of each family.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Exposition {
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

/// Parses the text format strictly: label values with `\\`, `\"` and `\n` escapes, and no
/// other backslash sequence; panics naming the line on anything else.
pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    assert!(text.is_empty() || text.ends_with('\n'), "no final newline");
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("line {n}: {line}"));
            assert!(
                out.types.insert(name.into(), kind.into()).is_none(),
                "line {n}: TYPE of {name} twice"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("line {n}: {line}"));
            out.helps.insert(name.into(), help.into());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("line {n}: {line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic()
                    || c == '_'
                    || c == ':'
                    || (i > 0 && c.is_ascii_digit())),
            "line {n}: bad metric name {name:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                let (start, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("line {n}: unclosed {{"));
                if c == '}' {
                    end = start + 1;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(
                    chars.next().map(|x| x.1),
                    Some('"'),
                    "line {n}: label {key} unquoted"
                );
                let mut value = String::new();
                loop {
                    let (_, c) = chars
                        .next()
                        .unwrap_or_else(|| panic!("line {n}: unclosed value"));
                    match c {
                        '"' => break,
                        '\\' => match chars.next().map(|x| x.1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("line {n}: bad escape \\{other:?}"),
                        },
                        c => value.push(c),
                    }
                }
                assert!(
                    labels.insert(key.clone(), value).is_none(),
                    "line {n}: label {key} twice"
                );
            }
            rest = &body[end..];
        }
        let value = rest.trim();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {n}: bad value {v:?}")),
        };
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    out
}

/// Checks what `promtool check metrics` misses: no duplicate series, every sample's family
/// typed, and for histograms ascending `le`, non-decreasing counts, a `+Inf` bucket equal to
/// `_count`, and a `_sum`.
pub fn check_well_formed(exposition: &Exposition) {
    let mut seen = BTreeSet::new();
    for s in &exposition.samples {
        assert!(
            seen.insert((s.name.clone(), s.labels.clone())),
            "duplicate series {} {:?}",
            s.name,
            s.labels
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                s.name.strip_suffix(suffix).filter(|base| {
                    exposition
                        .types
                        .get(*base)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
            })
            .unwrap_or(&s.name);
        assert!(
            exposition.types.contains_key(family),
            "{} has no TYPE",
            s.name
        );
    }
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exposition.samples.iter().filter(|s| s.name == bucket) {
            let mut labels = s.labels.clone();
            let le = labels
                .remove("le")
                .unwrap_or_else(|| panic!("{bucket} without le"));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            series.entry(labels).or_default().push((le, s.value));
        }
        for (labels, buckets) in series {
            assert!(
                buckets.windows(2).all(|w| w[0].0 < w[1].0),
                "{family} {labels:?}: le not ascending"
            );
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family} {labels:?}: counts decrease"
            );
            let (last_le, last_count) = *buckets.last().expect("buckets");
            assert_eq!(
                last_le,
                f64::INFINITY,
                "{family} {labels:?}: no +Inf bucket"
            );
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                exposition.get(&format!("{family}_count"), &pairs),
                Some(last_count),
                "{family} {labels:?}: _count differs from +Inf"
            );
            assert!(
                exposition.get(&format!("{family}_sum"), &pairs).is_some(),
                "{family} {labels:?}: no _sum"
            );
        }
    }
}

/// An HTTP/1.1 GET with `Connection: close`; returns the status and the body.
pub async fn http_get(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let response = String::from_utf8(response).map_err(|_| bad("not UTF-8"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A real Prometheus server on 127.0.0.1, killed on drop.
pub struct PrometheusServer {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `target` every second (with `bearer` as its credentials).
    pub fn start(target: SocketAddr, bearer: Option<&str>) -> Self {
        let binary = which("prometheus").unwrap_or_else(|| {
            panic!("the `prometheus` binary is needed (Debian package `prometheus`; `.ci/run` installs it)")
        });
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("dspex-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let auth = bearer
            .map(|t| format!("    authorization:\n      type: Bearer\n      credentials: {t}\n"))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: dspex\n    static_configs:\n      - targets: ['{target}']\n{auth}"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        PrometheusServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        }
    }

    /// Runs an instant PromQL query; returns the first result's value, if any.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) =
            match tokio::time::timeout(Duration::from_secs(5), http_get(self.addr, &path, &[]))
                .await
            {
                Ok(Ok(r)) => r,
                _ => return None,
            };
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Runs an instant PromQL query, evaluated at `at` (Unix seconds) when given, else now;
    /// returns how many series it gave, or Prometheus's error. After a target went away,
    /// Prometheus marks its gauges stale: only a query at a time before then still sees them.
    pub async fn query_series_at(&self, promql: &str, at: Option<f64>) -> Result<usize, String> {
        let mut path = format!("/api/v1/query?query={}", url_encode(promql));
        if let Some(at) = at {
            path.push_str(&format!("&time={at:.3}"));
        }
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(5), http_get(self.addr, &path, &[]))
                .await
                .map_err(|_| "no answer within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {}", json["error"]));
        }
        Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
    }

    /// Polls `promql` until it returns a value satisfying `ok` (30 s at most).
    pub async fn until(&self, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let limit = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < limit {
            if let Some(v) = self.query(promql).await {
                last = Some(v);
                if ok(v) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        panic!(
            "`{promql}` never satisfied the test within 30 s (last value {last:?}); prometheus log:\n{tail}"
        );
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus push gateway on 127.0.0.1, killed on drop.
pub struct PushGatewayServer {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
    /// For a gateway serving TLS: its URL and a client trusting its CA.
    tls: Option<(String, dspex_telemetry_http::HttpClient)>,
}

impl PushGatewayServer {
    /// Starts `prometheus-pushgateway` (with `web_config` as its web configuration, for basic
    /// auth) and waits until it is ready.
    pub async fn start(web_config: Option<&str>) -> Self {
        Self::start_on(free_port(), web_config).await
    }

    /// As `start`, on a given port (to bring a gateway back where one was).
    pub async fn start_on(port: u16, web_config: Option<&str>) -> Self {
        Self::start_with(port, web_config, None).await
    }

    /// Starts one serving TLS with `cert` and `key` (made by [`test_ca`]; `ca` trusts them).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let web = tls::prometheus_tls_web_config_text(cert, key);
        let client = dspex_telemetry_http::HttpClient::new(&dspex_telemetry_http::ClientOptions {
            ca: dspex_telemetry_http::CaCertificates::from_file(ca).expect("the test CA"),
            max_response_bytes: 1 << 20,
            ..Default::default()
        })
        .expect("a client trusting the test CA");
        Self::start_with(free_port(), Some(&web), Some(client)).await
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        match &self.tls {
            Some((url, _)) => url.clone(),
            None => format!("http://{}", self.addr),
        }
    }

    async fn start_with(
        port: u16,
        web_config: Option<&str>,
        client: Option<dspex_telemetry_http::HttpClient>,
    ) -> Self {
        let binary = which("prometheus-pushgateway").unwrap_or_else(|| {
            panic!("the `prometheus-pushgateway` binary is needed (Debian package `prometheus-pushgateway`; `cargo xtask test` installs it)")
        });
        let dir =
            std::env::temp_dir().join(format!("dspex-pushgateway-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = Command::new(binary);
        command
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--persistence.file=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pushgateway.log")).expect("log file"));
        if let Some(web_config) = web_config {
            let path = dir.join("web.yml");
            std::fs::write(&path, web_config).expect("web config");
            command.arg(format!("--web.config.file={}", path.display()));
        }
        let child = command.spawn().expect("start prometheus-pushgateway");
        let server = PushGatewayServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
            tls: client.map(|c| (format!("https://127.0.0.1:{port}"), c)),
        };
        let limit = Instant::now() + Duration::from_secs(20);
        loop {
            // Ready, or asking for credentials: either way it serves.
            if let Ok((200 | 401, _)) = server.get("/-/ready", &[]).await {
                return server;
            }
            assert!(
                Instant::now() < limit,
                "the push gateway did not start within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A GET over http, or over https when the gateway serves TLS.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
        let Some((url, client)) = &self.tls else {
            return http_get(self.addr, path, headers).await;
        };
        let url = dspex_telemetry_http::HttpUrl::parse(&format!("{url}{path}")).expect("a URL");
        let mut map = dspex_telemetry_http::http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                dspex_telemetry_http::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("a header name"),
                dspex_telemetry_http::http::HeaderValue::from_str(v).expect("a header value"),
            );
        }
        match client
            .send(
                dspex_telemetry_http::http::Method::GET,
                &url,
                &map,
                "",
                Duration::from_secs(5),
            )
            .await
        {
            Ok(answer) => Ok((
                answer.status.as_u16(),
                String::from_utf8_lossy(&answer.body).into_owned(),
            )),
            Err(dspex_telemetry_http::HttpError::Status { status, body, .. }) => {
                Ok((status.as_u16(), body))
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// The gateway's own `/metrics` (what Prometheus would scrape from it), parsed.
    pub async fn scraped(&self, auth: &[(&str, &str)]) -> Exposition {
        let (status, body) = self
            .get("/metrics", auth)
            .await
            .expect("scrape the gateway");
        assert_eq!(status, 200, "{body}");
        parse(&body)
    }
}

impl Drop for PushGatewayServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Etsy StatsD daemon (npm `statsd@0.9.0`, installed by `cargo xtask test` into
/// `target/test-peers`) on 127.0.0.1, killed on drop. It never flushes during a test, so its
/// management port shows everything received.
pub struct StatsdServer {
    pub addr: SocketAddr,
    mgmt: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl StatsdServer {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts it on a given UDP port (to bring a server back where one was).
    pub async fn start_on(port: u16) -> Self {
        let peers = std::env::var_os("DSPEX_TEST_PEERS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers")
            });
        let stats_js = peers.join("node_modules/statsd/stats.js");
        assert!(
            stats_js.is_file(),
            "no StatsD daemon at {} (`cargo xtask test` installs npm statsd@0.9.0 there)",
            stats_js.display()
        );
        let node = which("node").expect("the `node` binary is needed for the StatsD daemon");
        let mgmt_port = free_port();
        let dir = std::env::temp_dir().join(format!("dspex-statsd-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("config.js");
        std::fs::write(
            &config,
            format!(
                "{{ port: {port}, address: \"127.0.0.1\", mgmt_address: \"127.0.0.1\", mgmt_port: {mgmt_port}, flushInterval: 3600000, backends: [] }}\n"
            ),
        )
        .expect("config");
        let child = Command::new(node)
            .arg(&stats_js)
            .arg(&config)
            .stdout(std::fs::File::create(dir.join("statsd.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start the StatsD daemon");
        let server = StatsdServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            mgmt: SocketAddr::from(([127, 0, 0, 1], mgmt_port)),
            child,
            dir,
        };
        let limit = Instant::now() + Duration::from_secs(20);
        while server.command("health").await.is_none() {
            assert!(
                Instant::now() < limit,
                "the StatsD daemon did not start within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// One management command's answer (the daemon takes one per connection).
    async fn command(&self, command: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(self.mgmt).await.ok()?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Listings end with "END"; `health` answers one line. Stop at either, or when the
        // daemon goes quiet.
        loop {
            let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await
            else {
                break;
            };
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"END\n\n") || (command == "health" && answer.ends_with(b"\n")) {
                break;
            }
        }
        String::from_utf8(answer).ok().filter(|a| !a.is_empty())
    }

    /// Counters (or gauges) as the daemon holds them: `'key': number` pairs.
    pub async fn numbers(&self, kind: &str) -> BTreeMap<String, f64> {
        let text = self.command(kind).await.unwrap_or_default();
        let mut out = BTreeMap::new();
        for part in text.split([',', '{', '}', '\n']) {
            if let Some((key, value)) = part.split_once(": ") {
                let key = key.trim().trim_matches('\'');
                if let Ok(v) = value.trim().parse() {
                    out.insert(key.to_owned(), v);
                }
            }
        }
        out
    }

    /// Timers as the daemon holds them: key → the values received, and how many there are
    /// (the daemon lists at most 100 and says how many more).
    pub async fn timers(&self) -> BTreeMap<String, (Vec<f64>, usize)> {
        let text = self.command("timers").await.unwrap_or_default();
        let mut out = BTreeMap::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find(": [") {
            let key = rest[..open]
                .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .trim_matches('\'');
            let after = &rest[open + 3..];
            let close = after.find(']').unwrap_or(after.len());
            let mut values = Vec::new();
            let mut count = 0;
            for item in after[..close]
                .split([',', '\n'])
                .map(str::trim)
                .filter(|i| !i.is_empty())
            {
                if let Some(more) = item
                    .strip_prefix("... ")
                    .and_then(|m| m.strip_suffix(" more items"))
                {
                    count += more.parse::<usize>().unwrap_or(0);
                } else if let Ok(v) = item.parse() {
                    values.push(v);
                    count += 1;
                }
            }
            out.insert(key.to_owned(), (values, count));
            rest = &after[close.min(after.len())..];
        }
        out
    }

    /// Waits until `kind`'s `key` reaches `want` (10 s at most); returns what it holds last.
    pub async fn until_number(&self, kind: &str, key: &str, want: f64) -> Option<f64> {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.numbers(kind).await.get(key).copied();
            if got == Some(want) || Instant::now() > limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for StatsdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The OTLP/HTTP receiver (`tests/otlp_receiver.py`, on the official decoders from PyPI,
/// installed by `cargo xtask test` into `target/test-peers/otlp-venv`), killed on drop.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Where its plain-HTTP `GET /spans` answers (its HTTP address unless it serves TLS).
    pub control: SocketAddr,
    child: Child,
}

/// How a test's OTLP receiver behaves.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Serve both OTLP ports over TLS with this certificate and key (the control port stays
    /// plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The statuses of successive trace exports (503 carries `Retry-After: 1`).
    pub answers: Vec<u16>,
    /// Read each trace export and never answer.
    pub hang: bool,
    /// Answer every trace export 500 with a body of this many bytes.
    pub huge_error: usize,
    /// Keep only the number of spans received ([`OtlpReceiver::count`]).
    pub count_only: bool,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, ReceiverOptions::default()).await
    }

    /// Starts the receiver on `port` (0: a free one, which it binds itself, so no other test
    /// can take it in between), its gRPC and control ports free ones.
    pub async fn start_with(port: u16, options: ReceiverOptions) -> Self {
        let peers = std::env::var_os("DSPEX_TEST_PEERS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers")
            });
        let python = peers.join("otlp-venv/bin/python");
        assert!(
            python.is_file(),
            "no Python environment with opentelemetry-proto at {} (`cargo xtask test` creates it)",
            python.display()
        );
        // From this crate's tests or from a sibling crate's that include this module.
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../dspex-telemetry-exporters/tests/otlp_receiver.py");
        let mut command = Command::new(python);
        command.arg(script).arg(port.to_string()).arg("0");
        if let Some((cert, key)) = &options.tls {
            command.arg("--tls").arg(cert).arg(key);
        }
        if !options.answers.is_empty() {
            let answers: Vec<String> = options.answers.iter().map(u16::to_string).collect();
            command.arg("--answers").arg(answers.join(","));
        }
        if options.hang {
            command.arg("--hang");
        }
        if options.count_only {
            command.arg("--count-only");
        }
        if options.huge_error > 0 {
            command
                .arg("--huge-error")
                .arg(options.huge_error.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .expect("join")
            .unwrap_or_default();
        let ports: Vec<u16> = line
            .strip_prefix("ready ")
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            ports.len(),
            3,
            "the OTLP receiver did not start within 20 s (it said {line:?})"
        );
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let receiver = OtlpReceiver {
            addr: at(ports[0]),
            grpc: at(ports[1]),
            control: at(ports[2]),
            child,
        };
        let limit = Instant::now() + Duration::from_secs(20);
        while !matches!(
            http_get(receiver.control, "/spans", &[]).await,
            Ok((200, _))
        ) {
            assert!(
                Instant::now() < limit,
                "the OTLP receiver did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        receiver
    }

    /// How many spans reached it (with `count_only`).
    pub async fn count(&self) -> u64 {
        let (status, body) = http_get(self.control, "/count", &[])
            .await
            .expect("GET /count");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("JSON")
    }

    /// The content encodings of the trace exports that reached it, in order.
    pub async fn attempts(&self) -> Vec<String> {
        let (status, body) = http_get(self.control, "/attempts", &[])
            .await
            .expect("GET /attempts");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("JSON")
    }

    /// Every metric data point received so far.
    pub async fn points(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.control, "/points", &[])
            .await
            .expect("GET /points");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("JSON")
    }

    /// Every span received so far.
    pub async fn spans(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.control, "/spans", &[])
            .await
            .expect("GET /spans");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "../../../dspex-telemetry-http/tests/support/tls.rs"]
pub mod tls;
#[allow(unused_imports)]
pub use tls::test_ca;
