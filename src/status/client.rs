//! Talking to a running daemon's status server (for `csipd status` and the rpcd plugin).

use std::time::Duration;

/// The environment variable that overrides the status server URL for `csipd status` and
/// the rpcd plugin (tests point them at a server on a free port with it).
pub const URL_ENV: &str = "CSIPD_STATUS_URL";

/// Where the running daemon's status server is: `$CSIPD_STATUS_URL`, else the default
/// listen address.
// TODO(lead, config merge): read `option status_listen` of `csipd 'main'` from
// /etc/config/csipd through `config` here, so a daemon on another port is found.
pub fn default_url() -> String {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => format!("http://{}", super::server::DEFAULT_LISTEN),
    }
}

/// GETs `base` + `path` and returns the body. Errors say which URL and what went wrong,
/// and hint that the daemon may not be running.
pub fn get_text(base: &str, path: &str) -> Result<String, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(&url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => {
            format!("the csipd status server at {url} answered HTTP {code}")
        }
        other => format!(
            "cannot reach the csipd status server at {url}: {other} (is csipd running? \
             its address is option status_listen in /etc/config/csipd)"
        ),
    })?;
    response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("cannot read the answer of {url}: {e}"))
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
