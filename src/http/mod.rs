//! Async HTTP/1.1 client for the 2030.5 server on the smol event loop: mutual TLS over
//! OpenSSL (see `tls` for why not async-native-tls), one kept-alive connection reused
//! across requests (a handshake on a router CPU is expensive), reconnect when the server
//! closes, HTTP/1.0 and `Connection: close` servers, Content-Length and chunked bodies,
//! connect and read timeouts, typed errors for 4xx/5xx, and `Retry-After` on 429/503.
//!
//! Requests are sequential: one `Client` is one connection, used by one task.

mod cli;
pub(crate) mod framing;
mod retry;
pub(crate) mod tls;

pub use cli::fetch_main;
pub use retry::{Backoff, BackoffPolicy, parse_retry_after};
pub use tls::{ConnectionInfo, DEFAULT_TLS12_CIPHERS};

use framing::{BufConn, FrameError, header};
use openssl::ssl::SslConnector;
use smol::{Async, Timer};
use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tls::Stream;

/// The media type of every 2030.5 body.
pub const SEP_XML: &str = "application/sep+xml";

/// How to reach the utility server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host[:port][/prefix]`, or `http://…` for the plain debugging mode.
    pub server_url: String,
    /// PEM certificate (chain) and key of this device.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// PEM CA bundle the server's certificate must chain to. `None`: the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Lab only: do not verify the server's certificate or name. Logged at every start.
    pub insecure: bool,
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response bytes.
    pub read_timeout: Duration,
    /// Longest time for a whole exchange (request sent, response complete): a server
    /// that trickles bytes just inside `read_timeout` cannot hold the client forever.
    pub response_deadline: Duration,
    /// OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites stay OpenSSL's defaults).
    pub tls12_ciphers: String,
    /// The `Accept` header of every request (`application/sep+xml` for 2030.5).
    pub accept: String,
    /// More headers sent with every request, e.g. `Authorization` for the price API.
    /// Names and values must not contain CR or LF (checked by `Client::new`).
    pub extra_headers: Vec<(String, String)>,
    /// Log a warning when `server_url` is plain http. On for the utility link (plain
    /// http there is debugging only); off for the local status server.
    pub warn_plain_http: bool,
}

impl ClientConfig {
    pub fn new(server_url: &str) -> ClientConfig {
        ClientConfig {
            server_url: server_url.to_string(),
            client_cert: None,
            client_key: None,
            ca_bundle: None,
            insecure: false,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            response_deadline: Duration::from_secs(120),
            tls12_ciphers: DEFAULT_TLS12_CIPHERS.to_string(),
            accept: SEP_XML.to_string(),
            extra_headers: Vec::new(),
            warn_plain_http: true,
        }
    }

    /// A client for one JSON or text GET outside 2030.5 (the price API, the local status
    /// server): `timeout` bounds the connect, each read and the whole exchange.
    pub fn for_plain_get(origin: &str, accept: &str, timeout: Duration) -> ClientConfig {
        ClientConfig {
            connect_timeout: timeout,
            read_timeout: timeout,
            response_deadline: timeout,
            accept: accept.to_string(),
            warn_plain_http: false,
            ..ClientConfig::new(origin)
        }
    }
}

impl ClientConfig {
    /// The client for `config server 'utility'`: the server is the origin of
    /// `dcap_url` (scheme, host, port), else of `server_url`; returns it with the path
    /// of that URL (the DeviceCapability path of a `dcap_url`, `/` for a `server_url`,
    /// whose DeviceCapability comes from `/.well-known/csipaus`).
    /// An `http://` URL needs `allow_plain_http`.
    pub fn from_server_config(
        server: &crate::config::ServerConfig,
    ) -> Result<(ClientConfig, String), HttpError> {
        let dcap_url = server.utility_url().ok_or_else(|| {
            HttpError::Config("no utility server configured (option dcap_url or server_url)".into())
        })?;
        let (origin, dcap_path) = split_url(dcap_url)?;
        if origin.starts_with("http://") && !server.allow_plain_http {
            return Err(HttpError::Config(format!(
                "dcap_url {dcap_url:?} is plain http; set allow_plain_http (debugging only) or use https"
            )));
        }
        let mut config = ClientConfig::new(&origin);
        config.client_cert = server.cert.as_ref().map(PathBuf::from);
        config.client_key = server.key.as_ref().map(PathBuf::from);
        config.ca_bundle = server.ca.as_ref().map(PathBuf::from);
        config.insecure = server.tls_insecure_lab;
        Ok((config, dcap_path))
    }
}

