//! SolarEdge's own power control (issue 25): a SolarEdge inverter has SunSpec readings
//! but no SunSpec control model; its limit is written to SolarEdge's power control
//! registers ("Enhanced Dynamic Power Control", 0xF300-0xF323, 32-bit values low word
//! first). Against the pymodbus peer with a register map modelled on SolarEdge's public
//! documentation (`tests/fixtures/brands/solaredge-power-control.modbus.json`).

// devices_support and runtime_common each include tests/support/wait.rs; the two
// copies are the same file and never meet, so the duplicate is harmless.
#![allow(clippy::duplicate_mod)]

mod devices_support;
mod runtime_common;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use csipd::devices::solaredge;
use csipd::devices::{
    Bus, BusParams, Device, DeviceError, DeviceParams, PowerControl, RevertPolicy, SunSpecError,
};
use devices_support::start_peer;
use serde_json::Value;

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/brands/solaredge-power-control.modbus.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("JSON")
}

fn tcp_bus(port: u16) -> Rc<Bus> {
    let mut p = BusParams::tcp("127.0.0.1", port);
    p.timeout = Duration::from_millis(1000);
    p.retries = 1;
    Rc::new(Bus::new(p))
}

fn writes(peer: &devices_support::Peer) -> Vec<(u64, Vec<u64>)> {
    peer.writes()
        .iter()
        .map(|w| {
            (
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

fn f32_words(v: f32) -> Vec<u64> {
    solaredge::encode_f32(v)
        .iter()
        .map(|w| u64::from(*w))
        .collect()
}

#[test]
fn solaredge_limit_written_read_back_with_revert_and_released() {
    let peer = start_peer("se-pc", &fixture(), None);
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("se", 1));
        // Read: SunSpec measurements, and the power control block found by the
        // manufacturer in model 1.
        let r = inv.read_inverter().await.expect("read");
        assert_eq!(r.ac.w, Some(5200.0));
        assert_eq!(
            r.controls.active_power_limit_model,
            Some(solaredge::BLOCK_ID)
        );
        assert!(r.controls.can_limit_power() && !r.controls.connect);
        assert_eq!(
            r.settings.w_max_w,
            Some(10000.0),
            "MaxActivePower is the rating"
        );
        let before = r.limit.expect("the block's state");
        assert_eq!(before.enabled, Some(false));
        assert_eq!(before.limit_pct, Some(100.0));
        assert_eq!(before.revert_s, Some(60));

        // Limit to 40 % with a 120 s command timeout falling back to 25 %.
        let revert = RevertPolicy {
            timeout_s: 120,
            fallback_pct: 25.0,
        };
        let st = inv
            .set_active_power_limit_pct(40.0, revert)
            .await
            .expect("limit");
        assert_eq!(st.model, solaredge::BLOCK_ID);
        assert_eq!(
            (st.enabled, st.limit_pct, st.revert_s),
            (Some(true), Some(40.0), Some(120))
        );
        let mut timeout_fallback = vec![120, 0];
        timeout_fallback.extend(f32_words(25.0));
        assert_eq!(
            writes(&peer),
            vec![
                (0xF310, timeout_fallback.clone()),
                (0xF322, f32_words(40.0)),
                (0xF300, vec![1]),
            ],
            "timeout and fallback first, then the limit, then the enable; nothing else"
        );
        assert_eq!(inv.stats().writes_unconfirmed, 0);
        let again = inv.read_inverter().await.expect("read again");
        assert_eq!(again.limit.unwrap().limit_pct, Some(40.0));

        // Released: 100 %, with the revert timer refreshed.
        let st = inv
            .set_active_power_limit_pct(100.0, revert)
            .await
            .expect("release");
        assert_eq!(st.limit_pct, Some(100.0));
        let all = writes(&peer);
        assert_eq!(
            all[3..].to_vec(),
            vec![
                (0xF310, timeout_fallback),
                (0xF322, f32_words(100.0)),
                (0xF300, vec![1]),
            ]
        );
        // Never a SunSpec register, never the read-only MaxActivePower.
        assert!(
            all.iter()
                .all(|(a, _)| (0xF300..0xF324).contains(a) && *a != 0xF304)
        );

        // Out of range is refused before anything is written.
        assert!(inv.set_active_power_limit_pct(120.0, revert).await.is_err());
        assert_eq!(writes(&peer).len(), 6);

        // With `power_control sunspec` the same inverter is read only.
        let mut p = DeviceParams::new("se_sunspec", 1);
        p.power_control = PowerControl::Sunspec;
        let mut plain = Device::new(bus, p);
        let r = plain.read_inverter().await.expect("read");
        assert!(!r.controls.can_limit_power());
        let e = plain
            .set_active_power_limit_pct(50.0, revert)
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
        assert_eq!(writes(&peer).len(), 6);
    });
}

/// A SolarEdge whose power control registers do not answer (older firmware, or the map
/// of field input 04): read only, without an error; told to use them, a clear error.
#[test]
fn solaredge_without_the_registers_is_read_only() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/field-inputs/04-solaredge-meter-in-inverter-chain.modbus.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let peer = start_peer("se-nopc", &cfg, None);
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut inv = Device::new(bus.clone(), DeviceParams::new("se", 1));
        let r = inv.read_inverter().await.expect("read");
        assert!(!r.controls.can_limit_power());
        assert_eq!(r.limit, None);
        assert_eq!(inv.controls().map(|c| c.can_limit_power()), Some(false));
        let mut p = DeviceParams::new("se_forced", 1);
        p.power_control = PowerControl::Solaredge;
        let mut forced = Device::new(bus, p);
        let e = forced.read_inverter().await.unwrap_err().to_string();
        assert!(e.contains("se_forced") && e.contains("exception 2"), "{e}");
    });
    assert!(peer.writes().is_empty());
}

