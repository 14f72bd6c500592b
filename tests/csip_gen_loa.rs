//! The CSIP-AUS DER procedures of classes DER-G (GEN-xx) and DER-L (LOA-xx) that the
//! engine alone decides, played against the hand-scripted CSIP-AUS server
//! (tests/common/csip_server.rs) in memory on a virtual clock: which limit is in force
//! when, and which DERControlResponses go out. What the DER then does with the limit is
//! the control layer's (tests in src/control); what the harness's operator sees on a
//! real inverter is not simulated here. Response bodies are validated with xmllint
//! against csipaus-core.xsd. No test waits for the wall clock.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Control, ScriptedServer, element_text, mrid_of};
use csipd::schedule::ControlMode;

/// The rating the engine's nameplate states (tests/common/csip_memory.rs): 5 kW, used as
/// the harness's maxExportW / maxImportW.
const MAX_W: i32 = 5000;
const TAGS: [&str; 6] = ["PRECONDITION", "DERC1", "DERC2", "DERC3", "DERC4", "DERC5"];

/// The engine's configuration for these procedures: the 5 kW inverter of
/// tests/common/csip_memory.rs on a site that can also limit its import and load (a
/// DER-L site: a battery or controllable load). A site that cannot is answered 252 for
/// those limits (tests/csip_curves.rs).
fn site_config() -> csipd::csip::EngineConfig {
    let mut config = engine_config();
    config.nameplate.can_limit_import = true;
    config.nameplate.can_limit_load = true;
    config
}

/// (tag, status) of each DERControlResponse, in order.
fn responses(server: &ScriptedServer) -> Vec<(String, u8)> {
    server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
        .iter()
        .filter_map(|r| {
            let subject = element_text(&r.body, "subject")?;
            let tag = TAGS
                .into_iter()
                .find(|t| mrid_of(t) == subject)
                .map(str::to_string)
                .unwrap_or(subject);
            Some((tag, element_text(&r.body, "status")?.parse().ok()?))
        })
        .collect()
}

fn assert_responses_valid(server: &ScriptedServer) {
    for r in server.requests_to("POST", "/edev/1/rsps/site_control/rsp") {
        if let Some(e) = csip_server::schema::schema_problem(&r.body) {
            panic!("{e}\n{}", r.body);
        }
    }
}

/// The value `mode` has in the engine's latest active controls, in watts.
fn active_w(h: &Harness, mode: ControlMode) -> Option<f64> {
    h.outcomes.last().and_then(|(_, o)| o.active.watts(mode))
}

fn set(c: &mut Control, mode: ControlMode, w: i32) {
    match mode {
        ControlMode::ExpLimW => c.exp_lim_w = Some(w),
        ControlMode::ImpLimW => c.imp_lim_w = Some(w),
        ControlMode::GenLimW => c.gen_lim_w = Some(w),
        ControlMode::LoadLimW => c.load_lim_w = Some(w),
        other => panic!("not a limit: {other:?}"),
    }
}

/// The server of these procedures: comms rates of 60 s, one program of primacy 0 whose
/// default sets import 0 and export `default_exp_w`.
fn scenario_60s(default_exp_w: i32, default_imp_w: i32) -> csip_server::Scenario {
    let mut sc = scenario();
    sc.dcap_poll_s = 60;
    sc.edev_list_poll_s = 60;
    sc.fsa_list_poll_s = 60;
    sc.der_list_poll_s = 60;
    sc.derp_list_poll_s = 60;
    sc.mup_post_s = 60;
    sc.mup_list_poll_s = 60;
    sc.fsas[0][0].default_exp_lim_w = Some(default_exp_w);
    sc.fsas[0][0].default_imp_lim_w = Some(default_imp_w);
    sc
}

