//! SunSpec devices as they are found on roofs (issue 17), against the pymodbus peer
//! (`tests/peers/sunspec_sim.py`) laid out from pysunspec2's model definitions:
//! - the four field inputs (`tests/fixtures/field-inputs/`, made-up identities built
//!   from public field reports): a chain ending in 0x0000 then unreadable registers, a
//!   SolarEdge inverter with its meter in its chain, a Fronius without a control model,
//!   a sleeping inverter reporting 0 V and 0 Hz;
//! - the brand register maps (`tests/fixtures/brands/`, modelled on the vendors' public
//!   SunSpec documentation): scanned, read and limited (where the brand has a SunSpec
//!   control model) over Modbus TCP, and one over RTU.

mod devices_support;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use csipd::devices::{
    Bus, BusParams, Device, DeviceError, DeviceParams, OperatingState, RevertPolicy, SunSpecError,
};
use devices_support::{PtyPair, start_peer};
use serde_json::{Value, json};

fn fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tcp_bus(port: u16) -> Rc<Bus> {
    let mut p = BusParams::tcp("127.0.0.1", port);
    p.timeout = Duration::from_millis(1000);
    p.retries = 1;
    Rc::new(Bus::new(p))
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-3)
}

const REVERT: RevertPolicy = RevertPolicy {
    timeout_s: 120,
    fallback_pct: 0.0,
};

