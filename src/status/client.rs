//! Talking to a running daemon's status server (for `csipd status` and the rpcd plugin).

use std::fmt;
use std::time::Duration;

/// The environment variable that overrides the status server URL for `csipd status` and
/// the rpcd plugin (tests point them at a server on a free port with it).
pub const URL_ENV: &str = "CSIPD_STATUS_URL";

/// Where a status server URL came from, so an error can say which setting to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlOrigin {
    /// `--url` on the command line.
    UrlOption,
    /// `$CSIPD_STATUS_URL`.
    Env,
    /// `option status_listen` in this config file.
    Config { path: String },
    /// The default listen address: the config file sets no `status_listen`, or could
    /// not be read (`why`).
    Default { path: String, why: Option<String> },
    /// Given by a caller that did not say where it came from.
    Given,
}

impl fmt::Display for UrlOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlOrigin::UrlOption => write!(f, "from --url"),
            UrlOrigin::Env => write!(f, "from ${URL_ENV}"),
            UrlOrigin::Config { path } => write!(f, "option status_listen in {path}"),
            UrlOrigin::Default { path, why: None } => {
                write!(f, "the default: {path} sets no status_listen")
            }
            UrlOrigin::Default {
                path,
                why: Some(why),
            } => write!(f, "the default, as {path} could not be used: {why}"),
            UrlOrigin::Given => write!(f, "as given"),
        }
    }
}

/// A status server URL and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUrl {
    pub url: String,
    pub origin: UrlOrigin,
}

impl StatusUrl {
    /// A URL from `--url`.
    pub fn from_option(url: &str) -> Self {
        StatusUrl {
            url: url.trim().to_string(),
            origin: UrlOrigin::UrlOption,
        }
    }
}

/// Where the running daemon's status server is: `$CSIPD_STATUS_URL`, else
/// `status_listen` of /etc/config/csipd, else the default listen address.
pub fn default_url() -> StatusUrl {
    locate(crate::config::DEFAULT_PATH)
}

/// [`default_url`] with the config file at `path`.
pub fn locate(path: &str) -> StatusUrl {
    locate_with(std::env::var(URL_ENV).ok(), path)
}

