//! `csipd run`: a DERControl the server cancels before it starts leaves `/status`
//! `upcoming_events` at once, not at the status's next refresh from the tree.
//!
//! Peers: a pymodbus SunSpec site (tests/peers/sunspec_sim.py, register maps from
//! pysunspec2: a meter and a 5 kW inverter with model 123, so the site carries an export
//! limit) and the hand-scripted CSIP-AUS server (tests/common/csip_server.rs, plain HTTP
//! lab mode; no installable server cancels csipaus controls on cue). The proof is an
//! order, not a time: csipd takes the cancelled event out of the status before it POSTs
//! the Cancelled (6) response for it, so the status read once the server has that
//! response must no longer list it. Waits are for conditions with generous deadlines,
//! never fixed sleeps.

// runtime_common and devices_support each bring tests/support/wait.rs.
#![allow(clippy::duplicate_mod)]

#[path = "common/csip_server.rs"]
mod csip_server;
#[path = "devices_support/mod.rs"]
mod devices_support;
mod runtime_common;

use csip_server::{Control, Program, Scenario, ScriptedServer, element_text, mrid_of, now_s};
use devices_support::start_peer;
use runtime_common::*;
use serde_json::json;
use std::time::Duration;

const RESPONSES: &str = "/edev/1/rsps/site_control/rsp";

fn site() -> serde_json::Value {
    json!({"devices": [meter_203(1, -1000), pv_inverter_123(2, ("Upcoming Co", "UP-5"), 5000, 2000, &[])]})
}

#[test]
fn a_cancelled_event_leaves_upcoming_events_before_its_response_is_sent() {
    let dir = temp_dir("runtime-upcoming");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-upcoming-test");
    let peer = start_peer("runtime-upcoming", &site(), None);
    // An event ten minutes ahead; the program's default (3000 W) is what applies now.
    let mut control = Control::new("LATER", now_s() + 600, 300);
    control.exp_lim_w = Some(500);
    let mrid = control.mrid.clone();
    let server = ScriptedServer::start(Scenario {
        lfdi,
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            controls: vec![control],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'
{utility}
config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
{meter}{inverter}",
        d = dir.display(),
        utility = uci_lab_utility(&format!("{}/dcap", server.base_url), &cert, &key),
        meter = uci_tcp_device("meter", "meter", &peer.port.to_string(), 1),
        inverter = uci_tcp_device("pv", "inverter", &peer.port.to_string(), 2),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());

    let responses = || -> Vec<u8> {
        server
            .requests_to("POST", RESPONSES)
            .iter()
            .filter(|r| element_text(&r.body, "subject").as_deref() == Some(&mrid))
            .filter_map(|r| element_text(&r.body, "status")?.parse().ok())
            .collect()
    };
    let s = wait_for(&url, Duration::from_secs(60), "the event upcoming", |s| {
        s.upcoming_events.iter().any(|e| e.mrid == mrid)
            && export_limit(s) == Some((3000.0, "program_default".into()))
    });
    assert_eq!(s.upcoming_events.len(), 1, "{:?}", s.upcoming_events);
    assert!(
        server.wait_for(Duration::from_secs(60), |_| responses().contains(&1)),
        "Received: {:?}",
        responses()
    );

    // The server cancels it (currentStatus 2).
    server.update(|sc| sc.fsas[0][0].controls[0].status = 2);
    assert!(
        server.wait_for(Duration::from_secs(60), |_| responses().contains(&6)),
        "Cancelled: {:?}",
        responses()
    );
    // csipd sent the Cancelled response: its status had dropped the event before that.
    let s = status(&url);
    assert!(
        s.upcoming_events.iter().all(|e| e.mrid != mrid),
        "still upcoming after its Cancelled response: {:?}",
        s.upcoming_events
    );
    // The limit applied was the default's all along.
    assert_eq!(export_limit(&s), Some((3000.0, "program_default".into())));
    assert_eq!(mrid, mrid_of("LATER"));
    run.terminate();
}
