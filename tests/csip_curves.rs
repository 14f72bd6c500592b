//! Curves, power factor and var (issue #20) through the engine, against the
//! hand-scripted CSIP-AUS server (tests/common/csip_server.rs; no installable server
//! serves DERCurves with csipaus controls) in memory on a virtual clock: a DERControl
//! with opModVoltVar and a DERCurveLink comes out of the engine as the resolved curve,
//! a mode no inverter offers is answered 252 (cannot be applied), a link that leads
//! nowhere too, a site with no DER answers 252 to a limit, and DERCapability claims
//! only what the inverters offer. Every PUT/POST body is validated with xmllint against
//! csipaus-core.xsd.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{
    Control, ScriptedServer, element_text, freq_watt_curve_xml, mrid_of, volt_var_curve_xml,
    watt_pf_curve_xml, watt_var_curve_xml,
};
use csipd::schedule::{ControlMode, ModeValue, Outcome};

const CURVE: &str = "/edev/1/derp/1/dc/1";

fn assert_all_bodies_valid(server: &ScriptedServer) {
    let invalid = csip_server::invalid_bodies(server);
    assert!(
        invalid.is_empty(),
        "bodies failing csipaus-core.xsd: {invalid:#?}"
    );
}

/// A harness whose inverters offer the modes `inverter_modes` (`None`: not read yet).
fn harness(inverter_modes: Option<u32>) -> Harness {
    let mut config = engine_config();
    config.nameplate.inverter_modes = inverter_modes;
    Harness::new(config, scenario())
}

/// The DERControlResponses POSTed for `tag`, as their status codes in order.
fn statuses(server: &ScriptedServer, tag: &str) -> Vec<u8> {
    server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
        .iter()
        .filter(|r| element_text(&r.body, "subject").as_deref() == Some(mrid_of(tag).as_str()))
        .filter_map(|r| element_text(&r.body, "status")?.parse().ok())
        .collect()
}

fn last_outcome(h: &Harness) -> &Outcome {
    &h.outcomes.last().expect("an outcome").1
}

fn modes_supported(h: &Harness) -> u32 {
    let caps = h.server.requests_to("PUT", "/edev/1/der/1/dercap");
    let cap = &caps.last().expect("DERCapability PUT").body;
    let hex = element_text(cap, "modesSupported").expect("modesSupported");
    u32::from_str_radix(&hex, 16).expect("hex")
}

#[test]
fn a_volt_var_control_comes_out_as_the_resolved_curve() {
    let offered = ControlMode::VoltVar.bit()
        | ControlMode::FixedPFInjectW.bit()
        | ControlMode::FixedVar.bit();
    let mut h = harness(Some(offered));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(volt_var_curve_xml(CURVE, "VV1"));
        let mut c = Control::new("VV", now + 5, 60);
        c.volt_var = Some(CURVE.into());
        c.fixed_pf_inject = Some((95, false));
        p.controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "VV").contains(&2)));
    assert_eq!(statuses(&h.server, "VV"), vec![1, 2], "Received, Started");
    let out = last_outcome(&h);
    let active = out
        .active
        .get(ControlMode::VoltVar)
        .expect("volt-var active");
    let ModeValue::Curve(curve) = &active.value else {
        panic!("volt-var holds {:?}", active.value)
    };
    // x in tenths of % VRef, y in % of setMaxVar (SunSpec DeptRef 2 = %VArMax).
    assert_eq!(curve.dept_ref, 2);
    let points: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
    for (got, want) in points
        .iter()
        .zip([(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)])
    {
        assert!(
            (got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9,
            "{points:?}"
        );
    }
    let pf = out
        .active
        .get(ControlMode::FixedPFInjectW)
        .expect("fixed PF active");
    let ModeValue::PowerFactor(pf) = pf.value else {
        panic!("{:?}", pf.value)
    };
    assert!((csipd::schedule::power_factor(pf) - 0.95).abs() < 1e-9);
    assert!(!pf.excitation);
    // The default control's export limit runs beside them.
    assert_eq!(out.active.watts(ControlMode::ExpLimW), Some(0.0));
    // DERCapability claims volt-var (23), fixed PF injecting (5) and fixed var (6), not
    // volt-watt (24) or fixed PF absorbing (4).
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    let modes = modes_supported(&h);
    assert_eq!(
        modes & (1 << 23 | 1 << 5 | 1 << 6),
        1 << 23 | 1 << 5 | 1 << 6,
        "{modes:08X}"
    );
    assert_eq!(modes & (1 << 24 | 1 << 4), 0, "{modes:08X}");
    // The control ends: the curve is no longer in force (nothing else sets it).
    h.run_for(70);
    assert!(last_outcome(&h).active.get(ControlMode::VoltVar).is_none());
    assert_eq!(statuses(&h.server, "VV"), vec![1, 2, 3], "then Completed");
    assert_all_bodies_valid(&h.server);
}

