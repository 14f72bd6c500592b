//! The simulated utility on the network: TLS 1.2 with client certificates from the lab
//! CA, CCM8 offered first (as CSIP-AUS requires) then GCM, and HTTP/1.1 with keep-alive,
//! one thread per connection. Requests go to [`Utility::handle`] under a mutex with the
//! time the `clock` function gives.
//!
//! Why threads and blocking OpenSSL: the simulator serves a handful of clients in a demo
//! (or a few hundred in a load test); a thread each keeps the TLS and framing code short
//! and obviously correct. tiny_http (already a dependency) has no client-certificate TLS.

use super::lab_pki::LabPki;
use super::{Request, Utility};
use crate::clock::Now;
use openssl::ssl::{
    SslAcceptor, SslFiletype, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// TLS 1.2 suites the simulated utility offers, in its order of preference.
pub const UTILITY_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256";
/// Largest request head and body accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// An idle keep-alive connection is closed after this.
const IDLE: Duration = Duration::from_secs(120);

/// The clock the server reads for each request (the caller's: `runtime`'s SystemClock
/// in the daemon, anything in tests).
pub type Clock = Arc<dyn Fn() -> Now + Send + Sync>;

/// A running simulated utility.
pub struct UtilityServer {
    pub addr: SocketAddr,
    pub pki: LabPki,
    utility: Arc<Mutex<Utility>>,
    clock: Clock,
}

/// Why the server could not start.
#[derive(Debug)]
pub struct ServerError(pub String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

fn acceptor(pki: &LabPki) -> Result<SslAcceptor, ServerError> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: openssl::error::ErrorStack| {
            ServerError(format!("simulated utility TLS, {what}: {err}"))
        }
    };
    // Not mozilla_intermediate_v5: it loads finite-field DH parameters, and the vendored
    // OpenSSL is built with no-dh (scripts/openssl-configure), so it would not link.
    // The modern profile's TLS 1.3 floor is replaced just below.
    let mut b = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server()).map_err(e("context"))?;
    // CSIP-AUS is TLS 1.2 with CCM8; a TLS 1.3 handshake would never show the suite.
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e("version"))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e("version"))?;
    // OpenSSL >= 3.2 puts CCM8 below security level 1 (see src/http/tls.rs); the list
    // itself keeps to AEAD suites with ECDHE.
    b.set_security_level(0);
    b.set_cipher_list(UTILITY_TLS12_CIPHERS)
        .map_err(e("cipher list"))?;
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE);
    b.set_groups_list("P-256:X25519:P-384")
        .map_err(e("groups"))?;
    b.set_certificate_chain_file(&pki.server_cert)
        .map_err(e("server certificate"))?;
    b.set_private_key_file(&pki.server_key, SslFiletype::PEM)
        .map_err(e("server key"))?;
    b.check_private_key().map_err(e("server key"))?;
    b.set_ca_file(&pki.ca_cert).map_err(e("CA"))?;
    let ca_pem = std::fs::read(&pki.ca_cert)
        .map_err(|err| ServerError(format!("{}: {err}", pki.ca_cert.display())))?;
    let ca = X509::from_pem(&ca_pem).map_err(e("CA"))?;
    b.add_client_ca(&ca).map_err(e("client CA"))?;
    // Client certificates are asked for and verified when sent; the 2030.5 resources
    // then refuse a request without one (403), `/sim/report` does not need one.
    b.set_verify(SslVerifyMode::PEER);
    Ok(b.build())
}

