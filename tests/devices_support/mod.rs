//! Shared helpers of the devices tests: start the pymodbus SunSpec peer
//! (`tests/peers/sunspec_sim.py`) and a socat serial pair.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../support/wait.rs"]
pub mod wait;

/// Response timeout towards a peer that is meant to answer (pymodbus, a scripted
/// responder): generous, as a Python process on a loaded machine may be slow, and a
/// timeout that fires there is a test failure, not a measurement (issue 26).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Response timeout towards a device that is meant not to answer (frozen, absent unit
/// id): short, as nothing can arrive in time anyway; the test waits for the timeouts.
pub const SILENT_TIMEOUT: Duration = Duration::from_millis(300);

pub fn venv_python() -> PathBuf {
    let venv = std::env::var("PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers-venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "test peer missing: {} not found; run `bash tests/setup.sh` (installs pymodbus and pysunspec2)",
        py.display()
    );
    py
}

/// A running peer process; killed on drop.
pub struct Peer {
    pub child: Child,
    pub port: u16,
    pub write_log: PathBuf,
    pub config: PathBuf,
    _dir: TempDir,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Freezes the peer (SIGSTOP): the TCP socket stays open but nothing answers.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }
    /// The write requests the peer received, one JSON object per line.
    pub fn writes(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.write_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("write log line is JSON"))
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// A temporary directory under target/, removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/devices-tests")
            .join(format!("{tag}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sunspec_sim.py")
}

/// Starts the peer with `config` (the JSON layout) on TCP, or on `serial` if given.
pub fn start_peer(tag: &str, config: &serde_json::Value, serial: Option<&str>) -> Peer {
    let py = venv_python();
    let dir = TempDir::new(tag);
    let cfg = dir.0.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec_pretty(config).expect("config json"),
    )
    .expect("write config");
    let write_log = dir.0.join("writes.jsonl");
    let mut cmd = Command::new(py);
    cmd.arg(peer_script())
        .arg("--config")
        .arg(&cfg)
        .arg("--write-log")
        .arg(&write_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match serial {
        Some(path) => cmd.args(["--serial", path, "--baud", "9600"]),
        // Port 0: the peer binds a free port and says which (no port picked here and
        // freed again for another test to take first).
        None => cmd.args(["--port", "0"]),
    };
    let mut child = cmd.spawn().expect("start sunspec_sim.py");
    let stdout = child.stdout.take().expect("peer stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read peer stdout");
    // READY comes once the peer listens (it reads no guessed pause).
    let Some(where_) = line.trim().strip_prefix("READY ") else {
        panic!(
            "sunspec_sim.py did not start (said {line:?}); is the venv set up? run `bash tests/setup.sh`"
        )
    };
    let port = match serial {
        Some(_) => 0,
        None => where_
            .parse()
            .unwrap_or_else(|_| panic!("sunspec_sim.py: no port in {line:?}")),
    };
    Peer {
        child,
        port,
        write_log,
        config: cfg,
        _dir: dir,
    }
}

/// The register words the peer lays out for each device (from pysunspec2's models).
pub fn peer_layout(config_path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(venv_python())
        .arg(peer_script())
        .arg("--config")
        .arg(config_path)
        .arg("--dump-layout")
        .output()
        .expect("run sunspec_sim.py --dump-layout");
    assert!(
        out.status.success(),
        "dump-layout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("layout JSON"))
        .collect()
}

/// A socat pseudo-terminal pair; killed on drop.
pub struct PtyPair {
    child: Child,
    pub a: String,
    pub b: String,
}

impl PtyPair {
    pub fn new() -> PtyPair {
        let socat = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let mut child = socat.expect("socat not found: run `bash tests/setup.sh` (installs socat)");
        let stderr = child.stderr.take().expect("socat stderr");
        let mut reader = BufReader::new(stderr);
        let mut ptys = Vec::new();
        // socat prints both names at start-up; a dead socat ends the loop (EOF).
        while ptys.len() < 2 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(i) = line.find("PTY is ") {
                ptys.push(line[i + 7..].trim().to_string());
            }
        }
        assert_eq!(ptys.len(), 2, "socat did not report two ptys");
        // keep draining socat's stderr so it never blocks on a full pipe
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        PtyPair {
            child,
            a: ptys.remove(0),
            b: ptys.remove(0),
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A paced serial line (`tests/peers/paced_line.py`): two ptys whose bytes cross at the
/// speed of a real 9600 baud UART. Killed on drop.
pub struct PacedLine {
    child: Child,
    pub a: String,
    pub b: String,
}

impl PacedLine {
    pub fn new(baud: u32) -> PacedLine {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/paced_line.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .args(["--baud", &baud.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start paced_line.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read paced_line.py");
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(
            parts.len() == 3 && parts[0] == "PTYS",
            "paced_line.py said {line:?}"
        );
        PacedLine {
            a: parts[1].to_string(),
            b: parts[2].to_string(),
            child,
        }
    }
}

impl Drop for PacedLine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
