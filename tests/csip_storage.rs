//! CSIP-AUS v1.3 storage (issue 22), played as the certification procedures STO-01..06
//! describe them (`cactus-test-definitions` 1.18.2, `client/procedures/STO-0N.yaml`):
//! the storage usage point with stored-energy readings (STO-01/04), the battery's
//! DERCapability and DERSettings (STO-02/05), and `opModStorageTargetW` with
//! `opModExpLimW` in one control (STO-03) and in six consecutive ones (STO-06), with
//! the Responses they want.
//!
//! The harness's runner is not installable as a peer here, so the hand-scripted
//! CSIP-AUS server (tests/common/csip_server.rs) serves the tree with the procedures'
//! preconditions (60 s poll and post rates, a primacy-0 program, their default
//! control), in memory on a virtual clock (tests/common/csip_memory.rs): nothing here
//! waits for the wall clock. The engine writes the v1.3 namespace; every PUT/POST body
//! is validated with xmllint against the v1.3 storage schema
//! (csipaus-core-v1.3-beta_storage.xsd, its namespace swapped to v1.3). What the
//! battery does with a target (SunSpec model 124 over Modbus) is
//! tests/runtime_storage.rs's.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Control, Program, Recorded, Scenario, ScriptedServer, element_text, mrid_of};
use csipd::csip::{EngineConfig, StorageMeasurement, StorageNameplate};
use csipd::schedule::ControlMode;

/// The battery's ratings (a 5 kW / 13.5 kWh home battery beside 5 kW of PV).
const CHARGE_W: i32 = 5000;
const DISCHARGE_W: i32 = 5000;
const CAPACITY_WH: f64 = 13_500.0;
const RESERVE_WH: f64 = 1_350.0;

fn storage_config() -> EngineConfig {
    let mut config = engine_config();
    config.csipaus_v1_3 = true;
    config.nameplate.der_type = 81;
    config.nameplate.rtg_min_pf_over_excited = Some(0.8);
    config.nameplate.rtg_min_pf_under_excited = Some(0.85);
    config.nameplate.can_limit_import = true;
    config.nameplate.can_limit_load = true;
    config.nameplate.storage = Some(StorageNameplate {
        max_charge_rate_w: f64::from(CHARGE_W),
        max_discharge_rate_w: f64::from(DISCHARGE_W),
        max_wh: Some(CAPACITY_WH),
        min_wh: Some(RESERVE_WH),
        can_target: true,
    });
    config
}

/// The battery at 50 % (STO-06's precondition), charging at 1.2 kW.
fn half_full() -> StorageMeasurement {
    StorageMeasurement {
        active_power_w: Some(-1200.0),
        stored_wh: Some(CAPACITY_WH / 2.0),
        soc_pct: Some(50.0),
        connected: true,
        available: true,
        operating: true,
    }
}

/// The procedures' preconditions: every poll and post rate 60 s, one primacy-0
/// program whose default control is `default_exp_w` / `default_imp_w` with setGradW 27.
fn sto_scenario(default_exp_w: i32, default_imp_w: i32) -> Scenario {
    let mut sc = scenario();
    sc.dcap_poll_s = 60;
    sc.time_poll_s = 60;
    sc.edev_list_poll_s = 60;
    sc.fsa_list_poll_s = 60;
    sc.der_list_poll_s = 60;
    sc.derp_list_poll_s = 60;
    sc.mup_list_poll_s = 60;
    sc.mup_post_s = 60;
    sc.fsas = vec![vec![Program {
        primacy: 0,
        default_exp_lim_w: Some(default_exp_w),
        default_imp_lim_w: Some(default_imp_w),
        set_grad_w: Some(27),
        controls: Vec::new(),
        ..Program::default()
    }]];
    sc
}

fn start(sc: Scenario) -> Harness {
    let mut h = Harness::new(storage_config(), sc);
    h.site.storage = Some(half_full());
    h
}

/// Every PUT/POST body validates against the v1.3 storage schema.
fn assert_all_bodies_valid(server: &ScriptedServer) {
    let bodies: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| (r.method == "PUT" || r.method == "POST") && !r.body.is_empty())
        .collect();
    assert!(!bodies.is_empty());
    for r in bodies {
        assert!(
            r.body.contains("https://csipaus.org/ns/v1.3"),
            "{} {}: {}",
            r.method,
            r.path,
            r.body
        );
        if let Some(problem) = csip_server::schema::storage_schema_problem(&r.body) {
            panic!(
                "{} {} fails the v1.3 storage schema:\n{problem}\n{}",
                r.method, r.path, r.body
            );
        }
    }
}

