//! Launches the GridAPPS-D IEEE 2030.5 server (PyPI `gridappsd-2030-5`, installed into the
//! peers venv by tests/setup.d/30-gridappsd.sh) for integration tests.
//!
//! `GridappsdServer::start(&GridappsdOptions)` writes `config.yml` and `openssl.cnf` into
//! a fresh directory under target/test-tmp, picks a port (below the ephemeral range:
//! tests/support/ports.rs; the server cannot bind port 0 and say which it got, and it is
//! started again on another port when its bind fails), starts `2030_5_server`, waits
//! until it accepts connections, and returns the URL plus the CA and per-device client
//! certificate/key paths the server generated. The process is killed on drop.
//!
//! Extend `GridappsdOptions` (devices with `fsas`/`ders`, a default program, extra YAML)
//! rather than copying this file. `extra_yaml` is appended verbatim to config.yml for
//! keys this helper does not model yet (e.g. `programs:`, `fsas:`, `ders:`).
#![allow(dead_code)]

#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/wait.rs"]
pub mod wait;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One end device the server knows at start (and makes a client certificate for).
#[derive(Clone, Debug)]
pub struct GridappsdDevice {
    /// Certificate common name and file stem, e.g. "dev1".
    pub id: String,
    pub pin: u32,
    /// FunctionSetAssignments names this device gets (must exist in `extra_yaml`).
    pub fsas: Vec<String>,
    /// DER names this device gets (must exist in `extra_yaml`).
    pub ders: Vec<String>,
}

