//! The shared client against real peers: an HTTPS receiver with a CA the test makes (trusted
//! through the CA file, refused without it), error statuses typed and bounded, redirects not
//! followed, a 10 MB answer read only up to the cap, a silent peer costing only the deadline.
//! No error names a URL's path or query.

#[path = "support/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use dspex_telemetry_http::http::{HeaderMap, Method};
use dspex_telemetry_http::{
    CaCertificates, ClientOptions, HttpClient, HttpError, HttpUrl, Secret, header_map,
};
use tls::{HttpsReceiver, temp_dir, test_ca};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(ca: Option<&std::path::Path>) -> HttpClient {
    HttpClient::new(&ClientOptions {
        ca: ca.map_or_else(CaCertificates::none, |p| {
            CaCertificates::from_file(p).unwrap()
        }),
        ..ClientOptions::default()
    })
    .unwrap()
}

const SECRET_PATH: &str = "/services/T000/B000/s3cr3t-path?token=t0k3n";

fn assert_no_secret(text: &str) {
    for secret in ["s3cr3t", "t0k3n", "services"] {
        assert!(!text.contains(secret), "{secret:?} shows in {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_ca_file_delivers_and_without_it_is_refused() {
    let dir = temp_dir("http-tls");
    let (ca, cert, key) = test_ca(&dir);
    let receiver = HttpsReceiver::start(&cert, &key, 0);
    let url = HttpUrl::parse(&receiver.url(SECRET_PATH)).unwrap();
    let headers = header_map([("x-api-key", &Secret::new("k3y"))]).unwrap();

    let answer = client(Some(&ca))
        .send(
            Method::POST,
            &url,
            &headers,
            r#"{"a":1}"#,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(&answer.body[..], b"ok");
    let seen = receiver.until_received(1).await;
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, SECRET_PATH);
    assert_eq!(seen[0].body, r#"{"a":1}"#);
    assert_eq!(seen[0].headers["x-api-key"], "k3y");

    // Another method to the same receiver.
    client(Some(&ca))
        .send(
            Method::PUT,
            &url,
            &HeaderMap::new(),
            "x",
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    let err = client(None)
        .send(Method::POST, &url, &headers, "{}", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("certificate"), "{text}");
    assert_no_secret(&text);
    assert_eq!(
        receiver.received().len(),
        2,
        "nothing reached it without trust"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_typed_and_redirects_are_not_followed() {
    let dir = temp_dir("http-status");
    let (ca, cert, key) = test_ca(&dir);
    let failing = HttpsReceiver::start(&cert, &key, 1);
    let url = HttpUrl::parse(&failing.url(SECRET_PATH)).unwrap();
    let client = client(Some(&ca));
    let err = client
        .send(
            Method::POST,
            &url,
            &HeaderMap::new(),
            "{}",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(500));
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .ends_with("answered 500 Internal Server Error: try again"),
        "{err}"
    );
    assert_no_secret(&format!("{err} {err:?}"));

    let target = HttpsReceiver::start(&cert, &key, 0);
    let redirecting =
        HttpsReceiver::start_with(&cert, &key, &["--redirect-to", &target.url("/elsewhere")]);
    let err = client
        .send(
            Method::POST,
            &HttpUrl::parse(&redirecting.url(SECRET_PATH)).unwrap(),
            &header_map([("authorization", &Secret::new("Bearer t0k3n"))]).unwrap(),
            "{}",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(307));
    assert!(!err.is_retryable());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(target.received().is_empty(), "the redirect was followed");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_answer_is_read_only_up_to_the_cap() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let status = if request[..n].starts_with(b"GET /ok") {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let size = 10 * 1024 * 1024;
                let head = format!("HTTP/1.1 {status}\r\ncontent-length: {size}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let chunk = vec![b'\n'; 64 * 1024];
                for _ in 0..size / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = HttpClient::new(&ClientOptions {
        max_response_bytes: 1000,
        ..ClientOptions::default()
    })
    .unwrap();
    let get = |path: &str| {
        let url = HttpUrl::parse(&format!("http://{addr}{path}")).unwrap();
        let client = client.clone();
        async move {
            client
                .send(
                    Method::GET,
                    &url,
                    &HeaderMap::new(),
                    "",
                    Duration::from_secs(10),
                )
                .await
        }
    };
    let err = get("/").await.unwrap_err();
    let HttpError::Status { body, .. } = &err else {
        panic!("{err}")
    };
    // Newlines escaped, and cut at the error's own 200 characters.
    assert!(body.starts_with(r"\n\n") && body.ends_with('…'), "{body}");
    assert!(err.to_string().len() < 500, "{err}");
    assert!(!err.to_string().contains('\n'));

    // A 200 with the same 10 MB: the body handed back stops at the cap.
    let answer = get("/ok").await.unwrap();
    assert_eq!(answer.body.len(), 1000);
    assert!(answer.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_costs_the_deadline_and_nothing_more() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let started = Instant::now();
    let err = client(None)
        .send(
            Method::POST,
            &HttpUrl::parse(&format!("http://{addr}{SECRET_PATH}")).unwrap(),
            &HeaderMap::new(),
            "{}",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_no_secret(&err.to_string());
    held.abort();
}
