//! `csipd run` against the four field inputs of issue 17 (`tests/fixtures/field-inputs/`,
//! served by the pymodbus SunSpec peer): what is read, what is written, the status, and
//! how many WARN lines the log gets (a capability fact is said once, not every cycle).

// devices_support and runtime_common each include tests/support/wait.rs; the two
// copies are the same file and never meet, so the duplicate is harmless.
#![allow(clippy::duplicate_mod)]

mod devices_support;
mod runtime_common;

use csipd::status::{LimitMode, Snapshot};
use devices_support::{Peer, start_peer};
use runtime_common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/field-inputs")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("JSON")
}

/// A site meter on `unit`: 203 with the site exporting `export_w`.
fn meter(unit: u8, export_w: i64) -> Value {
    json!({"unit": unit, "base": 40000, "models": [
        {"id": 1, "values": {"Mn": "Meter Co", "SN": "TESTMETER"}},
        {"id": 203, "values": {"W": -export_w, "W_SF": 0, "PhV": 2300, "PhVphA": 2300,
                               "V_SF": -1, "Hz": 5000, "Hz_SF": -2}}]})
}

/// `config device` for the peer's port.
fn device(name: &str, role: &str, port: u16, unit: u8) -> String {
    uci_tcp_device(name, role, &port.to_string(), unit)
}

struct Case {
    run: Proc,
    url: String,
    peer: Peer,
    dir: PathBuf,
}

fn start(tag: &str, peer_cfg: &Value, devices: impl Fn(u16) -> String, export_w: u32) -> Case {
    let peer = start_peer(tag, peer_cfg, None);
    let dir = temp_dir(&format!("field-run-{tag}"));
    let data = dir.display().to_string();
    let text = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{data}/state'
\toption telemetry_dir '{data}/telemetry'

config limits 'fixed'
\toption export_limit_w '{export_w}'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{}",
        devices(peer.port)
    );
    let path = dir.join("csipd");
    std::fs::write(&path, text).expect("config");
    let (run, url) = start_run(&path.display().to_string());
    Case {
        run,
        url,
        peer,
        dir,
    }
}

impl Case {
    /// Every WARN line logged so far.
    fn warnings(&mut self) -> Vec<String> {
        self.run.drain_stderr();
        self.run
            .seen_stderr
            .iter()
            .filter(|l| l.starts_with("WARN"))
            .cloned()
            .collect()
    }

    /// The WARN lines about devices (not, e.g., the fail-safe before the first meter
    /// reading, which depends on which task starts first).
    fn device_warnings(&mut self) -> Vec<String> {
        let all = self.warnings();
        all.into_iter().filter(|l| l.contains("device '")).collect()
    }

    /// Waits `cycles` more control cycles (seen in the status as reads of `device`).
    fn wait_cycles(&self, device: &str, cycles: u64) -> Snapshot {
        let reads = |s: &Snapshot| {
            s.devices
                .iter()
                .find(|d| d.name == device)
                .map_or(0, |d| d.stats.reads_ok)
        };
        let from = reads(&status(&self.url));
        wait_for(&self.url, Duration::from_secs(60), "more reads", |s| {
            reads(s) >= from + cycles
        })
    }

    fn finish(mut self) {
        assert_eq!(self.run.terminate(), Some(0));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dev<'a>(s: &'a Snapshot, name: &str) -> &'a csipd::status::Device {
    s.devices
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no device {name} in {:?}", s.devices))
}

