//! Helpers for the runtime tests: start `csipd` processes (the debug binary), find the
//! addresses they print, read their status, send them signals.
#![allow(dead_code)]

#[path = "../support/wait.rs"]
pub mod wait;

use csipd::status::{LimitMode, Snapshot};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
pub use wait::{PATIENCE, wait_until, wait_until_every};

pub const BIN: &str = env!("CARGO_BIN_EXE_csipd");

/// A child process whose stdout and stderr lines arrive on channels; killed on drop.
pub struct Proc {
    pub child: Child,
    pub stdout: Receiver<String>,
    pub stderr: Receiver<String>,
    pub seen_stderr: Vec<String>,
}

pub fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .env("CSIPD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN} {args:?}: {e}"));
    let (out_tx, stdout) = channel();
    let (err_tx, stderr) = channel();
    let out = child.stdout.take().expect("stdout piped");
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    Proc {
        child,
        stdout,
        stderr,
        seen_stderr: Vec::new(),
    }
}

impl Proc {
    /// The first stdout line starting with `prefix` (the rest of it), within `timeout`
    /// (at least [`PATIENCE`]: a process starting on a loaded machine may be slow).
    pub fn stdout_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let timeout = timeout.max(PATIENCE);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => {
                    self.drain_stderr();
                    panic!(
                        "no stdout line starting with '{prefix}' within {timeout:?}; stderr:\n{}",
                        self.seen_stderr.join("\n")
                    )
                }
            }
        }
    }

    /// The first stdout line containing `needle` (from now on), within `timeout` (at
    /// least [`PATIENCE`]): the daemon's info and debug log lines (warnings and errors
    /// are on stderr).
    pub fn stdout_containing(&mut self, needle: &str, timeout: Duration) -> String {
        let timeout = timeout.max(PATIENCE);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    self.drain_stderr();
                    panic!(
                        "no stdout line containing '{needle}' within {timeout:?}; stderr:\n{}",
                        self.seen_stderr.join("\n")
                    )
                }
            }
        }
    }

    /// The first stderr line containing `needle` (from now on), within `timeout` (at
    /// least [`PATIENCE`]).
    pub fn stderr_line(&mut self, needle: &str, timeout: Duration) -> String {
        let timeout = timeout.max(PATIENCE);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen_stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing '{needle}' within {timeout:?}; stderr:\n{}",
                    self.seen_stderr.join("\n")
                ),
            }
        }
    }

    /// The stdout lines that arrived so far and were not read yet.
    pub fn drain_stdout(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.try_recv() {
            lines.push(line);
        }
        lines
    }

    /// Every stdout line not read yet, up to the end of the pipe: for a process that
    /// has exited (or been killed), all it wrote, however late its reader thread runs.
    pub fn stdout_to_end(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.stdout.recv_timeout(PATIENCE) {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stdout of a finished process still open after {PATIENCE:?}")
                }
            }
        }
    }

    pub fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen_stderr.push(line);
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} {} failed", self.child.id());
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit code (waiting up to [`PATIENCE`]).
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        let child = &mut self.child;
        wait_until(PATIENCE, "csipd to exit after SIGTERM", || {
            match child.try_wait() {
                Ok(Some(status)) => Ok(status.code()),
                other => Err(other),
            }
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /status and parse it as the daemon's snapshot.
pub fn status(url: &str) -> Snapshot {
    let text = csipd::status::client::get_text(url, "/status")
        .unwrap_or_else(|e| panic!("GET {url}/status: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}/status is not a snapshot: {e}"))
}

/// The export limit in force (value, source kind) of a snapshot.
pub fn export_limit(s: &Snapshot) -> Option<(f64, String)> {
    let l = s.limit(LimitMode::Export)?;
    Some((l.value_w?, l.source.kind().to_string()))
}

/// Export tolerance: max(2 %, 100 W) above the limit (issue 8's figure).
pub fn tolerance_w(limit_w: f64) -> f64 {
    (0.02 * limit_w).max(100.0)
}

/// Polls `url` every 200 ms until `ok` holds, returning that snapshot; panics with the
/// last snapshot after `timeout` (at least [`PATIENCE`]: the daemon is a real-time
/// process, and on a loaded machine everything it does comes later).
#[track_caller]
pub fn wait_for(
    url: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    wait_until_every(
        timeout.max(PATIENCE),
        Duration::from_millis(200),
        what,
        || {
            let s = status(url);
            if ok(&s) { Ok(s) } else { Err(Box::new(s)) }
        },
    )
}

/// A self-signed lab identity made by `csipd cert selfsigned` in `dir`:
/// (key path, cert path, LFDI, SFDI).
pub fn selfsigned_identity(
    dir: &std::path::Path,
    common_name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String, u64) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = Command::new(BIN)
        .args(["cert", "selfsigned", "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .args(["--cn", common_name])
        .output()
        .expect("csipd cert selfsigned");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id =
        csipd::sep2::identity_from_pem(&std::fs::read(&cert).expect("cert")).expect("identity");
    (key, cert, id.lfdi, id.sfdi)
}

/// A fresh directory for one test under cargo's target tmpdir (emptied first).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// "tcp://127.0.0.1:PORT unit 1" (as `csipd demo --sim-only` prints) → "PORT".
pub fn port_of(line: &str) -> String {
    line.split(':')
        .nth(2)
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_else(|| panic!("no port in '{line}'"))
        .to_string()
}

/// `csipd run --config CONFIG` and the status URL it prints once listening.
pub fn start_run(config: &str) -> (Proc, String) {
    let mut run = spawn(&["run", "--config", config]);
    let line = run.stdout_containing("status server listening on ", PATIENCE);
    let url = line
        .split("listening on ")
        .nth(1)
        .expect("url")
        .trim()
        .to_string();
    (run, url)
}

/// A `config device` section in UCI syntax for a Modbus TCP device on loopback.
pub fn uci_tcp_device(name: &str, role: &str, port: &str, unit_id: u8) -> String {
    format!(
        "
config device '{name}'
\toption role '{role}'
\toption transport 'tcp'
\toption host '127.0.0.1'
\toption port '{port}'
\toption unit_id '{unit_id}'
"
    )
}

/// The simulated site (`csipd demo --sim-only`, running for `seconds`) and its inverter
/// ('inv1') and meter ('meter') as UCI device sections.
pub fn sim_devices(seconds: u32) -> (Proc, String) {
    let mut sim = spawn(&["demo", "--sim-only", "--seconds", &seconds.to_string()]);
    let inverter = port_of(&sim.stdout_line("inverter: ", PATIENCE));
    let meter = port_of(&sim.stdout_line("meter: ", PATIENCE));
    let devices = uci_tcp_device("inv1", "inverter", &inverter, 1)
        + &uci_tcp_device("meter", "meter", &meter, 1);
    (sim, devices)
}

/// The `config server 'utility'` section for a scripted CSIP-AUS server in csipd's
/// plain-HTTP lab mode (PEN 12345): `dcap_url`, the client certificate and key.
pub fn uci_lab_utility(dcap_url: &str, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "
config server 'utility'
\toption dcap_url '{dcap_url}'
\toption cert '{}'
\toption key '{}'
\toption allow_plain_http '1'
\toption pen '12345'
",
        cert.display(),
        key.display()
    )
}

/// A pymodbus SunSpec site meter (models 1 and 203) at `unit`, base 40000, on one phase
/// at 240 V and 50 Hz. `w` is SunSpec's meter sign: positive imports, negative exports.
pub fn meter_203(unit: u8, w: i32) -> serde_json::Value {
    let a_hundredths = (f64::from(w.abs()) / 2.4).round() as i64;
    serde_json::json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Meters R Us"}},
        {"id": 203, "values": {
            "A": a_hundredths, "AphA": a_hundredths, "A_SF": -2,
            "PhV": 2400, "PhVphA": 2400, "V_SF": -1, "Hz": 5000, "Hz_SF": -2,
            "W": w, "WphA": w, "W_SF": 0, "VAR": 0, "VARphA": 0, "VAR_SF": 0,
            "TotWhExp": 0, "TotWhImp": 1500, "TotWh_SF": 1}}
    ]})
}

/// A pymodbus SunSpec PV inverter at `unit` (models 1, 103, 120, 121, 123, then
/// `more` models), rated `rating_w`, producing `w`, its 123 limit off.
pub fn pv_inverter_123(
    unit: u8,
    (mn, md): (&str, &str),
    rating_w: u32,
    w: u32,
    more: &[serde_json::Value],
) -> serde_json::Value {
    let mut models = vec![
        serde_json::json!({"id": 1, "values": {"Mn": mn, "Md": md}}),
        serde_json::json!({"id": 103, "values": {"W": w, "W_SF": 0, "PhVphA": 2400,
            "V_SF": -1, "Hz": 5000, "Hz_SF": -2, "St": 4}}),
        serde_json::json!({"id": 120, "values": {"DERTyp": 4, "WRtg": rating_w, "WRtg_SF": 0}}),
        serde_json::json!({"id": 121, "values": {"WMax": rating_w, "WMax_SF": 0}}),
        serde_json::json!({"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100,
            "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0}}),
    ];
    models.extend(more.iter().cloned());
    serde_json::json!({"unit": unit, "base": 40000, "models": models})
}
