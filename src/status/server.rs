//! The status HTTP server (tiny_http, its own thread): `/status` JSON, `/metrics`
//! Prometheus text, `/events` the recent event log, `/` the built-in status page.
//! It only reads the [`SnapshotHandle`]; nothing here can change what csipd does.

use super::metrics;
use super::snapshot::SnapshotHandle;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// The default `status_listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The built-in page (inline CSS and JS, no external assets).
const PAGE_HTML: &str = include_str!("page.html");

/// Why the status server did not start.
#[derive(Debug)]
pub enum ServerError {
    /// `listen` is not an `IP:port` address.
    BadAddress { listen: String, reason: String },
    /// A non-loopback address without the allow flag.
    NotLoopback { listen: String },
    /// The socket could not be bound.
    Bind { listen: String, reason: String },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::BadAddress { listen, reason } => write!(
                f,
                "status listen address '{listen}' must be IP:port, e.g. 127.0.0.1:8080 ({reason})"
            ),
            ServerError::NotLoopback { listen } => write!(
                f,
                "status listen address '{listen}' is not loopback: the status server has no \
                 authentication, so binding it to a network needs the explicit allow option \
                 (option status_allow_remote '1' in /etc/config/csipd)"
            ),
            ServerError::Bind { listen, reason } => {
                write!(f, "cannot listen for status on '{listen}': {reason}")
            }
        }
    }
}

impl std::error::Error for ServerError {}

/// Checks a listen address: `IP:port`, loopback unless `allow_non_loopback`.
pub fn parse_listen(listen: &str, allow_non_loopback: bool) -> Result<SocketAddr, ServerError> {
    let addr: SocketAddr = listen
        .trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| ServerError::BadAddress {
            listen: listen.to_string(),
            reason: e.to_string(),
        })?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(ServerError::NotLoopback {
            listen: listen.to_string(),
        });
    }
    Ok(addr)
}

/// A running status server. Dropping it stops the thread.
pub struct StatusServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` of this server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the status server on `listen` (e.g. "127.0.0.1:8080", port 0 picks a free
/// one). Binding anything but loopback needs `allow_non_loopback`.
pub fn start(
    listen: &str,
    allow_non_loopback: bool,
    handle: SnapshotHandle,
) -> Result<StatusServer, ServerError> {
    let addr = parse_listen(listen, allow_non_loopback)?;
    let server = tiny_http::Server::http(addr).map_err(|e| ServerError::Bind {
        listen: listen.to_string(),
        reason: e.to_string(),
    })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("csipd-status".to_string())
        .spawn(move || {
            for request in serving.incoming_requests() {
                respond(request, &handle);
            }
        })
        .map_err(|e| ServerError::Bind {
            listen: listen.to_string(),
            reason: format!("cannot start the status thread: {e}"),
        })?;
    log::info!("status server listening on http://{bound}");
    Ok(StatusServer {
        addr: bound,
        server,
        thread: Some(thread),
    })
}

/// Starts the status server where `config csipd 'main'` says (`status_listen`,
/// `status_allow_remote`).
pub fn start_from_config(
    main: &crate::config::MainConfig,
    handle: SnapshotHandle,
) -> Result<StatusServer, ServerError> {
    start(
        &main.status_listen.to_string(),
        main.status_allow_remote,
        handle,
    )
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Status code, content type and body for a request. Pure apart from reading the handle
/// and the clock, so it is tested without sockets.
pub fn route(method: &str, url: &str, handle: &SnapshotHandle) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (
            405,
            TEXT,
            format!("method {method} not allowed: GET only\n"),
        );
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/status" => {
            let mut snapshot = handle.get();
            snapshot.now_unix_s = now_unix_s();
            snapshot.summary = super::summary::line(&snapshot);
            match serde_json::to_string(&snapshot) {
                Ok(body) => (200, JSON, body),
                Err(e) => (500, TEXT, format!("cannot encode the status: {e}\n")),
            }
        }
        "/events" => {
            let body = serde_json::json!({ "now_unix_s": now_unix_s(), "events": handle.events() });
            (200, JSON, body.to_string())
        }
        "/metrics" => {
            let mut snapshot = handle.get();
            snapshot.now_unix_s = now_unix_s();
            (200, metrics::CONTENT_TYPE, metrics::render(&snapshot))
        }
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE_HTML.to_string()),
        other => (
            404,
            TEXT,
            format!("no such page '{other}': try /, /status, /metrics or /events\n"),
        ),
    }
}

fn respond(request: tiny_http::Request, handle: &SnapshotHandle) {
    let method = request.method().as_str().to_string();
    let (code, content_type, body) = route(&method, request.url(), handle);
    let mut response = tiny_http::Response::from_string(body).with_status_code(code);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("status: client went away before the answer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Snapshot;

    #[test]
    fn non_loopback_needs_the_allow_flag() {
        assert!(parse_listen("127.0.0.1:8080", false).is_ok());
        assert!(parse_listen("[::1]:8080", false).is_ok());
        let err = parse_listen("0.0.0.0:8080", false).unwrap_err();
        assert!(err.to_string().contains("not loopback"), "{err}");
        assert!(parse_listen("0.0.0.0:8080", true).is_ok());
        let err = parse_listen("localhost", false).unwrap_err();
        assert!(err.to_string().contains("must be IP:port"), "{err}");
    }

    #[test]
    fn routes() {
        let handle = SnapshotHandle::new(Snapshot::new(5));
        assert_eq!(route("GET", "/status?x=1", &handle).0, 200);
        assert_eq!(route("GET", "/metrics", &handle).0, 200);
        assert_eq!(route("GET", "/events", &handle).0, 200);
        assert_eq!(route("GET", "/", &handle).0, 200);
        assert_eq!(route("GET", "/nope", &handle).0, 404);
        assert_eq!(route("POST", "/status", &handle).0, 405);
    }
}
