//! TLS for the 2030.5 link, on OpenSSL through the `openssl` crate, driven by smol.
//!
//! Why not async-native-tls: native-tls builds its own `SslContext` with OpenSSL's
//! default cipher list and offers no way to change it or to read the negotiated suite.
//! OpenSSL 3 leaves the CCM8 suites out of DEFAULT, so a native-tls client cannot talk to
//! a CSIP-AUS server offering only TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8. Here we build the
//! `SslConnector` ourselves (same defaults as native-tls, plus our cipher list, client
//! identity and CA) and drive the non-blocking `SslStream` from smol's reactor: on
//! WANT_READ / WANT_WRITE we await socket readiness and try again.

use super::framing::ByteIo;
use openssl::ssl::{
    ErrorCode, ShutdownState, SslConnector, SslContext, SslFiletype, SslMethod, SslSession,
    SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509StoreBuilder;
use smol::Async;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;

/// TLS 1.2 suites we offer, CSIP-AUS's CCM8 first, then the usual ECDHE AEAD suites so
/// servers that only offer GCM or ChaCha still work. TLS 1.3 suites are OpenSSL's defaults.
pub const DEFAULT_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM:\
ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";

/// Handshake signatures we accept (no SHA-1, no SHA-224).
const STRONG_SIGALGS: &str = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:\
RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:rsa_pss_pss_sha256:rsa_pss_pss_sha384:\
rsa_pss_pss_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512";

/// Rejects weak server keys (what OpenSSL's security level 1 would have done).
fn check_peer_key(ssl: &openssl::ssl::SslRef) -> Result<(), String> {
    let Some(cert) = ssl.peer_certificate() else {
        return Ok(()); // insecure lab mode against an anonymous server: nothing to check
    };
    let key = cert
        .public_key()
        .map_err(|e| format!("server certificate key unreadable: {e}"))?;
    let bits = key.bits();
    let minimum = match key.id() {
        openssl::pkey::Id::RSA => 2048,
        openssl::pkey::Id::EC => 256,
        _ => 0,
    };
    if bits < minimum {
        return Err(format!(
            "server certificate key is too weak ({bits} bits, need {minimum})"
        ));
    }
    Ok(())
}

/// What `build_connector` needs.
pub(crate) struct TlsSetup<'a> {
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    pub ca_bundle: Option<&'a Path>,
    pub insecure: bool,
    pub tls12_ciphers: &'a str,
}

pub(crate) fn build_connector(setup: &TlsSetup) -> Result<SslConnector, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| format!("cannot create the TLS context: {e}"))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| format!("cannot set the TLS minimum version: {e}"))?;
    builder.set_cipher_list(setup.tls12_ciphers).map_err(|e| {
        format!(
            "TLS 1.2 cipher list {:?} rejected: {e}",
            setup.tls12_ciphers
        )
    })?;
    if setup.tls12_ciphers.contains("CCM8") {
        // OpenSSL >= 3.2 rates CCM8 (64-bit tag) below security level 1, so it is never
        // offered at the default level. Level 0 brings it back; what level 1 would
        // otherwise guarantee is restored explicitly: only AEAD suites (our list), strong
        // handshake signatures and groups here, and the server key size check after the
        // handshake (`check_peer_key`).
        builder.set_security_level(0);
        builder
            .set_sigalgs_list(STRONG_SIGALGS)
            .map_err(|e| format!("cannot set TLS signature algorithms: {e}"))?;
        builder
            .set_groups_list("X25519:P-256:P-384:P-521")
            .map_err(|e| format!("cannot set TLS groups: {e}"))?;
    }
    // Many 2030.5 servers (HTTP/1.0, Connection: close) drop the TCP connection without
    // a TLS close_notify. OpenSSL would call that a fatal error and mark the session as
    // not resumable, so every reconnect would cost a full handshake. Treat it as EOF:
    // the HTTP framing still catches a body cut short (Content-Length, chunked).
    builder.set_options(openssl::ssl::SslOptions::IGNORE_UNEXPECTED_EOF);
    // A kept-alive connection sits idle between polls: let OpenSSL free its ~34 KiB of
    // record buffers meanwhile instead of holding them for the connection's life.
    builder.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    match (setup.client_cert, setup.client_key) {
        (Some(cert), Some(key)) => {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            let mismatch = || {
                format!(
                    "client key {} does not match certificate {}",
                    key.display(),
                    cert.display()
                )
            };
            // OpenSSL checks the pair here and says only "key values mismatch": a key
            // that reads on its own is the wrong key for this certificate.
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| match crate::pki::load_key(key) {
                    Ok(_) => mismatch(),
                    Err(_) => format!("client key {}: {e}", key.display()),
                })?;
            builder.check_private_key().map_err(|_| mismatch())?;
        }
        (None, None) => {}
        (Some(_), None) => return Err("a client certificate was given without its key".into()),
        (None, Some(_)) => return Err("a client key was given without its certificate".into()),
    }
    if let Some(ca) = setup.ca_bundle {
        // Only the configured CA is trusted: replace the system store.
        let pem = std::fs::read(ca).map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem)
            .map_err(|e| format!("CA bundle {}: not PEM certificates: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("CA bundle {}: no certificates in it", ca.display()));
        }
        let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
        for cert in certs {
            store
                .add_cert(cert)
                .map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
        }
        builder
            .set_verify_cert_store(store.build())
            .map_err(|e| e.to_string())?;
        // `SslConnector::builder` loaded the default roots into the context's own store
        // (all of them, parsed, when SSL_CERT_FILE names a bundle: about 850 KiB per
        // client on a desktop distribution). They are not used with a configured CA:
        // an empty store frees them (`csipd fleet` holds one client per device).
        let empty = X509StoreBuilder::new().map_err(|e| e.to_string())?;
        builder.set_cert_store(empty.build());
    } else if !setup.insecure {
        // No CA configured: the system's roots. A vendored (static) OpenSSL looks for
        // them under its build-time directory, which does not exist on the router, so
        // add the bundle and directory found where distributions put them (OpenWrt's
        // ca-bundle: /etc/ssl/certs/ca-certificates.crt). None found: verification
        // fails with a clear "unable to get local issuer certificate".
        let found = openssl_probe::probe();
        if let Some(file) = &found.cert_file {
            let _ = builder.load_verify_locations(Some(file), None);
        }
        for dir in &found.cert_dir {
            let _ = builder.load_verify_locations(None, Some(dir));
        }
    }
    if setup.insecure {
        builder.set_verify(SslVerifyMode::NONE);
    }
    Ok(builder.build())
}

