//! `config mqtt 'broker'`: publishing the status to an MQTT broker (see `crate::mqtt`).
//! A child of `typed` so it reads options with the same [`SectionReader`] and reports
//! problems with file:line like every other section.

use super::{Checker, Section, SectionReader, empty_section, singleton_reader};

/// The address `config mqtt` is recorded under (its usual name).
pub const MQTT_SECTION: &str = "broker";

/// The options of `config mqtt`.
pub(super) const MQTT_OPTIONS: &[&str] = &[
    "enabled",
    "url",
    "ca",
    "cert",
    "key",
    "username",
    "password",
    "password_file",
    "client_id",
    "base_topic",
    "qos",
    "retain",
    "interval_s",
    "discovery",
    "discovery_prefix",
];

/// `mqtt://` (plain TCP) or `mqtts://` (TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttScheme {
    /// Plain TCP (MQTT's IANA port 1883).
    Mqtt,
    /// TLS (port 8883).
    Mqtts,
}

/// A broker address from option `url`: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: MqttScheme,
    /// Host name or IP address (an IPv6 literal without its brackets).
    pub host: String,
    /// Default 1883 for `mqtt://`, 8883 for `mqtts://` (the IANA ports).
    pub port: u16,
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            MqttScheme::Mqtt => "mqtt",
            MqttScheme::Mqtts => "mqtts",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses option `url`, saying what is wrong.
fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (MqttScheme::Mqtts, rest, 8883)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (MqttScheme::Mqtt, rest, 1883)
    } else {
        return Err(format!(
            "\"{url}\" is not a broker URL; expected mqtt://host[:port] or mqtts://host[:port]"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('@') {
        return Err(format!(
            "\"{url}\": only mqtt[s]://host[:port] is understood (no path, query or \
             user@; set options username and password instead)"
        ));
    }
    if authority.chars().any(char::is_whitespace) {
        return Err(format!("\"{url}\" contains a space"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("\"{url}\": an IPv6 address needs its closing ']'"))?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("\"{url}\": unexpected '{p}' after ']'")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "\"{url}\" has no host; expected mqtt://host[:port] or mqtts://host[:port]"
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("\"{url}\" has an invalid port '{p}'")),
        },
    };
    Ok(BrokerUrl {
        scheme,
        host: host.to_string(),
        port,
    })
}

/// Checks a topic prefix: MQTT 3.1.1 §4.7 forbids the wildcards `+` and `#` in topic
/// names, and an empty level or a leading `$` would make topics that subscribers'
/// usual filters (`csipd/#`) miss.
fn check_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['+', '#']) {
        return Err("must not contain the MQTT wildcards '+' or '#'".into());
    }
    if prefix.starts_with('$') {
        return Err("must not start with '$' (reserved for the broker's own topics)".into());
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    if prefix.chars().any(|c| c.is_control() || c == '\0') {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// `config mqtt 'broker'`: publish limits and site state to an MQTT broker. Read-only:
/// csipd subscribes to nothing (README, "MQTT").
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Default false: nothing is published.
    pub enabled: bool,
    /// Required when enabled.
    pub url: Option<BrokerUrl>,
    /// CA bundle (PEM) the broker's certificate must chain to (mqtts); `None`: the
    /// system trust store.
    pub ca: Option<String>,
    /// Client certificate and key (PEM) for brokers that require one (mqtts).
    pub cert: Option<String>,
    /// The key of `cert`.
    pub key: Option<String>,
    /// MQTT 3.1.1 §3.1.3.4 user name.
    pub username: Option<String>,
    /// The password itself; prefer `password_file` (not readable by LuCI users).
    pub password: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<String>,
    /// Default `csipd-<base_topic>` with '/' as '-'.
    pub client_id: String,
    /// Prefix of every state topic. Default `csipd`.
    pub base_topic: String,
    /// 0, 1 or 2. Default 0.
    pub qos: u8,
    /// Retain the state topics (so a subscriber sees the last value at once).
    /// Default true. Availability and discovery topics are always retained.
    pub retain: bool,
    /// Readings are published at this interval, and every topic is republished. State
    /// changes (limits, events, utility, setpoints) go out within a second. Default 10 s;
    /// 1..=3600.
    pub interval_s: u32,
    /// Publish Home Assistant discovery configs. Default true.
    pub discovery: bool,
    /// Default `homeassistant` (Home Assistant's default discovery prefix).
    pub discovery_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            url: None,
            ca: None,
            cert: None,
            key: None,
            username: None,
            password: None,
            password_file: None,
            client_id: "csipd-csipd".into(),
            base_topic: "csipd".into(),
            qos: 0,
            retain: true,
            interval_s: 10,
            discovery: true,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

pub(super) fn read_mqtt(checker: &mut Checker<'_>, section: Option<&Section>) -> MqttConfig {
    let empty = empty_section("mqtt", MQTT_SECTION);
    let section = section.unwrap_or(&empty);
    let mut r = singleton_reader(checker, section, MQTT_SECTION);
    let defaults = MqttConfig::default();
    let enabled = r.bool("enabled", false);
    let url = r.string("url").and_then(|text| {
        parse_broker_url(&text)
            .map_err(|why| {
                let pos = r.pos_of("url");
                r.checker.error(pos, format!("option 'url': {why}"));
            })
            .ok()
    });
    if enabled && url.is_none() && !r.is_set("url") {
        let pos = r.pos_of("enabled");
        r.checker.error(
            pos,
            "mqtt 'broker' is enabled but option 'url' is not set (e.g. \
             mqtt://192.168.1.1:1883)"
                .to_string(),
        );
    }
    fn paths(r: &mut SectionReader<'_, '_, '_>, name: &str) -> Option<String> {
        let value = r.string(name);
        if let Some(path) = &value {
            if !path.starts_with('/') {
                let pos = r.pos_of(name);
                r.checker.error(
                    pos,
                    format!("option '{name}' must be an absolute path, got \"{path}\""),
                );
            }
        }
        value
    }
    let ca = paths(&mut r, "ca");
    let cert = paths(&mut r, "cert");
    let key = paths(&mut r, "key");
    let password_file = paths(&mut r, "password_file");
    match (&cert, &key) {
        (Some(_), None) => {
            let pos = r.pos_of("cert");
            r.checker
                .error(pos, "option 'cert' is set without option 'key'".to_string());
        }
        (None, Some(_)) => {
            let pos = r.pos_of("key");
            r.checker
                .error(pos, "option 'key' is set without option 'cert'".to_string());
        }
        _ => {}
    }
    if url.as_ref().is_some_and(|u| u.scheme == MqttScheme::Mqtt) {
        for name in ["ca", "cert", "key"] {
            if r.is_set(name) {
                let pos = r.pos_of(name);
                r.checker.warning(
                    pos,
                    format!("option '{name}' is for mqtts:// brokers; ignored for mqtt://"),
                );
            }
        }
    }
    let username = r.string("username");
    let password = r.string("password");
    if password.is_some() && password_file.is_some() {
        let pos = r.pos_of("password_file");
        r.checker.error(
            pos,
            "set option 'password' or option 'password_file', not both".to_string(),
        );
    }
    if (password.is_some() || password_file.is_some()) && username.is_none() {
        let pos = r.pos_of(if password.is_some() {
            "password"
        } else {
            "password_file"
        });
        r.checker.error(
            pos,
            "a password needs option 'username' too (MQTT 3.1.1 §3.1.2.9)".to_string(),
        );
    }
    fn prefix(r: &mut SectionReader<'_, '_, '_>, name: &str, default: &str) -> String {
        match r.string(name) {
            Some(p) => match check_topic_prefix(&p) {
                Ok(()) => p,
                Err(why) => {
                    let pos = r.pos_of(name);
                    r.checker
                        .error(pos, format!("option '{name}' \"{p}\" {why}"));
                    default.to_string()
                }
            },
            None => default.to_string(),
        }
    }
    let base_topic = prefix(&mut r, "base_topic", &defaults.base_topic);
    let discovery_prefix = prefix(&mut r, "discovery_prefix", &defaults.discovery_prefix);
    let client_id = match r.string("client_id") {
        // MQTT 3.1.1 §3.1.3.1: servers must accept 1..=23 characters of [0-9a-zA-Z];
        // mosquitto and most others take up to 65535 bytes of UTF-8.
        Some(id) if id.len() > 65535 => {
            let pos = r.pos_of("client_id");
            r.checker.error(
                pos,
                "option 'client_id' is longer than 65535 bytes".to_string(),
            );
            id
        }
        Some(id) => id,
        None => format!("csipd-{}", base_topic.replace('/', "-")),
    };
    let qos = r.uint("qos", "(MQTT QoS 0, 1 or 2)", 0, 2).unwrap_or(0) as u8;
    let retain = r.bool("retain", true);
    let interval_s = r
        .uint("interval_s", "seconds", 1, 3600)
        .map_or(defaults.interval_s, |n| n as u32);
    let discovery = r.bool("discovery", true);
    MqttConfig {
        enabled,
        url,
        ca,
        cert,
        key,
        username,
        password,
        password_file,
        client_id,
        base_topic,
        qos,
        retain,
        interval_s,
        discovery,
        discovery_prefix,
    }
}

/// Problems with the files an enabled `config mqtt` names (password file unreadable or
/// empty, CA bundle without certificates, client certificate expired or not matching
/// its key), each at its option's line. Reads the files: `check-config` calls it at the
/// CLI edge, the typed config stays pure.
pub fn file_diagnostics(
    config: &super::Config,
    now: std::time::SystemTime,
) -> Vec<super::Diagnostic> {
    let m = &config.mqtt;
    if !m.enabled {
        return Vec::new();
    }
    let at = |option: &str, severity: super::Severity, message: String| {
        let location = config.location(MQTT_SECTION, option);
        super::Diagnostic {
            severity,
            file: location
                .as_ref()
                .map_or_else(|| config.file.clone(), |l| l.file.clone()),
            line: location.as_ref().map_or(0, |l| l.line),
            col: 1,
            message,
        }
    };
    let mut out = Vec::new();
    if let Some(path) = &m.password_file {
        match std::fs::read_to_string(path) {
            Ok(text)
                if text
                    .lines()
                    .next()
                    .is_some_and(|l| !l.trim_end().is_empty()) => {}
            Ok(_) => out.push(at(
                "password_file",
                super::Severity::Error,
                format!("mqtt password_file '{path}': the first line is empty"),
            )),
            Err(e) => out.push(at(
                "password_file",
                super::Severity::Error,
                format!("mqtt password_file '{path}': {e}"),
            )),
        }
    }
    if m.url
        .as_ref()
        .is_some_and(|u| u.scheme == MqttScheme::Mqtts)
    {
        if let Some(path) = &m.ca {
            let problem = match std::fs::read(path) {
                Err(e) => Some(e.to_string()),
                Ok(pem) => match openssl::x509::X509::stack_from_pem(&pem) {
                    Ok(certs) if !certs.is_empty() => None,
                    Ok(_) => Some("no PEM certificates in it".to_string()),
                    Err(e) => Some(format!("not PEM certificates: {e}")),
                },
            };
            if let Some(why) = problem {
                out.push(at(
                    "ca",
                    super::Severity::Error,
                    format!("mqtt ca '{path}': {why}"),
                ));
            }
        }
        if let (Some(cert), Some(key)) = (&m.cert, &m.key) {
            for problem in crate::pki::check_identity(
                std::path::Path::new(cert),
                std::path::Path::new(key),
                now,
            ) {
                let severity = match problem.severity {
                    crate::pki::Severity::Error => super::Severity::Error,
                    crate::pki::Severity::Warning => super::Severity::Warning,
                };
                let (option, path) = match problem.file {
                    crate::pki::IdentityFile::Cert => ("cert", cert),
                    crate::pki::IdentityFile::Key => ("key", key),
                };
                out.push(at(
                    option,
                    severity,
                    format!("mqtt {option} '{path}': {}", problem.message),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let u = parse_broker_url("mqtt://192.168.1.1").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (MqttScheme::Mqtt, "192.168.1.1", 1883)
        );
        let u = parse_broker_url("mqtts://broker.lan:8884/").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (MqttScheme::Mqtts, "broker.lan", 8884)
        );
        let u = parse_broker_url("mqtts://[fd00::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[fd00::1]:8883");
        for bad in [
            "tcp://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/topic",
            "mqtt://[::1",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn topic_prefixes_reject_wildcards_and_empty_levels() {
        assert!(check_topic_prefix("csipd").is_ok());
        assert!(check_topic_prefix("home/solar/csipd").is_ok());
        for bad in ["a/+", "#", "/csipd", "csipd/", "a//b", "$SYS"] {
            assert!(check_topic_prefix(bad).is_err(), "{bad} accepted");
        }
    }

    fn diagnostics(text: &str) -> Vec<String> {
        match crate::config::from_text(text, "/etc/config/csipd") {
            Ok((_, warnings)) => warnings.iter().map(|d| d.to_string()).collect(),
            Err(all) => all.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn mqtt_is_off_by_default() {
        let (config, _) = crate::config::from_text("config csipd 'main'\n", "c").unwrap();
        assert_eq!(config.mqtt, MqttConfig::default());
        assert!(!config.mqtt.enabled);
    }

    #[test]
    fn a_full_section_is_read() {
        let text = "config mqtt 'broker'\n\toption enabled '1'\n\toption url \
                    'mqtts://10.0.0.1'\n\toption ca '/etc/csipd/mqtt-ca.pem'\n\toption \
                    username 'csipd'\n\toption password_file '/etc/csipd/mqtt.pass'\n\toption \
                    base_topic 'home/csipd'\n\toption qos '1'\n\toption retain '0'\n\toption \
                    interval_s '30'\n\toption discovery '0'\n";
        let (config, warnings) = crate::config::from_text(text, "c").unwrap();
        let m = &config.mqtt;
        assert!(m.enabled);
        assert_eq!(m.url.as_ref().map(|u| u.port), Some(8883));
        assert_eq!(m.ca.as_deref(), Some("/etc/csipd/mqtt-ca.pem"));
        assert_eq!(m.password_file.as_deref(), Some("/etc/csipd/mqtt.pass"));
        assert_eq!(m.client_id, "csipd-home-csipd");
        assert_eq!(
            (m.qos, m.retain, m.interval_s, m.discovery),
            (1, false, 30, false)
        );
        assert!(
            !warnings.iter().any(|w| w.message.contains("mqtt")),
            "{warnings:?}"
        );
        assert_eq!(
            config.location(MQTT_SECTION, "qos").map(|l| l.line),
            Some(8)
        );
    }

    #[test]
    fn errors_name_the_line_and_the_option() {
        let d = diagnostics("config mqtt 'broker'\n\toption enabled '1'\n");
        assert!(
            d.iter()
                .any(|m| m.starts_with("/etc/config/csipd:2: error:")
                    && m.contains("option 'url' is not set")),
            "{d:?}"
        );
        let d = diagnostics(
            "config mqtt 'broker'\n\toption url 'http://x'\n\toption qos '3'\n\toption \
             password 'p'\n\toption password_file '/p'\n\toption base_topic 'a/#'\n\toption \
             cert 'rel.pem'\n",
        );
        for (line, needle) in [
            (2, "option 'url': \"http://x\" is not a broker URL"),
            (3, "option 'qos' must be between 0 and 2"),
            (4, "a password needs option 'username'"),
            (5, "not both"),
            (
                6,
                "option 'base_topic' \"a/#\" must not contain the MQTT wildcards",
            ),
            (7, "option 'cert' must be an absolute path"),
            (7, "option 'cert' is set without option 'key'"),
        ] {
            let prefix = format!("/etc/config/csipd:{line}: error:");
            assert!(
                d.iter()
                    .any(|m| m.starts_with(&prefix) && m.contains(needle)),
                "no '{needle}' at line {line} in {d:?}"
            );
        }
    }

    #[test]
    fn tls_options_on_a_plain_broker_are_warned_about() {
        let d = diagnostics(
            "config mqtt 'broker'\n\toption enabled '1'\n\toption url 'mqtt://h'\n\toption \
             ca '/etc/ca.pem'\n",
        );
        assert!(
            d.iter()
                .any(|m| m.starts_with("/etc/config/csipd:4: warning:") && m.contains("mqtts")),
            "{d:?}"
        );
    }

    #[test]
    fn files_named_by_an_enabled_section_are_checked() {
        let dir = std::env::temp_dir().join(format!("csipd-mqtt-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pass");
        std::fs::write(&empty, "\n").unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let text = format!(
            "config mqtt 'broker'\n\toption enabled '1'\n\toption url 'mqtts://h'\n\toption \
             username 'u'\n\toption password_file '{}'\n\toption ca '{}'\n",
            empty.display(),
            not_pem.display()
        );
        let (config, _) = crate::config::from_text(&text, "c").unwrap();
        let d: Vec<String> = file_diagnostics(&config, std::time::SystemTime::now())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            d.iter()
                .any(|m| m.starts_with("c:5: error:") && m.contains("first line is empty")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|m| m.starts_with("c:6: error:") && m.contains("mqtt ca")),
            "{d:?}"
        );
        // The same section disabled: nothing is read.
        let (config, _) =
            crate::config::from_text(&text.replace("enabled '1'", "enabled '0'"), "c").unwrap();
        assert!(file_diagnostics(&config, std::time::SystemTime::now()).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
