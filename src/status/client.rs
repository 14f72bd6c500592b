//! Talking to a running daemon's status server (for `csipd status` and the rpcd plugin).

use std::fmt;
use std::time::Duration;

/// The environment variable that overrides the status server URL for `csipd status` and
/// the rpcd plugin (tests point them at a server on a free port with it).
pub const URL_ENV: &str = "CSIPD_STATUS_URL";

/// Where the running daemon's status server is: `$CSIPD_STATUS_URL`, else
/// `status_listen` of /etc/config/csipd, else the default listen address.
pub fn default_url() -> String {
    if let Ok(url) = std::env::var(URL_ENV) {
        if !url.trim().is_empty() {
            return url.trim().to_string();
        }
    }
    let listen = match crate::config::load(crate::config::DEFAULT_PATH) {
        Ok((config, _warnings)) => config.main.status_listen,
        // Unreadable or invalid config: the daemon would not run with it either; the
        // default address is the best guess and the error names the URL tried.
        Err(_) => return format!("http://{}", super::server::DEFAULT_LISTEN),
    };
    url_for_listen(listen)
}

/// The URL a local client uses for a listen address: a wildcard bind (0.0.0.0, ::) is
/// reached on loopback.
pub fn url_for_listen(listen: std::net::SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// Why a status request failed; each names the URL asked.
#[derive(Debug)]
pub enum ClientError {
    /// No answer: the daemon is not running, or listens elsewhere.
    Unreachable { url: String, error: String },
    /// The status server answered with an HTTP error status.
    Status { url: String, code: u16 },
    /// The answer could not be read.
    Body { url: String, error: String },
    /// The answer is not JSON.
    NotJson {
        url: String,
        error: serde_json::Error,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { url, error } => write!(
                f,
                "cannot reach the csipd status server at {url}: {error} (is csipd running? \
                 its address is option status_listen in /etc/config/csipd)"
            ),
            ClientError::Status { url, code } => {
                write!(f, "the csipd status server at {url} answered HTTP {code}")
            }
            ClientError::Body { url, error } => {
                write!(f, "cannot read the answer of {url}: {error}")
            }
            ClientError::NotJson { url, error } => {
                write!(f, "the answer of {url} is not JSON: {error}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<ClientError> for String {
    fn from(e: ClientError) -> String {
        e.to_string()
    }
}

/// `path` on the status server at `base`. `base` may name one of the server's own paths
/// (the `/status` URL the demo prints, the page's `/`): that is dropped, not doubled.
fn url_of(base: &str, path: &str) -> String {
    let mut server = base.trim().trim_end_matches('/');
    for own in ["/status", "/metrics", "/events"] {
        if let Some(rest) = server.strip_suffix(own) {
            server = rest;
            break;
        }
    }
    format!("{server}{path}")
}

/// GETs `base` + `path` and returns the body. Errors say which URL and what went wrong,
/// and hint that the daemon may not be running.
pub fn get_text(base: &str, path: &str) -> Result<String, ClientError> {
    let url = url_of(base, path);
    let unreachable = |error: String| ClientError::Unreachable {
        url: url.clone(),
        error,
    };
    let (origin, request_path) =
        crate::http::split_url(&url).map_err(|e| unreachable(e.to_string()))?;
    let config = crate::http::ClientConfig::for_plain_get(&origin, "*/*", Duration::from_secs(5));
    let mut client = crate::http::Client::new(config).map_err(|e| unreachable(e.to_string()))?;
    let response = smol::block_on(client.get(&request_path)).map_err(|e| match e {
        crate::http::HttpError::Status(s) => ClientError::Status {
            url: url.clone(),
            code: s.status,
        },
        other => unreachable(other.to_string()),
    })?;
    String::from_utf8(response.body).map_err(|_| ClientError::Body {
        url: url.clone(),
        error: "not UTF-8 text".into(),
    })
}

/// GETs `base` + `path` and parses it as JSON.
pub fn get_json(base: &str, path: &str) -> Result<serde_json::Value, ClientError> {
    let text = get_text(base, path)?;
    serde_json::from_str(&text).map_err(|error| ClientError::NotJson {
        url: url_of(base, path),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(
            url_for_listen("0.0.0.0:9090".parse().unwrap()),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            url_for_listen("[::]:80".parse().unwrap()),
            "http://[::1]:80"
        );
        assert_eq!(
            url_for_listen("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
    }

    /// A status server that answers each request with the next (status, body).
    fn scripted(script: Vec<(u16, &'static str)>) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
        let port = server.server_addr().to_ip().expect("ip").port();
        std::thread::spawn(move || {
            for (status, body) in script {
                let Ok(req) = server.recv() else { return };
                let _ =
                    req.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// The demo prints both the server (`csipd status --url http://HOST:PORT`) and its
    /// `/status` URL; either, or the page's URL with its slash, reaches `/status`.
    #[test]
    fn a_url_naming_a_status_path_reaches_the_server() {
        for given in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/status",
            "http://127.0.0.1:8080/status/",
            "http://127.0.0.1:8080/metrics",
        ] {
            assert_eq!(
                url_of(given, "/status"),
                "http://127.0.0.1:8080/status",
                "{given}"
            );
        }
        assert_eq!(url_of("http://h:1/", "/events"), "http://h:1/events");
    }

    #[test]
    fn failures_are_told_apart() {
        let url = scripted(vec![(500, "oops"), (200, "<html>"), (200, "{\"ok\":1}")]);
        let e = get_json(&url, "/status").unwrap_err();
        assert!(matches!(e, ClientError::Status { code: 500, .. }), "{e}");
        let e = get_json(&url, "/status").unwrap_err();
        assert!(matches!(e, ClientError::NotJson { .. }), "{e}");
        assert!(e.to_string().contains("/status is not JSON"), "{e}");
        assert_eq!(get_json(&url, "/status").unwrap()["ok"], 1);
        // Nobody listens on the port any more.
        let e = get_text(&url, "/status").unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("is csipd running?"), "{e}");
    }
}
