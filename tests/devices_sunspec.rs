//! SunSpec over Modbus TCP against a foreign peer: a pymodbus server laid out from the
//! pysunspec2 model definitions (`tests/peers/sunspec_sim.py`).

mod devices_support;

use std::rc::Rc;
use std::time::{Duration, Instant};

use csipd::devices::{
    Bus, BusParams, Device, DeviceError, DeviceParams, ModbusError, OperatingState, RevertPolicy,
};
use devices_support::wait::{PATIENCE, wait_until};
use devices_support::{PEER_TIMEOUT, SILENT_TIMEOUT, peer_layout, start_peer};
use serde_json::json;

fn int_inverter(unit: u8, base: u16, w: i64) -> serde_json::Value {
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Foreign Inverters", "Md": "FI-5000", "SN": format!("SN-{unit}"), "Vr": "1.2.3"}},
        {"id": 103, "values": {
            "A": 215, "AphA": 72, "AphB": 71, "AphC": 72, "A_SF": -1,
            "PhVphA": 2401, "PhVphB": 2398, "PhVphC": 2405, "V_SF": -1,
            "W": w, "W_SF": 0, "Hz": 5001, "Hz_SF": -2,
            "VA": w + 100, "VA_SF": 0,
            "WH": 1234567, "WH_SF": 0, "St": 4}},
        {"id": 120, "values": {"DERTyp": 4, "WRtg": 500, "WRtg_SF": 1, "VARtg": 500, "VARtg_SF": 1}},
        {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0, "VAMax": 5000, "VAMax_SF": 0}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 1000, "WMaxLimPct_SF": -1, "WMaxLim_Ena": 0,
                               "WMaxLimPct_RvrtTms": 0, "WMaxLimPct_WinTms": 7, "WMaxLimPct_RmpTms": 9}}
    ]})
}

fn float_inverter(unit: u8, base: u16) -> serde_json::Value {
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Float Co", "Md": "FL-3"}},
        {"id": 113, "values": {"A": 12.5, "AphA": 4.2, "PhVphA": 239.5, "PhVphB": 240.5, "PhVphC": 241.0,
                               "W": 2999.5, "Hz": 49.98, "VA": 3010.0, "WH": 5000.0, "St": 5}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0}}
    ]})
}

fn meter(unit: u8, base: u16) -> serde_json::Value {
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Meters R Us"}},
        {"id": 203, "values": {
            "A": 3000, "AphA": 1000, "AphB": 1000, "AphC": 1000, "A_SF": -2,
            "PhV": 2400, "PhVphA": 2400, "PhVphB": 2410, "PhVphC": 2390, "V_SF": -1,
            "Hz": 5000, "Hz_SF": -2,
            "W": -3500, "WphA": -1200, "WphB": -1100, "WphC": -1200, "W_SF": 0,
            "VAR": 150, "VARphA": 50, "VARphB": 50, "VARphC": 50, "VAR_SF": 0,
            "TotWhExp": 8000, "TotWhImp": 1500, "TotWh_SF": 1}}
    ]})
}

fn der700(unit: u8, base: u16) -> serde_json::Value {
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Seven Hundred"}},
        {"id": 701, "values": {"ACType": 3, "St": 1, "InvSt": 4, "ConnSt": 1,
                               "W": 420, "W_SF": 1, "Var": 0, "Var_SF": 0, "Hz": 5002, "Hz_SF": -2,
                               "LNV": 2400, "V_SF": -1, "WL1": 140, "WL2": 140, "WL3": 140,
                               "TotWhInj": 99, "TotWh_SF": 3}},
        {"id": 702, "values": {"WMaxRtg": 8000, "W_SF": 0, "VAMaxRtg": 8000, "VA_SF": 0, "WMax": 7000}},
        {"id": 704, "values": {"WMaxLimPctEna": 0, "WMaxLimPct": 10000, "WMaxLimPct_SF": -2,
                               "WMaxLimPctRvrt": 10000, "WMaxLimPctEnaRvrt": 0, "WMaxLimPctRvrtTms": 0,
                               "WSetEna": 0}}
    ]})
}

