//! csipd's listener for IEEE 2030.5 Notifications (subscriptions, CSIP-AUS classes
//! S-L/S-G): `option notification_listen 'address:port'` in the utility section.
//!
//! An HTTPS server with mutual TLS on the one event loop (no thread of its own): the
//! identity is csipd's device certificate and key (`cert`, `key`), and the server's
//! client certificate must be signed by the configured utility CA (`ca`); a client
//! without a certificate, or with another CA's, fails the handshake. Each connection
//! carries one request (`Connection: close`) and gets 10 s; connections are served one
//! after another, which is plenty for a utility's few notifications and keeps the loop
//! simple. A `POST` whose body is a 2030.5 Notification is answered 201 Created and
//! handed on (the engine reads the notified resource again); anything else gets 400
//! (not a Notification), 405 (not a POST), 411 (no Content-Length) or 413 (over
//! 256 KiB), with the reason in the body.

use crate::http::framing::ByteIo;
use crate::http::tls::{Stream, build_acceptor};
use crate::sep2::{self, Notification};
use openssl::ssl::SslContext;
use smol::Async;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

/// Largest request accepted (a Notification with a DERControlList inline is a few KiB).
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Time a connection gets for its handshake, request and answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the listener could not start.
#[derive(Debug)]
pub enum NotifyError {
    /// The certificate, key or CA could not be loaded (the message names the file).
    Tls(String),
    /// The address could not be bound.
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::Tls(e) => write!(f, "notification listener: {e}"),
            NotifyError::Bind { addr, error } => {
                write!(f, "notification listener: cannot listen on {addr}: {error}")
            }
        }
    }
}

impl std::error::Error for NotifyError {}

/// What the handler says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code (201, 400, 405, 411, 413).
    pub status: u16,
    /// Its reason phrase.
    pub reason: &'static str,
    /// Plain-text explanation for a refusal (empty when accepted).
    pub body: String,
}

impl Reply {
    fn refuse(status: u16, reason: &'static str, body: String) -> Reply {
        Reply {
            status,
            reason,
            body,
        }
    }
}

/// The listener, bound and with its TLS context.
pub struct NotificationListener {
    listener: Async<TcpListener>,
    tls: SslContext,
}

impl NotificationListener {
    /// Binds `addr` with identity `cert`/`key`, accepting clients signed by `ca`.
    pub fn bind(
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<NotificationListener, NotifyError> {
        let tls = build_acceptor(cert, key, ca).map_err(NotifyError::Tls)?;
        let listener =
            Async::<TcpListener>::bind(addr).map_err(|error| NotifyError::Bind { addr, error })?;
        Ok(NotificationListener { listener, tls })
    }

    /// The bound address (the port when 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    /// Serves until dropped: each request that passes [`check_request`] goes to
    /// `deliver` (the Notification's body) and is answered 201.
    pub async fn serve(&self, mut deliver: impl FnMut(Vec<u8>)) {
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("notification listener: accept failed: {e}");
                    smol::Timer::after(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let timeout = async {
                smol::Timer::after(CONNECTION_TIMEOUT).await;
                Err(format!(
                    "no request within {}s",
                    CONNECTION_TIMEOUT.as_secs()
                ))
            };
            match smol::future::or(self.connection(socket), timeout).await {
                Ok(Some(body)) => deliver(body),
                Ok(None) => {}
                Err(e) => log::warn!("notification listener: {peer}: {e}"),
            }
        }
    }

    /// One connection: handshake, one request, the answer. The Notification's body when
    /// it was accepted.
    async fn connection(
        &self,
        socket: Async<std::net::TcpStream>,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut stream = Stream::accept(&self.tls, socket).await?;
        let (reply, body) = match read_request(&mut stream).await? {
            Ok((method, path, body)) => {
                let reply = check_request(&method, &body);
                log::debug!("notification listener: {method} {path}: {}", reply.status);
                let accepted = reply.status == 201;
                (reply, accepted.then_some(body))
            }
            Err(reply) => (reply, None),
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.status,
            reply.reason,
            reply.body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(reply.body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok(body)
    }
}

/// Reads one HTTP/1.1 request: `Ok(Ok((method, path, body)))`, or `Ok(Err(reply))`
/// for a request refused before its body (411, 413, 400).
async fn read_request(
    stream: &mut Stream,
) -> Result<Result<(String, String, Vec<u8>), Reply>, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Ok(Err(Reply::refuse(
                    413,
                    "Content Too Large",
                    "headers too long".into(),
                )));
            }
            Err(e) => {
                return Ok(Err(Reply::refuse(
                    400,
                    "Bad Request",
                    format!("not HTTP: {e}"),
                )));
            }
        };
        let method = request.method.unwrap_or_default().to_string();
        let path = request.path.unwrap_or_default().to_string();
        let length = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let Some(length) = length else {
            if method == "POST" {
                return Ok(Err(Reply::refuse(
                    411,
                    "Length Required",
                    "a Notification needs a Content-Length".into(),
                )));
            }
            return Ok(Ok((method, path, Vec::new())));
        };
        if length > MAX_REQUEST_BYTES {
            return Ok(Err(Reply::refuse(
                413,
                "Content Too Large",
                format!("body of {length} bytes is over {MAX_REQUEST_BYTES}"),
            )));
        }
        let mut body = buf.split_off(head_len);
        while body.len() < length {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "body cut short at {} of {length} bytes",
                    body.len()
                ));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        return Ok(Ok((method, path, body)));
    }
}

/// The answer to a request at the notification URI: 201 for a POSTed 2030.5
/// Notification, 405 for another method, 400 (with the reader's error) for a body that
/// is not one.
pub fn check_request(method: &str, body: &[u8]) -> Reply {
    if method != "POST" {
        return Reply::refuse(405, "Method Not Allowed", "POST a Notification here".into());
    }
    match sep2::read::<Notification>(body) {
        Ok(_) => Reply {
            status: 201,
            reason: "Created",
            body: String::new(),
        },
        Err(e) => Reply::refuse(
            400,
            "Bad Request",
            format!("not a 2030.5 Notification: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_posted_notifications_are_accepted() {
        let good = br#"<Notification xmlns="urn:ieee:std:2030.5:ns"><subscribedResource>/edev/1/derp/1/derc</subscribedResource><status>0</status><subscriptionURI>https://s/edev/1/sub/1</subscriptionURI></Notification>"#;
        assert_eq!(check_request("POST", good).status, 201);
        assert_eq!(check_request("GET", good).status, 405);
        let bad = check_request("POST", b"<DERControlList/>");
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("Notification"), "{}", bad.body);
    }
}
