//! The 2030.5 client's TLS against real peers: `openssl s_server` (CCM8-only with client
//! certificate verification, GCM-only, TLS 1.3-only, wrong CA) and Python's standard
//! library HTTP/1.1 server over TLS for keep-alive. Certificates are made per test with
//! the openssl CLI (P-256).

#[path = "common/test_pki.rs"]
mod test_pki;

use csipd::http::{Client, ClientConfig, HttpError};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use test_pki::{KeyPair, SServer, TempDir, make_ca, make_leaf};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Lab {
    dir: TempDir,
    ca: KeyPair,
    server: KeyPair,
    device: KeyPair,
}

fn lab(tag: &str) -> Lab {
    let dir = TempDir::new(tag);
    let ca = make_ca(dir.path(), "utility-ca");
    let server = make_leaf(dir.path(), &ca, "server");
    let device = make_leaf(dir.path(), &ca, "device");
    Lab {
        dir,
        ca,
        server,
        device,
    }
}

fn client_for(lab: &Lab, url: &str) -> Client {
    let mut config = ClientConfig::new(url);
    config.client_cert = Some(lab.device.cert.clone());
    config.client_key = Some(lab.device.key.clone());
    config.ca_bundle = Some(lab.ca.cert.clone());
    Client::new(config).expect("client config")
}

/// The s_server -www status page counts completed handshakes ("server accepts that finished").
fn accepts_finished(page: &str) -> u64 {
    page.lines()
        .find(|l| l.contains("server accepts that finished"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no handshake counter in s_server page:\n{page}"))
}

#[test]
fn ccm8_only_server_with_client_verification() {
    let lab = lab("ccm8");
    let ca = lab.ca.cert.to_str().unwrap();
    let _s = SServer::start(
        &lab.server,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-CCM8",
            "-Verify",
            "1",
            "-CAfile",
            ca,
            "-www",
        ],
    );
    let mut client = client_for(&lab, &_s.url());
    let response = smol::block_on(client.get("/dcap")).expect("GET over CCM8");
    assert_eq!(response.status, 200);
    let page = response.body_text();
    // Both ends agree: our connection info and the server's own report.
    let info = client.connection_info().expect("connection info");
    assert_eq!(info.protocol, "TLSv1.2");
    assert_eq!(info.cipher, "ECDHE-ECDSA-AES128-CCM8");
    assert_eq!(
        info.cipher_standard_name.as_deref(),
        Some("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8")
    );
    assert!(page.contains("Cipher is ECDHE-ECDSA-AES128-CCM8"), "{page}");
    // The server verified our certificate (-Verify 1 prints the peer's subject).
    assert!(
        page.contains("CN = device") || page.contains("CN=device"),
        "{page}"
    );
    // s_server -www answers HTTP/1.0 and closes: the next request reconnects by itself.
    let second = smol::block_on(client.get("/dcap")).expect("second GET after close");
    assert_eq!(second.status, 200);
    assert_eq!(client.stats().handshakes, 2);
    assert_eq!(accepts_finished(&second.body_text()), 2);
    // The reconnect resumed the first session: no second key exchange.
    assert_eq!(client.stats().resumed_handshakes, 1);
    assert!(
        second
            .body_text()
            .contains("Reused, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-CCM8"),
        "{}",
        second.body_text()
    );
}

#[test]
fn ccm8_server_rejects_a_client_without_certificate() {
    let lab = lab("nocert");
    let ca = lab.ca.cert.to_str().unwrap();
    let s = SServer::start(
        &lab.server,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-CCM8",
            "-Verify",
            "1",
            "-CAfile",
            ca,
            "-www",
        ],
    );
    let mut config = ClientConfig::new(&s.url());
    config.ca_bundle = Some(lab.ca.cert.clone());
    let mut client = Client::new(config).unwrap();
    let err = smol::block_on(client.get("/dcap")).expect_err("no client certificate");
    assert!(
        matches!(
            err,
            HttpError::Tls { .. } | HttpError::Closed { .. } | HttpError::Io { .. }
        ),
        "{err}"
    );
}

#[test]
fn server_signed_by_another_ca_is_refused_clearly() {
    let lab = lab("wrongca");
    let rogue_ca = make_ca(lab.dir.path(), "rogue-ca");
    let rogue_server = make_leaf(lab.dir.path(), &rogue_ca, "rogue-server");
    let s = SServer::start(&rogue_server, &["-tls1_2", "-www"]);
    let mut client = client_for(&lab, &s.url());
    let err = smol::block_on(client.get("/dcap")).expect_err("untrusted server");
    let message = err.to_string();
    assert!(matches!(err, HttpError::Tls { .. }), "{message}");
    assert!(message.contains("server certificate rejected"), "{message}");
    assert!(
        message.contains("unable to get local issuer certificate"),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", s.port)),
        "{message}"
    );
    assert!(!err.is_transient());
    assert_eq!(client.stats().handshakes, 0);
}