/// Splits `https://host:port/path?q` into the origin `https://host:port` and `/path?q`.
pub fn split_url(url: &str) -> Result<(String, String), HttpError> {
    let target = parse_url(url).map_err(HttpError::Config)?;
    let scheme = if target.tls { "https" } else { "http" };
    let path = if target.base_path.is_empty() {
        "/".to_string()
    } else {
        target.base_path
    };
    Ok((format!("{scheme}://{}", target.authority), path))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    /// Safe to send again when a reused connection died before any response byte.
    fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response with a status below 400.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// `Location` of a 201 Created (or 204 after a POST/PUT), as the server sent it.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A 4xx or 5xx answer.
#[derive(Clone, Debug)]
pub struct StatusError {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub reason: String,
    /// From `Retry-After` on 429/503 (seconds or HTTP-date, relative to receipt).
    pub retry_after: Option<Duration>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything that can go wrong with a request. Messages name the server or the path.
#[derive(Debug)]
pub enum HttpError {
    /// Bad URL, certificate, key or CA file.
    Config(String),
    /// DNS or TCP connect failure.
    Connect { server: String, message: String },
    /// TCP connect plus TLS handshake took longer than `connect_timeout`.
    ConnectTimeout { server: String, after: Duration },
    /// The TLS handshake failed (untrusted server certificate, no common suite, …).
    Tls { server: String, message: String },
    /// No response byte for `read_timeout`.
    ReadTimeout {
        method: Method,
        path: String,
        after: Duration,
    },
    /// The response was not complete within `response_deadline`.
    ResponseDeadline {
        method: Method,
        path: String,
        after: Duration,
    },
    /// The server closed the connection before the response was complete.
    Closed {
        method: Method,
        path: String,
        message: String,
    },
    /// Socket error while sending or receiving.
    Io {
        method: Method,
        path: String,
        message: String,
    },
    /// The response could not be parsed as HTTP.
    Protocol {
        method: Method,
        path: String,
        message: String,
    },
    /// The server answered 4xx or 5xx.
    Status(StatusError),
}

impl HttpError {
    /// The HTTP status for `Status` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status(s) => Some(s.status),
            _ => None,
        }
    }

    /// How long the server asked us to wait (429/503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status(s) => s.retry_after,
            _ => None,
        }
    }

    /// Worth trying again later: network trouble, timeouts, 408/429/5xx. Configuration,
    /// TLS trust and other 4xx errors need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Config(_) | HttpError::Tls { .. } | HttpError::Protocol { .. } => false,
            HttpError::Status(s) => matches!(s.status, 408 | 429 | 500..=599),
            _ => true,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Config(m) => write!(f, "{m}"),
            HttpError::Connect { server, message } => {
                write!(f, "cannot connect to {server}: {message}")
            }
            HttpError::ConnectTimeout { server, after } => write!(
                f,
                "connecting to {server} timed out after {:.1} s",
                after.as_secs_f64()
            ),
            HttpError::Tls { server, message } => write!(f, "TLS with {server}: {message}"),
            HttpError::ReadTimeout {
                method,
                path,
                after,
            } => write!(
                f,
                "{method} {path}: no response within {:.1} s",
                after.as_secs_f64()
            ),
            HttpError::ResponseDeadline {
                method,
                path,
                after,
            } => write!(
                f,
                "{method} {path}: response not complete within {:.1} s (the server sends too \
                 slowly); connection dropped",
                after.as_secs_f64()
            ),
            HttpError::Closed {
                method,
                path,
                message,
            } => write!(f, "{method} {path}: {message}"),
            HttpError::Io {
                method,
                path,
                message,
            } => write!(f, "{method} {path}: {message}"),
            HttpError::Protocol {
                method,
                path,
                message,
            } => write!(f, "{method} {path}: bad HTTP response: {message}"),
            HttpError::Status(s) => {
                write!(f, "{} {}: HTTP {} {}", s.method, s.path, s.status, s.reason)?;
                if let Some(wait) = s.retry_after {
                    write!(f, " (retry after {} s)", wait.as_secs())?;
                }
                let body = String::from_utf8_lossy(&s.body);
                let body = body.trim();
                if !body.is_empty() {
                    let short: String = body.chars().take(200).collect();
                    write!(f, ": {short}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// Counters for tests, status and measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// TCP connections opened.
    pub connections: u64,
    /// TLS handshakes completed (full or resumed).
    pub handshakes: u64,
    /// Of those, how many resumed an earlier session (abbreviated handshake).
    pub resumed_handshakes: u64,
    /// Requests answered (any status).
    pub responses: u64,
}

/// Where the server is, parsed from `server_url`.
#[derive(Clone, Debug)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// Prefix put before request paths ("" or "/sep2").
    base_path: String,
    /// `host` or `host:port` for the Host header.
    authority: String,
    /// The URL's own path and query, as the server should see them ("/" at least).
    path_and_query: String,
}

/// Parses the server URL with the `url` crate (WHATWG rules: lower-case host, IPv6
/// literals, default ports), so config validation and the client read a URL the same
/// way. Only `https` (and `http` for debugging) are accepted.
fn parse_url(text: &str) -> Result<Target, String> {
    let url = url::Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            format!("server URL {text:?} must start with https:// (or http:// for debugging)")
        }
        url::ParseError::InvalidPort => format!("server URL {text:?}: bad port"),
        url::ParseError::EmptyHost => format!("server URL {text:?}: no host"),
        e => format!("server URL {text:?}: {e}"),
    })?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(format!(
                "server URL {text:?} must start with https:// (or http:// for debugging)"
            ));
        }
    };
    let (host, host_for_header) = match url.host() {
        Some(url::Host::Ipv6(a)) => (a.to_string(), format!("[{a}]")),
        Some(h) => (h.to_string(), h.to_string()),
        None => return Err(format!("server URL {text:?}: no host")),
    };
    if host.is_empty() {
        return Err(format!("server URL {text:?}: no host"));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("server URL {text:?}: bad port"))?;
    let authority = match url.port() {
        Some(p) => format!("{host_for_header}:{p}"),
        None => host_for_header,
    };
    // The path and query as given (the fragment never goes to the server).
    let path_and_query = &url[url::Position::BeforePath..url::Position::AfterQuery];
    Ok(Target {
        tls,
        host,
        port,
        base_path: path_and_query.trim_end_matches('/').to_string(),
        authority,
        path_and_query: path_and_query.to_string(),
    })
}