/// [`locate`] with `$CSIPD_STATUS_URL`'s value given.
fn locate_with(env: Option<String>, path: &str) -> StatusUrl {
    if let Some(url) = env {
        if !url.trim().is_empty() {
            return StatusUrl {
                url: url.trim().to_string(),
                origin: UrlOrigin::Env,
            };
        }
    }
    let default = |why: Option<String>| StatusUrl {
        url: format!("http://{}", super::server::DEFAULT_LISTEN),
        origin: UrlOrigin::Default {
            path: path.to_string(),
            why,
        },
    };
    match std::fs::read_to_string(path) {
        // Unreadable or invalid config: the daemon would not run with it either; the
        // default address is the best guess, and the error says so.
        Err(e) => default(Some(e.to_string())),
        Ok(text) if !text.contains("status_listen") => default(None),
        Ok(_) => match crate::config::load(path) {
            Ok((config, _warnings)) => StatusUrl {
                url: url_for_listen(config.main.status_listen),
                origin: UrlOrigin::Config {
                    path: path.to_string(),
                },
            },
            Err(e) => default(Some(e.to_string())),
        },
    }
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

/// Why a status request failed; each names the URL asked once, and the unreachable
/// kinds where the URL came from and what to check.
#[derive(Debug)]
pub enum ClientError {
    /// The URL is not an http(s) URL of a server.
    BadUrl {
        url: String,
        origin: UrlOrigin,
        error: String,
    },
    /// No answer: nothing listens there (the daemon is not running, or listens
    /// elsewhere), the host name is unknown, or no answer in time.
    Unreachable {
        url: String,
        origin: UrlOrigin,
        cause: Unreachable,
    },
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

/// Why nothing answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// Connection refused: nothing listens on that port.
    Refused,
    /// The host name does not resolve (the resolver's words).
    UnknownHost(String),
    /// No connection or no answer within the client's timeout.
    Timeout,
    /// Any other failure (the transport's words).
    Other(String),
}

impl ClientError {
    /// What to check, from where the URL came from.
    fn hint(cause: &Unreachable, origin: &UrlOrigin) -> String {
        let running = "is csipd running (/etc/init.d/csipd status; logread -e csipd)?";
        let port = match origin {
            // The daemon listens where that file says: unless it was changed and not
            // reloaded since.
            UrlOrigin::Config { .. } => {
                " A changed status_listen takes effect after /etc/init.d/csipd reload.".to_string()
            }
            UrlOrigin::Env => format!(
                " If it is, compare the port with its option status_listen (or unset \
                 ${URL_ENV})."
            ),
            _ => " If it is, compare the port with its option status_listen.".to_string(),
        };
        match cause {
            Unreachable::Refused | Unreachable::Other(_) => format!("{running}{port}"),
            Unreachable::UnknownHost(_) => "check the host name".to_string(),
            Unreachable::Timeout => {
                "csipd may be stuck (logread -e csipd), or a firewall drops the connection"
                    .to_string()
            }
        }
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Refused => write!(f, "connection refused"),
            Unreachable::UnknownHost(why) => write!(f, "unknown host ({why})"),
            Unreachable::Timeout => write!(f, "no answer within {} s", TIMEOUT.as_secs()),
            Unreachable::Other(why) => write!(f, "{why}"),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl { url, origin, error } => write!(
                f,
                "'{url}' ({origin}) is not a status server URL: {error}; expected \
                 http://HOST:PORT, e.g. http://{}",
                super::server::DEFAULT_LISTEN
            ),
            ClientError::Unreachable { url, origin, cause } => write!(
                f,
                "cannot reach the csipd status server at {url} ({origin}): {cause}; {}",
                ClientError::hint(cause, origin)
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

/// How long a status request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `base` + `path` and returns the body. Errors say which URL and what went wrong,
/// and hint that the daemon may not be running.
pub fn get_text(base: &str, path: &str) -> Result<String, ClientError> {
    get_text_at(
        &StatusUrl {
            url: base.to_string(),
            origin: UrlOrigin::Given,
        },
        path,
    )
}

/// [`get_text`] at a URL that says where it came from (for the error's hint).
pub fn get_text_at(base: &StatusUrl, path: &str) -> Result<String, ClientError> {
    use crate::http::HttpError;
    let url = url_of(&base.url, path);
    let bad_url = |error: String| ClientError::BadUrl {
        url: base.url.clone(),
        origin: base.origin.clone(),
        error,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad_url("it does not start with http://".into()));
    }
    let (server, request_path) =
        crate::http::split_url(&url).map_err(|e| bad_url(e.to_string()))?;
    let config = crate::http::ClientConfig::for_plain_get(&server, "*/*", TIMEOUT);
    let mut client = crate::http::Client::new(config).map_err(|e| bad_url(e.to_string()))?;
    let response = smol::block_on(client.get(&request_path)).map_err(|e| {
        let cause = match e {
            HttpError::Status(s) => {
                return ClientError::Status {
                    url: url.clone(),
                    code: s.status,
                };
            }
            HttpError::Connect { message, .. } if message.contains("Connection refused") => {
                Unreachable::Refused
            }
            HttpError::Connect { message, .. } if message.starts_with("cannot resolve") => {
                let why = message.rsplit(": ").next().unwrap_or(&message).to_string();
                Unreachable::UnknownHost(why)
            }
            HttpError::ConnectTimeout { .. }
            | HttpError::ReadTimeout { .. }
            | HttpError::ResponseDeadline { .. } => Unreachable::Timeout,
            HttpError::Connect { message, .. } => Unreachable::Other(message),
            other => Unreachable::Other(other.to_string()),
        };
        ClientError::Unreachable {
            url: url.clone(),
            origin: base.origin.clone(),
            cause,
        }
    })?;
    String::from_utf8(response.body).map_err(|_| ClientError::Body {
        url: url.clone(),
        error: "not UTF-8 text".into(),
    })
}

/// GETs `base` + `path` and parses it as JSON.
pub fn get_json(base: &str, path: &str) -> Result<serde_json::Value, ClientError> {
    get_json_at(
        &StatusUrl {
            url: base.to_string(),
            origin: UrlOrigin::Given,
        },
        path,
    )
}

/// [`get_json`] at a URL that says where it came from.
pub fn get_json_at(base: &StatusUrl, path: &str) -> Result<serde_json::Value, ClientError> {
    let text = get_text_at(base, path)?;
    serde_json::from_str(&text).map_err(|error| ClientError::NotJson {
        url: url_of(&base.url, path),
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
        // (Refused, or reset when the server's socket is still closing.)
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("is csipd running"), "{e}");
    }

    /// One line: what failed, at which URL (once), where that URL came from and what to
    /// check; the transport's own repetition of the address is gone.
    #[test]
    fn unreachable_says_the_url_once_its_origin_and_what_to_check() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let base = format!("http://127.0.0.1:{port}");
        let at = |origin: UrlOrigin| {
            get_text_at(
                &StatusUrl {
                    url: base.clone(),
                    origin,
                },
                "/status",
            )
            .unwrap_err()
            .to_string()
        };
        let text = at(UrlOrigin::UrlOption);
        assert_eq!(
            text,
            format!(
                "cannot reach the csipd status server at {base}/status (from --url): \
                 connection refused; is csipd running (/etc/init.d/csipd status; logread -e \
                 csipd)? If it is, compare the port with its option status_listen."
            )
        );
        assert_eq!(
            text.matches(&format!("127.0.0.1:{port}")).count(),
            1,
            "{text}"
        );
        let text = at(UrlOrigin::Config {
            path: "/etc/config/csipd".into(),
        });
        assert!(
            text.contains("(option status_listen in /etc/config/csipd): connection refused; ")
                && text.ends_with("takes effect after /etc/init.d/csipd reload."),
            "{text}"
        );
        let text = at(UrlOrigin::Env);
        assert!(
            text.contains("(from $CSIPD_STATUS_URL)") && text.contains("unset $CSIPD_STATUS_URL"),
            "{text}"
        );
        let text = at(UrlOrigin::Default {
            path: "/etc/config/csipd".into(),
            why: None,
        });
        assert!(
            text.contains("(the default: /etc/config/csipd sets no status_listen)"),
            "{text}"
        );
        // Not a URL: said as such, no "is csipd running".
        let e = get_text_at(&StatusUrl::from_option("127.0.0.1:8080"), "/status").unwrap_err();
        assert!(matches!(e, ClientError::BadUrl { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "'127.0.0.1:8080' (from --url) is not a status server URL: it does not start \
             with http://; expected http://HOST:PORT, e.g. http://127.0.0.1:8080"
        );
    }

    /// A host name that does not resolve, and a server that never answers.
    #[test]
    fn unknown_hosts_and_silent_servers_are_told_apart() {
        let e = get_text_at(
            &StatusUrl::from_option("http://csipd-status.invalid:8080"),
            "/status",
        )
        .unwrap_err();
        assert!(
            matches!(
                &e,
                ClientError::Unreachable {
                    cause: Unreachable::UnknownHost(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("; check the host name"), "{e}");
        // Accepts (the kernel's backlog) but never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let e = get_text_at(&StatusUrl::from_option(&url), "/status").unwrap_err();
        assert!(
            e.to_string()
                .contains("(from --url): no answer within 5 s; csipd may be stuck"),
            "{e}"
        );
        drop(silent);
    }

    /// `status_listen` of the config file, or the default saying why.
    #[test]
    fn the_url_says_where_it_came_from() {
        let dir = std::env::temp_dir().join(format!("csipd-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with = dir.join("with");
        std::fs::write(
            &with,
            "config csipd 'main'\n\toption status_listen '127.0.0.1:9090'\n",
        )
        .unwrap();
        let found = locate_with(None, with.to_str().unwrap());
        assert_eq!(found.url, "http://127.0.0.1:9090");
        assert!(matches!(found.origin, UrlOrigin::Config { .. }));
        let without = dir.join("without");
        std::fs::write(&without, "config csipd 'main'\n").unwrap();
        let found = locate_with(None, without.to_str().unwrap());
        assert_eq!(found.url, "http://127.0.0.1:8080");
        assert_eq!(
            found.origin.to_string(),
            format!("the default: {} sets no status_listen", without.display())
        );
        let missing = dir.join("missing");
        let found = locate_with(None, missing.to_str().unwrap());
        assert!(
            found
                .origin
                .to_string()
                .contains("could not be used: No such file"),
            "{}",
            found.origin
        );
        let env = locate_with(Some(" http://h:1 ".into()), with.to_str().unwrap());
        assert_eq!(
            (env.url.as_str(), env.origin),
            ("http://h:1", UrlOrigin::Env)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