/// GEN-11, GEN-12, LOA-11, LOA-12: five back-to-back 120 s controls of `mode` at 200 %,
/// 100 %, 40 %, 25 % and 0 % of the rating, created at once; each is answered Received,
/// Started and Completed once, and the limit in force follows each in its window.
fn variable_limit(mode: ControlMode) {
    let mut h = Harness::new(site_config(), scenario_60s(0, 0));
    assert!(h.run_until(30, |h| has(&h.requests(), "GET", "/edev/1/fsa/1/derp")));
    let now = h.now_s();
    let values = [MAX_W * 2, MAX_W, MAX_W * 2 / 5, MAX_W / 4, 0];
    h.server.update(|s| {
        for (i, w) in values.iter().enumerate() {
            let mut c = Control::new(TAGS[i + 1], now + 120 * i as i64, 120);
            c.creation_time = now - 1;
            set(&mut c, mode, *w);
            s.fsas[0][0].controls.push(c);
        }
    });
    for (i, w) in values.iter().enumerate() {
        // Mid-window (the list is read within one 60 s poll of its creation).
        let mid = now + 120 * i as i64 + 90;
        h.run_for((mid - h.now_s()) as u64);
        assert_eq!(
            active_w(&h, mode),
            Some(f64::from(*w)),
            "{} of {}",
            mode.name(),
            TAGS[i + 1]
        );
    }
    h.run_for(120);
    let got = responses(&h.server);
    for tag in &TAGS[1..] {
        let mine: Vec<u8> = got
            .iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            mine,
            [1, 2, 3],
            "{tag}: Received, Started, Completed once each: {got:?}"
        );
    }
    // After the last, the default's export/import applies again (0 W), nothing from the
    // events.
    if matches!(mode, ControlMode::ExpLimW | ControlMode::ImpLimW) {
        assert_eq!(active_w(&h, mode), Some(0.0));
    } else {
        assert_eq!(active_w(&h, mode), None);
    }
    assert_responses_valid(&h.server);
}

#[test]
fn gen_11_variable_export_limit() {
    variable_limit(ControlMode::ExpLimW);
}

#[test]
fn gen_12_variable_generation_limit() {
    variable_limit(ControlMode::GenLimW);
}

#[test]
fn loa_11_variable_import_limit() {
    variable_limit(ControlMode::ImpLimW);
}

#[test]
fn loa_12_variable_load_limit() {
    variable_limit(ControlMode::LoadLimW);
}

/// GEN-09, LOA-09: a running control (export and import at 200 %) is cancelled by the
/// server after 120 s: it is answered Cancelled (6) once, never Completed, and the
/// default's limit (export 30 % for GEN-09, import 30 % for LOA-09) is back in force
/// within one DERControlList poll.
fn cancelled_control(mode: ControlMode) {
    let (exp, imp) = match mode {
        ControlMode::ExpLimW => (MAX_W * 3 / 10, 0),
        _ => (0, MAX_W * 3 / 10),
    };
    let mut h = Harness::new(site_config(), scenario_60s(exp, imp));
    assert!(h.run_until(30, |h| has(&h.requests(), "GET", "/edev/1/fsa/1/derp")));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("PRECONDITION", now, 300);
        c.exp_lim_w = Some(MAX_W * 2);
        c.imp_lim_w = Some(MAX_W * 2);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    h.run_for(120);
    // cancel-active-der-controls: the server marks it cancelled (EventStatus 2).
    h.server.update(|s| s.fsas[0][0].controls[0].status = 2);
    let cancelled_at = h.now_s();
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(exp.max(imp)))));
    assert!(h.now_s() - cancelled_at <= 61, "within one 60 s poll");
    h.run_for(300);
    let got: Vec<u8> = responses(&h.server)
        .into_iter()
        .filter(|(t, _)| t == "PRECONDITION")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        got,
        [1, 2, 6],
        "Received, Started, Cancelled; never Completed"
    );
    assert_responses_valid(&h.server);
}

#[test]
fn gen_09_response_to_a_cancelled_export_control() {
    cancelled_control(ControlMode::ExpLimW);
}

#[test]
fn loa_09_response_to_a_cancelled_import_control() {
    cancelled_control(ControlMode::ImpLimW);
}

