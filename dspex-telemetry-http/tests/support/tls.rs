//! TLS peers for the tests: a CA and a server certificate made with `openssl`, and an HTTPS
//! receiver (Python's `http.server` behind `ssl`) that writes down every request it gets.
//! Shared by the crates whose tests send over https (`#[path]`-included).

#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a server certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`:
/// (the CA's PEM, the server's certificate, its key).
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("create the certificate folder");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect(
                "openssl must be installed to make the test CA (`cargo xtask test` installs it)",
            );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dspex test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A fresh folder under the system's temporary one, named for `what` and this process.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dspex-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// A web configuration for Prometheus' servers (Alertmanager, the push gateway) that turns
/// TLS on with `cert` and `key`.
pub fn prometheus_tls_web_config_text(cert: &Path, key: &Path) -> String {
    format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        cert.display(),
        key.display()
    )
}

/// The same, written into `dir`; returns the file's path.
pub fn prometheus_tls_web_config(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let path = dir.join("web-tls.yml");
    std::fs::write(&path, prometheus_tls_web_config_text(cert, key))
        .expect("write the web configuration");
    path
}

/// One request an [`HttpsReceiver`] got.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

/// An HTTPS server on 127.0.0.1 with the given certificate, killed on drop.
pub struct HttpsReceiver {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl HttpsReceiver {
    /// Starts one answering 200 (500 to the first `fail_first` requests).
    pub fn start(cert: &Path, key: &Path, fail_first: u32) -> Self {
        Self::start_with(cert, key, &["--fail-first", &fail_first.to_string()])
    }

    /// Starts one with the script's own options (`--redirect-to URL`, say).
    pub fn start_with(cert: &Path, key: &Path, options: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dspex-telemetry-http/tests/support/https_receiver.py");
        let log = cert.with_file_name(format!(
            "received-{}.jsonl",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(cert)
            .arg(key)
            .arg(&log)
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("python3 must be installed to run {}: {e}", script.display())
            });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("the receiver's stdout"))
            .read_line(&mut line)
            .expect("read the receiver's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the HTTPS receiver did not start: {line:?}"));
        HttpsReceiver {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
        }
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// What it has received so far.
    pub fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a request the receiver wrote down"))
            .collect()
    }

    /// Waits (up to 15 s) until it has received `n` requests, and returns them.
    pub async fn until_received(&self, n: usize) -> Vec<Received> {
        let limit = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.received();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < limit,
                "the HTTPS receiver got {} requests, not {n}, within 15 s",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