/// Input 01 (Kostal): the chain ends in 0x0000 then unreadable registers, and holds no
/// 120/121, so the inverter's rating is unknown. Without `rated_w` the inverter is read
/// but not limited, and the status says why; with it, the inverter is limited through
/// its 123. One WARN says where the chain ended, one that the rating is missing.
#[test]
fn run_01_chain_ending_in_zero_is_read_and_limited() {
    let mut cfg = fixture("01-kostal-chain-end-zero.modbus.json");
    cfg["devices"]
        .as_array_mut()
        .unwrap()
        .push(meter(200, 3700));
    let devices = |rated: &'static str| {
        move |port| device("pv", "inverter", port, 1) + rated + &device("meter", "meter", port, 200)
    };
    let mut case = start("k01", &cfg, devices(""), 1500);
    let s = wait_for(&case.url, Duration::from_secs(60), "pv read", |s| {
        s.devices
            .iter()
            .any(|d| d.name == "pv" && d.read_only.is_some())
            && s.limit(LimitMode::Export)
                .is_some_and(|l| l.not_enforceable.is_some())
    });
    let pv = dev(&s, "pv");
    assert_eq!(pv.readings.w, Some(2500.0));
    assert!(
        pv.read_only.as_deref().unwrap().contains("rated_w"),
        "{pv:?}"
    );
    assert_eq!(
        s.limit(LimitMode::Export)
            .unwrap()
            .not_enforceable
            .as_deref(),
        Some("not enforceable: pv has no power rating")
    );
    case.wait_cycles("pv", 5);
    let warnings = case.device_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].contains("no end marker") && warnings[0].contains("register 40148"));
    assert!(warnings[1].contains("no power rating"), "{warnings:#?}");
    assert!(case.peer.writes().is_empty());
    case.finish();

    // With the rating configured.
    let mut case = start("k01r", &cfg, devices("\toption rated_w '5000'\n"), 1500);
    let s = wait_for(&case.url, Duration::from_secs(60), "a limit written", |s| {
        s.setpoints
            .iter()
            .any(|p| p.device == "pv" && p.written_unix_s.is_some())
    });
    let pv = dev(&s, "pv");
    assert!(!pv.stale, "{pv:?}");
    assert_eq!(pv.read_only, None);
    assert!(
        pv.stats.reads_ok > 0 && pv.stats.reads_failed == 0,
        "{pv:?}"
    );
    let export = s.limit(LimitMode::Export).expect("export limit");
    assert_eq!(export.value_w, Some(1500.0));
    assert_eq!(export.not_enforceable, None);
    // The site exports 3.7 kW against 1.5 kW whatever csipd does (a static peer): the
    // setpoint goes well down.
    let s = wait_for(&case.url, Duration::from_secs(60), "curtailed", |s| {
        s.setpoints
            .iter()
            .any(|p| p.device == "pv" && p.limit_pct.is_some_and(|x| x < 50.0))
    });
    assert!(!dev(&s, "pv").stale);
    // Only 123's control points (starting at 40122): RvrtTms, WMaxLimPct, WMaxLim_Ena.
    let writes = case.peer.writes();
    assert!(writes.len() >= 3);
    for w in &writes {
        assert_eq!(w["unit"], 1, "{w}");
        let a = w["address"].as_u64().unwrap();
        assert!([40127, 40129, 40131].contains(&a), "{w}");
    }
    let warnings = case.device_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("no end marker"));
    case.finish();
}

/// The capability fact of an inverter without a control model, checked the same way on
/// inputs 04 and 05: read, never written, said once in the log, shown on the device and
/// on the export limit; the WARN count does not grow with the cycles.
fn assert_read_only(case: &mut Case, inverter: &str, inverter_w: f64, meter: &str) {
    let s = wait_for(&case.url, Duration::from_secs(60), "both read", |s| {
        s.devices.iter().all(|d| d.readings.w.is_some())
            && s.limit(LimitMode::Export)
                .is_some_and(|l| l.not_enforceable.is_some())
    });
    let inv = dev(&s, inverter);
    assert_eq!(inv.readings.w, Some(inverter_w));
    assert!(
        inv.read_only
            .as_deref()
            .is_some_and(|t| t.contains("no control model")),
        "{inv:?}"
    );
    assert_eq!(inv.stats.writes_ok + inv.stats.writes_failed, 0);
    assert_eq!(inv.stats.last_error, None);
    assert_eq!(dev(&s, meter).readings.w, Some(-1500.0));
    assert_eq!(dev(&s, meter).read_only, None);
    let export = s.limit(LimitMode::Export).unwrap();
    assert_eq!(
        export.not_enforceable.as_deref(),
        Some(format!("not enforceable: {inverter} has no control model").as_str())
    );
    let early = case.warnings();
    let said = case.device_warnings();
    assert_eq!(said.len(), 1, "{early:#?}");
    assert!(said[0].contains("no control model"), "{said:#?}");
    assert!(said[0].contains(&format!("'{inverter}'")), "{}", said[0]);
    let began = Instant::now();
    let s = case.wait_cycles(inverter, 10);
    let later = case.warnings();
    assert_eq!(
        later.len(),
        early.len(),
        "no WARN per cycle ({:.0} s later): {later:#?}",
        began.elapsed().as_secs_f64()
    );
    assert!(s.setpoints.iter().all(|p| p.written_unix_s.is_none()));
    assert!(case.peer.writes().is_empty(), "{:?}", case.peer.writes());
    let summary = csipd::status::render::summary(&s);
    assert!(
        summary.contains(&format!("NOT ENFORCEABLE: {inverter} has no control model")),
        "{summary}"
    );
}

