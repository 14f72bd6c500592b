//! `csipd run` carrying out CSIP-AUS v1.3 storage end to end (issue 22, STO-02/03/06):
//! the hand-scripted CSIP-AUS server (tests/common/csip_server.rs, plain HTTP lab mode;
//! no installable CSIP-AUS v1.3 server exists) serves STO-03's default control and a
//! control with `opModStorageTargetW` and `opModExpLimW`, then one whose export limit
//! is tighter than the target (STO-06's second control); a pymodbus SunSpec peer
//! (tests/peers/sunspec_sim.py, register maps from pysunspec2) is the site meter and a
//! battery inverter with model 124.
//!
//! Checked: the responses (received, started), the model 124 writes (OutWRte/InWRte
//! window and StorCtl_Mod) for the target and for the target held back by the export
//! limit, the battery in DERCapability/DERSettings/DERStatus, the storage usage point
//! with stored energy; every body csipd sent validates against the v1.3 storage
//! schema. Waits are for conditions with generous deadlines, never fixed sleeps.

// runtime_common and devices_support each bring tests/support/wait.rs (the pymodbus
// peer and `csipd run` helpers are both needed here).
#![allow(clippy::duplicate_mod)]

#[path = "common/csip_server.rs"]
mod csip_server;
#[path = "devices_support/mod.rs"]
mod devices_support;
mod runtime_common;

use csip_server::{Control, Program, Scenario, ScriptedServer, element_text, mrid_of, now_s};
use devices_support::{Peer, start_peer};
use runtime_common::*;
use serde_json::json;
use std::time::Duration;

/// Site meter (unit 1): importing 500 W (the house load; no sun), battery inverter
/// (unit 2): 5 kW, model 124 with WChaMax 5 kW, 50 % charged, 10 % reserve, idle.
fn site() -> serde_json::Value {
    json!({"devices": [
        {"unit": 1, "base": 40000, "models": [
            {"id": 1, "values": {"Mn": "Meters R Us"}},
            {"id": 203, "values": {
                "A": 200, "AphA": 200, "A_SF": -2,
                "PhV": 2400, "PhVphA": 2400, "V_SF": -1, "Hz": 5000, "Hz_SF": -2,
                "W": 500, "WphA": 500, "W_SF": 0, "VAR": 0, "VARphA": 0, "VAR_SF": 0,
                "TotWhExp": 0, "TotWhImp": 1500, "TotWh_SF": 1}}
        ]},
        {"unit": 2, "base": 40000, "models": [
            {"id": 1, "values": {"Mn": "Battery Co", "Md": "BAT-5"}},
            {"id": 103, "values": {"W": 0, "W_SF": 0, "PhVphA": 2400, "V_SF": -1,
                                   "Hz": 5000, "Hz_SF": -2, "St": 4}},
            {"id": 120, "values": {"DERTyp": 82, "WRtg": 5000, "WRtg_SF": 0,
                                   "VARtg": 5000, "VARtg_SF": 0, "PFRtgQ1": 80,
                                   "PFRtgQ4": -85, "PFRtg_SF": -2}},
            {"id": 121, "values": {"WMax": 5000, "WMax_SF": 0}},
            {"id": 123, "values": {"Conn": 1, "WMaxLimPct": 100, "WMaxLimPct_SF": 0,
                                   "WMaxLim_Ena": 0}},
            {"id": 124, "values": {"WChaMax": 5000, "WChaMax_SF": 0, "WChaGra": 100,
                                   "WDisChaGra": 100, "WChaDisChaGra_SF": 0, "StorCtl_Mod": 0,
                                   "MinRsvPct": 100, "MinRsvPct_SF": -1,
                                   "ChaState": 500, "ChaState_SF": -1, "OutWRte": 10000,
                                   "InWRte": 10000, "InOutWRte_WinTms": 0,
                                   "InOutWRte_RvrtTms": 0, "InOutWRte_RmpTms": 0,
                                   "InOutWRte_SF": -2}}
        ]}
    ]})
}

/// The battery's model 124 writes as (OutWRte, InWRte, StorCtl_Mod) signed raw values:
/// each target is written as RvrtTms, OutWRte, InWRte, StorCtl_Mod in that order.
fn target_writes(peer: &Peer) -> Vec<(i16, i16, u16)> {
    let writes: Vec<(u64, u64, Vec<u64>)> = peer
        .writes()
        .iter()
        .filter_map(|w| {
            Some((
                w["unit"].as_u64()?,
                w["address"].as_u64()?,
                w["values"]
                    .as_array()?
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .collect(),
            ))
        })
        .filter(|(unit, ..)| *unit == 2)
        .collect();
    writes
        .windows(3)
        .filter(|w| w[1].1 == w[0].1 + 1 && w[2].1 + 7 == w[0].1)
        .map(|w| {
            (
                w[0].2[0] as u16 as i16,
                w[1].2[0] as u16 as i16,
                w[2].2[0] as u16,
            )
        })
        .collect()
}