/// GEN-03, LOA-03 (export, import), GEN-04, LOA-04 (generation, load): a default
/// control that changes while an event runs. The default is
/// changed to 30 % when the client reads it, the running 200 % event is cancelled; the
/// new default applies (with the default's setGradW as the ramp); a new 200 % event for
/// 600 s takes over, and when it ends the default is back.
fn default_control(mode: ControlMode) {
    let mut sc = scenario_60s(0, 0);
    sc.fsas[0][0].set_grad_w = Some(167);
    let mut h = Harness::new(site_config(), sc);
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 900);
        set(&mut c, mode, MAX_W * 2);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    let thirty = MAX_W * 3 / 10;
    h.server.update(|s| {
        let p = &mut s.fsas[0][0];
        match mode {
            ControlMode::ExpLimW => p.default_exp_lim_w = Some(thirty),
            ControlMode::ImpLimW => p.default_imp_lim_w = Some(thirty),
            ControlMode::GenLimW => p.default_gen_lim_w = Some(thirty),
            _ => p.default_load_lim_w = Some(thirty),
        }
        p.controls[0].status = 2;
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(thirty))));
    let (_, outcome) = h.outcomes.last().expect("outcome");
    assert_eq!(
        outcome.ramp,
        csipd::schedule::Ramp::GradientHundredthsPctPerS(167),
        "the default's setGradW"
    );
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC2", now, 600);
        set(&mut c, mode, MAX_W * 2);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    assert!(h.run_until(700, |h| active_w(h, mode) == Some(f64::from(thirty))));
    assert!(h.now_s() >= now + 600, "not before the event ended");
    let got = responses(&h.server);
    let of = |tag: &str| -> Vec<u8> {
        got.iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(of("DERC1"), [1, 2, 6]);
    assert_eq!(of("DERC2"), [1, 2, 3]);
    assert_responses_valid(&h.server);
}

#[test]
fn gen_03_default_control_export_limit() {
    default_control(ControlMode::ExpLimW);
}

#[test]
fn loa_03_default_control_import_limit() {
    default_control(ControlMode::ImpLimW);
}

/// The start of each poll of `path` (the first page: `s=0` or no paging), virtual ms.
fn poll_starts(h: &Harness, path: &str) -> Vec<u64> {
    h.server
        .requests_to("GET", path)
        .iter()
        .filter(|r| {
            !r.query
                .split('&')
                .any(|p| p.starts_with("s=") && p != "s=0")
        })
        .map(|r| r.at_ms)
        .collect()
}

/// GEN-01, GEN-02, LOA-01, LOA-02: an active export / generation / import / load limit
/// of 200 % then 0, with the harness's
/// all-polls-at-correct-time check: DeviceCapability, EndDeviceList, FSA list, DERList,
/// DERProgramList, DefaultDERControl and MirrorUsagePointList each read every 60 s.
fn active_limit(mode: ControlMode) {
    let mut sc = scenario_60s(MAX_W, 0);
    sc.fsas[0][0].set_grad_w = Some(600);
    let mut h = Harness::new(site_config(), sc);
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 300);
        set(&mut c, mode, MAX_W * 2);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    h.run_for(60);
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC2", now, 300);
        c.creation_time = now;
        set(&mut c, mode, 0);
        s.fsas[0][0].controls.push(c);
    });
    assert!(
        h.run_until(61, |h| active_w(h, mode) == Some(0.0)),
        "0 W within one poll"
    );
    h.run_for(600);
    for path in [
        "/dcap",
        "/edev",
        "/edev/1/fsa",
        "/edev/1/der",
        "/edev/1/fsa/1/derp",
        "/edev/1/derp/1/dderc",
        "/mup",
    ] {
        let starts = poll_starts(&h, path);
        // After discovery (the first minute), every gap is the 60 s pollRate.
        let steady: Vec<u64> = starts
            .windows(2)
            .filter(|w| w[0] >= 60_000)
            .map(|w| w[1] - w[0])
            .collect();
        assert!(steady.len() >= 10, "{path}: {starts:?}");
        for gap in &steady {
            assert!(
                (58_000..=62_000).contains(gap),
                "{path} polled {gap} ms apart: {starts:?}"
            );
        }
    }
    let got = responses(&h.server);
    let of = |tag: &str| -> Vec<u8> {
        got.iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, s)| *s)
            .collect()
    };
    // DERC2 supersedes DERC1 (same mode, newer, overlapping): 7 for DERC1.
    assert_eq!(of("DERC1"), [1, 2, 7]);
    assert_eq!(of("DERC2"), [1, 2, 3]);
    assert_responses_valid(&h.server);
}