/// The server side of mutual TLS, for csipd's notification listener
/// (`runtime::notify`): identity `cert`/`key` (csipd's own device certificate), TLS 1.2
/// with [`DEFAULT_TLS12_CIPHERS`] (CCM8 first, as CSIP-AUS requires) or TLS 1.3, and a
/// client certificate required and verified against `ca` only (the utility's CA): a
/// client without one, or with one another CA signed, fails the handshake.
/// Errors name the file that is wrong.
pub fn build_acceptor(cert: &Path, key: &Path, ca: &Path) -> Result<SslContext, String> {
    // A plain context, not SslAcceptor's Mozilla presets: those load finite-field DH
    // parameters, which the size-built OpenSSL may leave out.
    let mut builder = SslContext::builder(SslMethod::tls_server())
        .map_err(|e| format!("cannot create the TLS server context: {e}"))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| format!("cannot set the TLS minimum version: {e}"))?;
    builder
        .set_cipher_list(DEFAULT_TLS12_CIPHERS)
        .map_err(|e| format!("TLS 1.2 cipher list rejected: {e}"))?;
    // CCM8 sits below security level 1 in OpenSSL >= 3.2 (see `build_connector`); the
    // suite list is AEAD-only and the signature algorithms are restricted instead.
    builder.set_security_level(0);
    builder
        .set_sigalgs_list(STRONG_SIGALGS)
        .map_err(|e| format!("cannot set TLS signature algorithms: {e}"))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("key {}: {e}", key.display()))?;
    builder.check_private_key().map_err(|_| {
        format!(
            "key {} does not match certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    let pem = std::fs::read(ca).map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("CA bundle {}: not PEM certificates: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("CA bundle {}: no certificates in it", ca.display()));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for cert in certs {
        store
            .add_cert(cert)
            .map_err(|e| format!("CA bundle {}: {e}", ca.display()))?;
    }
    builder
        .set_verify_cert_store(store.build())
        .map_err(|e| e.to_string())?;
    builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    builder.set_options(openssl::ssl::SslOptions::IGNORE_UNEXPECTED_EOF);
    Ok(builder.build())
}

/// The socket as OpenSSL sees it: plain non-blocking reads and writes.
pub(crate) struct SocketIo(pub Async<TcpStream>);

impl Read for SocketIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket: &TcpStream = self.0.get_ref();
        socket.read(buf)
    }
}

impl Write for SocketIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut socket: &TcpStream = self.0.get_ref();
        socket.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Negotiated TLS parameters of the current connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionInfo {
    /// "TLSv1.2", "TLSv1.3", or "plain" for the debugging mode.
    pub protocol: String,
    /// OpenSSL's suite name, e.g. "ECDHE-ECDSA-AES128-CCM8".
    pub cipher: String,
    /// The IANA/RFC name when OpenSSL knows it, e.g. "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8".
    pub cipher_standard_name: Option<String>,
}