/// The peer's write log as (unit, address, values).
fn writes(peer: &devices_support::Peer) -> Vec<(u64, u64, Vec<u64>)> {
    peer.writes()
        .iter()
        .map(|w| {
            (
                w["unit"].as_u64().unwrap(),
                w["address"].as_u64().unwrap(),
                w["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn modbus_scan(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
        .arg("modbus-scan")
        .args(args)
        .output()
        .expect("run csipd modbus-scan");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Field input 01 (a Kostal inverter): one 0x0000 register after the last model, then
/// nothing readable. The chain ends there with the three models kept; the inverter is
/// read and limited through its 123.
#[test]
fn field_01_chain_ending_in_zero_then_unreadable() {
    let peer = start_peer(
        "field01",
        &fixture("field-inputs/01-kostal-chain-end-zero.modbus.json"),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("kostal", 1));
        let map = dev.scan().await.expect("scan ends gracefully").clone();
        assert_eq!(map.ids(), vec![1, 103, 123]);
        let why = map.ended_early.clone().expect("the chain ended early");
        assert!(
            why.contains("register 40148") && why.contains("unreadable"),
            "{why}"
        );
        assert_eq!(dev.common().unwrap().manufacturer, "ACME-K");
        let r = dev.read_inverter().await.expect("read");
        assert_eq!(r.model, 103);
        assert!(close(r.ac.w, 2500.0), "{:?}", r.ac.w);
        assert!(close(r.ac.v, 230.0), "{:?}", r.ac.v);
        assert!(close(r.ac.hz, 50.0));
        assert!(r.controls.can_limit_power());
        let lim = dev
            .set_active_power_limit_pct(60.0, REVERT)
            .await
            .expect("limit through 123");
        assert_eq!((lim.model, lim.enabled), (123, Some(true)));
        assert!(close(lim.limit_pct, 60.0));
        // 123 starts at 40122: RvrtTms (+7), WMaxLimPct (+5, SF 0), WMaxLim_Ena (+9).
        assert_eq!(
            writes(&peer),
            vec![
                (1, 40129, vec![120]),
                (1, 40127, vec![60]),
                (1, 40131, vec![1])
            ]
        );
    });
    // The installer's scan says the same, and exits 0.
    let (code, lines, _) = modbus_scan(&[&format!("tcp://127.0.0.1:{}", peer.port), "1"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(
        lines[0]["map"]["ended_early"]
            .as_str()
            .map(|s| s.contains("40148")),
        Some(true)
    );
    assert_eq!(lines[0]["inverter"]["ac"]["w"], 2500.0);
}

/// The other ways a chain ends in the field: 0x0000 0x0000 readable (model id 0), and a
/// last model whose length runs past the readable registers (dropped, the rest kept).
#[test]
fn chain_ends_at_model_id_0_and_at_a_length_past_the_registers() {
    let mut cfg = fixture("field-inputs/01-kostal-chain-end-zero.modbus.json");
    cfg["devices"][0]["blocks"][3] = json!({"raw": [0, 0]});
    // unit 2: 1, 103, then a model 123 header claiming 24 registers of which 10 exist.
    let mut short = cfg["devices"][0].clone();
    short["unit"] = json!(2);
    short["blocks"][2] = json!({"raw": [123, 24, 0, 0, 0, 1, 100, 0, 0, 0, 0, 0]});
    short["blocks"][3] = json!({"raw": []});
    cfg["devices"].as_array_mut().unwrap().push(short);
    let peer = start_peer("field01b", &cfg, None);
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut zero = Device::new(bus.clone(), DeviceParams::new("zero", 1));
        let map = zero.scan().await.expect("scan").clone();
        assert_eq!(map.ids(), vec![1, 103, 123]);
        assert!(map.ended_early.unwrap().contains("model id 0"));
        assert!(close(
            zero.read_inverter().await.expect("read").ac.w,
            2500.0
        ));

        let mut cut = Device::new(bus, DeviceParams::new("cut", 2));
        let map = cut.scan().await.expect("scan").clone();
        assert_eq!(map.ids(), vec![1, 103], "the cut-off 123 is dropped");
        let why = map.ended_early.unwrap();
        assert!(
            why.contains("model 123") && why.contains("runs past"),
            "{why}"
        );
        let r = cut.read_inverter().await.expect("read");
        assert!(!r.controls.can_limit_power());
        let e = cut
            .set_active_power_limit_pct(50.0, REVERT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                DeviceError::SunSpec {
                    error: SunSpecError::MissingModel { .. },
                    ..
                }
            ),
            "{e}"
        );
    });
    assert!(peer.writes().is_empty());
}

/// `modbus-scan --base N` reads a map where the installer says it is.
#[test]
fn modbus_scan_with_a_base() {
    let mut cfg = fixture("brands/fronius-float.modbus.json");
    cfg["devices"][0]["base"] = json!(50000);
    let peer = start_peer("base", &cfg, None);
    let bus = format!("tcp://127.0.0.1:{}", peer.port);
    let (code, lines, _) = modbus_scan(&["--base", "50000", &bus, "1"]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines[0]["map"]["base"], 50000);
    assert_eq!(lines[0]["inverter"]["model"], 111);
    // Told the wrong base, the scan says where it looked.
    let (code, lines, _) = modbus_scan(&["--base", "40000", &bus, "1"]);
    assert_eq!(code, Some(1));
    let e = lines[0]["error"].as_str().unwrap();
    assert!(e.contains("40000"), "{e}");
    let (code, _, stderr) = modbus_scan(&["--base", "x", &bus]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--base"), "{stderr}");
}

/// Field input 04 (SolarEdge): the inverter (1, 103) and its meter (1, 203) behind one
/// unit id. An inverter and a meter on unit 1 each find their own device; a position
/// picks one explicitly; modbus-scan lists both with their identities.
#[test]
fn field_04_solaredge_meter_in_the_inverters_chain() {
    let peer = start_peer(
        "field04",
        &fixture("field-inputs/04-solaredge-meter-in-inverter-chain.modbus.json"),
        None,
    );
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("se", 1));
        let mut meter = Device::new(bus.clone(), DeviceParams::new("se_meter", 1));
        inv.scan().await.expect("scan");
        let chain = inv.chain_devices().to_vec();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].map.ids(), vec![1, 103]);
        assert_eq!(chain[1].map.ids(), vec![1, 203]);
        assert_eq!(chain[0].common.as_ref().unwrap().model, "SE5000H-TEST");
        assert_eq!(chain[1].common.as_ref().unwrap().manufacturer, "WattNode");
        let r = inv.read_inverter().await.expect("inverter");
        assert!(close(r.ac.w, 3000.0));
        assert!(!r.controls.can_limit_power(), "no SunSpec control model");
        assert_eq!(inv.common().unwrap().serial, "TESTSN0004");
        let m = meter.read_meter().await.expect("meter");
        assert_eq!(m.model, 203);
        assert!(close(m.ac.w, -1500.0));
        assert_eq!(meter.common().unwrap().serial, "TESTSN0005");
        assert_eq!(meter.status(std::time::Instant::now()).models, vec![1, 203]);
        // By position: device 2 is the meter, and it is not an inverter.
        let mut p = DeviceParams::new("second", 1);
        p.chain_device = Some(2);
        let mut second = Device::new(bus.clone(), p);
        assert!(close(
            second.read_meter().await.expect("meter").ac.w,
            -1500.0
        ));
        let e = second.read_inverter().await.unwrap_err().to_string();
        assert!(e.contains("[1, 203]"), "{e}");
        second.set_chain_device(Some(3));
        let e = second.read_meter().await.unwrap_err().to_string();
        assert!(
            e.contains("chain_device 3") && e.contains("2 SunSpec device"),
            "{e}"
        );
    });
    let (code, lines, _) = modbus_scan(&[&format!("tcp://127.0.0.1:{}", peer.port), "1"]);
    assert_eq!(code, Some(0), "{lines:?}");
    let devices = lines[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["common"]["manufacturer"], "SolarEdge");
    assert_eq!(devices[0]["inverter"]["ac"]["w"], 3000.0);
    assert_eq!(devices[1]["position"], 2);
    assert_eq!(devices[1]["common"]["serial"], "TESTSN0005");
    assert_eq!(devices[1]["meter"]["ac"]["w"], -1500.0);
    assert!(peer.writes().is_empty());
}

