//! `csipd run` on a first start with a utility server that does not answer: the site's
//! export is held at `fallback_export_limit_w` until the utility's own limit arrives
//! (README "Fallback export limit").
//!
//! Peers: a pymodbus SunSpec site (tests/peers/sunspec_sim.py, register maps from
//! pysunspec2) with a meter reading 2000 W of export and a 5 kW inverter producing
//! 2500 W (model 123); the utility URL is first a bound 127.0.0.1 socket that never
//! answers (the kernel accepts the connection, nothing reads it: csipd's GET waits),
//! then the hand-scripted CSIP-AUS server (tests/common/csip_server.rs, plain HTTP lab
//! mode; no installable server serves csipaus limits on cue) starts on that very port,
//! first with an empty DERProgramList (read, no utility export limit: still held), then
//! with a program whose DefaultDERControl sets a 3000 W export limit, which takes over. Waits are for conditions with generous deadlines, never fixed
//! sleeps.
//!
//! A second run meets a real TLS peer that refuses: `openssl s_server` with a
//! certificate from a CA csipd does not trust (the handshake fails every time): the
//! fallback holds, and the status's errors say why the utility is not read.
//!
//! The peer's readings are static (pymodbus does not model the site), so the check on
//! the inverter is the closed loop's arithmetic on them: over the limit the whole
//! excess is cut (`2500 - (2000 - (limit - 50))`), below it the output may rise by
//! `gain_up` 0.7 of the room.

// runtime_common and devices_support each bring tests/support/wait.rs.
#![allow(clippy::duplicate_mod)]

#[path = "common/csip_server.rs"]
mod csip_server;
#[path = "devices_support/mod.rs"]
mod devices_support;
mod runtime_common;
#[path = "common/test_pki.rs"]
mod test_pki;

use csip_server::{Program, Scenario, ScriptedServer};
use csipd::status::{FallbackCause, LimitMode, LimitSource, Snapshot};
use devices_support::start_peer;
use runtime_common::*;
use serde_json::json;
use std::time::Duration;

/// Meter (unit 1) exporting 2000 W; a 5 kW inverter (unit 2) producing 2500 W.
fn site() -> serde_json::Value {
    json!({"devices": [meter_203(1, -2000), pv_inverter_123(2, ("Fallback Co", "FB-5"), 5000, 2500, &[])]})
}

/// The written and confirmed limit of inverter `pv`, W.
fn written_w(s: &Snapshot) -> Option<f64> {
    s.setpoints
        .iter()
        .find(|p| p.device == "pv")
        .and_then(|p| p.limit_w)
}