/// A curve no inverter has the SunSpec model for is answered 252 when it is all the
/// control sets; beside a limit it is left out and the limit carried out. So is an
/// import limit on a site that cannot limit its import.
#[test]
fn a_mode_no_inverter_offers_is_answered_252() {
    let mut h = harness(Some(0));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(volt_var_curve_xml(CURVE, "VV1"));
        let mut only = Control::new("ONLY", now + 5, 600);
        only.volt_var = Some(CURVE.into());
        let mut both = Control::new("BOTH", now + 5, 600);
        both.volt_var = Some(CURVE.into());
        both.exp_lim_w = Some(1500);
        // An import limit on this PV-only site (no battery, no controllable load).
        let mut import = Control::new("IMPORT", now + 5, 600);
        import.imp_lim_w = Some(1000);
        p.controls.push(only);
        p.controls.push(both);
        p.controls.push(import);
    });
    assert!(h.run_until(60, |h| {
        statuses(&h.server, "ONLY").contains(&252) && statuses(&h.server, "BOTH").contains(&2)
    }));
    assert_eq!(statuses(&h.server, "ONLY"), vec![252]);
    assert_eq!(statuses(&h.server, "IMPORT"), vec![252]);
    assert_eq!(statuses(&h.server, "BOTH"), vec![1, 2]);
    let out = last_outcome(&h);
    assert_eq!(out.active.watts(ControlMode::ExpLimW), Some(1500.0));
    assert!(out.active.get(ControlMode::VoltVar).is_none());
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(
        modes_supported(&h) & (1 << 23 | 1 << 24 | 1 << 5 | 1 << 6),
        0
    );
    assert_all_bodies_valid(&h.server);
}

/// A DERCurveLink to a curve the program's list does not hold: not applied, 252.
#[test]
fn a_curve_link_that_leads_nowhere_is_answered_252() {
    let mut h = harness(Some(ControlMode::VoltVar.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(volt_var_curve_xml(CURVE, "VV1"));
        let mut c = Control::new("NOWHERE", now + 5, 600);
        c.volt_var = Some("/edev/1/derp/1/dc/9".into());
        p.controls.push(c);
    });
    assert!(h.run_until(60, |h| !statuses(&h.server, "NOWHERE").is_empty()));
    h.run_for(10);
    assert_eq!(statuses(&h.server, "NOWHERE"), vec![252]);
    assert!(last_outcome(&h).active.get(ControlMode::VoltVar).is_none());
    assert_all_bodies_valid(&h.server);
}

/// A site with no DER behind the gateway (no inverter, no battery) carries out no
/// control: a limit is answered 252, not Started, and nothing is claimed.
#[test]
fn a_site_without_der_answers_252_to_a_limit() {
    let mut config = engine_config();
    let np = &mut config.nameplate;
    np.can_limit_export = false;
    np.can_limit_generation = false;
    np.can_limit_import = false;
    np.can_limit_load = false;
    np.inverter_modes = Some(0);
    let mut h = Harness::new(config, scenario());
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("LIMIT", now + 5, 60);
        c.exp_lim_w = Some(1500);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(60, |h| !statuses(&h.server, "LIMIT").is_empty()));
    h.run_for(70);
    assert_eq!(statuses(&h.server, "LIMIT"), vec![252]);
    assert_eq!(last_outcome(&h).active.watts(ControlMode::ExpLimW), None);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h), 0);
    assert_all_bodies_valid(&h.server);
}

