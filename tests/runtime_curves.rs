//! `csipd run` putting the utility's volt-var curve on an inverter end to end (issue
//! #20): the hand-scripted CSIP-AUS server (tests/common/csip_server.rs, plain HTTP lab
//! mode; no installable server serves csipaus controls with DERCurves) serves a
//! DERControl with `opModExpLimW` and `opModVoltVar` linking a 4-point curve of the
//! program's DERCurveList; a pymodbus SunSpec peer (tests/peers/sunspec_sim.py,
//! register maps from pysunspec2) is the site meter and an inverter with model 126
//! (two curves, the first read-only), and a second inverter whose 126 takes too few
//! points for the curve.
//!
//! Checked: the curve's registers on the inverter (curve 2's points in one write, then
//! ActCrv, then ModEna), written once; the responses (Received, Started, Completed),
//! DERCapability claiming volt-var, `/status` showing the curve in force, the mode
//! switched off (ModEna 0) when the control ends; the second inverter's failure in its
//! status;
//! every body csipd sent validates against csipaus-core.xsd. Then the same for
//! opModTargetVar and opModWattVar on an inverter with models 704 (`VarSet` in var,
//! `VarSetMod` VARS), 712 (the watt-var curve written, adopted, enabled) and 131
//! (opModWattPF: the curve written, selected, enabled), and opModFreqDroop on 711
//! (the control written, adopted, enabled). Then a 1xx inverter with 703, 127 and 134:
//! the default's setES* in 703 once and in DERSettings, a control's opModFreqWatt on
//! 134 and its opModFreqDroop on 127 at 121's nominal frequency. Waits are for conditions
//! with generous deadlines, never fixed sleeps.

// runtime_common and devices_support each bring tests/support/wait.rs.
#![allow(clippy::duplicate_mod)]

#[path = "common/csip_server.rs"]
mod csip_server;
#[path = "devices_support/mod.rs"]
mod devices_support;
mod runtime_common;

use csip_server::{
    Control, Program, Scenario, ScriptedServer, element_text, freq_watt_curve_xml, mrid_of, now_s,
    volt_var_curve_xml, watt_pf_curve_xml, watt_var_curve_xml,
};
use devices_support::{Peer, start_peer};
use runtime_common::*;
use serde_json::json;
use std::time::Duration;

const CURVE: &str = "/edev/1/derp/1/dc/1";
const WV: &str = "/edev/1/derp/1/dc/2";
const WPF: &str = "/edev/1/derp/1/dc/3";

/// Site meter (unit 1), exporting 2 kW; a 5 kW PV inverter (unit 2) with 123 and 126.
fn site() -> serde_json::Value {
    let m126 = json!({"id": 126, "values": {"ActCrv": 1, "ModEna": 0, "WinTms": 0, "RvrtTms": 0,
                           "RmpTms": 0, "NCrv": 2, "NPt": 4, "V_SF": -1,
                           "DeptRef_SF": 0, "RmpIncDec_SF": 0,
                           "curve[0].ActPt": 2, "curve[0].DeptRef": 2,
                           "curve[0].ReadOnly": 1, "curve[0].V1": 900,
                           "curve[0].VAr1": 30, "curve[1].ReadOnly": 0}});
    // A second inverter whose 126 takes 2 points per curve: the 4-point curve
    // does not fit, and its status says so.
    let m126_two_points = json!({"id": 126, "values": {"ActCrv": 1, "ModEna": 0, "WinTms": 0,
                           "RvrtTms": 0, "RmpTms": 0, "NCrv": 2, "NPt": 2, "V_SF": -1,
                           "DeptRef_SF": 0, "RmpIncDec_SF": 0,
                           "curve[0].ReadOnly": 1, "curve[1].ReadOnly": 0}});
    json!({"devices": [
        meter_203(1, -2000),
        pv_inverter_123(2, ("Curve Co", "CV-5"), 5000, 2500, &[m126]),
        pv_inverter_123(3, ("Curve Co", "CV-2"), 1000, 500, &[m126_two_points]),
    ]})
}

/// The inverter's (unit 2) writes as (address, values).
fn inverter_writes(peer: &Peer) -> Vec<(u64, Vec<u64>)> {
    peer.writes()
        .iter()
        .filter(|w| w["unit"].as_u64() == Some(2))
        .filter_map(|w| {
            Some((
                w["address"].as_u64()?,
                w["values"]
                    .as_array()?
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .collect(),
            ))
        })
        .collect()
}