/// Field input 05 (Fronius Symo with float models, no 123/704; meter 213 on unit 240):
/// read fine; what it lets csipd control says "nothing", and an attempt to limit is
/// refused before anything is written.
#[test]
fn field_05_fronius_without_a_control_model() {
    let peer = start_peer(
        "field05",
        &fixture("field-inputs/05-fronius-no-control-model.modbus.json"),
        None,
    );
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("fronius", 1));
        let r = inv.read_inverter().await.expect("read");
        assert_eq!(r.model, 113);
        assert!(close(r.ac.w, 2500.0));
        assert!(close(r.ac.v, 230.0), "{:?}", r.ac.v);
        assert!(close(r.settings.w_max_w, 6000.0));
        assert_eq!(r.limit, None);
        assert!(!r.controls.can_limit_power() && !r.controls.connect);
        assert_eq!(inv.controls(), Some(r.controls));
        assert!(inv.set_active_power_limit_pct(50.0, REVERT).await.is_err());
        assert!(inv.set_connected(false).await.is_err());
        let mut meter = Device::new(bus, DeviceParams::new("meter", 240));
        let m = meter.read_meter().await.expect("meter");
        assert_eq!(m.model, 213);
        assert!(close(m.ac.w, -1500.0));
        assert!(close(m.ac.phases[1].v, 231.0));
    });
    assert!(peer.writes().is_empty());
}