/// Without a configured CA (the price API, `csipd fetch` without --ca) the client trusts
/// the system's roots, named here by `SSL_CERT_FILE` (run as a process so the variable
/// stays out of this one). The other half, the probe of /etc/ssl/certs and friends that
/// a vendored OpenSSL needs on a router, would need writing there and is not tested.
#[test]
fn without_a_ca_the_system_roots_are_trusted() {
    let lab = lab("sysroots");
    let s = SServer::start(&lab.server, &["-tls1_2", "-www"]);
    let fetch = |cert_file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_csipd"))
            .args(["fetch", "/dcap", "--url", &s.url(), "--timeout", "20"])
            .env("SSL_CERT_FILE", cert_file)
            .env("SSL_CERT_DIR", lab.dir.path().join("no-such-dir"))
            .stdin(Stdio::null())
            .output()
            .expect("run csipd fetch")
    };
    let trusted = fetch(&lab.ca.cert);
    let stderr = String::from_utf8_lossy(&trusted.stderr);
    assert!(trusted.status.success(), "{stderr}");
    assert!(stderr.contains("200"), "{stderr}");
    // A system store without the utility's CA: refused, and the reason is named.
    let rogue_ca = make_ca(lab.dir.path(), "rogue-ca");
    let refused = fetch(&rogue_ca.cert);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("unable to get local issuer certificate"),
        "{stderr}"
    );
}

#[test]
fn server_name_must_match_the_certificate() {
    let lab = lab("name");
    // A certificate for another host name, from the right CA.
    let other = lab.dir.path().join("other.ext");
    std::fs::write(&other, "subjectAltName=DNS:utility.example\n").unwrap();
    let csr = lab.dir.path().join("other.csr");
    let key = lab.dir.path().join("other.key");
    let cert = lab.dir.path().join("other.crt");
    test_pki::openssl(
        lab.dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            "/CN=utility.example",
        ],
    );
    test_pki::openssl(
        lab.dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            lab.ca.cert.to_str().unwrap(),
            "-CAkey",
            lab.ca.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            other.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let s = SServer::start(&KeyPair { cert, key }, &["-tls1_2", "-www"]);
    let mut client = client_for(&lab, &s.url());
    let err = smol::block_on(client.get("/dcap")).expect_err("name mismatch");
    assert!(err.to_string().contains("address mismatch"), "{err}");
}

#[test]
fn gcm_only_and_tls13_only_servers_still_work() {
    let lab = lab("gcm13");
    let ca = lab.ca.cert.to_str().unwrap();
    let gcm = SServer::start(
        &lab.server,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "-Verify",
            "1",
            "-CAfile",
            ca,
            "-www",
        ],
    );
    let mut client = client_for(&lab, &gcm.url());
    assert_eq!(smol::block_on(client.get("/")).unwrap().status, 200);
    assert_eq!(
        client.connection_info().unwrap().cipher,
        "ECDHE-ECDSA-AES256-GCM-SHA384"
    );

    let tls13 = SServer::start(
        &lab.server,
        &["-tls1_3", "-Verify", "1", "-CAfile", ca, "-www"],
    );
    let mut client = client_for(&lab, &tls13.url());
    assert_eq!(smol::block_on(client.get("/")).unwrap().status, 200);
    let info = client.connection_info().unwrap();
    assert_eq!(info.protocol, "TLSv1.3");
    assert!(info.cipher.starts_with("TLS_AES_"), "{info:?}");
}

/// Python's standard-library HTTP/1.1 server over TLS (CCM8 only, client certificate
/// required): keeps connections alive, prints one line per TLS connection it accepts.
const PY_KEEPALIVE_SERVER: &str = r#"
import http.server, socket, ssl, sys, threading
cert, key, ca = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle plus the
        # client's delayed ACK add 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("CONNECTION", self.connection.cipher()[0], flush=True)
    def answer(self, status, body=b"", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/sep+xml")
        for k, v in extra:
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)
    def do_GET(self):
        self.answer(200, ("<p>" + self.path + "</p>").encode())
    def do_PUT(self):
        self.answer(204, extra=[("X-Got", str(len(self.body())))])
    def do_POST(self):
        got = self.body()
        self.answer(201, extra=[("Location", "/mup/7")] if got.startswith(b"<") else [])
    def do_DELETE(self):
        self.answer(204)
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.set_ciphers("ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0")
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("PORT", srv.server_address[1], flush=True)
srv.serve_forever()
"#;

#[test]
fn many_requests_over_one_connection_cost_one_handshake() {
    let lab = lab("keepalive");
    let script = lab.dir.path().join("server.py");
    std::fs::write(&script, PY_KEEPALIVE_SERVER).unwrap();
    let mut child = KillOnDrop(
        Command::new("python3")
            .arg(&script)
            .args([&lab.server.cert, &lab.server.key, &lab.ca.cert])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 missing"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let port_line = lines.next().expect("server output").unwrap();
    let port: u16 = port_line.trim_start_matches("PORT ").parse().unwrap();
    let mut client = client_for(&lab, &format!("https://127.0.0.1:{port}"));
    smol::block_on(async {
        for i in 0..5 {
            let r = client.get(&format!("/edev/{i}")).await.unwrap();
            assert_eq!(r.body_text(), format!("<p>/edev/{i}</p>"));
        }
        let put = client.put("/edev/0/cfg", b"<Config/>").await.unwrap();
        assert_eq!((put.status, put.header("x-got")), (204, Some("9")));
        let post = client.post("/mup", b"<MirrorUsagePoint/>").await.unwrap();
        assert_eq!((post.status, post.location()), (201, Some("/mup/7")));
        let del = client.delete("/edev/0/sub/1").await.unwrap();
        assert_eq!(del.status, 204);
    });
    let stats = client.stats();
    assert_eq!(stats.responses, 8);
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.connections, 1, "{stats:?}");
    drop(child);
    // The server saw exactly one TLS connection, on CCM8.
    let connections: Vec<String> = lines
        .map_while(Result::ok)
        .filter(|l| l.starts_with("CONNECTION"))
        .collect();
    assert_eq!(
        connections,
        vec!["CONNECTION ECDHE-ECDSA-AES128-CCM8".to_string()]
    );
}
