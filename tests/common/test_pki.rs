//! Test certificates made with the openssl CLI (P-256), and `openssl s_server` as a peer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI missing: run `bash tests/setup.sh`");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed P-256 CA named `name` in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> KeyPair {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    KeyPair { cert, key }
}

/// A P-256 leaf signed by `ca`, valid for localhost and 127.0.0.1.
pub fn make_leaf(dir: &Path, ca: &KeyPair, name: &str) -> KeyPair {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
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
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca.cert.to_str().unwrap(),
            "-CAkey",
            ca.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    KeyPair { cert, key }
}

/// A fresh temporary directory under target/ (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-tmp")
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `openssl s_server` on 127.0.0.1, killed on drop. Its stdout lines are collected.
pub struct SServer {
    child: Child,
    pub port: u16,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl SServer {
    /// Starts `openssl s_server -accept 127.0.0.1:0 -cert -key EXTRA...` and waits until
    /// it accepts connections: its "ACCEPT 127.0.0.1:PORT" line names the port the system
    /// chose (no port picked here and freed again for another test to take first).
    pub fn start(server: &KeyPair, extra: &[&str]) -> SServer {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0"])
            .args(["-cert", server.cert.to_str().unwrap()])
            .args(["-key", server.key.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("openssl CLI missing: run `bash tests/setup.sh`");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = SServer {
            child,
            port: 0,
            lines,
            seen: Vec::new(),
        };
        // Generous: openssl starting on a loaded machine (issue 26).
        let timeout = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + timeout;
        while server.port == 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = server.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "s_server did not accept within {timeout:?}; said {:?}",
                    server.seen
                )
            });
            if let Some(address) = line.strip_prefix("ACCEPT ") {
                server.port = address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or_else(|| panic!("s_server: no port in {line:?}"));
            }
            server.seen.push(line);
        }
        server
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// All stdout lines that have arrived so far (wait for a line you need with a
    /// deadline rather than reading this after a pause).
    pub fn output(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
