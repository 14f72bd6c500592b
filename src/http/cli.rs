//! `csipd fetch PATH`: GET one resource with the device identity and print it. Installers
//! need this because curl does not offer the CSIP-AUS CCM8 suite unless asked.

use super::{Client, ClientConfig, HttpError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub const FETCH_USAGE: &str =
    "usage: csipd fetch PATH [--config FILE] [--url URL] [--cert FILE] [--key FILE]
                   [--ca FILE] [--insecure] [--timeout SECONDS] [--repeat N]
  GET PATH (e.g. /dcap) from the utility server with this device's certificate;
  prints the status and TLS suite on stderr and the body on stdout. The server and
  identity come from the configuration (default /etc/config/csipd) unless --url is
  given; --cert/--key/--ca/--insecure override it. --repeat N sends N GETs and
  prints the time per request and the connection and handshake counts.";

/// Parsed `fetch` arguments.
#[derive(Debug, Default, PartialEq)]
struct FetchArgs {
    path: Option<String>,
    config: Option<PathBuf>,
    url: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    insecure: bool,
    timeout_s: Option<u64>,
    repeat: Option<u32>,
}

fn parse_args(args: &[String]) -> Result<FetchArgs, String> {
    let mut parsed = FetchArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--config" => parsed.config = Some(value("--config")?.into()),
            "--url" => parsed.url = Some(value("--url")?),
            "--cert" => parsed.cert = Some(value("--cert")?.into()),
            "--key" => parsed.key = Some(value("--key")?.into()),
            "--ca" => parsed.ca = Some(value("--ca")?.into()),
            "--insecure" => parsed.insecure = true,
            "--timeout" => {
                let v = value("--timeout")?;
                parsed.timeout_s = Some(
                    v.parse()
                        .map_err(|_| format!("--timeout must be whole seconds, got {v:?}"))?,
                );
            }
            "--repeat" => {
                let v = value("--repeat")?;
                parsed.repeat = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("--repeat must be a count >= 1, got {v:?}"))?,
                );
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other if parsed.path.is_none() => parsed.path = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(parsed)
}

/// Entry point of `csipd fetch`.
pub fn fetch_main(args: &[String]) -> ExitCode {
    crate::logging::init(log::LevelFilter::Warn);
    let parsed = match parse_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("csipd fetch: {e}\n{FETCH_USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(path) = parsed.path.clone() else {
        eprintln!("csipd fetch: which PATH? (e.g. /dcap)\n{FETCH_USAGE}");
        return ExitCode::from(2);
    };
    // The configured server and identity (unless --url is given without --config);
    // flags override single settings.
    let mut config = match (&parsed.url, &parsed.config) {
        (Some(url), None) => ClientConfig::new(url),
        (url, config_path) => {
            let path = config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| crate::config::DEFAULT_PATH.to_string());
            let loaded = match crate::config::load(&path) {
                Ok((loaded, _warnings)) => loaded,
                Err(e) => {
                    eprintln!("csipd fetch: {e}\n(or pass --url, --cert, --key and --ca)");
                    return ExitCode::from(2);
                }
            };
            match ClientConfig::from_server_config(&loaded.server) {
                Ok((mut config, _dcap_path)) => {
                    if let Some(url) = url {
                        config.server_url = url.clone();
                    }
                    config
                }
                Err(e) => {
                    eprintln!("csipd fetch: {path}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    if parsed.cert.is_some() {
        config.client_cert = parsed.cert;
    }
    if parsed.key.is_some() {
        config.client_key = parsed.key;
    }
    if parsed.ca.is_some() {
        config.ca_bundle = parsed.ca;
    }
    config.insecure |= parsed.insecure;
    if let Some(t) = parsed.timeout_s {
        config.connect_timeout = Duration::from_secs(t);
        config.read_timeout = Duration::from_secs(t);
    }
    let mut client = match Client::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("csipd fetch: {e}");
            return ExitCode::from(2);
        }
    };
    let repeat = parsed.repeat.unwrap_or(1);
    let started = std::time::Instant::now();
    let mut result = smol::block_on(client.get(&path));
    for _ in 1..repeat {
        if result.is_err() {
            break;
        }
        result = smol::block_on(client.get(&path));
    }
    if repeat > 1 {
        let elapsed = started.elapsed();
        let stats = client.stats();
        eprintln!(
            "{} requests in {:.1} ms ({:.2} ms each): {} connections, {} TLS handshakes ({} resumed)",
            stats.responses,
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3 / f64::from(repeat),
            stats.connections,
            stats.handshakes,
            stats.resumed_handshakes
        );
    }
    if let Some(info) = client.connection_info() {
        eprintln!(
            "connection: {} {}{}",
            info.protocol,
            info.cipher,
            info.cipher_standard_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    match result {
        Ok(response) => {
            eprintln!("status: {} {}", response.status, response.reason);
            if let Some(location) = response.location() {
                eprintln!("location: {location}");
            }
            println!("{}", response.body_text());
            ExitCode::SUCCESS
        }
        Err(HttpError::Status(s)) => {
            eprintln!("status: {} {}", s.status, s.reason);
            println!("{}", String::from_utf8_lossy(&s.body));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("csipd fetch: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fetch_flags_parse() {
        let p = parse_args(&strings(&[
            "/dcap",
            "--url",
            "https://h:1",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--ca",
            "ca.pem",
            "--timeout",
            "5",
        ]))
        .unwrap();
        assert_eq!(p.path.as_deref(), Some("/dcap"));
        assert_eq!(p.url.as_deref(), Some("https://h:1"));
        assert_eq!(p.timeout_s, Some(5));
        assert!(!p.insecure);
        assert!(parse_args(&strings(&["--url"])).is_err());
        assert!(parse_args(&strings(&["/a", "/b"])).is_err());
        assert!(parse_args(&strings(&["--bogus"])).is_err());
        assert!(parse_args(&strings(&["--timeout", "5s"])).is_err());
    }
}