/// The usage point csipd created for the battery: (its href, the POST body).
fn storage_usage_point(h: &Harness) -> Option<(String, String)> {
    let mrid = csipd::sep2::mrid::mirror_usage_point(LFDI, "storage", PEN).ok()?;
    let posts = h.server.requests_to("POST", "/mup");
    let index = posts
        .iter()
        .filter(|r| element_text(&r.body, "mRID").is_some())
        .position(|r| element_text(&r.body, "mRID").as_deref() == Some(mrid.as_str()))?;
    // The server numbers usage points in the order they were created.
    Some((format!("/mup/{}", index + 1), posts[index].body.clone()))
}

/// Stored-energy readings (value Wh, period start, duration) POSTed to `href`.
fn stored_energy_readings(h: &Harness, href: &str) -> Vec<(i64, i64, i64)> {
    h.server
        .requests_to("POST", href)
        .iter()
        .filter(|r| element_text(&r.body, "uom").as_deref() == Some("72"))
        .filter_map(|r| {
            let period = element_text(&r.body, "timePeriod")?;
            Some((
                element_text(&r.body, "value")?.parse().ok()?,
                element_text(&period, "start")?.parse().ok()?,
                element_text(&period, "duration")?.parse().ok()?,
            ))
        })
        .collect()
}

/// (control tag, response status) of every Response POSTed, in order.
fn responses(server: &ScriptedServer, tags: &[&str]) -> Vec<(String, u8)> {
    server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
        .iter()
        .filter_map(|r| {
            let subject = element_text(&r.body, "subject")?;
            let tag = tags
                .iter()
                .find(|t| mrid_of(t) == subject)
                .map(|t| t.to_string())
                .unwrap_or(subject);
            Some((tag, element_text(&r.body, "status")?.parse().ok()?))
        })
        .collect()
}

fn statuses_of(all: &[(String, u8)], tag: &str) -> Vec<u8> {
    all.iter()
        .filter(|(t, _)| t == tag)
        .map(|(_, s)| *s)
        .collect()
}

fn active_w(h: &Harness, mode: ControlMode) -> Option<f64> {
    h.outcomes.last().and_then(|(_, o)| o.active.watts(mode))
}

#[test]
fn sto_01_04_storage_usage_point_and_stored_energy_readings() {
    // Preconditions: default control opModImpLimW 0, opModExpLimW 0, setGradW 27.
    let mut h = start(sto_scenario(0, 0));
    // POST-MUP: the battery's usage point is created...
    assert!(h.run_until(120, |h| storage_usage_point(h).is_some()));
    let (href, created) = storage_usage_point(&h).unwrap();
    let after_post = h.requests().len();
    // ...as a DER submeter (the harness reads device readings), with a stored-energy
    // ReadingType the readings-der-stored-energy check finds: Wh, kind 12 (energy),
    // dataQualifier 0 (instantaneous).
    assert_eq!(
        element_text(&created, "roleFlags").as_deref(),
        Some("0049"),
        "{created}"
    );
    let wh_type = created
        .split("<MirrorMeterReading>")
        .find(|m| m.contains("<uom>72</uom>"))
        .unwrap_or_else(|| panic!("no Wh reading type: {created}"));
    assert_eq!(element_text(wh_type, "kind").as_deref(), Some("12"));
    assert_eq!(element_text(wh_type, "dataQualifier").as_deref(), Some("0"));
    // Its charge/discharge power: W, an average, flow reverse (charging reads negative).
    assert!(
        created
            .split("<MirrorMeterReading>")
            .any(|m| m.contains("<uom>38</uom>")
                && m.contains("<dataQualifier>2</dataQualifier>")
                && m.contains("<flowDirection>19</flowDirection>")),
        "{created}"
    );
    // GET-MUP-2: the list is read again after the POST.
    assert!(h.run_until(120, |h| {
        h.requests()[after_post..]
            .iter()
            .any(|r| r.method == "GET" && r.path == "/mup")
    }));
    // WAIT-READINGS: 300 s at a 60 s post rate gives at least 4 stored-energy readings.
    h.run_for(300);
    let readings = stored_energy_readings(&h, &href);
    assert!(readings.len() >= 4, "stored-energy readings: {readings:?}");
    for (value, start, duration) in &readings {
        assert_eq!(*value, 6750, "half of 13.5 kWh");
        assert_eq!(start % 60, 0, "period start {start} not on a 60 s boundary");
        assert_eq!(*duration, 60);
    }
    // The battery's power goes out too (average of -1200 W).
    let power: Vec<String> = h
        .server
        .requests_to("POST", &href)
        .iter()
        .filter(|r| element_text(&r.body, "uom").as_deref() == Some("38"))
        .filter_map(|r| element_text(&r.body, "value"))
        .collect();
    assert!(
        power.len() >= 4 && power.iter().all(|v| v == "-1200"),
        "{power:?}"
    );
    // The site and DER usage points are still there beside it.
    assert_eq!(h.server.mup_count(), 3);
    assert_all_bodies_valid(&h.server);
}

