//! `csipd run` with the utility connection: the engine against the hand-scripted
//! CSIP-AUS server (tests/common/csip_server.rs, plain HTTP lab mode), the devices
//! against csipd's simulated site (`csipd demo --sim-only`). The utility's event limit
//! is merged with the owner's fixed limit and enforced with its source; while the server
//! is unreachable the last utility limit holds; after a restart with the server still
//! gone, the limit comes back from the store before anything is heard from the server.

#[path = "common/csip_server.rs"]
mod csip_server;
mod runtime_common;

use csip_server::{Control, Program, Scenario, ScriptedServer, mrid_of, now_s};
use csipd::status::{ConnectionState, LimitSource};
use runtime_common::*;
use std::time::Duration;

#[test]
fn utility_limit_is_enforced_held_while_offline_and_restored_after_restart() {
    let dir = temp_dir("runtime-engine");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-runtime-test");

    let start = now_s() - 5;
    let mut event = Control::new("export-1200", start, 3600);
    event.exp_lim_w = Some(1200);
    event.status = 1;
    let mut later = Control::new("later-500", start + 1800, 600);
    later.exp_lim_w = Some(500);
    let server = ScriptedServer::start(Scenario {
        lfdi: lfdi.clone(),
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            default_imp_lim_w: None,
            controls: vec![event, later],
            ..Program::default()
        }]],
        ..Scenario::default()
    });

    let (mut sim, devices) = sim_devices(600);
    let config = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{d}/state'
\toption telemetry_dir '{d}/telemetry'
{utility}\toption nmi '4102345678'

