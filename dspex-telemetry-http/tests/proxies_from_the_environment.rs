//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are honoured: an https request tunnels through a
//! CONNECT proxy to a real HTTPS receiver; an http one goes to a forward proxy; a host in
//! `NO_PROXY` is reached directly. (Alone in its file: it sets the process's environment, which
//! the client reads when it is built.)

#[path = "support/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dspex_telemetry_http::http::{HeaderMap, Method};
use dspex_telemetry_http::{CaCertificates, ClientOptions, HttpClient, HttpUrl};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A proxy on 127.0.0.1 that writes down each request line: CONNECT is tunnelled to its
/// target, anything else is answered `200 proxied` without going anywhere.
async fn proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = lines.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                seen.lock().unwrap().push(line.trim().to_owned());
                // The rest of the head.
                let mut content_length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                }
                // The body is read through the buffer, which may hold it already.
                let mut body = vec![0u8; content_length];
                if !line.starts_with("CONNECT ") {
                    let _ = reader.read_exact(&mut body).await;
                }
                let mut stream = reader.into_inner();
                if let Some(target) = line.strip_prefix("CONNECT ") {
                    let target = target.split_whitespace().next().unwrap_or("").to_owned();
                    let Ok(mut upstream) =
                        TcpStream::connect(target.replace("localhost", "127.0.0.1")).await
                    else {
                        return;
                    };
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                } else {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied")
                        .await;
                }
            });
        }
    });
    (addr, lines)
}

#[tokio::test(flavor = "current_thread")]
async fn proxies_are_taken_from_the_environment() {
    let dir = tls::temp_dir("http-proxy");
    let (ca, cert, key) = tls::test_ca(&dir);
    let receiver = tls::HttpsReceiver::start(&cert, &key, 0);
    let (proxy_addr, lines) = proxy().await;
    // SAFETY: this test binary runs this one test, on one thread; nothing else reads the
    // environment meanwhile.
    unsafe {
        std::env::set_var("HTTPS_PROXY", format!("http://{proxy_addr}"));
        std::env::set_var("HTTP_PROXY", format!("http://{proxy_addr}"));
        std::env::set_var("NO_PROXY", "direct.invalid");
    }
    let client = HttpClient::new(&ClientOptions {
        ca: CaCertificates::from_file(&ca).unwrap(),
        ..ClientOptions::default()
    })
    .unwrap();
    let send = |url: String| {
        let client = client.clone();
        async move {
            client
                .send(
                    Method::POST,
                    &HttpUrl::parse(&url).unwrap(),
                    &HeaderMap::new(),
                    "{}",
                    Duration::from_secs(5),
                )
                .await
        }
    };

    // https: a tunnel to the real receiver (the certificate names localhost).
    let port = receiver.addr.port();
    let answer = send(format!("https://localhost:{port}/hooks/tunnelled"))
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"ok");
    assert_eq!(receiver.until_received(1).await[0].path, "/hooks/tunnelled");
    // http: to the forward proxy, which answers itself (the host does not exist).
    let answer = send("http://forward.invalid/hooks/x".into()).await.unwrap();
    assert_eq!(&answer.body[..], b"proxied");
    // NO_PROXY: straight to the host, which does not exist.
    let err = send("http://direct.invalid/hooks/x".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, dspex_telemetry_http::HttpError::Connect { .. }),
        "{err}"
    );

    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        vec![
            format!("CONNECT localhost:{port} HTTP/1.1"),
            "POST http://forward.invalid/hooks/x HTTP/1.1".to_owned(),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}