#[test]
fn without_a_battery_reading_there_is_no_storage_usage_point() {
    let mut h = Harness::new(storage_config(), sto_scenario(0, 0));
    assert!(h.run_until(120, |h| h.server.mup_count() >= 2));
    h.run_for(180);
    assert!(storage_usage_point(&h).is_none());
    assert_eq!(h.server.mup_count(), 2);
}

#[test]
fn sto_02_05_battery_capability_and_settings() {
    let mut h = start(sto_scenario(0, 0));
    // GET-DER, then PUT-DERCAPABILITY and PUT-DERSETTINGS.
    assert!(h.run_until(120, |h| {
        let r = h.requests();
        has(&r, "GET", "/edev/1/der")
            && has(&r, "PUT", "/edev/1/der/1/dercap")
            && has(&r, "PUT", "/edev/1/der/1/derg")
    }));
    let cap = h.server.requests_to("PUT", "/edev/1/der/1/dercap")[0]
        .body
        .clone();
    let set = h.server.requests_to("PUT", "/edev/1/der/1/derg")[0]
        .body
        .clone();
    let watts = |xml: &str, tag: &str| -> f64 {
        let e = element_text(xml, tag).unwrap_or_else(|| panic!("no {tag}: {xml}"));
        let value: f64 = element_text(&e, "value").unwrap().parse().unwrap();
        let multiplier: i32 = element_text(&e, "multiplier").unwrap().parse().unwrap();
        value * 10f64.powi(multiplier)
    };
    // der-capability-contents (STO-02 any value; STO-05 > 0; STO-03/06 <= rtgMaxVA).
    for tag in [
        "rtgMaxVA",
        "rtgMaxVar",
        "rtgMaxVarNeg",
        "rtgMaxW",
        "rtgMinPFOverExcited",
        "rtgMinPFUnderExcited",
    ] {
        assert!(element_text(&cap, tag).is_some(), "{tag}: {cap}");
    }
    let rtg_max_va = watts(&cap, "rtgMaxVA");
    assert_eq!(watts(&cap, "rtgMaxChargeRateW"), f64::from(CHARGE_W));
    assert_eq!(watts(&cap, "rtgMaxDischargeRateW"), f64::from(DISCHARGE_W));
    assert!(watts(&cap, "rtgMaxChargeRateW") <= rtg_max_va);
    assert!(watts(&cap, "rtgMaxDischargeRateW") <= rtg_max_va);
    assert_eq!(watts(&cap, "rtgMaxWh"), CAPACITY_WH);
    assert_eq!(element_text(&cap, "type").as_deref(), Some("81"));
    // doeModesSupported_set "01" and vppModesSupported_set "01".
    let bits = |xml: &str, tag: &str| {
        u8::from_str_radix(
            &element_text(xml, tag).unwrap_or_else(|| panic!("{tag}: {xml}")),
            16,
        )
        .unwrap()
    };
    assert_eq!(bits(&cap, "csipaus:doeModesSupported") & 1, 1);
    assert_eq!(bits(&cap, "csipaus:vppModesSupported") & 1, 1);
    // der-settings-contents: the settings within the ratings, setMaxChargeRateW ==
    // setMaxVA (STO-03/06 with this battery), setMinWh present, vppModesEnabled bit 0.
    for tag in [
        "setMaxVA",
        "setMaxVar",
        "setMaxVarNeg",
        "setMaxW",
        "setMinPFOverExcited",
        "setMinPFUnderExcited",
    ] {
        assert!(element_text(&set, tag).is_some(), "{tag}: {set}");
    }
    // setMinPF* >= rtgMinPF* (STO-05): the settings are the ratings.
    let pf = |xml: &str, tag: &str| {
        element_text(&element_text(xml, tag).unwrap(), "displacement").unwrap()
    };
    assert_eq!(pf(&cap, "rtgMinPFOverExcited"), "800");
    assert_eq!(pf(&set, "setMinPFUnderExcited"), "850");
    assert!(watts(&set, "setMaxVA") <= rtg_max_va);
    assert!(watts(&set, "setMaxW") <= watts(&cap, "rtgMaxW"));
    assert_eq!(watts(&set, "setMaxChargeRateW"), watts(&set, "setMaxVA"));
    assert_eq!(watts(&set, "setMaxDischargeRateW"), watts(&set, "setMaxVA"));
    assert!(watts(&set, "setMaxWh") > 0.0 && watts(&set, "setMaxWh") <= CAPACITY_WH);
    assert_eq!(watts(&set, "csipaus:setMinWh"), RESERVE_WH);
    assert_eq!(bits(&set, "csipaus:doeModesEnabled") & 1, 1);
    assert_eq!(bits(&set, "csipaus:vppModesEnabled") & 1, 1);
    // DERStatus carries the battery's state: 50.00 %, charging, connected/available/on.
    assert!(h.run_until(60, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    let status = &h.server.requests_to("PUT", "/edev/1/der/1/ders")[0].body;
    let status_value = |tag: &str| {
        element_text(
            &element_text(status, tag).unwrap_or_else(|| panic!("{tag}: {status}")),
            "value",
        )
    };
    assert_eq!(status_value("stateOfChargeStatus").as_deref(), Some("5000"));
    assert_eq!(status_value("storageModeStatus").as_deref(), Some("0"));
    assert_eq!(status_value("storConnectStatus").as_deref(), Some("07"));
    // The battery starts discharging: a DERStatus PUT follows (storageModeStatus 1).
    h.site.storage = Some(StorageMeasurement {
        active_power_w: Some(2500.0),
        ..half_full()
    });
    assert!(h.run_until(60, |h| {
        h.server
            .requests_to("PUT", "/edev/1/der/1/ders")
            .iter()
            .any(|r| {
                r.body.contains("<storageModeStatus><dateTime>")
                    && element_text(
                        &element_text(&r.body, "storageModeStatus").unwrap(),
                        "value",
                    )
                    .as_deref()
                        == Some("1")
            })
    }));
    assert_all_bodies_valid(&h.server);
}

#[test]
fn sto_03_storage_target_with_an_export_limit_is_received_started_completed() {
    // Default: opModExpLimW 0, opModImpLimW setMaxW, setGradW 27; a control from now
    // for 480 s: opModStorageTargetW setMaxDischargeRateW, opModExpLimW twice that.
    let mut h = start(sto_scenario(0, 5000));
    assert!(h.run_until(120, |h| has(&h.requests(), "GET", "/edev/1/derp/1/derc")));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("STO3", now, 480);
        c.storage_target_w = Some(DISCHARGE_W);
        c.exp_lim_w = Some(2 * DISCHARGE_W);
        s.fsas[0][0].controls.push(c);
    });
    // POST-RESPONSE-RECEIVED (1), then STARTED (2).
    assert!(h.run_until(180, |h| {
        statuses_of(&responses(&h.server, &["STO3"]), "STO3").contains(&2)
    }));
    assert_eq!(active_w(&h, ControlMode::StorageTargetW), Some(5000.0));
    assert_eq!(active_w(&h, ControlMode::ExpLimW), Some(10_000.0));
    assert_eq!(
        active_w(&h, ControlMode::ImpLimW),
        Some(5000.0),
        "the default's"
    );
    // POST-RESPONSE-COMPLETED (3) at its end; the target goes with it.
    assert!(h.run_until(600, |h| {
        statuses_of(&responses(&h.server, &["STO3"]), "STO3").contains(&3)
    }));
    assert_eq!(
        statuses_of(&responses(&h.server, &["STO3"]), "STO3"),
        vec![1, 2, 3]
    );
    h.run_for(5);
    assert_eq!(active_w(&h, ControlMode::StorageTargetW), None);
    assert_eq!(active_w(&h, ControlMode::ExpLimW), Some(0.0));
    // The precondition check readings-der-stored-energy (minimum 1) holds.
    let (href, _) = storage_usage_point(&h).expect("storage usage point");
    assert!(!stored_energy_readings(&h, &href).is_empty());
    assert_all_bodies_valid(&h.server);
}