/// Field input 14: an inverter asleep (St 2, 0 V, 0 Hz) beside a working one. The
/// sleeping one reads 0 W with no voltage or frequency, so the DER sample csipd posts
/// to the utility averages the working inverter alone (not 115 V / 25 Hz).
#[test]
fn field_14_sleeping_inverter_is_left_out_of_voltage_and_frequency() {
    let mut cfg = fixture("field-inputs/14-der-voltage-sleeping-inverter.modbus.json");
    let mut awake = cfg["devices"][0].clone();
    awake["unit"] = json!(2);
    awake["blocks"][1]["values"] = json!({"A": 1200, "A_SF": -2, "PhVphA": 2300,
        "PhVphB": 2310, "PhVphC": 2290, "V_SF": -1, "W": 4000, "W_SF": 0, "Hz": 5001,
        "Hz_SF": -2, "St": 4});
    cfg["devices"].as_array_mut().unwrap().push(awake);
    let peer = start_peer("field14", &cfg, None);
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut asleep = Device::new(bus.clone(), DeviceParams::new("asleep", 1));
        let mut working = Device::new(bus, DeviceParams::new("working", 2));
        let a = asleep
            .read_inverter()
            .await
            .expect("sleeping inverter read");
        assert_eq!(a.state, Some(OperatingState::Sleeping));
        assert!(a.idle);
        assert_eq!((a.ac.w, a.ac.v, a.ac.hz), (Some(0.0), None, None));
        assert!(a.ac.phases.iter().all(|p| p.v.is_none()));
        let w = working
            .read_inverter()
            .await
            .expect("working inverter read");
        assert!(!w.idle);
        let sample = csipd::runtime::engine::fleet_sample(&[&a.ac, &w.ac]).expect("sample");
        assert!(
            close(sample.voltage_v.total, 230.0),
            "{:?}",
            sample.voltage_v
        );
        assert!(close(sample.voltage_v.a, 230.0), "{:?}", sample.voltage_v);
        assert!(
            close(sample.frequency_hz, 50.01),
            "{:?}",
            sample.frequency_hz
        );
        assert!(close(sample.active_power_w.total, 4000.0));
        // Both are still controllable: the sleeping one keeps its 123.
        assert!(a.controls.can_limit_power());
    });
}