/// One connection to the utility server, reused across requests.
pub struct Client {
    config: ClientConfig,
    target: Target,
    connector: Option<SslConnector>,
    conn: Option<BufConn<Stream>>,
    info: Option<ConnectionInfo>,
    stats: ClientStats,
    /// Last resumable TLS session, offered on the next connection.
    session: Option<openssl::ssl::SslSession>,
}

impl Client {
    /// Checks the URL, loads the identity and CA. Does not connect yet.
    pub fn new(config: ClientConfig) -> Result<Client, HttpError> {
        let target = parse_url(&config.server_url).map_err(HttpError::Config)?;
        let headers = std::iter::once(("Accept", config.accept.as_str())).chain(
            config
                .extra_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        for (name, value) in headers {
            if name.is_empty() || (name.to_owned() + value).contains(['\r', '\n']) {
                return Err(HttpError::Config(format!(
                    "HTTP header {name:?} for {}: empty name or a line break",
                    config.server_url
                )));
            }
        }
        let connector = if target.tls {
            if config.insecure {
                log::warn!(
                    "INSECURE TLS: the certificate and name of {} are NOT verified; lab use only, never on a real site",
                    config.server_url
                );
            }
            let setup = tls::TlsSetup {
                client_cert: config.client_cert.as_deref(),
                client_key: config.client_key.as_deref(),
                ca_bundle: config.ca_bundle.as_deref(),
                insecure: config.insecure,
                tls12_ciphers: &config.tls12_ciphers,
            };
            Some(tls::build_connector(&setup).map_err(HttpError::Config)?)
        } else {
            if config.warn_plain_http {
                log::warn!(
                    "PLAIN HTTP to {}: no encryption and no authentication; protocol debugging only, never on a real site",
                    config.server_url
                );
            }
            None
        };
        Ok(Client {
            config,
            target,
            connector,
            conn: None,
            info: None,
            stats: ClientStats::default(),
            session: None,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// TLS version and suite of the current (or last) connection.
    pub fn connection_info(&self) -> Option<&ConnectionInfo> {
        self.info.as_ref()
    }

    /// Drops the connection; the next request opens a new one.
    pub fn close(&mut self) {
        self.conn = None;
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request(Method::Get, path, None).await
    }

    pub async fn put(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request(Method::Put, path, Some(body)).await
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        self.request(Method::Post, path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Result<Response, HttpError> {
        self.request(Method::Delete, path, None).await
    }

    /// Sends one request with an `application/sep+xml` body (if any). `path` is a
    /// server-relative href ("/edev") or an absolute URL on the same server.
    /// Statuses 400 and above come back as `HttpError::Status`.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, HttpError> {
        let request_path = self.request_path(path)?;
        let head = self.request_head(method, &request_path, body);
        let body = body.unwrap_or_default();
        // A kept-alive connection the server closed while idle is replaced up front;
        // if it dies anyway before any response byte, an idempotent request is sent
        // once more on a fresh connection.
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let reusable = self
                .conn
                .as_mut()
                .is_some_and(|conn| conn.leftover() == 0 && conn.io.is_reusable());
            if !reusable {
                self.conn = None;
                self.connect().await?;
            }
            let reused = reusable;
            let Some(conn) = self.conn.as_mut() else {
                return Err(HttpError::Config("internal: no connection".into()));
            };
            let deadline = self.config.response_deadline;
            let exchange = async {
                let result = match conn.write_request(head.as_bytes(), body).await {
                    Ok(()) => conn.read_response().await,
                    Err(e) => Err(FrameError::Io(e)),
                };
                Some(result)
            };
            let timer = async {
                Timer::after(deadline).await;
                None
            };
            let Some(result) = smol::future::or(exchange, timer).await else {
                self.conn = None;
                return Err(HttpError::ResponseDeadline {
                    method,
                    path: request_path,
                    after: deadline,
                });
            };
            let nothing_received = matches!(
                &result,
                Err(FrameError::Closed { received: 0, .. }) | Err(FrameError::Io(_))
            );
            if result.is_err() {
                self.conn = None;
            }
            if reused && nothing_received && attempts_left > 0 && method.is_idempotent() {
                log::debug!(
                    "{method} {request_path}: kept-alive connection was closed, reconnecting"
                );
                continue;
            }
            let raw = result.map_err(|e| frame_error(method, &request_path, e))?;
            self.stats.responses += 1;
            if let Some(session) = self.conn.as_ref().and_then(|c| c.io.session()) {
                self.session = Some(session);
            }
            if raw.must_close {
                self.conn = None;
            }
            log::debug!(
                "{method} {request_path} -> {} ({} bytes, HTTP/1.{})",
                raw.status,
                raw.body.len(),
                raw.http_minor
            );
            if raw.status >= 400 {
                let retry_after = if matches!(raw.status, 429 | 503) {
                    header(&raw.headers, "retry-after")
                        .and_then(|v| parse_retry_after(v, SystemTime::now()))
                } else {
                    None
                };
                return Err(HttpError::Status(StatusError {
                    method,
                    path: request_path,
                    status: raw.status,
                    reason: raw.reason,
                    retry_after,
                    headers: raw.headers,
                    body: raw.body,
                }));
            }
            return Ok(Response {
                status: raw.status,
                reason: raw.reason,
                headers: raw.headers,
                body: raw.body,
            });
        }
    }

    /// `request`, retried on transient errors (network, timeouts, 408/429/5xx) up to
    /// `max_attempts` in total, waiting per `backoff` and never less than a server's
    /// `Retry-After`. Use for POST only where a duplicate is harmless.
    pub async fn request_with_retry(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        backoff: &mut Backoff,
        max_attempts: u32,
    ) -> Result<Response, HttpError> {
        let mut attempt = 1;
        loop {
            match self.request(method, path, body).await {
                Ok(response) => {
                    backoff.reset();
                    return Ok(response);
                }
                Err(e) if e.is_transient() && attempt < max_attempts => {
                    let delay = backoff.next_delay(e.retry_after());
                    log::info!("{e}; retrying in {:.1} s", delay.as_secs_f64());
                    Timer::after(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn server_name(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }

    fn request_path(&self, path: &str) -> Result<String, HttpError> {
        let relative = if path.starts_with("https://") || path.starts_with("http://") {
            // An absolute link (some servers send them): same parser as the server URL.
            let other = parse_url(path).map_err(HttpError::Config)?;
            if !other.host.eq_ignore_ascii_case(&self.target.host) {
                return Err(HttpError::Config(format!(
                    "link {path:?} points to another server than {}",
                    self.config.server_url
                )));
            }
            return Ok(other.path_and_query);
        } else {
            path
        };
        if !relative.starts_with('/') {
            return Err(HttpError::Config(format!(
                "request path {path:?} must start with '/'"
            )));
        }
        if relative.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(HttpError::Config(format!(
                "request path {path:?} contains spaces or control characters"
            )));
        }
        if !self.target.base_path.is_empty() && !relative.starts_with(&self.target.base_path) {
            return Ok(format!("{}{relative}", self.target.base_path));
        }
        Ok(relative.to_string())
    }

    fn request_head(&self, method: Method, path: &str, body: Option<&[u8]>) -> String {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: csipd/{}\r\nAccept: {}\r\n",
            self.target.authority,
            crate::VERSION,
            self.config.accept
        );
        for (name, value) in &self.config.extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: {SEP_XML}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head
    }

    async fn connect(&mut self) -> Result<(), HttpError> {
        let server = self.server_name();
        let timeout = self.config.connect_timeout;
        let connecting = async {
            let addrs = resolve(&self.target.host, self.target.port)
                .await
                .map_err(|message| HttpError::Connect {
                    server: server.clone(),
                    message,
                })?;
            let mut last_error = String::from("no address");
            let mut socket = None;
            for addr in addrs {
                match Async::<TcpStream>::connect(addr).await {
                    Ok(s) => {
                        socket = Some(s);
                        break;
                    }
                    // The address only when it is not the server's own name (a
                    // resolved host name): "cannot connect to 127.0.0.1:1: 127.0.0.1:1:
                    // Connection refused" said it twice.
                    Err(e) if addr.to_string() == server => last_error = e.to_string(),
                    Err(e) => last_error = format!("{addr}: {e}"),
                }
            }
            let socket = socket.ok_or_else(|| HttpError::Connect {
                server: server.clone(),
                message: last_error,
            })?;
            let _ = socket.get_ref().set_nodelay(true);
            self.stats.connections += 1;
            match &self.connector {
                Some(connector) => {
                    let stream = Stream::handshake(
                        connector,
                        socket,
                        &self.target.host,
                        !self.config.insecure,
                        self.session.as_ref(),
                    )
                    .await
                    .map_err(|message| HttpError::Tls {
                        server: server.clone(),
                        message,
                    })?;
                    self.stats.handshakes += 1;
                    if stream.resumed() {
                        self.stats.resumed_handshakes += 1;
                    }
                    Ok(stream)
                }
                None => Ok(Stream::Plain(socket)),
            }
        };
        let stream = smol::future::or(connecting, async {
            Timer::after(timeout).await;
            Err(HttpError::ConnectTimeout {
                server: server.clone(),
                after: timeout,
            })
        })
        .await;
        if stream.is_err() {
            // Do not offer a session the server may have been part of rejecting.
            self.session = None;
        }
        let stream = stream?;
        let info = stream.info();
        log::debug!("connected to {server} ({} {})", info.protocol, info.cipher);
        self.info = Some(info);
        self.conn = Some(BufConn::new(stream, self.config.read_timeout));
        Ok(())
    }
}

pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // getaddrinfo blocks: run it on smol's blocking pool so the event loop keeps going.
    let host = host.to_string();
    smol::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect())
            .map_err(|e| format!("cannot resolve {host}: {e}"))
    })
    .await
}

fn frame_error(method: Method, path: &str, e: FrameError) -> HttpError {
    let path = path.to_string();
    match e {
        FrameError::Timeout(after) => HttpError::ReadTimeout {
            method,
            path,
            after,
        },
        FrameError::Closed { received, what } => HttpError::Closed {
            method,
            path,
            message: if received == 0 {
                "the server closed the connection without answering".into()
            } else {
                format!("the server closed the connection {what} (after {received} bytes)")
            },
        },
        FrameError::Io(e) => HttpError::Io {
            method,
            path,
            message: e.to_string(),
        },
        FrameError::Malformed(message) => HttpError::Protocol {
            method,
            path,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn urls_parse_with_ports_prefixes_and_ipv6() {
        let t = parse_url("https://sep2.example.com:8443/api/").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.base_path.as_str()),
            (true, "sep2.example.com", 8443, "/api")
        );
        assert_eq!(t.authority, "sep2.example.com:8443");
        let t = parse_url("http://[::1]:8080").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "::1", 8080));
        assert_eq!(parse_url("https://h").unwrap().port, 443);
        assert!(parse_url("ftp://h").is_err());
        assert!(parse_url("https://h:x").is_err());
        assert!(parse_url("https://:1").is_err());
    }

    #[test]
    fn split_url_gives_origin_and_path() {
        assert_eq!(
            split_url("https://u.example:8443/sep2/dcap").unwrap(),
            (
                "https://u.example:8443".to_string(),
                "/sep2/dcap".to_string()
            )
        );
        assert_eq!(
            split_url("http://10.0.0.1").unwrap(),
            ("http://10.0.0.1".to_string(), "/".to_string())
        );
        assert!(split_url("u.example/dcap").is_err());
    }

    #[test]
    fn client_config_from_the_uci_server_section() {
        let uci = "config server 'utility'\n\toption dcap_url 'https://u.example:8443/sep2/dcap'\n\toption cert '/etc/csipd/c.pem'\n\toption key '/etc/csipd/k.pem'\n\toption ca '/etc/csipd/ca.pem'\n";
        let (config, _) = crate::config::from_text(uci, "test").expect("config");
        let (client, dcap_path) = ClientConfig::from_server_config(&config.server).unwrap();
        assert_eq!(client.server_url, "https://u.example:8443");
        assert_eq!(dcap_path, "/sep2/dcap");
        assert_eq!(
            client.client_key.as_deref(),
            Some(Path::new("/etc/csipd/k.pem"))
        );
        assert_eq!(
            client.ca_bundle.as_deref(),
            Some(Path::new("/etc/csipd/ca.pem"))
        );
        assert!(!client.insecure);
        // config rejects this already; the client refuses it on its own too.
        let mut server = config.server.clone();
        server.dcap_url = Some("http://u.example/dcap".into());
        let err = ClientConfig::from_server_config(&server).unwrap_err();
        assert!(err.to_string().contains("allow_plain_http"), "{err}");
        // Only a server_url (service discovery): its origin, path `/`.
        let mut server = config.server.clone();
        server.dcap_url = None;
        server.server_url = Some("https://u.example:8443".into());
        let (client, path) = ClientConfig::from_server_config(&server).unwrap();
        assert_eq!(
            (client.server_url.as_str(), path.as_str()),
            ("https://u.example:8443", "/")
        );
    }

    #[test]
    fn request_paths_join_prefix_and_reject_other_hosts() {
        let client = Client::new(ClientConfig {
            insecure: true,
            ..ClientConfig::new("https://utility.example:8443/sep2")
        })
        .unwrap();
        assert_eq!(client.request_path("/dcap").unwrap(), "/sep2/dcap");
        assert_eq!(client.request_path("/sep2/edev").unwrap(), "/sep2/edev");
        assert_eq!(
            client
                .request_path("https://utility.example:8443/sep2/tm")
                .unwrap(),
            "/sep2/tm"
        );
        assert!(client.request_path("https://evil.example/x").is_err());
        assert!(client.request_path("edev").is_err());
        assert!(client.request_path("/a b").is_err());
        let head = client.request_head(Method::Put, "/sep2/edev/1", Some(b"<x/>"));
        assert!(head.starts_with("PUT /sep2/edev/1 HTTP/1.1\r\nHost: utility.example:8443\r\n"));
        assert!(head.contains("Content-Type: application/sep+xml\r\nContent-Length: 4\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn status_errors_name_the_path_and_wait() {
        let e = HttpError::Status(StatusError {
            method: Method::Get,
            path: "/edev/3/der".into(),
            status: 503,
            reason: "Service Unavailable".into(),
            retry_after: Some(Duration::from_secs(30)),
            headers: vec![],
            body: b"busy".to_vec(),
        });
        assert_eq!(
            e.to_string(),
            "GET /edev/3/der: HTTP 503 Service Unavailable (retry after 30 s): busy"
        );
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(503));
        let not_found = HttpError::Status(StatusError {
            method: Method::Put,
            path: "/x".into(),
            status: 404,
            reason: "Not Found".into(),
            retry_after: None,
            headers: vec![],
            body: vec![],
        });
        assert!(!not_found.is_transient());
    }

    #[test]
    fn missing_identity_files_are_named() {
        let err = Client::new(ClientConfig {
            client_cert: Some("/nonexistent/dev.crt".into()),
            client_key: Some("/nonexistent/dev.key".into()),
            ..ClientConfig::new("https://127.0.0.1:1")
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/dev.crt"), "{err}");
    }
}
