//! The MQTT task on the daemon's smol `LocalExecutor`: the socket IO for the
//! [`Publisher`] core. TCP through smol's reactor, TLS for `mqtts://` through the same
//! OpenSSL stream as the 2030.5 link (`http::tls`), DNS on smol's blocking pool. Every
//! wait is an await with a deadline, so a broker that is down, slow or silent costs the
//! control loop nothing; the clock is read only through `runtime::clock::SystemClock`.

use super::publisher::{Event, Publisher, Settings};
use crate::config::{MqttConfig, MqttScheme};
use crate::http::framing::ByteIo;
use crate::http::tls::{self, Stream, TlsSetup};
use crate::runtime::clock::SystemClock;
use crate::status::SnapshotHandle;
use openssl::ssl::SslConnector;
use smol::{Async, Timer};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Longest wait for DNS, TCP and the TLS handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait to hand one batch of packets to the socket (a broker that stopped
/// reading fills the TCP window; the connection is then given up and made again).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS 1.2 suites for brokers: ECDHE with AEAD only (no CCM8, which the 2030.5 link
/// needs and brokers do not). TLS 1.3 suites are OpenSSL's defaults.
const BROKER_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305";

/// Why the MQTT task cannot start (bad files named by the configuration).
#[derive(Debug)]
pub enum SetupError {
    /// `password_file` unreadable or empty.
    PasswordFile { path: String, message: String },
    /// CA, client certificate or key unusable.
    Tls(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::PasswordFile { path, message } => {
                write!(f, "mqtt password_file {path}: {message}")
            }
            SetupError::Tls(message) => write!(f, "mqtt TLS setup: {message}"),
        }
    }
}

impl std::error::Error for SetupError {}

fn read_password(config: &MqttConfig) -> Result<Option<String>, SetupError> {
    if let Some(p) = &config.password {
        return Ok(Some(p.clone()));
    }
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| SetupError::PasswordFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    match text.lines().next().map(str::trim_end) {
        Some(line) if !line.is_empty() => Ok(Some(line.to_string())),
        _ => Err(SetupError::PasswordFile {
            path: path.clone(),
            message: "the first line is empty".into(),
        }),
    }
}

fn connector(config: &MqttConfig) -> Result<Option<SslConnector>, SetupError> {
    if config.url.as_ref().map(|u| u.scheme) != Some(MqttScheme::Mqtts) {
        return Ok(None);
    }
    let setup = TlsSetup {
        client_cert: config.cert.as_deref().map(Path::new),
        client_key: config.key.as_deref().map(Path::new),
        ca_bundle: config.ca.as_deref().map(Path::new),
        insecure: false,
        tls12_ciphers: BROKER_TLS12_CIPHERS,
    };
    tls::build_connector(&setup)
        .map(Some)
        .map_err(SetupError::Tls)
}

async fn connect(
    host: &str,
    port: u16,
    connector: Option<&SslConnector>,
) -> Result<Stream, String> {
    let connecting = async {
        let addrs = crate::http::resolve(host, port).await?;
        let mut last_error = String::from("no address");
        for addr in addrs {
            match Async::<TcpStream>::connect(addr).await {
                Ok(socket) => {
                    let _ = socket.get_ref().set_nodelay(true);
                    return match connector {
                        // The broker's name is checked against its certificate.
                        Some(c) => Stream::handshake(c, socket, host, true, None).await,
                        None => Ok(Stream::Plain(socket)),
                    };
                }
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
        Err(last_error)
    };
    smol::future::or(connecting, async {
        Timer::after(CONNECT_TIMEOUT).await;
        Err(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))
    })
    .await
}

async fn write_all(stream: &mut Stream, bytes: &[u8]) -> Result<(), String> {
    smol::future::or(
        async { stream.write_all(bytes).await.map_err(|e| e.to_string()) },
        async {
            Timer::after(WRITE_TIMEOUT).await;
            Err(format!(
                "the broker took no data for {} s",
                WRITE_TIMEOUT.as_secs()
            ))
        },
    )
    .await
}

/// Runs until dropped: connects, publishes, reconnects with backoff. `status` is read
/// (cloned) once per wake-up, at most about once a second. Errors a user must fix
/// (unreadable password file, bad CA or key) are logged and put in the status once, and
/// the task ends; SIGHUP after fixing the file starts it again.
pub async fn run(config: MqttConfig, status: SnapshotHandle, clock: SystemClock) {
    let Some(url) = config.url.clone().filter(|_| config.enabled) else {
        return;
    };
    let setup = read_password(&config).and_then(|p| Ok((p, connector(&config)?)));
    let (password, connector) = match setup {
        Ok(ok) => ok,
        Err(e) => {
            log::error!("{e}; not publishing to {url}");
            let now_s = clock.now().utc_s();
            status.update(|s| s.push_error(now_s, "mqtt", &e.to_string()));
            return;
        }
    };
    log::info!(
        "mqtt: publishing to {url} under '{}' every {} s",
        config.base_topic,
        config.interval_s
    );
    let mut publisher = Publisher::new(Settings::from_config(&config, password), clock.now());
    let mut stream: Option<Stream> = None;
    let mut buf = vec![0u8; 2048];
    // Only the first failure after a success goes to the status, so a broker that is
    // down for a day does not push the utility's errors out of `last_errors`.
    let mut reported_down = false;
    loop {
        let snapshot = status.get();
        let out = publisher.poll(&snapshot, clock.now());
        let mut lost: Option<String> = None;
        if !out.transmit.is_empty() {
            if let Some(s) = stream.as_mut() {
                if let Err(e) = write_all(s, &out.transmit).await {
                    lost = Some(format!("write failed: {e}"));
                }
            }
        }
        if let Some(e) = out.close {
            lost.get_or_insert(e.to_string());
        }
        if let Some(reason) = lost {
            stream = None;
            publisher.handle_disconnected(clock.now(), &reason);
        } else if out.connect {
            match connect(&url.host, url.port, connector.as_ref()).await {
                Ok(s) => {
                    stream = Some(s);
                    publisher.handle_connected(clock.now());
                }
                Err(e) => publisher.handle_connect_failed(clock.now(), &format!("{url}: {e}")),
            }
        } else {
            let wake = clock.instant_of(out.wake_at_ms);
            match stream.as_mut() {
                None => {
                    Timer::at(wake).await;
                }
                Some(s) => {
                    let read = smol::future::or(async { Some(s.read(&mut buf).await) }, async {
                        Timer::at(wake).await;
                        None
                    })
                    .await;
                    let reason = match read {
                        None => None,
                        Some(Ok(0)) => Some("the broker closed the connection".to_string()),
                        Some(Ok(n)) => publisher
                            .handle_input(&buf[..n], clock.now())
                            .err()
                            .map(|e| e.to_string()),
                        Some(Err(e)) => Some(format!("read failed: {e}")),
                    };
                    if let Some(reason) = reason {
                        stream = None;
                        publisher.handle_disconnected(clock.now(), &reason);
                    }
                }
            }
        }
        while let Some(event) = publisher.poll_event() {
            match event {
                Event::Connected => {
                    log::info!("mqtt: connected to {url}");
                    reported_down = false;
                }
                Event::Disconnected { reason, retry_in } => {
                    log::warn!(
                        "mqtt: {reason}; reconnecting in {:.1} s",
                        retry_in.as_secs_f64()
                    );
                    if !reported_down {
                        reported_down = true;
                        let now_s = clock.now().utc_s();
                        status.update(|s| s.push_error(now_s, "mqtt", &reason));
                    }
                }
            }
        }
    }
}