/// Scans, reads and (with 123) limits every inverter of a brand map, and reads its
/// meters. Returns the number of limit writes checked.
async fn exercise_brand(bus: Rc<Bus>, cfg: &Value, peer: &devices_support::Peer) -> usize {
    let mut limited = 0;
    for dev_cfg in cfg["devices"].as_array().unwrap() {
        let unit = dev_cfg["unit"].as_u64().unwrap() as u8;
        let mut dev = Device::new(bus.clone(), DeviceParams::new(&format!("u{unit}"), unit));
        dev.scan()
            .await
            .unwrap_or_else(|e| panic!("unit {unit}: {e}"));
        let chain = dev.chain_devices().to_vec();
        for d in &chain {
            let common = d.common.as_ref().expect("identity");
            let pos = dev_cfg["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["model"] == 1)
                .nth(usize::from(d.position) - 1)
                .unwrap();
            assert_eq!(common.serial, pos["values"]["SN"], "unit {unit}");
            dev.set_chain_device(Some(d.position));
            if d.map
                .find_any(&csipd::devices::sunspec::METER_MODELS)
                .is_some()
            {
                let m = dev.read_meter().await.expect("meter");
                assert!(
                    m.ac.w.is_some() && m.ac.v.is_some() && m.ac.hz.is_some(),
                    "{m:?}"
                );
                continue;
            }
            let r = dev.read_inverter().await.expect("inverter");
            assert!(
                r.ac.w.is_some_and(|w| w > 1000.0),
                "unit {unit}: {:?}",
                r.ac
            );
            assert!(
                r.ac.v.is_some_and(|v| (200.0..260.0).contains(&v)),
                "{:?}",
                r.ac
            );
            assert!(
                r.ac.hz.is_some_and(|v| (49.0..51.0).contains(&v)),
                "{:?}",
                r.ac
            );
            assert_eq!(r.state, Some(OperatingState::Running));
            if d.map.find(121).is_some() {
                assert!(r.nameplate.w_rtg_w.is_some() && r.settings.w_max_w.is_some());
            }
            if !r.controls.can_limit_power() {
                continue;
            }
            let before = peer.writes().len();
            let lim = dev
                .set_active_power_limit_pct(37.5, REVERT)
                .await
                .unwrap_or_else(|e| panic!("unit {unit}: {e}"));
            assert!(close(lim.limit_pct, 37.5), "{lim:?}");
            assert_eq!(lim.enabled, Some(true));
            assert_eq!(lim.revert_s, Some(120));
            let ctl = *d.map.find(123).unwrap();
            let new: Vec<_> = writes(peer).into_iter().skip(before).collect();
            let s = u64::from(ctl.start);
            assert_eq!(
                new,
                vec![
                    (u64::from(unit), s + 7, vec![120]),
                    (u64::from(unit), s + 5, vec![3750]),
                    (u64::from(unit), s + 9, vec![1])
                ],
                "unit {unit}: only 123's control points, WMaxLimPct at SF -2"
            );
            let again = dev.read_inverter().await.expect("read after limit");
            assert_eq!(again.limit.unwrap().enabled, Some(true));
            limited += 1;
        }
    }
    limited
}

#[test]
fn brand_fronius_daisy_chained_units_and_meter_240_over_tcp() {
    let cfg = fixture("brands/fronius-datamanager-int-sf.modbus.json");
    let peer = start_peer("fronius", &cfg, None);
    let limited = smol::block_on(exercise_brand(tcp_bus(peer.port), &cfg, &peer));
    assert_eq!(limited, 2, "both inverters limited");
}

#[test]
fn brand_sma_on_unit_126_over_tcp() {
    let cfg = fixture("brands/sma-unit-126.modbus.json");
    let peer = start_peer("sma", &cfg, None);
    let limited = smol::block_on(exercise_brand(tcp_bus(peer.port), &cfg, &peer));
    assert_eq!(limited, 1);
    let (code, lines, _) = modbus_scan(&[&format!("tcp://127.0.0.1:{}", peer.port), "126"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        lines[0]["devices"][0]["models"],
        json!([1, 11, 12, 103, 120, 121, 122, 123, 160])
    );
}

#[test]
fn brand_solaredge_two_meters_in_the_chain_over_tcp() {
    let cfg = fixture("brands/solaredge-meters-in-chain.modbus.json");
    let peer = start_peer("solaredge", &cfg, None);
    let limited = smol::block_on(async {
        let bus = tcp_bus(peer.port);
        // A meter by role takes the first meter of the chain: the export/import one.
        let mut site_meter = Device::new(bus.clone(), DeviceParams::new("meter", 1));
        let m = site_meter.read_meter().await.expect("meter");
        assert!(close(m.ac.w, -2100.0));
        assert_eq!(site_meter.common().unwrap().serial, "TESTSE0002");
        exercise_brand(bus, &cfg, &peer).await
    });
    assert_eq!(limited, 0, "no SunSpec control model on SolarEdge");
    assert!(peer.writes().is_empty());
}

#[test]
fn brand_fronius_float_models_over_tcp() {
    let cfg = fixture("brands/fronius-float.modbus.json");
    let peer = start_peer("float", &cfg, None);
    let limited = smol::block_on(exercise_brand(tcp_bus(peer.port), &cfg, &peer));
    assert_eq!(limited, 1);
}

/// The SMA map over Modbus RTU at 9600 8N1 (socat pair): the same scan, read and limit.
#[test]
fn brand_sma_over_rtu() {
    let cfg = fixture("brands/sma-unit-126.modbus.json");
    let pty = PtyPair::new();
    let peer = start_peer("sma-rtu", &cfg, Some(&pty.a));
    let limited = smol::block_on(async {
        let mut p = BusParams::rtu(&pty.b, 9600);
        p.timeout = Duration::from_millis(1000);
        p.retries = 2;
        exercise_brand(Rc::new(Bus::new(p)), &cfg, &peer).await
    });
    assert_eq!(limited, 1);
}

/// `modbus-scan` on a silent serial line (a socat pty pair with nobody on the other end)
/// says every address it tried with no answer: each unit id, each SunSpec base register,
/// and the baud rate and framing; beside a real RTU device (pymodbus on unit 126) only
/// the silent unit is named.
#[test]
fn modbus_scan_on_a_silent_line_names_every_address_tried() {
    let pty = PtyPair::new();
    let bus = format!("rtu:{}", pty.b);
    let (code, lines, stderr) = modbus_scan(&[&bus, "1", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, unit) in lines.iter().zip([1, 2]) {
        assert_eq!(
            line["error"],
            format!(
                "device 'unit {unit}': no answer at any SunSpec base register tried (40000, 0, \
                 50000): no response (timeout)"
            ),
            "{line}"
        );
    }
    assert_eq!(
        stderr.trim_end(),
        format!(
            "csipd modbus-scan: no answer on {bus}@9600/8N1 from unit ids 1, 2 (each asked for \
             the SunSpec marker at registers 40000, 0, 50000): check the wiring (A/B swapped? \
             ground?), the devices' unit ids, and their baud rate and framing: only 9600 baud \
             8N1 was tried (another: {bus}@19200/8E1)"
        )
    );

    // A device on the line: its unit scans, only the silent one is named.
    let cfg = fixture("brands/sma-unit-126.modbus.json");
    let _peer = start_peer("scan-silent", &cfg, Some(&pty.a));
    let (code, lines, stderr) = modbus_scan(&["--base", "40000", &bus, "126", "7"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(lines[0]["common"]["manufacturer"], "SMA", "{lines:?}");
    // Readings are exact decimals of register × 10^scale factor (not 3.5700000000000003).
    assert_eq!(
        lines[0]["inverter"]["ac"]["phases"][0]["a"].to_string(),
        "3.57"
    );
    assert!(lines[0].get("error").is_none(), "{lines:?}");
    assert!(
        stderr.contains(&format!(
            "no answer on {bus}@9600/8N1 from unit id 7 (each asked for the SunSpec marker at \
             register 40000)"
        )),
        "{stderr}"
    );
}

/// An odd baud rate is refused before anything is sent, naming the value and the bus
/// argument, with the words check-config uses for the same `baud` in UCI.
#[test]
fn modbus_scan_refuses_odd_baud_rates_as_check_config_does() {
    let dir = devices_support::TempDir::new("scan-baud");
    for odd in ["9601", "0", "1234567"] {
        let bus = format!("rtu:/dev/ttyUSB0@{odd}");
        let (code, lines, stderr) = modbus_scan(&[&bus, "1"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(lines.is_empty());
        let why = format!(
            "baud rate '{odd}' is not a serial line rate: use the device's setting, usually one \
             of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 (also accepted: 300 to \
             921600 at the standard UART rates)"
        );
        assert_eq!(
            stderr.trim_end(),
            format!("csipd modbus-scan: bus '{bus}': {why}")
        );
        let config = dir.0.join("csipd");
        std::fs::write(
            &config,
            format!(
                "config device 'meter'\n\toption role 'meter'\n\toption transport 'rtu'\n\
                 \toption path '/dev/ttyUSB0'\n\toption baud '{odd}'\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run csipd check-config");
        assert_eq!(out.status.code(), Some(2));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&format!(
                "{}:5: error: option 'baud': {why}",
                config.display()
            )),
            "{text}"
        );
    }
    // A rate devices rarely use is accepted with the same warning in both.
    let (_, _, stderr) = modbus_scan(&["rtu:/nonexistent/tty@14400", "1"]);
    assert!(
        stderr.contains(
            "warning: bus 'rtu:/nonexistent/tty@14400': baud 14400 is not a usual Modbus rate"
        ),
        "{stderr}"
    );
}