/// Starts `csipd run` against `server` with the meter (unit 1) and the inverter
/// (unit 2) of `peer`, and with `small` the second inverter (unit 3); returns the
/// process and its status URL.
fn start_csipd(
    dir: &std::path::Path,
    server: &ScriptedServer,
    peer: &Peer,
    (key, cert): (&std::path::Path, &std::path::Path),
    small: bool,
) -> (Proc, String) {
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config server 'utility'
\toption dcap_url '{url}/dcap'
\toption cert '{cert}'
\toption key '{key}'
\toption allow_plain_http '1'
\toption pen '12345'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{meter}{inverter}{small}",
        d = dir.display(),
        url = server.base_url,
        cert = cert.display(),
        key = key.display(),
        meter = uci_tcp_device("meter", "meter", &peer.port.to_string(), 1),
        inverter = uci_tcp_device("pv", "inverter", &peer.port.to_string(), 2),
        small = if small {
            uci_tcp_device("pv2", "inverter", &peer.port.to_string(), 3)
        } else {
            String::new()
        },
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    start_run(&path.display().to_string())
}

#[test]
fn the_utility_volt_var_curve_reaches_the_inverter_model_126() {
    let dir = temp_dir("runtime-curves");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-curves-test");
    let peer = start_peer("runtime-curves", &site(), None);

    let t0 = now_s();
    // 40 s left once csipd starts: long enough for the checks below, short enough to
    // see the curve switched off when it ends (the default sets no curve).
    let mut control = Control::new("VV-A", t0 - 5, 45);
    control.exp_lim_w = Some(1500);
    control.volt_var = Some(CURVE.into());
    let server = ScriptedServer::start(Scenario {
        lfdi,
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            curves: vec![volt_var_curve_xml(CURVE, "VVC")],
            controls: vec![control],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let (mut run, url) = start_csipd(&dir, &server, &peer, (&key, &cert), true);

    // The curve as SunSpec 126 takes it: 4 points, DeptRef 2 (%VArMax), V in tenths
    // of a percent (V_SF -1), VAr in whole percent; -60 as int16.
    let points = vec![4, 2, 904, 44, 956, 0, 1043, 0, 1100, 0x10000 - 60];
    wait_until(
        Duration::from_secs(90),
        "the volt-var curve written to the inverter",
        || inverter_writes(&peer).iter().any(|(_, v)| *v == points),
    );
    let writes = inverter_writes(&peer);
    let at = writes.iter().position(|(_, v)| *v == points).unwrap();
    let curve_addr = writes[at].0;
    // In order: curve 2 (12 + 54 registers into the model), ActCrv 2, ModEna 1.
    let model = curve_addr - 66;
    assert_eq!(
        &writes[at..at + 3],
        &[
            (curve_addr, points.clone()),
            (model + 2, vec![2]),
            (model + 3, vec![1])
        ],
        "{writes:?}"
    );
    let responses = |tag: &str| -> Vec<u8> {
        server
            .requests_to("POST", "/edev/1/rsps/site_control/rsp")
            .iter()
            .filter(|r| element_text(&r.body, "subject").as_deref() == Some(&mrid_of(tag)))
            .filter_map(|r| element_text(&r.body, "status")?.parse().ok())
            .collect()
    };
    assert!(
        server.wait_for(Duration::from_secs(60), |_| responses("VV-A").contains(&2)),
        "VV-A responses: {:?}",
        responses("VV-A")
    );
    assert_eq!(responses("VV-A"), vec![1, 2]);
    // The status shows the curve in force, from the control.
    let s = wait_for(&url, Duration::from_secs(30), "volt-var in status", |s| {
        s.inverter_settings.iter().any(|i| i.mode == "opModVoltVar")
    });
    let vv = &s.inverter_settings[0];
    assert!(vv.value.starts_with("4 points 90.4 %V → 44 %"), "{vv:?}");
    assert!(vv.end_unix_s.is_some());
    // The small inverter could not take it: said in its status, once.
    let s = wait_for(&url, Duration::from_secs(30), "pv2's curve error", |s| {
        s.devices.iter().any(|d| {
            d.name == "pv2"
                && d.stats
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("opModVoltVar"))
        })
    });
    let pv2 = s.devices.iter().find(|d| d.name == "pv2").unwrap();
    let error = pv2.stats.last_error.as_deref().unwrap();
    assert!(error.contains("1 to 2"), "{error}");
    assert_eq!(pv2.stats.writes_failed, 1, "{:?}", pv2.stats);
    // DERCapability claims volt-var (bit 23) once the inverters were read (both
    // have 126).
    assert!(
        server.wait_for(Duration::from_secs(60), |r| r.iter().any(|r| r.path
            == "/edev/1/der/1/dercap"
            && element_text(&r.body, "modesSupported")
                .and_then(|m| u32::from_str_radix(&m, 16).ok())
                .is_some_and(|m| m & 1 << 23 != 0))),
        "no DERCapability claiming volt-var"
    );
    // Written once: an unchanged curve is not written again each cycle (several
    // cycles have passed by now: the responses, the status, the DERCapability).
    let later = inverter_writes(&peer);
    assert_eq!(
        later.iter().filter(|(_, v)| *v == points).count(),
        1,
        "the curve written once: {later:?}"
    );
    // The control ends and nothing else sets volt-var: csipd switches the mode off
    // (ModEna 0), the curve stays stored; Completed.
    wait_until(
        Duration::from_secs(90),
        "volt-var switched off when the control ended",
        || inverter_writes(&peer).contains(&(model + 3, vec![0])),
    );
    assert!(
        server.wait_for(Duration::from_secs(30), |_| responses("VV-A").contains(&3)),
        "VV-A responses: {:?}",
        responses("VV-A")
    );
    run.terminate();
    let invalid = csip_server::invalid_bodies(&server);
    assert!(
        invalid.is_empty(),
        "bodies failing the schema: {invalid:#?}"
    );
}

/// Site meter (unit 1); an inverter (unit 2) with 103, 120, 121, 704 (DER AC
/// controls: the active power limit and the reactive power setpoint, VarSet_SF 0) and
/// 712 (watt-var: 2 curves of 4 points, curve 1 read-only), 131 (watt-PF, the same)
/// and 711 (frequency droop: 2 controls, control 1 read-only).
fn site_704() -> serde_json::Value {
    let mut site = site();
    // Only these two: every inverter must offer a mode for csipd to take it.
    site["devices"].as_array_mut().unwrap().truncate(2);
    site["devices"][1]["models"] = json!([
        {"id": 1, "values": {"Mn": "Var Co", "Md": "TV-5"}},
        {"id": 103, "values": {"W": 2500, "W_SF": 0, "PhVphA": 2400, "V_SF": -1,
                               "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 120, "values": {"DERTyp": 4, "WRtg": 5000, "WRtg_SF": 0}},
        {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0}},
        {"id": 704, "values": {"PFWInjEna": 0, "PFWAbsEna": 0, "WMaxLimPctEna": 0,
                               "WMaxLimPct": 10000, "VarSetEna": 0, "VarSetMod": 0,
                               "PF_SF": -2, "WMaxLimPct_SF": -2, "VarSetPct_SF": -2,
                               "VarSet_SF": 0, "PFWInj.PF": 100, "PFWAbs.PF": 100}},
        {"id": 712, "values": {"Ena": 0, "AdptCrvReq": 0, "AdptCrvRslt": 1, "NPt": 4,
                               "NCrv": 2, "W_SF": 0, "DeptRef_SF": 0,
                               "Crv[0].ReadOnly": 1, "Crv[1].ReadOnly": 0}},
        {"id": 131, "values": {"ActCrv": 1, "ModEna": 0, "NCrv": 2, "NPt": 4, "W_SF": 0,
                               "PF_SF": -2, "curve[0].ReadOnly": 1, "curve[1].ReadOnly": 0}},
        {"id": 711, "values": {"Ena": 0, "AdptCtlReq": 0, "AdptCtlRslt": 1, "NCtl": 2,
                               "Db_SF": -3, "K_SF": -3, "RspTms_SF": -2,
                               "Ctl[0].ReadOnly": 1, "Ctl[1].ReadOnly": 0}}
    ]);
    site
}

#[test]
fn the_utility_target_var_watt_var_watt_pf_and_droop_reach_a_7xx_inverter() {
    let dir = temp_dir("runtime-target-var");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-target-var-test");
    let peer = start_peer("runtime-target-var", &site_704(), None);
    let t0 = now_s();
    let mut control = Control::new("TV-A", t0 - 5, 45);
    control.exp_lim_w = Some(1500);
    control.target_var = Some((-150, 1));
    control.watt_var = Some(WV.into());
    control.watt_pf = Some(WPF.into());
    control.freq_droop = Some((150, 150, 50, 40, 100));
    let server = ScriptedServer::start(Scenario {
        lfdi,
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            curves: vec![
                watt_var_curve_xml(WV, "WVC"),
                watt_pf_curve_xml(WPF, "WPFC"),
            ],
            controls: vec![control],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let (mut run, url) = start_csipd(&dir, &server, &peer, (&key, &cert), false);
    // -1500 var as int32 (VarSet_SF 0), high word first.
    let raw = (-1500i32) as u32;
    let var_set = vec![u64::from(raw >> 16), u64::from(raw & 0xFFFF)];
    wait_until(
        Duration::from_secs(90),
        "the reactive power target written to the inverter",
        || inverter_writes(&peer).iter().any(|(_, v)| *v == var_set),
    );
    let writes = inverter_writes(&peer);
    let at = writes.iter().position(|(_, v)| *v == var_set).unwrap();
    // VarSet is 38 registers into 704 (from its ID): VarSetMod at 36, VarSetEna at 35.
    let model = writes[at].0 - 38;
    assert_eq!(
        &writes[at..at + 3],
        &[
            (model + 38, var_set.clone()),
            (model + 36, vec![4]),
            (model + 35, vec![1])
        ],
        "{writes:?}"
    );
    let responses = |tag: &str| -> Vec<u8> {
        server
            .requests_to("POST", "/edev/1/rsps/site_control/rsp")
            .iter()
            .filter(|r| element_text(&r.body, "subject").as_deref() == Some(&mrid_of(tag)))
            .filter_map(|r| element_text(&r.body, "status")?.parse().ok())
            .collect()
    };
    assert!(
        server.wait_for(Duration::from_secs(60), |_| responses("TV-A").contains(&2)),
        "TV-A responses: {:?}",
        responses("TV-A")
    );
    assert_eq!(responses("TV-A"), vec![1, 2]);
    let s = wait_for(&url, Duration::from_secs(30), "target var in status", |s| {
        s.inverter_settings
            .iter()
            .any(|i| i.mode == "opModTargetVar")
    });
    let tv = s
        .inverter_settings
        .iter()
        .find(|i| i.mode == "opModTargetVar")
        .unwrap();
    assert_eq!(tv.value, "-1500 var (absorbing)");
    // The watt-var curve on 712: curve 2 (14 + 12 registers in) ActPt 4 and DeptRef
    // VAR_MAX_PCT, its points (W signed), AdptCrvReq 2, then Ena 1.
    let wv_points: Vec<u64> = [-100i16, 30, 0, 0, 50, 0, 100, -44]
        .iter()
        .map(|v| u64::from(*v as u16))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "the watt-var curve written to 712",
        || inverter_writes(&peer).iter().any(|(_, v)| *v == wv_points),
    );
    let writes = inverter_writes(&peer);
    let at = writes.iter().position(|(_, v)| *v == wv_points).unwrap();
    let m712 = writes[at].0 - 14 - 12 - 4;
    assert_eq!(writes[at - 1], (m712 + 26, vec![4, 1]), "{writes:?}");
    wait_until(Duration::from_secs(60), "watt-var enabled", || {
        inverter_writes(&peer).contains(&(m712 + 2, vec![1]))
    });
    assert!(inverter_writes(&peer).contains(&(m712 + 3, vec![2])));
    wait_for(&url, Duration::from_secs(30), "watt-var in status", |s| {
        s.inverter_settings
            .iter()
            .any(|i| i.mode == "opModWattVar" && i.value.starts_with("4 points -100.0 %W → 30 %"))
    });
    // The watt-PF curve on 131: ActPt 3, then W and PF (PF_SF -2) pairs, the last
    // 0.90 absorbing (negative).
    let wpf = vec![3, 0, 100, 50, 100, 100, u64::from((-90i16) as u16)];
    wait_until(
        Duration::from_secs(60),
        "the watt-PF curve written to 131",
        || inverter_writes(&peer).iter().any(|(_, v)| *v == wpf),
    );
    let writes = inverter_writes(&peer);
    let at = writes.iter().position(|(_, v)| *v == wpf).unwrap();
    let m131 = writes[at].0 - 66;
    assert_eq!(
        &writes[at..at + 3],
        &[
            (m131 + 66, wpf.clone()),
            (m131 + 2, vec![2]),
            (m131 + 3, vec![1])
        ]
    );
    // The droop on 711: control 2 (14 + 10 registers in) DbOf, DbUf (uint32, mHz),
    // KOf, KUf (thousandths), RspTms (hundredths of s); AdptCtlReq 2; Ena 1.
    let droop = vec![0, 150, 0, 150, 50, 40, 0, 100];
    wait_until(Duration::from_secs(60), "the droop written to 711", || {
        inverter_writes(&peer).iter().any(|(_, v)| *v == droop)
    });
    let writes = inverter_writes(&peer);
    let at = writes.iter().position(|(_, v)| *v == droop).unwrap();
    let m711 = writes[at].0 - 24;
    wait_until(Duration::from_secs(60), "the droop enabled", || {
        inverter_writes(&peer).contains(&(m711 + 2, vec![1]))
    });
    assert!(inverter_writes(&peer).contains(&(m711 + 3, vec![2])));
    wait_for(&url, Duration::from_secs(30), "droop in status", |s| {
        s.inverter_settings.iter().any(|i| {
            i.mode == "opModFreqDroop"
                && i.value == "dead band +0.150/-0.150 Hz, droop 0.050/0.040, 1.00 s"
        })
    });
    // DERCapability claims opModTargetVar (bit 21) once the inverter was read.
    assert!(
        server.wait_for(Duration::from_secs(60), |r| r.iter().any(|r| r.path
            == "/edev/1/der/1/dercap"
            && element_text(&r.body, "modesSupported")
                .and_then(|m| u32::from_str_radix(&m, 16).ok())
                .is_some_and(
                    |m| m & (1 << 21 | 1 << 25 | 1 << 26) == 1 << 21 | 1 << 25 | 1 << 26
                ))),
        "no DERCapability claiming opModTargetVar, opModWattPF and opModWattVar"
    );
    assert_eq!(
        inverter_writes(&peer)
            .iter()
            .filter(|(_, v)| *v == var_set)
            .count(),
        1,
        "written once"
    );
    // The control ends: the setpoint (still in var) is switched off, so is watt-var.
    wait_until(
        Duration::from_secs(90),
        "the target and watt-var switched off when the control ended",
        || {
            let w = inverter_writes(&peer);
            w.contains(&(model + 35, vec![0]))
                && w.contains(&(m712 + 2, vec![0]))
                && w.contains(&(m131 + 3, vec![0]))
                && w.contains(&(m711 + 2, vec![0]))
        },
    );
    run.terminate();
    let invalid = csip_server::invalid_bodies(&server);
    assert!(
        invalid.is_empty(),
        "bodies failing the schema: {invalid:#?}"
    );
}

/// Site meter (unit 1); a 1xx inverter (unit 2) with 121 (ECPNomHz 50.00 Hz), 123,
/// 127 (freq-watt parameters, no 711: the droop goes here), 134 (freq-watt curves: 2
/// of 4 points, curve 1 read-only) and 703 (enter service: V_SF -1, Hz_SF -2; the
/// installer's AS/NZS 4777.2 values to start with).
fn site_703() -> serde_json::Value {
    let mut site = site();
    site["devices"].as_array_mut().unwrap().truncate(2);
    site["devices"][1]["models"] = json!([
        {"id": 1, "values": {"Mn": "Enter Co", "Md": "ES-5"}},
        {"id": 103, "values": {"W": 2500, "W_SF": 0, "PhVphA": 2400, "V_SF": -1,
                               "Hz": 5000, "Hz_SF": -2, "St": 4}},
        {"id": 120, "values": {"DERTyp": 4, "WRtg": 5000, "WRtg_SF": 0}},
        {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0, "ECPNomHz": 5000,
                               "ECPNomHz_SF": -2}},
        {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0,
                               "WMaxLim_Ena": 0}},
        {"id": 127, "values": {"WGra": 0, "HzStr": 0, "HzStop": 0, "HysEna": 0,
                               "ModEna": 0, "HzStopWGra": 0, "WGra_SF": -2,
                               "HzStrStop_SF": -3, "RmpIncDec_SF": 0}},
        {"id": 134, "values": {"ActCrv": 1, "ModEna": 0, "NCrv": 2, "NPt": 4,
                               "Hz_SF": -2, "W_SF": 0, "curve[0].ReadOnly": 1,
                               "curve[1].ReadOnly": 0}},
        {"id": 703, "values": {"ES": 1, "ESVHi": 1100, "ESVLo": 880, "ESHzHi": 5015,
                               "ESHzLo": 4750, "ESDlyTms": 60, "ESRndTms": 0,
                               "ESRmpTms": 360, "V_SF": -1, "Hz_SF": -2}}
    ]);
    site
}

/// The default's setES* reach 703 once and DERSettings; a DERControl's opModFreqWatt
/// reaches 134 and its opModFreqDroop 127 (at 121's 50 Hz), both claimed in
/// DERCapability.
#[test]
fn the_default_enter_service_settings_reach_model_703_once_and_der_settings() {
    let dir = temp_dir("runtime-es");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-es-test");
    let peer = start_peer("runtime-es", &site_703(), None);
    // 2030.5 units: 108.00 % / 91.00 % of nominal, 50.10 / 47.80 Hz, 120 s delay,
    // 30 s random delay, 300 s ramp.
    let set_es = "<setESDelay>12000</setESDelay><setESHighFreq>5010</setESHighFreq>\
                  <setESHighVolt>10800</setESHighVolt><setESLowFreq>4780</setESLowFreq>\
                  <setESLowVolt>9100</setESLowVolt><setESRampTms>30000</setESRampTms>\
                  <setESRandomDelay>3000</setESRandomDelay>";
    const FW: &str = "/edev/1/derp/1/dc/4";
    let mut control = Control::new("FW-A", now_s() - 5, 600);
    control.exp_lim_w = Some(1500);
    control.freq_watt = Some(FW.into());
    control.freq_droop = Some((150, 150, 50, 40, 100));
    let server = ScriptedServer::start(Scenario {
        lfdi,
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            default_set_es: set_es.into(),
            curves: vec![freq_watt_curve_xml(FW, "FWC", &[(5025, 100), (5200, 0)])],
            controls: vec![control],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let (mut run, url) = start_csipd(&dir, &server, &peer, (&key, &cert), false);
    // Model 703 as SunSpec takes them: ESVHi/ESVLo in tenths of a percent (V_SF -1),
    // ESHzHi/ESHzLo uint32 in hundredths of a Hz (Hz_SF -2), the times uint32 whole
    // seconds; thresholds first, each point at its own address, nothing else.
    let es_writes = |peer: &Peer| -> Vec<(u64, Vec<u64>)> {
        let w = inverter_writes(peer);
        match w.iter().position(|(_, v)| *v == vec![1080]) {
            Some(at) => w[at..].iter().take(7).cloned().collect(),
            None => Vec::new(),
        }
    };
    wait_until(
        Duration::from_secs(90),
        "the enter-service settings written to 703",
        || es_writes(&peer).len() == 7,
    );
    let got = es_writes(&peer);
    let m = got[0].0 - 3;
    assert_eq!(
        got,
        vec![
            (m + 3, vec![1080]),
            (m + 4, vec![910]),
            (m + 5, vec![0, 5010]),
            (m + 7, vec![0, 4780]),
            (m + 9, vec![0, 120]),
            (m + 11, vec![0, 30]),
            (m + 13, vec![0, 300]),
        ]
    );
    // The status shows them, from the program's default.
    let s = wait_for(&url, Duration::from_secs(30), "setES in status", |s| {
        s.inverter_settings.iter().any(|i| i.mode == "setES")
    });
    let es = s
        .inverter_settings
        .iter()
        .find(|i| i.mode == "setES")
        .unwrap();
    assert_eq!(
        es.value,
        "91.00–108.00 % V, 47.80–50.10 Hz, delay 120.00 s, random delay 30.00 s, ramp 300.00 s"
    );
    // DERSettings reports the values in force, in 2030.5's units.
    let reported = |r: &csip_server::Recorded| {
        r.path == "/edev/1/der/1/derg"
            && [
                ("setESDelay", "12000"),
                ("setESHighFreq", "5010"),
                ("setESHighVolt", "10800"),
                ("setESLowFreq", "4780"),
                ("setESLowVolt", "9100"),
                ("setESRampTms", "30000"),
                ("setESRandomDelay", "3000"),
            ]
            .iter()
            .all(|(e, v)| element_text(&r.body, e).as_deref() == Some(*v))
    };
    assert!(
        server.wait_for(Duration::from_secs(60), |r| r.iter().any(reported)),
        "no DERSettings with the setES* values"
    );
    // Written once: several cycles later (the DERSettings PUT, the status), no second
    // write of any of them.
    wait_for(&url, Duration::from_secs(30), "a few more cycles", |s2| {
        s2.now_unix_s >= s.now_unix_s + 3
    });
    let w = inverter_writes(&peer);
    assert_eq!(
        w.iter()
            .filter(|(a, _)| (m + 3..m + 15).contains(a))
            .count(),
        7,
        "each written once: {w:?}"
    );
    // The freq-watt curve on 134: curve 2 (12 + 58 registers in) ActPt 2, Hz in
    // hundredths (Hz_SF -2), W in % of WRef; ActCrv 2, ModEna 1.
    let fw = vec![2, 5025, 100, 5200, 0];
    wait_until(
        Duration::from_secs(60),
        "the freq-watt curve on 134",
        || inverter_writes(&peer).iter().any(|(_, v)| *v == fw),
    );
    let w = inverter_writes(&peer);
    let at = w.iter().position(|(_, v)| *v == fw).unwrap();
    let m134 = w[at].0 - 70;
    assert_eq!(
        &w[at..at + 3],
        &[
            (m134 + 70, fw.clone()),
            (m134 + 2, vec![2]),
            (m134 + 3, vec![1])
        ],
        "{w:?}"
    );
    // The droop on 127 at 121's 50.00 Hz: 100 % over 0.05 × 50 Hz = 40.00 %/Hz
    // (WGra_SF -2), HzStr = HzStop = 0.150 Hz (HzStrStop_SF -3); then ModEna.
    let droop = vec![4000, 150, 150];
    wait_until(Duration::from_secs(60), "the droop on 127", || {
        inverter_writes(&peer).iter().any(|(_, v)| *v == droop)
    });
    let w = inverter_writes(&peer);
    let at = w.iter().position(|(_, v)| *v == droop).unwrap();
    let m127 = w[at].0 - 2;
    assert_eq!(w[at + 1], (m127 + 6, vec![1]), "{w:?}");
    let s = wait_for(&url, Duration::from_secs(30), "freq-watt in status", |s| {
        s.inverter_settings
            .iter()
            .any(|i| i.mode == "opModFreqWatt")
    });
    let fw_row = s
        .inverter_settings
        .iter()
        .find(|i| i.mode == "opModFreqWatt")
        .unwrap();
    assert_eq!(fw_row.value, "2 points 50.25 Hz → 100 %, 52.00 Hz → 0 %");
    // The droop's row says which nominal frequency the 127 inverter's gradient used.
    wait_for(
        &url,
        Duration::from_secs(30),
        "the droop's nominal in status",
        |s| {
            s.inverter_settings.iter().any(|i| {
                i.mode == "opModFreqDroop"
                    && i.value
                        == "dead band +0.150/-0.150 Hz, droop 0.050/0.040, 1.00 s \
                        (pv on model 127, nominal 50.00 Hz (model 121 ECPNomHz))"
            })
        },
    );
    assert!(
        server.wait_for(Duration::from_secs(60), |r| r.iter().any(|r| r.path
            == "/edev/1/der/1/dercap"
            && element_text(&r.body, "modesSupported")
                .and_then(|m| u32::from_str_radix(&m, 16).ok())
                .is_some_and(|m| m & (1 << 8 | 1 << 9) == 1 << 8 | 1 << 9))),
        "no DERCapability claiming opModFreqDroop and opModFreqWatt"
    );
    run.terminate();
    let invalid = csip_server::invalid_bodies(&server);
    assert!(
        invalid.is_empty(),
        "bodies failing the schema: {invalid:#?}"
    );
}