#[test]
fn storage_target_reaches_the_battery_within_the_export_limit() {
    let dir = temp_dir("runtime-storage-target");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-storage-test");
    let peer = start_peer("storage-target", &site(), None);

    // STO-03: default opModExpLimW 0, opModImpLimW setMaxW, setGradW 27; a control from
    // now: opModStorageTargetW setMaxDischargeRateW with opModExpLimW twice that. Then
    // STO-06's second: the same target with an export limit of half of it.
    let t0 = now_s();
    let mut first = Control::new("STO-A", t0 - 5, 60);
    first.storage_target_w = Some(5000);
    first.exp_lim_w = Some(10_000);
    let mut second = Control::new("STO-B", t0 + 55, 600);
    second.storage_target_w = Some(5000);
    second.exp_lim_w = Some(0);
    let server = ScriptedServer::start(Scenario {
        lfdi: lfdi.clone(),
        sfdi,
        fsas: vec![vec![Program {
            primacy: 0,
            default_exp_lim_w: Some(0),
            default_imp_lim_w: Some(5000),
            set_grad_w: Some(27),
            controls: vec![first, second],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
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
\toption csipaus_namespace 'v1.3'
\toption pen '12345'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{meter}{battery}\toption capacity_wh '10000'
",
        d = dir.display(),
        url = server.base_url,
        cert = cert.display(),
        key = key.display(),
        meter = uci_tcp_device("meter", "meter", &peer.port.to_string(), 1),
        battery = uci_tcp_device("battery", "storage", &peer.port.to_string(), 2),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, _url) = start_run(&path.display().to_string());

    // Received and started for the first control.
    let responses = |tag: &str| -> Vec<u8> {
        server
            .requests_to("POST", "/edev/1/rsps/site_control/rsp")
            .iter()
            .filter(|r| element_text(&r.body, "subject").as_deref() == Some(&mrid_of(tag)))
            .filter_map(|r| element_text(&r.body, "status")?.parse().ok())
            .collect()
    };
    assert!(
        server.wait_for(Duration::from_secs(60), |_| responses("STO-A").contains(&2)),
        "STO-A responses: {:?}",
        responses("STO-A")
    );
    // The battery is told to discharge 5 kW (100.00 % of WChaMax): the rate window
    // OutWRte 100 %, InWRte -100 %, both StorCtl_Mod bits. Export room is ample (10 kW).
    wait_until(
        Duration::from_secs(60),
        "the battery told to discharge 5 kW",
        || target_writes(&peer).contains(&(10_000, -10_000, 3)),
    );
    // The second control: export limit 0 W is tighter than the 5 kW target. The
    // battery may only cover the house (500 W less the 50 W margin): 9.00 %.
    wait_until(
        Duration::from_secs(120),
        "the target held back to 450 W by the export limit",
        || target_writes(&peer).contains(&(900, -900, 3)),
    );
    assert_eq!(responses("STO-A"), vec![1, 2, 3]);
    assert!(
        server.wait_for(Duration::from_secs(30), |_| responses("STO-B").contains(&2)),
        "STO-B responses: {:?}",
        responses("STO-B")
    );

    // The battery in the DER reports: ratings from model 124 and the configured
    // capacity, the reserve from MinRsvPct, its state of charge.
    let cap = server.requests_to("PUT", "/edev/1/der/1/dercap");
    let cap = &cap.last().expect("DERCapability PUT").body;
    let value = |xml: &str, tag: &str| {
        element_text(xml, tag)
            .and_then(|e| element_text(&e, "value"))
            .unwrap_or_else(|| panic!("{tag}: {xml}"))
    };
    assert_eq!(value(cap, "rtgMaxChargeRateW"), "5000", "{cap}");
    assert_eq!(value(cap, "rtgMaxDischargeRateW"), "5000");
    assert_eq!(value(cap, "rtgMaxWh"), "10000");
    // STO-03/06's checks: rtgMaxChargeRateW <= rtgMaxVA (model 120 VARtg) and
    // setMaxChargeRateW == setMaxVA.
    assert_eq!(value(cap, "rtgMaxVA"), "5000");
    // The power factor ratings from model 120 (PFRtgQ4 stored negative).
    let pf = |xml: &str, tag: &str| {
        element_text(xml, tag)
            .and_then(|e| element_text(&e, "displacement"))
            .unwrap_or_else(|| panic!("{tag}: {xml}"))
    };
    assert_eq!(pf(cap, "rtgMinPFOverExcited"), "800");
    assert_eq!(pf(cap, "rtgMinPFUnderExcited"), "850");
    assert_eq!(
        element_text(cap, "csipaus:vppModesSupported").as_deref(),
        Some("01")
    );
    let set = server.requests_to("PUT", "/edev/1/der/1/derg");
    let set = &set.last().expect("DERSettings PUT").body;
    assert_eq!(value(set, "csipaus:setMinWh"), "1000", "{set}");
    assert_eq!(value(set, "setMaxChargeRateW"), value(set, "setMaxVA"));
    assert_eq!(
        element_text(set, "csipaus:vppModesEnabled").as_deref(),
        Some("01")
    );
    assert!(
        server.wait_for(Duration::from_secs(30), |r| r.iter().any(|r| r.path
            == "/edev/1/der/1/ders"
            && r.body.contains("<stateOfChargeStatus>")))
    );
    let status = server
        .requests_to("PUT", "/edev/1/der/1/ders")
        .into_iter()
        .rev()
        .find(|r| r.body.contains("<stateOfChargeStatus>"))
        .unwrap();
    assert_eq!(value(&status.body, "stateOfChargeStatus"), "5000");
    // Stored energy: 50 % of 10 kWh in the storage usage point.
    assert!(
        server.wait_for(Duration::from_secs(60), |r| r.iter().any(|r| r.method
            == "POST"
            && r.path.starts_with("/mup/")
            && r.body.contains("<uom>72</uom>")
            && element_text(&r.body, "value").as_deref() == Some("5000"))),
        "no stored-energy reading"
    );
    run.terminate();

    for r in server.requests() {
        if (r.method == "PUT" || r.method == "POST") && !r.body.is_empty() {
            if let Some(problem) = csip_server::schema::storage_schema_problem(&r.body) {
                panic!("{} {}: {problem}\n{}", r.method, r.path, r.body);
            }
        }
    }
}