/// `csipd run` with the SolarEdge inverter and its meter on one unit id: the export
/// limit is enforced through SolarEdge's registers, the status says nothing is read
/// only, and the writes are SolarEdge's block only.
#[test]
fn run_limits_a_solaredge_through_its_own_registers() {
    use csipd::status::LimitMode;
    use runtime_common::*;
    let peer = start_peer("se-run", &fixture(), None);
    let dir = temp_dir("se-run");
    let data = dir.display().to_string();
    let port = peer.port.to_string();
    let text = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{data}/state'
\toption telemetry_dir '{data}/telemetry'

config limits 'fixed'
\toption export_limit_w '1500'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{}{}",
        uci_tcp_device("se", "inverter", &port, 1),
        uci_tcp_device("se_meter", "meter", &port, 1)
    );
    let path = dir.join("csipd");
    std::fs::write(&path, text).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());
    // The meter is static at 2.1 kW export: the limit goes well down.
    let s = wait_for(&url, Duration::from_secs(60), "curtailed", |s| {
        s.setpoints
            .iter()
            .any(|p| p.device == "se" && p.limit_pct.is_some_and(|x| x < 90.0))
    });
    let se = s.devices.iter().find(|d| d.name == "se").unwrap();
    assert_eq!(se.read_only, None);
    assert_eq!(se.stats.writes_failed, 0, "{se:?}");
    assert_eq!(
        s.limit(LimitMode::Export).unwrap().not_enforceable,
        None,
        "{:?}",
        s.limits
    );
    let all = writes(&peer);
    assert!(all.iter().any(|(a, _)| *a == 0xF322));
    assert!(
        all.iter()
            .all(|(a, _)| [0xF300, 0xF310, 0xF322].contains(a)),
        "{all:?}"
    );
    // The revert timer is csipd's (120 s), the fallback its fail-safe (0 W → 0 %).
    let (_, first) = &all[0];
    assert_eq!(first[..2], [120, 0]);
    assert_eq!(first[2..].to_vec(), f32_words(0.0));
    assert_eq!(run.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