#[test]
fn sto_06_six_consecutive_storage_controls() {
    let mut h = start(sto_scenario(0, 5000));
    // GET-DERC-1 (the program list): the six controls are created then; each starts
    // where the previous one ends and lasts 900 s.
    assert!(h.run_until(120, |h| has(&h.requests(), "GET", "/edev/1/fsa/1/derp")));
    let t0 = h.now_s();
    let d = DISCHARGE_W;
    let plan: [(&str, i64, i32, Option<i32>); 6] = [
        ("C1", 300, d, Some(2 * d)),
        ("C2", 1200, d, Some(d / 2)),
        ("C3", 2100, -CHARGE_W, Some(d / 2)),
        ("C4", 3000, 0, Some(0)),
        ("C5", 3900, 3 * d / 10, Some(d)),
        ("C6", 4800, d, None),
    ];
    h.server.update(|s| {
        for (tag, offset, target, exp) in plan {
            let mut c = Control::new(tag, t0 + offset, 900);
            c.creation_time = t0;
            c.storage_target_w = Some(target);
            c.exp_lim_w = exp;
            s.fsas[0][0].controls.push(c);
        }
    });
    // In the middle of each control its target and export limit are in force; the
    // sixth sets no export limit, so the default's 0 W applies beside its target.
    for (tag, offset, target, exp) in plan {
        let mid_s = t0 + offset + 450;
        let wait = u64::try_from(mid_s - h.now_s()).unwrap();
        h.run_for(wait);
        assert_eq!(
            active_w(&h, ControlMode::StorageTargetW),
            Some(f64::from(target)),
            "{tag}"
        );
        assert_eq!(
            active_w(&h, ControlMode::ExpLimW),
            Some(f64::from(exp.unwrap_or(0))),
            "{tag}"
        );
    }
    // WAIT-CONTROL-END-6: after the last one, no target; every control was received,
    // started and completed (none superseded: they only touch end to end).
    let wait = u64::try_from(t0 + 4800 + 900 + 30 - h.now_s()).unwrap();
    h.run_for(wait);
    assert_eq!(active_w(&h, ControlMode::StorageTargetW), None);
    let all = responses(&h.server, &["C1", "C2", "C3", "C4", "C5", "C6"]);
    for (tag, ..) in plan {
        assert_eq!(statuses_of(&all, tag), vec![1, 2, 3], "{tag}: {all:?}");
    }
    assert_all_bodies_valid(&h.server);
}

