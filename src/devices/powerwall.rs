//! The Tesla Powerwall 2 / Backup Gateway 2 as a site meter, over the gateway's local
//! HTTPS API (as Tesla's gateway serves it to its own app and as open-dynamic-export
//! reads it): `POST /api/login/Basic` with the customer password gives a token; `GET
//! /api/meters/aggregates` gives the site meter (`site.instant_power`, W, positive =
//! import), and `GET /api/meters/site` its per-phase values where the gateway has them.
//!
//! The gateway's certificate is self-signed: csipd pins its SHA-256 fingerprint. With
//! none configured the first one seen is pinned ("trust on first use"), kept in a file
//! so that a restart does not trust a new one, and shown in the status; the installer
//! changes it with option `fingerprint` (or by deleting the file). A mismatch stops
//! before the password is sent.
//!
//! The exchange is blocking (std `TcpStream` + OpenSSL, HTTP/1.0 so that the answer is
//! never chunked) and runs on smol's blocking pool (`smol::unblock`), like the price
//! fetch; the parsers are pure.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::sunspec::{AcValues, MeterReading};

/// What csipd needs to reach one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerwallParams {
    /// The device's name in logs and the status.
    pub name: String,
    pub host: String,
    /// Default 443.
    pub port: u16,
    /// The customer password (the last five characters of the gateway's serial unless
    /// changed).
    pub password: String,
    /// The pinned certificate fingerprint (SHA-256, hex, any case, `:` allowed); None =
    /// trust on first use, kept in `pin_file`.
    pub fingerprint: Option<String>,
    /// Where a first-use fingerprint is kept.
    pub pin_file: Option<PathBuf>,
    /// Connect and read timeout.
    pub timeout: Duration,
}

/// A failed exchange with the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum PowerwallError {
    /// Network, TLS or HTTP framing failure.
    Io { device: String, detail: String },
    /// The gateway's certificate is not the pinned one.
    Fingerprint {
        device: String,
        pinned: String,
        seen: String,
    },
    /// The login was refused (wrong password).
    Login { device: String, status: u16 },
    /// An HTTP status other than 200.
    Status {
        device: String,
        path: String,
        status: u16,
    },
    /// The body is not what the API gives.
    Body {
        device: String,
        path: String,
        detail: BodyError,
    },
}

/// A gateway answer that is not what its API gives.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON at all (an HTML page, a cut-off body); the parser's message.
    NotJson(String),
    /// Something the reading needs is not there; says what, in the API's names.
    Missing(&'static str),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotJson(e) => write!(f, "not JSON: {e}"),
            BodyError::Missing(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for BodyError {}

impl fmt::Display for PowerwallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerwallError::Io { device, detail } => write!(f, "device '{device}': {detail}"),
            PowerwallError::Fingerprint {
                device,
                pinned,
                seen,
            } => write!(
                f,
                "device '{device}': the gateway's certificate has fingerprint {seen}, not the \
                 pinned {pinned}; if the gateway was replaced, set option 'fingerprint' to \
                 the new one"
            ),
            PowerwallError::Login { device, status } => write!(
                f,
                "device '{device}': login refused (HTTP {status}): check option 'password'"
            ),
            PowerwallError::Status {
                device,
                path,
                status,
            } => write!(f, "device '{device}': GET {path}: HTTP {status}"),
            PowerwallError::Body {
                device,
                path,
                detail,
            } => write!(f, "device '{device}': {path}: {detail}"),
        }
    }
}

impl std::error::Error for PowerwallError {}

/// Normalises a fingerprint to upper-case hex without separators.
pub fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `AB:CD:…` for people.
pub fn display_fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn number(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64().filter(|x| x.is_finite())
}