#[test]
fn a_first_start_holds_the_fallback_until_the_utility_default_arrives() {
    let dir = temp_dir("runtime-fallback");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-fallback-test");
    let peer = start_peer("runtime-fallback", &site(), None);
    // The utility: a socket that is bound and listening but never accepts or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = silent.local_addr().expect("local addr").to_string();
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'
{utility}
config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
\toption failsafe_export_limit_w '0'
\toption fallback_export_limit_w '1000'
{meter}{inverter}",
        d = dir.display(),
        utility = uci_lab_utility(&format!("http://{addr}/dcap"), &cert, &key),
        meter = uci_tcp_device("meter", "meter", &peer.port.to_string(), 1),
        inverter = uci_tcp_device("pv", "inverter", &peer.port.to_string(), 2),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());

    // 1. Nothing from the utility: export held at the fallback, 1000 W. Over it by
    //    1050 W (with the 50 W margin), the inverter is cut from 2500 W to 1450 W.
    let held = 2500.0 - (2000.0 - 950.0);
    let s = wait_for(
        &url,
        Duration::from_secs(60),
        "the fallback held at the inverter",
        |s| {
            export_limit(s) == Some((1000.0, "fallback".into()))
                && written_w(s).is_some_and(|w| (w - held).abs() < 1.0)
        },
    );
    let export = s.limit(LimitMode::Export).expect("export limit");
    assert_eq!(
        export.source,
        LimitSource::Fallback {
            cause: FallbackCause::UtilityNotRead
        }
    );
    assert_eq!(export.end_unix_s, None);
    assert!(export.not_enforceable.is_none(), "{export:?}");
    assert!(
        s.summary
            .contains("Export limited to 1000 W until your network operator's limits are received"),
        "{}",
        s.summary
    );
    assert_ne!(
        s.utility.state,
        csipd::csip::ConnectionState::Polling,
        "the silent server was never read"
    );
    // The written value reached the device: WMaxLimPct 29 % (SF 0) of 5 kW.
    assert!(
        peer.writes()
            .iter()
            .any(|w| w["unit"].as_u64() == Some(2) && w["values"] == json!([29])),
        "{:?}",
        peer.writes()
    );
    // `csipd status` says it in its words.
    let text = std::process::Command::new(BIN)
        .args(["status", "--url", &url])
        .output()
        .expect("csipd status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("export limit 1000 W — fallback export limit (no utility control read yet)"),
        "{text}"
    );

    // 2. The server answers on that port, first with an empty DERProgramList: reached,
    //    read, and still no export limit from the utility, so the fallback holds, now
    //    with that cause.
    drop(silent);
    let server = ScriptedServer::start_at(
        &addr,
        Scenario {
            lfdi,
            sfdi,
            fsas: vec![vec![]],
            ..Scenario::default()
        },
    );
    let s = wait_for(
        &url,
        Duration::from_secs(120),
        "the fallback held with the utility read",
        |s| {
            s.limit(LimitMode::Export).is_some_and(|l| {
                l.source
                    == LimitSource::Fallback {
                        cause: FallbackCause::NoUtilityExportLimit,
                    }
            })
        },
    );
    assert_eq!(export_limit(&s), Some((1000.0, "fallback".into())));
    assert!(
        written_w(&s).is_some_and(|w| (w - held).abs() < 1.0),
        "{:?}",
        s.setpoints
    );
    assert!(
        s.summary
            .contains("Export limited to 1000 W as your network operator sets no export limit"),
        "{}",
        s.summary
    );

    // 3. A program with a DefaultDERControl of 3000 W appears: it takes over (the hold
    //    is the utility's no longer). Below it by 950 W, the inverter may rise by 0.7 of
    //    that: 2500 + 665 W, written when it moves by a whole percent (WMaxLimPct_SF 0:
    //    50 W).
    server.update(|sc| {
        sc.fsas[0].push(Program {
            default_exp_lim_w: Some(3000),
            // No setGradW: the owner's ramp (10 %/s) applies, not 0.27 %/s.
            set_grad_w: None,
            ..Program::default()
        })
    });
    let raised = 2500.0 + 0.7 * (2950.0 - 2000.0);
    let s = wait_for(
        &url,
        Duration::from_secs(120),
        "the utility's default limit in force at the inverter",
        |s| {
            export_limit(s) == Some((3000.0, "program_default".into()))
                && written_w(s).is_some_and(|w| (w - raised).abs() < 50.0)
        },
    );
    assert!(
        s.summary
            .contains("Export limited to 3000 W by your network operator's standing limit"),
        "{}",
        s.summary
    );
    assert!(
        !server.requests_to("GET", "/dcap").is_empty(),
        "read from the server"
    );
    run.terminate();
}

/// The utility's TLS is refused (`openssl s_server` presenting a certificate csipd's
/// `ca` does not sign): nothing is ever read, the fallback holds at the inverter, and
/// the status names the refusal.
#[test]
fn a_refused_tls_handshake_keeps_the_fallback() {
    let dir = temp_dir("runtime-fallback-tls");
    let pki = test_pki::TempDir::new("runtime-fallback-tls");
    let utility_ca = test_pki::make_ca(&pki.0, "utility-ca");
    let device = test_pki::make_leaf(&pki.0, &utility_ca, "device");
    let rogue_ca = test_pki::make_ca(&pki.0, "rogue-ca");
    let rogue_server = test_pki::make_leaf(&pki.0, &rogue_ca, "rogue-server");
    let tls = test_pki::SServer::start(&rogue_server, &["-tls1_2", "-www"]);
    let peer = start_peer("runtime-fallback-tls", &site(), None);
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'

config server 'utility'
\toption dcap_url '{url}/dcap'
\toption cert '{cert}'
\toption key '{key}'
\toption ca '{ca}'
\toption pen '12345'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
\toption fallback_export_limit_w '1500'
{meter}{inverter}",
        d = dir.display(),
        url = tls.url(),
        cert = device.cert.display(),
        key = device.key.display(),
        ca = utility_ca.cert.display(),
        meter = uci_tcp_device("meter", "meter", &peer.port.to_string(), 1),
        inverter = uci_tcp_device("pv", "inverter", &peer.port.to_string(), 2),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());
    // Over 1450 W (1500 less the margin) by 550 W: the inverter is cut to 1950 W.
    let held = 2500.0 - (2000.0 - 1450.0);
    let s = wait_for(
        &url,
        Duration::from_secs(90),
        "the fallback held and the TLS refusal reported",
        |s| {
            export_limit(s) == Some((1500.0, "fallback".into()))
                && written_w(s).is_some_and(|w| (w - held).abs() < 1.0)
                && s.last_errors
                    .iter()
                    .any(|e| e.message.contains("server certificate rejected"))
        },
    );
    assert_eq!(
        s.limit(LimitMode::Export).map(|l| l.source.clone()),
        Some(LimitSource::Fallback {
            cause: FallbackCause::UtilityNotRead
        })
    );
    assert_ne!(s.utility.state, csipd::csip::ConnectionState::Polling);
    run.terminate();
}