impl GridappsdDevice {
    pub fn new(id: &str, pin: u32) -> GridappsdDevice {
        GridappsdDevice {
            id: id.to_string(),
            pin,
            fsas: Vec::new(),
            ders: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GridappsdOptions {
    pub devices: Vec<GridappsdDevice>,
    /// `default_program:` section (YAML, indented by two spaces per level, without the
    /// key itself). `None` gives a small program with a DefaultDERControl.
    pub default_program_yaml: Option<String>,
    /// Appended verbatim to config.yml.
    pub extra_yaml: String,
    /// Make `admin.crt`/`admin.pem` for the /admin endpoints.
    pub admin_cert: bool,
    /// Called with the work directory after the config is written and before the
    /// server starts (e.g. to pre-create storage the server forgets to create).
    pub before_start: Option<fn(&Path)>,
    pub startup_timeout: Duration,
}

impl Default for GridappsdOptions {
    fn default() -> Self {
        GridappsdOptions {
            devices: vec![GridappsdDevice::new("dev1", 111115)],
            default_program_yaml: None,
            extra_yaml: String::new(),
            admin_cert: true,
            before_start: None,
            startup_timeout: Duration::from_secs(90),
        }
    }
}

/// Certificate and key of one client the server generated.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct GridappsdServer {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The CA that signed the server's and the clients' certificates.
    pub ca_cert: PathBuf,
    output: Arc<Mutex<Vec<String>>>,
    /// The threads reading the server's stdout and stderr into `output`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

const DEFAULT_PROGRAM: &str = "  description: Default program
  primacy: 0
  DefaultDERControl:
    setGradW: 55000
    DERControlBase:
      opModConnect: true
      opModMaxLimW: 9500
";

/// An openssl.cnf for `openssl req` and `openssl ca` as the server calls them. The
/// server replaces `dir = REPLACE_WITH_REPO_PATH`. Leaf certificates get v3 extensions
/// with a subjectAltName for 127.0.0.1 so that name verification works.
const OPENSSL_CNF: &str = "# written by tests/common/gridappsd.rs
dir = REPLACE_WITH_REPO_PATH

[ ca ]
default_ca = CA_default

[ CA_default ]
certs = $dir/certs
new_certs_dir = $dir/certs
database = $dir/index.txt
serial = $dir/serial
private_key = $dir/private/ca.pem
certificate = $dir/certs/ca.crt
default_days = 365
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
x509_extensions = leaf_ext

[ policy_any ]
countryName = optional
commonName = supplied

[ leaf_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// The peers venv: env `PEERS_VENV`, else target/peers-venv.
pub fn peers_venv() -> PathBuf {
    std::env::var_os("PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv"))
}

impl GridappsdServer {
    pub fn start(options: &GridappsdOptions) -> GridappsdServer {
        let server_bin = peers_venv().join("bin/2030_5_server");
        assert!(
            server_bin.exists(),
            "GridAPPS-D 2030.5 server not installed at {}: run `bash tests/setup.sh`",
            server_bin.display()
        );
        let mut taken = Vec::new();
        for _ in 0..ports::BIND_ATTEMPTS {
            match GridappsdServer::start_on(&server_bin, ports::candidate(), options) {
                Ok(server) => return server,
                Err(port) => taken.push(port),
            }
        }
        panic!("the GridAPPS-D server found every port taken: {taken:?}")
    }

    /// Starts the server on `port` in a fresh directory; `Err(port)` when its bind
    /// failed because the port is taken.
    fn start_on(
        server_bin: &Path,
        port: u16,
        options: &GridappsdOptions,
    ) -> Result<GridappsdServer, u16> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-tmp")
            .join(format!("gridappsd-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create gridappsd dir");
        fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        fs::write(dir.join("config.yml"), config_yaml(&dir, port, options)).expect("config");
        if let Some(hook) = options.before_start {
            hook(&dir);
        }
        // The server writes each certificate request to /tmp/<common name> and deletes
        // it: two servers starting at once (tests run in parallel) delete each other's.
        // Start-ups take turns under a lock shared by every test process.
        let lock = fs::File::create(std::env::temp_dir().join("csipd-gridappsd-startup.lock"))
            .expect("create the GridAPPS-D start-up lock file");
        // Test-only code: File::lock needs Rust 1.89; the crate itself keeps rust-version.
        #[allow(clippy::incompatible_msrv)]
        lock.lock().expect("take the GridAPPS-D start-up lock");
        let mut child = Command::new(server_bin)
            // --create-certs: a fresh CA, server, admin and per-device certificates.
            .args(["config.yml", "--create-certs"])
            .current_dir(&dir)
            // The server's /tm breaks with TZ=UTC (PEERS.md); give it a named zone.
            .env("TZ", "Australia/Adelaide")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_bin.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut lines) = output.lock() {
                        lines.push(line);
                    }
                }
            }));
        }
        let mut server = GridappsdServer {
            child,
            ca_cert: dir.join("tls/certs/ca.crt"),
            url: format!("https://127.0.0.1:{port}"),
            dir,
            port,
            output,
            readers,
        };
        let ready = server.wait_ready(options.startup_timeout);
        drop(lock);
        if ready { Ok(server) } else { Err(port) }
    }

    /// Waits until the port accepts connections and the certificates exist: true. A
    /// server that exits first is reported at once rather than after the timeout: false
    /// when its port was taken meanwhile, a panic for anything else (a broken config).
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let what = format!("the GridAPPS-D server listening on {}", self.port);
        wait::wait_until_every(timeout, Duration::from_millis(200), &what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                // All it said before it exited (the readers end with its pipes).
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                let output = self.output().join("\n");
                if ports::port_taken(&output) {
                    return Ok(false);
                }
                panic!(
                    "GridAPPS-D server exited ({status}) before listening on {}; output:\n{output}",
                    self.port,
                );
            }
            let listening = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if listening && self.ca_cert.exists() {
                Ok(true)
            } else {
                Err(self.output().last().cloned())
            }
        })
    }

    /// The client certificate and key the server made for device `id` (or "admin").
    pub fn identity(&self, id: &str) -> ClientIdentity {
        ClientIdentity {
            cert: self.dir.join(format!("tls/certs/{id}.crt")),
            key: self.dir.join(format!("tls/private/{id}.pem")),
        }
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The live list of the server's output lines (appended as they come), for a check
    /// made from another thread at the moment something happens there.
    pub fn output_log(&self) -> Arc<Mutex<Vec<String>>> {
        self.output.clone()
    }
}

impl Drop for GridappsdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn yaml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn config_yaml(dir: &Path, port: u16, options: &GridappsdOptions) -> String {
    let mut yaml = format!(
        "# written by tests/common/gridappsd.rs
server: 127.0.0.1
port: {port}
tls_repository: {tls}
openssl_cnf: openssl.cnf
lfdi_mode: lfdi_mode_from_cert_fingerprint
generate_admin_cert: {admin}
cleanse_storage: true
storage_path: {storage}
default_program:
{program}devices:
",
        tls = dir.join("tls").display(),
        admin = options.admin_cert,
        storage = dir.join("data_store").display(),
        program = options
            .default_program_yaml
            .as_deref()
            .unwrap_or(DEFAULT_PROGRAM),
    );
    for device in &options.devices {
        yaml.push_str(&format!(
            "  - id: {}\n    pin: {}\n    fsas: {}\n    ders: {}\n",
            device.id,
            device.pin,
            yaml_list(&device.fsas),
            yaml_list(&device.ders)
        ));
    }
    yaml.push_str(&options.extra_yaml);
    yaml
}