config limits 'fixed'
\toption export_limit_w '2000'
{devices}",
        d = dir.display(),
        utility = uci_lab_utility(&format!("{}/dcap", server.base_url), &cert, &key),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let path_text = path.display().to_string();

    let start_run = |what: &str| {
        let (run, url) = start_run(&path_text);
        println!("{what}: {url}");
        (run, url)
    };
    let spawned = std::time::Instant::now();
    let (mut run, url) = start_run("first run");
    let up = std::time::Instant::now();
    // Discovery starts at once: it waits neither for the devices nor their nameplate.
    assert!(server.wait_for(Duration::from_secs(30), |r| {
        r.iter().any(|r| r.path == "/dcap")
    }));
    let first_dcap = server.requests_to("GET", "/dcap")[0].at;
    println!(
        "first GET /dcap {:?} after spawning csipd run ({:?} to its status server line)",
        first_dcap - spawned,
        up - spawned
    );

    // The utility event's 1200 W beats the fixed 2000 W, and export follows it.
    let mrid = mrid_of("export-1200");
    let s = wait_for(
        &url,
        Duration::from_secs(60),
        "utility limit enforced",
        |s| {
            s.utility.state == ConnectionState::Polling
                && export_limit(s).is_some_and(|(w, kind)| w == 1200.0 && kind == "utility_event")
                && s.site
                    .export_w
                    .is_some_and(|e| e <= 1200.0 + tolerance_w(1200.0))
        },
    );
    let limit = s.limits[0].clone();
    assert_eq!(
        limit.source,
        LimitSource::UtilityEvent { mrid: mrid.clone() }
    );
    assert_eq!(
        limit.end_unix_s,
        Some(start + 1800),
        "until the next change: the later event starts"
    );
    assert_eq!(s.utility.lfdi.as_deref(), Some(lfdi.as_str()));
    assert!(
        !s.utility.resources.is_empty(),
        "polled resources are listed"
    );
    // The scheduled event is listed as upcoming with its limit.
    let s = wait_for(&url, Duration::from_secs(30), "upcoming event", |s| {
        !s.upcoming_events.is_empty()
    });
    let up = &s.upcoming_events[0];
    assert_eq!(up.mrid, mrid_of("later-500"));
    assert_eq!(
        (up.start_unix_s, up.end_unix_s),
        (start + 1800, start + 2400)
    );
    assert_eq!(up.limits[0].value_w, Some(500.0));

    // DER reports went out (DERStatus is built from the runtime's inverter states).
    assert!(
        server.wait_for(Duration::from_secs(30), |r| r
            .iter()
            .any(|r| r.method == "PUT" && r.path.ends_with("/ders"))),
        "DERStatus reported"
    );

    // The server goes away: the state says so, the utility limit holds.
    drop(server);
    let s = wait_for(&url, Duration::from_secs(60), "offline", |s| {
        s.utility.state == ConnectionState::Offline
    });
    assert_eq!(
        export_limit(&s),
        Some((1200.0, "utility_event".to_string()))
    );
    // And keeps holding: every status read shows it until every device has been read
    // at least five more times since (several control cycles while offline, however
    // slowly they come on a loaded machine).
    let fewest_reads = |s: &csipd::status::Snapshot| {
        s.devices
            .iter()
            .map(|d| d.stats.reads_ok)
            .min()
            .unwrap_or(0)
    };
    let reads_when_offline = fewest_reads(&s);
    assert_eq!(s.devices.len(), 2, "the inverter and the meter are listed");
    let s = wait_until_every(
        PATIENCE,
        Duration::from_millis(250),
        "five more reads of every device while offline",
        || {
            let s = status(&url);
            assert_eq!(
                export_limit(&s),
                Some((1200.0, "utility_event".to_string())),
                "the utility limit holds while offline"
            );
            let reads = fewest_reads(&s);
            if reads >= reads_when_offline + 5 {
                Ok(s)
            } else {
                Err(reads)
            }
        },
    );
    assert!(
        s.site
            .export_w
            .is_some_and(|e| e <= 1200.0 + tolerance_w(1200.0))
    );

    // Restart with the server still gone: the limit is back from the store at once.
    assert_eq!(run.terminate(), Some(0));
    let (mut run, url) = start_run("second run");
    let s = wait_for(&url, Duration::from_secs(15), "restored limit", |s| {
        export_limit(s).is_some()
    });
    assert_eq!(
        export_limit(&s)
            .filter(|(_, kind)| kind != "fail_safe")
            .or_else(|| {
                // The first cycles may still be in the start-up fail-safe (0 W, tighter).
                wait_for(&url, Duration::from_secs(15), "after start-up", |s| {
                    export_limit(s).is_some_and(|(_, kind)| kind != "fail_safe")
                });
                export_limit(&status(&url))
            }),
        Some((1200.0, "utility_event".to_string())),
        "the utility limit, not the fixed 2000 W"
    );
    assert_eq!(run.terminate(), Some(0));
    assert_eq!(sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo test --test runtime_engine -- --ignored --nocapture soak`: `csipd run` with
/// the utility connection (scripted server, 2 s poll and post rates) and the simulated
/// site for 10 minutes; prints VmRSS/VmHWM and CPU time from /proc.
#[test]
#[ignore]
fn soak_ten_minutes_rss_and_cpu() {
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let dir = temp_dir("runtime-soak");
    let (key, cert, lfdi, sfdi) = selfsigned_identity(&dir, "csipd-soak");
    let mut event = Control::new("soak-1200", now_s() - 5, 7200);
    event.exp_lim_w = Some(1200);
    event.status = 1;
    let server = ScriptedServer::start(Scenario {
        lfdi: lfdi.clone(),
        sfdi,
        fsas: vec![vec![Program {
            default_exp_lim_w: Some(3000),
            default_imp_lim_w: None,
            controls: vec![event],
            ..Program::default()
        }]],
        ..Scenario::default()
    });
    let (mut sim, devices) = sim_devices(7200);
    let config = format!(
        "config csipd 'main'\n\toption status_listen '127.0.0.1:0'\n\toption log_level 'warn'\n\toption data_dir '{d}/state'\n\toption telemetry_dir '{d}/telemetry'\n{utility}{devices}",
        d = dir.display(),
        utility = uci_lab_utility(&format!("{}/dcap", server.base_url), &cert, &key),
    );
    let path = dir.join("csipd");
    std::fs::write(&path, config).unwrap();
    let (mut run, url) = start_run(&path.display().to_string());
    // Measured from the steady state: the utility limit enforced.
    wait_for(&url, PATIENCE, "utility limit enforced", |s| {
        s.utility.state == ConnectionState::Polling
            && export_limit(s).is_some_and(|(w, kind)| w == 1200.0 && kind == "utility_event")
    });
    let pid = run.child.id();
    let proc_stat = |pid: u32| -> (u64, String) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let mem: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
            .collect();
        (ticks, mem.join(", "))
    };
    let (t0, m0) = proc_stat(pid);
    let started = std::time::Instant::now();
    // sleep-ok: the soak's measuring period (an ignored benchmark; what it asserts is
    // only that csipd is still alive and exits cleanly).
    std::thread::sleep(Duration::from_secs(60 * minutes));
    let (t1, m1) = proc_stat(pid);
    let secs = started.elapsed().as_secs_f64();
    let requests = server.requests().len();
    println!(
        "csipd run with the utility connection, {minutes} min: start {m0}; end {m1}; CPU {:.2} s in {secs:.0} s = {:.2} % of one core (CLK_TCK 100 assumed); {requests} requests served",
        (t1 - t0) as f64 / 100.0,
        (t1 - t0) as f64 / secs
    );
    assert!(run.alive());
    assert_eq!(run.terminate(), Some(0));
    assert_eq!(sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