/// The site meter from `/api/meters/aggregates` (`site`: `instant_power` W import
/// positive, `instant_reactive_power` var, `instant_apparent_power` VA,
/// `instant_average_voltage` V, `frequency` Hz, `energy_exported`/`energy_imported`
/// Wh). `model` is 0: no SunSpec model. 0 V and 0 Hz are left out as from any device.
pub fn parse_aggregates(body: &str) -> Result<MeterReading, BodyError> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let site = v
        .get("site")
        .filter(|s| s.is_object())
        .ok_or(BodyError::Missing("no \"site\" meter in the aggregates"))?;
    let w =
        number(site, "instant_power").ok_or(BodyError::Missing("site.instant_power missing"))?;
    let mut ac = AcValues {
        w: Some(w),
        var: number(site, "instant_reactive_power"),
        va: number(site, "instant_apparent_power"),
        v: number(site, "instant_average_voltage"),
        hz: number(site, "frequency"),
        ..Default::default()
    };
    super::sunspec::drop_non_measurements(&mut ac);
    Ok(MeterReading {
        model: 0,
        ac,
        export_wh: number(site, "energy_exported"),
        import_wh: number(site, "energy_imported"),
    })
}

/// Per-phase values from `/api/meters/site` (a list whose first entry's
/// `Cached_readings` has `v_l1n`…`v_l3n`, `real_power_a`…`_c`, `reactive_power_a`…`_c`,
/// `i_a_current`…`i_c_current`), into `ac`. Phases the gateway does not give stay
/// unknown.
pub fn add_site_phases(body: &str, ac: &mut AcValues) -> Result<(), BodyError> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let r = v
        .get(0)
        .and_then(|m| m.get("Cached_readings"))
        .ok_or(BodyError::Missing("no Cached_readings in the site meter"))?;
    for (i, p) in ["a", "b", "c"].into_iter().enumerate() {
        let ph = &mut ac.phases[i];
        ph.v = number(r, &format!("v_l{}n", i + 1));
        ph.w = number(r, &format!("real_power_{p}"));
        ph.var = number(r, &format!("reactive_power_{p}"));
        ph.a = number(r, &format!("i_{p}_current"));
    }
    let v_total = ac.v;
    super::sunspec::drop_non_measurements(ac);
    // Keep the gateway's own average when it gave one.
    if v_total.is_some_and(|v| v > 0.0) {
        ac.v = v_total;
    }
    Ok(())
}

/// One gateway: the session token and the pinned fingerprint.
pub struct Gateway {
    params: PowerwallParams,
    token: Option<String>,
    pinned: Option<String>,
    /// Logins done (the first, and one after each expired session).
    pub logins: u64,
}

struct Reply {
    status: u16,
    body: String,
}

impl Gateway {
    /// A gateway; the pin comes from `params.fingerprint`, else from `params.pin_file`.
    pub fn new(params: PowerwallParams) -> Gateway {
        let pinned = params
            .fingerprint
            .as_deref()
            .map(normalise_fingerprint)
            .or_else(|| {
                let text = std::fs::read_to_string(params.pin_file.as_ref()?).ok()?;
                Some(normalise_fingerprint(&text)).filter(|f| !f.is_empty())
            });
        Gateway {
            params,
            token: None,
            pinned,
            logins: 0,
        }
    }

    /// The fingerprint in force (pinned), `AB:CD:…`.
    pub fn fingerprint(&self) -> Option<String> {
        self.pinned.as_deref().map(display_fingerprint)
    }

    fn io(&self, detail: String) -> PowerwallError {
        PowerwallError::Io {
            device: self.params.name.clone(),
            detail,
        }
    }