/// opModTargetVar (a reactive power in var) is scheduled like the other settings where
/// the inverters offer it (704), claimed as DERControlType bit 21, and answered 252
/// where they do not (a 123-only site: no setting in var).
#[test]
fn a_target_var_is_carried_only_where_an_inverter_offers_it() {
    let mut h = harness(Some(ControlMode::TargetVar.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("TV", now + 5, 600);
        c.target_var = Some((-150, 1));
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "TV").contains(&2)));
    assert_eq!(statuses(&h.server, "TV"), vec![1, 2], "Received, Started");
    let active = last_outcome(&h)
        .active
        .get(ControlMode::TargetVar)
        .expect("target var active")
        .clone();
    let ModeValue::ReactivePower(q) = active.value else {
        panic!("{:?}", active.value)
    };
    assert_eq!(q.vars(), -1500.0);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 21 | 1 << 6), 1 << 21);
    assert_all_bodies_valid(&h.server);

    let mut h = harness(Some(ControlMode::FixedVar.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("TV", now + 5, 600);
        c.target_var = Some((500, 0));
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "TV").contains(&252)));
    assert_eq!(statuses(&h.server, "TV"), vec![252]);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 21 | 1 << 6), 1 << 6);
    assert_all_bodies_valid(&h.server);
}

/// opModWattVar links a curveType 14 DERCurve: resolved (x in % of setMaxW, signed),
/// scheduled where an inverter offers 712, claimed as bit 26; a site without 712
/// answers 252.
#[test]
fn a_watt_var_curve_is_carried_only_where_an_inverter_offers_it() {
    const WV: &str = "/edev/1/derp/1/dc/2";
    let mut h = harness(Some(ControlMode::WattVar.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(watt_var_curve_xml(WV, "WV1"));
        let mut c = Control::new("WV", now + 5, 600);
        c.watt_var = Some(WV.into());
        p.controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "WV").contains(&2)));
    assert_eq!(statuses(&h.server, "WV"), vec![1, 2], "Received, Started");
    let active = last_outcome(&h)
        .active
        .get(ControlMode::WattVar)
        .expect("watt-var active")
        .clone();
    let ModeValue::Curve(curve) = active.value else {
        panic!("{:?}", active.value)
    };
    assert_eq!(curve.mode, ControlMode::WattVar);
    let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
    assert_eq!(
        pts,
        vec![(-100.0, 30.0), (0.0, 0.0), (50.0, 0.0), (100.0, -44.0)]
    );
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 26 | 1 << 23), 1 << 26);
    assert_all_bodies_valid(&h.server);

    let mut h = harness(Some(ControlMode::VoltVar.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(watt_var_curve_xml(WV, "WV1"));
        let mut c = Control::new("WV", now + 5, 600);
        c.watt_var = Some(WV.into());
        p.controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "WV").contains(&252)));
    assert_eq!(statuses(&h.server, "WV"), vec![252]);
    assert_all_bodies_valid(&h.server);
}

/// opModWattPF links a curveType 13 DERCurve: the power factor signed by each point's
/// excitation, scheduled where an inverter offers 131, claimed as bit 25.
#[test]
fn a_watt_pf_curve_is_resolved_with_its_excitation() {
    const WPF: &str = "/edev/1/derp/1/dc/3";
    let mut h = harness(Some(ControlMode::WattPF.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        p.curves.push(watt_pf_curve_xml(WPF, "WPF1"));
        let mut c = Control::new("WPF", now + 5, 600);
        c.watt_pf = Some(WPF.into());
        p.controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "WPF").contains(&2)));
    assert_eq!(statuses(&h.server, "WPF"), vec![1, 2]);
    let active = last_outcome(&h)
        .active
        .get(ControlMode::WattPF)
        .expect("watt-PF active")
        .clone();
    let ModeValue::Curve(curve) = active.value else {
        panic!("{:?}", active.value)
    };
    let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
    assert_eq!(pts, vec![(0.0, 100.0), (50.0, 100.0), (100.0, -90.0)]);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 25 | 1 << 26), 1 << 25);
    assert_all_bodies_valid(&h.server);
}