#[test]
fn gen_02_active_control_generation_limit() {
    active_limit(ControlMode::GenLimW);
}

#[test]
fn loa_02_active_control_load_limit() {
    active_limit(ControlMode::LoadLimW);
}

#[test]
fn gen_04_default_control_generation_limit() {
    default_control(ControlMode::GenLimW);
}

#[test]
fn loa_04_default_control_load_limit() {
    default_control(ControlMode::LoadLimW);
}

/// GEN-10, LOA-10 (primacy validation): FSA 1 holds five programs of primacy 1, FSA 2
/// ten of primacy 2 (lists read in pages). A 200 % control in program 6 (FSA 2) starts;
/// a control in program 1 (FSA 1, primacy 1) overlapping it supersedes it (7) and runs
/// to completion; then program 1's default (30 %, the highest-precedence default) is in
/// force; a later control in program 6 starts and completes. GEN-10 with export
/// limits, LOA-10 with import limits.
fn primacy_validation(mode: ControlMode) {
    use csip_server::Program;
    let mut sc = scenario_60s(0, 0);
    let thirty = MAX_W * 3 / 10;
    let program = |primacy: u8| Program {
        primacy,
        set_grad_w: Some(167),
        ..Program::default()
    };
    sc.fsas = vec![
        (0..5).map(|_| program(1)).collect(),
        (0..10).map(|_| program(2)).collect(),
    ];
    match mode {
        ControlMode::ExpLimW => sc.fsas[0][0].default_exp_lim_w = Some(thirty),
        _ => sc.fsas[0][0].default_imp_lim_w = Some(thirty),
    }
    let mut h = Harness::new(site_config(), sc);
    assert!(h.run_until(60, |h| has(&h.requests(), "GET", "/edev/1/derp/15/derc")));
    assert_eq!(
        active_w(&h, mode),
        Some(f64::from(thirty)),
        "program 1's default"
    );
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 600);
        set(&mut c, mode, MAX_W * 2);
        s.fsas[1][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    assert!(has(&h.requests(), "GET", "/edev/1/derp/6/derc"));
    h.run_for(60);
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC2", now, 840);
        c.creation_time = now;
        set(&mut c, mode, 0);
        s.fsas[0][0].controls.push(c);
    });
    assert!(
        h.run_until(70, |h| active_w(h, mode) == Some(0.0)),
        "DERC2 (primacy 1) wins"
    );
    // DERC1 ends before DERC2; DERC2 runs its full 840 s.
    assert!(h.run_until(900, |h| active_w(h, mode) == Some(f64::from(thirty))));
    assert!(h.now_s() >= now + 840, "not before DERC2 ended");
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC3", now, 300);
        c.creation_time = now;
        set(&mut c, mode, MAX_W * 2);
        s.fsas[1][0].controls.push(c);
    });
    assert!(h.run_until(70, |h| active_w(h, mode) == Some(f64::from(MAX_W * 2))));
    assert!(h.run_until(400, |h| active_w(h, mode) == Some(f64::from(thirty))));
    let got = responses(&h.server);
    let of = |tag: &str| -> Vec<u8> {
        got.iter()
            .filter(|(t, _)| t == tag)
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(
        of("DERC1"),
        [1, 2, 7],
        "superseded by the primacy 1 control"
    );
    assert_eq!(of("DERC2"), [1, 2, 3]);
    assert_eq!(of("DERC3"), [1, 2, 3]);
    assert_responses_valid(&h.server);
}

#[test]
fn gen_10_primacy_validation_for_generators() {
    primacy_validation(ControlMode::ExpLimW);
}

#[test]
fn loa_10_primacy_validation_for_loads() {
    primacy_validation(ControlMode::ImpLimW);
}

#[test]
fn gen_01_active_control_export_limit() {
    active_limit(ControlMode::ExpLimW);
}

#[test]
fn loa_01_active_control_import_limit() {
    active_limit(ControlMode::ImpLimW);
}