    /// One HTTP/1.0 exchange over TLS; checks the certificate against the pin (or pins
    /// it) before anything is sent.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Reply, PowerwallError> {
        let p = &self.params;
        let addr = (p.host.as_str(), p.port)
            .to_socket_addrs()
            .map_err(|e| self.io(format!("{}:{}: {e}", p.host, p.port)))?
            .next()
            .ok_or_else(|| self.io(format!("{}: no address", p.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, p.timeout)
            .map_err(|e| self.io(format!("connect {addr}: {e}")))?;
        let _ = tcp.set_read_timeout(Some(p.timeout));
        let _ = tcp.set_write_timeout(Some(p.timeout));
        let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
            .map_err(|e| self.io(format!("TLS: {e}")))?;
        // Self-signed: the chain is not verified; the pinned fingerprint is.
        builder.set_verify(openssl::ssl::SslVerifyMode::NONE);
        let connector = builder.build();
        let mut cfg = connector
            .configure()
            .map_err(|e| self.io(format!("TLS: {e}")))?;
        cfg.set_verify_hostname(false);
        let mut tls = cfg
            .connect(&p.host, tcp)
            .map_err(|e| self.io(format!("TLS handshake with {addr}: {e}")))?;
        let cert = tls
            .ssl()
            .peer_certificate()
            .ok_or_else(|| self.io("the gateway sent no certificate".into()))?;
        let der = cert
            .to_der()
            .map_err(|e| self.io(format!("certificate: {e}")))?;
        let seen: String = sha2::Sha256::digest_hex(&der);
        match &self.pinned {
            Some(pin) if *pin != seen => {
                return Err(PowerwallError::Fingerprint {
                    device: p.name.clone(),
                    pinned: display_fingerprint(pin),
                    seen: display_fingerprint(&seen),
                });
            }
            Some(_) => {}
            None => {
                log::warn!(
                    "device '{}': pinned the gateway's certificate on first use: {}",
                    p.name,
                    display_fingerprint(&seen)
                );
                if let Some(file) = &p.pin_file {
                    if let Err(e) = std::fs::write(file, format!("{seen}\n")) {
                        log::warn!(
                            "device '{}': cannot keep the fingerprint in {}: {e}",
                            p.name,
                            file.display()
                        );
                    }
                }
                self.pinned = Some(seen);
            }
        }
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n",
            p.host
        );
        if let Some(t) = &self.token {
            head.push_str(&format!(
                "Authorization: Bearer {t}\r\nCookie: AuthCookie={t}\r\n"
            ));
        }
        let body = body.unwrap_or_default();
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .and_then(|()| tls.write_all(body.as_bytes()))
            .map_err(|e| self.io(format!("{method} {path}: {e}")))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > 1 << 20 {
                        return Err(self.io(format!("{path}: answer over 1 MiB")));
                    }
                }
                // A peer that closes without close_notify ends the body too.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::Other => break,
                Err(e) => return Err(self.io(format!("{method} {path}: {e}"))),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(self.io(format!("{method} {path}: no complete HTTP answer"))),
        };
        Ok(Reply {
            status: resp.code.unwrap_or(0),
            body: String::from_utf8_lossy(&raw[n..]).to_string(),
        })
    }

    fn login(&mut self) -> Result<(), PowerwallError> {
        self.token = None;
        let body = serde_json::json!({
            "username": "customer",
            "password": self.params.password,
            "email": "",
            "force_sm_off": false,
        })
        .to_string();
        let r = self.exchange("POST", "/api/login/Basic", Some(&body))?;
        if r.status != 200 {
            return Err(PowerwallError::Login {
                device: self.params.name.clone(),
                status: r.status,
            });
        }
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let token =
            v.get("token")
                .and_then(|t| t.as_str())
                .ok_or_else(|| PowerwallError::Body {
                    device: self.params.name.clone(),
                    path: "/api/login/Basic".into(),
                    detail: BodyError::Missing("no token in the answer"),
                })?;
        self.token = Some(token.to_string());
        self.logins += 1;
        Ok(())
    }

    /// GET with the session, logging in first when there is none and once more when
    /// the gateway says the session ended (401/403).
    fn get(&mut self, path: &str) -> Result<String, PowerwallError> {
        if self.token.is_none() {
            self.login()?;
        }
        let mut r = self.exchange("GET", path, None)?;
        if matches!(r.status, 401 | 403) {
            log::info!(
                "device '{}': session ended (HTTP {}); logging in again",
                self.params.name,
                r.status
            );
            self.login()?;
            r = self.exchange("GET", path, None)?;
        }
        if r.status != 200 {
            return Err(PowerwallError::Status {
                device: self.params.name.clone(),
                path: path.into(),
                status: r.status,
            });
        }
        Ok(r.body)
    }

    /// Reads the site meter (aggregates, then per-phase values when the gateway gives
    /// them; a gateway without `/api/meters/site` still gives the totals).
    pub fn read_site(&mut self) -> Result<MeterReading, PowerwallError> {
        let path = "/api/meters/aggregates";
        let body = self.get(path)?;
        let mut m = parse_aggregates(&body).map_err(|detail| PowerwallError::Body {
            device: self.params.name.clone(),
            path: path.into(),
            detail,
        })?;
        if let Ok(site) = self.get("/api/meters/site") {
            if let Err(e) = add_site_phases(&site, &mut m.ac) {
                log::debug!("device '{}': /api/meters/site: {e}", self.params.name);
            }
        }
        Ok(m)
    }
}