impl UtilityServer {
    /// Binds `listen` and serves `utility` on background threads (for the process's
    /// lifetime).
    pub fn start(
        listen: SocketAddr,
        pki: LabPki,
        utility: Utility,
        clock: Clock,
    ) -> Result<UtilityServer, ServerError> {
        let acceptor = Arc::new(acceptor(&pki)?);
        let listener = TcpListener::bind(listen).map_err(|err| {
            ServerError(format!(
                "simulated utility cannot listen on {listen}: {err}"
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|err| ServerError(format!("simulated utility: {err}")))?;
        let utility = Arc::new(Mutex::new(utility));
        let (u, c) = (utility.clone(), clock.clone());
        std::thread::Builder::new()
            .name("sim-utility".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (acceptor, u, c) = (acceptor.clone(), u.clone(), c.clone());
                    let _ = std::thread::Builder::new()
                        .name("sim-utility-conn".into())
                        .spawn(move || {
                            if let Err(err) = serve_connection(&acceptor, stream, &u, &c) {
                                log::debug!("simulated utility connection: {err}");
                            }
                        });
                }
            })
            .map_err(|err| ServerError(format!("simulated utility thread: {err}")))?;
        Ok(UtilityServer {
            addr,
            pki,
            utility,
            clock,
        })
    }

    /// The DeviceCapability URL.
    pub fn dcap_url(&self) -> String {
        format!("https://{}/dcap", self.addr)
    }

    /// The report as JSON (what `GET /sim/report` shows).
    pub fn report_json(&self) -> String {
        let now = (self.clock)();
        self.utility
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report_json(now)
    }

    /// Runs `f` on the utility's state (for callers in the same process).
    pub fn with<R>(&self, f: impl FnOnce(&Utility) -> R) -> R {
        f(&self.utility.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn peer_lfdi(ssl: &SslStream<TcpStream>) -> Option<String> {
    let cert = ssl.ssl().peer_certificate()?;
    let der = cert.to_der().ok()?;
    crate::sep2::lfdi_from_der(&der).ok()
}

fn serve_connection(
    acceptor: &SslAcceptor,
    stream: TcpStream,
    utility: &Mutex<Utility>,
    clock: &Clock,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.set_nodelay(true);
    let mut ssl = acceptor
        .accept(stream)
        .map_err(|err| io::Error::other(format!("TLS handshake: {err}")))?;
    let cipher = ssl
        .ssl()
        .current_cipher()
        .map_or("unknown", |c| c.name())
        .to_string();
    let lfdi = peer_lfdi(&ssl);
    utility
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_connection(&cipher);
    let mut buf: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let Some((request, keep_alive)) = read_request(&mut ssl, &mut buf)? else {
            return Ok(());
        };
        let reply = {
            let now = clock();
            let mut u = utility.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::take(&mut first) {
                u.record_first_request(&request, now);
            }
            u.handle(&request, lfdi.as_deref(), now)
        };
        // A 204 carries no body and no Content-Length (RFC 9110 8.6).
        let mut head = if reply.status == 204 {
            format!("HTTP/1.1 204 {}\r\n", reason(204))
        } else {
            format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                reply.status,
                reason(reply.status),
                reply.content_type,
                reply.body.len()
            )
        };
        if let Some(location) = &reply.location {
            head.push_str(&format!("Location: {location}\r\n"));
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        if reply.status != 204 {
            out.extend_from_slice(reply.body.as_bytes());
        }
        ssl.write_all(&out)?;
        ssl.flush()?;
        if !keep_alive {
            let _ = ssl.shutdown();
            return Ok(());
        }
    }
}

/// Reads one request (head and Content-Length body); `None` when the client closed
/// the connection between requests. The bool says whether to keep the connection.
fn read_request(
    ssl: &mut SslStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> io::Result<Option<(Request, bool)>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("GET").to_string();
                let target = req.path.unwrap_or("/").to_string();
                let http10 = req.version == Some(0);
                let mut length = 0usize;
                let mut close = http10;
                for h in req.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().map_err(|_| {
                            bad(format!("Content-Length '{value}' is not a number"))
                        })?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(bad("chunked request bodies are not supported".into()));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        let v = value.to_ascii_lowercase();
                        close = v.contains("close") || (http10 && !v.contains("keep-alive"));
                    }
                }
                if length > MAX_BODY {
                    return Err(bad(format!("request body of {length} bytes is too large")));
                }
                while buf.len() < head_len + length {
                    let n = ssl.read(&mut chunk)?;
                    if n == 0 {
                        return Err(bad("connection closed inside a request body".into()));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[head_len..head_len + length].to_vec();
                buf.drain(..head_len + length);
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_string(), q.to_string()),
                    None => (target, String::new()),
                };
                return Ok(Some((
                    Request {
                        method,
                        path,
                        query,
                        body,
                    },
                    !close,
                )));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(bad("request head too large".into()));
                }
            }
            Err(err) => return Err(bad(format!("malformed request: {err}"))),
        }
        let n = match ssl.read(&mut chunk) {
            Ok(n) => n,
            // A client that goes away without close_notify between requests.
            Err(_) if buf.is_empty() => 0,
            Err(err) => return Err(err),
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed inside a request head".into()))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Client, ClientConfig};
    use crate::sim::utility::UtilityOptions;
    use crate::sim::utility::schedule::DayPlan;

    /// csipd's own HTTP client against the server over loopback: mutual TLS from the
    /// lab PKI, CCM8 negotiated, keep-alive (one connection for several requests), and
    /// `/sim/report` without a client certificate while `/dcap` needs one.
    #[test]
    fn csipd_client_talks_ccm8_with_the_lab_pki() {
        const T: i64 = 1_760_000_000;
        let dir = std::env::temp_dir().join(format!("csipd-sim-utility-{}", std::process::id()));
        let pki = LabPki::create(&dir, T).expect("lab PKI");
        let plan = DayPlan::new(T, 2880).expect("plan");
        let utility = Utility::new(UtilityOptions::for_plan(
            plan,
            &pki.device_lfdi,
            pki.device_sfdi,
        ));
        let clock: Clock = Arc::new(|| Now::at(T + 1));
        let server =
            UtilityServer::start("127.0.0.1:0".parse().unwrap(), pki.clone(), utility, clock)
                .expect("server starts");
        let origin = format!("https://{}", server.addr);

        let mut config = ClientConfig::new(&origin);
        config.client_cert = Some(pki.device_cert.clone());
        config.client_key = Some(pki.device_key.clone());
        config.ca_bundle = Some(pki.ca_cert.clone());
        let mut client = Client::new(config.clone()).expect("client");
        smol::block_on(async {
            let dcap = client.get("/dcap").await.expect("GET /dcap");
            assert_eq!(dcap.status, 200);
            assert!(dcap.body_text().contains("<DeviceCapability"));
            let info = client.connection_info().expect("connected").clone();
            assert_eq!(info.cipher, "ECDHE-ECDSA-AES128-CCM8");
            let derc = client.get("/derp/1/derc?s=0&l=5").await.expect("GET derc");
            assert_eq!(derc.status, 200);
            assert!(derc.body_text().contains(r#"responseRequired="03""#));
        });
        assert_eq!(client.stats().connections, 1, "keep-alive: one connection");

        // No client certificate: the report is open, the 2030.5 resources are not.
        let mut anonymous = ClientConfig::new(&origin);
        anonymous.ca_bundle = Some(pki.ca_cert.clone());
        let mut anonymous = Client::new(anonymous).expect("client");
        smol::block_on(async {
            let report = anonymous.get("/sim/report").await.expect("GET report");
            assert_eq!(report.status, 200);
            let json: serde_json::Value = serde_json::from_str(&report.body_text()).expect("JSON");
            // The device's connection and this one.
            assert_eq!(json["tls_ciphers"]["ECDHE-ECDSA-AES128-CCM8"], 2);
            assert_eq!(json["requests_by_kind"]["GET DERControlList"], 1);
            let refused = anonymous.get("/dcap").await;
            assert_eq!(refused.err().and_then(|e| e.status()), Some(403));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
