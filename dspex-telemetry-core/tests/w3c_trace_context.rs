//! The W3C Trace Context conformance suite (w3c/trace-context's `test/test.py`, vendored in
//! `tests/w3c-trace-context` with its licence) against a small service built on the `http`
//! feature, at the suite's strictest level and Trace Context level 2: all 41 tests must pass,
//! none skipped.
//!
//! The service is the suite's usual one: the harness POSTs a JSON list of `{url, arguments}`;
//! for each, the service makes a call of its own (a child span of the request's context, so
//! each call has its own parent id) with the propagation headers `inject` writes, and POSTs
//! `arguments` to `url`. The request's context is the one the tower layer extracted.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dspex_telemetry_core::TraceContext;
use dspex_telemetry_core::http::{CorrelationLayer, inject};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, service_fn};

fn harness_python() -> PathBuf {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let python = peers.join("w3c-venv/bin/python");
    assert!(
        python.is_file(),
        "no Python with aiohttp at {}: run `cargo xtask peers` (or `cargo xtask test`), which installs it",
        python.display()
    );
    python
}

/// POSTs `body` to `url` with `headers`, over a connection of its own.
async fn post(url: &str, headers: HeaderMap, body: Vec<u8>) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let authority = uri.authority().ok_or("no authority")?.clone();
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::post(uri.path())
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    request.headers_mut().extend(headers);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The service under test: each action becomes a call made from a child span of the request.
async fn serve(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ctx = request
        .extensions()
        .get::<TraceContext>()
        .cloned()
        .expect("the layer puts the request's context in its extensions");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let actions: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    for action in actions {
        let (Some(url), arguments) = (action["url"].as_str(), &action["arguments"]) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        inject(&ctx.child(), &mut headers);
        let body = serde_json::to_vec(arguments).unwrap_or_default();
        if let Err(e) = post(url, headers, body).await {
            eprintln!("service: the callback to {url} failed: {e}");
        }
    }
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"null")))
        .unwrap())
}

/// A free port on 127.0.0.1 for the harness (taken from the OS, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_w3c_trace_context_suite_passes_at_level_2() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service =
                TowerToHyperService::new(CorrelationLayer::new().layer(service_fn(serve)));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });

    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/w3c-trace-context");
    let python = harness_python();
    let harness_port = free_port().to_string();
    let endpoint = format!("http://{address}/test");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("test.py")
            .arg(endpoint)
            .current_dir(suite)
            .env("STRICT_LEVEL", "2")
            .env("SPEC_LEVEL", "2")
            .env("HARNESS_HOST", "127.0.0.1")
            .env("HARNESS_PORT", harness_port)
            .env("HARNESS_TIMEOUT", "10")
            .output()
            .expect("the harness runs")
    });
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the suite ends within 5 minutes")
        .unwrap();
    server.abort();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let ran = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no test count in the harness's output:\n{report}"));
    assert!(output.status.success(), "the suite failed:\n{report}");
    assert_eq!(ran, 41, "every test of the suite runs:\n{report}");
    assert!(
        report.lines().any(|l| l == "OK") && !report.contains("skipped"),
        "all pass, none skipped:\n{report}"
    );
}