/// opModFreqDroop is scheduled where an inverter offers 711 (claimed as bit 8); a
/// droop of 0 is rejected 253; a site without 711 answers 252.
#[test]
fn a_frequency_droop_is_carried_only_where_an_inverter_offers_it() {
    let mut h = harness(Some(ControlMode::FreqDroop.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("FD", now + 5, 600);
        c.freq_droop = Some((150, 150, 50, 40, 100));
        let mut zero = Control::new("FD0", now + 5, 600);
        zero.freq_droop = Some((150, 150, 0, 40, 100));
        s.fsas[0][0].controls.push(c);
        s.fsas[0][0].controls.push(zero);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "FD").contains(&2)));
    assert_eq!(statuses(&h.server, "FD"), vec![1, 2]);
    assert_eq!(statuses(&h.server, "FD0"), vec![253]);
    let active = last_outcome(&h)
        .active
        .get(ControlMode::FreqDroop)
        .expect("droop active")
        .clone();
    let ModeValue::FreqDroop(d) = active.value else {
        panic!("{:?}", active.value)
    };
    assert_eq!((d.db_of, d.k_uf, d.open_loop_tms), (150, 40, 100));
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 8), 1 << 8);
    assert_all_bodies_valid(&h.server);

    let mut h = harness(Some(ControlMode::WattPF.bit()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("FD", now + 5, 600);
        c.freq_droop = Some((150, 150, 50, 40, 100));
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(60, |h| statuses(&h.server, "FD").contains(&252)));
    assert_eq!(statuses(&h.server, "FD"), vec![252]);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 8), 0);
}

/// opModFreqWatt links a curveType 0 DERCurve: x in Hz, y in % of setMaxW; scheduled
/// where every inverter offers 134, claimed as bit 9; a curve whose frequencies fall
/// back is rejected 253; a site without 134 answers 252 (and claims no bit 9).
#[test]
fn a_freq_watt_curve_is_carried_only_where_an_inverter_offers_134() {
    const FW: &str = "/edev/1/derp/1/dc/4";
    const BAD: &str = "/edev/1/derp/1/dc/5";
    let setup = |h: &mut Harness| {
        let now = h.now_s();
        h.server.update(|s| {
            let p = &mut s.fsas[0][0];
            p.curves
                .push(freq_watt_curve_xml(FW, "FW1", &[(5025, 100), (5200, 0)]));
            p.curves
                .push(freq_watt_curve_xml(BAD, "FW2", &[(5200, 0), (5025, 100)]));
            let mut c = Control::new("FW", now + 5, 600);
            c.freq_watt = Some(FW.into());
            let mut bad = Control::new("FWBAD", now + 5, 600);
            bad.freq_watt = Some(BAD.into());
            p.controls.push(c);
            p.controls.push(bad);
        });
    };
    let mut h = harness(Some(ControlMode::FreqWatt.bit()));
    setup(&mut h);
    assert!(h.run_until(60, |h| statuses(&h.server, "FW").contains(&2)));
    assert_eq!(statuses(&h.server, "FW"), vec![1, 2]);
    assert_eq!(statuses(&h.server, "FWBAD"), vec![253]);
    let active = last_outcome(&h)
        .active
        .get(ControlMode::FreqWatt)
        .expect("freq-watt active")
        .clone();
    let ModeValue::Curve(curve) = active.value else {
        panic!("{:?}", active.value)
    };
    assert_eq!((curve.mode, curve.dept_ref), (ControlMode::FreqWatt, 1));
    let pts: Vec<(f64, f64)> = curve.points.iter().map(|p| (p.v_pct, p.y_pct)).collect();
    assert!(
        (pts[0].0 - 50.25).abs() < 1e-9 && (pts[1].0 - 52.0).abs() < 1e-9,
        "{pts:?}"
    );
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 9 | 1 << 8), 1 << 9);
    assert_all_bodies_valid(&h.server);

    let mut h = harness(Some(ControlMode::VoltVar.bit()));
    setup(&mut h);
    assert!(h.run_until(60, |h| statuses(&h.server, "FW").contains(&252)));
    assert_eq!(statuses(&h.server, "FW"), vec![252]);
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/dercap")));
    assert_eq!(modes_supported(&h) & (1 << 9), 0);
    assert_all_bodies_valid(&h.server);
}
