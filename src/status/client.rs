//! Talking to a running daemon's status server (for `csipd status` and the rpcd plugin).

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

/// GETs `base` + `path` and returns the body. Errors say which URL and what went wrong,
/// and hint that the daemon may not be running.
pub fn get_text(base: &str, path: &str) -> Result<String, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let (origin, request_path) = crate::http::split_url(&url)?;
    let config = crate::http::ClientConfig::for_plain_get(&origin, "*/*", Duration::from_secs(5));
    let mut client = crate::http::Client::new(config).map_err(|e| e.to_string())?;
    let response = smol::block_on(client.get(&request_path)).map_err(|e| match e {
        crate::http::HttpError::Status(s) => {
            format!(
                "the csipd status server at {url} answered HTTP {}",
                s.status
            )
        }
        other => format!(
            "cannot reach the csipd status server at {url}: {other} (is csipd running? \
             its address is option status_listen in /etc/config/csipd)"
        ),
    })?;
    String::from_utf8(response.body).map_err(|_| format!("the answer of {url} is not UTF-8 text"))
}

/// GETs `base` + `path` and parses it as JSON.
pub fn get_json(base: &str, path: &str) -> Result<serde_json::Value, String> {
    let text = get_text(base, path)?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "the answer of {}{path} is not JSON: {e}",
            base.trim_end_matches('/')
        )
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
}