#[test]
fn storage_target_without_a_battery_is_not_applicable() {
    // No battery csipd commands: a target alone is answered 252 (a control parameter
    // is not applicable); beside an export limit the limit is carried out alone.
    let mut config = storage_config();
    config.nameplate.storage = None;
    config.nameplate.der_type = 4;
    let mut h = Harness::new(config, sto_scenario(0, 5000));
    assert!(h.run_until(120, |h| has(&h.requests(), "GET", "/edev/1/derp/1/derc")));
    let now = h.now_s();
    h.server.update(|s| {
        let mut alone = Control::new("ALONE", now, 300);
        alone.storage_target_w = Some(3000);
        let mut both = Control::new("BOTH", now, 300);
        both.storage_target_w = Some(3000);
        both.exp_lim_w = Some(1500);
        s.fsas[0][0].controls.push(alone);
        s.fsas[0][0].controls.push(both);
    });
    assert!(h.run_until(180, |h| {
        let all = responses(&h.server, &["ALONE", "BOTH"]);
        statuses_of(&all, "ALONE").contains(&252) && statuses_of(&all, "BOTH").contains(&2)
    }));
    assert_eq!(active_w(&h, ControlMode::ExpLimW), Some(1500.0));
    assert_eq!(active_w(&h, ControlMode::StorageTargetW), None);
    let all = responses(&h.server, &["ALONE", "BOTH"]);
    assert_eq!(statuses_of(&all, "ALONE"), vec![252], "{all:?}");
    // Without a battery nothing storage-specific is written.
    let cap = &h.server.requests_to("PUT", "/edev/1/der/1/dercap")[0].body;
    assert!(
        !cap.contains("vppModesSupported") && !cap.contains("rtgMaxWh"),
        "{cap}"
    );
}
