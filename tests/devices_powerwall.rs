//! The Tesla Powerwall gateway as the site meter (issue 25), under `csipd run`, against
//! a scripted gateway on loopback (`tests/peers/powerwall_gw.py`: no installable peer
//! exists; it answers the local API as the gateway does, with a self-signed certificate,
//! sessions that expire, 401s). The inverter is the pymodbus SunSpec peer.
//! - a load step seen through the gateway's API changes the inverter setpoint;
//! - the certificate is pinned on first use and shown in the status;
//! - an expired login is renewed without the meter going stale;
//! - a gateway that stops answering makes the meter stale: fail-safe, then recovery;
//! - a gateway whose certificate is not the pinned one gets no password.

// devices_support and runtime_common each include tests/support/wait.rs; the two
// copies are the same file and never meet, so the duplicate is harmless.
#![allow(clippy::duplicate_mod)]

mod devices_support;
mod runtime_common;

use csipd::status::{LimitMode, Snapshot};
use devices_support::{TempDir, start_peer, venv_python};
use runtime_common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Gateway {
    child: Child,
    port: u16,
    fingerprint: String,
    state: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    fn start(tag: &str) -> Gateway {
        let dir = TempDir::new(tag);
        let state = dir.0.join("state.json");
        let log = dir.0.join("requests.jsonl");
        std::fs::write(&state, r#"{"site_w": -3000, "session": 1}"#).unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/powerwall_gw.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .arg("--state")
            .arg(&state)
            .arg("--log")
            .arg(&log)
            .args(["--password", "ABCDE"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start powerwall_gw.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(
            parts.len() == 3 && parts[0] == "READY",
            "gateway said {line:?}"
        );
        Gateway {
            port: parts[1].parse().unwrap(),
            fingerprint: parts[2].to_string(),
            child,
            state,
            log,
            _dir: dir,
        }
    }

    fn set(&self, site_w: f64, session: u64) {
        let tmp = self.state.with_extension("tmp");
        std::fs::write(
            &tmp,
            json!({"site_w": site_w, "session": session}).to_string(),
        )
        .unwrap();
        std::fs::rename(tmp, &self.state).unwrap();
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn logins(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["path"] == "/api/login/Basic" && r["status"] == 200)
            .count()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(data: &str, gw_port: u16, inv_port: u16, fingerprint: Option<&str>) -> String {
    let pin = fingerprint
        .map(|f| format!("\toption fingerprint '{f}'\n"))
        .unwrap_or_default();
    format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{data}/state'
\toption telemetry_dir '{data}/telemetry'

config limits 'fixed'
\toption export_limit_w '2000'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
\toption failsafe_export_limit_w '500'

config device 'tesla'
\toption role 'meter'
\toption transport 'powerwall'
\toption host '127.0.0.1'
\toption port '{gw_port}'
\toption password 'ABCDE'
\toption timeout_ms '2000'
{pin}{}",
        uci_tcp_device("pv", "inverter", &inv_port.to_string(), 1)
    )
}

fn inverter() -> serde_json::Value {
    json!({"devices": [{"unit": 1, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Inverter Co", "SN": "TESTINV1"}},
        {"id": 103, "values": {"W": 4000, "W_SF": 0, "PhVphA": 2400, "V_SF": -1,
                               "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 120, "values": {"DERTyp": 4, "WRtg": 5000, "WRtg_SF": 0}},
        {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0,
                               "WMaxLim_Ena": 0}}]}]})
}

fn meter(s: &Snapshot) -> &csipd::status::Device {
    s.devices.iter().find(|d| d.name == "tesla").expect("meter")
}

/// Whether the meter is in the status yet and `f` holds for it.
fn meter_is(s: &Snapshot, f: impl Fn(&csipd::status::Device) -> bool) -> bool {
    s.devices.iter().find(|d| d.name == "tesla").is_some_and(f)
}

fn setpoint_pct(s: &Snapshot) -> Option<f64> {
    s.setpoints
        .iter()
        .find(|p| p.device == "pv")
        .and_then(|p| p.limit_pct)
}

#[test]
fn powerwall_meter_drives_the_inverter_setpoint() {
    let gw = Gateway::start("pw");
    let inv = start_peer("pw-inv", &inverter(), None);
    let dir = temp_dir("pw-run");
    let data = dir.display().to_string();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let path = dir.join("csipd");
    std::fs::write(&path, config(&data, gw.port, inv.port, None)).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());

    // Exporting 3 kW against 2 kW: the inverter is curtailed.
    let s = wait_for(&url, Duration::from_secs(60), "curtailed", |s| {
        meter_is(s, |m| m.readings.w == Some(-3000.0)) && setpoint_pct(s).is_some_and(|p| p < 90.0)
    });
    let m = meter(&s);
    assert!(!m.stale);
    assert_eq!(m.readings.v, Some(240.4));
    assert_eq!(m.readings.hz, Some(50.02));
    // Pinned on first use, shown in the status, kept for the next start.
    let shown = m
        .tls_fingerprint
        .clone()
        .expect("fingerprint in the status");
    assert_eq!(shown.replace(':', ""), gw.fingerprint);
    let kept = std::fs::read_to_string(dir.join("state/powerwall-tesla.fingerprint")).unwrap();
    assert_eq!(kept.trim(), gw.fingerprint);
    let summary = csipd::status::render::summary(&s);
    assert!(
        summary.contains(&format!("certificate (pinned): {shown}")),
        "{summary}"
    );
    let curtailed = setpoint_pct(&s).unwrap();

    // A load step: the site now imports 1.5 kW; the setpoint goes back up.
    gw.set(1500.0, 1);
    let s = wait_for(&url, Duration::from_secs(60), "released", |s| {
        meter_is(s, |m| m.readings.w == Some(1500.0))
            && setpoint_pct(s).is_some_and(|p| p > curtailed + 20.0)
    });
    assert!(setpoint_pct(&s).unwrap() > curtailed);
    assert_eq!(gw.logins(), 1, "one session so far");

    // The session ends: csipd logs in again and the meter never goes stale.
    gw.set(1234.0, 2);
    wait_for(
        &url,
        Duration::from_secs(60),
        "read after a new login",
        |s| meter_is(s, |m| m.readings.w == Some(1234.0)),
    );
    assert_eq!(gw.logins(), 2);
    assert!(
        gw.requests().iter().any(|r| r["status"] == 401),
        "the expired session was refused"
    );
    assert_eq!(meter(&status(&url)).stats.reads_failed, 0);

    // The gateway stops answering: the meter goes stale and the fail-safe limit holds.
    gw.signal("STOP");
    let s = wait_for(&url, Duration::from_secs(60), "fail-safe", |s| {
        meter_is(s, |m| m.stale)
            && s.limit(LimitMode::Export)
                .is_some_and(|l| l.source.kind() == "fail_safe")
    });
    assert_eq!(s.limit(LimitMode::Export).unwrap().value_w, Some(500.0));
    gw.signal("CONT");
    wait_for(&url, Duration::from_secs(60), "recovered", |s| {
        meter_is(s, |m| !m.stale)
            && s.limit(LimitMode::Export)
                .is_some_and(|l| l.source.kind() == "fixed")
    });
    assert_eq!(run.terminate(), Some(0));

    // A certificate that is not the pinned one: no password is sent to it.
    let before = gw.requests().len();
    let wrong = "AA".repeat(32);
    std::fs::write(&path, config(&data, gw.port, inv.port, Some(&wrong))).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());
    let s = wait_for(&url, Duration::from_secs(60), "refused", |s| {
        meter_is(s, |m| {
            m.stats
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("fingerprint"))
        })
    });
    assert!(meter(&s).stale);
    assert_eq!(gw.requests().len(), before, "nothing sent to the gateway");
    assert_eq!(run.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