pub(crate) enum Stream {
    Plain(Async<TcpStream>),
    Tls(Box<SslStream<SocketIo>>),
}

impl Stream {
    /// Runs the TLS handshake on a connected socket.
    /// `resume`: a session from an earlier connection of the same connector to the same
    /// server; resuming it skips the key exchange and certificate checks, which is most
    /// of a handshake's cost on a router, for servers that close after every request.
    pub async fn handshake(
        connector: &SslConnector,
        socket: Async<TcpStream>,
        host: &str,
        verify_hostname: bool,
        resume: Option<&SslSession>,
    ) -> Result<Stream, String> {
        let mut ssl = connector
            .configure()
            .and_then(|c| {
                c.verify_hostname(verify_hostname)
                    .use_server_name_indication(host.parse::<std::net::IpAddr>().is_err())
                    .into_ssl(host)
            })
            .map_err(|e| format!("cannot set up TLS for {host}: {e}"))?;
        if let Some(session) = resume {
            // SAFETY: OpenSSL requires the session to come from a context compatible
            // with this one; the caller only passes sessions made by this connector.
            // A failure only means a full handshake.
            let _ = unsafe { ssl.set_session(session) };
        }
        let mut stream =
            SslStream::new(ssl, SocketIo(socket)).map_err(|e| format!("TLS setup: {e}"))?;
        loop {
            match stream.connect() {
                Ok(()) => {
                    check_peer_key(stream.ssl())?;
                    return Ok(Stream::Tls(Box::new(stream)));
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => stream
                    .get_ref()
                    .0
                    .readable()
                    .await
                    .map_err(|e| e.to_string())?,
                Err(e) if e.code() == ErrorCode::WANT_WRITE => stream
                    .get_ref()
                    .0
                    .writable()
                    .await
                    .map_err(|e| e.to_string())?,
                Err(e) => {
                    let verify = stream.ssl().verify_result();
                    return Err(if verify != openssl::x509::X509VerifyResult::OK {
                        format!(
                            "server certificate rejected: {} (is the server's CA in the configured CA bundle, and does the name {host} match the certificate?)",
                            verify.error_string()
                        )
                    } else {
                        describe_ssl_error(&e)
                    });
                }
            }
        }
    }

    /// Runs the server side of a TLS handshake on an accepted socket (mutual TLS: the
    /// acceptor requires and checks the client's certificate).
    pub async fn accept(acceptor: &SslContext, socket: Async<TcpStream>) -> Result<Stream, String> {
        let ssl = openssl::ssl::Ssl::new(acceptor).map_err(|e| format!("TLS setup: {e}"))?;
        let mut stream =
            SslStream::new(ssl, SocketIo(socket)).map_err(|e| format!("TLS setup: {e}"))?;
        loop {
            match stream.accept() {
                Ok(()) => return Ok(Stream::Tls(Box::new(stream))),
                Err(e) if e.code() == ErrorCode::WANT_READ => stream
                    .get_ref()
                    .0
                    .readable()
                    .await
                    .map_err(|e| e.to_string())?,
                Err(e) if e.code() == ErrorCode::WANT_WRITE => stream
                    .get_ref()
                    .0
                    .writable()
                    .await
                    .map_err(|e| e.to_string())?,
                Err(e) => {
                    let verify = stream.ssl().verify_result();
                    return Err(if verify != openssl::x509::X509VerifyResult::OK {
                        format!("client certificate rejected: {}", verify.error_string())
                    } else {
                        describe_ssl_error(&e)
                    });
                }
            }
        }
    }

    /// The TLS session to resume on the next connection (None for plain or not resumable).
    pub fn session(&self) -> Option<SslSession> {
        match self {
            Stream::Tls(s) => s.ssl().session().map(|session| session.to_owned()),
            Stream::Plain(_) => None,
        }
    }

    /// True when the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.ssl().session_reused())
    }

    pub fn info(&self) -> ConnectionInfo {
        match self {
            Stream::Plain(_) => ConnectionInfo {
                protocol: "plain".into(),
                cipher: "none".into(),
                cipher_standard_name: None,
            },
            Stream::Tls(s) => {
                let ssl = s.ssl();
                let cipher = ssl.current_cipher();
                ConnectionInfo {
                    protocol: ssl.version_str().to_string(),
                    cipher: cipher.map(|c| c.name().to_string()).unwrap_or_default(),
                    cipher_standard_name: cipher
                        .and_then(|c| c.standard_name())
                        .map(str::to_string),
                }
            }
        }
    }