/// A battery inverter: 103 + 120/121/123 + 124 (basic storage controls) with WChaMax
/// 3.3 kW (SF 1), InOutWRte_SF -2, the discharge limit bit set by the owner, 72.5 % charged.
fn battery(unit: u8, base: u16) -> serde_json::Value {
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Battery Co", "Md": "BAT-5"}},
        {"id": 103, "values": {"W": -2500, "W_SF": 0, "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 120, "values": {"DERTyp": 82, "WRtg": 5000, "WRtg_SF": 0}},
        {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0}},
        {"id": 124, "values": {"WChaMax": 330, "WChaMax_SF": 1, "WChaGra": 100, "WDisChaGra": 100,
                               "WChaDisChaGra_SF": 0, "StorCtl_Mod": 2, "ChaState": 725,
                               "ChaState_SF": -1, "OutWRte": 5000, "InWRte": 10000,
                               "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": 0,
                               "InOutWRte_RmpTms": 0, "InOutWRte_SF": -2}}
    ]})
}

fn tcp_bus(port: u16) -> Rc<Bus> {
    let mut p = BusParams::tcp("127.0.0.1", port);
    p.timeout = PEER_TIMEOUT;
    p.retries = 1;
    Rc::new(Bus::new(p))
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn integer_model_inverter_103_with_123() {
    let peer = start_peer(
        "int103",
        &json!({"devices": [int_inverter(1, 40000, 4321)]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv1", 1));
        let map = dev.scan().await.expect("scan");
        assert_eq!(map.base, 40000);
        assert_eq!(map.ids(), vec![1, 103, 120, 121, 123]);
        let common = dev.common().expect("model 1 decoded");
        assert_eq!(common.manufacturer, "Foreign Inverters");
        assert_eq!(common.serial, "SN-1");
        let r = dev.read_inverter().await.expect("read");
        assert_eq!(r.model, 103);
        assert!(close(r.ac.w, 4321.0), "{:?}", r.ac.w);
        assert!(close(r.ac.va, 4421.0));
        assert!(close(r.ac.a, 21.5));
        assert!(close(r.ac.phases[1].a, 7.1));
        assert!(close(r.ac.phases[2].v, 240.5));
        assert!(close(r.ac.hz, 50.01));
        // not set in the peer: "not implemented" → unknown, never a number
        assert_eq!(r.ac.var, None);
        assert_eq!(r.ac.phases[0].w, None);
        assert!(close(r.energy_wh, 1234567.0));
        assert_eq!(r.state, Some(OperatingState::Running));
        assert!(close(r.nameplate.w_rtg_w, 5000.0));
        assert!(close(r.settings.w_max_w, 5000.0));
        let lim = r.limit.expect("limit state");
        assert_eq!(lim.model, 123);
        assert_eq!(lim.enabled, Some(false));
        assert!(close(lim.limit_pct, 100.0));
        assert_eq!(r.connected, Some(true));
        assert!(!dev.is_stale(Instant::now()));
        assert_eq!(dev.stats().link.timeouts, 0);
        // nameplate and settings are read once; a poll reads 103 and 123 only
        let before = dev.stats().link.requests;
        let again = dev.read_inverter().await.expect("second read");
        assert_eq!(dev.stats().link.requests - before, 2);
        assert!(close(again.nameplate.w_rtg_w, 5000.0));
        let st = dev.status(Instant::now());
        assert_eq!(st.models, vec![1, 103, 120, 121, 123]);
        assert_eq!(st.bus, format!("tcp://127.0.0.1:{}", peer.port));
        assert!(!st.stale);
        assert_eq!(
            serde_json::to_value(&st).unwrap()["stats"]["link"]["timeouts"],
            0
        );
    });
}

#[test]
fn float_model_inverter_113() {
    let peer = start_peer(
        "float113",
        &json!({"devices": [float_inverter(7, 40000)]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv-float", 7));
        let r = dev.read_inverter().await.expect("read (scans first)");
        assert_eq!(r.model, 113);
        assert!(close(r.ac.w, 2999.5));
        assert!(r.ac.hz.is_some_and(|h| (h - 49.98).abs() < 1e-3));
        assert!(close(r.ac.phases[0].v, 239.5));
        // NaN (not implemented) stays unknown
        assert_eq!(r.ac.var, None);
        assert_eq!(r.ac.phases[1].a, None);
        assert_eq!(r.state, Some(OperatingState::Throttled));
        assert_eq!(r.nameplate.w_rtg_w, None);
    });
}

#[test]
fn map_at_zero_found_after_exception_at_40000() {
    let peer = start_peer("base0", &json!({"devices": [float_inverter(3, 0)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv-at-0", 3));
        let map = dev.scan().await.expect("scan");
        assert_eq!(map.base, 0);
        assert_eq!(map.models[0].start, 2);
        // 40000 is not mapped on this device: the peer answered "illegal data address"
        assert!(dev.stats().link.exceptions >= 1);
        let r = dev.read_inverter().await.expect("read");
        assert!(close(r.ac.w, 2999.5));
    });
}

#[test]
fn configured_base_50000_and_700_series() {
    let peer = start_peer("der700", &json!({"devices": [der700(4, 50000)]}), None);
    smol::block_on(async {
        let mut params = DeviceParams::new("der", 4);
        params.sunspec_base = Some(50000);
        let mut dev = Device::new(tcp_bus(peer.port), params);
        let r = dev.read_inverter().await.expect("read");
        assert_eq!(r.model, 701);
        assert!(close(r.ac.w, 4200.0));
        assert!(close(r.ac.phases[2].w, 1400.0));
        assert!(close(r.ac.hz, 50.02));
        assert!(close(r.energy_wh, 99000.0));
        assert_eq!(r.state, Some(OperatingState::Throttled));
        assert_eq!(r.connected, Some(true));
        assert!(close(r.nameplate.w_rtg_w, 8000.0));
        assert!(close(r.settings.w_max_w, 7000.0));
        let lim = r.limit.expect("704 limit");
        assert_eq!(lim.model, 704);
        assert!(close(lim.limit_pct, 100.0));
    });
}

#[test]
fn two_inverters_one_address_different_unit_ids() {
    let cfg = json!({"devices": [int_inverter(1, 40000, 1000), int_inverter(2, 40000, 2500)]});
    let peer = start_peer("daisy", &cfg, None);
    smol::block_on(async {
        let bus = tcp_bus(peer.port);
        let mut a = Device::new(bus.clone(), DeviceParams::new("inv-a", 1));
        let mut b = Device::new(bus.clone(), DeviceParams::new("inv-b", 2));
        // both on one bus, polled concurrently: the bus serialises them
        let (ra, rb) = smol::future::zip(a.read_inverter(), b.read_inverter()).await;
        assert!(close(ra.expect("unit 1").ac.w, 1000.0));
        assert!(close(rb.expect("unit 2").ac.w, 2500.0));
        assert_eq!(a.common().unwrap().serial, "SN-1");
        assert_eq!(b.common().unwrap().serial, "SN-2");
    });
}

#[test]
fn meter_203_import_positive() {
    let peer = start_peer("meter", &json!({"devices": [meter(240, 40000)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("site-meter", 240));
        let m = dev.read_meter().await.expect("read meter");
        assert_eq!(m.model, 203);
        // exporting 3.5 kW: negative at the connection point
        assert!(close(m.ac.w, -3500.0));
        assert!(close(m.ac.phases[1].w, -1100.0));
        assert!(close(m.ac.phases[2].v, 239.0));
        assert!(close(m.ac.a, 30.0));
        assert!(close(m.ac.hz, 50.0));
        assert!(close(m.export_wh, 80000.0));
        assert!(close(m.import_wh, 15000.0));
        assert_eq!(m.ac.va, None);
        // an inverter read on a meter is a clear error naming the device
        let e = dev.read_inverter().await.unwrap_err();
        assert!(
            e.to_string().contains("site-meter") && e.to_string().contains("inverter"),
            "{e}"
        );

        let mut flipped = DeviceParams::new("ct-reversed", 240);
        flipped.invert_meter_sign = true;
        let mut dev = Device::new(tcp_bus(peer.port), flipped);
        let m = dev.read_meter().await.expect("read meter");
        assert!(close(m.ac.w, 3500.0));
        assert!(close(m.import_wh, 80000.0));
    });
}

#[test]
fn device_that_stops_answering_goes_stale() {
    let peer = start_peer(
        "silent",
        &json!({"devices": [int_inverter(1, 40000, 800)]}),
        None,
    );
    // The device's own timeout is short (the frozen peer never answers in time
    // anyway); the reads that must succeed are retried until they do, so a slow peer on
    // a loaded machine costs time, not the test (issue 26).
    let mut params = DeviceParams::new("flaky", 1);
    params.stale_after = Duration::from_secs(30);
    params.timeout = Some(SILENT_TIMEOUT);
    let mut dev = Device::new(tcp_bus(peer.port), params);
    assert!(dev.is_stale(Instant::now()), "never read: stale");
    let read_until_ok = |dev: &mut Device, what: &str| {
        wait_until(PATIENCE, what, || {
            smol::block_on(dev.read_inverter()).map(|_| ())
        });
    };
    read_until_ok(&mut dev, "a first read of the live peer");
    assert!(!dev.is_stale(Instant::now()));

    peer.freeze();
    let before = dev.stats().link.clone();
    let e = smol::block_on(dev.read_inverter()).unwrap_err();
    assert!(
        matches!(
            &e,
            DeviceError::Modbus {
                error: ModbusError::Timeout,
                ..
            }
        ),
        "{e}"
    );
    let s = dev.stats().link.clone();
    assert_eq!(
        s.timeouts - before.timeouts,
        2,
        "one attempt + one retry timed out: {s:?}"
    );
    assert_eq!(s.retries - before.retries, 1);
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("timeout"),
        "{s:?}"
    );
    assert!(
        dev.is_stale(Instant::now()),
        "failed read makes the device stale"
    );
    // stale also by age, even without a failure
    peer.thaw();
    read_until_ok(&mut dev, "a read after the peer was thawed");
    assert!(!dev.is_stale(Instant::now()));
    assert!(dev.is_stale(Instant::now() + Duration::from_secs(31)));
}

/// Reads the whole SunSpec block (marker to end model) through csipd.
async fn whole_block(dev: &mut Device) -> (u16, Vec<u16>) {
    let map = dev.map().expect("scanned").clone();
    let last = map.models.last().expect("models");
    let end = last.start + last.total_len() + 2;
    let regs = dev
        .read_registers(map.base, end - map.base)
        .await
        .expect("read block");
    (map.base, regs)
}

fn changed(base: u16, before: &[u16], after: &[u16]) -> Vec<(u16, u16, u16)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (base + i as u16, *a, *b))
        .collect()
}

#[test]
fn writes_touch_only_the_intended_registers() {
    let cfg = json!({"devices": [int_inverter(1, 40000, 5000)]});
    let peer = start_peer("write123", &cfg, None);
    // The layout as pysunspec2's models put it: the peer's view, not ours.
    let layout = peer_layout(&peer.config);
    let words: Vec<u16> = layout[0]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv", 1));
        dev.scan().await.expect("scan");
        let (base, before) = whole_block(&mut dev).await;
        assert_eq!(before, words, "csipd reads exactly the peer's layout");
        let m123 = *dev.map().unwrap().find(123).unwrap();

        let lim = dev
            .set_active_power_limit_pct(
                42.5,
                RevertPolicy {
                    timeout_s: 300,
                    fallback_pct: 0.0,
                },
            )
            .await
            .expect("set limit");
        assert_eq!(lim.enabled, Some(true));
        assert!(close(lim.limit_pct, 42.5));
        assert_eq!(lim.revert_s, Some(300));
        let (_, after) = whole_block(&mut dev).await;
        let mut diff = changed(base, &before, &after);
        diff.sort();
        assert_eq!(
            diff,
            vec![
                (m123.start + 5, 1000, 425), // WMaxLimPct (SF -1)
                (m123.start + 7, 0, 300),    // WMaxLimPct_RvrtTms
                (m123.start + 9, 0, 1),      // WMaxLim_Ena
            ]
        );
        // the peer saw exactly three single-register writes at those addresses
        let writes: Vec<(u64, Vec<u64>)> = peer
            .writes()
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
            .collect();
        let s = u64::from(m123.start);
        assert_eq!(
            writes,
            vec![(s + 7, vec![300]), (s + 5, vec![425]), (s + 9, vec![1])]
        );

        dev.set_connected(false).await.expect("disconnect");
        let (_, after2) = whole_block(&mut dev).await;
        assert_eq!(changed(base, &after, &after2), vec![(m123.start + 4, 1, 0)]);
        assert_eq!(dev.stats().writes, 4);
        assert_eq!(dev.stats().writes_unconfirmed, 0);

        // out of range is refused before anything is written
        assert!(
            dev.set_active_power_limit_pct(
                120.0,
                RevertPolicy {
                    timeout_s: 60,
                    fallback_pct: 0.0
                }
            )
            .await
            .is_err()
        );
        assert_eq!(peer.writes().len(), 4);
    });
}

#[test]
fn charge_limit_through_124_touches_only_its_registers() {
    let peer = start_peer("write124", &json!({"devices": [battery(2, 40000)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat", 2));
        dev.scan().await.expect("scan");
        let r = dev.read_inverter().await.expect("read");
        assert!(close(r.ac.w, -2500.0), "{:?}", r.ac.w);
        let st = r.storage.expect("model 124 decoded");
        assert!(close(st.w_cha_max_w, 3300.0), "{st:?}");
        assert_eq!(st.charge_limited, Some(false));
        assert!(close(st.soc_pct, 72.5));
        let (base, before) = whole_block(&mut dev).await;
        let m124 = *dev.map().unwrap().find(124).unwrap();

        let st = dev
            .set_charge_limit_w(Some(1155.0), 120)
            .await
            .expect("set charge limit");
        assert_eq!(st.charge_limited, Some(true));
        assert!(close(st.charge_limit_pct, 35.0), "{st:?}");
        assert!(
            st.charge_limit_w()
                .is_some_and(|w| (w - 1155.0).abs() < 0.5),
            "{st:?}"
        );
        let (_, after) = whole_block(&mut dev).await;
        let mut diff = changed(base, &before, &after);
        diff.sort();
        let s = m124.start;
        assert_eq!(
            diff,
            vec![
                (s + 5, 2, 3),         // StorCtl_Mod: CHARGE set, DISCHARGE kept
                (s + 13, 10000, 3500), // InWRte 35.00 % of WChaMax
                (s + 15, 0, 120),      // InOutWRte_RvrtTms
            ]
        );
        // Lifting the limit clears the CHARGE bit only.
        dev.set_charge_limit_w(None, 120).await.expect("lift");
        let (_, lifted) = whole_block(&mut dev).await;
        assert_eq!(changed(base, &after, &lifted), vec![(s + 5, 3, 2)]);
        assert_eq!(peer.writes().len(), 4);
        assert_eq!(dev.stats().writes_unconfirmed, 0);

        // A PV inverter without model 124 says so, and nothing is written.
        let e = dev.set_charge_limit_w(Some(-5.0), 120).await.unwrap_err();
        assert!(e.to_string().contains("charge limit"), "{e}");
        assert_eq!(peer.writes().len(), 4);
    });
    let peer = start_peer(
        "write124-pv",
        &json!({"devices": [int_inverter(1, 40000, 3000)]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv", 1));
        let e = dev.set_charge_limit_w(Some(1000.0), 120).await.unwrap_err();
        assert!(e.to_string().contains("124"), "{e}");
        assert!(peer.writes().is_empty());
    });
}

#[test]
fn battery_of_the_700_series_reports_capacity_and_charge_from_713() {
    // A DER 700-series battery: 701/702/704 with model 713 (DER storage capacity):
    // 13.5 kWh rated (WH_SF 1), 64.2 % charged. Without model 124 csipd reads it but
    // cannot command it; with 124 as well, 124's state of charge wins.
    let mut bat = der700(3, 40000);
    bat["models"].as_array_mut().unwrap().push(json!(
        {"id": 713, "values": {"WHRtg": 1350, "WHAvail": 866, "SoC": 642, "SoH": 1000,
                               "Sta": 1, "WH_SF": 1, "Pct_SF": -1}}));
    let mut both = bat.clone();
    both["unit"] = json!(4);
    both["models"].as_array_mut().unwrap().push(json!(
        {"id": 124, "values": {"WChaMax": 5000, "WChaMax_SF": 0, "StorCtl_Mod": 0,
                               "ChaState": 500, "ChaState_SF": -1, "InWRte": 10000,
                               "OutWRte": 10000, "InOutWRte_SF": -2}}));
    let peer = start_peer("bat713", &json!({"devices": [bat, both]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat", 3));
        dev.scan().await.expect("scan");
        let r = dev.read_inverter().await.expect("read");
        let st = r.storage.expect("model 713 decoded");
        assert!(close(st.capacity_wh, 13_500.0), "{st:?}");
        assert!(close(st.soc_pct, 64.2), "{st:?}");
        assert_eq!(st.w_cha_max_w, None);
        assert!(!r.controls.charge_limit, "no model 124: nothing to command");
        let e = dev
            .set_storage_target_w(Some(1000.0), 120)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("124"), "{e}");
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat2", 4));
        dev.scan().await.expect("scan");
        let r = dev.read_inverter().await.expect("read");
        let st = r.storage.expect("models 124 and 713 decoded");
        assert!(close(st.capacity_wh, 13_500.0), "{st:?}");
        assert!(close(st.soc_pct, 50.0), "{st:?}");
        assert!(r.controls.charge_limit);
    });
    assert!(peer.writes().is_empty());
    // Model 120's storage ratings: WHRtg, MaxChaRte, MaxDisChaRte (the battery of the
    // charge-limit test has none: not implemented reads as unknown).
    let mut rated = battery(5, 40000);
    rated["models"][2] = json!({"id": 120, "values": {"DERTyp": 82, "WRtg": 5000,
        "WRtg_SF": 0, "WHRtg": 1350, "WHRtg_SF": 1, "MaxChaRte": 3300, "MaxChaRte_SF": 0,
        "MaxDisChaRte": 4600, "MaxDisChaRte_SF": 0}});
    let peer = start_peer(
        "bat120",
        &json!({"devices": [rated, battery(6, 40000)]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat", 5));
        dev.scan().await.expect("scan");
        let np = dev.read_inverter().await.expect("read").nameplate;
        assert!(close(np.wh_rtg_wh, 13_500.0), "{np:?}");
        assert!(close(np.max_charge_rate_w, 3300.0), "{np:?}");
        assert!(close(np.max_discharge_rate_w, 4600.0), "{np:?}");
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat6", 6));
        dev.scan().await.expect("scan");
        let np = dev.read_inverter().await.expect("read").nameplate;
        assert_eq!((np.wh_rtg_wh, np.max_discharge_rate_w), (None, None));
    });
}

#[test]
fn storage_target_through_124_touches_only_its_registers() {
    // opModStorageTargetW on a real Modbus peer: the rate window and both
    // StorCtl_Mod bits, the revert timer; ending it clears the bits and nothing else.
    let peer = start_peer("target124", &json!({"devices": [battery(2, 40000)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("bat", 2));
        dev.scan().await.expect("scan");
        dev.read_inverter().await.expect("read");
        let (base, before) = whole_block(&mut dev).await;
        let s = dev.map().unwrap().find(124).unwrap().start;
        // Discharge 1650 W of WChaMax 3.3 kW: 50.00 %.
        dev.set_storage_target_w(Some(1650.0), 120)
            .await
            .expect("set target");
        let (_, after) = whole_block(&mut dev).await;
        let mut diff = changed(base, &before, &after);
        diff.sort();
        assert_eq!(
            diff,
            vec![
                (s + 5, 2, 3),                      // StorCtl_Mod: both bits
                (s + 12, 5000, 5000),               // OutWRte 50.00 % (was 50.00 %)
                (s + 13, 10000, (-5000i16) as u16), // InWRte -50.00 %
                (s + 15, 0, 120),                   // InOutWRte_RvrtTms
            ]
            .into_iter()
            .filter(|(_, a, b)| a != b)
            .collect::<Vec<_>>()
        );
        // Charge 3.3 kW: InWRte 100 %, OutWRte -100 %.
        dev.set_storage_target_w(Some(-3300.0), 120)
            .await
            .expect("charge target");
        let (_, charging) = whole_block(&mut dev).await;
        let mut diff = changed(base, &after, &charging);
        diff.sort();
        assert_eq!(
            diff,
            vec![
                (s + 12, 5000, (-10000i16) as u16),
                (s + 13, (-5000i16) as u16, 10000),
            ]
        );
        // The end: both bits cleared, the rates left as they are.
        dev.set_storage_target_w(None, 120).await.expect("end");
        let (_, ended) = whole_block(&mut dev).await;
        assert_eq!(changed(base, &charging, &ended), vec![(s + 5, 3, 0)]);
        assert_eq!(dev.stats().writes_unconfirmed, 0);
    });
}

#[test]
fn limit_through_704_sets_revert_value() {
    let peer = start_peer("write704", &json!({"devices": [der700(4, 40000)]}), None);
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("der", 4));
        dev.scan().await.expect("scan");
        let (base, before) = whole_block(&mut dev).await;
        let m704 = *dev.map().unwrap().find(704).unwrap();
        let lim = dev
            .set_active_power_limit_pct(
                25.0,
                RevertPolicy {
                    timeout_s: 120,
                    fallback_pct: 5.0,
                },
            )
            .await
            .expect("set limit");
        assert_eq!(lim.model, 704);
        assert!(close(lim.limit_pct, 25.0));
        let (_, after) = whole_block(&mut dev).await;
        let mut diff = changed(base, &before, &after);
        diff.sort();
        let s = m704.start;
        assert_eq!(
            diff,
            vec![
                (s + 14, 0, 1),        // WMaxLimPctEna
                (s + 15, 10000, 2500), // WMaxLimPct (SF -2)
                (s + 16, 10000, 500),  // WMaxLimPctRvrt
                (s + 17, 0, 1),        // WMaxLimPctEnaRvrt
                (s + 19, 0, 120),      // WMaxLimPctRvrtTms (low word)
            ]
        );
    });
}

#[test]
fn modbus_scan_command_reports_devices() {
    let cfg = json!({"devices": [int_inverter(1, 40000, 2000), meter(2, 40000)]});
    let peer = start_peer("cli", &cfg, None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args([
            "modbus-scan",
            &format!("tcp://127.0.0.1:{}", peer.port),
            "1",
            "2",
            "3",
        ])
        .output()
        .expect("run csipd modbus-scan");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["inverter"]["ac"]["w"], 2000.0);
    assert_eq!(lines[0]["common"]["manufacturer"], "Foreign Inverters");
    assert_eq!(lines[1]["meter"]["ac"]["w"], -3500.0);
    // unit 3 does not exist: reported, and the exit code says so; the words say no
    // map was found (not a chain "broken at register 0") and what to check.
    let error = lines[2]["error"].as_str().unwrap_or("");
    assert!(error.contains("unit 3"), "{}", lines[2]);
    assert!(
        error.contains("no SunSpec map found")
            && error.contains("is this its unit id?")
            && !error.contains("broken"),
        "{error}"
    );
    assert_eq!(out.status.code(), Some(1));
}

/// A model 103 inverter with volt-var (126) and volt-watt (132), two curves each (the
/// first read-only, as inverters keep their factory curve), four points per curve.
fn curve_inverter(unit: u8, base: u16) -> serde_json::Value {
    let curves = |extra: serde_json::Value| {
        let mut v = json!({"ActCrv": 1, "ModEna": 0, "WinTms": 0, "RvrtTms": 0, "RmpTms": 0,
                           "NCrv": 2, "NPt": 4, "V_SF": -1, "DeptRef_SF": 0, "RmpIncDec_SF": 0,
                           "curve[0].ActPt": 2, "curve[0].DeptRef": 2, "curve[0].ReadOnly": 1,
                           "curve[1].ReadOnly": 0});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    json!({"unit": unit, "base": base, "models": [
        {"id": 1, "values": {"Mn": "Curve Co", "Md": "CV-5"}},
        {"id": 103, "values": {"W": 3000, "W_SF": 0, "Hz": 5000, "Hz_SF": -2, "PhVphA": 2400,
                               "V_SF": -1, "St": 4}},
        {"id": 126, "values": curves(json!({"curve[0].V1": 900, "curve[0].VAr1": 30}))},
        {"id": 132, "values": curves(json!({"curve[0].V1": 1060, "curve[0].W1": 100}))}
    ]})
}

#[test]
fn volt_var_and_volt_watt_curves_are_written_to_models_126_and_132_and_read_back() {
    use csipd::devices::curves::{Curve, CurvePoint};
    use csipd::schedule::ControlMode;
    let cfg = json!({"devices": [curve_inverter(1, 40000)]});
    let peer = start_peer("curves", &cfg, None);
    let points = |pts: &[(f64, f64)]| -> Vec<CurvePoint> {
        pts.iter()
            .map(|&(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
            .collect()
    };
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(peer.port), DeviceParams::new("inv", 1));
        dev.scan().await.expect("scan");
        let m126 = *dev.map().unwrap().find(126).expect("126 scanned");
        let m132 = *dev.map().unwrap().find(132).expect("132 scanned");
        // 4-point volt-var: 90.4 % V → +44 % VArMax ... 110 % V → -60 % VArMax.
        let volt_var = Curve {
            mode: ControlMode::VoltVar,
            points: points(&[(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]),
            dept_ref: 2,
        };
        let state = dev.set_curve(&volt_var).await.expect("volt-var applied");
        assert!(state.enabled);
        assert_eq!(state.active_curve, 2);
        assert_eq!(state.points.len(), 4);
        // Volt-watt: full power up to 106 %, 20 % of WMax at 110 %.
        let volt_watt = Curve {
            mode: ControlMode::VoltWatt,
            points: points(&[(106.0, 100.0), (110.0, 20.0)]),
            dept_ref: 1,
        };
        dev.set_curve(&volt_watt).await.expect("volt-watt applied");
        assert_eq!(dev.stats().writes_unconfirmed, 0);
        // The peer saw exactly these writes: curve 2's ActPt, DeptRef and points in one
        // write (12 + 54 registers in: the second curve), then ActCrv 2, then ModEna 1.
        let writes: Vec<(u64, Vec<u64>)> = peer
            .writes()
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
            .collect();
        let (a, b) = (u64::from(m126.start), u64::from(m132.start));
        assert_eq!(
            writes,
            vec![
                (
                    a + 66,
                    vec![4, 2, 904, 44, 956, 0, 1043, 0, 1100, 0x10000 - 60]
                ),
                (a + 2, vec![2]),
                (a + 3, vec![1]),
                (b + 66, vec![2, 1, 1060, 100, 1100, 20]),
                (b + 2, vec![2]),
                (b + 3, vec![1]),
            ]
        );
        // The factory curve (curve 1) is untouched.
        let regs = dev
            .read_registers(m126.start, m126.total_len())
            .await
            .expect("read 126");
        assert_eq!(&regs[12..16], &[2, 2, 900, 30]);
    });
    // An inverter without 126: the mode cannot be applied, and nothing is written.
    let plain = start_peer(
        "curves-none",
        &json!({"devices": [int_inverter(1, 40000, 3000)]}),
        None,
    );
    smol::block_on(async {
        let mut dev = Device::new(tcp_bus(plain.port), DeviceParams::new("inv", 1));
        let e = dev
            .set_curve(&Curve {
                mode: ControlMode::VoltVar,
                points: points(&[(95.0, 10.0), (105.0, -10.0)]),
                dept_ref: 2,
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("volt-var (126 or 705)"), "{e}");
    });
    assert!(plain.writes().is_empty());
}
