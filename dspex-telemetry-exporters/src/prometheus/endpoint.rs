//! The `/metrics` endpoint (the `prometheus` feature).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod connections;

pub use connections::EndpointStats;
use connections::{Connections, Renders, Tracked};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{CONTENT_TYPE, PrometheusError};
use crate::Secret;

/// The `/metrics` endpoint's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Where to listen (default `127.0.0.1:9568`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The path that serves the metrics (default `/metrics`).
    pub path: String,
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// How often histogram samples are folded into their buckets between scrapes, which bounds
    /// the memory they take (default 5 s).
    pub upkeep_interval: Duration,
    /// How long a client has to send a request's headers, counted from when the connection
    /// opens or its previous answer was sent: a slowloris or an idle keep-alive connection is
    /// closed then (default 10 s).
    pub header_read_timeout: Duration,
    /// How long preparing one answer (its render) may take before its connection may be closed
    /// to make room (default 30 s). Once hyper holds the answer, the connection counts as idle:
    /// a client that does not read its answer is closed like any idle one.
    pub write_timeout: Duration,
    /// Open connections at most (default 512). A connection past it makes room by closing the
    /// one idle longest; with none idle, it waits in the listen queue until one ends. Running
    /// out of file descriptors does the same.
    pub max_connections: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9568)),
            path: "/metrics".into(),
            bearer_token: None,
            upkeep_interval: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// A running `/metrics` endpoint. Dropping it stops it too; [`PrometheusEndpoint::shutdown`]
/// waits until it has.
#[derive(Debug)]
pub struct PrometheusEndpoint {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    serving: Arc<Serving>,
}

impl PrometheusEndpoint {
    /// Binds `config.listen` and serves `handle`'s metrics at `config.path` on the current
    /// tokio runtime; a second task folds histogram samples every `upkeep_interval`.
    pub async fn start(
        config: &PrometheusConfig,
        handle: PrometheusHandle,
    ) -> Result<Self, PrometheusError> {
        if !config.path.starts_with('/') {
            return Err(PrometheusError::Invalid {
                key: "path",
                reason: format!("{:?} must start with `/`", config.path),
            });
        }
        for (key, value) in [
            ("upkeep_interval", config.upkeep_interval),
            ("header_read_timeout", config.header_read_timeout),
            ("write_timeout", config.write_timeout),
        ] {
            if value.is_zero() || value > MAX_DURATION {
                return Err(PrometheusError::Invalid {
                    key,
                    reason: "must be above zero and at most a day".into(),
                });
            }
        }
        if config.max_connections == 0 {
            return Err(PrometheusError::Invalid {
                key: "max_connections",
                reason: "must be above zero".into(),
            });
        }
        let listener = listen(config.listen).map_err(|source| PrometheusError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| PrometheusError::Bind {
                addr: config.listen,
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let serving = Arc::new(Serving {
            renders: Arc::new(Renders::new(handle)),
            path: config.path.clone(),
            token: config.bearer_token.clone(),
            connections: Arc::default(),
            header_read_timeout: config.header_read_timeout,
            write_timeout: config.write_timeout,
            max_connections: config.max_connections,
        });
        let task = tokio::spawn(serve(
            listener,
            serving.clone(),
            config.upkeep_interval,
            stopped,
        ));
        Ok(PrometheusEndpoint {
            addr,
            stop,
            task: Some(task),
            serving,
        })
    }

    /// What the endpoint has done so far: connections open and closed to make room, renders.
    pub fn stats(&self) -> EndpointStats {
        self.serving.stats()
    }

    /// The address it listens on (with the port chosen, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits for the accept task to end; open connections see the same
    /// stop and close at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PrometheusEndpoint {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Serving {
    renders: Arc<Renders>,
    path: String,
    token: Option<Secret>,
    connections: Arc<Connections>,
    header_read_timeout: Duration,
    write_timeout: Duration,
    max_connections: usize,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("path", &self.path)
            .field("token", &self.token)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Connections the kernel queues for `accept`: a burst past `max_connections` waits there to be
/// served as others end, instead of having its handshakes dropped and retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The longest any of the endpoint's durations may be (hyper adds them to the clock).
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// How long to wait before trying again when no connection can be closed to make room.
const RETRY: Duration = Duration::from_millis(20);

/// How long a new connection has to send its first request before it may be closed to make
/// room (at most the header-read deadline).
const GRACE: Duration = Duration::from_millis(250);

async fn serve(
    listener: TcpListener,
    serving: Arc<Serving>,
    upkeep_interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut upkeep = tokio::time::interval(upkeep_interval);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Room for one more connection: make it by closing the one idle longest, or wait
        // (the next client waits in the listen queue) until one ends.
        while serving.connections.open() >= serving.max_connections
            && !serving
                .connections
                .evict_one(serving.grace(), serving.write_timeout)
        {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = upkeep.tick() => serving.renders.upkeep(),
                _ = serving.connections.freed() => {}
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = upkeep.tick() => serving.renders.upkeep(),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors (EMFILE, ENFILE): close the connection idle
                        // longest. Any failure: wait a little rather than spin.
                        let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24));
                        let made_room = out_of_descriptors
                            && serving
                                .connections
                                .evict_one(serving.grace(), serving.write_timeout);
                        serving.connections.count_accept_error();
                        tracing::debug!(error = %e, made_room, "the /metrics endpoint could not accept a connection");
                        let wait = if made_room { Duration::from_millis(1) } else { RETRY };
                        tokio::select! {
                            _ = stopped.changed() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                };
                // Counted before the next accept, so that the cap holds.
                let (id, close) = serving.connections.open_one();
                tokio::spawn(connection(stream, id, close, serving.clone(), stopped.clone()));
            }
        }
    }
}

/// Serves one connection until it ends, is closed to make room, or the endpoint stops.
async fn connection(
    stream: tokio::net::TcpStream,
    id: u64,
    close: Arc<tokio::sync::Notify>,
    serving: Arc<Serving>,
    mut stopped: watch::Receiver<bool>,
) {
    // Leaves the table however the task ends, a panic included.
    let _registered = Registered(serving.clone(), id);
    let on_request = serving.clone();
    let service = service_fn(move |request| {
        let serving = on_request.clone();
        async move {
            let busy = serving.connections.busy(id);
            let response = serving.respond(&request).await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(serving.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "a /metrics connection ended with an error");
            }
        }
        _ = close.notified() => {}
        _ = stopped.changed() => {}
    }
}

/// Removes a connection from the table when its task ends.
struct Registered(Arc<Serving>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.connections.close(self.1);
    }
}

impl Serving {
    fn grace(&self) -> Duration {
        GRACE.min(self.header_read_timeout)
    }

    fn stats(&self) -> EndpointStats {
        self.connections.stats(self.renders.count())
    }

    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() != self.path {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if let Some(token) = &self.token {
            let sent = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if !sent.is_some_and(|sent| token.matches(sent)) {
                let mut response = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        }
        let body = if request.method() == Method::HEAD {
            Bytes::new()
        } else {
            match self.renders.render().await {
                Some(text) => text,
                None => return plain(StatusCode::INTERNAL_SERVER_ERROR, "render failed\n"),
            }
        };
        let mut response = Response::new(Full::new(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(CONTENT_TYPE),
        );
        response
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