/// Input 04 (SolarEdge): the inverter and its meter are both configured on unit 1 and
/// each reads its own part of the chain. The inverter has no SunSpec control model.
#[test]
fn run_04_solaredge_inverter_and_meter_on_one_unit() {
    let cfg = fixture("04-solaredge-meter-in-inverter-chain.modbus.json");
    let mut case = start(
        "se04",
        &cfg,
        |port| device("se", "inverter", port, 1) + &device("se_meter", "meter", port, 1),
        1000,
    );
    assert_read_only(&mut case, "se", 3000.0, "se_meter");
    case.finish();
}

/// Input 05 (Fronius Symo, float models, no 123/704; meter 213 on unit 240).
#[test]
fn run_05_fronius_without_a_control_model() {
    let cfg = fixture("05-fronius-no-control-model.modbus.json");
    let mut case = start(
        "fr05",
        &cfg,
        |port| device("fronius", "inverter", port, 1) + &device("meter", "meter", port, 240),
        1000,
    );
    assert_read_only(&mut case, "fronius", 2500.0, "meter");
    case.finish();
}

/// Input 14: the sleeping inverter reads 0 W with no voltage or frequency beside a
/// working one; both are limited, and nothing is logged about either.
#[test]
fn run_14_sleeping_inverter_beside_a_working_one() {
    let mut cfg = fixture("14-der-voltage-sleeping-inverter.modbus.json");
    let mut awake = cfg["devices"][0].clone();
    awake["unit"] = json!(2);
    awake["blocks"][1]["values"] = json!({"A": 1200, "A_SF": -2, "PhVphA": 2300,
        "PhVphB": 2310, "PhVphC": 2290, "V_SF": -1, "W": 4000, "W_SF": 0, "Hz": 5001,
        "Hz_SF": -2, "St": 4});
    cfg["devices"].as_array_mut().unwrap().push(awake);
    cfg["devices"]
        .as_array_mut()
        .unwrap()
        .push(meter(200, 2500));
    let mut case = start(
        "sl14",
        &cfg,
        |port| {
            device("asleep", "inverter", port, 1)
                + &device("working", "inverter", port, 2)
                + &device("meter", "meter", port, 200)
        },
        1500,
    );
    let s = wait_for(&case.url, Duration::from_secs(60), "both limited", |s| {
        s.setpoints
            .iter()
            .filter(|p| p.written_unix_s.is_some())
            .count()
            == 2
    });
    let asleep = dev(&s, "asleep");
    assert_eq!(asleep.readings.w, Some(0.0));
    assert_eq!((asleep.readings.v, asleep.readings.hz), (None, None));
    assert!(!asleep.stale);
    let working = dev(&s, "working");
    assert_eq!(working.readings.w, Some(4000.0));
    assert!(working.readings.v.is_some_and(|v| (v - 230.0).abs() < 0.01));
    assert!(
        working
            .readings
            .hz
            .is_some_and(|v| (v - 50.01).abs() < 0.001)
    );
    // Both hold 123; the sleeping one takes its limit like the other.
    let units: std::collections::BTreeSet<u64> = case
        .peer
        .writes()
        .iter()
        .map(|w| w["unit"].as_u64().unwrap())
        .collect();
    assert_eq!(units, [1, 2].into_iter().collect());
    case.wait_cycles("asleep", 5);
    let warnings = case.warnings();
    assert!(
        warnings
            .iter()
            .all(|l| !l.contains("'asleep'") && !l.contains("'working'")),
        "{warnings:#?}"
    );
    case.finish();
}