    /// True when the idle connection can carry another request: nothing arrived and the
    /// server has not closed. TLS 1.3 session tickets are consumed on the way.
    pub fn is_reusable(&mut self) -> bool {
        match self {
            Stream::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.get_ref().peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(s) => {
                let mut probe = [0u8; 1];
                matches!(s.ssl_read(&mut probe), Err(e) if e.code() == ErrorCode::WANT_READ)
            }
        }
    }
}

impl Drop for Stream {
    /// Says goodbye with a close_notify (best effort, never waits). Without it OpenSSL
    /// takes the connection for a failed one and marks its session as not resumable.
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            let _ = s.shutdown();
            s.set_shutdown(ShutdownState::SENT | ShutdownState::RECEIVED);
        }
    }
}

fn describe_ssl_error(e: &openssl::ssl::Error) -> String {
    if let Some(io) = e.io_error() {
        return format!("connection failed during the TLS handshake: {io}");
    }
    match e.ssl_error() {
        Some(stack) => {
            let reasons: Vec<String> = stack
                .errors()
                .iter()
                .map(|err| err.reason().unwrap_or("unknown").to_string())
                .collect();
            format!("TLS handshake failed: {}", reasons.join("; "))
        }
        None => "TLS handshake failed: the server closed the connection".into(),
    }
}

fn is_unexpected_eof(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::SYSCALL && e.io_error().is_none()
        || e.ssl_error().is_some_and(|stack| {
            stack
                .errors()
                .iter()
                .any(|err| err.reason().is_some_and(|r| r.contains("unexpected eof")))
        })
}

impl ByteIo for Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_with(|io| (&*io).read(buf)).await,
            Stream::Tls(s) => loop {
                match s.ssl_read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                    Err(e) if e.code() == ErrorCode::WANT_READ => s.get_ref().0.readable().await?,
                    Err(e) if e.code() == ErrorCode::WANT_WRITE => s.get_ref().0.writable().await?,
                    // A close without close_notify: the HTTP framing decides whether the
                    // body was complete, as for plain TCP.
                    Err(e) if is_unexpected_eof(&e) => return Ok(0),
                    Err(e) => {
                        return Err(match e.into_io_error() {
                            Ok(io) => io,
                            Err(e) => io::Error::other(e),
                        });
                    }
                }
            },
        }
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                while !buf.is_empty() {
                    let n = s.write_with(|io| (&*io).write(buf)).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    buf = &buf[n..];
                }
                Ok(())
            }
            Stream::Tls(s) => {
                while !buf.is_empty() {
                    match s.ssl_write(buf) {
                        Ok(n) => buf = &buf[n..],
                        Err(e) if e.code() == ErrorCode::WANT_WRITE => {
                            s.get_ref().0.writable().await?
                        }
                        Err(e) if e.code() == ErrorCode::WANT_READ => {
                            s.get_ref().0.readable().await?
                        }
                        Err(e) => {
                            return Err(match e.into_io_error() {
                                Ok(io) => io,
                                Err(e) => io::Error::other(e),
                            });
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client key of another certificate (the lab CA's certificate given as the
    /// device's, say) is named as a mismatch, not as OpenSSL's "key values mismatch".
    #[test]
    fn a_key_of_another_certificate_is_named_as_a_mismatch() {
        let dir = std::env::temp_dir().join(format!("csipd-tls-mismatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path, other_path) =
            (dir.join("c.pem"), dir.join("k.pem"), dir.join("o.pem"));
        let key = crate::pki::generate_p256_key().unwrap();
        let cert = crate::pki::self_signed(&key, "dev", 30, std::time::SystemTime::now()).unwrap();
        std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
        crate::pki::write_private_key(&key_path, &key).unwrap();
        crate::pki::write_private_key(&other_path, &crate::pki::generate_p256_key().unwrap())
            .unwrap();
        fn setup<'a>(cert: &'a Path, key: &'a Path) -> TlsSetup<'a> {
            TlsSetup {
                client_cert: Some(cert),
                client_key: Some(key),
                ca_bundle: None,
                insecure: false,
                tls12_ciphers: crate::http::DEFAULT_TLS12_CIPHERS,
            }
        }
        let Err(why) = build_connector(&setup(&cert_path, &other_path)) else {
            panic!("a mismatched key was accepted");
        };
        assert!(why.contains("does not match certificate"), "{why}");
        assert!(build_connector(&setup(&cert_path, &key_path)).is_ok());
        std::fs::write(&other_path, "junk").unwrap();
        let Err(why) = build_connector(&setup(&cert_path, &other_path)) else {
            panic!("junk accepted as a key");
        };
        assert!(why.starts_with("client key "), "{why}");
        assert!(!why.contains("does not match"), "{why}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
