//! The utility side of the soak benchmark (`scripts/soak.sh`): the hand-scripted CSIP-AUS
//! server of the tests (tests/common/csip_server.rs: plain HTTP on 127.0.0.1; no
//! installable peer plays a CSIP-AUS utility) in a process of its own, with every poll
//! rate and the post rate at `RATE_S` seconds and a new dynamic export envelope every
//! `CONTROL_S` seconds that lasts `CONTROL_S` (a day of five-minute envelopes, compressed),
//! each asking for Responses.
//!
//! ```text
//! soak_utility CERT.pem [RATE_S] [CONTROL_S]
//! ```
//! Prints its base URL on the first line, then `requests N` (cumulative) every minute.

#[path = "../tests/common/csip_server.rs"]
mod csip_server;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cert) = args.first() else {
        eprintln!("usage: soak_utility CERT.pem [RATE_S] [CONTROL_S]");
        std::process::exit(2);
    };
    let rate: u32 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1);
    let control_s: u32 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(6);
    let pem = match std::fs::read(cert) {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!("soak_utility: {cert}: {e}");
            std::process::exit(2);
        }
    };
    let identity = match csipd::sep2::identity_from_pem(&pem) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("soak_utility: {cert}: {e}");
            std::process::exit(2);
        }
    };
    let server = csip_server::ScriptedServer::start(csip_server::Scenario {
        lfdi: identity.lfdi,
        sfdi: identity.sfdi,
        dcap_poll_s: rate,
        time_poll_s: rate,
        edev_list_poll_s: rate,
        fsa_list_poll_s: rate,
        derp_list_poll_s: rate,
        der_list_poll_s: rate,
        mup_list_poll_s: rate,
        mup_post_s: rate,
        fsas: vec![vec![csip_server::Program {
            default_exp_lim_w: Some(3000),
            default_imp_lim_w: None,
            ..csip_server::Program::default()
        }]],
        ..csip_server::Scenario::default()
    });
    println!("{}", server.base_url);
    let mut served = 0usize;
    let mut n = 0u64;
    let mut last_report = std::time::Instant::now();
    loop {
        let now = csip_server::now_s();
        n += 1;
        let tag = format!("K{n}");
        server.update(|s| {
            let mut control = csip_server::Control::new(&tag, now, control_s);
            // Export limits between 1.0 and 4.5 kW so the control loop keeps moving.
            control.exp_lim_w = Some(1000 + ((n * 700) % 3600) as i32);
            let controls = &mut s.fsas[0][0].controls;
            controls.push(control);
            let keep = controls.len().saturating_sub(3);
            controls.drain(..keep);
        });
        // The server's request log would grow for the whole run: count and forget it.
        served += server.requests().len();
        server.forget_requests();
        if last_report.elapsed() >= Duration::from_secs(60) {
            println!("requests {served}");
            last_report = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_secs(u64::from(control_s)));
    }
}