/// SHA-256 as upper-case hex.
trait DigestHex {
    fn digest_hex(data: &[u8]) -> String;
}

impl DigestHex for sha2::Sha256 {
    fn digest_hex(data: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_give_the_site_meter() {
        let body = r#"{"site":{"last_communication_time":"2026-11-30T10:00:00+10:00",
            "instant_power":-2345.5,"instant_reactive_power":120,"instant_apparent_power":2400,
            "frequency":50.01,"energy_exported":12345,"energy_imported":678,
            "instant_average_voltage":239.5},
            "battery":{"instant_power":-500},"load":{"instant_power":1500},"solar":{"instant_power":4300}}"#;
        let m = parse_aggregates(body).unwrap();
        assert_eq!(m.ac.w, Some(-2345.5));
        assert_eq!(m.ac.var, Some(120.0));
        assert_eq!(m.ac.v, Some(239.5));
        assert_eq!(m.ac.hz, Some(50.01));
        assert_eq!((m.export_wh, m.import_wh), (Some(12345.0), Some(678.0)));
        let e = parse_aggregates(r#"{"load":{}}"#).unwrap_err();
        assert!(e.to_string().contains("site"), "{e}");
        assert!(parse_aggregates(r#"{"site":{"frequency":50}}"#).is_err());
        assert!(matches!(
            parse_aggregates("<html>"),
            Err(BodyError::NotJson(_))
        ));
        // An idle meter's 0 V / 0 Hz is not a measurement.
        let m = parse_aggregates(
            r#"{"site":{"instant_power":0,"frequency":0,"instant_average_voltage":0}}"#,
        )
        .unwrap();
        assert_eq!((m.ac.w, m.ac.v, m.ac.hz), (Some(0.0), None, None));
    }

    #[test]
    fn site_phases_where_the_gateway_gives_them() {
        let mut ac =
            parse_aggregates(r#"{"site":{"instant_power":900,"instant_average_voltage":240}}"#)
                .unwrap()
                .ac;
        let body = r#"[{"id":0,"location":"site","Cached_readings":{"v_l1n":241.0,
            "v_l2n":239.0,"v_l3n":0,"real_power_a":500,"real_power_b":400,
            "reactive_power_a":10,"i_a_current":2.1}}]"#;
        add_site_phases(body, &mut ac).unwrap();
        assert_eq!(ac.phases[0].v, Some(241.0));
        assert_eq!(ac.phases[2].v, None, "0 V is no measurement");
        assert_eq!(ac.phases[1].w, Some(400.0));
        assert_eq!(ac.phases[2].w, None);
        assert_eq!(ac.v, Some(240.0), "the gateway's own average kept");
        assert!(add_site_phases("[]", &mut ac).is_err());
    }

    #[test]
    fn fingerprints_compare_however_written() {
        assert_eq!(normalise_fingerprint("ab:CD:0f"), "ABCD0F");
        assert_eq!(display_fingerprint("ABCD0F"), "AB:CD:0F");
    }
}
